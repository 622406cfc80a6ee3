"""Round 13: other extrapolation rules and propensity calibration, against the ``gbm_x`` defaults.

    python -m benchmarks.acic.extrapolation_research effect --save /tmp/effect.json [--pairs 19:3 76:3]
    python -m benchmarks.acic.extrapolation_research propensity --save /tmp/ps.json
    python -m benchmarks.acic.extrapolation_research balance --save /tmp/balance.json
    python -m benchmarks.acic.extrapolation_research select --save /tmp/select.json
    python -m benchmarks.acic.extrapolation_research select3 --save /tmp/select3.json
    python -m benchmarks.acic.extrapolation_research overlap --save /tmp/overlap.json
    python -m benchmarks.acic.extrapolation_research rebalance --save /tmp/rebalance.json
    python -m benchmarks.acic.extrapolation_research bcf --save /tmp/bcf.json
    python -m benchmarks.acic.extrapolation_research bcf_small --save /tmp/bcf_small.json
    python -m benchmarks.acic.extrapolation_research analyse /tmp/effect.json

Every variant uses the runner's own pieces for one fold split (seed 0, 5 folds): the
covariate encoding, ``cross_fit`` with the ``gbm_x`` propensity and linear-leaf outcome
models, and the ``aipw_sample`` kernel; each estimate is the bracket of the arms' own
regressions and an X-learner recombination (``estimators.bracket``), as the runner reports.
Without ``--pairs`` all 231 data sets are run. Results are kept out of the repository.

``effect``: the X-learner's effect models are constant-leaf LightGBM (``t``, the default:
flat outside the data) or :class:`LinearPlusTrees` (``lb``: linear outside the data);
the arms' own outcome models are linear-leaf LightGBM (``g``, the default) or
:class:`LinearPlusTrees`. Per arm the effect model is also chosen (``sel``) or weighted
(``nn``, non-negative least squares) by its error on a *shifted hold-out*: the fifth of the
arm's units most like the other arm (lowest / highest propensity), predicted by models
trained on the rest of the arm (the idea of validating under covariate shift, Sugiyama,
Krauledat and Mueller 2007, JMLR 8, "Covariate shift adaptation by importance weighted
cross validation").

``propensity``: the LightGBM propensity as it is (``base``), after cross-fitted Platt
scaling (a logistic regression of the treatment on the out-of-fold logit, fitted on the
other folds; Platt 1999), the early-stopped model (``tuned``, ``TunedBoosting``), and both.

``clip``: the propensity clipped to ``[c, 1 - c]`` for c = 0.001 (the default), 0.01, 0.025,
0.05, in the X-learner recombination and the AIPW weights alike.

``balance`` (ATT only): the control weights of the augmented ATT estimator are entropy-balancing
weights (Hainmueller 2012, Political Analysis 20(1)) that match the treated means of the
standardised covariates (``ebal``) and also of the propensity logit (``ebal_ps``), instead of
the Hajek propensity odds (``base``); same outcome models, same sample-ATT variance.

``select`` (round 15): each arm's outcome model and each effect model chosen from a linear
and a tree candidate by its out-of-fold squared error on the arm's rows (``min``, the discrete
super learner) or weighted by non-negative least squares on the out-of-fold predictions
(``nnls``, the convex super learner); van der Laan, Polley and Hubbard 2007, Stat. Appl.
Genet. Mol. Biol. 6(1). Outcome candidates: linear-leaf LightGBM (``g``) and ridge; effect
candidates: constant-leaf LightGBM (``t``) and ridge. Variant ``<own>_<effect>``.

``overlap`` (round 15): the overlap-aware estimands the Critic proposes, each scored against
its own sample truth from the potential outcomes ``y1 - y0`` of the export: the ATE and ATT
of the units kept by Crump et al. (2009) trimming (``trim``) and the overlap-weighted ATO with
``h = e (1 - e)`` (Li, Morgan and Zaslavsky 2018, JASA 113(521)), the weights from the
estimated propensity, so that the truth is the population the estimate describes.

``bcf`` (round 16): Bayesian causal forests (Hahn, Murray and Carvalho 2020, Bayesian
Analysis 15(3); stochtree's ``BCFModel``), one fit on all rows with the out-of-fold LightGBM
propensity as a prognostic covariate: the posterior of the sample ATT / ATE (``bcfpost``: mean of
the draws of ``mean tau(x)`` over the treated / all units, 2.5 / 97.5% quantiles), the
``aipw_sample`` kernel on the BCF fit ``m0 = mu(x), m1 = mu(x) + tau(x)`` (``bcfaipw``), the
bracket with those predictions averaged into the default outcome models (``avg``), and the
default (``g_t``).

``select3`` and ``rebalance`` (round 15): see their functions (a constant effect candidate;
approximate entropy-balancing ATT weights).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.optimize import nnls

from benchmarks.acic.tuned_boosting import tuned_gbm_classifier
from causalflow.oci import estimators as E
from causalflow.oci.gbm_learners import (
    Boosting,
    gbm_classifier,
    gbm_linear_tree_regressor,
    gbm_tree_regressor,
)


class Ridge:
    """Ridge regression on standardised columns, penalty by generalised cross-validation."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, X, y):
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model_ = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))).fit(X, y)
        return self

    def predict(self, X):
        return self.model_.predict(X)


