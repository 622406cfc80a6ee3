"""Planning: statsmodels' two-sample power equations, closed forms, and a clustered simulation."""

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower

from causalflow.errors import ValidationError
from causalflow.platform.planning import design_effect, mde, planning_inputs, power, sample_size

CASES = [(alt, ratio) for alt in ("two-sided", "larger", "smaller") for ratio in (1.0, 2.5)]


def _sm(test):
    return TTestIndPower() if test == "t" else NormalIndPower()


def _args(d, ratio, alt):
    # statsmodels: group 1 has nobs1, group 2 nobs1 * ratio; ours: total n, allocation shares
    sd = 2.0
    effect = d * sd if alt != "smaller" else -d * sd
    return effect, sd, (ratio / (1 + ratio), 1 / (1 + ratio))


@pytest.mark.parametrize("test", ["t", "z"])
@pytest.mark.parametrize("alt,ratio", CASES)
def test_power_equals_statsmodels(test, alt, ratio):
    # same power equation (noncentral t / normal tails): rtol 1e-6 per the issue, reached at 1e-12
    for d, nobs1 in [(0.2, 50.0), (0.5, 37.3), (0.8, 12.0)]:
        effect, sd, alloc = _args(d, ratio, alt)
        ref = _sm(test).power(np.sign(effect) * d, nobs1, 0.05, ratio=ratio, alternative=alt)
        ours = power(effect, nobs1 * (1 + ratio), sd=sd, allocation=alloc, alternative=alt, test=test)
        assert ours.power == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("test", ["t", "z"])
@pytest.mark.parametrize("alt,ratio", CASES)
def test_sample_size_equals_statsmodels(test, alt, ratio):
    # statsmodels solves nobs1 by brentq_expanding (xtol 1e-5 on nobs ~ 1e2): rtol 1e-6
    d = 0.3
    effect, sd, alloc = _args(d, ratio, alt)
    ref = _sm(test).solve_power(effect_size=np.sign(effect) * d, nobs1=None, alpha=0.05,
                                power=0.8, ratio=ratio, alternative=alt)
    ours = sample_size(effect, sd=sd, power=0.8, allocation=alloc, alternative=alt, test=test)
    assert ours.n_exact * alloc[1] == pytest.approx(ref, rel=1e-6)
    # rounding up: every arm whole and at least the exact need, power at n reaches the target
    assert all(k >= s * ours.n_exact - 1e-9 for k, s in zip(ours.n_per_arm, alloc))
    assert ours.power >= 0.8


@pytest.mark.parametrize("test", ["t", "z"])
@pytest.mark.parametrize("alt,ratio", CASES)
def test_mde_equals_statsmodels(test, alt, ratio):
    # reference: statsmodels' power equation solved for the effect size by brentq at 1e-14
    # (solve_power itself stops at xtol 1e-5, which we check loosely)
    nobs1 = 57.3
    sign = -1.0 if alt == "smaller" else 1.0
    sm = _sm(test)
    ref = optimize.brentq(lambda d: sm.power(sign * d, nobs1, 0.05, ratio=ratio, alternative=alt) - 0.8,
                          1e-6, 1.0, xtol=1e-14)
    _, sd, alloc = _args(1.0, ratio, alt)
    ours = mde(nobs1 * (1 + ratio), sd=sd, power=0.8, allocation=alloc, alternative=alt, test=test)
    assert ours.effect == pytest.approx(sign * ref * sd, rel=1e-6)
    loose = sm.solve_power(effect_size=None, nobs1=nobs1, alpha=0.05, power=0.8, ratio=ratio,
                           alternative=alt)
    assert abs(ours.effect / sd) == pytest.approx(abs(loose), rel=1e-4)
    assert ours.power == pytest.approx(0.8, rel=1e-9)


def test_variance_model_closed_form():
    # z-test, everything on: SE and power from the formulas written out here
    sd, r2, icc, m, cv, gamma = 3.0, 0.4, 0.05, 12.0, 0.3, 0.6
    n, alloc = 4800.0, (0.4, 0.6)
    res = power(0.5, n, sd=sd, r2=r2, icc=icc, cluster_size=m, cluster_size_cv=cv,
                compliance=gamma, allocation=alloc, test="z")
    de = 1 + (m * (1 + cv ** 2) - 1) * icc
    se = np.sqrt(sd ** 2 * (1 - r2) * de / gamma ** 2 * (1 / (n * 0.6) + 1 / (n * 0.4)))
    assert res.design_effect == pytest.approx(de, rel=1e-14)
    assert res.std_error == pytest.approx(se, rel=1e-12)
    z = stats.norm.isf(0.025)
    assert res.power == pytest.approx(stats.norm.sf(z - 0.5 / se) + stats.norm.cdf(-z - 0.5 / se), rel=1e-12)
    assert res.n_clusters == round(n / m)


