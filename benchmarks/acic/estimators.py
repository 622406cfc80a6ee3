"""Cross-fitted doubly robust estimators of the sample ATT / ATE (research kernels).

Pure functions: numpy arrays in, frozen dataclasses out, an explicit seed.

Notation: ``z`` the 0/1 treatment, ``y`` the outcome, ``mu0(x)``, ``mu1(x)`` the outcome
regressions, ``e(x)`` the propensity, ``n1 = sum(z)``.

AIPW for the ATT (Hahn 1998; Chernozhukov et al. 2018, section 5.1)::

    tau_att = (1/n1) sum_i [ z_i (y_i - mu0_i) - (1 - z_i) w_i (y_i - mu0_i) ],
    w_i = e_i / (1 - e_i)      (normalised so that sum over controls = n1)

AIPW for the ATE (Robins, Rotnitzky and Zhao 1994)::

    tau_ate = (1/n) sum_i [ mu1_i - mu0_i + z_i (y_i - mu1_i)/e_i - (1-z_i)(y_i - mu0_i)/(1-e_i) ].

Sample versus population variance (Imbens 2004, Rev. Econ. Stat. 86(1), section 3.3;
Imbens and Wooldridge 2009, J. Econ. Lit. 47(1), section 5.1; Abadie and Imbens 2006).
The SATT ``(1/n1) sum_{z=1} (y1 - y0)`` and SATE ``(1/n) sum (y1 - y0)`` are random only
through the unobserved potential outcomes, so the error of the estimator given (X, Z) is::

    tau_att - SATT = (1/n1) [ sum_{z=1} eps0_i  -  sum_{z=0} w_i eps0_i ] + bias
    tau_ate - SATE = (1/n) [ sum_{z=1} (eps1_i (1-e_i)/e_i + eps0_i)
                            - sum_{z=0} (eps0_i e_i/(1-e_i) + eps1_i) ] + bias

with ``eps_t = y_t - mu_t(x)``. Hence::

    V_SATT = (1/n1^2) [ sum_{z=1} s0^2(x_i) + sum_{z=0} w_i^2 s0^2(x_i) ]
    V_SATE = (1/n^2) [ sum_{z=1} ( s1^2 (1-e)^2/e^2 + s0^2 ) + sum_{z=0} ( s0^2 e^2/(1-e)^2 + s1^2 ) ]

The population (influence-function) variance adds the variance of the unit-level effects
``mu1 - mu0`` among the treated (ATT) or all units (ATE), which the sample estimands do not
have: intervals built on it over-cover the SATT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats

Learner = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
"""fit on (X_train, y_train), predict on X_test, with a seed -> predictions."""


@dataclass(frozen=True, slots=True)
class Nuisances:
    """Cross-fitted nuisance predictions, each (n,).

    ``mu0`` / ``mu1``: outcome regressions, out-of-fold for the units whose outcome was
    used to fit them, averaged over the fold models for the others. ``e``: propensity,
    out-of-fold. ``weights0`` / ``weights1``: the stacking weights of the outcome learners.
    """

    mu0: np.ndarray
    mu1: np.ndarray
    e: np.ndarray
    weights0: np.ndarray
    weights1: np.ndarray


@dataclass(frozen=True, slots=True)
class EffectEstimate:
    """A point estimate with its standard error and 95% interval."""

    estimand: str
    estimate: float
    std_error: float
    ci_lower: float
    ci_upper: float


def fold_ids(n: int, z: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold label per row, stratified by treatment, from a seeded permutation."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=int)
    for t in (0, 1):
        idx = np.flatnonzero(z == t)
        idx = idx[rng.permutation(idx.size)]
        out[idx] = np.arange(idx.size) % n_folds
    return out


def nnls_stack(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least-squares weights summing to one (SuperLearner's convex combination).

    ``P`` (m x L) out-of-fold predictions of L learners, ``y`` (m,) the targets.
    """
    if P.shape[1] == 1:
        return np.ones(1)
    w, _ = optimize.nnls(P, y)
    s = w.sum()
    return w / s if s > 0 else np.full(P.shape[1], 1.0 / P.shape[1])