class LinearPlusTrees:
    """:class:`Ridge`, then 300 rounds of constant-leaf LightGBM on its residuals: boosting
    started from a linear fit (Friedman 2001, Ann. Statist. 29(5), the initial model ``F_0``).
    Beyond the data the trees are flat, so the prediction extrapolates along the linear part."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, X, y):
        self.linear_ = Ridge(self.seed).fit(X, y)
        self.trees_ = Boosting("regressor", 300, seed=self.seed).fit(X, y - self.linear_.predict(X))
        return self

    def predict(self, X):
        return self.linear_.predict(X) + self.trees_.predict(X)


def _select(P, target, arm, how: str) -> np.ndarray:
    """Combine the candidates' out-of-fold predictions ``P`` (n, k) by their squared error on
    the arm's rows: ``min`` picks the best (the discrete super learner), ``nnls`` weights them
    by non-negative least squares (the convex super learner; van der Laan, Polley and Hubbard
    2007, Stat. Appl. Genet. Mol. Biol. 6(1))."""
    if how == "min":
        return P[:, np.argmin(((P[arm] - target[arm, None]) ** 2).mean(axis=0))]
    w, _ = nnls(P[arm], target[arm])
    return P @ (w / w.sum()) if w.sum() > 0 else P.mean(axis=1)


def select_variants(setting: int, replication: int, seed: int = 0) -> dict:
    """The ``select`` variants of one data set (module docstring)."""
    X, t, y, folds, fit, out = _setup(setting, replication, seed)
    tr = t == 1
    oof = lambda target, arm, f: E.arm_out_of_fold(X, target, arm, folds, f, seed)
    g0, g1 = fit.m0["y"], fit.m1["y"]
    r0, r1 = oof(y, ~tr, Ridge), oof(y, tr, Ridge)
    out["mse"] = {"g0": float(np.mean((g0 - y)[~tr] ** 2)), "r0": float(np.mean((r0 - y)[~tr] ** 2)),
                  "g1": float(np.mean((g1 - y)[tr] ** 2)), "r1": float(np.mean((r1 - y)[tr] ** 2))}
    owns = {"g": (g0, g1)}
    for how in ("min", "nnls"):
        owns[how] = (_select(np.column_stack([g0, r0]), y, ~tr, how), _select(np.column_stack([g1, r1]), y, tr, how))
    effects = {"t": gbm_tree_regressor, "r": Ridge}
    for o, (m0, m1) in owns.items():
        D1, D0 = y - m0, m1 - y
        T1 = {n: oof(D1, tr, f) for n, f in effects.items()}
        T0 = {n: oof(D0, ~tr, f) for n, f in effects.items()}
        _bracket_row(out, f"{o}_t", y, t, fit.e, m0, m1, T1["t"], T0["t"])
        for how in ("min", "nnls"):
            tau1 = _select(np.column_stack(list(T1.values())), D1, tr, how)
            tau0 = _select(np.column_stack(list(T0.values())), D0, ~tr, how)
            _bracket_row(out, f"{o}_{how}", y, t, fit.e, m0, m1, tau1, tau0)
    return out


def select3_variants(setting: int, replication: int, seed: int = 0) -> dict:
    """``select3``: the discrete selector of the effect models over constant-leaf LightGBM and
    ridge (``min2``, learner ``gbm_x_select``) and over those two and a constant (``min3``:
    the mean imputed effect, for effects that do not vary); ``t`` = the ``gbm_x`` default."""
    from sklearn.dummy import DummyRegressor

    X, t, y, folds, fit, out = _setup(setting, replication, seed)
    tr = t == 1
    m0, m1 = fit.m0["y"], fit.m1["y"]
    cands = (gbm_tree_regressor, Ridge, lambda s: DummyRegressor())
    D1, D0 = y - m0, m1 - y
    P1 = [E.arm_out_of_fold(X, D1, tr, folds, f, seed) for f in cands]
    P0 = [E.arm_out_of_fold(X, D0, ~tr, folds, f, seed) for f in cands]
    for name, k in (("t", 1), ("min2", 2), ("min3", 3)):
        tau1 = _select(np.column_stack(P1[:k]), D1, tr, "min")
        tau0 = _select(np.column_stack(P0[:k]), D0, ~tr, "min")
        _bracket_row(out, name, y, t, fit.e, m0, m1, tau1, tau0)
    return out


def overlap_variants(setting: int, replication: int, seed: int = 0) -> dict:
    """The ``overlap`` estimands of one data set (module docstring), each with its own truth."""
    from causalflow.oci.acic import load_dataset, population_truth
    from causalflow.oci.runner import _kernel

    X, t, y, folds, fit, out = _setup(setting, replication, seed)
    effect = load_dataset(None, setting, replication).unit_effect
    m0, m1, tau1, tau0 = _default_models(X, t, y, folds, fit, seed)
    e = np.clip(fit.e, 1e-3, 1 - 1e-3)
    m0x, m1x = E.x_recombine(e, m0, m1, tau1, tau0)
    alpha = E.crump_alpha(e)
    kept = (e >= alpha) & (e <= 1 - alpha)
    out["alpha"], out["n_trimmed"] = alpha, int((~kept).sum())
    every = np.ones(len(t), bool)
    for name, estimand, stage, rows in (("trim_ATE", "ATE", "aipw_sample", kept),
                                        ("trim_ATT", "ATT", "aipw_sample", kept),
                                        ("ato_ATO", "ATO", "aipw", every)):
        truth = population_truth(estimand, effect, t, e, rows)
        own = _kernel(estimand, stage, y[rows], t[rows], e[rows], rows, m0, m1)
        x = _kernel(estimand, stage, y[rows], t[rows], e[rows], rows, m0x, m1x)
        b = E.bracket(own, x)
        out[name] = [b.estimate, *b.interval(), own.estimate, x.estimate]
        out[f"truth_{name}"] = float(truth)
    return out


def _shifted_holdout(X, D, arm, score, factories, seed, share: float = 0.2):
    """Squared errors and NNLS weights of the factories' models on the ``share`` of the arm's
    rows with the highest ``score``, the models trained on the arm's other rows."""
    idx = np.flatnonzero(arm)
    cut = np.quantile(score[idx], 1 - share)
    hold, train = idx[score[idx] >= cut], idx[score[idx] < cut]
    P = np.column_stack([f(seed).fit(X[train], D[train]).predict(X[hold]) for f in factories])
    w, _ = nnls(P, D[hold])
    return ((P - D[hold, None]) ** 2).mean(axis=0), w / w.sum() if w.sum() > 0 else np.full(len(factories), 0.5)


