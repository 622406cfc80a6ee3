r"""Anytime-valid e-values, p-values and confidence sequences for linear contrasts.

Source: M. Lindon, D. W. Ham, M. Tingley, I. Bojinov, "Anytime-valid linear models and
regression adjusted causal inference in randomized experiments", arXiv:2210.08589
(reference implementation: the R package ``avlm``, functions ``log_G_t``, ``p_G_t``,
``t_radius``, ``optimal_g``, ``log_G_f``).

The statistic
-------------
For one coefficient or linear contrast :math:`\theta = d'b` with estimate
:math:`\hat\theta`, standard error :math:`s` and :math:`t = (\hat\theta - \theta_0)/s`,
the Bayes factor of a normal mixture over the (standardised) effect against the point
null :math:`\theta = \theta_0` is (the paper's sequential t-test)

.. math::

    \log \mathrm{BF} = \tfrac12 \log r + \tfrac{\nu + 1}{2}
        \Big[\log\big(1 + t^2/\nu\big) - \log\big(1 + r\,t^2/\nu\big)\Big],
    \qquad r = \frac{g}{g + n},

with :math:`n` the sample size, :math:`\nu` the residual degrees of freedom and
:math:`g > 0` the precision of the mixture. Under the null the Bayes factor, indexed by
the sample size, is a nonnegative (super)martingale with mean one, so by Ville's
inequality :math:`P(\sup_n \mathrm{BF}_n \ge 1/\alpha) \le \alpha`. Hence

* the e-value is :math:`\mathrm{BF}`;
* the anytime-valid p-value is :math:`p = \min(1, 1/\mathrm{BF})`, and under continuous
  monitoring the running minimum :math:`\min_{m \le n} p_m` is still valid;
* the confidence sequence is :math:`\{\theta_0 : p(\theta_0) > \alpha\}`. Since
  :math:`\mathrm{BF}` increases in :math:`t^2`, it is the interval
  :math:`\hat\theta \pm s\, c` with the closed form (``avlm::t_radius``)

  .. math::

      c^2 = \frac{\nu\,(1 - P)}{P - r}, \qquad P = (r\alpha^2)^{1/(\nu+1)},

  which exists when :math:`r < \alpha^{2/\nu}` (otherwise the Bayes factor can never reach
  :math:`1/\alpha` and the sequence is the whole line, :math:`c = \infty`).

As :math:`\nu \to \infty` (the asymptotic, Gaussian version) :math:`\log\mathrm{BF} \to
\tfrac12\log r + \tfrac12(1 - r)t^2` and :math:`c^2 \to (\log(1/r) + 2\log(1/\alpha))/(1-r)`;
``nu=np.inf`` gives these limits.

Robust and clustered covariances (what plays n and nu)
------------------------------------------------------
The exact results assume the Gaussian linear model. The paper then relaxes them: with the
heteroskedasticity-robust (sandwich) standard error in :math:`t`, the same expression is
an *asymptotic* e-process / confidence sequence for the regression-adjusted treatment
effect of a randomized experiment (the paper's robust, asymptotic section; ``avlm``'s
``summary.avlm_robust`` applies exactly this: HC standard error in :math:`t`,
:math:`n` = rows, :math:`\nu = n - p`). What matters for validity is that :math:`n` is
proportional to the information about the effect (so the mixture is one fixed prior
across looks) and that :math:`t` is asymptotically standard normal. We therefore use
(:func:`av_sample_size`):

* classical, HC0, HC1: :math:`n` = number of rows (with positive weight),
  :math:`\nu = n - p` with :math:`p` the number of regression coefficients;
* CR0, CR1: the independent units are the clusters, so :math:`n = G` (number of clusters)
  and :math:`\nu = G - 1` (the reference degrees of freedom of cluster-robust t-tests,
  Cameron, Gelbach and Miller 2008; Stata). Counting rows instead would let :math:`r`
  shrink while the information about the effect (which grows with the number of clusters
  once clusters are populated) stays put, i.e. a prior that drifts with the looks.

Choice of g
-----------
``avlm::optimal_g``: for a planned sample size :math:`n^*` (and its :math:`\nu^*`), take
the :math:`g` that minimises the half-width multiplier :math:`c(g; n^*, \nu^*, \alpha)`,
i.e. the tightest confidence sequence at the planned horizon (:func:`optimal_g`). As
:math:`c` depends on :math:`g` only through :math:`r`, the optimum is found over
:math:`\log r \in (-\infty, \tfrac2\nu\log\alpha)` by a vectorised golden-section search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ValidationError

__all__ = [
    "AVSampleSize",
    "AnytimeValid",
    "RunningAnytimeValid",
    "anytime_valid",
    "av_log_e_value",
    "av_p_value",
    "av_sample_size",
    "check_av_options",
    "contrast_anytime_valid",
    "cs_multiplier",
    "log_mixture_ratio",
    "optimal_g",
    "running_anytime_valid",
    "wald_av_p_value",
    "wald_log_e_value",
]

AVCovType = Literal["classical", "HC0", "HC1", "CR0", "CR1", "CR2", "CR3"]
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def _check_alpha(alpha) -> np.ndarray:
    a = np.asarray(alpha, dtype=float)
    if np.any(~((a > 0) & (a < 1))):
        raise ValidationError(f"alpha: must lie strictly between 0 and 1, got {alpha!r}")
    return a


def _check_positive(name: str, x, allow_inf: bool = False) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    finite_ok = np.isnan(a) | (a > 0)
    if not allow_inf:
        finite_ok &= ~np.isinf(a)
    if not np.all(finite_ok):
        raise ValidationError(f"{name}: must be positive{'' if allow_inf else ' and finite'}, got {x!r}")
    return a


def log_mixture_ratio(g, n) -> np.ndarray:
    r""":math:`\log r = \log\frac{g}{g+n} = -\log(1 + n/g)`, vectorised and accurate for small r.

    >>> round(float(np.exp(log_mixture_ratio(1.0, 99.0))), 15)
    0.01
    """
    g = _check_positive("g", g)
    n = _check_positive("n", n)
    return -np.log1p(n / g)


def av_log_e_value(t, n, nu, g) -> np.ndarray:
    r"""Log Bayes factor (e-value) of the normal mixture for a t-statistic.

    .. math::
        \log \mathrm{BF} = \tfrac12 \log r + \tfrac{\nu+1}{2}\Big[\log(1 + t^2/\nu)
        - \log(1 + r t^2/\nu)\Big], \quad r = g/(g+n)

    (Lindon et al., arXiv:2210.08589; ``avlm::log_G_t``). ``nu=np.inf`` gives the Gaussian
    limit :math:`\tfrac12\log r + \tfrac12(1-r)t^2`. Arguments broadcast; NaN propagates.

    >>> round(float(av_log_e_value(0.0, 99, 97, 1.0)), 6)   # = log(0.01) / 2 at t = 0
    -2.302585
    """
    t2 = np.square(np.asarray(t, dtype=float))
    log_r = log_mixture_ratio(g, n)
    nu = _check_positive("nu", nu, allow_inf=True)
    r = np.exp(log_r)
    with np.errstate(divide="ignore", invalid="ignore"):
        finite = 0.5 * (nu + 1.0) * (np.log1p(t2 / nu) - np.log1p(r * t2 / nu))
        gauss = 0.5 * (-np.expm1(log_r)) * t2
    return 0.5 * log_r + np.where(np.isinf(nu), gauss, finite)


def av_p_value(t, n, nu, g) -> np.ndarray:
    r"""Anytime-valid p-value :math:`\min(1, 1/\mathrm{BF})` for a t-statistic.

    See :func:`av_log_e_value` for BF. Valid simultaneously over all sample sizes, so it may
    be monitored continuously (take the running minimum over looks).

    >>> float(av_p_value(0.0, 100, 98, 1.0))
    1.0
    >>> bool(av_p_value(5.0, 1000, 998, 100.0) < 0.05)
    True
    """
    return np.exp(np.minimum(0.0, -av_log_e_value(t, n, nu, g)))


def _multiplier_squared(log_r, nu, log_a) -> np.ndarray:
    """c^2 of :func:`cs_multiplier` from log r, nu and log alpha (inf where unbounded)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_p = (log_r + 2.0 * log_a) / (nu + 1.0)            # log P
        gap = (2.0 * log_a - nu * log_r) / (nu + 1.0)          # log P - log r
        finite = nu * (-np.expm1(log_p)) / (np.exp(log_r) * np.expm1(gap))
        finite = np.where(gap > 0, finite, np.inf)
        gauss = (-log_r - 2.0 * log_a) / (-np.expm1(log_r))
        return np.where(np.isinf(nu), gauss, finite)


