r"""Metric transforms applied before fitting: capping (winsorisation) and ratio metrics.

Both return new arrays; the user's table is never modified.

**Capping** replaces values below ``lower`` by ``lower`` and above ``upper`` by ``upper``.
Thresholds are either given as values or as quantiles, and a quantile is taken over the
*pooled* data of all arms (never per arm: a per-arm threshold would depend on the
treatment and bias the comparison). Capping heavy-tailed metrics trades a small bias for
a large variance reduction; the estimand becomes the effect on the capped metric.

**Ratio metrics** (e.g. orders per session, revenue per visit) compare ratios of sums
:math:`R_a = \sum_{i \in a} Y_i / \sum_{i \in a} N_i` between arms. By the delta method
(Deng, Knoblich & Lu 2018, "Applying the delta method in metric analytics"), to first
order

.. math::

    \hat R_a - R_a \approx \frac{1}{n_a \bar N_a}\sum_{i \in a}(Y_i - R_a N_i),

so the linearised metric

.. math::

    z_i = \hat R_{a(i)} + \frac{Y_i - \hat R_{a(i)} N_i}{\bar N_{a(i)}}

has arm means exactly :math:`\hat R_a` and, per arm, a sample variance equal to the
delta-method variance of :math:`\hat R_a` times :math:`n_a`. Fitting a linear model to
z therefore gives the difference of ratios as the effect with its delta-method standard
error (HC), and with ``cluster_by`` the unit of randomisation (rows are, say, sessions of
users randomised by user) the cluster-robust covariance is the clustered delta method.
Covariates then adjust the ratio metric as they adjust any other (regression adjustment
of the linearised metric).

Examples
--------
>>> import numpy as np
>>> c = cap(np.array([1.0, 2.0, 3.0, 100.0]), upper=10.0)
>>> c.values
array([ 1.,  2.,  3., 10.])
>>> lin = linearize_ratio(np.array([2.0, 4.0, 1.0, 3.0]), np.array([1.0, 2.0, 1.0, 1.0]),
...                       np.array([0, 0, 1, 1]))
>>> lin.ratio
array([2., 2.])
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ValidationError
from .validate import metric_values

__all__ = ["Capped", "RatioLinearization", "cap", "derive_metrics", "linearize_ratio"]


@dataclass(frozen=True, slots=True)
class Capped:
    """A capped metric.

    Attributes
    ----------
    values : numpy.ndarray, shape (n,)
        The capped copy (NaN stays NaN).
    lower, upper : float or None
        The thresholds applied (computed on the pooled data when given as quantiles).
    n_lower, n_upper : int
        How many values were raised to ``lower`` / lowered to ``upper``.
    """

    values: np.ndarray
    lower: float | None
    upper: float | None
    n_lower: int
    n_upper: int


def _quantile(name: str, q, x: np.ndarray) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
        raise ValidationError(f"{name}: must be a quantile in [0, 1], got {q!r}")
    finite = x[~np.isnan(x)]
    if finite.size == 0:
        raise ValidationError(f"{name}: the metric has no non-missing value")
    return float(np.quantile(finite, q))


def cap(
    values,
    *,
    lower: float | None = None,
    upper: float | None = None,
    lower_quantile: float | None = None,
    upper_quantile: float | None = None,
) -> Capped:
    r"""Cap (winsorise) a metric at given values or at quantiles of the pooled data.

    :math:`y^c_i = \min(\max(y_i, l), u)` with :math:`l, u` given, or the empirical
    quantiles (numpy's default linear interpolation) of all non-missing values of all arms.

    Parameters
    ----------
    values : array-like, shape (n,)
    lower, upper : float, optional
        Thresholds as values.
    lower_quantile, upper_quantile : float in [0, 1], optional
        Thresholds as quantiles over the pooled data (exclusive with ``lower`` / ``upper``).

    Returns
    -------
    Capped

    Examples
    --------
    >>> import numpy as np
    >>> c = cap(np.arange(101.0), upper_quantile=0.99)
    >>> c.upper, c.n_upper, float(c.values.max())
    (99.0, 1, 99.0)
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValidationError(f"values: expected a 1-D array, got shape {x.shape}")
    if lower is not None and lower_quantile is not None:
        raise ValidationError("lower / lower_quantile: give one of them, not both")
    if upper is not None and upper_quantile is not None:
        raise ValidationError("upper / upper_quantile: give one of them, not both")
    lo = _quantile("lower_quantile", lower_quantile, x) if lower_quantile is not None else lower
    hi = _quantile("upper_quantile", upper_quantile, x) if upper_quantile is not None else upper
    if lo is None and hi is None:
        raise ValidationError("cap: give lower, upper, lower_quantile or upper_quantile")
    for name, v in (("lower", lo), ("upper", hi)):
        if v is not None and (isinstance(v, bool) or not np.isfinite(v)):
            raise ValidationError(f"{name}: must be a finite number, got {v!r}")
    if lo is not None and hi is not None and lo > hi:
        raise ValidationError(f"lower / upper: lower threshold {lo!r} exceeds upper {hi!r}")
    out = x.copy()
    n_lo = n_hi = 0
    if lo is not None:
        below = x < lo
        n_lo = int(below.sum())
        out[below] = lo
    if hi is not None:
        above = x > hi
        n_hi = int(above.sum())
        out[above] = hi
    return Capped(values=out, lower=None if lo is None else float(lo),
                  upper=None if hi is None else float(hi), n_lower=n_lo, n_upper=n_hi)


_cap_array = cap   # for derive_metrics, whose ``cap`` argument shadows the function


@dataclass(frozen=True, slots=True)
class RatioLinearization:
    """The delta-method linearisation of a ratio-of-sums metric.

    Attributes
    ----------
    values : numpy.ndarray, shape (n,)
        z_i = R_a + (Y_i - R_a N_i) / mean_a(N); NaN where Y or N is missing.
    ratio : numpy.ndarray, shape (J,)
        R_a = sum Y / sum N per arm a (over rows with both present).
    denominator_mean : numpy.ndarray, shape (J,)
        mean of N per arm.
    """

    values: np.ndarray
    ratio: np.ndarray
    denominator_mean: np.ndarray


def linearize_ratio(numerator, denominator, arm_codes, n_arms: int | None = None) -> RatioLinearization:
    """Linearise the ratio metric sum(numerator) / sum(denominator) per arm (delta method).

    Parameters
    ----------
    numerator, denominator : array-like, shape (n,)
        Y and N per row (e.g. orders and sessions of a user or of a session).
    arm_codes : array-like of int, shape (n,)
        Arm index of each row (0 .. J-1), the randomised assignment.
    n_arms : int, optional
        J (default: max code + 1).

    Returns
    -------
    RatioLinearization

    Examples
    --------
    >>> import numpy as np
    >>> y, n = np.array([3.0, 1.0, 4.0, 6.0]), np.array([2.0, 2.0, 2.0, 2.0])
    >>> linearize_ratio(y, n, np.array([0, 0, 1, 1])).values
    array([1.5, 0.5, 2. , 3. ])
    """
    y = np.asarray(numerator, dtype=float)
    n = np.asarray(denominator, dtype=float)
    a = np.asarray(arm_codes)
    if y.ndim != 1 or y.shape != n.shape or a.shape != y.shape:
        raise ValidationError("numerator / denominator / arm_codes: need 1-D arrays of one length")
    if not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
        raise ValidationError("arm_codes: need non-negative integer arm indices")
    j = int(n_arms) if n_arms is not None else int(a.max()) + 1 if a.size else 0
    ok = ~(np.isnan(y) | np.isnan(n))
    counts = np.bincount(a[ok], minlength=j).astype(float)
    sum_y = np.bincount(a[ok], weights=y[ok], minlength=j)
    sum_n = np.bincount(a[ok], weights=n[ok], minlength=j)
    if np.any(counts == 0):
        raise ValidationError("denominator: an arm has no row with both numerator and denominator")
    if np.any(sum_n == 0):
        raise ValidationError("denominator: sums to zero in an arm; the ratio is undefined")
    ratio = sum_y / sum_n
    n_bar = sum_n / counts
    z = np.full(y.shape, np.nan)
    r_i, nb_i = ratio[a[ok]], n_bar[a[ok]]
    z[ok] = r_i + (y[ok] - r_i * n[ok]) / nb_i
    return RatioLinearization(values=z, ratio=ratio, denominator_mean=n_bar)


_CAP_KEYS = ("lower", "upper", "lower_quantile", "upper_quantile")


def _numeric_column(df, name: str, argument: str) -> np.ndarray:
    if not isinstance(name, str) or name not in df.columns:
        raise ValidationError(f"{argument}: column {name!r} is not in the data")
    return metric_values(df[name], name, argument)


def derive_metrics(data, y, *, cap: Mapping | None = None, ratio: Mapping | None = None):
    """Capped and ratio metrics for ``ExperimentData.add_metric(..., cap=, ratio=)``.

    ``cap = {"revenue": {"upper_quantile": 0.99}}`` adds the metric ``revenue_capped``
    (thresholds from the pooled data of all arms, see :func:`cap`) in place of ``revenue``;
    ``ratio = {"orders_per_session": ("orders", "sessions")}`` adds the delta-method
    linearisation of sum(orders) / sum(sessions) per assigned arm (:func:`linearize_ratio`),
    whose effect is the difference of the arms' ratios with its delta-method SE (clustered
    when the experiment has ``cluster_by``).

    Returns a shallow copy of ``data`` whose table has the new columns (the user's table is
    not modified) and the metric names to fit.

    Examples
    --------
    >>> import pandas as pd, causalflow as cf
    >>> df = pd.DataFrame({"t": [0, 1, 0, 1], "rev": [1.0, 2.0, 3.0, 100.0],
    ...                    "orders": [1.0, 2.0, 1.0, 3.0], "visits": [2.0, 2.0, 1.0, 3.0]})
    >>> data = cf.ExperimentData(df, intent_to_treat="t")
    >>> derived, names = derive_metrics(data, ["rev"], cap={"rev": {"upper": 10.0}},
    ...                                 ratio={"orders_per_visit": ("orders", "visits")})
    >>> names, derived.data["rev_capped"].tolist(), "rev_capped" in df.columns
    (['rev_capped', 'orders_per_visit'], [1.0, 2.0, 3.0, 10.0], False)
    """
    names = [] if y is None else [y] if isinstance(y, str) else list(y)
    df = data.data
    new: dict = {}
    if cap is not None:
        if not isinstance(cap, Mapping) or not cap:
            raise ValidationError("cap: expected a mapping metric -> "
                                  "{lower|upper|lower_quantile|upper_quantile: value}")
        for metric, spec in cap.items():
            if metric not in names:
                raise ValidationError(f"cap: {metric!r} is not one of the metrics y={names}")
            if not isinstance(spec, Mapping) or not spec or set(spec) - set(_CAP_KEYS):
                raise ValidationError(f"cap: thresholds of {metric!r} must be a mapping with keys among "
                                      f"{_CAP_KEYS}, got {spec!r}")
            capped = _cap_array(_numeric_column(df, metric, "y"), **dict(spec))
            new_name = f"{metric}_capped"
            names[names.index(metric)] = new_name
            new[new_name] = capped.values
    if ratio is not None:
        if not isinstance(ratio, Mapping) or not ratio:
            raise ValidationError("ratio: expected a mapping name -> (numerator, denominator)")
        for name, pair in ratio.items():
            if not isinstance(name, str) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValidationError(f"ratio: {name!r} must map to a (numerator, denominator) pair, got {pair!r}")
            lin = linearize_ratio(_numeric_column(df, pair[0], "ratio"),
                                  _numeric_column(df, pair[1], "ratio"),
                                  np.asarray(data.arm_codes), n_arms=len(data.arms))
            new[name] = lin.values
            if name not in names:
                names.append(name)
    clash = [c for c in new if c in df.columns]
    if clash:
        raise ValidationError(f"cap / ratio: derived metric name(s) {clash} already name columns of the data")
    derived = copy.copy(data)
    derived._df = df.assign(**new)
    return derived, names