def _bracket_row(out: dict, name: str, y, t, e, m0, m1, tau1, tau0, clip: float = 1e-3) -> None:
    """The bracket of own and X-learner estimates (aipw_sample) of ATT and ATE into ``out``."""
    from causalflow.oci.runner import _kernel

    e = np.clip(e, clip, 1 - clip)
    m0x, m1x = E.x_recombine(e, m0, m1, tau1, tau0)  # with the clipped propensity (cross_fit: unclipped)
    rows = np.ones(len(t), bool)
    for estimand in ("ATT", "ATE"):
        own = _kernel(estimand, "aipw_sample", y, t, e, rows, m0, m1)
        x = _kernel(estimand, "aipw_sample", y, t, e, rows, m0x, m1x)
        b = E.bracket(own, x)
        out[f"{name}_{estimand}"] = [b.estimate, *b.interval(), own.estimate, x.estimate]


def _setup(setting: int, replication: int, seed: int):
    from causalflow.oci.acic import load_dataset
    from causalflow.oci.runner import encode_covariates

    ds = load_dataset(None, setting, replication)
    X, _, _ = encode_covariates(ds.frame, ds.covariates)
    t = ds.frame["z"].to_numpy(dtype=float)
    y = ds.frame["y"].to_numpy(dtype=float)
    folds = E.make_folds(t, 5, seed)
    fit = E.cross_fit(X, t, {"y": y}, folds, gbm_classifier, gbm_linear_tree_regressor, seed)
    out = {"s": setting, "r": replication, "satt": ds.truth["satt"], "sate": ds.truth["sate"]}
    return X, t, y, folds, fit, out