def crossfit_arm(X: np.ndarray, y: np.ndarray, in_arm: np.ndarray, folds: np.ndarray,
                 learners: Sequence[Learner], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted regression of ``y`` on ``X`` among rows ``in_arm``, stacked over learners.

    Rows in the arm get the prediction of the model fitted without their fold; other rows
    get the mean over the fold models (bagging; their outcome was never used).
    Returns (predictions (n,), stacking weights (L,)).
    """
    n, K = X.shape[0], int(folds.max()) + 1
    P = np.zeros((n, len(learners)))
    for k in range(K):
        train = in_arm & (folds != k)
        test_own = in_arm & (folds == k)
        for j, learner in enumerate(learners):
            pred = learner(X[train], y[train], X, seed + 17 * k + j)
            P[test_own, j] = pred[test_own]
            P[~in_arm, j] += pred[~in_arm] / K
    w = nnls_stack(P[in_arm], y[in_arm])
    return P @ w, w


def crossfit_propensity(X: np.ndarray, z: np.ndarray, folds: np.ndarray,
                        learners: Sequence[Learner], seed: int) -> np.ndarray:
    """Out-of-fold propensity, the mean over the given probability learners."""
    K = int(folds.max()) + 1
    e = np.zeros(X.shape[0])
    for k in range(K):
        train, test = folds != k, folds == k
        preds = [lr(X[train], z[train], X[test], seed + 31 * k + j) for j, lr in enumerate(learners)]
        e[test] = np.mean(preds, axis=0)
    return e


def crossfit_nuisances(X: np.ndarray, z: np.ndarray, y: np.ndarray, *,
                       outcome_learners: Sequence[Learner],
                       propensity_learners: Sequence[Learner],
                       n_folds: int = 5, seed: int = 0, need_mu1: bool = True) -> Nuisances:
    """Cross-fitted T-learner outcome regressions and propensity (same folds)."""
    folds = fold_ids(X.shape[0], z, n_folds, seed)
    treated = z == 1
    mu0, w0 = crossfit_arm(X, y, ~treated, folds, outcome_learners, seed)
    if need_mu1:
        mu1, w1 = crossfit_arm(X, y, treated, folds, outcome_learners, seed + 1000)
    else:
        mu1, w1 = np.full_like(mu0, np.nan), np.zeros(len(outcome_learners))
    e = crossfit_propensity(X, z, folds, propensity_learners, seed + 2000)
    return Nuisances(mu0, mu1, e, w0, w1)


def _interval(name: str, est: float, se: float, level: float = 0.95) -> EffectEstimate:
    q = stats.norm.ppf(0.5 + level / 2)
    return EffectEstimate(name, float(est), float(se), float(est - q * se), float(est + q * se))


def att_aipw(y: np.ndarray, z: np.ndarray, mu0: np.ndarray, e: np.ndarray, *,
             clip: float = 1e-3,
             variance: Literal["sample", "population"] = "sample",
             sigma: Literal["pooled", "weighted"] = "weighted",
             correction: bool = True) -> EffectEstimate:
    """AIPW estimate of the ATT with the sample (SATT) or population variance (module doc).

    ``sigma`` picks the estimate of the control noise variance s0^2 used for the treated
    units' unobserved y0: ``pooled`` is the mean squared control residual, ``weighted`` the
    mean weighted by the ATT odds w (controls that resemble the treated).
    ``correction=False`` gives the regression (plug-in) estimate with the same variance.
    """
    t = z == 1
    c = ~t
    n1 = t.sum()
    e = np.clip(e, clip, 1 - clip)
    w = e / (1 - e)
    w_c = w[c] * (n1 / w[c].sum())  # Hajek normalisation: weights of controls sum to n1
    r = y - mu0
    corr = (w_c * r[c]).sum() / n1 if correction else 0.0
    est = r[t].mean() - corr
    if variance == "population":
        phi = np.zeros_like(y)
        phi[t] = r[t] - est
        phi[c] = -w_c * r[c] if correction else 0.0
        se = np.sqrt((phi ** 2).sum()) / n1
    else:
        s0 = (w_c * r[c] ** 2).sum() / n1 if sigma == "weighted" else np.mean(r[c] ** 2)
        v = n1 * s0 + ((w_c ** 2 * r[c] ** 2).sum() if correction else 0.0)
        se = np.sqrt(v) / n1
    return _interval("SATT", est, se)


def ate_aipw(y: np.ndarray, z: np.ndarray, mu0: np.ndarray, mu1: np.ndarray, e: np.ndarray, *,
             clip: float = 1e-3,
             variance: Literal["sample", "population"] = "sample",
             correction: bool = True) -> EffectEstimate:
    """AIPW estimate of the ATE with the sample (SATE) or population variance (module doc).

    Inverse weights are Hajek-normalised within each arm. The noise variances s0^2, s1^2 are
    the mean squared residuals of each arm.
    """
    t = z == 1
    c = ~t
    n = y.size
    e = np.clip(e, clip, 1 - clip)
    a1 = np.where(t, 1 / e, 0.0)
    a1 *= n / a1.sum()
    a0 = np.where(c, 1 / (1 - e), 0.0)
    a0 *= n / a0.sum()
    r1 = np.where(t, y - mu1, 0.0)
    r0 = np.where(c, y - mu0, 0.0)
    # imputation form: observed y for the arm received, the regression for the other one;
    # the AIPW correction adds (a_t - 1) times the own-arm residual
    k = 1.0 if correction else 0.0
    psi = np.where(t, y - mu0, mu1 - y) + k * ((a1 - 1) * r1 - (a0 - 1) * r0)
    est = psi.mean()
    if variance == "population":
        se = psi.std(ddof=1) / np.sqrt(n)
    else:
        # treated unit: eps1 (a1 - 1) + eps0; control unit: -(eps0 (a0 - 1) + eps1).
        # The own-arm residual is observed (heteroscedasticity-robust); the other arm's
        # noise variance is the mean squared residual of that arm.
        s1 = np.mean(r1[t] ** 2)
        s0 = np.mean(r0[c] ** 2)
        v = t.sum() * s0 + c.sum() * s1 + k * (((a1 - 1) * r1) ** 2 + ((a0 - 1) * r0) ** 2).sum()
        se = np.sqrt(v) / n
    return _interval("SATE", est, se)
