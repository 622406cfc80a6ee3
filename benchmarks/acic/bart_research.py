"""Round 4: BART (stochtree) outcome models on the propensity, against the registry learner.

    python -m benchmarks.acic.bart_research --pairs 1:1 76:3 ... [--trees 50 --mcmc 100]

Per data set: the runner's LightGBM cross-fit (config B = ``gbm_linear_tree``) and one
BART fit on all rows of ``[X, logit e, z]`` (an S-learner, the propensity being the
out-of-fold LightGBM propensity: the recipe of the competition's ``bart_on_pscore``).
Prints SATT / SATE RMSE and coverage of: B (AIPW, IF SE), BART plug-in (posterior mean and
2.5 / 97.5% quantiles of mean_T(y - f(x, 0)) and mean(f(x,1) - f(x,0))), AIPW with the BART
predictions, and AIPW with the average of the two outcome predictions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from benchmarks.acic.data import load_dataset
from causalflow.oci import estimators as E
from causalflow.oci.gbm_learners import gbm_classifier, gbm_linear_tree_regressor


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", nargs="*", default=None, help="setting:replication pairs")
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--save", default=None)


def _pairs(a, default):
    return [tuple(int(v) for v in s.split(":")) for s in a.pairs] if a.pairs else default


def _aipw_pair(name, y, z, e, m0, m1) -> dict:
    """The runner's AIPW ATT and ATE (estimate, IF SE) from outcome predictions m0, m1."""
    att, ate = E.aipw_att(y, z, e, m0, m1), E.aipw_ate(y, z, e, m0, m1)
    return {f"{name}_att": att.estimate, f"{name}_att_se": att.std_error,
            f"{name}_ate": ate.estimate, f"{name}_ate_se": ate.std_error}


def bart_s_learner(X, z, y, e, trees, gfr, mcmc, seed=1, feature="logit"):
    from stochtree import BARTModel

    ec = np.clip(e, 1e-3, 1 - 1e-3)
    f = np.log(ec / (1 - ec)) if feature == "logit" else ec
    cols = [X] if feature == "none" else [X, f]
    F = np.column_stack(cols + [z])
    F1 = np.column_stack(cols + [np.ones_like(z)])
    F0 = np.column_stack(cols + [np.zeros_like(z)])
    b = BARTModel()
    b.sample(X_train=F, y_train=y, X_test=np.vstack([F1, F0]), num_gfr=gfr, num_burnin=0,
             num_mcmc=mcmc, general_params=dict(random_seed=seed, num_threads=1),
             mean_forest_params=dict(num_trees=trees))
    p = np.asarray(b.y_hat_test)
    n = len(y)
    return p[:n], p[n:]            # draws of f(x, 1), f(x, 0): n x draws


def bart_t_learner(X, z, y, e, trees, burn, mcmc, seed=1, feature="logit", m1_feature=False):
    """BART per arm by MCMC (no warm start): f0 on controls, f1 on treated; predictions at all rows."""
    from stochtree import BARTModel

    ec = np.clip(e, 1e-3, 1 - 1e-3)
    f = np.log(ec / (1 - ec))
    out = []
    for arm in (0, 1):
        F = np.column_stack([X, f]) if (feature == "logit" and (arm == 0 or m1_feature)) else X
        rows = z == arm
        b = BARTModel()
        b.sample(X_train=F[rows], y_train=y[rows], X_test=F, num_gfr=0, num_burnin=burn,
                 num_mcmc=mcmc, general_params=dict(random_seed=seed, num_threads=1),
                 mean_forest_params=dict(num_trees=trees))
        out.append(np.asarray(b.y_hat_test))
    return out[1], out[0]


def one(setting, rep, trees, gfr, mcmc, feature, kind="t"):
    ds = load_dataset(setting, rep)
    z, y = ds.z, ds.y
    zf = z.astype(float)
    c0 = time.process_time()
    folds = E.make_folds(z, 5, 0)
    fit = E.cross_fit(ds.X, z, {"y": y}, folds, gbm_classifier, gbm_linear_tree_regressor, 0)
    c1 = time.process_time()
    e = np.clip(fit.e, 1e-3, 1 - 1e-3)
    if kind == "s":
        f1, f0 = bart_s_learner(ds.X, zf, y, fit.e, trees, gfr, mcmc, feature=feature)
    else:
        f1, f0 = bart_t_learner(ds.X, z, y, fit.e, trees, gfr, mcmc, feature=feature)
    c2 = time.process_time()
    t = z == 1
    out = dict(setting=setting, rep=rep, satt=ds.satt, sate=ds.sate, cpu_gbm=c1 - c0, cpu_bart=c2 - c1)
    m0b, m1b = fit.m0["y"], fit.m1["y"]
    m0p, m1p = f0.mean(1), f1.mean(1)
    for name, m0, m1 in (("B", m0b, m1b), ("bart_aipw", m0p, m1p),
                         ("avg", (m0b + m0p) / 2, (m1b + m1p) / 2)):
        out |= _aipw_pair(name, y, z, e, m0, m1)
    # plug-in posterior: SATT uses the observed treated outcomes
    satt_d = (y[t][:, None] - f0[t]).mean(0)
    sate_d = np.where(t[:, None], y[:, None] - f0, f1 - y[:, None]).mean(0)
    for name, d in (("plug_att", satt_d), ("plug_ate", sate_d)):
        lo, hi = np.quantile(d, [0.025, 0.975])
        out |= {name: d.mean(), f"{name}_lo": lo, f"{name}_hi": hi}
    return out


