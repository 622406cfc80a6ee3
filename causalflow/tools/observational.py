"""Tools over the OCI loop: run it on a plan, and inspect a run (in memory or on disk).

The loop uses the default deterministic Actor and Critic (no network). Artifacts go to a
folder under the output root; the executed-notebook level ("full") is not offered here,
since it runs a kernel.

Examples
--------
>>> import tempfile
>>> from causalflow.tools.registry import demo_session
>>> session = demo_session(tempfile.mkdtemp(), n=2000)
>>> run = session.call("run_oci", {"data": "store.csv", "treatment": "uses_widget", "outcome": "sales",
...                                "confounders": ["pre_sales"], "estimands": ["ATT"], "max_iterations": 1,
...                                "artifact_level": "none"})
>>> run["handle"], run["stop_reason"], [row["estimand"] for row in run["final"]]
('oci_1', 'all_fully_satisfactory', ['ATT'])
>>> session.call("show_oci_run", {"run": "oci_1"})["final_iteration"]
1
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from pydantic import BaseModel, Field

from ..errors import ValidationError
from ..oci.loop import run
from ..oci.plan import Plan
from .base import Args, Expression, Name, PathText, Result, Row, Workspace, require_columns, tool
from .experiments import _json_cell
from .safety import ToolError

__all__ = ["TOOLS"]


class RunOCI(Args):
    data: PathText = Field(description="a CSV / TSV / parquet path under a data root, or a table handle")
    treatment: Name = Field(description="binary treatment column (0/1 or booleans)")
    outcome: Name = Field(description="numeric outcome column")
    confounders: dict[Literal["high", "medium", "low"], list[Name]] | list[Name] = Field(
        description="confounder columns by priority (a plain list means all high); balance of the high ones "
                    "decides the verdict")
    placebo_outcomes: list[Name] = Field(default_factory=list, description="outcomes the treatment cannot affect")
    population: Expression | None = Field(None, description="a condition selecting the study population, e.g. "
                                                            "\"age >= 18\"")
    estimands: list[Literal["ATE", "ATT", "ATO"]] = Field(default_factory=lambda: ["ATE"], min_length=1)
    seed: int = Field(0, ge=0)
    max_iterations: int = Field(3, ge=1, le=6)
    artifact_level: Literal["none", "minimal", "standard"] = Field(
        "minimal", description="none: nothing written; minimal: JSON and a markdown report per iteration; "
                               "standard: + plots and an HTML report")
    out: PathText | None = Field(None, description="folder under the output root for the artifacts "
                                                   "(default: oci/run-<time>-<id>)")


class OCIIteration(BaseModel):
    index: int
    actor: str = Field(description="who made the spec: rules or llm")
    spec: dict = Field(description="the analysis spec of the iteration")
    verdicts: dict[str, str] = Field(description="estimand -> verdict of the Critic")
    proposals: list[dict] = Field(description="the Critic's proposed changes")


class OCIResult(Result):
    handle: str | None = Field(None, description="handle of the run, e.g. oci_1 (None when read from disk)")
    stop_reason: str = Field(description="all_fully_satisfactory, nothing_new, max_iterations or revision_failed")
    stop_detail: str | None = None
    iterations: list[OCIIteration]
    final_iteration: int
    final: list[Row] = Field(description="the final iteration's table: estimand, estimate, std_error, ci, "
                                         "p_value, n, verdict, population")
    artifacts: str | None = Field(None, description="the run folder, relative to the output root")
    detail: dict | None = Field(None, description="one iteration's results, diagnostics and critique "
                                                  "(show_oci_run with iteration)")


def _run_result(result, handle: str | None, artifacts: str | None, detail: dict | None) -> OCIResult:
    iterations = [OCIIteration(index=it.index, actor=it.actor.source, spec=it.spec.to_dict(), verdicts=it.verdicts,
                               proposals=[p.to_dict() for p in it.critique.proposals])
                  for it in result.iterations]
    final = [{k: _json_cell(v) for k, v in row.items()} for row in result.final.to_frame().to_dict("records")]
    return OCIResult(handle=handle, stop_reason=result.stop_reason, stop_detail=result.stop_detail,
                     iterations=iterations, final_iteration=result.final.index, final=final, artifacts=artifacts,
                     detail=detail, markdown=_markdown(handle, result.stop_reason, iterations, result.final.index,
                                                       final, artifacts))


def _markdown(handle, stop_reason, iterations, final_index, final, artifacts) -> str:
    lines = [f"**{handle or 'OCI run'}**: stopped ({stop_reason}) after {len(iterations)} iteration(s)"]
    for it in iterations:
        verdicts = ", ".join(f"{k}: {v}" for k, v in it.verdicts.items())
        lines.append(f"- iteration {it.index} ({it.actor}): {verdicts}; {len(it.proposals)} proposal(s)")
    lines += ["", f"final (iteration {final_index}):", "",
              "| estimand | estimate | std_error | 95% CI | p_value | n | verdict |", "|---|---|---|---|---|---|---|"]
    for r in final:
        fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
        lines.append(f"| {r.get('estimand')} | {fmt(r.get('estimate'))} | {fmt(r.get('std_error'))} | "
                     f"[{fmt(r.get('ci_lower'))}, {fmt(r.get('ci_upper'))}] | {fmt(r.get('p_value'))} | "
                     f"{r.get('n')} | {r.get('verdict')} |")
    if artifacts:
        lines.append(f"\nartifacts: {artifacts} (under the output root)")
    return "\n".join(lines)


@tool(example={"data": "store.csv", "treatment": "uses_widget", "outcome": "sales",
               "confounders": {"high": ["pre_sales"], "medium": ["device"]}, "estimands": ["ATT"],
               "max_iterations": 2, "artifact_level": "none"})
def run_oci(args: RunOCI, ws: Workspace) -> OCIResult:
    """Run the observational causal inference loop on a plan: an Actor turns the plan into an
    analysis spec (cross-fitted propensity and outcome models, AIPW), a runner estimates and
    diagnoses it (covariate balance, overlap, placebo outcomes, sensitivity), a Critic grades
    each estimand (fully_satisfactory / satisfactory_with_caveats / not_satisfactory) and
    proposes changes (e.g. trimming, which turns ATE into ATO); repeated up to max_iterations.
    For observational (non-randomized) data. Returns the final estimates with their verdicts."""
    table, label = ws.table(args.data, "data")
    confounders = args.confounders if isinstance(args.confounders, list) else dict(args.confounders)
    names = confounders if isinstance(confounders, list) else [c for v in confounders.values() for c in v]
    for argument, columns in (("treatment", [args.treatment]), ("outcome", [args.outcome]),
                              ("confounders", names), ("placebo_outcomes", args.placebo_outcomes)):
        require_columns(table, columns, argument)
    try:
        plan = Plan(data=label, treatment=args.treatment, outcome=args.outcome, confounders=confounders,
                    placebo_outcomes=args.placebo_outcomes, population=args.population,
                    estimands=list(args.estimands), seed=args.seed)
    except ValidationError as exc:
        if "population" in str(exc):
            raise ToolError("invalid_expression", str(exc), argument="population") from None
        raise
    folder = None
    if args.artifact_level != "none":
        name = args.out or f"oci/run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder = ws.roots.write_folder(name, "out")
    result = run(plan, max_iterations=args.max_iterations, data=table,
                 artifacts=folder, artifact_level="minimal" if folder is None else args.artifact_level)
    handle = ws.store.put("oci", result, f"OCI run on {label}: {args.treatment} -> {args.outcome}, "
                                         f"{result.stop_reason}")
    shown = None if folder is None else folder.relative_to(ws.roots.out).as_posix()
    return _run_result(result, handle, shown, None)


class ShowOCIRun(Args):
    run: PathText = Field(description="an OCI run handle (oci_1) or a run folder (with run.json) under "
                                               "the output root or a data root")
    iteration: int | None = Field(None, ge=1, description="also return this iteration's results, diagnostics "
                                                          "and critique")


@tool(example={"run": "oci_1", "iteration": 1})
def show_oci_run(args: ShowOCIRun, ws: Workspace) -> OCIResult:
    """Inspect a run of the OCI loop: every iteration's spec, verdicts and proposals, the final
    table, and on request one iteration's estimates, diagnostics (balance, overlap, placebo,
    sensitivity) and critique. Reads a run in this session (handle) or a run folder on disk."""
    import re

    from .handles import HANDLE_PATTERN

    if re.match(HANDLE_PATTERN, args.run) and args.run.startswith("oci_"):
        result = ws.store.get(args.run, ("oci",), "run")
        detail = None
        if args.iteration is not None:
            its = {it.index: it for it in result.iterations}
            if args.iteration not in its:
                raise ToolError("invalid_value", f"iteration: run {args.run} has iterations {sorted(its)}",
                                argument="iteration", allowed=sorted(its))
            it = its[args.iteration]
            detail = {"results": it.result.results_dict(), **it.result.diagnostics_dict(),
                      "critique": it.critique.to_dict()}
        from ..oci.artifacts import json_ready

        artifacts = result.directory
        if artifacts is not None:
            from pathlib import Path

            path = Path(artifacts).resolve()
            artifacts = path.relative_to(ws.roots.out).as_posix() if ws.roots.out in path.parents else None
        return _run_result(result, args.run, artifacts, json_ready(detail) if detail is not None else None)
    folder = ws.roots.read_folder(args.run, "run")
    index_path = folder / "run.json"
    if not index_path.is_file():
        raise ToolError("file_not_found", f"run: {args.run!r} has no run.json (not an OCI run folder)",
                        argument="run")
    index = _read_json(index_path, folder)
    iterations = [OCIIteration(index=it["index"], actor=it["actor"], verdicts=it["verdicts"],
                               spec=_read_json(folder / it["files"]["spec.json"], folder)
                               if "spec.json" in it.get("files", {}) else {},
                               proposals=_read_json(folder / it["files"]["critique.json"], folder).get("proposals", [])
                               if "critique.json" in it.get("files", {}) else [])
                  for it in index["iterations"]]
    detail = None
    if args.iteration is not None:
        entry = next((it for it in index["iterations"] if it["index"] == args.iteration), None)
        if entry is None:
            raise ToolError("invalid_value", f"iteration: the run has iterations "
                            f"{[it['index'] for it in index['iterations']]}", argument="iteration",
                            allowed=[it["index"] for it in index["iterations"]])
        files = entry.get("files", {})
        detail = {"results": _read_json(folder / files["results.json"], folder) if "results.json" in files else None,
                  **(_read_json(folder / files["diagnostics.json"], folder) if "diagnostics.json" in files else {}),
                  "critique": _read_json(folder / files["critique.json"], folder) if "critique.json" in files else None}
    final = [{k: _json_cell(v) for k, v in row.items()} for row in index["final"]["table"]]
    shown = ws.roots.display(folder)
    return OCIResult(handle=None, stop_reason=index["stop_reason"], stop_detail=index.get("stop_detail"),
                     iterations=iterations, final_iteration=index["final"]["iteration"], final=final,
                     artifacts=shown, detail=detail,
                     markdown=_markdown(None, index["stop_reason"], iterations, index["final"]["iteration"], final,
                                        shown))


def _read_json(path, folder) -> dict:
    """A JSON file of a run folder; a path that leaves the folder is refused."""
    resolved = path.resolve()
    if folder not in resolved.parents:
        raise ToolError("path_not_allowed", f"run: {path.name!r} leads outside the run folder", argument="run")
    try:
        if resolved.stat().st_size > 50_000_000:
            raise ToolError("too_large", f"run: {path.name!r} is larger than 50 MB", argument="run")
        return json.loads(resolved.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ToolError("unsupported_file", f"run: could not read {path.name!r}: {exc}", argument="run") from None


TOOLS = (run_oci, show_oci_run)
