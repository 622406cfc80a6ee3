"""``causalflow analyze``, ``causalflow plan`` and ``causalflow mcp``: the tools on the command line.

    causalflow analyze DATA --spec SPEC.yaml [--format markdown|json|csv] [--output FILE]
    causalflow plan {power,sample_size,mde} --effect 0.5 --sd 2 [--n N] [--icc ...] [--json]
    causalflow mcp --root DIR [--root DIR2] [--out DIR] [--http PORT]

``analyze`` and ``plan`` run the same tool calls as an agent would (so the same checks and
errors); their options and spec keys are generated from the tools' argument models.
Exit codes: 0 success, 1 an error in the input or the analysis (the message says what),
2 a usage error of the command line.

Examples
--------
>>> import tempfile, pathlib
>>> from causalflow.demo import simulate_store
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> simulate_store(n=2000, n_regions=40).to_csv(folder / "store.csv", index=False)
>>> _ = (folder / "spec.yaml").write_text("intent_to_treat: assigned\\ntreated: uses_widget\\n"
...                                       "cluster_by: region\\ny: [sales]\\n")
>>> analyze_main([str(folder / "store.csv"), "--spec", str(folder / "spec.yaml"), "--format", "csv"])
metric,arm,condition,estimand,estimate,std_error,ci_lower,ci_upper,p_value,av_p_value,av_ci_lower,av_ci_upper,n,dof,cov_type
sales,1,all,ITT,...
sales,1,all,LATE,...
0
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import typing
from pathlib import Path

__all__ = ["analyze_main", "mcp_main", "plan_main"]

DEFAULT_OUT = "~/causalflow-output"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _error_message(result: dict) -> str:
    error = result["error"]
    text = f"{error['message']} ({error['type']})"
    if error.get("allowed") is not None:
        text += f"\n  allowed: {', '.join(map(str, error['allowed'][:40]))}"
    if error.get("hint"):
        text += f"\n  hint: {error['hint']}"
    return text


def _parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace | int:
    """Parse, turning argparse's exits into return codes (0 for --help, 2 for usage errors)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


# ---------------------------------------------------------------------------------------
# analyze
# ---------------------------------------------------------------------------------------
def analysis_spec_model():
    """The pydantic model of an ``analyze`` spec: the arguments of create_experiment (but
    ``source``), fit_metrics (but ``experiment``) and infer_effects (but ``model``), plus
    ``relative`` and ``adjust``."""
    from typing import Literal

    from pydantic import Field, create_model

    from .base import Args
    from .experiments import AdjustEffects, CreateExperiment, FitMetrics, InferEffects

    fields = {}
    for model, skip in ((CreateExperiment, {"source"}), (FitMetrics, {"experiment"}),
                        (InferEffects, {"model", "include_covariance"})):
        for name, info in model.model_fields.items():
            if name not in skip:
                fields[name] = (info.annotation, info)
    fields["relative"] = (bool | Literal["delta", "fieller"],
                          Field(False, description="also report relative lifts (true: delta method, or the "
                                                   "interval method)"))
    fields["adjust"] = (AdjustEffects.model_fields["method"].annotation | None,
                        Field(None, description="multiple-testing adjustment of the effects"))
    return create_model("AnalysisSpec", __base__=Args, **fields)


