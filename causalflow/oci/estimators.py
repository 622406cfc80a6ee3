"""Doubly robust estimators of ATE, ATT and ATO with cross-fitting: numeric kernels.

Notation: ``y`` outcome, ``t`` binary treatment, ``e`` the cross-fitted propensity
``P(T = 1 | X)``, ``m1`` / ``m0`` the cross-fitted outcome regressions
``E[Y | X, T = 1]`` / ``E[Y | X, T = 0]``. Each estimator is a mean of an
influence function; its standard error is ``sqrt(sum(IF_i^2)) / n``
(Chernozhukov et al. 2018, "Double/debiased machine learning", Econometrics J.).

- ATE (Robins, Rotnitzky & Zhao 1994)::

      psi1 = m1 + t (y - m1) / e,   psi0 = m0 + (1 - t)(y - m0) / (1 - e)
      tau = mean(psi1 - psi0),      IF = psi1 - psi0 - tau

- ATT (Hahn 1998; Chernozhukov et al. 2018, section 5.1), ``p = mean(t)``::

      a = t (y - m0) - (1 - t) e / (1 - e) (y - m0)
      tau = mean(a) / p,            IF = (a - t tau) / p

- ATO, the overlap-weighted effect with tilting ``h = e (1 - e)`` (Li, Morgan &
  Zaslavsky 2018, JASA), augmented with the outcome model (Mao, Li & Greene 2019)::

      phi = h (m1 - m0) + t (1 - e)(y - m1) - (1 - t) e (y - m0)
      tau = sum(phi) / sum(h),      IF = (phi - h tau) / mean(h)

  The overlap weights define the target population from the estimated propensity;
  the standard error treats that population as given (as for a trimmed sample).

Crump, Hotz, Imbens & Mitnik (2009, Biometrika) choose the trimming threshold alpha
that minimises the asymptotic variance of the ATE on ``{alpha <= e <= 1 - alpha}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats

from .._optional import require

__all__ = [
    "EstimateKernel",
    "aggregate",
    "aipw_ate",
    "aipw_att",
    "arm_out_of_fold",
    "balancing_weights",
    "bracket",
    "calibrate_propensity",
    "convex_weights",
    "cross_fit",
    "cross_fit_select",
    "crump_alpha",
    "estimate",
    "make_folds",
    "overlap_ato",
    "propensity_out_of_fold",
    "propensity_risk",
    "select_out_of_fold",
    "x_recombine",
]

Estimand = Literal["ATE", "ATT", "ATO"]
OutcomeFeatures = Literal["covariates", "covariates+propensity"]
_OUTCOME_FEATURES = ("covariates", "covariates+propensity")
#: propensity calibrations (:func:`calibrate_propensity`)
CALIBRATIONS = ("none", "isotonic")


@dataclass(frozen=True, slots=True)
class EstimateKernel:
    """One doubly robust estimate.

    Attributes
    ----------
    estimate : float
    std_error : float
        ``sqrt(sum(influence**2)) / n``.
    influence : ndarray (n,)
        The estimated influence function of each unit.
    mu1, mu0 : float
        Potential-outcome means of the estimand's population (``mu1 - mu0 = estimate``).
    n : int
    components : tuple of EstimateKernel
        Empty, or the two estimates a :func:`bracket` combines; then ``interval`` is the
        hull of their intervals and ``p_value`` the matching test.

    Examples
    --------
    >>> import numpy as np
    >>> k = EstimateKernel(2.0, 0.5, np.zeros(3), 3.0, 1.0, 3)
    >>> k.z, [round(v, 4) for v in k.interval()]
    (4.0, [1.02, 2.98])
    """

    estimate: float
    std_error: float
    influence: np.ndarray
    mu1: float
    mu0: float
    n: int
    components: tuple = ()

    @property
    def z(self) -> float:
        return self.estimate / self.std_error if self.std_error > 0 else np.inf * np.sign(self.estimate)

    @property
    def p_value(self) -> float:
        """Two-sided normal p-value of ``estimate = 0``; for a bracket, the smallest alpha at
        which the hull of the components' 1 - alpha intervals excludes 0."""
        if self.components:
            a, b = self.components
            return max(a.p_value, b.p_value) if np.sign(a.estimate) == np.sign(b.estimate) else 1.0
        return float(2 * stats.norm.sf(abs(self.z))) if np.isfinite(self.z) else 0.0

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        if self.components:
            (lo_a, hi_a), (lo_b, hi_b) = (c.interval(level) for c in self.components)
            return min(lo_a, lo_b), max(hi_a, hi_b)
        q = stats.norm.ppf(0.5 + level / 2)
        return float(self.estimate - q * self.std_error), float(self.estimate + q * self.std_error)