def cs_multiplier(n, nu, g, alpha=0.05) -> np.ndarray:
    r"""Half-width of the confidence sequence in standard errors, :math:`c`.

    The set :math:`\{\theta_0 : p(\theta_0) > \alpha\}` is :math:`\hat\theta \pm c\,s` with

    .. math::
        c^2 = \frac{\nu (1 - P)}{P - r}, \quad P = (r\alpha^2)^{1/(\nu+1)}, \quad r = g/(g+n)

    (``avlm::t_radius``), evaluated with ``expm1`` for accuracy at large :math:`\nu`;
    :math:`c = \infty` when :math:`r^\nu \ge \alpha^2` (the Bayes factor is bounded by
    :math:`r^{-\nu/2} \le 1/\alpha`). ``nu=np.inf``:
    :math:`c^2 = (\log(1/r) + 2\log(1/\alpha))/(1-r)`.

    >>> c = float(cs_multiplier(1000, 998, 100.0, 0.05))
    >>> round(float(av_p_value(c, 1000, 998, 100.0)), 12)   # the end points have p = alpha
    0.05
    """
    log_r = log_mixture_ratio(g, n)
    nu = _check_positive("nu", nu, allow_inf=True)
    c2 = _multiplier_squared(log_r, nu, np.log(_check_alpha(alpha)))
    return np.sqrt(c2)


