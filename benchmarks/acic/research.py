"""Research driver: cross-fitted base-learner predictions per data set, saved for analysis.

    python -m benchmarks.acic.research predict --out /tmp/acic_research --reps 1 --folds 5
    python -m benchmarks.acic.research analyse --out /tmp/acic_research

``predict`` stores, per data set, the out-of-fold predictions of every base learner for
mu0, mu1 and the propensity plus the CPU seconds each took (npz, outside the repo).
``analyse`` combines them into stacked estimators and prints the comparison table.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from benchmarks.acic import learners as L
from benchmarks.acic.data import dataset_keys, load_dataset
from benchmarks.acic.estimators import (
    ate_aipw,
    att_aipw,
    crossfit_arm,
    fold_ids,
    nnls_stack,
)

OUTCOME = {
    "ridge": L.ridge_regressor(),
    "spline": L.spline_ridge(),
    "lgbm": L.lgbm_regressor(),
    "lgbm_lin": L.lgbm_regressor(linear_tree=True),
}
PROPENSITY = {
    "logit": L.logistic_classifier(),
    "lgbmc": L.lgbm_classifier(),
}


def predict_one(setting: int, rep: int, out: Path, data: str | None, n_folds: int, seed: int,
                outcome: list[str], propensity: list[str]) -> None:
    ds = load_dataset(setting, rep, data)
    path = out / f"{ds.key}.npz"
    have = dict(np.load(path)) if path.exists() else {}
    X, z, y = ds.X, ds.z, ds.y
    folds = fold_ids(X.shape[0], z, n_folds, seed)
    t = z == 1
    res = dict(have)
    for name in outcome:
        if f"mu0_{name}" in res:
            continue
        c0 = time.process_time()
        res[f"mu0_{name}"] = crossfit_arm(X, y, ~t, folds, [OUTCOME[name]], seed)[0]
        c1 = time.process_time()
        res[f"mu1_{name}"] = crossfit_arm(X, y, t, folds, [OUTCOME[name]], seed + 1000)[0]
        res[f"cpu0_{name}"] = np.array(c1 - c0)
        res[f"cpu1_{name}"] = np.array(time.process_time() - c1)
    for name in propensity:
        if f"e_{name}" in res:
            continue
        c0 = time.process_time()
        e = np.zeros(X.shape[0])
        for k in range(n_folds):
            e[folds == k] = PROPENSITY[name](X[folds != k], z[folds != k], X[folds == k], seed + k)
        res[f"e_{name}"] = e
        res[f"cpu_e_{name}"] = np.array(time.process_time() - c0)
    res.update(z=z, y=y, truth=np.array([ds.satt, ds.sate, ds.mu_att, ds.mu_ate]),
               setting=np.array(setting), rep=np.array(rep))
    tmp = out / f".{ds.key}.tmp.npz"
    np.savez(tmp, **res)
    tmp.replace(path)


def _metrics(est: np.ndarray, lo: np.ndarray, hi: np.ndarray, truth: np.ndarray) -> dict:
    err = est - truth
    return dict(rmse=float(np.sqrt(np.mean(err ** 2))), bias=float(err.mean()),
                cover=float(np.mean((lo <= truth) & (truth <= hi))), length=float(np.mean(hi - lo)))


def stacked(d: dict, arm: str, names: tuple[str, ...]) -> np.ndarray:
    P = np.column_stack([d[f"{arm}_{n}"] for n in names])
    own = (d["z"] == 0) if arm == "mu0" else (d["z"] == 1)
    return P @ nnls_stack(P[own], d["y"][own])


def evaluate(dsets: list[dict], outcome: tuple[str, ...], prop: tuple[str, ...], *,
             correction: bool, variance: str, sigma: str = "weighted", clip: float = 1e-3) -> dict:
    rows = {"att": [], "ate": []}
    cpu = 0.0
    for d in dsets:
        mu0 = stacked(d, "mu0", outcome)
        mu1 = stacked(d, "mu1", outcome)
        e = np.mean([d[f"e_{p}"] for p in prop], axis=0) if prop else np.full(d["y"].size, 0.5)
        a = att_aipw(d["y"], d["z"], mu0, e, variance=variance, sigma=sigma,
                     correction=correction, clip=clip)
        b = ate_aipw(d["y"], d["z"], mu0, mu1, e, variance=variance, correction=correction,
                     clip=clip)
        rows["att"].append((a.estimate, a.ci_lower, a.ci_upper, d["truth"][0]))
        rows["ate"].append((b.estimate, b.ci_lower, b.ci_upper, d["truth"][1]))
        cpu += sum(float(d[f"cpu{k}_{n}"]) for n in outcome for k in ("0", "1"))
        cpu += sum(float(d[f"cpu_e_{p}"]) for p in prop) if correction else 0.0
    out = {"outcome": "+".join(outcome), "prop": "+".join(prop) if correction else "-",
           "corr": correction, "var": variance}
    for k, r in rows.items():
        r = np.array(r)
        m = _metrics(r[:, 0], r[:, 1], r[:, 2], r[:, 3])
        out.update({f"{k}_{m_}": v for m_, v in m.items()})
    out["cpu_s"] = cpu / len(dsets)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["predict", "analyse"])
    p.add_argument("--out", default="/tmp/acic_research")
    p.add_argument("--data", default=None)
    p.add_argument("--reps", type=int, nargs="*", default=[1])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--outcome", nargs="*", default=list(OUTCOME))
    p.add_argument("--propensity", nargs="*", default=list(PROPENSITY))
    p.add_argument("--n-jobs", type=int, default=2)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.cmd == "predict":
        keys = [k for k in dataset_keys(a.data) if k[1] in a.reps]
        t0 = time.time()
        Parallel(n_jobs=a.n_jobs)(delayed(predict_one)(s, r, out, a.data, a.folds, a.seed,
                                                       a.outcome, a.propensity) for s, r in keys)
        print(f"{len(keys)} data sets in {time.time() - t0:.0f} s wall")
        return 0
    dsets = [dict(np.load(f)) for f in sorted(out.glob("s*.npz"))]
    names = [n for n in OUTCOME if all(f"mu0_{n}" in d for d in dsets)]
    props = [n for n in PROPENSITY if all(f"e_{n}" in d for d in dsets)]
    rows = []
    for r in range(1, len(names) + 1):
        for combo in itertools.combinations(names, r):
            rows.append(evaluate(dsets, combo, (), correction=False, variance="sample"))
            for pr in [(q,) for q in props] + [tuple(props)]:
                for var in ("sample", "population"):
                    rows.append(evaluate(dsets, combo, pr, correction=True, variance=var))
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_rows", 500)
    print(f"{len(dsets)} data sets")
    print(df.round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