def bracket(a: EstimateKernel, b: EstimateKernel) -> EstimateKernel:
    """Combine two estimates of one estimand that differ only in how the outcome models
    extrapolate: the midpoint, with the hull of the two intervals.

    The estimate is ``(a + b) / 2`` (influence function the average of the two); the
    interval at any level is ``[min(lo_a, lo_b), max(hi_a, hi_b)]``, which covers the truth
    whenever either component's interval does, so its coverage is at least that of the
    better-specified of the two; ``std_error`` is the hull's 95% half-width / 1.96 and
    ``p_value`` the smallest alpha at which the hull excludes 0. The OCI runner brackets the
    estimate from the arms' own regressions and the X-learner's (``cross_fit``'s
    ``effect_factory``): where an arm has no units near some covariate values, the data
    cannot choose between the two extrapolations, and the interval should say so
    (Manski 1990, AER 80(2), on reporting the range the data cannot narrow).

    Examples
    --------
    >>> import numpy as np
    >>> a = EstimateKernel(1.0, 0.1, np.zeros(4), 2.0, 1.0, 4)
    >>> b = EstimateKernel(1.4, 0.1, np.zeros(4), 2.4, 1.0, 4)
    >>> k = bracket(a, b)
    >>> round(k.estimate, 6), [round(v, 4) for v in k.interval()]
    (1.2, [0.804, 1.596])
    """
    if a.n != b.n:
        raise ValueError(f"bracket: the two estimates have {a.n} and {b.n} units")
    influence = (a.influence + b.influence) / 2
    q = stats.norm.ppf(0.975)
    (lo_a, hi_a), (lo_b, hi_b) = a.interval(), b.interval()
    lo, hi = min(lo_a, lo_b), max(hi_a, hi_b)
    return EstimateKernel(float((a.estimate + b.estimate) / 2), float((hi - lo) / (2 * q)), influence,
                          float((a.mu1 + b.mu1) / 2), float((a.mu0 + b.mu0) / 2), a.n, (a, b))


def aggregate(kernels) -> EstimateKernel:
    """Combine the estimates of one estimand from repeated cross-fitting (different fold
    splits of the same data).

    The estimate is the mean ``theta = mean_r theta_r`` and the standard error
    ``sqrt(mean_r [se_r^2 + (theta_r - theta)^2])``: the split-to-split spread is added to
    the within-split variance (Chernozhukov, Chetverikov, Demirer, Duflo, Hansen, Newey and
    Robins 2018, "Double/debiased machine learning for treatment and structural
    parameters", Econometrics J. 21(1), section 3.4, mean version). Influences, ``mu1`` and
    ``mu0`` are averaged. Brackets are aggregated component by component and bracketed
    again (a plain estimate among brackets counts as both components, as when the X-learner
    recombination was chosen in one split and not in another). One kernel is returned as it is.

    Examples
    --------
    >>> import numpy as np
    >>> k = aggregate([EstimateKernel(1.0, 0.3, np.zeros(2), 2.0, 1.0, 2),
    ...                EstimateKernel(1.2, 0.4, np.zeros(2), 2.2, 1.0, 2)])
    >>> round(k.estimate, 10), round(k.std_error ** 2, 10)     # (0.09 + 0.01 + 0.16 + 0.01) / 2
    (1.1, 0.135)
    """
    kernels = list(kernels)
    if len(kernels) == 1:
        return kernels[0]
    if any(k.components for k in kernels):  # a split without a bracket is its own two extremes
        return bracket(*(aggregate(k.components[i] if k.components else k for k in kernels) for i in range(2)))
    if len({k.n for k in kernels}) != 1:
        raise ValueError("aggregate: the estimates must be of one kind on the same units")
    theta = np.array([k.estimate for k in kernels])
    se = np.array([k.std_error for k in kernels])
    tau = float(theta.mean())
    influences = [k.influence for k in kernels]
    influence = np.mean(influences, axis=0) if len({len(i) for i in influences}) == 1 else np.empty(0)
    return EstimateKernel(tau, float(np.sqrt(np.mean(se**2 + (theta - tau) ** 2))), influence,
                          float(np.mean([k.mu1 for k in kernels])), float(np.mean([k.mu0 for k in kernels])),
                          kernels[0].n)


def _finish(tau: float, influence: np.ndarray, mu1: float, mu0: float) -> EstimateKernel:
    n = len(influence)
    se = float(np.sqrt(np.sum(influence**2)) / n)
    return EstimateKernel(float(tau), se, influence, float(mu1), float(mu0), n)


