"""The grid of issue 3: causalflow's LinearModel against linearmodels and statsmodels.

Designs {A/B, encouragement, cluster, adaptive, all mixed, multi-arm} x covariances
{HC0, HC1, CR0, CR1} x {1, 5 metrics} x {no covariates, numeric + categorical covariates}.
The reference design matrices are built here, independently of causalflow, with pandas:
covariates centred at their (weighted) mean over the metric's complete rows and
interacted with the arm indicators (Lin 2013).

Which peer option matches which small-sample factor:

======  =====================================================  ===============================
ours    linearmodels IV2SLS.fit                                 statsmodels OLS/WLS.fit
======  =====================================================  ===============================
HC0     cov_type="robust", debiased=False                       cov_type="HC0"
HC1     cov_type="robust", debiased=True   (n/(n-p))            cov_type="HC1"
CR0     cov_type="clustered", debiased=False                    (not compared: see below)
CR1     cov_type="clustered", debiased=True (G/(G-1)(n-1)/(n-p)) cov_type="cluster", use_correction=True
======  =====================================================  ===============================

statsmodels' cluster covariance always applies G/(G-1) (use_correction=False drops only the
(n-1)/(n-p) part), so it has no CR0; linearmodels covers CR0.

Tolerance: rtol 1e-8. Both sides solve the same normal equations in double precision
(we from cross-products, the peers by QR/pinv of the design); on these well-conditioned
designs (condition number < 1e3) the two differ by O(cond^2 * eps) ~ 1e-10.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from linearmodels.iv import IV2SLS

import causalflow as cf

RTOL = 1e-8
DESIGNS = ["ab", "encouragement", "cluster", "adaptive", "mixed", "multiarm"]
COV_TYPES = ["HC0", "HC1", "CR0", "CR1"]
CONDITIONS = ["cat == 'b'", "x1 > 0 and cat != 'c'"]


def case_seed(*parts) -> int:
    """The seed of a grid case: a fixed digest (CRC-32) of its name, the same in every process
    (``hash()`` of a string is salted per process, so a failure could not be replayed)."""
    return zlib.crc32("-".join(map(str, parts)).encode())


def simulate(design: str, n_metrics: int, seed: int = 0, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 40, n)
    clustered = design in ("cluster", "mixed")
    arms = 3 if design == "multiarm" else 2
    a = (rng.integers(0, arms, 40)[g] if clustered else rng.integers(0, arms, n))
    df = pd.DataFrame({"a": a, "g": g, "x1": rng.normal(size=n), "x2": rng.gamma(2.0, size=n),
                       "cat": rng.choice(["a", "b", "c"], n)})
    if design in ("encouragement", "mixed"):
        complier = rng.random(n) < 0.7
        df["d"] = np.where(complier, a, 0)
    if design == "multiarm":
        df["d"] = np.where(rng.random(n) < 0.8, a, 0)
    df["e"] = rng.uniform(0.2, 0.8, n)
    effect = 0.5 + 0.3 * df.x1
    treat = df["d"] if "d" in df else df.a
    for k in range(n_metrics):
        df[f"y{k}"] = 1 + k + effect * treat + df.x1 - 0.5 * df.x2 + (df.cat == "b") + rng.normal(size=n) * (1 + k)
    if n_metrics > 1:
        df.loc[df.index[:37], "y1"] = np.nan  # one metric with its own complete rows
    return df


def experiment(df: pd.DataFrame, design: str) -> cf.ExperimentData:
    kwargs = {}
    if design in ("encouragement", "mixed", "multiarm"):
        kwargs["treated"] = "d"
    if design in ("cluster", "mixed"):
        kwargs["cluster_by"] = "g"
    if design in ("adaptive", "mixed"):
        kwargs["propensity"] = "e"
    if design == "multiarm":
        kwargs["control"] = 0
    return cf.ExperimentData(df, intent_to_treat="a", **kwargs)


def reference(df, design, metric, covariates, cov_type, kind):
    """Fit one metric with linearmodels on a design matrix built here; returns (params, cov, X parts)."""
    rows = df[metric].notna()
    d = df[rows]
    # e = P(assigned to treatment): treated rows weigh 1/e, control rows 1/(1 - e)
    w = (1.0 / d.e.where(d.a == 1, 1 - d.e) if design in ("adaptive", "mixed")
         else pd.Series(1.0, index=d.index))
    raw = pd.get_dummies(d[covariates], drop_first=True, dtype=float) if covariates else pd.DataFrame(index=d.index)
    mean = (raw.mul(w, axis=0).sum() / w.sum()) if covariates else pd.Series(dtype=float)
    xc = raw - mean
    arms = sorted(d.a.unique())[1:]

    def interacted(values, prefix):
        cols = {}
        for arm in arms:
            ind = (values == arm).astype(float)
            cols[f"{prefix}{arm}"] = ind
            for c in xc.columns:
                cols[f"{prefix}{arm}:{c}"] = ind * xc[c]
        return pd.DataFrame(cols, index=d.index)

    exog = pd.concat([pd.Series(1.0, index=d.index, name="const"), xc], axis=1)
    A = interacted(d.a, "A")
    if kind == "iv":
        D = interacted(d.d, "D")
        model = IV2SLS(d[metric], exog, D, A, weights=w)
    else:
        model = IV2SLS(d[metric], pd.concat([exog, A], axis=1), None, None, weights=w)
    if cov_type.startswith("HC"):
        res = model.fit(cov_type="robust", debiased=cov_type == "HC1")
    else:
        res = model.fit(cov_type="clustered", clusters=d.g, debiased=cov_type == "CR1")
    return res, xc, w, d


def ours_order(res_index, n_cov, n_arms):
    """Map linearmodels' parameter order [const, Xc, arm blocks] to ours [1, arms, Xc, arm x Xc]."""
    names = list(res_index)
    const, xc = [0], list(range(1, 1 + n_cov))
    arm_cols = [i for i, nm in enumerate(names) if nm.startswith(("A", "D")) and ":" not in nm]
    inter = [i for i, nm in enumerate(names) if ":" in nm]
    assert len(arm_cols) == n_arms
    return const + arm_cols + xc + inter


