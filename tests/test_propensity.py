"""The propensity column means what the field means (Rosenbaum & Rubin 1983; API.md section 1).

Two arms: ``propensity="p"`` is P(assigned to the treatment arm | unit); treated rows are
weighted by 1/p, control rows by 1/(1 - p). Several arms: a mapping arm -> column of that
arm's probability; each row is weighted by 1 / its own arm's column.

The fits are compared with statsmodels' WLS on a design matrix built here: regressors
[1, A, Xc, A * Xc] with Xc = x minus its weighted mean (Lin 2013), weights as above; HC1
against ``cov_type="HC1"``, CR1 against ``cov_type="cluster"`` (G/(G-1) (n-1)/(n-p)).

Tolerance rtol 1e-8: both sides solve the same weighted normal equations in double
precision (causalflow from cross-products, statsmodels by a pinv of the whitened design);
on these designs (condition number of X'WX below 30) they differ by O(cond eps), observed
below 1e-14, while a wrong weight on any row moves the coefficients by far more than 1e-8.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import causalflow as cf

RTOL = 1e-8
ARMS3 = ("ctl", "b", "c")


# -- simulated adaptive experiments -----------------------------------------------------------------
def two_arm(seed: int, clustered: bool, n_clusters: int = 60) -> pd.DataFrame:
    """P(treatment) depends on x (by cluster when clustered); heterogeneous effect in x."""
    rng = np.random.default_rng(seed)
    if clustered:
        g = np.repeat(np.arange(n_clusters), rng.integers(3, 15, n_clusters))
        p_cluster = rng.uniform(0.15, 0.85, n_clusters)
        a = (rng.random(n_clusters) < p_cluster).astype(int)
        a[:2] = [0, 1]
        p, a = p_cluster[g], a[g]
    else:
        g = np.zeros(700, int)
        x0 = rng.normal(size=len(g))
        p = np.clip(0.5 + 0.35 * np.tanh(x0), 0.1, 0.9)
        a = (rng.random(len(g)) < p).astype(int)
    n = len(g)
    x = rng.normal(size=n) + 0.8 * (p - 0.5)
    y = 1.0 + 0.5 * a + 0.8 * x + 0.3 * a * x + rng.normal(size=n) * (1 + 0.5 * a)
    return pd.DataFrame({"a": a, "p_treat": p, "x": x, "g": g, "y": y})


def three_arm(seed: int, clustered: bool, n_clusters: int = 60) -> pd.DataFrame:
    """Per-row (or per-cluster) probabilities of the three arms, one column each, summing to 1."""
    rng = np.random.default_rng(seed)
    if clustered:
        g = np.repeat(np.arange(n_clusters), rng.integers(3, 15, n_clusters))
        m = n_clusters
    else:
        g = np.zeros(900, int)
        m = len(g)
    scores = rng.normal(size=(m, 3)) * 0.6
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    drawn = np.array([rng.choice(3, p=row) for row in probs])
    drawn[:3] = [0, 1, 2]
    if clustered:
        probs, drawn = probs[g], drawn[g]
    n = len(g)
    x = rng.normal(size=n) + probs[:, 1]
    effect = np.array([0.0, 0.4, -0.3])[drawn]
    y = 2.0 + effect + 0.7 * x + 0.5 * (drawn == 1) * x + rng.normal(size=n)
    return pd.DataFrame({"arm": np.array(ARMS3)[drawn], "p_ctl": probs[:, 0], "p_b": probs[:, 1],
                         "p_c": probs[:, 2], "x": x, "g": g, "y": y})


def reference(y, indicators: np.ndarray, w, x, groups):
    """statsmodels WLS of y on [1, A, Xc, A * Xc] (Xc centred at the weighted mean of x)."""
    blocks = [np.ones(len(y)), indicators]
    if x is not None:
        xc = x - np.average(x, weights=w)
        blocks += [xc, indicators * xc[:, None]]
    X = np.column_stack(blocks)
    if groups is None:
        return sm.WLS(y, X, weights=w).fit(cov_type="HC1")
    return sm.WLS(y, X, weights=w).fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": True})


def compare(model, res) -> tuple[float, float]:
    """Assert coefficients and standard errors equal statsmodels'; return the max relative gaps."""
    b, se = model.params()["y"].to_numpy(), model.std_errors()["y"].to_numpy()
    np.testing.assert_allclose(b, res.params, rtol=RTOL)
    np.testing.assert_allclose(se, res.bse, rtol=RTOL)
    return float(np.max(np.abs(b / res.params - 1))), float(np.max(np.abs(se / res.bse - 1)))


