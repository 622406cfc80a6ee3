"""Compare learner configurations through the OCI runner's own cross-fitting and AIPW kernels.

    python -m benchmarks.acic.runner_research --config A --settings 1 4 7 ... --reps 1

Prints SATT / SATE RMSE, coverage (influence-function SE as the runner reports it, and
the sample-variance SE of ``benchmarks.acic.estimators``) and CPU seconds per data set.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from lightgbm import LGBMClassifier, LGBMRegressor

from benchmarks.acic.data import load_dataset
from benchmarks.acic.estimators import ate_aipw, att_aipw
from causalflow.oci import estimators as E

_OPTS = dict(subsample=0.8, subsample_freq=1, colsample_bytree=0.8, n_jobs=1, verbose=-1)


def _clf(n=300, lr=0.05, leaves=15):
    return lambda s: LGBMClassifier(n_estimators=n, learning_rate=lr, num_leaves=leaves,
                                    random_state=s, **_OPTS)


def _reg(n=500, lr=0.05, leaves=15, linear_tree=True):
    return lambda s: LGBMRegressor(n_estimators=n, learning_rate=lr, num_leaves=leaves,
                                   linear_tree=linear_tree, random_state=s, **_OPTS)


CONFIGS = {
    "A": dict(clf=_clf(), reg=_reg(), folds=5),
    "B": dict(clf=_clf(200, 0.08), reg=_reg(300, 0.08), folds=5),
    "C": dict(clf=_clf(), reg=_reg(linear_tree=False), folds=5),
    "D": dict(clf=_clf(), reg=_reg(), folds=3),
    "E": dict(clf=_clf(), reg=_reg(800, 0.03, 7), folds=5),
    "F": dict(clf=_clf(500, 0.03, 7), reg=_reg(300, 0.08), folds=5),
    "G": dict(clf=_clf(100, 0.08), reg=_reg(300, 0.08), folds=5),
    "H": dict(clf=_clf(200, 0.08), reg=_reg(1000, 0.03, 31), folds=5),
    "I": dict(clf=_clf(200, 0.08), reg=_reg(300, 0.08), folds=10),
    # B with the out-of-fold propensity logit as an extra outcome feature (cf. bart_on_pscore)
    "P": dict(clf=_clf(200, 0.08), reg=_reg(300, 0.08), folds=5, pscore_feature=True),
    # P as integrated in the runner: one propensity cross-fit, its out-of-fold logit fed to the
    # outcome models of the same folds (cross_fit(outcome_features="covariates+propensity"))
    "Q": dict(clf=_clf(200, 0.08), reg=_reg(300, 0.08), folds=5, outcome_features="covariates+propensity"),
    # P with the propensity itself (bounded in [0, 1]) instead of its logit: linear leaves
    # extrapolate a logit feature far outside the other arm's range
    # Q for the control outcome model only (m0, all the ATT needs); m1 from covariates alone
    "Q0": dict(clf=_clf(200, 0.08), reg=_reg(300, 0.08), folds=5, ps_m0_only=True),
    # Q with the feature clamped, per arm and fold, to the range of the arm's training rows
    # (no linear-leaf extrapolation in the propensity)
    "QC": dict(clf=_clf(200, 0.08), reg=_reg(300, 0.08), folds=5, ps_clamped=True),
    "R": dict(clf=_clf(200, 0.08), reg=_reg(300, 0.08), folds=5, pscore_feature="raw"),
}


def one(setting: int, rep: int, config: str, seed: int = 0) -> dict:
    cfg = CONFIGS[config]
    ds = load_dataset(setting, rep)
    z, y = ds.z, ds.y
    c0 = time.process_time()
    folds = E.make_folds(z, cfg["folds"], seed)
    fit = E.cross_fit(ds.X, z, {"y": y}, folds, cfg["clf"], cfg["reg"], seed,
                      outcome_features=cfg.get("outcome_features", "covariates"))
    if cfg.get("ps_m0_only"):
        q = E.cross_fit(ds.X, z, {"y": y}, folds, cfg["clf"], cfg["reg"], seed,
                        outcome_features="covariates+propensity")
        fit = E.CrossFit(fit.e, q.m0, fit.m1, folds)
    if cfg.get("ps_clamped"):
        ec = np.clip(fit.e, 1e-3, 1 - 1e-3)
        zf = np.log(ec / (1 - ec))
        m0, m1 = np.empty(len(z)), np.empty(len(z))
        for k in np.unique(folds):
            test = folds == k
            for arm, target in ((1, m1), (0, m0)):
                rows = (~test) & (z == arm)
                lo, hi = zf[rows].min(), zf[rows].max()
                reg = cfg["reg"](seed).fit(np.column_stack([ds.X[rows], zf[rows]]), y[rows])
                target[test] = reg.predict(np.column_stack([ds.X[test], np.clip(zf[test], lo, hi)]))
        fit = E.CrossFit(fit.e, {"y": m0}, {"y": m1}, folds)
    if cfg.get("pscore_feature"):
        ec = np.clip(fit.e, 1e-3, 1 - 1e-3)
        Xp = np.column_stack([ds.X, ec if cfg["pscore_feature"] == "raw" else np.log(ec / (1 - ec))])
        refit = E.cross_fit(Xp, z, {"y": y}, folds, cfg["clf"], cfg["reg"], seed)
        fit = E.CrossFit(fit.e, refit.m0, refit.m1, folds)
    cpu = time.process_time() - c0
    e = np.clip(fit.e, 1e-3, 1 - 1e-3)
    m0, m1 = fit.m0["y"], fit.m1["y"]
    att = E.aipw_att(y, z, e, m0, m1)
    ate = E.aipw_ate(y, z, e, m0, m1)
    satt_s = att_aipw(y, z, m0, e, variance="sample")
    sate_s = ate_aipw(y, z, m0, m1, e, variance="sample")
    return dict(setting=setting, rep=rep, satt=ds.satt, sate=ds.sate, cpu=cpu,
                att=att.estimate, att_se=att.std_error, att_h=satt_s.estimate, att_se_s=satt_s.std_error,
                ate=ate.estimate, ate_se=ate.std_error, ate_h=sate_s.estimate, ate_se_s=sate_s.std_error)


def summarise(df: pd.DataFrame) -> dict:
    q = 1.959964
    out = {"n": len(df), "cpu_s": df.cpu.mean()}
    for est, se, truth, name in [("att", "att_se", "satt", "SATT_if"),
                                 ("att_h", "att_se_s", "satt", "SATT_hajek_sample"),
                                 ("ate", "ate_se", "sate", "SATE_if"),
                                 ("ate_h", "ate_se_s", "sate", "SATE_hajek_sample")]:
        err = df[est] - df[truth]
        out[f"{name}_rmse"] = float(np.sqrt(np.mean(err ** 2)))
        out[f"{name}_cov"] = float(np.mean(np.abs(err) <= q * df[se]))
        out[f"{name}_len"] = float(np.mean(2 * q * df[se]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", nargs="+", default=["A"])
    p.add_argument("--settings", type=int, nargs="*", default=list(range(1, 78, 3)))
    p.add_argument("--reps", type=int, nargs="*", default=[1])
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--save", default=None)
    p.add_argument("--pairs", nargs="*", default=None, help="setting:rep pairs")
    a = p.parse_args(argv)
    rows = []
    for cfg in a.config:
        pairs = ([tuple(int(v) for v in p_.split(":")) for p_ in a.pairs] if a.pairs
                 else [(s, r) for s in a.settings for r in a.reps])
        res = Parallel(n_jobs=a.n_jobs)(delayed(one)(s, r, cfg) for s, r in pairs)
        df = pd.DataFrame(res)
        if a.save:
            df.to_csv(f"{a.save}_{cfg}.csv", index=False)
        rows.append({"config": cfg, **summarise(df)})
        errors = df.assign(err=df.att_h - df.satt, err_ate=df.ate_h - df.sate)
        print(errors[["setting", "rep", "err", "att_se_s", "err_ate"]].round(3).T.to_string())
        print(pd.DataFrame(rows).round(4).T.to_string(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
