"""Artifacts of the OCI loop, every file written atomically (temp file + ``os.replace``).

Layout under the run folder::

    run.json                      index: plan, stop reason, every iteration and its files,
                                  the reported (most credible) and the last iteration
    report.md report.html         the run report: which iteration is reported and why, every iteration
    data.parquet                  the study population (level "full": the notebooks read it)
    iteration_01/
      plan.json spec.json results.json diagnostics.json critique.json
      report.md                   (every level)
      report.html plots/*.png     (level "standard" and "full"; HTML embeds the PNGs)
      notebook.ipynb              (level "full" unless notebook=False; executed: re-runs the spec,
                                  checks results.json)
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from .._optional import require
from .formatting import fmt_number
from .plan import AnalysisData
from .records import Iteration, OCIRun

__all__ = ["ArtifactWriter", "atomic_write", "json_ready", "read_run"]


def atomic_write(path: str | os.PathLike, payload: bytes | str) -> Path:
    """Write ``payload`` to ``path`` through a temp file in the same folder and ``os.replace``.

    A failure at any point (including an interrupt) removes the temp file, and the
    target is either the old file or the complete new one, never half written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = atomic_write(pathlib.Path(tempfile.mkdtemp()) / "a.json", '{"x": 1}')
    >>> p.read_text()
    '{"x": 1}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def json_ready(value):
    """Plain JSON values: numpy scalars/arrays to Python, tuples to lists, NaN/inf to None.

    >>> json_ready({"a": (1, float("nan")), "b": np.float64(2.5)})
    {'a': [1, None], 'b': 2.5}
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _dumps(value) -> str:
    return json.dumps(json_ready(value), indent=2, allow_nan=False) + "\n"


def read_run(folder: str | os.PathLike) -> dict:
    """The ``run.json`` index of a run folder.

    >>> import tempfile
    >>> read_run(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    causalflow.errors.ValidationError: run folder: '...run.json' does not exist
    """
    from ..errors import ValidationError

    path = Path(folder) / "run.json"
    if not path.is_file():
        raise ValidationError(f"run folder: {str(path)!r} does not exist")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- plots
def _png(fig) -> bytes:
    plt = require("matplotlib.pyplot", "oci")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _figure(width=6.0, height=3.6, ncols=1):
    matplotlib = require("matplotlib", "oci")
    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "oci")
    return plt.subplots(1, ncols, figsize=(width, height))


def plot_overlap(it: Iteration) -> bytes:
    """Histogram of the cross-fitted propensity by arm, with the trimming bounds."""
    fig, ax = _figure()
    e, t = it.result.overlap_score, it.result.treatment
    bins = np.linspace(0, 1, 41)
    ax.hist(e[t == 0], bins=bins, alpha=0.55, label="control", color="tab:blue")
    ax.hist(e[t == 1], bins=bins, alpha=0.55, label="treated", color="tab:orange")
    for bound in (0.1, 0.9):
        ax.axvline(bound, color="grey", lw=0.8, ls=":")
    if it.result.alpha > 0:
        for bound in (it.result.alpha, 1 - it.result.alpha):
            ax.axvline(bound, color="black", lw=1.0, ls="--")
    ax.set_xlabel("propensity score e(x)")
    ax.set_ylabel("units")
    ax.set_title("Propensity overlap")
    ax.legend()
    return _png(fig)


def plot_love(it: Iteration) -> bytes:
    """Love plot: |SMD| of every confounder column, unweighted and weighted per estimand."""
    diags = it.result.diagnostics
    columns = [r.column for r in diags[0].balance]
    fig, ax = _figure(6.0, max(2.5, 0.28 * len(columns) + 1.2))
    ypos = np.arange(len(columns))
    ax.scatter([abs(r.smd_unweighted) for r in diags[0].balance], ypos, marker="o",
               facecolors="none", edgecolors="black", label="unweighted")
    for marker, d in zip("sD^v", diags):
        ax.scatter([abs(r.smd_weighted) for r in d.balance], ypos, marker=marker, s=18,
                   label=f"weighted ({d.estimand})")
    ax.axvline(0.1, color="grey", ls=":", lw=0.8)
    ax.axvline(0.2, color="red", ls="--", lw=0.8)
    ax.set_yticks(ypos, [c + (" *" if r.priority == "high" else "") for c, r in zip(columns, diags[0].balance)])
    ax.set_xlabel("|standardized mean difference|  (* high priority)")
    ax.set_title("Covariate balance")
    ax.legend(fontsize=7)
    return _png(fig)


def forest_plot(labels, estimates, ses, title, xlabel="effect") -> bytes:
    """PNG bytes of estimates with 95% intervals (one row per label) and a line at 0.

    >>> forest_plot(["ATE", "ATO"], [1.0, 0.8], [0.2, 0.1], "Estimates")[:4]
    b'\x89PNG'
    """
    fig, ax = _figure(6.0, max(2.0, 0.45 * len(labels) + 1.0))
    y = np.arange(len(labels))
    est, se = np.asarray(estimates, float), np.asarray(ses, float)
    ax.errorbar(est, y, xerr=1.96 * se, fmt="o", color="black", capsize=3)
    ax.axvline(0, color="red", ls="--", lw=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _png(fig)


def plot_estimates(it: Iteration) -> bytes:
    """Forest plot of the estimates with 95% intervals."""
    rows = it.result.estimates
    return forest_plot([f"{r.estimand} ({it.verdicts.get(r.estimand)})" for r in rows],
                   [r.estimate for r in rows], [r.std_error for r in rows], "Estimates (95% CI)", "effect")


def plot_placebo(it: Iteration) -> bytes | None:
    """Forest plot of the placebo-outcome effects (the truth is 0); None without placebos."""
    rows = [(d.estimand, p) for d in it.result.diagnostics for p in d.placebo]
    if not rows:
        return None
    return forest_plot([f"{p.outcome} [{e}]" for e, p in rows], [p.estimate for _, p in rows],
                   [p.std_error for _, p in rows], "Placebo outcomes (should be 0)", "effect")


def plot_sensitivity(it: Iteration) -> bytes:
    """E-values (estimate and confidence limit) and Cinelli-Hazlett robustness values."""
    diags = [d for d in it.result.diagnostics if d.sensitivity is not None]
    fig, (ax1, ax2) = _figure(7.5, 3.2, ncols=2)
    x = np.arange(len(diags))
    ax1.bar(x - 0.2, [d.sensitivity.e_value for d in diags], 0.4, label="estimate")
    ax1.bar(x + 0.2, [d.sensitivity.e_value_ci for d in diags], 0.4, label="CI limit")
    ax1.axhline(1.25, color="red", ls="--", lw=0.8)
    ax1.set_xticks(x, [d.estimand for d in diags])
    ax1.set_title("E-value")
    ax1.legend(fontsize=7)
    ax2.bar(x - 0.2, [d.sensitivity.robustness_value for d in diags], 0.4, label="RV")
    ax2.bar(x + 0.2, [d.sensitivity.robustness_value_alpha for d in diags], 0.4, label="RV (alpha=0.05)")
    ax2.set_xticks(x, [d.estimand for d in diags])
    ax2.set_ylim(0, 1)
    ax2.set_title("Robustness value (linear stage)")
    ax2.legend(fontsize=7)
    return _png(fig)


_PLOTS = {"overlap": plot_overlap, "love": plot_love, "estimates": plot_estimates,
          "placebo": plot_placebo, "sensitivity": plot_sensitivity}


# ---------------------------------------------------------------------------- reports
def _fmt(value) -> str:
    return fmt_number(value)


def report_blocks(it: Iteration, plan_dict: dict) -> list[tuple]:
    """The report as blocks (``("h", text)``, ``("p", text)``, ``("table", header, rows)``,
    ``("img", name)``), rendered to both markdown and HTML."""
    frame = it.to_frame()
    blocks: list[tuple] = [
        ("h1", f"OCI iteration {it.index}: {plan_dict.get('name') or plan_dict['outcome']}"),
        ("p", f"Treatment `{plan_dict['treatment']}`, outcome `{plan_dict['outcome']}`, population "
              f"{plan_dict.get('population') or 'all rows'}. Spec by the {it.actor.source} Actor"
              + (f" ({it.actor.note})" if it.actor.note else "") + "."),
        ("p", "Spec: " + "; ".join(f"{k} = {v}" for k, v in it.spec.to_dict().items())),
        ("h2", "Estimates"),
        ("table", list(frame.columns), [[_fmt(v) for v in row] for row in frame.itertuples(index=False)]),
        ("img", "estimates"),
        ("h2", "Verdicts and proposals"),
    ]
    for v in it.critique.verdicts:
        blocks.append(("p", f"**{v.estimand}: {v.verdict}**" + ("".join(f"\n- {r}" for r in v.reasons))))
    for p in it.critique.proposals:
        blocks.append(("p", f"Proposal ({p.kind}): `{json.dumps(p.change)}` - {p.reason}"))
    if not it.critique.proposals:
        blocks.append(("p", "No proposals."))
    blocks.append(("h2", "Diagnostics"))
    for d in it.result.diagnostics:
        blocks.append(("h3", d.estimand))
        blocks.append(("table", ["check", "status", "value", "warn at", "fail at", "detail"],
                       [[c.name, c.status, _fmt(c.value), _fmt(c.warn_at), _fmt(c.fail_at), c.detail]
                        for c in d.checks]))
    blocks.append(("h3", "Balance (standardized mean differences)"))
    header = ["column", "priority", "in model", "unweighted"] + [f"weighted {d.estimand}" for d in
                                                                  it.result.diagnostics]
    rows = []
    for i, r in enumerate(it.result.diagnostics[0].balance):
        rows.append([r.column, r.priority, "yes" if r.in_model else "no", _fmt(r.smd_unweighted)]
                    + [_fmt(d.balance[i].smd_weighted) for d in it.result.diagnostics])
    blocks.append(("table", header, rows))
    for name in ("overlap", "love", "placebo", "sensitivity"):
        blocks.append(("img", name))
    return blocks


def render_markdown(blocks, images: dict) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            out.append("| " + " | ".join(block[1]) + " |")
            out.append("|" + "---|" * len(block[1]))
            out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in block[2]]
        elif kind == "img" and block[1] in images:
            out.append(f"![{block[1]}](plots/{block[1]}.png)")
        out.append("")
    return "\n".join(out)


def render_html(blocks, images: dict) -> str:
    """A self-contained page: inline CSS, PNGs embedded as base64."""
    esc = html.escape
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{esc(block[1])}</{kind}>")
        elif kind == "p":
            lines = block[1].split("\n- ")
            text = esc(lines[0]).replace("**", "")
            items = "".join(f"<li>{esc(r)}</li>" for r in lines[1:])
            body.append(f"<p>{text}</p>" + (f"<ul>{items}</ul>" if items else ""))
        elif kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>"
                           for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img" and block[1] in images:
            data = base64.b64encode(images[block[1]]).decode("ascii")
            body.append(f'<img alt="{esc(block[1])}" src="data:image/png;base64,{data}">')
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
             "font-size:90%}th{background:#f3f3f3}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>OCI report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------------------- notebook
_NOTEBOOK_CODE = '''\
import json, pathlib, sys
try:
    import causalflow
except ImportError:  # running from a source checkout
    sys.path.insert(0, {repo!r})
from causalflow.oci.artifacts import json_ready
from causalflow.oci.plan import Plan, prepare_data
from causalflow.oci.runner import run_spec
from causalflow.oci.spec import Spec

here = pathlib.Path.cwd()
fields = json.loads((here / "plan.json").read_text())
# data.parquet holds the study population: the population filter is already applied
fields.update(data=str(here.parent / "data.parquet"), population=None)
plan = Plan.from_dict(fields)
spec = Spec.from_dict(json.loads((here / "spec.json").read_text()), plan=plan)
result = run_spec(prepare_data(plan), spec)
result.results_dict()["estimates"]'''

_NOTEBOOK_CHECK = '''\
saved = json.loads((here / "results.json").read_text())
reproduced = json.loads(json.dumps(json_ready(result.results_dict())))
print(json.dumps(reproduced))
assert reproduced == saved, "the re-run does not reproduce results.json"
print("REPRODUCED results.json")'''


def build_notebook(it: Iteration):
    import causalflow

    nbformat = require("nbformat", "oci")
    repo = str(Path(causalflow.__file__).resolve().parent.parent)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# OCI iteration {it.index}\nRe-runs this iteration's spec from "
                                      "the saved plan, spec and data, and checks `results.json`."),
        nbformat.v4.new_code_cell(_NOTEBOOK_CODE.format(repo=repo)),
        nbformat.v4.new_code_cell(_NOTEBOOK_CHECK),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def execute_notebook(nb, folder: Path, timeout: int = 600):
    """Execute ``nb`` in ``folder`` with a fresh python3 kernel, quietly.

    The kernel talks to this process over IPC (Unix domain sockets under the Jupyter
    temporary folder) instead of the default TCP on localhost: ipykernel warns on its
    stderr, which is this terminal's, that a TCP kernel "is running over TCP without
    encryption" (``IPKernelApp.init_sockets``), once per iteration. IPC is the transport
    that warning recommends; nothing else about the execution changes.
    """
    nbclient = require("nbclient", "oci")
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="cf-kernel-") as sockets:
        config = Config()
        config.KernelManager.transport = "ipc"
        # an absolute socket path: the default ("kernel-ipc") is relative to the working
        # folder, which differs between this process and the kernel (it runs in ``folder``)
        config.KernelManager.ip = os.path.join(sockets, "kernel")
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", config=config,
                                         resources={"metadata": {"path": str(folder)}})
        client.execute()
    return nb


# ---------------------------------------------------------------------------- writer
#: what each artifact level imports (plots; the notebook, its kernel and data.parquet)
_LEVEL_NEEDS = {"minimal": (), "standard": ("matplotlib",),
                "full": ("matplotlib", "nbformat", "nbclient", "ipykernel", "pyarrow")}


class ArtifactWriter:
    """Writes each iteration's files and the ``run.json`` index under ``root``.

    Parameters
    ----------
    root : folder
    level : "minimal", "standard" or "full"
    analysis : AnalysisData
        Saved as ``data.parquet`` at level "full" so the notebooks can re-run.
    notebook : bool
        At level "full", write and execute the notebook (False: everything else of "full",
        no notebook and no ``data.parquet``; for batch evaluations).
    """

    def __init__(self, root, level: str, analysis: AnalysisData, notebook: bool = True):
        self.notebook = level == "full" and notebook
        needs = _LEVEL_NEEDS[level] if self.notebook or level != "full" else _LEVEL_NEEDS["standard"]
        for module in needs:  # fail before the first iteration, not after it
            require(module, "oci")
        self.root = Path(root)
        self.level = level
        self.analysis = analysis
        self.root.mkdir(parents=True, exist_ok=True)
        if self.notebook:
            buffer = io.BytesIO()
            analysis.frame.to_parquet(buffer, index=False)
            atomic_write(self.root / "data.parquet", buffer.getvalue())

    def write_iteration(self, it: Iteration) -> Iteration:
        folder_name = f"iteration_{it.index:02d}"
        folder = self.root / folder_name
        plan_dict = self.analysis.plan.to_dict()
        files = {}

        def put(name: str, payload) -> None:
            atomic_write(folder / name, payload)
            files[name] = f"{folder_name}/{name}"

        put("plan.json", _dumps(plan_dict))
        put("spec.json", _dumps(it.spec.to_dict()))
        put("results.json", _dumps(it.result.results_dict()))
        put("diagnostics.json", _dumps(it.result.diagnostics_dict()))
        put("critique.json", _dumps({**it.critique.to_dict(), "actor": {
            "source": it.actor.source, "note": it.actor.note}}))
        images = {}
        if self.level in ("standard", "full"):
            for name, plot in _PLOTS.items():
                png = plot(it)
                if png is not None:
                    images[name] = png
                    put(f"plots/{name}.png", png)
        blocks = report_blocks(it, plan_dict)
        put("report.md", render_markdown(blocks, images))
        if self.level in ("standard", "full"):
            put("report.html", render_html(blocks, images))
        if self.notebook:
            nb = execute_notebook(build_notebook(it), folder)
            put("notebook.ipynb", require("nbformat", "oci").writes(nb))
        return replace(it, files=files)

    def write_index(self, run: OCIRun, summary_blocks=None) -> Path:
        """Write ``run.json`` (last) and, given the run report's blocks, ``report.md`` (and
        ``report.html`` above level "minimal") in the run folder."""
        if summary_blocks is not None:
            atomic_write(self.root / "report.md", render_markdown(summary_blocks, {}))
            if self.level in ("standard", "full"):
                atomic_write(self.root / "report.html", render_html(summary_blocks, {}))
        index = {
            "plan": run.plan.to_dict(), "stop_reason": run.stop_reason, "stop_detail": run.stop_detail,
            "artifact_level": self.level,
            "data": "data.parquet" if self.notebook else None,
            "iterations": [{"index": it.index, "spec_key": it.spec.key(), "actor": it.actor.source,
                            "verdicts": it.verdicts, "n_proposals": len(it.critique.proposals),
                            "base": it.base, "applied": [p.to_dict() for p in it.applied],
                            "table": it.to_frame().to_dict(orient="records"),
                            "files": it.files} for it in run.iterations],
            "final": {"iteration": run.final.index, "reason": run.final_reason,
                      "table": run.final.to_frame().to_dict(orient="records")},
            "last": {"iteration": run.last.index},
            "rejected": [p.to_dict() for p in run.rejected],
            "report": "report.md" if summary_blocks is not None else None,
        }
        return atomic_write(self.root / "run.json", _dumps(index))