def summarise(df):
    q = 1.959964
    res = {"n": len(df), "cpu_gbm": df.cpu_gbm.mean(), "cpu_bart": df.cpu_bart.mean()}
    for est, truth in (("att", "satt"), ("ate", "sate")):
        for name in ("B", "bart_aipw", "avg"):
            err = df[f"{name}_{est}"] - df[truth]
            res[f"{name}_{est}_rmse"] = np.sqrt(np.mean(err ** 2))
            res[f"{name}_{est}_cov"] = np.mean(np.abs(err) <= q * df[f"{name}_{est}_se"])
        p = f"plug_{est}"
        err = df[p] - df[truth]
        res[f"{p}_rmse"] = np.sqrt(np.mean(err ** 2))
        res[f"{p}_cov"] = np.mean((df[f"{p}_lo"] <= df[truth]) & (df[truth] <= df[f"{p}_hi"]))
        res[f"{p}_len"] = np.mean(df[f"{p}_hi"] - df[f"{p}_lo"])
    return res


def main(argv=None):
    p = argparse.ArgumentParser()
    _common_args(p)
    p.add_argument("--trees", type=int, default=50)
    p.add_argument("--gfr", type=int, default=10)
    p.add_argument("--mcmc", type=int, default=100)
    p.add_argument("--feature", default="logit", choices=["logit", "raw", "none"])
    p.add_argument("--kind", default="t", choices=["s", "t"],
                   help="S-learner (GFR) or T-learner (MCMC, --gfr = burn-in)")
    a = p.parse_args(argv)
    pairs = _pairs(a, [(s, 1) for s in range(1, 78, 3)])
    res = Parallel(n_jobs=a.n_jobs)(delayed(one)(s, r, a.trees, a.gfr, a.mcmc, a.feature, a.kind) for s, r in pairs)
    df = pd.DataFrame(res)
    if a.save:
        df.to_csv(a.save, index=False)
    print(pd.Series(summarise(df)).round(4).to_string())


if __name__ == "__main__":
    main()


class _Bart:
    """Minimal regressor around stochtree's BARTModel (posterior mean prediction)."""

    def __init__(self, trees=100, burn=50, mcmc=50, seed=1):
        self.trees, self.burn, self.mcmc, self.seed = trees, burn, mcmc, seed

    def fit(self, X, y):
        from stochtree import BARTModel

        self.model_ = BARTModel()
        self.model_.sample(X_train=np.asarray(X, float), y_train=np.asarray(y, float), num_gfr=0,
                           num_burnin=self.burn, num_mcmc=self.mcmc,
                           general_params=dict(random_seed=self.seed, num_threads=1),
                           mean_forest_params=dict(num_trees=self.trees))
        return self

    def predict(self, X):
        return np.asarray(self.model_.predict(X=np.asarray(X, float), terms="y_hat")).mean(axis=1)


class _Avg:
    def __init__(self, *models):
        self.models = models

    def fit(self, X, y):
        for m in self.models:
            m.fit(X, y)
        return self

    def predict(self, X):
        return np.mean([m.predict(X) for m in self.models], axis=0)


def one_cf(setting, rep, trees, burn, mcmc):
    """Cross-fitted (5 folds, per arm) BART and the LightGBM / BART average, as the runner would."""
    ds = load_dataset(setting, rep)
    z, y = ds.z, ds.y
    folds = E.make_folds(z, 5, 0)
    c0 = time.process_time()
    fit = E.cross_fit(ds.X, z, {"y": y}, folds, gbm_classifier, gbm_linear_tree_regressor, 0)
    c1 = time.process_time()
    bfit = E.cross_fit(ds.X, z, {"y": y}, folds, gbm_classifier, lambda s: _Bart(trees, burn, mcmc, s + 1), 0)
    c2 = time.process_time()
    e = np.clip(fit.e, 1e-3, 1 - 1e-3)
    out = dict(setting=setting, rep=rep, satt=ds.satt, sate=ds.sate, cpu_gbm=c1 - c0, cpu_bart=c2 - c1)
    m0b, m1b, m0p, m1p = fit.m0["y"], fit.m1["y"], bfit.m0["y"], bfit.m1["y"]
    for name, m0, m1 in (("B", m0b, m1b), ("bart_aipw", m0p, m1p),
                         ("avg", (m0b + m0p) / 2, (m1b + m1p) / 2)):
        out |= _aipw_pair(name, y, z, e, m0, m1)
    return out


