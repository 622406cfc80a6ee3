"""Simulated observational studies with known truths for the OCI tests (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def expit(z):
    return 1.0 / (1.0 + np.exp(-z))


def good_overlap(n: int = 2000, seed: int = 0):
    """Three confounders, mild selection: e(x) stays inside (0.1, 0.9). Constant effect 2."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    e = expit(0.4 * X[:, 0] - 0.4 * X[:, 1] + 0.2 * X[:, 2])
    t = (rng.random(n) < e).astype(int)
    y = 1 + 2 * t + X[:, 0] + 0.5 * X[:, 1] + 0.5 * X[:, 2] + rng.normal(size=n)
    z = X[:, 0] - X[:, 1] + rng.normal(size=n)  # placebo: depends on confounders only
    df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "x3": X[:, 2], "t": t, "y": y, "z": z})
    return df, {"ATE": 2.0, "ATT": 2.0, "ATO": 2.0}


def poor_overlap(n: int = 2000, seed: int = 0):
    """Strong selection on x1 (e = expit(3 x1)): almost half the units have e outside
    (0.1, 0.9). Heterogeneous effect 1 + x1^2, so ATE (~2) and ATO (~1.25) differ; the
    ATO truth uses the true propensity: sum(h tau) / sum(h), h = e (1 - e)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    e = expit(3.0 * X[:, 0])
    t = (rng.random(n) < e).astype(int)
    tau = 1 + X[:, 0] ** 2
    y = X[:, 0] + X[:, 1] + tau * t + rng.normal(size=n)
    h = e * (1 - e)
    df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "t": t, "y": y})
    return df, {"ATE": float(tau.mean()), "ATO": float((h * tau).sum() / h.sum())}


def omitted_confounder(n: int = 2000, seed: int = 0):
    """u drives treatment, outcome and the placebo outcome z (a pre-treatment outcome);
    the plan lists u only as a low-priority candidate. Constant effect 2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    u = rng.normal(size=n)
    e = expit(0.3 * x + 0.8 * u)
    t = (rng.random(n) < e).astype(int)
    y = 2 * t + x + 1.5 * u + rng.normal(size=n)
    z = u + 0.5 * x + rng.normal(size=n)
    return pd.DataFrame({"x": x, "u": u, "t": t, "y": y, "z": z}), {"ATE": 2.0}


def run_final_stages(x, t, y, stages, estimands=("ATT", "ATE", "ATO"), n_folds: int = 2) -> dict:
    """Run one spec per final stage on a single-covariate study: {stage: SpecResult}."""
    from causalflow.oci.plan import Plan, prepare_data
    from causalflow.oci.runner import run_spec
    from causalflow.oci.spec import Spec

    df = pd.DataFrame({"x": x, "t": np.asarray(t).astype(int), "y": y})
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["x"], estimands=list(estimands))
    data = prepare_data(plan)
    base = dict(estimands=tuple(estimands), covariates=("x",), priorities=(("x", "high"),), n_folds=n_folds)
    return {s: run_spec(data, Spec(**base, final_stage=s)) for s in stages}


def oof_propensity(X, t, folds, seed: int, clip: float | None = None) -> np.ndarray:
    """The tests' own out-of-fold propensity, independent of ``causalflow.oci.cross_fit``: for
    each fold, scikit-learn's ``LogisticRegression(random_state=seed)`` fitted on the other
    folds predicts P(t = 1) on the fold; clipped to [clip, 1 - clip] when ``clip`` is given
    (the runner's ``Spec.propensity_clip``)."""
    from sklearn.linear_model import LogisticRegression

    X, t = np.asarray(X, dtype=float), np.asarray(t).astype(int)
    e = np.empty(len(t))
    for k in np.unique(folds):
        test = folds == k
        e[test] = LogisticRegression(random_state=seed).fit(X[~test], t[~test]).predict_proba(X[test])[:, 1]
    return e if clip is None else np.clip(e, clip, 1 - clip)