def effect_variants(setting: int, replication: int, seed: int = 0) -> dict:
    """The ``effect`` variants of one data set (module docstring)."""
    X, t, y, folds, fit, out = _setup(setting, replication, seed)
    tr = t == 1
    own = {"g": (fit.m0["y"], fit.m1["y"]),
           "lb": (E.arm_out_of_fold(X, y, ~tr, folds, LinearPlusTrees, seed),
                  E.arm_out_of_fold(X, y, tr, folds, LinearPlusTrees, seed))}
    factories = {"t": gbm_tree_regressor, "lb": LinearPlusTrees}
    for o, (m0, m1) in own.items():
        D1, D0 = y - m0, m1 - y
        taus = {n: (E.arm_out_of_fold(X, D1, tr, folds, f, seed), E.arm_out_of_fold(X, D0, ~tr, folds, f, seed))
                for n, f in factories.items()}
        for n, (tau1, tau0) in taus.items():
            _bracket_row(out, f"{o}_{n}", y, t, fit.e, m0, m1, tau1, tau0)
        if o != "g":
            continue
        fs = tuple(factories.values())
        mse1, w1 = _shifted_holdout(X, D1, tr, -fit.e, fs, seed)   # treated most like controls
        mse0, w0 = _shifted_holdout(X, D0, ~tr, fit.e, fs, seed)   # controls most like treated
        T1 = np.column_stack([taus[n][0] for n in factories])
        T0 = np.column_stack([taus[n][1] for n in factories])
        _bracket_row(out, "g_sel", y, t, fit.e, m0, m1, T1[:, np.argmin(mse1)], T0[:, np.argmin(mse0)])
        _bracket_row(out, "g_nn", y, t, fit.e, m0, m1, T1 @ w1, T0 @ w0)
    return out


def _platt(e, t, folds) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    ec = np.clip(e, 1e-4, 1 - 1e-4)
    z = np.log(ec / (1 - ec))[:, None]
    out = np.empty(len(e))
    for k in np.unique(folds):
        test = folds == k
        m = LogisticRegression(C=1e6, max_iter=1000).fit(z[~test], t[~test].astype(int))
        out[test] = m.predict_proba(z[test])[:, 1]
    return out


def _effect_models(X, t, y, folds, m0, m1, seed):
    """The X-learner's constant-leaf effect models of ``gbm_x`` on outcome predictions m0, m1:
    tau1 (fitted on the treated's ``y - m0``), tau0 (on the controls' ``m1 - y``)."""
    tr = t == 1
    return (E.arm_out_of_fold(X, y - m0, tr, folds, gbm_tree_regressor, seed),
            E.arm_out_of_fold(X, m1 - y, ~tr, folds, gbm_tree_regressor, seed))


def _default_models(X, t, y, folds, fit, seed):
    """The ``gbm_x`` outcome predictions and constant-leaf effect models: m0, m1, tau1, tau0."""
    m0, m1 = fit.m0["y"], fit.m1["y"]
    return (m0, m1, *_effect_models(X, t, y, folds, m0, m1, seed))


def propensity_variants(setting: int, replication: int, seed: int = 0) -> dict:
    """The ``propensity`` variants of one data set (module docstring)."""
    X, t, y, folds, fit, out = _setup(setting, replication, seed)
    m0, m1, tau1, tau0 = _default_models(X, t, y, folds, fit, seed)
    tuned = np.empty(len(t))
    for k in np.unique(folds):
        test = folds == k
        tuned[test] = tuned_gbm_classifier(seed).fit(X[~test], t[~test].astype(int)).predict_proba(X[test])[:, 1]
    for name, e in (("base", fit.e), ("platt", _platt(fit.e, t, folds)), ("tuned", tuned),
                    ("tuned_platt", _platt(tuned, t, folds))):
        _bracket_row(out, name, y, t, e, m0, m1, tau1, tau0)
    return out


def clip_variants(setting: int, replication: int, seed: int = 0) -> dict:
    """The ``clip`` variants of one data set (module docstring)."""
    X, t, y, folds, fit, out = _setup(setting, replication, seed)
    m0, m1, tau1, tau0 = _default_models(X, t, y, folds, fit, seed)
    for clip in (1e-3, 1e-2, 2.5e-2, 5e-2):
        _bracket_row(out, f"clip{clip:g}", y, t, fit.e, m0, m1, tau1, tau0, clip=clip)
    return out


