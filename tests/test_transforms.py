"""Capping and ratio-metric linearisation against independent computations."""

import numpy as np
import pytest

from causalflow.errors import ValidationError
from causalflow.transforms import cap, linearize_ratio


def test_cap_quantiles_pooled_and_input_untouched():
    rng = np.random.default_rng(0)
    y = rng.lognormal(size=1001)
    y[5] = np.nan
    before = y.copy()
    c = cap(y, lower_quantile=0.01, upper_quantile=0.99)
    np.testing.assert_array_equal(y, before)          # never modified
    finite = y[~np.isnan(y)]
    assert c.upper == np.quantile(finite, 0.99) and c.lower == np.quantile(finite, 0.01)
    ref = np.clip(y, c.lower, c.upper)
    np.testing.assert_array_equal(c.values, ref)
    assert c.n_upper == int(np.sum(finite > c.upper)) and c.n_lower == int(np.sum(finite < c.lower))
    assert np.isnan(c.values[5])


def test_cap_values_and_errors():
    c = cap([1.0, 5.0, -3.0], lower=0.0)
    np.testing.assert_array_equal(c.values, [1.0, 5.0, 0.0])
    with pytest.raises(ValidationError, match="upper"):
        cap([1.0], upper=1.0, upper_quantile=0.9)
    with pytest.raises(ValidationError, match="quantile"):
        cap([1.0], upper_quantile=1.5)
    with pytest.raises(ValidationError, match="lower"):
        cap([1.0, 2.0], lower=3.0, upper=2.0)


def _delta_ratio_var(y, n):
    """Textbook delta method for R = mean(Y)/mean(N) with 1/n moments (Deng et al. 2018)."""
    k = y.size
    my, mn = y.mean(), n.mean()
    vy, vn = y.var(), n.var()
    cyn = np.mean((y - my) * (n - mn))
    r = my / mn
    return r, (vy - 2 * r * cyn + r ** 2 * vn) / (k * mn ** 2)


def test_linearised_ratio_matches_delta_method():
    rng = np.random.default_rng(7)
    k = 3000
    arm = rng.integers(0, 3, k)
    sessions = rng.poisson(4, k) + 1.0
    orders = rng.binomial(sessions.astype(int), 0.1 + 0.02 * arm).astype(float)
    lin = linearize_ratio(orders, sessions, arm)
    for a in range(3):
        r, var = _delta_ratio_var(orders[arm == a], sessions[arm == a])
        z = lin.values[arm == a]
        # arm mean of z is the ratio of sums exactly; its 1/n variance / n is the delta variance
        assert z.mean() == pytest.approx(r, rel=1e-12)
        assert lin.ratio[a] == pytest.approx(r, rel=1e-14)
        assert z.var() / z.size == pytest.approx(var, rel=1e-10)


def test_linearise_missing_and_errors():
    lin = linearize_ratio([1.0, np.nan, 2.0, 3.0], [1.0, 1.0, 2.0, 1.0], np.array([0, 0, 1, 1]))
    assert np.isnan(lin.values[1])
    with pytest.raises(ValidationError, match="denominator"):
        linearize_ratio([1.0, 2.0], [0.0, 1.0], np.array([0, 1]))
    with pytest.raises(ValidationError, match="arm_codes"):
        linearize_ratio([1.0, 2.0], [1.0, 1.0], np.array([0.5, 1.0]))


# -- wired into add_metric -------------------------------------------------------------

import pandas as pd  # noqa: E402

import causalflow as cf  # noqa: E402


def test_add_metric_cap_equals_precapped_column():
    rng = np.random.default_rng(11)
    n = 1000
    df = pd.DataFrame({"t": rng.integers(0, 2, n), "x": rng.normal(size=n)})
    df["revenue"] = rng.lognormal(1 + 0.1 * df.t, 1.2)
    before = df.copy()
    data = cf.ExperimentData(df, intent_to_treat="t")
    eff = data.add_metric(y="revenue", exogenous_covariates=["x"],
                          cap={"revenue": {"upper_quantile": 0.99}}).fit(cf.LinearModel).infer_effect()
    pd.testing.assert_frame_equal(df, before)                      # user's table untouched
    threshold = np.quantile(df.revenue, 0.99)                      # pooled over both arms
    ref_df = df.assign(manual=np.minimum(df.revenue, threshold))
    ref = cf.ExperimentData(ref_df, intent_to_treat="t").add_metric(
        y="manual", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect()
    got, want = eff.to_frame().iloc[0], ref.to_frame().iloc[0]
    assert got.metric == "revenue_capped"
    assert got.estimate == pytest.approx(want.estimate, rel=1e-12)
    assert got.std_error == pytest.approx(want.std_error, rel=1e-12)


@pytest.mark.parametrize("clustered", [False, True])
def test_add_metric_ratio_is_delta_method(clustered):
    # rows are sessions; users (clusters) are randomised; ratio = orders / sessions-length
    rng = np.random.default_rng(12)
    users = 300
    per_user = rng.integers(1, 6, users)
    user = np.repeat(np.arange(users), per_user)
    t = rng.integers(0, 2, users)[user]
    pages = rng.poisson(3, user.size) + 1.0
    orders = rng.binomial(pages.astype(int), 0.2 + 0.05 * t + 0.1 * rng.random(users)[user]).astype(float)
    df = pd.DataFrame({"t": t, "user": user, "orders": orders, "pages": pages})
    if clustered:
        data, cov = cf.ExperimentData(df, intent_to_treat="t", cluster_by="user"), "CR0"
    else:
        data, cov = cf.ExperimentData(df, intent_to_treat="t"), "HC0"
    eff = data.add_metric(y=None, ratio={"orders_per_page": ("orders", "pages")}).fit(
        cf.LinearModel(cov_type=cov)).infer_effect().to_frame().iloc[0]
    # delta method written out: Var(R_a) = sum_g (sum_{i in g} (Y_i - R_a N_i))^2 / (sum_a N)^2
    var, ratios = 0.0, []
    for a in (0, 1):
        s = df[df.t == a]
        r = s.orders.sum() / s.pages.sum()
        ratios.append(r)
        resid = s.orders - r * s.pages
        sums = resid.groupby(s.user).sum() if clustered else resid
        var += np.sum(sums.to_numpy() ** 2) / s.pages.sum() ** 2
    assert eff.metric == "orders_per_page"
    assert eff.estimate == pytest.approx(ratios[1] - ratios[0], rel=1e-10)
    assert eff.std_error == pytest.approx(np.sqrt(var), rel=1e-8)


def test_add_metric_transform_errors():
    df = pd.DataFrame({"t": [0, 1] * 5, "y": np.arange(10.0), "y_capped": 1.0})
    data = cf.ExperimentData(df, intent_to_treat="t")
    with pytest.raises(ValidationError, match="cap"):
        data.add_metric(y="y", cap={"z": {"upper": 1.0}})
    with pytest.raises(ValidationError, match="cap"):
        data.add_metric(y="y", cap={"y": {"top": 1.0}})
    with pytest.raises(ValidationError, match="already"):
        data.add_metric(y="y", cap={"y": {"upper": 5.0}})
    with pytest.raises(ValidationError, match="ratio"):
        data.add_metric(y="y", ratio={"r": ("y", "missing")})