def complier_shift(d, xc, w, condition, arm):
    """The compliers' centred covariate means of one arm (vs control), within a condition,
    as hand-written Wald ratios of weighted arm means (Abadie 2003)."""
    rows = np.ones(len(d), bool) if condition is None else d.eval(condition).to_numpy()
    took = (d.d == arm).to_numpy(dtype=float)
    means = {}
    for a in (arm, 0):
        sel = rows & (d.a == a).to_numpy()
        wa = w.to_numpy()[sel]
        means[a] = (wa @ (xc.to_numpy()[sel] * took[sel, None]) / wa.sum(), wa @ took[sel] / wa.sum())
    return (means[arm][0] - means[0][0]) / (means[arm][1] - means[0][1])


def subgroup_delta(d, xc, w, condition, arm_index, n_arms, n_cov, kind_names):
    """Delta vector (in linearmodels' order) of the effect of one arm in a subgroup, built by hand."""
    mask = d.eval(condition).to_numpy()  # pandas' own query engine, test side only
    xbar = (xc[mask].mul(w[mask], axis=0).sum() / w[mask].sum()).to_numpy()
    delta = pd.Series(0.0, index=kind_names)
    arm_names = [nm for nm in kind_names if nm.startswith(("A", "D")) and ":" not in nm]
    arm = arm_names[arm_index]
    delta[arm] = 1.0
    for c, value in zip(xc.columns, xbar):
        delta[f"{arm}:{c}"] = value
    return delta.to_numpy(), int(mask.sum())