def aipw_ate(y, t, e, m0, m1) -> EstimateKernel:
    """AIPW estimate of the average treatment effect (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([1.0, 3.0, 2.0, 5.0]); t = np.array([0.0, 1.0, 0.0, 1.0])
    >>> e = np.full(4, 0.5); m = np.zeros(4)
    >>> aipw_ate(y, t, e, m, m).estimate   # = mean(2 t y - 2 (1 - t) y)
    2.5
    """
    psi1 = m1 + t * (y - m1) / e
    psi0 = m0 + (1 - t) * (y - m0) / (1 - e)
    diff = psi1 - psi0
    tau = diff.mean()
    return _finish(tau, diff - tau, psi1.mean(), psi0.mean())


def aipw_att(y, t, e, m0, m1) -> EstimateKernel:
    """Doubly robust estimate of the average effect on the treated (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([1.0, 3.0, 2.0, 5.0]); t = np.array([0.0, 1.0, 0.0, 1.0])
    >>> round(aipw_att(y, t, np.full(4, 0.5), np.zeros(4), np.zeros(4)).estimate, 12)
    2.5
    """
    p = t.mean()
    resid0 = y - m0
    a = t * resid0 - (1 - t) * e / (1 - e) * resid0
    tau = a.mean() / p
    mu1 = (t * y).mean() / p
    return _finish(tau, (a - t * tau) / p, mu1, mu1 - tau)


def overlap_ato(y, t, e, m0, m1) -> EstimateKernel:
    """Augmented overlap-weighted estimate of the ATO (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([1.0, 3.0, 2.0, 5.0]); t = np.array([0.0, 1.0, 0.0, 1.0])
    >>> overlap_ato(y, t, np.full(4, 0.5), np.zeros(4), np.zeros(4)).estimate
    2.5
    """
    h = e * (1 - e)
    part1 = h * m1 + t * (1 - e) * (y - m1)
    part0 = h * m0 + (1 - t) * e * (y - m0)
    phi = part1 - part0
    tau = phi.sum() / h.sum()
    return _finish(tau, (phi - h * tau) / h.mean(), part1.sum() / h.sum(), part0.sum() / h.sum())


_KERNELS = {"ATE": aipw_ate, "ATT": aipw_att, "ATO": overlap_ato}


def estimate(estimand: Estimand, y, t, e, m0, m1) -> EstimateKernel:
    """Dispatch to :func:`aipw_ate`, :func:`aipw_att` or :func:`overlap_ato`.

    >>> import numpy as np
    >>> estimate("ATT", np.array([1.0, 3.0]), np.array([0.0, 1.0]), np.full(2, 0.5),
    ...          np.zeros(2), np.zeros(2)).estimate
    2.0
    """
    return _KERNELS[estimand](y, t, e, m0, m1)


def balancing_weights(estimand: Estimand, t, e) -> np.ndarray:
    """The weights that balance covariates for each estimand.

    ATE ``t/e + (1-t)/(1-e)``; ATT ``t + (1-t) e/(1-e)``; ATO ``t (1-e) + (1-t) e``
    (Li, Morgan & Zaslavsky 2018).

    Examples
    --------
    >>> import numpy as np
    >>> balancing_weights("ATO", np.array([1.0, 0.0]), np.array([0.8, 0.8]))
    array([0.2, 0.8])
    """
    if estimand == "ATE":
        return t / e + (1 - t) / (1 - e)
    if estimand == "ATT":
        return t + (1 - t) * e / (1 - e)
    return t * (1 - e) + (1 - t) * e


def crump_alpha(e) -> float:
    """Crump et al. (2009) optimal trimming threshold alpha for the ATE.

    With ``g = 1 / (e (1 - e))``, the kept set ``A = {alpha <= e <= 1 - alpha} = {g <= gamma}``,
    ``gamma = 1 / (alpha (1 - alpha))``, minimises the variance bound of the ATE on A,
    ``E[g | A] / P(A)`` (Crump, Hotz, Imbens and Mitnik 2009, Biometrika 96(1), Theorem 1).
    On the sample, keeping the ``k`` smallest ``g`` gives ``n sum_{i <= k} g_(i) / k^2``; alpha
    comes from the ``k`` that minimises it over all ``k`` (``gamma`` between ``g_(k)`` and
    ``g_(k+1)``), and is 0 when keeping every unit is best. Theorem 1's first-order condition
    ``gamma = 2 E[g | g <= gamma]`` (no trimming when ``max g <= 2 E[g]``) picks the same point
    when the objective has one minimum; when most units lie without overlap (``g`` bimodal)
    "keep all" is also a root but not the minimum, and only the global minimiser trims them.

    Examples
    --------
    >>> import numpy as np
    >>> crump_alpha(np.full(10, 0.5))
    0.0
    >>> e = np.r_[np.full(90, 0.5), np.full(10, 0.001)]
    >>> 0.001 < crump_alpha(e) < 0.5
    True
    >>> e = np.r_[np.full(40, 0.5), np.full(60, 0.001)]   # most units without overlap
    >>> 0.001 < crump_alpha(e) < 0.5                      # max g <= 2 mean g, still trimmed
    True
    """
    e = np.asarray(e, float)
    gs = np.sort(1.0 / (e * (1 - e)))
    cumsum = np.cumsum(gs)
    k = int(np.argmin(cumsum / np.arange(1, len(gs) + 1) ** 2))
    if gs[k] == gs[-1]:
        return 0.0
    # any gamma in [g_(k), g_(k+1)) keeps the same units: the first-order root if it lies there
    nxt = gs[np.searchsorted(gs, gs[k], side="right")]
    gamma = 2 * cumsum[k] / (k + 1)
    if not gs[k] <= gamma < nxt:
        gamma = np.sqrt(gs[k] * nxt)
    return float(0.5 - np.sqrt(0.25 - 1.0 / gamma))


