"""effects.relative() against a delta-method computation written here from linearmodels fits."""

import numpy as np
import pandas as pd
import pytest
from linearmodels.iv import IV2SLS
from scipy import stats

import causalflow as cf
from causalflow.errors import ValidationError


def _ab_table(seed=0, n=800):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"t": rng.integers(0, 2, n), "x": rng.normal(size=n),
                       "seg": rng.choice(["a", "b", "c"], n)})
    df["y"] = 20 + df.t * (2 + df.x) + 3 * df.x + (df.seg == "b") + rng.normal(size=n) * (1 + df.t)
    return df


def _encouragement_table(seed=1, g=120, m=8):
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(g), m)
    z = rng.integers(0, 2, g)[cluster]
    complier = rng.random(g * m) < 0.6
    d = (z * complier).astype(float)                       # one-sided non-compliance
    x = rng.normal(size=g * m) + rng.normal(size=g)[cluster]
    y = 50 + 5 * d + 2 * x + rng.normal(size=g)[cluster] * 2 + rng.normal(size=g * m) * 3
    return pd.DataFrame({"z": z, "d": d, "x": x, "y": y, "store": cluster})


def _delta(beta, cov, i_tau, d_mu):
    """Delta method for tau / mu with tau = beta[i_tau], mu = d_mu' beta (written independently)."""
    tau, mu = beta[i_tau], d_mu @ beta
    e_tau = np.zeros_like(beta)
    e_tau[i_tau] = 1.0
    grad = e_tau / mu - tau / mu ** 2 * d_mu
    return tau / mu, np.sqrt(grad @ cov @ grad)


def test_relative_ab_with_covariates_vs_linearmodels():
    df = _ab_table()
    eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        y="y", exogenous_covariates=["x"]).fit(cf.LinearModel(cov_type="HC1")).infer_effect(
        condition_on=["x > 0.5"])
    rel = eff.relative(scale="fraction").to_frame().iloc[0]
    # reference: OLS of y on [1, t, xc, t*xc] with HC1 (linearmodels robust, debiased=True)
    xc = df.x - df.x.mean()
    exog = pd.DataFrame({"const": 1.0, "t": df.t, "xc": xc, "t_xc": df.t * xc})
    res = IV2SLS(df.y, exog, None, None).fit(cov_type="robust", debiased=True)
    beta, cov = res.params.to_numpy(), res.cov.to_numpy()
    s = xc[df.x > 0.5].mean()
    # effect in the subgroup: b_t + s b_txc; control mean there: b_0 + s b_xc
    d_tau = np.array([0, 1, 0, s])
    d_mu = np.array([1, 0, s, 0])
    tau, mu = d_tau @ beta, d_mu @ beta
    grad = d_tau / mu - tau / mu ** 2 * d_mu
    ref_est, ref_se = tau / mu, np.sqrt(grad @ cov @ grad)
    # same coefficients and sandwich as the peer, then the same delta method: rtol 1e-8
    assert rel.estimate == pytest.approx(ref_est, rel=1e-8)
    assert rel.std_error == pytest.approx(ref_se, rel=1e-8)
    assert rel.control_mean == pytest.approx(mu, rel=1e-8)
    z = stats.t.isf(0.025, len(df) - 4)  # t quantile with the HC fit's n - p degrees of freedom
    assert rel.ci_lower == pytest.approx(ref_est - z * ref_se, rel=1e-8)


def test_relative_average_effect_is_intercept_ratio():
    df = _ab_table(seed=5)
    eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        y="y", exogenous_covariates=["x", "seg"]).fit(cf.LinearModel(cov_type="HC0")).infer_effect()
    rel = eff.relative().to_frame().iloc[0]       # percent
    x = pd.get_dummies(df[["x", "seg"]], drop_first=True, dtype=float)
    xc = x - x.mean()
    exog = pd.concat([pd.Series(1.0, index=df.index, name="const"), df.t.rename("t"), xc,
                      xc.mul(df.t, axis=0).add_prefix("t_")], axis=1)
    res = IV2SLS(df.y, exog, None, None).fit(cov_type="robust", debiased=False)
    d_mu = np.zeros(exog.shape[1])
    d_mu[0] = 1.0
    est, se = _delta(res.params.to_numpy(), res.cov.to_numpy(), 1, d_mu)
    assert rel.estimate == pytest.approx(100 * est, rel=1e-8)
    assert rel.std_error == pytest.approx(100 * se, rel=1e-8)


