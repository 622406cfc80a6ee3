"""The platform checks wired into the grammar: adjust, check_sample_ratio, simulate_aa."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

import causalflow as cf
from causalflow.errors import ValidationError
from causalflow.linalg.multitest import maxt_critical_value
from causalflow.platform.checks import simulate_aa


def _multi_arm(seed=0, n=900):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"arm": rng.choice(["control", "b", "c"], n), "x": rng.normal(size=n)})
    common = rng.normal(size=n)
    df["y1"] = (df.arm == "b") * 0.3 + df.x + common + rng.normal(size=n)
    df["y2"] = (df.arm == "c") * 0.1 + common + rng.normal(size=n)
    return df


@pytest.mark.parametrize("method,sm", [("holm", "holm"), ("bonferroni", "bonferroni"),
                                       ("bh", "fdr_bh"), ("by", "fdr_by")])
def test_adjust_equals_multipletests_on_the_table(method, sm):
    df = _multi_arm()
    eff = cf.ExperimentData(df, intent_to_treat="arm", control="control").add_metric(
        y=["y1", "y2"], exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect(
        condition_on=["x > 0", "x <= 0"])
    adj = eff.adjust(method)
    frame = adj.to_frame()
    assert len(frame) == 8
    ref = multipletests(eff.to_frame().p_value.to_numpy(), method=sm)[1]
    np.testing.assert_allclose(frame.p_value_adjusted.to_numpy(), ref, rtol=1e-12)
    # the simultaneous intervals use the max-t value of the joint covariance of the 8 effects
    c = maxt_critical_value(eff.cov, 0.05, seed=0).critical_value
    np.testing.assert_allclose(frame.sim_ci_upper - frame.estimate, c * frame.std_error, rtol=1e-12)
    assert stats.norm.isf(0.025) < c < stats.norm.isf(0.025 / 8)
    # the base columns are unchanged, and the record serialises
    pd.testing.assert_frame_equal(frame[eff.to_frame().columns], eff.to_frame())
    d = adj.to_dict()
    assert d["adjustment"]["method"] == method and "p_value_adjusted" in d["columns"]
    assert "p_adj" in adj.summary()


def test_adjust_maxt_pvalues_and_bad_method():
    df = _multi_arm(seed=3)
    eff = cf.ExperimentData(df, intent_to_treat="arm", control="control").add_metric(
        y=["y1", "y2"]).fit(cf.LinearModel).infer_effect()
    adj = eff.adjust("maxt")
    p = adj.to_frame().p_value_adjusted.to_numpy()
    raw = eff.to_frame().p_value.to_numpy()
    bonf = np.minimum(1, raw * len(raw))
    assert np.all(p >= raw - 1e-12) and np.all(p <= bonf + 1e-4)
    with pytest.raises(ValidationError, match="method"):
        eff.adjust("sidak")


def _clustered(seed=0, g=60, m=5, share=0.5):
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(g), m)
    t = (rng.random(g) < share).astype(int)[cluster]
    y = rng.normal(size=g)[cluster] + rng.normal(size=g * m)
    return pd.DataFrame({"t": t, "y": y, "store": cluster, "x": rng.normal(size=g * m)})


def test_check_sample_ratio_units_and_clusters_equal_scipy():
    df = _clustered(seed=4)
    data = cf.ExperimentData(df, intent_to_treat="t", cluster_by="store")
    check = data.check_sample_ratio({0: 0.4, 1: 0.6})
    units = df.t.value_counts().sort_index().to_numpy()
    clusters = df.groupby("store").t.first().value_counts().sort_index().to_numpy()
    for got, counts in ((check.units, units), (check.clusters, clusters)):
        ref = stats.chisquare(counts, f_exp=counts.sum() * np.array([0.4, 0.6]))
        assert got.statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert got.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert check.p_value == check.clusters.p_value       # the valid test of a cluster design
    assert check.expected_source == "argument"
    assert data.check_sample_ratio().expected_source == "equal split (assumed)"
    with pytest.raises(ValidationError, match="expected"):
        data.check_sample_ratio({0: 0.5, 2: 0.5})


def test_sample_ratio_mismatch_warns_in_design_and_summary():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"t": np.r_[np.zeros(5600), np.ones(4400)].astype(int), "y": rng.normal(size=10_000)})
    data = cf.ExperimentData(df, intent_to_treat="t", propensity=0.5)
    assert data.design.sample_ratio is not None and data.design.sample_ratio.mismatch
    assert "WARNING" in str(data.design)
    summary = data.add_metric(y="y").fit(cf.LinearModel).infer_effect().summary()
    assert "sample ratio mismatch" in summary
    # a fine split does not warn; an unknown allocation is not checked automatically
    ok = cf.ExperimentData(df.assign(t=rng.permutation(np.r_[np.zeros(5000), np.ones(5000)]).astype(int)),
                           intent_to_treat="t", propensity=0.5)
    assert not ok.design.sample_ratio.mismatch and "WARNING" not in str(ok.design)
    assert cf.ExperimentData(df, intent_to_treat="t").design.sample_ratio is None


def test_simulate_aa_respects_clusters_and_leaves_data_alone():
    df = _clustered(seed=1, g=30, m=4)
    before = df.copy()
    data = cf.ExperimentData(df, intent_to_treat="t", cluster_by="store")
    aa = simulate_aa(data.add_metric(y="y", exogenous_covariates=["x"]), n=20, seed=5)
    pd.testing.assert_frame_equal(df, before)
    assert aa.p_values.shape == (20, 1)
    # the rate is the share of the 20 re-randomisations with p <= 0.05, and lies within
    # 0.05 + 2.5 MC SE (SE = sqrt(.05 .95 / 20) = 4.9 pp: at most 3 of 20)
    assert aa.false_positive_rate == np.mean(aa.p_values[:, 0] <= 0.05)
    assert aa.false_positive_rate <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 20)
    again = simulate_aa(data, n=20, seed=5, y="y", exogenous_covariates=["x"])
    np.testing.assert_array_equal(aa.p_values, again.p_values)     # seeded
    with pytest.raises(ValidationError, match="y"):
        simulate_aa(data, n=5)


@pytest.mark.slow
def test_simulate_aa_false_positive_rate_clustered():
    """A/A on a clustered table (100 clusters of 2-12 rows, ICC ~ 0.3, a covariate): the
    false-positive rate of the pipeline (default: CR1 with 100 clusters, t(G - 1) p-values)
    over 800 re-randomisations must lie within 5% +- 2.5 MC SE (SE = sqrt(.05 .95 / 800)
    = 0.77 pp: [3.1%, 6.9%]); the anytime-valid rate at most 5% + 2 MC SE (one-sided: the
    anytime-valid test is conservative by design)."""
    rng = np.random.default_rng(2024)
    g = 100
    sizes = rng.integers(2, 13, g)
    cluster = np.repeat(np.arange(g), sizes)
    n = cluster.size
    x = rng.normal(size=n)
    y = rng.normal(size=g)[cluster] * 0.7 + 0.5 * x + rng.standard_t(5, size=n)
    t = (rng.random(g) < 0.5).astype(int)[cluster]
    df = pd.DataFrame({"t": t, "y": y, "x": x, "store": cluster})
    data = cf.ExperimentData(df, intent_to_treat="t", cluster_by="store")
    aa = simulate_aa(data, n=800, seed=7, y="y", exogenous_covariates=["x"])
    se = np.sqrt(0.05 * 0.95 / 800)
    print(f"A/A: false-positive rate {aa.false_positive_rate:.4f}, anytime-valid {aa.av_false_positive_rate:.4f}")
    assert abs(aa.false_positive_rate - 0.05) <= 2.5 * se, aa
    assert aa.av_false_positive_rate <= 0.05 + 2 * se


def test_adjusted_effects_print_as_a_table():
    """repr of an adjusted result is the readable table, not a dump of the record's arrays."""
    import numpy as np
    import pandas as pd

    import causalflow as cf
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"t": rng.integers(0, 2, 300), "y": rng.normal(size=300), "z": rng.normal(size=300)})
    adjusted = cf.ExperimentData(df, intent_to_treat="t").add_metric(y=["y", "z"]).fit(
        cf.LinearModel).infer_effect().adjust(method="holm")
    text = repr(adjusted)
    assert text.splitlines()[0].split()[:3] == ["metric", "arm", "condition"]
    assert "array(" not in text