def make_folds(t, n_folds: int, seed: int) -> np.ndarray:
    """Fold id (n,) per unit: stratified by treatment, shuffled with ``seed``.

    Uses scikit-learn's ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``.

    Examples
    --------
    >>> import numpy as np
    >>> folds = make_folds(np.array([0, 0, 1, 1, 0, 1]), 3, seed=0)
    >>> sorted(np.bincount(folds).tolist())
    [2, 2, 2]
    """
    folds = np.empty(len(t), dtype=np.int64)
    model_selection = require("sklearn.model_selection", "oci")
    splitter = model_selection.StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(t)), t)):
        folds[test] = k
    return folds


@dataclass(frozen=True, slots=True)
class CrossFit:
    """Cross-fitted nuisance predictions.

    Attributes
    ----------
    e : ndarray (n,)
        Out-of-fold propensity (before clipping).
    m0, m1 : dict outcome name -> ndarray (n,)
        Out-of-fold outcome regressions per arm, one entry per outcome.
    folds : ndarray (n,) of int
    m0_arms, m1_arms : dict or None
        With ``effect_factory``: the predictions before the X-learner recombination (each arm's
        own regression), kept for the ``extrapolation`` diagnostic; else None.
    chosen, risks : dict or None
        From :func:`cross_fit_select`: the learners' weights for every nuisance and the
        candidates' cross-validated risks; else None.
    score : ndarray (n,) or None
        With a calibration: the propensity before it (for ``cross_fit_select``, the chosen
        combination of the uncalibrated candidates); else None. The runner judges overlap
        and trims on this smooth score, since an isotonic fit jumps to 0 and 1 in its end
        blocks (its boundary problem), and weights with the calibrated ``e``.
    """

    e: np.ndarray
    m0: dict
    m1: dict
    folds: np.ndarray
    m0_arms: dict | None = None
    m1_arms: dict | None = None
    chosen: dict | None = None
    risks: dict | None = None
    score: np.ndarray | None = None