def test_relative_delta_variance_closed_form():
    # Var(L) = sigma^2 [ (1/n_t + 1/n_c)/g^2 + 2L/(g n_c) + L^2/n_c ] / mu^2
    sd, mu, lift, g, n = 4.0, 20.0, 0.05, 0.8, 3000.0
    res = power(lift, n, sd=sd, baseline_mean=mu, relative=True, compliance=g, test="z")
    nc = nt = n / 2
    var = sd ** 2 * ((1 / nt + 1 / nc) / g ** 2 + 2 * lift / (g * nc) + lift ** 2 / nc) / mu ** 2
    assert res.std_error == pytest.approx(np.sqrt(var), rel=1e-12)
    # with g = 1 this is Var(mean_t/mean_c) by the delta method with mu_t = (1 + L) mu
    res1 = power(lift, n, sd=sd, baseline_mean=mu, relative=True, test="z")
    var1 = (sd ** 2 / nt + (1 + lift) ** 2 * sd ** 2 / nc) / mu ** 2
    assert res1.std_error == pytest.approx(np.sqrt(var1), rel=1e-12)
    # a relative MDE has the planned power at the solved lift
    r = mde(n, sd=sd, baseline_mean=mu, relative=True, test="z")
    assert power(r.effect, n, sd=sd, baseline_mean=mu, relative=True, test="z").power == \
        pytest.approx(0.8, rel=1e-9)


def test_arms_and_bonferroni():
    # 3 arms, equal allocation: each comparison uses n/3 per arm; Bonferroni halves alpha
    res = power(0.3, 900, sd=1.0, arms=3, correction="bonferroni", test="z")
    se = np.sqrt(2 / 300)
    z = stats.norm.isf(0.025 / 2)
    assert res.power == pytest.approx(stats.norm.sf(z - 0.3 / se) + stats.norm.cdf(-z - 0.3 / se), rel=1e-12)
    assert len(res.power_per_arm) == 2
    # unequal treatment arms: the weakest comparison is reported
    res = power(0.3, 900, sd=1.0, arms=3, allocation=(0.4, 0.4, 0.2), test="z")
    assert res.power == min(res.power_per_arm) == res.power_per_arm[1]


def test_anytime_sample_size_exceeds_fixed_horizon():
    from causalflow.linalg.anytime import cs_multiplier, optimal_g

    fixed = sample_size(0.1, sd=1.0, test="z")
    av = sample_size(0.1, sd=1.0, test="anytime")
    assert av.n_exact > 1.3 * fixed.n_exact
    n = av.n_exact
    nu = n - 2
    c = float(cs_multiplier(n, nu, optimal_g(n, nu, 0.05), 0.05))
    lam = 0.1 / np.sqrt(4 / n)
    ref = 1 - stats.nct.cdf(c, nu, lam) + stats.nct.cdf(-c, nu, lam)
    assert ref == pytest.approx(0.8, abs=1e-6)


def test_planning_inputs_from_pilot():
    rng = np.random.default_rng(3)
    g, m = 400, 25
    cluster = np.repeat(np.arange(g), m)
    x = rng.normal(size=g * m)
    y = 5 + 2 * x + rng.normal(0, np.sqrt(0.1), g)[cluster] + rng.normal(0, np.sqrt(0.9), g * m)
    pilot = pd.DataFrame({"y": y, "x": x, "store": cluster})
    before = pilot.copy()
    est = planning_inputs(pilot, "y", covariates=["x"], cluster_by="store")
    pd.testing.assert_frame_equal(pilot, before)
    assert est.icc == pytest.approx(0.1, abs=0.03)
    assert est.r2 == pytest.approx(4 / 5, abs=0.02)
    assert est.cluster_size == 25 and est.cluster_size_cv == 0
    assert est.sd == pytest.approx(np.std(y, ddof=1), rel=1e-12)
    # pilot values feed the plan; explicit keywords override them
    res = sample_size(0.1, pilot=pilot, metric="y", covariates=["x"], cluster_by="store")
    assert res.inputs == est
    assert sample_size(0.1, pilot=pilot, metric="y", icc=0.0).inputs.icc == 0.0
    # polars pilot tables are read the same way; a non-table is named
    import polars as pl
    assert planning_inputs(pl.from_pandas(pilot), "y", covariates=["x"], cluster_by="store") == est
    with pytest.raises(ValidationError, match="pilot"):
        planning_inputs([1, 2, 3], "y")