# -- against statsmodels ----------------------------------------------------------------------------
@pytest.mark.parametrize("covariate", [False, True], ids=["nocov", "x"])
@pytest.mark.parametrize("clustered", [False, True], ids=["HC1", "CR1"])
def test_two_arms_equal_statsmodels_wls(covariate, clustered):
    df = two_arm(1 + clustered, clustered)
    data = cf.ExperimentData(df, intent_to_treat="a", propensity="p_treat",
                             cluster_by="g" if clustered else None)
    assert data.design.adaptive
    a, p = df.a.to_numpy(), df.p_treat.to_numpy()
    w = np.where(a == 1, 1 / p, 1 / (1 - p))
    np.testing.assert_array_equal(data.weights, w)
    cov_type = "CR1" if clustered else "HC1"
    model = data.add_metric(y="y", exogenous_covariates=["x"] if covariate else None).fit(
        cf.LinearModel(cov_type=cov_type))
    res = reference(df.y.to_numpy(), a[:, None].astype(float), w, df.x.to_numpy() if covariate else None,
                    df.g.to_numpy() if clustered else None)
    compare(model, res)
    effect = model.infer_effect().to_frame().iloc[0]
    assert effect.estimate == pytest.approx(res.params[1], rel=RTOL)
    assert effect.std_error == pytest.approx(res.bse[1], rel=RTOL)


@pytest.mark.parametrize("covariate", [False, True], ids=["nocov", "x"])
@pytest.mark.parametrize("clustered", [False, True], ids=["HC1", "CR1"])
def test_three_arms_mapping_equals_statsmodels_wls(covariate, clustered):
    df = three_arm(3 + clustered, clustered)
    data = cf.ExperimentData(df, intent_to_treat="arm", control="ctl",
                             propensity={"ctl": "p_ctl", "b": "p_b", "c": "p_c"},
                             cluster_by="g" if clustered else None)
    assert data.design.adaptive and data.arms == ARMS3
    own = np.select([df.arm == "ctl", df.arm == "b"], [df.p_ctl, df.p_b], df.p_c)
    w = 1 / own
    np.testing.assert_array_equal(data.weights, w)
    cov_type = "CR1" if clustered else "HC1"
    model = data.add_metric(y="y", exogenous_covariates=["x"] if covariate else None).fit(
        cf.LinearModel(cov_type=cov_type))
    indicators = np.column_stack([(df.arm == "b"), (df.arm == "c")]).astype(float)
    res = reference(df.y.to_numpy(), indicators, w, df.x.to_numpy() if covariate else None,
                    df.g.to_numpy() if clustered else None)
    compare(model, res)
    effects = model.infer_effect().to_frame().set_index("arm")
    for j, arm in enumerate(("b", "c")):
        assert effects.loc[arm, "estimate"] == pytest.approx(res.params[1 + j], rel=RTOL)
        assert effects.loc[arm, "std_error"] == pytest.approx(res.bse[1 + j], rel=RTOL)


def test_treatment_arm_is_the_arm_that_is_not_control():
    # labels 1 / 2 with control=2: the column is P(assigned to arm 1), so label-1 rows get 1/p
    df = two_arm(5, False).assign(a=lambda d: np.where(d.a == 1, 1, 2))
    data = cf.ExperimentData(df, intent_to_treat="a", control=2, propensity="p_treat")
    p = df.p_treat.to_numpy()
    np.testing.assert_array_equal(data.weights, np.where(df.a == 1, 1 / p, 1 / (1 - p)))
    text = df.assign(a=np.where(df.a == 1, "treatment", "control"))
    data = cf.ExperimentData(text, intent_to_treat="a", propensity="p_treat")
    np.testing.assert_array_equal(data.weights, np.where(text.a == "treatment", 1 / p, 1 / (1 - p)))