def _entropy_balance(Xc, target, delta: float = 0.0, maxiter: int = 500) -> np.ndarray:
    """Control weights ``w ~ exp(Xc lam)`` (sum 1) by the convex dual
    ``min log sum exp(Xc lam) - lam @ target + delta / 2 |lam|^2`` (L-BFGS). ``delta = 0``:
    exact balance ``w @ Xc = target`` (Hainmueller 2012; with limited overlap there may be no
    solution, and the weights then pile onto few units); ``delta > 0``: the weighted means miss
    the target by ``-delta lam``, a bounded imbalance (the dual view of approximate balancing
    weights, Zubizarreta 2015, JASA 110(511); Wang and Zubizarreta 2020, Biometrika 107(1))."""
    from scipy.optimize import minimize

    def dual(lam):
        a = Xc @ lam
        w = np.exp(a - a.max())
        return (a.max() + np.log(w.sum()) - lam @ target + 0.5 * delta * lam @ lam,
                (w / w.sum()) @ Xc - target + delta * lam)

    lam = minimize(dual, np.zeros(Xc.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": maxiter}).x
    w = np.exp(Xc @ lam - (Xc @ lam).max())
    return w / w.sum()


def _att_weight_variants(setting: int, replication: int, seed: int, variants) -> dict:
    """The augmented ATT (bracket, sample variance) with the Hajek propensity odds (``base``)
    and with each variant's control weights: ``variants`` maps a name to a function
    ``(Z, Zp, treated) -> weights of the controls``, ``Z`` the standardised covariate columns
    and ``Zp`` the same with the standardised propensity logit."""
    from causalflow.oci.sample_estimands import att_sample

    X, t, y, folds, fit, out = _setup(setting, replication, seed)
    tr = t == 1
    e = np.clip(fit.e, 1e-3, 1 - 1e-3)
    m0, m1, tau1, tau0 = _default_models(X, t, y, folds, fit, seed)
    m0x, _ = E.x_recombine(e, m0, m1, tau1, tau0)
    keep = X.std(axis=0) > 0
    Z = (X[:, keep] - X[:, keep].mean(axis=0)) / X[:, keep].std(axis=0)
    logit = np.log(e / (1 - e))
    Zp = np.column_stack([Z, (logit - logit.mean()) / logit.std()])
    for name, weigh in (("base", None), *variants.items()):
        odds = e.copy()
        if weigh is not None:  # att_sample weighs controls by e / (1 - e): pass the weights as odds
            w = weigh(Z, Zp, tr)
            odds[~tr] = w / (1 + w)
            out[f"ess_{name}"] = float(1 / (w @ w))
        own, x = att_sample(y, t, odds, m0), att_sample(y, t, odds, m0x)
        b = E.bracket(own, x)
        out[f"{name}_ATT"] = [b.estimate, *b.interval(), own.estimate, x.estimate]
    return out


def rebalance_variants(setting: int, replication: int, seed: int = 0) -> dict:
    """``rebalance`` (ATT only): approximate entropy-balancing control weights
    (``_entropy_balance`` with ``delta`` = 0.01, 0.1, 1, on the standardised covariates and the
    propensity logit) instead of the Hajek propensity odds (``base``)."""
    def approx(delta):
        return lambda Z, Zp, tr: _entropy_balance(Zp[~tr], Zp[tr].mean(axis=0), delta, maxiter=1000)

    return _att_weight_variants(setting, replication, seed,
                                {f"rebal{d:g}": approx(d) for d in (0.01, 0.1, 1.0)})


def balance_variants(setting: int, replication: int, seed: int = 0) -> dict:
    """The ``balance`` variants of one data set (module docstring)."""
    return _att_weight_variants(setting, replication, seed, {
        "ebal": lambda Z, Zp, tr: _entropy_balance(Z[~tr], Z[tr].mean(axis=0)),
        "ebal_ps": lambda Z, Zp, tr: _entropy_balance(Zp[~tr], Zp[tr].mean(axis=0))})


def bcf_variants(setting: int, replication: int, seed: int = 0, burnin: int = 100,
                 draws: int = 100, mu_trees: int = 250, tau_trees: int = 100) -> dict:
    """The ``bcf`` variants of one data set (module docstring); ``bcf_small``: the same with
    100 prognostic and 50 effect trees, 50 burn-in and 50 kept draws."""
    import time

    from stochtree import BCFModel

    from causalflow.oci.runner import _kernel

    X, t, y, folds, fit, out = _setup(setting, replication, seed)
    m0, m1, tau1, tau0 = _default_models(X, t, y, folds, fit, seed)
    _bracket_row(out, "g_t", y, t, fit.e, m0, m1, tau1, tau0)
    e = np.clip(fit.e, 1e-3, 1 - 1e-3)
    start = time.process_time()
    b = BCFModel()
    b.sample(X_train=X, Z_train=t, y_train=y, propensity_train=e, num_gfr=0, num_burnin=burnin,
             num_mcmc=draws, general_params={"random_seed": seed + 1, "num_threads": 1},
             prognostic_forest_params={"num_trees": mu_trees},
             treatment_effect_forest_params={"num_trees": tau_trees})
    out["bcf_cpu"] = time.process_time() - start
    mu, tau = np.asarray(b.mu_hat_train), np.asarray(b.tau_hat_train)   # n x draws
    every = np.ones(len(t), bool)
    for estimand, rows in (("ATT", t == 1), ("ATE", every)):
        d = tau[rows].mean(axis=0)
        out[f"bcfpost_{estimand}"] = [float(d.mean()), *np.quantile(d, [0.025, 0.975])]
    b0, b1 = mu.mean(axis=1), (mu + tau).mean(axis=1)
    for estimand in ("ATT", "ATE"):
        k = _kernel(estimand, "aipw_sample", y, t, e, every, b0, b1)
        out[f"bcfaipw_{estimand}"] = [k.estimate, *k.interval()]
    a0, a1 = (m0 + b0) / 2, (m1 + b1) / 2
    _bracket_row(out, "avg", y, t, fit.e, a0, a1, *_effect_models(X, t, y, folds, a0, a1, seed))
    return out


def analyse(records: list[dict]) -> pd.DataFrame:
    """RMSE, MAE, coverage and length per variant and estimand, and the per-replication RMSE."""
    rows = []
    for o in records:
        for key, v in o.items():
            if isinstance(v, list):
                variant, estimand = key.rsplit("_", 1)
                truth = o.get(f"truth_{key}", o["satt"] if estimand == "ATT" else o["sate"])
                rows.append(dict(estimand=estimand, variant=variant, r=o["r"], err=v[0] - truth,
                                 covered=v[1] <= truth <= v[2], length=v[2] - v[1]))
    d = pd.DataFrame(rows)
    g = d.groupby(["estimand", "variant"])
    table = pd.DataFrame({"rmse": g.err.apply(lambda x: np.sqrt(np.mean(x**2))),
                          "mae": g.err.apply(lambda x: x.abs().mean()),
                          "cover": g.covered.mean(), "length": g.length.mean()})
    by_rep = d.groupby(["estimand", "variant", "r"]).err.apply(lambda x: np.sqrt(np.mean(x**2))).unstack()
    by_rep.columns = [f"rmse_rep{c}" for c in by_rep.columns]
    return table.join(by_rep)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["effect", "propensity", "clip", "balance", "select", "select3", "overlap",
                                    "rebalance", "bcf", "bcf_small", "analyse"])
    p.add_argument("files", nargs="*", help="for analyse: the saved JSON files")
    p.add_argument("--pairs", nargs="*", default=None, help="setting:replication pairs (default all 231)")
    p.add_argument("--save", default=None)
    p.add_argument("--n-jobs", type=int, default=2)
    a = p.parse_args(argv)
    if a.what == "analyse":
        records = [r for f in a.files for r in json.loads(Path(f).read_text())]
        print(f"{len(records)} data sets")
        print(analyse(records).round(4).to_string())
        return 0
    from threadpoolctl import threadpool_limits

    from causalflow.oci.acic import list_datasets

    pairs = [tuple(int(v) for v in s.split(":")) for s in a.pairs] if a.pairs else list_datasets(None)
    fn = {"effect": effect_variants, "propensity": propensity_variants, "clip": clip_variants,
          "balance": balance_variants, "select": select_variants, "select3": select3_variants,
          "rebalance": rebalance_variants,
          "overlap": overlap_variants, "bcf": bcf_variants,
          "bcf_small": functools.partial(bcf_variants, burnin=50, draws=50, mu_trees=100, tau_trees=50)}[a.what]

    def run(s, r):
        with threadpool_limits(1):
            return fn(s, r)

    records = Parallel(n_jobs=a.n_jobs)(delayed(run)(s, r) for s, r in pairs)
    if a.save:
        with open(a.save, "w") as f:
            json.dump(records, f, default=float)
    print(analyse(records).round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