def cross_fit(X, t, outcomes: dict, folds, propensity_factory, outcome_factory, seed: int, *,
              outcome_features: OutcomeFeatures = "covariates", posterior_factory=None,
              effect_factory=None, calibration: str = "none") -> CrossFit:
    """Fit the nuisance models out of fold.

    For each fold k the propensity model is fitted on the other folds and predicts
    fold k; each outcome model is fitted per arm (T = 1 and T = 0 separately) on the
    other folds. Factories are called with ``seed`` to make fresh estimators.

    ``outcome_features="covariates+propensity"`` gives the outcome models one more
    column, the logit of the out-of-fold propensity ``log(e / (1 - e))`` (``e`` clipped
    to [1e-3, 1 - 1e-3]) of the same fold split: the propensity models are fitted first,
    then the outcome model of fold k is trained on the other folds' out-of-fold
    propensities and predicts fold k from fold k's own out-of-fold propensity (no unit's
    propensity feature comes from a model that saw its own treatment; the training rows'
    features come from models that saw fold k's treatments, never its outcomes). This is the
    idea of ``bart_on_pscore`` in the ACIC 2016 competition (Dorie et al. 2019, Stat.
    Sci. 34) and of Hahn, Murray & Carvalho (2020, Bayesian Analysis, "Bayesian causal
    forests"): the propensity is a summary of the confounding that a tree learner may
    not find from the covariates alone.

    ``posterior_factory`` (optional) makes a Bayesian regressor whose prediction is a
    posterior mean (BART, ``benchmarks/acic/bart_learners.py``). It is fitted once per arm
    on all of the arm's rows (no cross-fitting: the prior, not sample splitting, keeps it
    from fitting the noise) and the outcome prediction becomes the equal-weight average
    ``m_t(x) = (m_t^cf(x) + m_t^post(x)) / 2`` of the cross-fitted model and the posterior
    mean. Averaging two learners of different kinds lowers the error of the regression
    where their errors differ (the idea of super learning, van der Laan, Polley and Hubbard
    2007, Stat. Appl. Genet. Mol. Biol. 6(1), with fixed weights). The influence-function
    standard errors treat the average as any other nuisance estimate; the in-sample half is
    the one departure from the cross-fitting of Chernozhukov et al. (2018, Econometrics J.
    21), as in the competition's BART + TMLE entry.

    ``effect_factory`` (optional) then rebuilds each arm's prediction where that arm has few
    units, after the X-learner of Kunzel, Sekhon, Bickel and Yu (2019, PNAS 116(10),
    "Metalearners for estimating heterogeneous treatment effects using machine learning"):
    effect models (``effect_factory``, cross-fitted on the same folds) are fitted to the
    imputed effects
    ``D1 = y - m0(x)`` of the treated and ``D0 = m1(x) - y`` of the controls, and

        m1'(x) = e(x) m1(x) + (1 - e(x)) (m0(x) + tau1(x)),
        m0'(x) = (1 - e(x)) m0(x) + e(x) (m1(x) - tau0(x)),

    with ``e`` the out-of-fold propensity. Where few units are treated (``e`` near 0) the
    treated outcome is predicted as the control outcome plus a model of the effect, so
    that the effect, usually smoother than the response surface, is extrapolated instead
    of the treated arm's own surface; symmetrically for the controls. ``D1`` uses ``m0``
    at treated rows, fitted on controls only, so no unit's imputed effect contains its own
    outcome twice. ``effect_factory`` may also be a sequence of factories: each arm's effect
    model is then the candidate with the smallest out-of-fold squared error on that arm's
    imputed effects (``select_out_of_fold``, the discrete super learner), so that, e.g., a
    linear effect model is used where the effect is linear and trees where it is not.

    ``calibration="isotonic"`` replaces the out-of-fold propensity by its isotonic
    calibration (:func:`calibrate_propensity`) in the returned ``e`` (the estimators'
    weights); the propensity features of the outcome models and the X-learner's mixing
    weights keep the smooth uncalibrated score (``CrossFit.score``): they need a ranking of
    the units, not inverse weights, and an isotonic fit's end blocks jump to 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> from causalflow.oci.learners import get_learner
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(40, 1)); t = np.tile([0.0, 1.0], 20)
    >>> lin = get_learner("linear")
    >>> fit = cross_fit(X, t, {"y": 2 * X[:, 0] + t}, make_folds(t, 2, 0), lin.classifier, lin.regressor, 0)
    >>> bool(np.allclose(fit.m1["y"] - fit.m0["y"], 1.0))
    True
    """
    if outcome_features not in _OUTCOME_FEATURES:
        raise ValueError(f"outcome_features: must be one of {_OUTCOME_FEATURES}, got {outcome_features!r}")
    raw = propensity_out_of_fold(X, t, folds, propensity_factory, seed)
    e = _calibrated(raw, t, calibration)
    score = raw if calibration != "none" else None
    m0, m1, m0x, m1x = _outcome_out_of_fold(X, t, outcomes, folds, raw, outcome_factory, seed, outcome_features,
                                            posterior_factory, effect_factory)
    if effect_factory is None:
        return CrossFit(e, m0, m1, folds, score=score)
    return CrossFit(e, m0x, m1x, folds, m0, m1, score=score)


def propensity_out_of_fold(X, t, folds, factory, seed: int) -> np.ndarray:
    """Out-of-fold propensity ``P(T = 1 | X)`` (n,): for each fold k a classifier
    (``factory(seed)``) fitted on the other folds predicts fold k.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.arange(8.0)[:, None]; t = np.array([0, 1] * 4)
    >>> e = propensity_out_of_fold(X, t, np.array([0, 0, 1, 1] * 2), lambda s: LogisticRegression(), 0)
    >>> e.shape, bool(((e > 0) & (e < 1)).all())
    ((8,), True)
    """
    e = np.empty(len(t))
    for k in np.unique(folds):
        test = folds == k
        clf = factory(seed)
        clf.fit(X[~test], t[~test].astype(int))
        classes = list(clf.classes_) if hasattr(clf, "classes_") else [0, 1]
        e[test] = clf.predict_proba(X[test])[:, classes.index(1)]
    return e


