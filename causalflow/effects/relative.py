r"""Relative effects: percent change of an effect against the (adjusted) control mean.

Kernel for ``Effects.relative()``. For an effect :math:`\hat\tau` and the control mean
:math:`\hat\mu` in the same population (both delta-vector contrasts of one fitted
coefficient vector, so their joint covariance is known),

.. math::

    \hat\theta = \hat\tau / \hat\mu, \qquad
    \operatorname{Var}(\hat\theta) \approx \frac{1}{\hat\mu^2}\Big[
        v_{\tau\tau} - 2\hat\theta\, v_{\tau\mu} + \hat\theta^2 v_{\mu\mu}\Big]

(the delta method with gradient :math:`(1/\mu, -\tau/\mu^2)`), and the Wald interval
:math:`\hat\theta \pm c\,\mathrm{se}(\hat\theta)`.

**Fieller's interval** (Fieller 1954) inverts the exact pivot
:math:`(\hat\tau - \theta\hat\mu)/\sqrt{v_{\tau\tau} - 2\theta v_{\tau\mu} + \theta^2
v_{\mu\mu}}`: the set of :math:`\theta` with

.. math::

    \theta^2 (\hat\mu^2 - c^2 v_{\mu\mu}) - 2\theta(\hat\tau\hat\mu - c^2 v_{\tau\mu})
        + (\hat\tau^2 - c^2 v_{\tau\tau}) \le 0.

When the control mean is significantly different from zero (:math:`\hat\mu^2 > c^2
v_{\mu\mu}`) this is the bounded interval between the two roots; otherwise it is
unbounded and reported as :math:`(-\infty, \infty)`. The Fieller interval is preferable
when the control mean is noisy (small or skewed metrics), where the delta-method
interval can under-cover.

The p-value is that of :math:`H_0: \theta = 0`, which is the same hypothesis as
:math:`\tau = 0` (Fieller's pivot at :math:`\theta = 0` is the effect's own t-statistic),
so it equals the absolute effect's p-value.

Examples
--------
>>> r = relative_effect(estimate=2.0, control_mean=40.0, var_estimate=0.25,
...                     var_control=0.04, cov=-0.04)
>>> round(float(r.estimate[0]), 4), round(float(r.std_error[0]), 5)
(0.05, 0.0126)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from ..errors import ValidationError
from ..validate import check_alpha, check_choice
from .render import Rendered, plain

__all__ = ["RelativeEffect", "RelativeEffects", "fieller_interval", "relative_effect", "relative_effects"]

IntervalMethod = Literal["delta", "fieller"]


@dataclass(frozen=True, slots=True)
class RelativeEffect:
    """Relative effects tau / mu (as fractions: 0.05 = +5%).

    Attributes (all arrays of shape (m,))
    ----------
    estimate : tau / mu
    std_error : delta-method standard error
    ci_lower, ci_upper : the interval of ``method`` (inf when Fieller's is unbounded)
    p_value : p-value of tau = 0 (equivalently theta = 0)
    control_mean, control_std_error : mu and its standard error
    method : "delta" or "fieller"
    critical_value : (m,) the quantile c used for each interval
    """

    estimate: np.ndarray
    std_error: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    p_value: np.ndarray
    control_mean: np.ndarray
    control_std_error: np.ndarray
    method: str
    critical_value: np.ndarray


def _vector(name: str, x) -> np.ndarray:
    a = np.atleast_1d(np.asarray(x, dtype=float))
    if a.ndim != 1:
        raise ValidationError(f"{name}: expected a scalar or a 1-D array, got shape {a.shape}")
    return a


def fieller_interval(estimate, control_mean, var_estimate, var_control, cov, crit):
    """Fieller's interval for tau / mu (arrays); (-inf, inf) where it is unbounded.

    >>> lo, hi = fieller_interval(2.0, 40.0, 0.25, 0.04, -0.04, 1.96)
    >>> round(float(lo[0]), 4), round(float(hi[0]), 4)
    (0.0254, 0.0748)
    """
    t, m, vt, vm, c = (np.atleast_1d(np.asarray(x, dtype=float))
                       for x in (estimate, control_mean, var_estimate, var_control, cov))
    k = crit ** 2
    a = m ** 2 - k * vm
    b = t * m - k * c
    cc = t ** 2 - k * vt
    disc = b ** 2 - a * cc
    bounded = (a > 0) & (disc >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.sqrt(np.where(bounded, disc, 0.0))
        lo = np.where(bounded, (b - root) / a, -np.inf)
        hi = np.where(bounded, (b + root) / a, np.inf)
    nan = np.isnan(t) | np.isnan(m) | np.isnan(vt) | np.isnan(vm) | np.isnan(c)
    return np.where(nan, np.nan, lo), np.where(nan, np.nan, hi)


def relative_effect(
    estimate,
    control_mean,
    var_estimate,
    var_control,
    cov,
    *,
    alpha: float = 0.05,
    df: float | None = None,
    method: IntervalMethod = "delta",
) -> RelativeEffect:
    """Relative effect tau / mu with a delta-method SE and a delta or Fieller interval.

    Parameters
    ----------
    estimate : array-like, shape (m,)
        Effects tau.
    control_mean : array-like, shape (m,)
        Control means mu in the same populations (the adjusted control mean).
    var_estimate, var_control, cov : array-like, shape (m,)
        Var(tau), Var(mu) and Cov(tau, mu) from the joint covariance of the fit.
    alpha : float
        1 - confidence level.
    df : float or array-like (m,), optional
        Degrees of freedom of a t reference distribution; default normal.
    method : {"delta", "fieller"}
        Interval: Wald interval from the delta-method SE, or Fieller's.

    Returns
    -------
    RelativeEffect

    Examples
    --------
    >>> r = relative_effect(2.0, 40.0, 0.25, 0.04, -0.04, method="fieller")
    >>> round(float(r.ci_lower[0]), 4), round(float(r.ci_upper[0]), 4)
    (0.0254, 0.0748)
    """
    check_choice("method", method, ("delta", "fieller"))
    check_alpha(alpha)
    if df is not None and not np.all(np.asarray(df) > 0):
        raise ValidationError(f"df: must be positive, got {df!r}")
    t = _vector("estimate", estimate)
    m = _vector("control_mean", control_mean)
    vt = _vector("var_estimate", var_estimate)
    vm = _vector("var_control", var_control)
    c = _vector("cov", cov)
    try:
        t, m, vt, vm, c = np.broadcast_arrays(t, m, vt, vm, c)
    except ValueError as err:
        raise ValidationError(f"estimate / control_mean / variances: shapes differ ({err})") from None
    if np.any(vt < 0) or np.any(vm < 0):
        raise ValidationError("var_estimate / var_control: variances must be non-negative")
    dist = stats.norm if df is None else stats.t(df)
    crit = dist.isf(alpha / 2) * np.ones(len(t))
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = t / m
        var = (vt - 2.0 * theta * c + theta ** 2 * vm) / m ** 2
        se = np.sqrt(np.maximum(var, 0.0))
        p = 2.0 * dist.sf(np.abs(t) / np.sqrt(vt))
    if method == "delta":
        lo, hi = theta - crit * se, theta + crit * se
    else:
        lo, hi = fieller_interval(t, m, vt, vm, c, crit)
    return RelativeEffect(estimate=theta, std_error=se, ci_lower=lo, ci_upper=hi, p_value=p,
                          control_mean=m.copy(), control_std_error=np.sqrt(vm), method=method,
                          critical_value=crit)


# ---------------------------------------------------------------------------------------
# orchestration: Effects -> relative effects of the same fit
# ---------------------------------------------------------------------------------------

RELATIVE_COLUMNS = ("metric", "arm", "condition", "estimand", "estimate", "std_error",
                    "ci_lower", "ci_upper", "p_value", "effect", "effect_std_error",
                    "control_mean", "control_std_error", "n")


@dataclass(frozen=True, slots=True, repr=False)
class RelativeEffects(Rendered):
    """Relative effects of one ``infer_effect`` call: effect / adjusted control mean.

    Attributes
    ----------
    records : tuple of dict
        One per effect, with the columns of :data:`RELATIVE_COLUMNS`: the relative
        ``estimate``, ``std_error`` (delta method), ``ci_lower`` / ``ci_upper`` (``method``),
        ``p_value`` (of effect = 0), the absolute ``effect`` and ``effect_std_error``, the
        adjusted ``control_mean`` and ``control_std_error``, ``n``. Relative numbers are
        in percent when ``scale="percent"`` (5.0 = +5%), fractions when ``"fraction"``.
    method : "delta" or "fieller"
    scale : "percent" or "fraction"
    alpha : float
    """

    records: tuple
    method: str
    scale: str
    alpha: float

    _rows_key = "effects"

    def columns(self) -> tuple:
        return RELATIVE_COLUMNS

    def to_dicts(self) -> list[dict]:
        """One dict per effect (the one serialisation path)."""
        return [dict(r) for r in self.records]

    def _meta(self) -> dict:
        return {"alpha": self.alpha, "method": self.method, "scale": self.scale}

    def _display(self) -> tuple[list[str], list[list[str]]]:
        unit = "%" if self.scale == "percent" else ""
        header = ["metric", "arm", "condition", "estimand", f"relative{unit and ' (%)'}",
                  "std_error", f"{1 - self.alpha:.0%} CI ({self.method})", "p_value",
                  "control_mean", "n"]
        body = [[str(r["metric"]), str(r["arm"]), str(r["condition"]), r["estimand"],
                 f"{r['estimate']:+.4g}", f"{r['std_error']:.3g}",
                 f"[{r['ci_lower']:.4g}, {r['ci_upper']:.4g}]", f"{r['p_value']:.3g}",
                 f"{r['control_mean']:.4g}", f"{r['n']:,}"] for r in self.records]
        return header, body


def relative_effects(effects, *, method: IntervalMethod = "delta",
                     scale: Literal["percent", "fraction"] = "percent") -> RelativeEffects:
    r"""Relative effects of an ``Effects`` record against the adjusted control mean.

    For the effect :math:`d_\tau'b` of arm j in condition S (see ``infer_effect``), the
    adjusted control mean in S is the contrast :math:`d_\mu'b` with
    :math:`d_\mu = e_{1} + \sum_l \bar x_{S,l} e_{X_l}`: the intercept plus the covariate
    main effects at S's centred covariate means (covariates enter centred, so in the whole
    sample it is the intercept). Both come from the same fit (OLS, 2SLS, weighted,
    clustered), so the model's contrast pass gives their joint covariance
    (``model.control_means``, the :class:`~causalflow.effects.record.ContrastModel`
    protocol), and :func:`relative_effect` gives the ratio, its delta-method SE and the
    interval, with the same reference distribution (t with the effect's dof, or normal)
    as the effects. In an encouragement design the ITT is divided by the reduced form's
    control mean, the LATE by the compliers' untreated mean (a Wald ratio, Abadie 2003, whose
    influence enters the joint covariance) and an ATE by the 2SLS level at the population's
    covariate means (see ``LinearModelResults.control_means``).

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 500)})
    >>> df["y"] = 50 + 5 * df.t + rng.normal(size=500)
    >>> eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y").fit(cf.LinearModel).infer_effect()
    >>> rel = relative_effects(eff, scale="fraction").to_frame()
    >>> bool(np.isclose(rel.estimate[0], rel.effect[0] / rel.control_mean[0]))
    True
    """
    check_choice("method", method, ("delta", "fieller"))
    check_choice("scale", scale, ("percent", "fraction"))
    model = effects.model
    if model is None or not hasattr(model, "control_means"):
        raise ValidationError("relative: needs effects of a fitted model (infer_effect), not of a "
                              "monitored look")
    mu, v_mm, v_tm = model.control_means(effects)
    tau = effects.estimate
    v_tt = np.diag(effects.cov)
    df = None
    if effects.inference.distribution == "t":
        df = np.array([r.get("dof", np.nan) for r in effects.records], dtype=float)
    rel = relative_effect(tau, mu, v_tt, v_mm, v_tm, alpha=effects.alpha, df=df, method=method)
    f = 100.0 if scale == "percent" else 1.0
    records = []
    for i, r in enumerate(effects.records):
        records.append({
            "metric": r["metric"], "arm": plain(r["arm"]), "condition": r["condition"],
            "estimand": r["estimand"], "estimate": f * rel.estimate[i],
            "std_error": f * rel.std_error[i], "ci_lower": f * rel.ci_lower[i],
            "ci_upper": f * rel.ci_upper[i], "p_value": float(rel.p_value[i]),
            "effect": float(tau[i]), "effect_std_error": float(np.sqrt(v_tt[i])),
            "control_mean": float(mu[i]), "control_std_error": float(np.sqrt(v_mm[i])),
            "n": int(r["n"])})
    return RelativeEffects(tuple(records), method, scale, effects.alpha)