def main_cf(argv=None):
    p = argparse.ArgumentParser()
    _common_args(p)
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--burn", type=int, default=50)
    p.add_argument("--mcmc", type=int, default=50)
    a = p.parse_args(argv)
    pairs = _pairs(a, [(s, 1) for s in range(1, 78, 3)])
    df = pd.DataFrame(Parallel(n_jobs=a.n_jobs)(delayed(one_cf)(s, r, a.trees, a.burn, a.mcmc) for s, r in pairs))
    if a.save:
        df.to_csv(a.save, index=False)
    q = 1.959964
    res = {"n": len(df), "cpu_gbm": df.cpu_gbm.mean(), "cpu_bart": df.cpu_bart.mean()}
    for est, truth in (("att", "satt"), ("ate", "sate")):
        for name in ("B", "bart_aipw", "avg"):
            err = df[f"{name}_{est}"] - df[truth]
            res[f"{name}_{est}_rmse"] = np.sqrt(np.mean(err ** 2))
            res[f"{name}_{est}_cov"] = np.mean(np.abs(err) <= q * df[f"{name}_{est}_se"])
    print(pd.Series(res).round(4).to_string())


def one_cf2(setting, rep, trees=200, burn=100, mcmc=100):
    """BART 200 / 100 / 100 cross-fitted on two folds (the runner's folds 0, 2, 4 vs 1, 3)."""
    ds = load_dataset(setting, rep)
    z, y = ds.z, ds.y
    folds = E.make_folds(z, 5, 0)
    c0 = time.process_time()
    fit = E.cross_fit(ds.X, z, {"y": y}, folds, gbm_classifier, gbm_linear_tree_regressor, 0)
    c1 = time.process_time()
    bfit = E.cross_fit(ds.X, z, {"y": y}, folds % 2, gbm_classifier, lambda s: _Bart(trees, burn, mcmc, s + 1), 0)
    c2 = time.process_time()
    e = np.clip(fit.e, 1e-3, 1 - 1e-3)
    out = dict(setting=setting, rep=rep, satt=ds.satt, sate=ds.sate, cpu_gbm=c1 - c0, cpu_bart=c2 - c1)
    m0b, m1b, m0p, m1p = fit.m0["y"], fit.m1["y"], bfit.m0["y"], bfit.m1["y"]
    for name, m0, m1 in (("B", m0b, m1b), ("bart_aipw", m0p, m1p),
                         ("avg", (m0b + m0p) / 2, (m1b + m1p) / 2)):
        out |= _aipw_pair(name, y, z, e, m0, m1)
    return out


def x_adjust(X, z, y, e, m0, m1, folds, reg_factory, seed=0):
    """X-learner-style outcome predictions (Kunzel, Sekhon, Bickel and Yu 2019, PNAS 116).

    tau1 is fitted on the treated to D1 = y - m0(x), tau0 on the controls to D0 = m1(x) - y
    (cross-fitted on ``folds``); then
        m1'(x) = e m1(x) + (1 - e) (m0(x) + tau1(x)),  m0'(x) = (1 - e) m0(x) + e (m1(x) - tau0(x)):
    where an arm has few units, its regression is replaced by the other arm's plus a model
    of the effect, which is extrapolated instead of the arm's own response surface.
    """
    t = z == 1
    tau1, tau0 = np.empty(len(y)), np.empty(len(y))
    for k in np.unique(folds):
        test = folds == k
        for arm, target, d in ((t, tau1, y - m0), (~t, tau0, m1 - y)):
            rows = (~test) & arm
            target[test] = reg_factory(seed).fit(X[rows], d[rows]).predict(X[test])
    m1x = e * m1 + (1 - e) * (m0 + tau1)
    m0x = (1 - e) * m0 + e * (m1 - tau0)
    return m0x, m1x


