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

from .errors import ValidationError

__all__ = ["RelativeEffect", "fieller_interval", "relative_effect"]

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
