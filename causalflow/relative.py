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

import html
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from .errors import ValidationError

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
    critical_value : the quantile c used for the interval
    """

    estimate: np.ndarray
    std_error: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    p_value: np.ndarray
    control_mean: np.ndarray
    control_std_error: np.ndarray
    method: str
    critical_value: float


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
    df : float, optional
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
    if method not in ("delta", "fieller"):
        raise ValidationError(f"method: must be 'delta' or 'fieller', got {method!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValidationError(f"alpha: must lie in (0, 1), got {alpha!r}")
    if df is not None and not df > 0:
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
    crit = float(dist.isf(alpha / 2))
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


def _json(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


@dataclass(frozen=True, slots=True)
class RelativeEffects:
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

    def to_dicts(self) -> list[dict]:
        """One dict per effect (the one serialisation path)."""
        return [dict(r) for r in self.records]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.to_dicts(), columns=list(RELATIVE_COLUMNS))

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"alpha": self.alpha, "method": self.method, "scale": self.scale,
                "columns": list(RELATIVE_COLUMNS),
                "effects": [{k: _json(v) for k, v in r.items()} for r in self.to_dicts()]}

    def _table(self) -> tuple[list[str], list[list[str]]]:
        unit = "%" if self.scale == "percent" else ""
        header = ["metric", "arm", "condition", "estimand", f"relative{unit and ' (%)'}",
                  "std_error", f"{1 - self.alpha:.0%} CI ({self.method})", "p_value",
                  "control_mean", "n"]
        body = [[str(r["metric"]), str(r["arm"]), str(r["condition"]), r["estimand"],
                 f"{r['estimate']:+.4g}", f"{r['std_error']:.3g}",
                 f"[{r['ci_lower']:.4g}, {r['ci_upper']:.4g}]", f"{r['p_value']:.3g}",
                 f"{r['control_mean']:.4g}", f"{r['n']:,}"] for r in self.records]
        return header, body

    def summary(self) -> str:
        header, body = self._table()
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
        fmt = "  ".join(f"{{:<{w}}}" if i < 4 else f"{{:>{w}}}" for i, w in enumerate(widths))
        return "\n".join([fmt.format(*header), "  ".join("-" * w for w in widths),
                          *(fmt.format(*row) for row in body)])

    def to_markdown(self) -> str:
        header, body = self._table()
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                          *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body)])

    def _repr_html_(self) -> str:
        header, body = self._table()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in body)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    def __repr__(self) -> str:
        return self.summary()


def _condition_shift(model, group, text, cache) -> np.ndarray:
    """Mean of the centred covariates over a condition's rows (as ``infer_effect`` uses)."""
    from .expr import parse_condition

    key = (id(group), text)
    if key not in cache:
        if text == "all":
            cache[key] = np.zeros(model.spec.covariates.q)
        else:
            originals = cache.setdefault("originals", model.spec.covariates.original())
            rows_in = np.ones(model._source.n, bool) if group.member is None else group.member
            mask = parse_condition(text).evaluate(originals) & rows_in
            cache[key] = model.spec.covariates.means(np.flatnonzero(mask), model._source.weights) - group.mu
    return cache[key]


