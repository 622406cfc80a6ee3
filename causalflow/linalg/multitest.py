"""Multiple testing: adjusted p-values and simultaneous (max-t) critical values.

Pure numpy / scipy kernels; the grammar step is ``Effects.adjust``.

Step-wise p-value adjustments for m tests with ordered p-values
p_(1) <= ... <= p_(m) (each adjusted value is clipped at 1):

- Bonferroni: p~_i = m p_i.
- Holm (1979), step-down: p~_(i) = max_{k <= i} (m - k + 1) p_(k).
- Benjamini & Hochberg (1995), step-up FDR: p~_(i) = min_{k >= i} m p_(k) / k.
- Benjamini & Yekutieli (2001), FDR under any dependence: the BH values times
  c(m) = sum_{k=1}^m 1/k.

Simultaneous intervals (Hothorn, Bretz & Westfall 2008, "Simultaneous inference in
general parametric models"): with estimates b (m,) and joint covariance V, the
standardised statistics T = D^{-1/2}(b - beta) are asymptotically N(0, R) with
R = D^{-1/2} V D^{-1/2}. The two-sided max-t critical value c solves
P(max_i |T_i| <= c) = 1 - alpha, and b_i +- c se_i covers all m parameters jointly with
probability 1 - alpha. It never exceeds the Bonferroni value z_{1 - alpha/(2m)} and is
smaller when the effects are correlated. The single-step adjusted p-value of effect i is
P(max_j |T_j| >= |t_i|).

Examples
--------
>>> import numpy as np
>>> adjust_pvalues(np.array([0.01, 0.04, 0.03]), "holm")
array([0.03, 0.06, 0.06])
>>> r = maxt_critical_value(np.array([[1.0, 0.0], [0.0, 1.0]]), alpha=0.05)
>>> round(float(r.critical_value), 3)   # independent: z at (1 - (0.95)^(1/2)) / 2
2.236
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats

from ..errors import ValidationError

__all__ = [
    "AdjustMethod",
    "MaxTResult",
    "adjust_pvalues",
    "maxt_adjusted_pvalues",
    "maxt_critical_value",
]

AdjustMethod = Literal["holm", "bonferroni", "bh", "by"]
_METHODS = ("holm", "bonferroni", "bh", "by")
_CDF_MAX_DIM = 5


def adjust_pvalues(p_values, method: AdjustMethod = "holm") -> np.ndarray:
    """Adjust p-values for multiple testing.

    Parameters
    ----------
    p_values : array-like of float, shape (m,)
        Raw p-values in [0, 1]. NaN entries are left NaN and do not count among the m tests.
    method : {"holm", "bonferroni", "bh", "by"}
        Holm's step-down family-wise error rate control, Bonferroni, Benjamini-Hochberg
        or Benjamini-Yekutieli false discovery rate control (formulas in the module
        docstring).

    Returns
    -------
    numpy.ndarray, shape (m,)
        Adjusted p-values in the input order.

    Examples
    --------
    >>> adjust_pvalues([0.01, 0.02, 0.03, 0.5], "bh")
    array([0.04, 0.04, 0.04, 0.5 ])
    """
    if method not in _METHODS:
        raise ValidationError(f"method: must be one of {_METHODS}, got {method!r}")
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValidationError(f"p_values: must be one-dimensional, got shape {p.shape}")
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValidationError("p_values: must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    q = p[finite]
    m = q.size
    if m == 0:
        return out
    if method == "bonferroni":
        adj = np.minimum(q * m, 1.0)
    else:
        order = np.argsort(q, kind="mergesort")
        s = q[order]
        k = np.arange(1, m + 1, dtype=float)
        if method == "holm":
            s_adj = np.maximum.accumulate(s * (m - k + 1))
        else:
            factor = 1.0 if method == "bh" else float(np.sum(1.0 / k))
            s_adj = np.minimum.accumulate((s / (k / m) * factor)[::-1])[::-1]
        s_adj = np.minimum(s_adj, 1.0)
        adj = np.empty(m)
        adj[order] = s_adj
    out[finite] = adj
    return out


@dataclass(frozen=True, slots=True)
class MaxTResult:
    """Simultaneous critical value of the max-|t| statistic.

    Attributes
    ----------
    critical_value : float
        c with P(max_i |T_i| <= c) = 1 - alpha (one-sided: P(max_i T_i <= c)).
    alpha : float
    correlation : numpy.ndarray, shape (m, m)
        The correlation matrix R of the statistics.
    method : str
        "exact" (m = 1 or independent), "cdf" (multivariate normal / t CDF by
        Genz's quasi-Monte Carlo integration, fixed seed) or "simulate".
    df : float or None
        Degrees of freedom of the multivariate t; None for the normal.
    """

    critical_value: float
    alpha: float
    correlation: np.ndarray
    method: str
    df: float | None


def _as_correlation(cov) -> np.ndarray:
    v = np.asarray(cov, dtype=float)
    if v.ndim != 2 or v.shape[0] != v.shape[1] or v.shape[0] == 0:
        raise ValidationError(f"cov: must be a square (m, m) matrix, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValidationError("cov: contains NaN or infinite values")
    d = np.diag(v)
    if np.any(d <= 0):
        raise ValidationError("cov: every variance (diagonal entry) must be positive")
    s = 1.0 / np.sqrt(d)
    r = v * s[:, None] * s[None, :]
    r = 0.5 * (r + r.T)
    np.fill_diagonal(r, 1.0)
    return r


def _prob_max_below(c: float, r: np.ndarray, two_sided: bool, df: float | None) -> float:
    """P(max |T| <= c) (two-sided) or P(max T <= c) by multivariate CDF integration.

    The integrator's quasi-Monte Carlo points come from a fixed seed, so this is a
    deterministic, smooth function of c and can be handed to a root finder.
    """
    m = r.shape[0]
    upper = np.full(m, c)
    lower = np.full(m, -c) if two_sided else np.full(m, -np.inf)
    if df is None:
        return float(stats.multivariate_normal.cdf(
            upper, mean=np.zeros(m), cov=r, allow_singular=True, lower_limit=lower,
            abseps=1e-5, releps=0.0, maxpts=100_000 * m, rng=np.random.default_rng(0)))
    return float(stats.multivariate_t.cdf(
        upper, loc=np.zeros(m), shape=r, df=df, allow_singular=True, lower_limit=lower,
        maxpts=100_000 * m, random_state=np.random.default_rng(0)))


def _simulate_max(r: np.ndarray, two_sided: bool, df: float | None, n_draws: int,
                  rng: np.random.Generator) -> np.ndarray:
    # a symmetric square root handles singular R (e.g. an effect that is the mean of others)
    w, q = np.linalg.eigh(r)
    root = q * np.sqrt(np.clip(w, 0.0, None))
    m = r.shape[0]
    out = np.empty(n_draws)
    chunk = max(1000, 4_000_000 // m)      # bounded memory: about 32 MB of draws at a time
    for start in range(0, n_draws, chunk):
        size = min(chunk, n_draws - start)
        z = rng.standard_normal((size, m)) @ root.T
        if df is not None:
            z /= np.sqrt(rng.chisquare(df, size=(size, 1)) / df)
        out[start:start + size] = np.max(np.abs(z) if two_sided else z, axis=1)
    return out


def _check_options(alpha, alternative, method, df, n_draws) -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValidationError(f"alpha: must be a number in (0, 1), got {alpha!r}")
    if alternative not in ("two-sided", "larger"):
        raise ValidationError(f"alternative: must be 'two-sided' or 'larger', got {alternative!r}")
    if method not in ("auto", "cdf", "simulate"):
        raise ValidationError(f"method: must be 'auto', 'cdf' or 'simulate', got {method!r}")
    if df is not None and not (df > 0):
        raise ValidationError(f"df: must be positive, got {df!r}")
    if not (isinstance(n_draws, int) and n_draws >= 1000):
        raise ValidationError(f"n_draws: must be an integer >= 1000, got {n_draws!r}")


def _resolve(method: str, m: int) -> str:
    return ("cdf" if m <= _CDF_MAX_DIM else "simulate") if method == "auto" else method


def _independent(r: np.ndarray) -> bool:
    return r.shape[0] == 1 or not np.any(r - np.eye(r.shape[0]))


def maxt_critical_value(
    cov,
    alpha: float = 0.05,
    *,
    alternative: Literal["two-sided", "larger"] = "two-sided",
    df: float | None = None,
    method: Literal["auto", "cdf", "simulate"] = "auto",
    seed: int | np.random.Generator = 0,
    n_draws: int = 200_000,
) -> MaxTResult:
    """Critical value of the max-|t| statistic for simultaneous inference.

    Parameters
    ----------
    cov : array-like, shape (m, m)
        Joint covariance (or correlation) of the m estimates; only its correlation
        matrix R matters. Singular R (linearly dependent effects) is allowed.
    alpha : float
        Family-wise error rate.
    alternative : {"two-sided", "larger"}
        Two-sided intervals (max |T|) or one-sided lower bounds (max T).
    df : float, optional
        Use the multivariate t with ``df`` degrees of freedom; default the normal.
    method : {"auto", "cdf", "simulate"}
        "cdf" solves P(max |T| <= c) = 1 - alpha by Brent's method on the multivariate
        normal / t CDF (Genz & Bretz quasi-Monte Carlo integration with a fixed seed,
        absolute error about 1e-5; cost grows quickly with m). "simulate" takes the
        (1 - alpha) quantile of ``n_draws`` draws of max |T| (Monte Carlo standard error
        of c about 0.005 at 200,000 draws). "auto": "cdf" up to m = 5, else "simulate".
        Independent statistics (R = I) are solved exactly: c = F^{-1}(1 - a/2),
        a = 1 - (1 - alpha)^{1/m}.
    seed : int or numpy.random.Generator
        Randomness of ``"simulate"``: an explicit generator, or a seed for one.
    n_draws : int
        Number of simulated draws for ``"simulate"``.

    Returns
    -------
    MaxTResult

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[1.0, 0.9], [0.9, 1.0]])
    >>> c = maxt_critical_value(r, 0.05).critical_value
    >>> 1.96 < c < 2.241   # between the single-test and the Bonferroni value
    True
    """
    _check_options(alpha, alternative, method, df, n_draws)
    r = _as_correlation(cov)
    m = r.shape[0]
    two_sided = alternative == "two-sided"
    dist = stats.norm if df is None else stats.t(df)
    if _independent(r):
        a_each = 1.0 - (1.0 - alpha) ** (1.0 / m)
        c = float(dist.isf(a_each / 2 if two_sided else a_each))
        return MaxTResult(c, float(alpha), r, "exact", df)
    if _resolve(method, m) == "simulate":
        draws = _simulate_max(r, two_sided, df, n_draws, np.random.default_rng(seed))
        return MaxTResult(float(np.quantile(draws, 1.0 - alpha)), float(alpha), r, "simulate", df)
    a1 = alpha / 2 if two_sided else alpha
    lo = float(dist.isf(a1))                # one test: a lower bound for c
    hi = float(dist.isf(a1 / m)) + 1e-9     # Bonferroni: an upper bound for c
    target = 1.0 - alpha

    def gap(x: float) -> float:
        return _prob_max_below(x, r, two_sided, df) - target

    if gap(lo) >= 0:
        c = lo
    elif gap(hi) <= 0:
        c = hi
    else:
        c = optimize.brentq(gap, lo, hi, xtol=1e-7)
    return MaxTResult(float(c), float(alpha), r, "cdf", df)


def maxt_adjusted_pvalues(
    t_values,
    cov,
    *,
    alternative: Literal["two-sided", "larger"] = "two-sided",
    df: float | None = None,
    method: Literal["auto", "cdf", "simulate"] = "auto",
    seed: int | np.random.Generator = 0,
    n_draws: int = 200_000,
) -> np.ndarray:
    """Single-step max-t adjusted p-values: p~_i = P(max_j |T_j| >= |t_i|), T ~ N(0, R).

    Parameters
    ----------
    t_values : array-like, shape (m,)
        Observed statistics (estimate / standard error).
    cov : array-like, shape (m, m)
        Joint covariance or correlation of the estimates.
    alternative, df, method, seed, n_draws
        As in :func:`maxt_critical_value`.

    Examples
    --------
    >>> import numpy as np
    >>> p = maxt_adjusted_pvalues([2.5, 0.3], np.eye(2))
    >>> round(float(p[0]), 4)   # 1 - (1 - 2 P(Z > 2.5))^2
    0.0247
    """
    _check_options(0.05, alternative, method, df, n_draws)
    r = _as_correlation(cov)
    t = np.asarray(t_values, dtype=float)
    if t.shape != (r.shape[0],):
        raise ValidationError(f"t_values: shape {t.shape} does not match cov {r.shape}")
    two_sided = alternative == "two-sided"
    if two_sided:
        t = np.abs(t)
    m = r.shape[0]
    if _independent(r):
        dist = stats.norm if df is None else stats.t(df)
        p1 = 2 * dist.sf(t) if two_sided else dist.sf(t)
        out = 1.0 - (1.0 - p1) ** m
    elif _resolve(method, m) == "simulate":
        draws = np.sort(_simulate_max(r, two_sided, df, n_draws, np.random.default_rng(seed)))
        out = 1.0 - np.searchsorted(draws, t, side="left") / draws.size
    else:
        out = np.array([1.0 - _prob_max_below(float(ti), r, two_sided, df) for ti in t])
    return np.clip(out, 0.0, 1.0)