def optimal_g(n, nu, alpha=0.05, *, iterations: int = 200) -> np.ndarray:
    r"""The mixture precision g giving the tightest confidence sequence at sample size n.

    Minimises :func:`cs_multiplier` :math:`c(g; n, \nu, \alpha)` over :math:`g > 0`
    (``avlm::optimal_g``; Lindon et al., arXiv:2210.08589). Pass the *planned* sample
    size (and its :math:`\nu`): g must be fixed before the data are seen, and only sample
    sizes (never outcomes) enter it. Since :math:`c` depends on g only through
    :math:`r = g/(g+n)`, the search is a golden-section search over
    :math:`\log r \in [\tfrac2\nu\log\alpha - 60, \tfrac2\nu\log\alpha)`, vectorised over
    the broadcast arguments; then :math:`g = n r/(1-r)`.

    >>> g = float(optimal_g(10_000, 9_995, 0.05))
    >>> c = lambda gg: float(cs_multiplier(10_000, 9_995, gg, 0.05))
    >>> c(g) <= min(c(0.9 * g), c(1.1 * g))
    True
    """
    n = _check_positive("n", n)
    nu = _check_positive("nu", nu, allow_inf=True)
    alpha = _check_alpha(alpha)
    n, nu, alpha = np.broadcast_arrays(n, nu, alpha)
    log_a = np.log(alpha)
    hi = np.where(np.isinf(nu), 0.0, 2.0 * log_a / nu)       # log r must stay below this
    hi = hi - 1e-9 * np.maximum(1.0, np.abs(hi))
    lo = hi - 60.0

    def width(log_r):
        return _multiplier_squared(log_r, nu, log_a)

    a, b = lo.astype(float), hi.astype(float)
    x1, x2 = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    f1, f2 = width(x1), width(x2)
    for _ in range(iterations):
        left = f1 <= f2                      # the minimum lies in [a, x2]
        a, b = np.where(left, a, x1), np.where(left, x2, b)
        new = np.where(left, b - _GOLDEN * (b - a), a + _GOLDEN * (b - a))
        f_new = width(new)
        x1, x2 = np.where(left, new, x2), np.where(left, x1, new)
        f1, f2 = np.where(left, f_new, f2), np.where(left, f1, f_new)
        if np.all(b - a <= 1e-14 * np.maximum(1.0, np.abs(a))):
            break
    log_r = 0.5 * (a + b)
    g = n * np.exp(log_r) / (-np.expm1(log_r))
    g = np.where(np.isnan(n) | np.isnan(nu), np.nan, g)
    return g if g.ndim else g[()]