def relative_effects(effects, *, method: IntervalMethod = "delta",
                     scale: Literal["percent", "fraction"] = "percent") -> RelativeEffects:
    r"""Relative effects of an ``Effects`` record against the adjusted control mean.

    For the effect :math:`d_\tau'b` of arm j in condition S (see ``infer_effect``), the
    adjusted control mean in S is the contrast :math:`d_\mu'b` with
    :math:`d_\mu = e_{1} + \sum_l \bar x_{S,l} e_{X_l}`: the intercept plus the covariate
    main effects at S's centred covariate means (covariates enter centred, so in the whole
    sample it is the intercept). Both come from the same fit (OLS, 2SLS, weighted,
    clustered), so one pass of the core's sandwich gives their joint covariance, and
    :func:`relative_effect` gives the ratio, its delta-method SE and the interval.
    In an encouragement design the ITT is divided by the reduced form's control mean and
    the LATE by the 2SLS intercept (the mean untreated outcome at zero dose).

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
    if method not in ("delta", "fieller"):
        raise ValidationError(f"method: must be 'delta' or 'fieller', got {method!r}")
    if scale not in ("percent", "fraction"):
        raise ValidationError(f"scale: must be 'percent' or 'fraction', got {scale!r}")
    model = effects.model
    if not hasattr(model, "_contrast_cov") or not hasattr(model, "_groups"):
        raise ValidationError("relative: needs effects of a fitted LinearModel")
    data = model.spec.data
    J, q, p = model._source.n_arms, model.spec.covariates.q, len(model.names)
    group_of = {k: gi for gi, g in enumerate(model._groups) for k in g.metrics}
    metric_index = {m: k for k, m in enumerate(model.metrics)}
    from .expr import parse_condition

    cache: dict = {}
    plan: dict = {}      # (group, kind) -> {condition: row offset}
    for r in effects.records:
        if r["condition"] != "all":
            try:
                parse_condition(r["condition"])
            except ValidationError:
                raise ValidationError(
                    f"relative: effect of {r['condition']!r} is a projection, not a condition; take "
                    "relative() of the conditional effects it combines") from None
        kind = "iv" if r["estimand"] == "LATE" else "itt"
        conds = plan.setdefault((group_of[metric_index[r["metric"]]], kind), {})
        conds.setdefault(r["condition"], None)
    requests = []
    for (gi, kind), conds in plan.items():
        g = model._groups[gi]
        rows = []
        for c_i, text in enumerate(conds):
            conds[text] = c_i * (J + 1)
            xbar = _condition_shift(model, g, text, cache)
            d_mu = np.zeros(p)
            d_mu[0] = 1.0
            d_mu[1 + J:1 + J + q] = xbar
            rows.append(d_mu)
            for j in range(1, J + 1):
                d = np.zeros(p)
                d[j] = 1.0
                d[1 + J + q + (j - 1) * q:1 + J + q + j * q] = xbar
                rows.append(d)
        requests.append((gi, kind, np.array(rows)))
    cov, layout = model._contrast_cov(requests)
    where = {key: i for i, key in enumerate(plan)}
    tau, mu, v_tt, v_mm, v_tm = (np.empty(len(effects.records)) for _ in range(5))
    for i, r in enumerate(effects.records):
        k = metric_index[r["metric"]]
        gi = group_of[k]
        kind = "iv" if r["estimand"] == "LATE" else "itt"
        ri = where[(gi, kind)]
        _, _, D = requests[ri]
        start, _, K = layout[ri]
        pos = model._groups[gi].metrics.index(k)
        base = plan[(gi, kind)][r["condition"]]
        j = data.arms.index(r["arm"])
        coef = model._groups[gi].fits[kind].coef[:, pos]
        i_mu, i_tau = start + base * K + pos, start + (base + j) * K + pos
        tau[i], mu[i] = D[base + j] @ coef, D[base] @ coef
        v_tt[i], v_mm[i], v_tm[i] = cov[i_tau, i_tau], cov[i_mu, i_mu], cov[i_tau, i_mu]
    if not np.allclose(tau, effects.estimate, rtol=1e-9, atol=1e-12 * (1 + np.abs(tau).max())):
        raise ValidationError("relative: these effects are not the model's contrasts (projected "
                              "or modified); call relative() on effects from infer_effect")
    rel = relative_effect(tau, mu, v_tt, v_mm, v_tm, alpha=effects.alpha, method=method)
    f = 100.0 if scale == "percent" else 1.0
    records = []
    for i, r in enumerate(effects.records):
        records.append({
            "metric": r["metric"], "arm": _json(r["arm"]), "condition": r["condition"],
            "estimand": r["estimand"], "estimate": f * rel.estimate[i],
            "std_error": f * rel.std_error[i], "ci_lower": f * rel.ci_lower[i],
            "ci_upper": f * rel.ci_upper[i], "p_value": float(rel.p_value[i]),
            "effect": float(tau[i]), "effect_std_error": float(np.sqrt(v_tt[i])),
            "control_mean": float(mu[i]), "control_std_error": float(np.sqrt(v_mm[i])),
            "n": int(r["n"])})
    return RelativeEffects(tuple(records), method, scale, effects.alpha)