def calibrate_propensity(e, t) -> np.ndarray:
    """Isotonic calibration of cross-fitted propensities: the non-decreasing function ``g``
    minimising ``sum_i (t_i - g(e_i))^2`` (pool-adjacent-violators), evaluated at ``e``.

    Within each block of units that the fit pools, the calibrated propensity is the share of
    treated units in the block, so the inverse-probability weights balance the arms' counts
    block by block (a data-driven stratification on the score), and a learner whose scores
    rank units well but are over-confident (boosted trees) loses its extreme weights without
    losing its ranking. Calibrating cross-fitted propensities with isotonic regression is the
    proposal of van der Laan, Lin, Carone and Luedtke (2025, CLeaR, "Stabilized inverse
    probability weighting via isotonic calibration"), who calibrate the inverse weights with
    a loss tailored to them; this is the simpler calibration of the score itself (Zadrozny
    and Elkan 2002, KDD, "Transforming classifier scores into accurate multiclass probability
    estimates"). As in the cited work, the calibration map (one monotone function of one
    variable) is fitted on all units' out-of-fold scores.

    Examples
    --------
    >>> import numpy as np
    >>> calibrate_propensity(np.array([0.1, 0.2, 0.3, 0.9]), np.array([0, 1, 0, 1])).tolist()
    [0.0, 0.5, 0.5, 1.0]
    """
    iso = require("sklearn.isotonic", "oci").IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    return iso.fit(np.asarray(e, dtype=float), np.asarray(t, dtype=float)).predict(np.asarray(e, dtype=float))


def _calibrated(e, t, calibration: str) -> np.ndarray:
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration: must be one of {CALIBRATIONS}, got {calibration!r}")
    return calibrate_propensity(e, t) if calibration == "isotonic" else e


def _outcome_out_of_fold(X, t, outcomes, folds, e, factory, seed, outcome_features, posterior_factory,
                         effect_factory):
    """The outcome part of ``cross_fit`` given the out-of-fold propensity ``e``:
    ``(m0, m1, m0x, m1x)``, the arms' own predictions and (with ``effect_factory``) the
    X-learner recombinations, else None."""
    n = len(t)
    m0 = {name: np.empty(n) for name in outcomes}
    m1 = {name: np.empty(n) for name in outcomes}
    treated = t == 1
    if outcome_features == "covariates+propensity":
        ec = np.clip(e, 1e-3, 1 - 1e-3)
        X = np.column_stack([X, np.log(ec / (1 - ec))])
    for k in np.unique(folds):
        test = folds == k
        train = ~test
        for name, y in outcomes.items():
            for arm_mask, target in ((treated, m1[name]), (~treated, m0[name])):
                rows = train & arm_mask
                reg = factory(seed)
                reg.fit(X[rows], y[rows])
                target[test] = reg.predict(X[test])
    if posterior_factory is not None:
        for name, y in outcomes.items():
            for arm_mask, target in ((treated, m1[name]), (~treated, m0[name])):
                reg = posterior_factory(seed)
                reg.fit(X[arm_mask], y[arm_mask])
                target += reg.predict(X)
                target *= 0.5
    if effect_factory is None:
        return m0, m1, None, None
    m0x, m1x = {}, {}
    for name, y in outcomes.items():
        m0x[name], m1x[name] = _x_learner_predictions(X, y, treated, e, m0[name], m1[name], folds,
                                                      effect_factory, seed)
    return m0, m1, m0x, m1x


def propensity_risk(t, e) -> float:
    """Cross-validated log-loss of out-of-fold propensities, ``e`` clipped to [1e-3, 1 - 1e-3]:
    ``-mean(t log e + (1 - t) log(1 - e))``.

    >>> import numpy as np
    >>> round(propensity_risk(np.array([1, 0]), np.array([0.5, 0.5])), 6)
    0.693147
    """
    e = np.clip(e, 1e-3, 1 - 1e-3)
    return float(-np.mean(np.where(t == 1, np.log(e), np.log1p(-e))))