@dataclass(frozen=True, slots=True)
class AVSampleSize:
    """What plays the roles of n and nu in the anytime-valid formulas.

    Attributes
    ----------
    n : array, the sample size in r = g/(g+n): rows (classical/HC) or clusters (CR)
    nu : array, residual degrees of freedom: n_rows - p (classical/HC) or G - 1 (CR)
    unit : "rows" or "clusters"
    """

    n: np.ndarray
    nu: np.ndarray
    unit: str


def av_sample_size(cov_type: AVCovType, n_obs, n_params, n_clusters=None) -> AVSampleSize:
    r"""Choose n and nu for the anytime-valid formulas from the covariance type.

    * ``"classical"``, ``"HC0"``, ``"HC1"``: :math:`n` = rows, :math:`\nu = n - p`
      (the paper's t-test; ``avlm``'s robust summary does the same);
    * ``"CR0"`` - ``"CR3"``: :math:`n = G` clusters (the independent units, so that
      :math:`r = g/(g+G)` tracks the information), :math:`\nu = G - 1` (the reference
      degrees of freedom of cluster-robust t-tests).

    >>> s = av_sample_size("CR1", n_obs=5000, n_params=4, n_clusters=50)
    >>> (float(s.n), float(s.nu), s.unit)
    (50.0, 49.0, 'clusters')
    >>> float(av_sample_size("HC1", 5000, 4).nu)
    4996.0
    """
    if cov_type in ("classical", "HC0", "HC1"):
        n = np.asarray(n_obs, dtype=float)
        nu = n - np.asarray(n_params, dtype=float)
        unit = "rows"
    elif cov_type in ("CR0", "CR1", "CR2", "CR3"):
        if n_clusters is None:
            raise ValidationError(f"n_clusters: required with cov_type={cov_type!r}")
        n = np.asarray(n_clusters, dtype=float)
        nu = n - 1.0
        unit = "clusters"
    else:
        raise ValidationError(
            f"cov_type: expected one of 'classical', 'HC0', 'HC1', 'CR0', 'CR1', 'CR2', 'CR3', got {cov_type!r}")
    bad = ~np.isnan(nu) & (nu <= 0)
    if np.any(bad):
        raise ValidationError(f"n_obs / n_clusters: too few {unit} for anytime-valid inference "
                              f"(residual degrees of freedom must be positive, got {nu!r})")
    return AVSampleSize(n=n, nu=nu, unit=unit)


@dataclass(frozen=True, slots=True)
class AnytimeValid:
    """Anytime-valid inference for contrasts; every field broadcasts to one shape.

    Attributes
    ----------
    estimate, std_error : the contrast d'b and its standard error
    t_stat : (estimate - null) / std_error
    log_e_value : log Bayes factor (the e-value's log)
    p_value : anytime-valid p-value min(1, 1/BF)
    ci_lower, ci_upper : the 1 - alpha confidence sequence at this look
    multiplier : its half-width in standard errors
    n, nu, g : the inputs to the mixture; alpha : the level
    """

    estimate: np.ndarray
    std_error: np.ndarray
    t_stat: np.ndarray
    log_e_value: np.ndarray
    p_value: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    multiplier: np.ndarray
    n: np.ndarray
    nu: np.ndarray
    g: np.ndarray
    alpha: float


