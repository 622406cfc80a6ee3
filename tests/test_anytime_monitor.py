"""cf.monitor: one pass over the looks equals refitting the core on each prefix."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

import causalflow as cf
from causalflow.errors import ValidationError
from causalflow.linalg.incremental import ClusterMoments, RowMeatMoments
from causalflow.models.linear import LinearModel
from causalflow.platform.monitor import monitor


def _frame(n=2_400, seed=1):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"t": rng.integers(0, 3, n), "x": rng.normal(size=n) + 2,
                       "dev": rng.choice(["a", "b", "c"], n), "store": rng.integers(0, 60, n),
                       "ts": rng.random(n)})
    df["y"] = 1.0 + 0.2 * df.t + df.x + rng.normal(size=n) * (1 + df.t)
    df["z"] = 0.5 * df.x + rng.normal(size=n)
    df.loc[rng.random(n) < 0.1, "z"] = np.nan
    return df


@pytest.mark.parametrize("cluster", [None, "store"])
def test_each_look_equals_the_core_fit_on_the_rows_seen(cluster):
    # Reference: the core LinearModel refitted on each prefix, same g. rtol 1e-9: both are
    # exact; they differ by rounding (raw vs centred moments).
    df = _frame()
    conds = ["x > 2", "dev == 'b'"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = cf.ExperimentData(df, intent_to_treat="t", cluster_by=cluster)
        mon = monitor(data, y=["y", "z"], exogenous_covariates=["x", "dev"], arrival="ts",
                      looks=[400, 1_300, 2_400], condition_on=conds)
        order = np.argsort(df.ts.to_numpy(), kind="stable")
        for look, cut in enumerate(mon.n_rows):
            sub = df.iloc[order[:cut]].reset_index(drop=True)
            ref = cf.ExperimentData(sub, intent_to_treat="t", cluster_by=cluster).add_metric(
                y=["y", "z"], exogenous_covariates=["x", "dev"]).fit(
                LinearModel(av_g=mon.g)).infer_effect(condition_on=conds)
            a, b = mon.looks[look].to_frame(), ref.to_frame()
            assert a[["metric", "arm", "condition", "n"]].equals(b[["metric", "arm", "condition", "n"]])
            for col in ["estimate", "std_error", "av_p_value", "av_ci_lower", "av_ci_upper"]:
                np.testing.assert_allclose(a[col], b[col], rtol=1e-9, err_msg=col)
            if cluster:
                # joint covariance within a missingness group (y and z differ: NaN between)
                got, scale = mon.looks[look].cov, np.abs(ref.cov).max()
                same = a.metric.to_numpy()[:, None] == a.metric.to_numpy()[None, :]
                assert not np.isnan(got[same]).any()
                np.testing.assert_allclose(got[same], ref.cov[same], rtol=1e-8, atol=1e-10 * scale)


def _peer_look(sub: pd.DataFrame, cluster):
    """statsmodels' OLS of Lin's regression on the rows of one look, its design built here:
    y on [1, arm dummies, centred covariates, arm x centred covariates]; HC1, or the
    cluster-robust covariance with G/(G-1) (n-1)/(n-k) (statsmodels' use_correction=True:
    CR1). Returns {arm: (estimate, SE)}, the anytime-valid sample size n (rows, or clusters
    for CR) and nu = n - k, or G - 1 for CR: also the dof of the t-test."""
    raw = pd.get_dummies(sub[["x", "dev"]], drop_first=True, dtype=float)
    xc = (raw - raw.mean()).to_numpy()
    arms = [1, 2]
    dummies = np.column_stack([(sub.t == a).to_numpy(float) for a in arms])
    X = np.column_stack([np.ones(len(sub)), dummies, xc] + [dummies[:, [j]] * xc for j in range(len(arms))])
    model = sm.OLS(sub.y.to_numpy(), X)
    if cluster is None:
        res = model.fit(cov_type="HC1")
        n, nu = len(sub), len(sub) - X.shape[1]
    else:
        res = model.fit(cov_type="cluster", cov_kwds={"groups": sub[cluster].to_numpy(), "use_correction": True})
        n = sub[cluster].nunique()
        nu = n - 1
    return {a: (res.params[1 + j], res.bse[1 + j]) for j, a in enumerate(arms)}, n, nu


def _av_written_out(estimate, se, n, nu, g, alpha=0.05):
    """Anytime-valid p-value and confidence sequence of Lindon et al. (arXiv:2210.08589; avlm's
    p_G_t and t_radius), written out: r = g / (g + n),
    log BF = log(r) / 2 + (nu + 1) / 2 [log(1 + t^2 / nu) - log(1 + r t^2 / nu)], p = min(1, 1 / BF);
    half-width se c, c^2 = nu (1 - P) / (P - r), P = (r alpha^2)^(1 / (nu + 1))."""
    r = g / (g + n)
    t2 = (estimate / se) ** 2
    log_bf = 0.5 * np.log(r) + 0.5 * (nu + 1) * (np.log(1 + t2 / nu) - np.log(1 + r * t2 / nu))
    big_p = (r * alpha ** 2) ** (1 / (nu + 1))
    half = se * np.sqrt(nu * (1 - big_p) / (big_p - r)) if big_p > r else np.inf
    return min(1.0, np.exp(-log_bf)), estimate - half, estimate + half


@pytest.mark.parametrize("cluster", [None, "store"])
def test_each_look_equals_statsmodels_and_the_written_out_anytime_formulas(cluster):
    # An independent reference (the core shares the monitor's solver and small-sample
    # factors): at every look, statsmodels on the rows seen so far gives the effects and their
    # SEs (rtol 1e-8, as tests/test_vs_peers.py: two solvers in double precision); the
    # fixed-n t-test and interval use the peer's dof (rows - k for HC1, G - 1 for CR1); the
    # anytime-valid p-value and confidence sequence follow from the peer's numbers by the
    # formulas written out above (rtol 1e-8), and the running columns are the running
    # minimum and the running intersection of those.
    df = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon = monitor(cf.ExperimentData(df, intent_to_treat="t", cluster_by=cluster), y="y",
                      exogenous_covariates=["x", "dev"], arrival="ts", looks=[400, 1_300, 2_400])
    frame = mon.to_frame()
    order = np.argsort(df.ts.to_numpy(), kind="stable")
    running = {}
    for look, cut in enumerate(mon.n_rows):
        peer, n, nu = _peer_look(df.iloc[order[:cut]], cluster)
        for arm, (est, se) in peer.items():
            row = frame[(frame.look == look) & (frame.arm == arm)]
            assert len(row) == 1
            row = row.iloc[0]
            assert row.cov_type == ("CR1" if cluster else "HC1") and row.dof == nu
            np.testing.assert_allclose([row.estimate, row.std_error], [est, se], rtol=1e-8)
            q = stats.t.ppf(0.975, nu)
            np.testing.assert_allclose([row.p_value, row.ci_lower, row.ci_upper],
                                       [2 * stats.t.sf(abs(est / se), nu), est - q * se, est + q * se], rtol=1e-8)
            av = _av_written_out(est, se, n, nu, mon.g)
            np.testing.assert_allclose([row.av_p_value, row.av_ci_lower, row.av_ci_upper], av, rtol=1e-8)
            p_run, lo_run, hi_run = running.get(arm, (1.0, -np.inf, np.inf))
            running[arm] = (min(p_run, av[0]), max(lo_run, av[1]), min(hi_run, av[2]))
            np.testing.assert_allclose([row.av_p_value_running, row.av_cs_lower, row.av_cs_upper],
                                       running[arm], rtol=1e-8)


def test_batches_equal_arrival_column_and_running_columns():
    df = _frame(1_500)
    data = cf.ExperimentData(df, intent_to_treat="t")
    batches = [cf.ExperimentData(df.iloc[a:b], intent_to_treat="t") for a, b in [(0, 500), (500, 900), (900, 1500)]]
    m1 = monitor(batches, y="y", exogenous_covariates=["x"])
    m2 = monitor(data, y="y", looks=[500, 900, 1500], exogenous_covariates=["x"])
    pd.testing.assert_frame_equal(m1.to_frame(), m2.to_frame())
    f = m1.to_frame()
    for _, grp in f.groupby(["metric", "arm"]):
        assert np.all(np.diff(grp.av_p_value_running) <= 0)
        assert np.all(np.diff(grp.av_cs_upper) <= 0) and np.all(np.diff(grp.av_cs_lower) >= 0)
    first = m1.first_significant()
    assert list(first.columns[-2:]) == ["first_look", "n_rows_at_first_look"]


def test_g_is_fixed_at_the_planned_size():
    from causalflow.linalg.anytime import optimal_g
    df = _frame(1_000)
    mon = monitor(cf.ExperimentData(df, intent_to_treat="t"), y="y", looks=4)
    assert mon.g == pytest.approx(float(optimal_g(1_000, 1_000 - 3, 0.05)), rel=1e-12)
    mon = monitor(cf.ExperimentData(df, intent_to_treat="t"), y="y", looks=4,
                  estimator=LinearModel(av_planned_n=5_000))
    assert mon.g == pytest.approx(float(optimal_g(5_000, 5_000 - 3, 0.05)), rel=1e-12)


def test_meat_moments_are_additive_and_exact():
    rng = np.random.default_rng(5)
    Z = np.c_[np.ones(300), rng.normal(size=(300, 3))]
    X = Z + 0.1 * rng.normal(size=Z.shape)
    Y = rng.normal(size=(300, 2))
    w = rng.uniform(0.5, 2, 300)
    B = rng.normal(size=(4, 2))
    E = Y - X @ B
    direct = np.einsum("i,ik,ia,ib->kab", w ** 2, E ** 2, Z, Z)
    parts = RowMeatMoments.from_block(Z[:100], X[:100], Y[:100], w[:100]) + \
        RowMeatMoments.from_block(Z[100:], X[100:], Y[100:], w[100:])
    np.testing.assert_allclose(parts.meat_z(B), direct, rtol=1e-10)
    codes = rng.integers(0, 7, 300)
    cm = ClusterMoments(7, 4, 2)
    cm.add_block(Z[:150], X[:150], Y[:150], w[:150], codes[:150])
    cm.add_block(Z[150:], X[150:], Y[150:], w[150:], codes[150:])
    S = np.stack([np.einsum("i,ik,ia->ak", w[codes == g], E[codes == g], Z[codes == g]) for g in range(7)])
    D = rng.normal(size=(4, 3))
    np.testing.assert_allclose(cm.score_sums(B, D), np.einsum("gak,am->gkm", S, D), rtol=1e-10)


@pytest.mark.parametrize("kwargs", [dict(looks=0), dict(looks=[5, 3]), dict(looks=[0, 10]),
                                    dict(arrival="nope"), dict(alpha=2.0), dict(looks="many")])
def test_bad_monitor_input(kwargs):
    df = _frame(200)
    with pytest.raises(ValidationError):
        monitor(cf.ExperimentData(df, intent_to_treat="t"), y="y", **kwargs)


@pytest.mark.parametrize("cluster", [None, "store"])
def test_encouragement_and_adaptive_designs_equal_the_core(cluster):
    # 2SLS (ITT and LATE) with inverse-propensity weights: every look equals the core's fit
    # on the rows seen so far (rtol 1e-9), which exercises the generic meat moments (X != Z).
    rng = np.random.default_rng(12)
    n = 2_000
    df = pd.DataFrame({"a": rng.integers(0, 2, n), "x": rng.normal(size=n), "store": rng.integers(0, 40, n),
                       "prop": rng.uniform(0.3, 0.7, n)})
    df["d"] = df.a * (rng.random(n) < 0.7)
    df["y"] = 0.4 * df.d + df.x + rng.normal(size=n) * (1 + df.d)
    kwargs = dict(intent_to_treat="a", treated="d", propensity="prop", cluster_by=cluster)
    cov_type = "CR1" if cluster else "HC1"  # the monitor's score covariances (40 clusters: core default CR3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon = monitor(cf.ExperimentData(df, **kwargs), y="y", exogenous_covariates=["x"], looks=[700, 2_000])
        for look, cut in enumerate(mon.n_rows):
            ref = cf.ExperimentData(df.iloc[:cut], **kwargs).add_metric(
                y="y", exogenous_covariates=["x"]).fit(LinearModel(cov_type=cov_type, av_g=mon.g)).infer_effect()
            a, b = mon.looks[look].to_frame(), ref.to_frame()
            assert list(a.estimand) == list(b.estimand) == ["ITT", "LATE"]
            for col in ["estimate", "std_error", "av_p_value", "av_ci_lower", "av_ci_upper"]:
                np.testing.assert_allclose(a[col], b[col], rtol=1e-9, err_msg=col)


def test_looks_too_early_to_fit_are_nan():
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"t": np.r_[np.zeros(20, int), rng.integers(0, 2, n - 20)], "x": rng.normal(size=n)})
    df["y"] = rng.normal(size=n) + df.t
    mon = monitor(cf.ExperimentData(df, intent_to_treat="t"), y="y", exogenous_covariates=["x"],
                  looks=[3, 15, 40, 300])          # 3 rows < 4 parameters; 15 rows: one arm only
    f = mon.to_frame()
    assert f.loc[:1, ["estimate", "av_p_value", "av_cs_lower", "av_p_value_running"]].isna().all().all()
    assert f.loc[2:, ["estimate", "av_p_value", "av_cs_lower"]].notna().all().all()
    assert mon.looks[0].to_dict()["effects"][0]["av_p_value"] is None
