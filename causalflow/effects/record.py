"""``Effects``: the typed record of the effects of one ``infer_effect`` call.

One serialisation path (:class:`~causalflow.effects.render.Rendered`): :meth:`Effects.to_dicts`
feeds ``to_frame``, ``summary``, ``to_markdown``, ``_repr_html_`` and the JSON form ``to_dict``.

The record needs from its model only the small protocol :class:`ContrastModel` (to infer
new conditions for a projection, or the control means of relative effects); a record
without a model (a look of a monitored experiment) still renders, adjusts and projects
over the conditions it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from scipy import special, stats

from ..linalg.anytime import contrast_anytime_valid
from ..validate import check_choice
from .adjust import Adjustment, adjustment
from .mediation import GraphEffect
from .project import project
from .relative import relative_effects
from .render import JointRecords, plain

__all__ = ["COLUMNS", "ContrastModel", "Effects", "Inference"]

COLUMNS = ("metric", "arm", "condition", "estimand", "estimate", "std_error", "ci_lower",
           "ci_upper", "p_value", "av_p_value", "av_ci_lower", "av_ci_upper", "n", "dof", "cov_type")

ESTIMAND_NOTES = {
    "ATE": "ATE: average effect of the arm vs control over the experiment's units",
    "CATE": "CATE: average effect of the arm vs control among the units of the condition",
    "ITT": "ITT: effect of being assigned (encouraged), whether or not the treatment was taken",
    "LATE": "LATE: effect of taking the treatment among compliers (Imbens and Angrist 1994)",
}


@dataclass(frozen=True, slots=True)
class Inference:
    """How the intervals and p-values of a record are computed.

    Attributes
    ----------
    cov_type : "HC0", "HC1", "CR0", "CR1", "CR2" or "CR3"
    distribution : "t" (quantiles of t with each effect's ``dof``) or "normal"
    n_params : p, the number of coefficients (for the anytime-valid sample size)
    av_g, av_planned_n : tuning of the anytime-valid columns (None: optimal at the fitted n)
    """

    cov_type: str
    distribution: Literal["t", "normal"] = "t"
    n_params: int = 1
    av_g: float | None = None
    av_planned_n: float | None = None

    def __post_init__(self):
        check_choice("inference", self.distribution, ("t", "normal"))


@runtime_checkable
class ContrastModel(Protocol):
    """A fitted model that yields delta-vector contrasts and their joint covariance.

    ``LinearModelResults`` implements it; the effects functions (relative, project) use
    nothing else of a model: ``covariates`` (for a target table's means), ``infer_effect``
    (conditions a projection needs), ``effects_at_means`` (effects at a target's covariate
    means) and ``control_means`` (the adjusted control means of relative effects).
    """

    metrics: tuple
    covariates: object

    def infer_effect(self, condition_on=None, alpha: float = 0.05, estimands=None): ...

    def effects_at_means(self, label: str, means: np.ndarray, alpha: float = 0.05, estimands=None): ...

    def control_means(self, effects) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per effect: the adjusted control mean mu, Var(mu) and Cov(tau, mu)."""


@dataclass(frozen=True, repr=False)
class Effects(JointRecords):
    r"""Effects of every metric x arm x condition (x estimand) of one call, with their joint covariance.

    Attributes
    ----------
    records : tuple of dict
        Per effect: metric, arm, condition, estimand, estimate, n, dof (the degrees of
        freedom of its t reference: clusters - 1, n - p, or Bell-McCaffrey's with CR2),
        av_dof (the residual degrees of freedom of the anytime-valid mixture: n - p or
        clusters - 1), n_clusters.
    cov : (m, m) ndarray
        Joint covariance of the m estimates (same order as ``records``).
    alpha : float
        1 - confidence level of the intervals.
    model : the fitted model the effects come from (a :class:`ContrastModel`), or None.
    conditions : tuple of the condition texts (None for the average effect).
    inference : Inference, the covariance type and reference distribution.
    adjustment : Adjustment or None, set by :meth:`adjust`.
    notes : tuple of str, one line per estimand saying what it is (from the model: in an
        encouragement design the ATE's assumption and diagnostic); default
        :data:`ESTIMAND_NOTES`. Printed under the table and kept in ``to_dict()``.
    estimands : tuple of str, the estimands the call asked for (``infer_effect(estimands=)``),
        which a projection that needs new conditions asks for again; empty when unknown.

    Notes
    -----
    With ``inference.distribution == "t"`` (the default), :math:`t = \hat	au / s`,
    :math:`p = 2\,P(T_
u > |t|)` and the interval :math:`\hat	au \pm t_{
u, 1-lpha/2} s`
    with :math:`
u` the effect's ``dof``; with ``"normal"`` the normal quantiles. The
    ``av_*`` columns are anytime-valid (Lindon et al. 2022; :mod:`causalflow.linalg.anytime`).

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 400)})
    >>> df["y"], df["z"] = 2.0 * df.t + rng.normal(size=400), rng.normal(size=400)
    >>> effects = cf.ExperimentData(df, intent_to_treat="t").add_metric(y=["y", "z"]).fit(
    ...     cf.LinearModel).infer_effect()
    >>> effects.to_frame()[["metric", "estimand", "dof", "cov_type"]].values.tolist()
    [['y', 'ATE', 398, 'HC1'], ['z', 'ATE', 398, 'HC1']]
    >>> effects.cov.shape, sorted(effects.to_dict())[:2]
    ((2, 2), ['alpha', 'columns'])
    """

    records: tuple
    cov: np.ndarray
    alpha: float
    model: object
    conditions: tuple
    inference: Inference
    adjustment: Adjustment | None = None
    notes: tuple = ()
    estimands: tuple = ()

    _rows_key = "effects"

    @classmethod
    def _from_fit(cls, records, cov, alpha, model, conditions, inference: Inference, *, notes=(),
                  estimands=()) -> Effects:
        cov = np.array(cov, dtype=float)
        cov.setflags(write=False)
        return cls(tuple(records), cov, float(alpha), model, tuple(conditions), inference,
                   notes=tuple(notes), estimands=tuple(estimands))

    def _derive(self, records, cov, conditions) -> Effects:
        """A record of other contrasts of the same fit (a projection), without adjustment."""
        cov = np.array(cov, dtype=float)
        cov.setflags(write=False)
        return replace(self, records=tuple(records), cov=cov, conditions=tuple(conditions), adjustment=None)

    # -- numbers -------------------------------------------------------------------------
    def project(self, weights) -> Effects:
        r"""Project onto a mix of conditions, or onto a target population's covariates.

        ``weights``: ``{condition: weight}`` summing to 1, over conditions this call
        inferred (or that the model can infer; ``"all"`` is the average effect): per
        metric, arm and estimand the estimate :math:`\sum_c v_c \hat\tau_c` with
        variance :math:`v'\Sigma v` from the joint covariance, which is kept across the
        projected arms and metrics. Or a table (pandas / polars / pyarrow) with the
        covariate columns: the conditional effect at that table's covariate means.
        See :mod:`causalflow.effects.project`.

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 500), "econ": rng.choice(["strong", "weak"], 500)})
        >>> df["y"] = df.t * (1 + (df.econ == "weak")) + rng.normal(size=500)
        >>> eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y="y", exogenous_covariates=["econ"]).fit(cf.LinearModel).infer_effect(
        ...     condition_on=["econ == 'strong'", "econ == 'weak'"])
        >>> proj = eff.project({"econ == 'strong'": 0.2, "econ == 'weak'": 0.8})
        >>> bool(np.isclose(proj.estimate[0], 0.2 * eff.estimate[0] + 0.8 * eff.estimate[1]))
        True
        """
        return project(self, weights)

    def relative(self, method: str = "delta", scale: str = "percent"):
        r"""Percent change of each effect against the adjusted control mean.

        :math:`\hat\tau / \hat\mu_c` with :math:`\hat\mu_c` the control mean in the same
        condition (a delta-vector contrast of the same fit), a delta-method standard error
        from their joint covariance, and a delta (``method="delta"``) or Fieller
        (``"fieller"``) interval; ``scale="fraction"`` reports 0.05 instead of 5.0.
        See :func:`causalflow.effects.relative.relative_effects`.

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 1000), "x": rng.normal(size=1000)})
        >>> df["y"] = 20 + 2 * df.t + df.x + rng.normal(size=1000)
        >>> rel = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect().relative()
        >>> round(float(rel.to_frame().estimate[0]), 1)    # true lift +10%
        10.5
        """
        return relative_effects(self, method=method, scale=scale)

    def adjust(self, method: str = "holm", *, seed=0):
        """Multiple-testing adjustment over all effects of this call.

        Adds ``p_value_adjusted`` (``"holm"``, ``"bonferroni"``, ``"bh"``, ``"by"`` or
        ``"maxt"``) and simultaneous max-t intervals ``sim_ci_lower`` / ``sim_ci_upper``
        from the joint covariance. See :mod:`causalflow.effects.adjust`.

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 400)})
        >>> df["a"], df["b"] = df.t + rng.normal(size=400), rng.normal(size=400)
        >>> adj = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y=["a", "b"]).fit(cf.LinearModel).infer_effect().adjust("holm")
        >>> list(adj.to_frame().columns[-3:])
        ['p_value_adjusted', 'sim_ci_lower', 'sim_ci_upper']
        """
        return replace(self, adjustment=adjustment(self.estimate, self.std_error, self.cov,
                                                   self._p_values(), self.alpha, method, seed=seed))

    def with_graph(self, graph, metric: str | None = None):
        """A causal graph over the treatment ``T`` and metric columns, for mediation.

        ``graph``: text such as ``"T -> searches; T -> views; searches -> views -> sales"``
        (parsed by hand, never evaluated) or a networkx DiGraph; it must be acyclic and
        hold ``T`` and the effects' metric (or ``metric=``). Returns a
        :class:`~causalflow.effects.mediation.GraphEffect`, whose ``mediate_effect`` splits
        the effect into its direct part and every indirect path (serial mediators too),
        with standard errors from the joint covariance of all node equations. See
        :mod:`causalflow.effects.mediation` for the model and its assumptions.

        Examples
        --------
        >>> import causalflow as cf
        >>> from causalflow.effects.mediation import simulate_chain
        >>> effects = cf.ExperimentData(simulate_chain(2000, seed=0), intent_to_treat="t").add_metric(
        ...     y="sales", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect()
        >>> effects.with_graph("T -> searches -> views -> sales").mediate_effect().to_frame().path.tolist()
        ['direct', 'T -> views -> sales', 'T -> searches -> views -> sales', 'total_indirect', 'total']
        """
        return GraphEffect(self, graph, metric)

    # -- the one serialisation path -----------------------------------------------------
    def _dof(self) -> np.ndarray | None:
        """Each effect's t reference dof (None: normal; NaN where a record has none)."""
        return _reference_dof(self.records, self.inference)

    def _sf(self, t: np.ndarray) -> np.ndarray:
        """P(T > t) under each effect's reference (:func:`_sf`)."""
        return _sf(t, self._dof())

    def _isf(self, q: float) -> np.ndarray:
        """The upper-q quantile of each effect's reference (:func:`_isf`)."""
        return _isf(q, self._dof(), len(self.records))

    def _p_values(self) -> np.ndarray:
        return _p_values(self.estimate, self.std_error, self._dof())

    def _anytime_columns(self) -> dict:
        """Anytime-valid p-values and confidence sequences (:mod:`causalflow.linalg.anytime`)."""
        return _anytime_columns(self.records, self.estimate, self.std_error, self.inference, self.alpha)

    def columns(self) -> tuple:
        extra = () if self.adjustment is None else ("p_value_adjusted", "sim_ci_lower", "sim_ci_upper")
        return COLUMNS + extra

    def to_dicts(self) -> list[dict]:
        """One dict per effect with every column of :meth:`columns` (the one serialisation path)."""
        return _rows(self.records, effect_numbers(self.records, self.estimate, self.std_error, self.inference,
                                                  self.alpha), self.inference, self.adjustment)

    def _meta(self) -> dict:
        out = {"alpha": self.alpha, "cov_type": self.inference.cov_type,
               "inference": self.inference.distribution,
               "covariance": [[plain(v) for v in row] for row in self.cov]}
        if self.notes:
            out["notes"] = list(self.notes)
        if self.adjustment is not None:
            out["adjustment"] = {"method": self.adjustment.method,
                                 "critical_value": self.adjustment.critical_value}
        return out

    def _display(self) -> tuple[list[str], list[list[str]]]:
        header = ["metric", "arm", "condition", "estimand", "estimate", "std_error",
                  f"{1 - self.alpha:.0%} CI", "p_value"]
        if self.adjustment is not None:
            header += [f"p_adj ({self.adjustment.method})", f"simultaneous {1 - self.alpha:.0%} CI"]
        header += ["av_p_value", "n"]
        body = []
        for r in self.to_dicts():
            row = [str(r["metric"]), str(r["arm"]), str(r["condition"]), r["estimand"],
                   f"{r['estimate']:.4g}", f"{r['std_error']:.3g}",
                   f"[{r['ci_lower']:.4g}, {r['ci_upper']:.4g}]", f"{r['p_value']:.3g}"]
            if self.adjustment is not None:
                row += [f"{r['p_value_adjusted']:.3g}", f"[{r['sim_ci_lower']:.4g}, {r['sim_ci_upper']:.4g}]"]
            row += [f"{r['av_p_value']:.3g}", f"{r['n']:,}"]
            body.append(row)
        return header, body

    def _footer(self) -> list[str]:
        dofs = sorted({r.get("dof") for r in self.records if r.get("dof") is not None})
        reference = ("normal quantiles" if self.inference.distribution == "normal" else
                     "t quantiles, dof " + (f"{dofs[0]:.4g}" if len(dofs) == 1 else
                                            f"{min(dofs):.4g}-{max(dofs):.4g}") if dofs else "t quantiles")
        lines = [f"covariance {self.inference.cov_type}, {reference}"]
        lines += list(self.notes) or [ESTIMAND_NOTES[e] for e in dict.fromkeys(r["estimand"] for r in self.records)
                                      if e in ESTIMAND_NOTES]
        check = getattr(getattr(self.model, "design", None), "sample_ratio", None)
        warning = None if check is None else check.warning()
        return lines + ([warning] if warning else [])


# -- the numbers of the serialisation path, as functions of arrays: a record's rows
# (Effects.to_dicts) and the rows of many records of one inference at once (the looks of a
# monitored experiment) come from the same code


def _reference_dof(records, inference: Inference) -> np.ndarray | None:
    """Each effect's t reference dof (None: normal; NaN where a record has none)."""
    if inference.distribution == "normal" or not records:
        return None
    dof = np.array([r.get("dof", np.nan) for r in records], dtype=float)
    return np.where(dof > 0, dof, np.nan)


def _sf(t: np.ndarray, dof: np.ndarray | None) -> np.ndarray:
    """P(T > t) under each effect's reference: Student's t (``scipy.special.stdtr``, what
    ``scipy.stats.t.sf`` evaluates, without building a frozen distribution per record),
    normal for ``inference="normal"`` or infinite dof."""
    if dof is None:
        return stats.norm.sf(t)
    return np.where(np.isinf(dof), stats.norm.sf(t), special.stdtr(np.where(np.isinf(dof), 1.0, dof), -t))


def _isf(q: float, dof: np.ndarray | None, m: int) -> np.ndarray:
    """The upper-q quantile of each effect's reference (``scipy.special.stdtrit``)."""
    if dof is None:
        return np.full(m, stats.norm.isf(q))
    return np.where(np.isinf(dof), stats.norm.isf(q), -special.stdtrit(np.where(np.isinf(dof), 1.0, dof), q))


def _p_values(estimate: np.ndarray, std_error: np.ndarray, dof: np.ndarray | None) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2 * _sf(np.abs(estimate / std_error), dof)


def _anytime_columns(records, estimate, std_error, inference: Inference, alpha: float) -> dict:
    """Anytime-valid p-values and confidence sequences (:mod:`causalflow.linalg.anytime`)."""
    nan = np.full(len(records), np.nan)
    if not records:
        return {"av_p_value": nan, "av_ci_lower": nan, "av_ci_upper": nan}
    av = contrast_anytime_valid(estimate, std_error, [r.get("av_dof", r.get("dof")) for r in records],
                                inference.cov_type, inference.n_params, alpha, g=inference.av_g,
                                planned_n=inference.av_planned_n)
    return {"av_p_value": av.p_value, "av_ci_lower": av.ci_lower, "av_ci_upper": av.ci_upper}


def effect_numbers(records, estimate: np.ndarray, std_error: np.ndarray, inference: Inference,
                   alpha: float) -> dict:
    """The numeric columns (arrays) of the effects ``records`` with their estimates and
    standard errors: interval, p-value and the anytime-valid columns. Every entry depends on
    its own effect only, so the records of several calls with one ``inference`` and
    ``alpha`` can be stacked into one evaluation."""
    dof = _reference_dof(records, inference)
    with np.errstate(invalid="ignore"):
        crit = _isf(alpha / 2, dof, len(records))
    return {"estimate": estimate, "std_error": std_error, "ci_lower": estimate - crit * std_error,
            "ci_upper": estimate + crit * std_error, "p_value": _p_values(estimate, std_error, dof),
            **_anytime_columns(records, estimate, std_error, inference, alpha)}


def _rows(records, numbers: dict, inference: Inference, adjustment: Adjustment | None = None) -> list[dict]:
    """One dict per effect (the columns of :data:`COLUMNS`, and the adjustment's)."""
    est, se, lo, hi = numbers["estimate"], numbers["std_error"], numbers["ci_lower"], numbers["ci_upper"]
    p_value, av_p, av_lo, av_hi = (numbers[c] for c in ("p_value", "av_p_value", "av_ci_lower", "av_ci_upper"))
    out = []
    for i, r in enumerate(records):
        row = {"metric": r["metric"], "arm": plain(r["arm"]), "condition": r["condition"],
               "estimand": r["estimand"], "estimate": est[i], "std_error": se[i],
               "ci_lower": lo[i], "ci_upper": hi[i], "p_value": p_value[i], "av_p_value": av_p[i],
               "av_ci_lower": av_lo[i], "av_ci_upper": av_hi[i],
               "n": int(r["n"]), "dof": plain(r.get("dof")), "cov_type": inference.cov_type}
        if adjustment is not None:
            row["p_value_adjusted"] = float(adjustment.p_value_adjusted[i])
            row["sim_ci_lower"] = float(adjustment.sim_ci_lower[i])
            row["sim_ci_upper"] = float(adjustment.sim_ci_upper[i])
        out.append(row)
    return out


def effect_columns(records, numbers: dict, inference: Inference) -> dict:
    """The columns of :data:`COLUMNS` (lists and arrays) of the rows :func:`_rows` gives, for a
    frame built column by column."""
    return {"metric": [r["metric"] for r in records], "arm": [plain(r["arm"]) for r in records],
            "condition": [r["condition"] for r in records], "estimand": [r["estimand"] for r in records],
            **{c: numbers[c] for c in ("estimate", "std_error", "ci_lower", "ci_upper", "p_value",
                                       "av_p_value", "av_ci_lower", "av_ci_upper")},
            "n": [int(r["n"]) for r in records], "dof": [plain(r.get("dof")) for r in records],
            "cov_type": [inference.cov_type] * len(records)}