def one_x(setting, rep):
    """B, the B + BART average, and both with the X-learner adjustment (tau by linear-leaf LightGBM)."""
    from benchmarks.acic.bart_learners import bart_regressor

    ds = load_dataset(setting, rep)
    z, y = ds.z, ds.y
    folds = E.make_folds(z, 5, 0)
    c0 = time.process_time()
    fit = E.cross_fit(ds.X, z, {"y": y}, folds, gbm_classifier, gbm_linear_tree_regressor, 0)
    blend = E.cross_fit(ds.X, z, {"y": y}, folds, gbm_classifier, gbm_linear_tree_regressor, 0,
                        posterior_factory=bart_regressor)
    c1 = time.process_time()
    e = np.clip(fit.e, 1e-3, 1 - 1e-3)
    out = dict(setting=setting, rep=rep, satt=ds.satt, sate=ds.sate)
    for name, f in (("B", fit), ("avg", blend)):
        m0, m1 = f.m0["y"], f.m1["y"]
        c = time.process_time()
        m0x, m1x = x_adjust(ds.X, z, y, e, m0, m1, folds, gbm_linear_tree_regressor)
        out["cpu_x"] = time.process_time() - c
        for nm, a0, a1 in ((name, m0, m1), (name + "_x", m0x, m1x)):
            out |= _aipw_pair(nm, y, z, e, a0, a1)
    out["cpu_fits"] = c1 - c0
    return out


def main_x(argv=None):
    p = argparse.ArgumentParser()
    _common_args(p)
    a = p.parse_args(argv)
    pairs = _pairs(a, [(s, 1) for s in range(1, 78, 3)])
    df = pd.DataFrame(Parallel(n_jobs=a.n_jobs)(delayed(one_x)(s, r) for s, r in pairs))
    if a.save:
        df.to_csv(a.save, index=False)
    q = 1.959964
    res = {"n": len(df), "cpu_x": df.cpu_x.mean()}
    for est, truth in (("att", "satt"), ("ate", "sate")):
        for name in ("B", "B_x", "avg", "avg_x"):
            err = df[f"{name}_{est}"] - df[truth]
            res[f"{name}_{est}_rmse"] = np.sqrt(np.mean(err ** 2))
            res[f"{name}_{est}_cov"] = np.mean(np.abs(err) <= q * df[f"{name}_{est}_se"])
    print(pd.Series(res).round(4).to_string())


def _lgbm_trees(seed):
    """LightGBM with constant leaves (no linear extrapolation), 300 x 0.08 x 15 leaves."""
    from lightgbm import LGBMRegressor

    return LGBMRegressor(n_estimators=300, learning_rate=0.08, num_leaves=15, subsample=0.8, subsample_freq=1,
                         colsample_bytree=0.8, n_jobs=1, deterministic=True, force_row_wise=True,
                         verbose=-1, random_state=seed)


def one_v(setting, rep):
    """Round 6 variants on one data set: B, the BART blend, and X-learners whose effect model
    is linear-leaf LightGBM (as integrated) or constant-leaf LightGBM (flat extrapolation)."""
    from benchmarks.acic.bart_learners import bart_regressor

    ds = load_dataset(setting, rep)
    z, y = ds.z, ds.y
    folds = E.make_folds(z, 5, 0)
    fit = E.cross_fit(ds.X, z, {"y": y}, folds, gbm_classifier, gbm_linear_tree_regressor, 0)
    blend = E.cross_fit(ds.X, z, {"y": y}, folds, gbm_classifier, gbm_linear_tree_regressor, 0,
                        posterior_factory=bart_regressor)
    e = np.clip(fit.e, 1e-3, 1 - 1e-3)
    out = dict(setting=setting, rep=rep, satt=ds.satt, sate=ds.sate)
    variants = {"B": (fit.m0["y"], fit.m1["y"]), "avg": (blend.m0["y"], blend.m1["y"])}
    for base in ("B", "avg"):
        m0, m1 = variants[base]
        variants[base + "_xlin"] = x_adjust(ds.X, z, y, fit.e, m0, m1, folds, gbm_linear_tree_regressor)
        variants[base + "_xtree"] = x_adjust(ds.X, z, y, fit.e, m0, m1, folds, _lgbm_trees)
    for nm, (a0, a1) in variants.items():
        out |= _aipw_pair(nm, y, z, e, a0, a1)
    return out


def main_v(argv=None):
    p = argparse.ArgumentParser()
    _common_args(p)
    p.add_argument("--rep", type=int, default=2)
    a = p.parse_args(argv)
    pairs = _pairs(a, [(s, a.rep) for s in range(1, 78)])
    df = pd.DataFrame(Parallel(n_jobs=a.n_jobs)(delayed(one_v)(s, r) for s, r in pairs))
    if a.save:
        df.to_csv(a.save, index=False)
    q = 1.959964
    rows = []
    for name in ("B", "B_xlin", "B_xtree", "avg", "avg_xlin", "avg_xtree"):
        r = {"variant": name}
        for est, truth in (("att", "satt"), ("ate", "sate")):
            err = df[f"{name}_{est}"] - df[truth]
            r[f"{est}_rmse"] = np.sqrt(np.mean(err ** 2))
            r[f"{est}_mae"] = np.mean(np.abs(err))
            r[f"{est}_cov"] = np.mean(np.abs(err) <= q * df[f"{name}_{est}_se"])
        rows.append(r)
    print(pd.DataFrame(rows).round(4).to_string(index=False))