def anytime_valid(estimate, std_error, n, nu, g, alpha=0.05, null=0.0) -> AnytimeValid:
    r"""Anytime-valid p-values and confidence sequences for estimates with standard errors.

    :math:`t = (\hat\theta - \theta_0)/s`; p-value :func:`av_p_value`; sequence
    :math:`\hat\theta \pm s\,c` with :math:`c` from :func:`cs_multiplier`
    (Lindon et al., arXiv:2210.08589). Non-finite or non-positive standard errors give NaN.

    >>> av = anytime_valid([0.3, 0.01], [0.05, 0.05], n=2000, nu=1996, g=200.0)
    >>> [bool(p < 0.05) for p in av.p_value]
    [True, False]
    >>> bool(np.all((av.ci_lower < av.estimate) & (av.estimate < av.ci_upper)))
    True
    """
    est = np.asarray(estimate, dtype=float)
    se = np.asarray(std_error, dtype=float)
    se_ok = np.where(np.isfinite(se) & (se > 0), se, np.nan)
    t = (est - np.asarray(null, dtype=float)) / se_ok
    log_e = av_log_e_value(t, n, nu, g)
    p = np.exp(np.minimum(0.0, -log_e))
    c = cs_multiplier(n, nu, g, alpha)
    half = se_ok * c
    shape = np.broadcast_shapes(est.shape, se.shape, np.shape(n), np.shape(nu), np.shape(g))
    b = lambda x: np.broadcast_to(np.asarray(x, dtype=float), shape)  # noqa: E731
    return AnytimeValid(estimate=b(est), std_error=b(se), t_stat=b(t), log_e_value=b(log_e),
                        p_value=b(p), ci_lower=b(est - half), ci_upper=b(est + half),
                        multiplier=b(c), n=b(n), nu=b(nu), g=b(g), alpha=float(alpha))


@dataclass(frozen=True, slots=True)
class RunningAnytimeValid:
    """Monitored quantities along the looks axis (axis 0).

    Attributes
    ----------
    p_value : running minimum of the anytime-valid p-value, (L, ...)
    ci_lower, ci_upper : running intersection of the confidence sequences, (L, ...)
    first_significant : index of the first look with p <= alpha, -1 if none, (...)
    """

    p_value: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    first_significant: np.ndarray


def running_anytime_valid(p_value, ci_lower, ci_upper, alpha=0.05) -> RunningAnytimeValid:
    r"""Running minimum of p-values and running intersection of confidence sequences.

    Both remain valid under continuous monitoring because the guarantees of the e-process
    hold uniformly over looks: :math:`P(\exists n: \theta \notin CS_n) \le \alpha` implies
    the same for :math:`\bigcap_{m \le n} CS_m`. Looks run along axis 0; NaN looks
    (e.g. too few rows yet) are skipped.

    >>> r = running_anytime_valid([0.5, 0.03, 0.2], [-1, -0.5, -0.8], [1, 0.5, 0.2])
    >>> r.p_value.tolist(), r.ci_upper.tolist(), int(r.first_significant)
    ([0.5, 0.03, 0.03], [1.0, 0.5, 0.2], 1)
    """
    alpha = float(_check_alpha(alpha))
    p = np.asarray(p_value, dtype=float)
    lo = np.asarray(ci_lower, dtype=float)
    hi = np.asarray(ci_upper, dtype=float)
    p_run = np.fmin.accumulate(np.where(np.isnan(p), np.inf, p), axis=0)
    p_run = np.where(np.isinf(p_run), np.nan, p_run)
    lo_run = np.fmax.accumulate(np.where(np.isnan(lo), -np.inf, lo), axis=0)
    hi_run = np.fmin.accumulate(np.where(np.isnan(hi), np.inf, hi), axis=0)
    seen = np.logical_or.accumulate(~(np.isnan(lo) | np.isnan(hi)), axis=0)   # NaN before the first look
    lo_run, hi_run = np.where(seen, lo_run, np.nan), np.where(seen, hi_run, np.nan)
    sig = p_run <= alpha
    first = np.where(sig.any(axis=0), np.argmax(sig, axis=0), -1)
    return RunningAnytimeValid(p_value=p_run, ci_lower=lo_run, ci_upper=hi_run,
                               first_significant=first)


