"""Follow-ups of an OCI run: a sensitivity sweep and the same spec across partitions.

- :func:`sensitivity_sweep` re-runs a spec over trimming thresholds x confounder
  sets: how much do the estimates move when the population or the adjustment set
  changes?
- :func:`by_partition` runs the same spec in each level of a column (for example a
  month): a table, and a forest plot with :func:`plot_partitions`.

Both return pandas tables; :func:`write_followup` saves a table (CSV) and its plot
(PNG) atomically.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ValidationError
from .plan import AnalysisData, Plan, prepare_data
from .runner import SpecResult, run_spec
from .spec import Spec

__all__ = ["by_partition", "plot_partitions", "plot_sweep", "sensitivity_sweep", "write_followup"]

_COLUMNS = ["estimand", "estimate", "std_error", "ci_lower", "ci_upper", "p_value", "n", "population"]


def _rows(result: SpecResult, **labels) -> list[dict]:
    rows = []
    for r, d in zip(result.estimates, result.diagnostics):
        high = [abs(b.smd_weighted) for b in d.balance if b.priority == "high"]
        rows.append({**labels, **{k: getattr(r, k) for k in _COLUMNS},
                     "max_abs_smd_high": max(high) if high else np.nan,
                     "trimming_alpha": result.alpha if r.estimand != "ATO" else 0.0})
    return rows


def sensitivity_sweep(plan: Plan, spec: Spec, *, trimming=("none", 0.05, 0.1, 0.15),
                      confounder_sets: dict | None = None, data=None) -> pd.DataFrame:
    """Estimates for every trimming threshold x confounder set.

    Parameters
    ----------
    plan, spec : the study and the spec to vary (for example ``run.final.spec``)
    trimming : values of ``Spec.trimming`` ("none", "crump" or alpha)
    confounder_sets : dict label -> list of confounders, optional
        Default: the spec's set, the high-priority confounders, and all confounders.
    data : table, optional (replaces ``plan.data``)

    Returns a table with ``covariate_set``, ``trimming`` and the estimate columns.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0); x = rng.normal(size=300)
    >>> t = (rng.random(300) < 1 / (1 + np.exp(-x))).astype(int)
    >>> df = pd.DataFrame({"x": x, "t": t, "y": t + x + rng.normal(size=300)})
    >>> plan = Plan(data=df, treatment="t", outcome="y", confounders=["x"])
    >>> spec = Spec(estimands=("ATE",), covariates=("x",), priorities=(("x", "high"),), n_folds=2)
    >>> sweep = sensitivity_sweep(plan, spec, trimming=("none", 0.1))  # the three sets coincide here
    >>> sweep[["covariate_set", "trimming"]].values.tolist()
    [['spec', 'none'], ['spec', '0.1']]
    """
    analysis = prepare_data(plan, table=data)
    if confounder_sets is None:
        high = plan.confounders["high"] or plan.all_confounders
        confounder_sets = {"spec": spec.covariates, "high": high, "all": plan.all_confounders}
    rows, seen = [], set()
    for label, covariates in confounder_sets.items():
        for trim in trimming:
            candidate = replace(spec, covariates=tuple(covariates), trimming=trim)
            key = (tuple(covariates), candidate.key())
            if key in seen:
                continue
            seen.add(key)
            rows += _rows(run_spec(analysis, candidate), covariate_set=label, trimming=str(trim))
    return pd.DataFrame(rows)


def _subset(analysis: AnalysisData, mask: np.ndarray) -> AnalysisData:
    return AnalysisData(analysis.frame.loc[mask].reset_index(drop=True), analysis.treatment[mask],
                        analysis.outcome[mask], {k: v[mask] for k, v in analysis.placebos.items()},
                        analysis.plan)


def by_partition(plan: Plan, spec: Spec, column: str | None = None, *, data=None) -> pd.DataFrame:
    """The same spec in every level of ``column`` (default ``plan.partition``).

    A level where the spec cannot run (for example one arm is empty) gets a row with
    the reason in ``error`` and missing estimates.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0); x = rng.normal(size=400)
    >>> t = (rng.random(400) < 0.5).astype(int)
    >>> df = pd.DataFrame({"x": x, "t": t, "y": t + x + rng.normal(size=400),
    ...                    "month": np.repeat(["jan", "feb"], 200)})
    >>> plan = Plan(data=df, treatment="t", outcome="y", confounders=["x"], partition="month")
    >>> spec = Spec(estimands=("ATE",), covariates=("x",), priorities=(("x", "high"),), n_folds=2)
    >>> by_partition(plan, spec)["partition"].tolist()
    ['feb', 'jan']
    """
    column = column or plan.partition
    if column is None:
        raise ValidationError("column: name a partition column (or set Plan.partition)")
    if column != plan.partition:
        plan = plan.replace(partition=column)
    analysis = prepare_data(plan, table=data)
    values = analysis.frame[column].to_numpy()
    rows = []
    for level in sorted(pd.unique(values).tolist(), key=str):
        mask = values == level
        try:
            rows += _rows(run_spec(_subset(analysis, mask), spec), partition=level)
        except ValidationError as exc:
            rows.append({"partition": level, "n": int(mask.sum()), "error": str(exc)})
    frame = pd.DataFrame(rows)
    if "error" not in frame:
        frame["error"] = None
    return frame


def plot_sweep(frame: pd.DataFrame) -> bytes:
    """Forest plot (PNG bytes) of a :func:`sensitivity_sweep` table."""
    from .artifacts import forest_plot

    labels = [f"{r.estimand} | {r.covariate_set} | trim {r.trimming}" for r in frame.itertuples()]
    return forest_plot(labels, frame["estimate"], frame["std_error"], "Sensitivity sweep (95% CI)")


def plot_partitions(frame: pd.DataFrame) -> bytes:
    """Forest plot (PNG bytes) of a :func:`by_partition` table (rows with errors left out)."""
    ok = frame[frame["error"].isna()] if "error" in frame else frame
    from .artifacts import forest_plot

    labels = [f"{r.partition} [{r.estimand}]" for r in ok.itertuples()]
    return forest_plot(labels, ok["estimate"], ok["std_error"], "Estimates by partition (95% CI)")


def write_followup(frame: pd.DataFrame, png: bytes, folder: str | os.PathLike, name: str) -> dict:
    """Save ``name.csv`` and ``name.png`` in ``folder`` atomically; returns their paths."""
    from .artifacts import atomic_write

    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    folder = Path(folder)
    return {"table": str(atomic_write(folder / f"{name}.csv", buffer.getvalue())),
            "plot": str(atomic_write(folder / f"{name}.png", png))}