@pytest.mark.parametrize("covariates", [[], ["x1", "x2", "cat"]], ids=["nocov", "cov"])
@pytest.mark.parametrize("n_metrics", [1, 5])
@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("design", DESIGNS)
def test_grid_against_linearmodels(design, cov_type, n_metrics, covariates):
    df = simulate(design, n_metrics, seed=case_seed(design, cov_type, n_metrics))
    data = experiment(df, design)
    if cov_type.startswith("CR") and data.cluster_codes is None:
        with pytest.raises(cf.ValidationError, match="cluster_by"):
            data.add_metric(y="y0").fit(cf.LinearModel(cov_type=cov_type))
        with pytest.warns(cf.DesignWarning, match="more than one assigned arm"):  # units randomized, not g
            data = cf.ExperimentData(df, intent_to_treat="a", treated=data.treated, propensity=data.propensity,
                                     cluster_by="g", control=data.control)
    metrics = [f"y{k}" for k in range(n_metrics)]
    model = data.add_metric(y=metrics, exogenous_covariates=covariates).fit(cf.LinearModel(cov_type=cov_type))
    conditions = CONDITIONS if covariates else None
    # the 2SLS contrasts at the units' covariate means are the rows labelled ATE / CATE; the
    # LATE sits at the compliers' covariate means (issue 22), checked below
    effects = model.infer_effect(condition_on=conditions,
                                 estimands=["ITT", "LATE", "ATE"] if data.is_iv else None).to_frame()
    n_arms = len(data.arms) - 1
    for kind in model.fit_kinds:
        ours_params, ours_se = model.params(kind), model.std_errors(kind)
        for metric in metrics:
            res, xc, w, d = reference(df, design, metric, covariates, cov_type, kind)
            order = ours_order(res.params.index, xc.shape[1], n_arms)
            np.testing.assert_allclose(ours_params[metric].to_numpy(), res.params.to_numpy()[order],
                                       rtol=RTOL, atol=1e-12)
            np.testing.assert_allclose(ours_se[metric].to_numpy(), res.std_errors.to_numpy()[order], rtol=RTOL)
            estimand = "ITT" if kind == "itt" and data.is_iv else ("CATE" if conditions else "ATE")
            for j in range(n_arms):
                for cond in conditions or [None]:
                    if cond is None:
                        delta = np.zeros(len(res.params))
                        delta[order[1 + j]] = 1.0
                        size = len(d)
                    else:
                        delta, size = subgroup_delta(d, xc, w, cond, j, n_arms, xc.shape[1], list(res.params.index))
                    row = effects[(effects.metric == metric) & (effects.arm == data.arms[j + 1])
                                  & (effects.condition == (cond or "all")) & (effects.estimand == estimand)]
                    assert len(row) == 1
                    est = delta @ res.params.to_numpy()
                    se = np.sqrt(delta @ res.cov.to_numpy() @ delta)
                    np.testing.assert_allclose(row.estimate.iloc[0], est, rtol=RTOL, atol=1e-12)
                    np.testing.assert_allclose(row.std_error.iloc[0], se, rtol=RTOL)
                    assert row.n.iloc[0] == size
                    if kind != "iv":
                        continue
                    # the LATE: the peer's Lin coefficient plus its interactions at the compliers'
                    # covariate means (hand-written Wald ratios); without covariates the coefficient
                    late = effects[(effects.metric == metric) & (effects.arm == data.arms[j + 1])
                                   & (effects.condition == (cond or "all")) & (effects.estimand == "LATE")]
                    delta = np.zeros(len(res.params))
                    delta[order[1 + j]] = 1.0
                    if covariates:
                        inter = [i for i, nm in enumerate(res.params.index) if nm.startswith(f"D{data.arms[j + 1]}:")]
                        delta[inter] = complier_shift(d, xc, w, cond, data.arms[j + 1])
                    np.testing.assert_allclose(late.estimate.iloc[0], delta @ res.params.to_numpy(), rtol=RTOL,
                                               atol=1e-12)
                    if not covariates:
                        np.testing.assert_allclose(late.std_error.iloc[0], se, rtol=RTOL)


@pytest.mark.parametrize("design, cov_type", [("ab", "HC0"), ("ab", "HC1"), ("adaptive", "HC0"),
                                              ("adaptive", "HC1"), ("cluster", "HC1"), ("cluster", "CR1")])