def test_the_assignment_is_the_instrument_when_one_is_named():
    # intent_to_treat=D, instrument=Z declares the same design as intent_to_treat=Z, treated=D:
    # the propensity score is P(Z = 1), so Z picks 1/p or 1/(1 - p)
    df = two_arm(8, False)
    df["d"] = np.where(np.random.default_rng(8).random(len(df)) < 0.8, df.a, 0)
    p = df.p_treat.to_numpy()
    expected = np.where(df.a == 1, 1 / p, 1 / (1 - p))
    z_first = cf.ExperimentData(df, intent_to_treat="a", treated="d", propensity="p_treat")
    d_first = cf.ExperimentData(df, intent_to_treat="d", instrument="a", propensity="p_treat")
    np.testing.assert_array_equal(z_first.weights, expected)
    np.testing.assert_array_equal(d_first.weights, expected)


def test_two_arm_mapping_equals_the_single_column():
    df = two_arm(6, False).assign(p_ctl=lambda d: 1 - d.p_treat)
    one = cf.ExperimentData(df, intent_to_treat="a", propensity="p_treat")
    two = cf.ExperimentData(df, intent_to_treat="a", propensity={0: "p_ctl", 1: "p_treat"})
    # 1 - (1 - p) differs from p by an ulp at most
    np.testing.assert_allclose(two.weights, one.weights, rtol=1e-14)
    a = one.add_metric(y="y", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect().to_frame()
    b = two.add_metric(y="y", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect().to_frame()
    np.testing.assert_allclose(b[["estimate", "std_error"]], a[["estimate", "std_error"]], rtol=1e-10)


def test_bandit_log_of_the_arm_shown_converts_to_the_propensity_score():
    # the conversion of the docstrings: p_treat = where(arm == treatment, p_shown, 1 - p_shown)
    df = two_arm(7, False)
    shown = np.where(df.a == 1, df.p_treat, 1 - df.p_treat)
    log = df.drop(columns="p_treat").assign(p_shown=shown)
    converted = log.assign(p_treat=np.where(log.a == 1, log.p_shown, 1 - log.p_shown))
    data = cf.ExperimentData(converted, intent_to_treat="a", propensity="p_treat")
    np.testing.assert_allclose(data.weights, 1 / shown, rtol=1e-14)


# -- the bug report ---------------------------------------------------------------------------------
def test_stratified_propensities_recover_the_effect():
    """P(treatment) 0.2 / 0.5 / 0.8 by stratum, baselines 0 / 1 / 2, effect 0.4 everywhere.

    The unweighted difference in means is confounded by the stratum (expected 1.2); the old
    reading (every row weighted by 1/p_treat) expects 1.11. The weighted fit is unbiased for
    0.4; its SE here is about 0.02, so it must lie within 4 SE of 0.4 (a band that a correct
    estimator leaves with probability 6e-5) while both wrong readings are > 30 SE away."""
    rng = np.random.default_rng(2024)
    n = 30_000
    stratum = rng.integers(0, 3, n)
    p = np.array([0.2, 0.5, 0.8])[stratum]
    a = (rng.random(n) < p).astype(int)
    y = stratum.astype(float) + 0.4 * a + rng.normal(size=n)
    df = pd.DataFrame({"a": a, "p_treat": p, "y": y})
    effect = (cf.ExperimentData(df, intent_to_treat="a", propensity="p_treat").add_metric(y="y")
              .fit(cf.LinearModel).infer_effect().to_frame().iloc[0])
    assert effect.std_error < 0.03
    assert abs(effect.estimate - 0.4) < 4 * effect.std_error
    for wrong in (np.ones(n), 1 / p):  # unweighted; the old meaning
        X = np.column_stack([np.ones(n), a])
        off = sm.WLS(y, X, weights=wrong).fit().params[1]
        assert abs(off - 0.4) > 30 * effect.std_error


# -- validation -------------------------------------------------------------------------------------
def expect_error(call, *fragments):
    with pytest.raises(cf.ValidationError) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


@pytest.fixture
def df3() -> pd.DataFrame:
    return three_arm(11, False)


def E3(df, **kw):
    return cf.ExperimentData(df, intent_to_treat="arm", control="ctl", **kw)


MAPPING = {"ctl": "p_ctl", "b": "p_b", "c": "p_c"}


def test_missing_column():
    df = two_arm(0, False)
    expect_error(lambda: cf.ExperimentData(df, intent_to_treat="a", propensity="nope"),
                 "propensity", "'nope'", "not in the data")


def test_missing_column_in_mapping(df3):
    expect_error(lambda: E3(df3, propensity={**MAPPING, "b": "nope"}), "propensity['b']", "'nope'",
                 "not in the data")


def test_nan(df3):
    df = two_arm(0, False)
    bad = df.assign(p_treat=df.p_treat.where(df.index != 3))
    expect_error(lambda: cf.ExperimentData(bad, intent_to_treat="a", propensity="p_treat"),
                 "propensity", "'p_treat'", "missing")
    bad3 = df3.assign(p_c=df3.p_c.where(df3.index != 3))
    expect_error(lambda: E3(bad3, propensity=MAPPING), "propensity['c']", "'p_c'", "missing")


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.2, np.inf])
def test_outside_open_unit_interval(df3, value):
    df = two_arm(0, False)
    for row in (0, 1):  # a control row and a treated row: P(treatment) must be in (0, 1) on both
        r = int(np.flatnonzero(df.a.to_numpy() == row)[0])
        bad = df.assign(p_treat=df.p_treat.where(df.index != r, value))
        expect_error(lambda bad=bad: cf.ExperimentData(bad, intent_to_treat="a", propensity="p_treat"),
                     "propensity", "'p_treat'", "outside (0, 1)")
    # also a column of an arm the row did not get
    r = int(np.flatnonzero(df3.arm.to_numpy() != "b")[0])
    bad3 = df3.assign(p_b=df3.p_b.where(df3.index != r, value))
    expect_error(lambda: E3(bad3, propensity=MAPPING), "propensity['b']", "'p_b'", "outside (0, 1)")