def test_relative_clustered_encouragement_vs_linearmodels():
    df = _encouragement_table()
    data = cf.ExperimentData(df, intent_to_treat="z", treated="d", cluster_by="store")
    model = data.add_metric(y="y", exogenous_covariates=["x"]).fit(cf.LinearModel())
    # the 2SLS contrasts at the units' covariate means are the ATE / CATE rows (issue 22: the LATE
    # sits at the compliers' means and divides by their untreated mean, tests/test_late_compliers.py)
    asked = ["ITT", "ATE"]
    rel = pd.concat([model.infer_effect(estimands=asked).relative(scale="fraction").to_frame(),
                     model.infer_effect(condition_on=["x > 0"], estimands=asked).relative(
                         scale="fraction").to_frame()])
    assert len(rel) == 4
    xc = df.x - df.x.mean()
    s_all, s_sub = 0.0, xc[df.x > 0].mean()
    # 2SLS (ATE): regressors [1, xc, d, d*xc], instruments [z, z*xc]; CR1 = clustered, debiased
    exog = pd.DataFrame({"const": 1.0, "xc": xc})
    endog = pd.DataFrame({"d": df.d, "d_xc": df.d * xc})
    inst = pd.DataFrame({"z": df.z, "z_xc": df.z * xc})
    iv = IV2SLS(df.y, exog, endog, inst).fit(cov_type="clustered", clusters=df.store, debiased=True)
    # reduced form (ITT): regressors [1, xc, z, z*xc]
    rf = IV2SLS(df.y, pd.concat([exog, inst], axis=1), None, None).fit(
        cov_type="clustered", clusters=df.store, debiased=True)
    for res, estimand in ((iv, "ATE"), (rf, "ITT")):
        beta, cov = res.params.to_numpy(), res.cov.to_numpy()   # order: const, xc, arm, arm*xc
        for cond, s in (("all", s_all), ("x > 0", s_sub)):
            d_tau = np.array([0, 0, 1, s])
            d_mu = np.array([1, s, 0, 0])
            tau, mu = d_tau @ beta, d_mu @ beta
            grad = d_tau / mu - tau / mu ** 2 * d_mu
            label = "CATE" if estimand == "ATE" and cond != "all" else estimand
            row = rel[(rel.estimand == label) & (rel.condition == cond)].iloc[0]
            assert row.estimate == pytest.approx(tau / mu, rel=1e-8)
            assert row.std_error == pytest.approx(np.sqrt(grad @ cov @ grad), rel=1e-8)
            assert row.control_std_error == pytest.approx(np.sqrt(d_mu @ cov @ d_mu), rel=1e-8)


def test_relative_fieller_option_and_projection_refused():
    df = _ab_table(seed=2)
    eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        y="y", exogenous_covariates=["seg"]).fit(cf.LinearModel).infer_effect(
        condition_on=["seg == 'a'", "seg == 'b'"])
    fi = eff.relative(method="fieller", scale="fraction").to_frame()
    de = eff.relative(scale="fraction").to_frame()
    np.testing.assert_allclose(fi.estimate, de.estimate)
    assert np.all(fi.ci_lower < fi.estimate) and np.all(fi.estimate < fi.ci_upper)
    # Fieller is not symmetric around the ratio; the delta interval is
    assert not np.allclose(fi.ci_upper - fi.estimate, fi.estimate - fi.ci_lower, rtol=1e-6)
    with pytest.raises(ValidationError, match="projection"):
        eff.project({"seg == 'a'": 0.5, "seg == 'b'": 0.5}).relative()
    with pytest.raises(ValidationError, match="method"):
        eff.relative(method="bootstrap")
    d = eff.relative().to_dict()
    assert d["scale"] == "percent" and len(d["effects"]) == 2
    assert "relative" in eff.relative().summary()


def test_relative_weighted_multi_arm_vs_linearmodels():
    # adaptive design: one probability column per arm, rows weighted by 1 / their own arm's
    # probability; covariates centred at the weighted mean
    rng = np.random.default_rng(8)
    n = 900
    arm = rng.choice(["control", "b", "c"], n)
    p_control = 0.5 * rng.uniform(0.8, 1.2, n)
    p_other = (1 - p_control) / 2
    prop = np.where(arm == "control", p_control, p_other)  # the own arm's probability
    x = rng.normal(size=n)
    y = 30 + 2 * (arm == "b") - 1 * (arm == "c") + 2 * x + rng.normal(size=n)
    df = pd.DataFrame({"arm": arm, "p_control": p_control, "p_b": p_other, "p_c": p_other, "x": x, "y": y})
    propensity = {"control": "p_control", "b": "p_b", "c": "p_c"}
    eff = cf.ExperimentData(df, intent_to_treat="arm", propensity=propensity, control="control").add_metric(
        y="y", exogenous_covariates=["x"]).fit(cf.LinearModel(cov_type="HC1")).infer_effect()
    rel = eff.relative(scale="fraction").to_frame().set_index("arm")
    w = 1 / prop
    xc = x - np.average(x, weights=w)
    b, c = (arm == "b").astype(float), (arm == "c").astype(float)
    exog = pd.DataFrame({"const": 1.0, "b": b, "c": c, "xc": xc, "b_xc": b * xc, "c_xc": c * xc})
    res = IV2SLS(df.y, exog, None, None, weights=w).fit(cov_type="robust", debiased=True)
    d_mu = np.zeros(6)
    d_mu[0] = 1.0
    for name, i in (("b", 1), ("c", 2)):
        est, se = _delta(res.params.to_numpy(), res.cov.to_numpy(), i, d_mu)
        assert rel.loc[name, "estimate"] == pytest.approx(est, rel=1e-8)
        assert rel.loc[name, "std_error"] == pytest.approx(se, rel=1e-8)