def test_ols_designs_against_statsmodels(design, cov_type):
    df = simulate(design, 2, seed=7)
    data = cf.ExperimentData(df, intent_to_treat="a", cluster_by="g" if design == "cluster" else None,
                             propensity="e" if design == "adaptive" else None)
    model = data.add_metric(y=["y0", "y1"], exogenous_covariates=["x1", "cat"]).fit(cf.LinearModel(cov_type=cov_type))
    for metric in ["y0", "y1"]:
        d = df[df[metric].notna()]
        w = 1.0 / np.where(d.a == 1, d.e, 1 - d.e) if design == "adaptive" else np.ones(len(d))
        raw = pd.get_dummies(d[["x1", "cat"]], drop_first=True, dtype=float)
        xc = raw - np.average(raw, axis=0, weights=w)
        X = np.column_stack([np.ones(len(d)), d.a, xc, d.a.to_numpy()[:, None] * xc.to_numpy()])
        fit_kw = {"cov_type": cov_type} if cov_type.startswith("HC") else {
            "cov_type": "cluster", "cov_kwds": {"groups": d.g.to_numpy(), "use_correction": True}}
        res = sm.WLS(d[metric].to_numpy(), X, weights=w).fit(**fit_kw)
        np.testing.assert_allclose(model.params()[metric].to_numpy(), res.params, rtol=RTOL)
        np.testing.assert_allclose(model.std_errors()[metric].to_numpy(), res.bse, rtol=RTOL)


def test_joint_covariance_matches_stacked_reference():
    """Cross-condition covariance d1' V d2 of one metric equals the reference's."""
    df = simulate("cluster", 1, seed=3)
    data = cf.ExperimentData(df, intent_to_treat="a", cluster_by="g")
    # CR1 named: with fewer than 50 clusters the default is the small-cluster CR3
    effects = data.add_metric(y="y0", exogenous_covariates=["x1", "x2", "cat"]).fit(
        cf.LinearModel(cov_type="CR1")).infer_effect(condition_on=CONDITIONS)
    res, xc, w, d = reference(df, "cluster", "y0", ["x1", "x2", "cat"], "CR1", "itt")
    deltas = [subgroup_delta(d, xc, w, c, 0, 1, xc.shape[1], list(res.params.index))[0] for c in CONDITIONS]
    expected = np.array(deltas) @ res.cov.to_numpy() @ np.array(deltas).T
    np.testing.assert_allclose(effects.cov, expected, rtol=RTOL)


@pytest.mark.parametrize("cov_type", ["HC1", "CR1"])
def test_many_small_blocks_give_the_same_answer(monkeypatch, cov_type):
    """Passes walk row blocks; with blocks of 64 rows (clusters split across blocks, both the
    data-order and the cluster-order score passes) results equal the one-block fit (rtol 1e-12:
    only the summation order changes) and the linearmodels reference (rtol 1e-8)."""
    import causalflow.design
    import causalflow.models.linear

    df = simulate("mixed", 5, seed=11)

    def fit():
        model = experiment(df, "mixed").add_metric(
            y=[f"y{k}" for k in range(5)], exogenous_covariates=["x1", "x2", "cat"]).fit(
            cf.LinearModel(cov_type=cov_type))
        return model, model.infer_effect(condition_on=CONDITIONS * 1 + ["x2 > 1"]).to_frame()

    whole_model, whole = fit()
    monkeypatch.setattr(causalflow.design, "_BLOCK_ROWS", 64)
    monkeypatch.setattr(causalflow.models.linear, "_SCORE_BLOCK_ROWS", 64)
    monkeypatch.setattr(causalflow.models.linear, "_NATURAL_BLOCK_ROWS", 96)
    small_model, small = fit()
    for column in ["estimate", "std_error"]:
        np.testing.assert_allclose(small[column], whole[column], rtol=1e-12)
    np.testing.assert_allclose(small_model.std_errors("iv"), whole_model.std_errors("iv"), rtol=1e-12)
    res, *_ = reference(df, "mixed", "y1", ["x1", "x2", "cat"], cov_type, "iv")
    order = ours_order(res.params.index, 4, 1)
    np.testing.assert_allclose(small_model.std_errors("iv")["y1"], res.std_errors.to_numpy()[order], rtol=RTOL)