def wald_log_e_value(wald, d, n, nu, g) -> np.ndarray:
    r"""Log Bayes factor of the sequential F-test for d contrasts at once.

    With the Wald statistic :math:`Q = \hat\theta' V^{-1} \hat\theta = d F`,

    .. math::
        \log \mathrm{BF} = \tfrac{d}{2}\log r + \tfrac{\nu + d}{2}\Big[\log(1 + Q/\nu)
        - \log(1 + rQ/\nu)\Big]

    (Lindon et al., arXiv:2210.08589, sequential F-test; ``avlm::log_G_f``). ``d = 1``
    gives :func:`av_log_e_value` with :math:`Q = t^2`.

    >>> bool(np.isclose(wald_log_e_value(4.0, 1, 500, 498, 2.0),
    ...                 av_log_e_value(2.0, 500, 498, 2.0)))
    True
    """
    q = np.asarray(wald, dtype=float)
    d = _check_positive("d", d)
    log_r = log_mixture_ratio(g, n)
    nu = _check_positive("nu", nu, allow_inf=True)
    r = np.exp(log_r)
    with np.errstate(divide="ignore", invalid="ignore"):
        finite = 0.5 * (nu + d) * (np.log1p(q / nu) - np.log1p(r * q / nu))
        gauss = 0.5 * (-np.expm1(log_r)) * q
    return 0.5 * d * log_r + np.where(np.isinf(nu), gauss, finite)


def wald_av_p_value(wald, d, n, nu, g) -> np.ndarray:
    """Anytime-valid p-value ``min(1, 1/BF)`` of the sequential F-test (:func:`wald_log_e_value`).

    >>> float(wald_av_p_value(0.0, 3, 500, 490, 1.0)) == 1.0
    True
    """
    return np.exp(np.minimum(0.0, -wald_log_e_value(wald, d, n, nu, g)))


def check_av_options(g, planned_n) -> None:
    """Validate the fit options ``av_g`` / ``av_planned_n`` (positive numbers, not both).

    >>> check_av_options(None, 10_000)
    >>> check_av_options(0.0, None)
    Traceback (most recent call last):
    ...
    causalflow.errors.ValidationError: av_g: must be a positive finite number, got 0.0
    """
    for name, value in (("av_g", g), ("av_planned_n", planned_n)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not np.isfinite(value) or value <= 0:
            raise ValidationError(f"{name}: must be a positive finite number, got {value!r}")
    if g is not None and planned_n is not None:
        raise ValidationError("av_g, av_planned_n: give one of them (av_planned_n only chooses g)")


def contrast_anytime_valid(estimate, std_error, dof, cov_type: AVCovType, n_params: int,
                           alpha=0.05, g=None, planned_n=None) -> AnytimeValid:
    r"""Anytime-valid columns of fitted contrasts from their residual degrees of freedom.

    ``dof`` is what the fit reports: :math:`n - p` (classical / HC) or :math:`G - 1` (CR),
    so :math:`\nu` = ``dof`` and :math:`n` = ``dof + p`` rows or ``dof + 1`` clusters
    (:func:`av_sample_size`). ``g`` defaults to :func:`optimal_g` at ``planned_n`` (in the
    same units), itself defaulting to each contrast's own n.

    >>> av = contrast_anytime_valid([0.2, 0.0], [0.05, 0.05], [996, 996], "HC1", 4, 0.05)
    >>> [bool(p < 0.05) for p in av.p_value], float(av.n[0])
    ([True, False], 1000.0)
    """
    check_av_options(g, planned_n)
    nu = np.asarray(dof, dtype=float)
    clustered = str(cov_type).startswith("CR")
    extra = 1.0 if clustered else float(n_params)
    n = nu + extra
    if g is None:
        n_star = n if planned_n is None else np.asarray(planned_n, dtype=float)
        nu_star = n_star - extra
        if np.any(nu_star <= 0):
            raise ValidationError(f"av_planned_n: {planned_n!r} leaves no residual degrees of freedom")
        # one search per distinct sample size (effects of one fit share theirs)
        sizes, inverse = np.unique(np.broadcast_to(n_star, nu.shape), return_inverse=True)
        g = optimal_g(sizes, sizes - extra, alpha)[inverse].reshape(nu.shape) if sizes.size else n_star
    return anytime_valid(estimate, std_error, n, nu, g, alpha)