def test_not_numeric(df3):
    expect_error(lambda: E3(df3, propensity={**MAPPING, "c": "arm"}), "propensity['c']", "'arm'", "not numeric")


def test_weights_that_overflow_name_the_column(df3):
    r = int(np.flatnonzero(df3.arm.to_numpy() == "c")[0])
    bad = df3.assign(p_c=df3.p_c.where(df3.index != r, 5e-324))
    # refused before the row sums are checked
    expect_error(lambda: E3(bad, propensity=MAPPING), "propensity['c']", "'p_c'", "overflow")


def test_single_column_with_three_arms_explains_the_mapping(df3):
    expect_error(lambda: E3(df3, propensity="p_b"), "propensity", "'p_b'", "3 arms", "mapping arm -> column",
                 "'ctl': 'p_ctl'")


def test_mapping_missing_an_arm(df3):
    expect_error(lambda: E3(df3, propensity={"ctl": "p_ctl", "b": "p_b"}), "propensity", "every arm",
                 "missing: ['c']")


def test_mapping_with_an_unknown_arm(df3):
    expect_error(lambda: E3(df3, propensity={**MAPPING, "d": "p_c"}), "propensity", "not arms: ['d']")


def test_mixed_mapping(df3):
    expect_error(lambda: E3(df3, propensity={"ctl": "p_ctl", "b": 0.3, "c": "p_c"}), "propensity",
                 "not a mix")
    expect_error(lambda: E3(df3, propensity={"ctl": None, "b": None, "c": None}), "propensity", "numbers")


def test_probabilities_not_summing_to_one_warn_and_fit(df3):
    bad = df3.assign(p_c=df3.p_c.where(df3.index != 7, df3.p_c * 0.5))
    with pytest.warns(cf.DesignWarning, match=r"do not sum to 1 on 1 of 900 rows \(row 7"):
        data = E3(bad, propensity=MAPPING)
    own = np.select([bad.arm == "ctl", bad.arm == "b"], [bad.p_ctl, bad.p_b], bad.p_c)
    np.testing.assert_array_equal(data.weights, 1 / own)
    # within the tolerance (1e-6) no warning (DesignWarning is an error in this suite)
    close = df3.assign(p_c=df3.p_c + 5e-7)
    E3(close, propensity=MAPPING)


def test_numbers_stay_the_planned_allocation(df3):
    df = two_arm(0, False)
    data = cf.ExperimentData(df, intent_to_treat="a", propensity=0.3)
    assert data.weights is None and not data.design.adaptive
    assert data.design.expected_allocation == {0: 0.7, 1: 0.3}
    data = E3(df3, propensity={"ctl": 0.5, "b": 0.25, "c": 0.25})
    assert data.weights is None and data.design.expected_allocation == {"ctl": 0.5, "b": 0.25, "c": 0.25}


def test_the_frame_is_not_modified(df3):
    before = df3.copy()
    E3(df3, propensity=MAPPING).add_metric(y="y", exogenous_covariates=["x"]).fit(cf.LinearModel)
    pd.testing.assert_frame_equal(df3, before)