def convex_weights(predictions, target, loss: str = "squared") -> np.ndarray:
    """Weights ``w >= 0, sum(w) = 1`` of the convex combination ``sum_j w_j p_j`` of the
    candidates' out-of-fold predictions with the smallest risk against ``target``: mean
    squared error (``loss="squared"``) or log-loss (``"log"``, predictions are probabilities,
    clipped as in :func:`propensity_risk`). Both risks are convex in ``w``, so the minimum
    over the simplex (found by SLSQP from equal weights) is the global one. This is the
    super learner of van der Laan, Polley and Hubbard (2007, Stat. Appl. Genet. Mol. Biol.
    6(1), section 2) with the convex combination as its family of combinations.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0.0, 1.0, 2.0, 3.0])
    >>> convex_weights([y + 1, y - 1], y).round(6).tolist()     # the errors cancel at 1/2 each
    [0.5, 0.5]
    >>> convex_weights([y, y + 1], y).round(6).tolist()
    [1.0, 0.0]
    """
    P = np.column_stack(predictions)
    k = P.shape[1]
    if k == 1:
        return np.ones(1)
    if loss == "log":
        t = np.asarray(target)

        def risk(w):
            return propensity_risk(t, P @ w)
    else:
        def risk(w):
            return float(np.mean((P @ w - target) ** 2))
    res = optimize.minimize(risk, np.full(k, 1.0 / k), method="SLSQP", bounds=[(0.0, 1.0)] * k,
                            constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0},),
                            options={"ftol": 1e-12, "maxiter": 200})
    w = np.clip(res.x, 0.0, 1.0)
    w[w < 1e-6] = 0.0
    return w / w.sum()


def cross_fit_select(X, t, outcomes: dict, folds, propensity_learners, outcome_learners, seed: int, *,
                     calibration: str = "none") -> CrossFit:
    """Cross-fitted nuisances, each a convex combination of candidate learners chosen by
    cross-validated risk (the super learner).

    Every candidate is cross-fitted on the same folds (as in :func:`cross_fit`), and
    (:func:`convex_weights`; van der Laan, Polley and Hubbard 2007, Stat. Appl. Genet.
    Mol. Biol. 6(1))

    - the propensity is the convex combination of the candidates' out-of-fold propensities
      with the smallest log-loss (:func:`propensity_risk`);
    - for every outcome and arm, the regression ``m_t`` is the convex combination of the
      candidates' out-of-fold predictions (after each candidate's own X-learner
      recombination, with the combined propensity, uncalibrated, if it has one) with the smallest squared
      error over the units of arm ``t``.

    By the oracle inequality of super learning the combination does asymptotically as well
    as the best combination of the candidates: a linear model where the surfaces are
    (nearly) linear or the sample is small, trees where they are not. Combining
    propensities also keeps them away from the extremes that a single model may reach
    where the arms hardly overlap. The weights use the out-of-fold predictions that enter
    the estimate; with a few candidates this is the usual practice of cross-fitted
    estimators with a super learner (Chernozhukov et al. 2018, Econometrics J. 21, allow
    any nuisance estimator with the required rates).

    ``propensity_learners`` / ``outcome_learners``: sequences of objects with the fields of
    :class:`causalflow.oci.learners.Learner` (``name``, ``classifier``, ``regressor``,
    ``outcome_features``, ``posterior_regressor``, ``effect_regressor``). The returned
    :class:`CrossFit`'s ``chosen`` maps ``"propensity"`` and ``"<outcome>:treated"`` /
    ``"<outcome>:control"`` to ``{learner name: weight}`` and ``risks`` to the candidates'
    own risks (in the order given). ``calibration="isotonic"`` calibrates every candidate's
    out-of-fold propensity (:func:`calibrate_propensity`) before the weights are chosen, so
    that the log-loss compares the candidates' ranking of the units rather than their
    confidence.

    Examples
    --------
    >>> import numpy as np
    >>> from causalflow.oci.learners import get_learner
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(200, 2)); t = (rng.random(200) < 0.5) * 1.0
    >>> fit = cross_fit_select(X, t, {"y": X[:, 0] + t + 0.1 * rng.normal(size=200)}, make_folds(t, 2, 0),
    ...                        [get_learner("linear")], [get_learner("linear"), get_learner("lightgbm")], 0)
    >>> fit.chosen["y:treated"]["linear"] > 0.9           # a linear surface: mostly OLS
    True
    """
    treated = t == 1
    raw = [propensity_out_of_fold(X, t, folds, c.classifier, seed) for c in propensity_learners]
    es = [_calibrated(e, t, calibration) for e in raw]
    risks = {"propensity": [propensity_risk(t, e) for e in es]}
    w = convex_weights(es, t, "log")
    e = np.column_stack(es) @ w
    score = np.column_stack(raw) @ w if calibration != "none" else None
    chosen = {"propensity": {c.name: float(v) for c, v in zip(propensity_learners, w)}}
    smooth = e if score is None else score  # the X-learner mixes the arms with the smooth score
    fits = [_outcome_out_of_fold(X, t, outcomes, folds, smooth, c.regressor, seed, c.outcome_features,
                                 c.posterior_regressor, c.effect_regressor) for c in outcome_learners]
    m = {0: {}, 1: {}}
    own = {0: {}, 1: {}}
    recombined = False
    for name, y in outcomes.items():
        for arm, rows, label in ((1, treated, "treated"), (0, ~treated, "control")):
            final = [(f[2 + arm] if f[2] is not None else f[arm])[name] for f in fits]
            risks[f"{name}:{label}"] = [float(np.mean((p[rows] - y[rows]) ** 2)) for p in final]
            w = convex_weights([p[rows] for p in final], y[rows])
            chosen[f"{name}:{label}"] = {c.name: float(v) for c, v in zip(outcome_learners, w)}
            m[arm][name] = np.column_stack(final) @ w
            own[arm][name] = np.column_stack([f[arm][name] for f in fits]) @ w
            recombined |= any(f[2] is not None for f, v in zip(fits, w) if v > 0)
    arms = (own[0], own[1]) if recombined else (None, None)
    return CrossFit(e, m[0], m[1], folds, *arms, chosen=chosen, risks=risks, score=score)