@pytest.mark.parametrize("kwargs,word", [
    (dict(effect=0.1, sd=-1.0), "sd"),
    (dict(effect=0.1, sd=1.0, r2=1.0), "r2"),
    (dict(effect=0.1, sd=1.0, icc=1.5), "icc"),
    (dict(effect=0.1, sd=1.0, compliance=0.0), "compliance"),
    (dict(effect=0.1, sd=1.0, allocation=(0.3, 0.3)), "allocation"),
    (dict(effect=0.1, sd=1.0, relative=True), "baseline_mean"),
    (dict(effect=-0.1, sd=1.0, alternative="larger"), "effect"),
    (dict(effect=0.0, sd=1.0), "effect"),
    (dict(effect=0.1), "sd"),
    (dict(effect=0.1, sd=1.0, test="anytime", alternative="larger"), "alternative"),
    (dict(effect=0.1, sd=1.0, power=1.2), "power"),
])
def test_bad_input(kwargs, word):
    with pytest.raises(ValidationError, match=word):
        sample_size(**kwargs)


def test_design_effect_kish():
    assert design_effect(0.1, 11) == pytest.approx(2.0)


@pytest.mark.slow
def test_clustered_sample_size_reaches_power_in_simulation():
    """Plan a cluster-randomised test (ICC 0.05, 20 units per cluster, effect 0.25 sd),
    then simulate 4,000 experiments of the planned size (fixed seed) and analyse each with
    the t-test on cluster means (df = G - 2). The share rejecting must be within 2.5 MC SE
    of the planner's power at that size (SE = sqrt(.8 .2 / 4000) = 0.63 pp: +-1.6 pp)."""
    icc, m, effect = 0.05, 20, 0.25
    plan = sample_size(effect, sd=1.0, icc=icc, cluster_size=m, power=0.8)
    g_arm = plan.n_clusters // 2
    achieved = power(effect, plan.n, sd=1.0, icc=icc, cluster_size=m).power
    rng = np.random.default_rng(12345)
    reps, rejected = 4000, 0
    for _ in range(reps):
        u = rng.normal(0, np.sqrt(icc), (2, g_arm, 1))
        e = rng.normal(0, np.sqrt(1 - icc), (2, g_arm, m))
        means = (u + e).mean(axis=2)
        means[1] += effect
        rejected += stats.ttest_ind(means[1], means[0]).pvalue < 0.05
    rate = rejected / reps
    band = 2.5 * np.sqrt(0.8 * 0.2 / reps)
    print(f"cluster means t-test: rejected {rate:.4f}, planned power {achieved:.4f} +- {band:.4f}")
    assert abs(rate - achieved) <= band, (rate, achieved, plan)
    assert abs(rate - 0.8) <= band + (achieved - 0.8)   # the target, plus the rounding up of n


@pytest.mark.slow
def test_planned_encouragement_cluster_design_reaches_power_with_the_pipeline():
    """Plan the LATE of a cluster-randomised encouragement design with a covariate
    (compliance 0.7, residual ICC 0.1, 10 units per cluster, R^2 0.5) for the t-test, then
    analyse 1,200 simulated experiments of the planned size with the default cf.LinearModel
    (2SLS; 102 clusters, so CR1 with t(G - 1) p-values, the planner's reference; fixed
    seed). The rejection rate must be within 2.5 MC SE of the planned power (SE =
    sqrt(.8 .2 / 1200) = 1.15 points: +-2.9 points)."""
    import causalflow as cf

    icc, m, gamma, beta, effect = 0.1, 10, 0.7, 1.0, 0.35
    sd, r2 = np.sqrt(1 + beta ** 2), beta ** 2 / (1 + beta ** 2)
    plan = sample_size(effect, sd=sd, r2=r2, icc=icc, cluster_size=m, compliance=gamma,
                       power=0.8, test="t")
    g = plan.n_clusters
    rng = np.random.default_rng(99)
    reps, rejected = 1200, 0
    cluster = np.repeat(np.arange(g), m)
    for _ in range(reps):
        z = np.repeat(rng.permutation(np.r_[np.zeros(g // 2), np.ones(g - g // 2)]), m)
        d = z * (rng.random(g * m) < gamma)                 # one-sided non-compliance
        x = rng.normal(size=g * m)
        y = (rng.normal(0, np.sqrt(icc), g)[cluster] + beta * x
             + rng.normal(0, np.sqrt(1 - icc), g * m) + effect * d)
        df = pd.DataFrame({"z": z.astype(int), "d": d.astype(float), "x": x, "y": y, "g": cluster})
        frame = cf.ExperimentData(df, intent_to_treat="z", treated="d", cluster_by="g").add_metric(
            y="y", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect().to_frame()
        late = frame[frame.estimand == "LATE"].iloc[0]
        assert late.cov_type == "CR1" and late.dof == g - 1
        rejected += late.p_value < 0.05
    band = 2.5 * np.sqrt(0.8 * 0.2 / reps)
    print(f"pipeline LATE: rejected {rejected / reps:.4f}, planned power {plan.power:.4f} +- {band:.4f}")
    assert abs(rejected / reps - plan.power) <= band, (rejected / reps, plan)