def _read_spec(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    if path.lower().endswith(".json"):
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def analyze_main(argv: list[str] | None = None) -> int:
    """``causalflow analyze DATA --spec SPEC``: the effects table of an experiment."""
    parser = argparse.ArgumentParser(
        prog="causalflow analyze",
        description="Analyse a randomized experiment: a data file (CSV / TSV / parquet) and a small YAML or "
                    "JSON spec -> the effects table as markdown, JSON or CSV.",
        epilog="spec keys: intent_to_treat (required), treated, propensity, instrument, cluster_by, control, "
               "expected_allocation, y (required), exogenous_covariates, cov_type, inference, av_planned_n, "
               "condition_on, alpha, relative, adjust. Example spec:\n"
               "  intent_to_treat: assigned\n  treated: uses_widget\n  cluster_by: region\n"
               "  y: [sales, orders]\n  exogenous_covariates: [pre_sales, device]\n"
               "  condition_on: [\"device == 'desktop'\"]\n  adjust: holm",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="data file: CSV, TSV or parquet")
    parser.add_argument("--spec", required=True, help="analysis spec (YAML or JSON)")
    parser.add_argument("--format", choices=["markdown", "json", "csv"], default="markdown")
    parser.add_argument("--output", help="write the table to this file instead of standard output")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        from pydantic import ValidationError as SpecError

        from .registry import Session
    except ImportError as exc:
        return _fail(str(exc))
    data = Path(args.data)
    if not data.is_file():
        return _fail(f"data: no file {args.data!r}")
    try:
        raw = _read_spec(args.spec)
    except (OSError, ValueError) as exc:
        return _fail(f"spec: could not read {args.spec!r}: {exc}")
    except Exception as exc:  # a YAML syntax error
        return _fail(f"spec: could not read {args.spec!r}: {type(exc).__name__}: {exc}")
    if not isinstance(raw, dict):
        return _fail("spec: expected a mapping of keys (intent_to_treat, y, ...)")
    try:
        spec = analysis_spec_model().model_validate(raw)
    except SpecError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors()[:5])
        return _fail(f"spec: {problems}")
    session = Session(roots=[data.resolve().parent], out=Path.cwd())
    values = spec.model_dump(exclude_none=True)
    design = session.call("create_experiment", {"source": data.name, **{k: values[k] for k in (
        "intent_to_treat", "treated", "propensity", "instrument", "cluster_by", "control", "expected_allocation")
        if k in values}})
    if "error" in design:
        return _fail(_error_message(design))
    fit = session.call("fit_metrics", {"experiment": design["handle"], **{k: values[k] for k in (
        "y", "exogenous_covariates", "cov_type", "inference", "av_planned_n") if k in values}})
    if "error" in fit:
        return _fail(_error_message(fit))
    effects = session.call("infer_effects", {"model": fit["handle"], **{k: values[k] for k in (
        "condition_on", "alpha") if k in values}})
    if "error" not in effects and spec.adjust is not None:
        effects = session.call("adjust_effects", {"effects": effects["handle"], "method": spec.adjust})
    if "error" in effects:
        return _fail(_error_message(effects))
    relative = None
    if spec.relative:
        method = "delta" if spec.relative is True else spec.relative
        relative = session.call("relative_effects", {"effects": effects["handle"], "method": method})
        if "error" in relative:
            return _fail(_error_message(relative))
    text = _render(args.format, design, effects, relative)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    for warning in dict.fromkeys(design["warnings"] + fit["warnings"] + effects["warnings"]):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _render(fmt: str, design: dict, effects: dict, relative: dict | None) -> str:
    if fmt == "markdown":
        parts = [design["markdown"], effects["markdown"]] + ([relative["markdown"]] if relative else [])
        return "\n\n".join(parts) + "\n"
    if fmt == "json":
        strip = lambda r: {k: v for k, v in r.items() if k not in ("markdown", "handle")}  # noqa: E731
        out = {"design": design["design"], "sample_ratio": design["sample_ratio"], "effects": strip(effects)}
        if relative:
            out["relative"] = strip(relative)
        return json.dumps(out, indent=2, allow_nan=False) + "\n"
    import pandas as pd

    frame = pd.DataFrame(effects["effects"], columns=effects["columns"])
    if relative:
        rel = pd.DataFrame(relative["effects"], columns=relative["columns"])
        extra = [c for c in rel.columns if c not in ("metric", "arm", "condition", "estimand", "n", "p_value",
                                                     "effect", "effect_std_error")]
        frame = pd.concat([frame, rel[extra].add_prefix("relative_")], axis=1)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------
