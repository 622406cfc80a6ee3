"""The run report of the OCI loop: which iteration is reported and why, then every iteration.

The blocks (``("h1", text)``, ``("p", text)``, ``("table", header, rows)``) are rendered
to markdown and HTML with :mod:`causalflow.oci.artifacts` (``report.md`` / ``report.html`` of
the run folder, written by the loop) and printed by ``causalflow oci run``. A trimmed estimate is always shown
with the population it describes and the untrimmed estimate of the same estimand beside it.
"""

from __future__ import annotations

import json

from .artifacts import render_markdown
from .formatting import fmt_number
from .records import VERDICT_RANK, Iteration, OCIRun, grade

__all__ = ["iteration_rows", "run_summary_blocks", "summary_text"]

_ROW_HEADER = ["iteration", "changes", "estimand", "verdict", "estimate", "95% interval", "population", "n",
               "untrimmed estimate (95% interval)"]


def _interval(lo, hi) -> str:
    return f"[{fmt_number(lo)}, {fmt_number(hi)}]"


def _changes(it: Iteration) -> str:
    if it.base is None:
        return "first spec"
    kinds = ", ".join(p.kind for p in it.applied) or "none"
    return f"from iteration {it.base}: {kinds}"


def iteration_rows(it: Iteration) -> list[list[str]]:
    """One row per estimand of ``it``: the columns of the run report's iteration table."""
    rows = []
    for r in it.result.estimates:
        untrimmed = ("-" if r.untrimmed_estimate is None else
                     f"{fmt_number(r.untrimmed_estimate)} {_interval(r.untrimmed_ci_lower, r.untrimmed_ci_upper)}")
        rows.append([str(it.index), _changes(it), r.estimand, it.verdicts.get(r.estimand, "-"),
                     fmt_number(r.estimate), _interval(r.ci_lower, r.ci_upper), r.population,
                     fmt_number(int(r.n)), untrimmed])
    return rows


def run_summary_blocks(run: OCIRun) -> list[tuple]:
    """The run report as blocks: the reported iteration and why, the stop, every iteration."""
    plan = run.plan
    final = run.final
    name = plan.name or plan.outcome
    stop = run.stop_reason + (f" ({run.stop_detail})" if run.stop_detail else "")
    blocks: list[tuple] = [
        ("h1", f"OCI run: {name}"),
        ("p", f"**Reported: iteration {final.index}** of {len(run.iterations)}. Why: {run.final_reason}."),
        ("p", f"Stopped: {stop}. Reported estimands (the plan's): {', '.join(plan.estimands)}."),
        ("h2", f"Reported estimates (iteration {final.index})"),
        ("table", _ROW_HEADER, iteration_rows(final)),
    ]
    trimmed = [r for r in final.result.estimates if r.untrimmed_estimate is not None]
    for r in trimmed:
        blocks.append(("p", f"The {r.estimand} of iteration {final.index} is on a trimmed population "
                            f"({r.population}, {fmt_number(int(r.n))} units): it is the {r.estimand} of "
                            f"that population. On the whole study population the same spec gives "
                            f"{fmt_number(r.untrimmed_estimate)} "
                            f"{_interval(r.untrimmed_ci_lower, r.untrimmed_ci_upper)}."))
    blocks.append(("h2", "Every iteration"))
    rows = [row for it in run.iterations for row in iteration_rows(it)]
    blocks.append(("table", _ROW_HEADER, rows))
    names = {rank: name for name, rank in VERDICT_RANK.items()}
    grades = ", ".join(f"{it.index}: {names[grade(it, plan.estimands)]}" for it in run.iterations)
    blocks.append(("p", f"Credibility of each iteration (worst verdict of the plan's estimands): {grades}."))
    if run.rejected:
        blocks.append(("h2", "Proposals that made the result worse (tried, not proposed again)"))
        for p in run.rejected:
            blocks.append(("p", f"{p.kind}: `{json.dumps(p.change)}` - {p.reason}"))
    return blocks


def summary_text(run: OCIRun) -> str:
    """The run report as plain markdown text (``causalflow oci run`` prints it).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from causalflow.oci import Plan, RuleActor, run
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=600); t = (rng.random(600) < 1 / (1 + np.exp(-0.5 * x))).astype(int)
    >>> df = pd.DataFrame({"x": x, "t": t, "y": 2 * t + x + rng.normal(size=600)})
    >>> plan = Plan(data=df, treatment="t", outcome="y", confounders=["x"], estimands=["ATE"])
    >>> print(summary_text(run(plan, actor=RuleActor(n_folds=2))).splitlines()[2])
    **Reported: iteration 1** of 1. Why: iteration 1 is the only iteration (ATE: fully_satisfactory).
    """
    return render_markdown(run_summary_blocks(run), {})