def arm_out_of_fold(X, y, arm, folds, factory, seed: int) -> np.ndarray:
    """Out-of-fold predictions for every row: for each fold k, a model (``factory(seed)``)
    fitted on the rows of ``arm`` outside fold k predicts all rows of fold k.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> X = np.arange(8.0)[:, None]; y = 2 * X[:, 0]; folds = np.array([0, 1] * 4)
    >>> arm_out_of_fold(X, y, X[:, 0] < 6, folds, lambda seed: LinearRegression(), 0).round(6).tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
    """
    out = np.empty(len(y))
    for k in np.unique(folds):
        test = folds == k
        rows = ~test & arm
        model = factory(seed)
        model.fit(X[rows], y[rows])  # registered estimators need not return self
        out[test] = model.predict(X[test])
    return out


def x_recombine(e, m0, m1, tau1, tau0) -> tuple[np.ndarray, np.ndarray]:
    """The X-learner predictions ``(m0', m1')`` of ``cross_fit`` (see there) from the arms'
    predictions and the effect models' predictions ``tau1`` (treated) and ``tau0`` (controls).

    Examples
    --------
    >>> import numpy as np
    >>> m0, m1 = x_recombine(np.array([0.0, 1.0]), np.array([1.0, 1.0]), np.array([3.0, 3.0]),
    ...                      np.array([5.0, 5.0]), np.array([4.0, 4.0]))
    >>> m0.tolist(), m1.tolist()     # e = 0: m1 from m0 + tau1; e = 1: m0 from m1 - tau0
    ([1.0, -1.0], [6.0, 3.0])
    """
    return (1 - e) * m0 + e * (m1 - tau0), e * m1 + (1 - e) * (m0 + tau1)


def select_out_of_fold(X, y, arm, folds, factories, seed: int) -> tuple[np.ndarray, int, np.ndarray]:
    """The discrete super learner on the given folds: out-of-fold predictions of every
    candidate (``arm_out_of_fold``), and those of the candidate with the smallest
    cross-validated risk ``mean((y_hat - y)^2)`` over the rows of ``arm``.

    Returns ``(predictions, index of the chosen candidate, risks)``. Choosing by
    cross-validated risk does asymptotically as well as the best candidate (the oracle
    inequality of van der Laan, Polley and Hubbard 2007, Stat. Appl. Genet. Mol. Biol. 6(1),
    "Super learner"; the discrete selector of their section 2). Ties go to the first candidate.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.linear_model import LinearRegression
    >>> X = np.arange(8.0)[:, None]; y = 2 * X[:, 0]; folds = np.array([0, 1] * 4)
    >>> pred, chosen, risks = select_out_of_fold(X, y, X[:, 0] >= 0, folds,
    ...                                          [lambda s: DummyRegressor(), lambda s: LinearRegression()], 0)
    >>> chosen, pred.round(6).tolist()
    (1, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0])
    """
    preds = [arm_out_of_fold(X, y, arm, folds, f, seed) for f in factories]
    risks = np.array([np.mean((p[arm] - y[arm]) ** 2) for p in preds])
    chosen = int(np.argmin(risks))
    return preds[chosen], chosen, risks


def _x_learner_predictions(X, y, treated, e, m0, m1, folds, factory, seed):
    """The X-learner recombination of ``cross_fit`` (see there) for one outcome; each arm's
    effect model is chosen by ``select_out_of_fold`` (one factory: the only candidate)."""
    factories = (factory,) if callable(factory) else factory
    tau1 = select_out_of_fold(X, y - m0, treated, folds, factories, seed)[0]
    tau0 = select_out_of_fold(X, m1 - y, ~treated, folds, factories, seed)[0]
    return x_recombine(e, m0, m1, tau1, tau0)