def _add_model_options(parser: argparse.ArgumentParser, model, skip=()) -> None:
    """One ``--option`` per field of a pydantic model (types, choices and help from the model)."""
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        annotation = info.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
        base = args[0]
        origin = typing.get_origin(base)
        flag = "--" + name.replace("_", "-")
        default = info.default if info.default is not None and not callable(info.default) else None
        text = (info.description or "") + (f" (default {default})" if default is not None else "")
        if base is bool:
            parser.add_argument(flag, action="store_true", default=None, help=text)
        elif origin is typing.Literal:
            parser.add_argument(flag, choices=list(typing.get_args(base)), default=None, help=text)
        elif origin is list:
            item = typing.get_args(base)[0]
            parser.add_argument(flag, nargs="+", type=item if item in (int, float) else str, default=None, help=text)
        else:
            parser.add_argument(flag, type=base if base in (int, float) else str, default=None, help=text)


def plan_main(argv: list[str] | None = None) -> int:
    """``causalflow plan {power,sample_size,mde} ...``: power, sample size or minimum detectable effect."""
    try:
        from .experiments import PlanExperiment
        from .registry import Session
    except ImportError as exc:
        return _fail(str(exc))
    parser = argparse.ArgumentParser(
        prog="causalflow plan",
        description="Plan an experiment: power at an effect and sample size, the sample size for an effect, or "
                    "the minimum detectable effect (A/B, cluster, encouragement, several arms, relative lifts).",
        epilog="examples:\n  causalflow plan sample_size --effect 0.5 --sd 2\n"
               "  causalflow plan power --effect 0.2 --n 800 --sd 1 --icc 0.02 --cluster-size 20\n"
               "  causalflow plan mde --n 10000 --pilot pilot.csv --metric sales --covariates pre_sales",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("solve_for", choices=["power", "sample_size", "mde"], help="what to solve for")
    _add_model_options(parser, PlanExperiment, skip={"solve_for"})
    parser.add_argument("--json", action="store_true", help="print the JSON record instead of a sentence")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    values = {k: v for k, v in vars(args).items() if v is not None and k != "json"}
    roots = [Path.cwd()]
    if "pilot" in values:
        pilot = Path(values["pilot"]).resolve()
        if not pilot.is_file():
            return _fail(f"pilot: no file {values['pilot']!r}")
        roots.append(pilot.parent)
        values["pilot"] = str(pilot)
    result = Session(roots=roots, out=Path.cwd()).call("plan_experiment", values)
    if "error" in result:
        return _fail(_error_message(result))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2))
    else:
        print(result["markdown"])
    return 0


# ---------------------------------------------------------------------------------------
# mcp
# ---------------------------------------------------------------------------------------
def mcp_main(argv: list[str] | None = None) -> int:
    """``causalflow mcp --root DIR``: serve the tools over MCP (stdio, or HTTP on 127.0.0.1)."""
    parser = argparse.ArgumentParser(
        prog="causalflow mcp",
        description="Serve the causalflow tools over the Model Context Protocol (stdio by default). Tools read "
                    "data files only under the --root folders and write only under --out.",
        epilog="example client configuration (Claude Desktop, mcp.json):\n"
               '  {"mcpServers": {"causalflow": {"command": "causalflow", "args": ["mcp", "--root", "/data"]}}}',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", required=True, metavar="DIR",
                        help="a folder whose data files (CSV / TSV / parquet) tools may read; repeatable")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"the folder tools write under (saved tables, OCI runs); default {DEFAULT_OUT}")
    parser.add_argument("--http", type=int, metavar="PORT",
                        help="serve streamable HTTP on 127.0.0.1:PORT (path /mcp) instead of stdio")
    parser.add_argument("--max-rows", type=int, help="largest table, in rows (default 20,000,000)")
    parser.add_argument("--max-handles", type=int, help="objects kept per session (default 64)")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    if args.http is not None and not 0 < args.http < 65536:
        print("causalflow mcp: error: --http: a port in 1..65535", file=sys.stderr)
        return 2
    try:
        from .mcp_server import serve
        from .registry import Session
        from .safety import Limits
    except ImportError as exc:
        return _fail(str(exc))
    overrides = {k: v for k, v in (("max_rows", args.max_rows), ("max_handles", args.max_handles)) if v is not None}
    try:
        session = Session(roots=args.root, out=Path(args.out).expanduser(), limits=Limits(**overrides))
    except ValueError as exc:
        return _fail(str(exc))
    serve(session, http_port=args.http)
    return 0
