"""Effects.project: weighted combinations of conditional effects and target-table projection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import causalflow as cf
from causalflow.errors import ValidationError
from causalflow.models.linear import LinearModel

C1, C2 = "econ == 'strong'", "econ == 'weak'"


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(4)
    n = 3_000
    df = pd.DataFrame({"t": rng.integers(0, 3, n), "econ": rng.choice(["strong", "weak"], n, p=[0.3, 0.7]),
                       "x": rng.normal(size=n) + 1.0})
    weak = (df.econ == "weak").to_numpy()
    df["y"] = df.t * (0.5 + weak) + 0.3 * df.t * df.x + df.x + rng.normal(size=n)
    df["z"] = 0.2 * df.t - weak + rng.normal(size=n)
    model = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        y=["y", "z"], exogenous_covariates=["econ", "x"]).fit(LinearModel)
    return df, model


def test_projection_equals_hand_computed_weighted_sum_and_wvw(fitted):
    _, model = fitted
    eff = model.infer_effect(condition_on=[C1, C2])
    proj = eff.project({C1: 0.2, C2: 0.8})
    tab, ptab = eff.to_frame(), proj.to_frame()
    assert len(ptab) == 4                                        # 2 metrics x 2 arms
    W = np.zeros((len(ptab), len(tab)))
    for i, row in ptab.iterrows():
        i1 = tab.index[(tab.metric == row.metric) & (tab.arm == row.arm) & (tab.condition == C1)][0]
        i2 = tab.index[(tab.metric == row.metric) & (tab.arm == row.arm) & (tab.condition == C2)][0]
        w = np.array([0.2, 0.8])
        sub = eff.cov[np.ix_([i1, i2], [i1, i2])]
        # rtol 1e-12: the same arithmetic in a different order
        assert row.estimate == pytest.approx(0.2 * tab.estimate[i1] + 0.8 * tab.estimate[i2], rel=1e-12)
        assert row.std_error == pytest.approx(np.sqrt(w @ sub @ w), rel=1e-12)
        W[i, [i1, i2]] = w
    np.testing.assert_allclose(proj.cov, W @ eff.cov @ W.T, rtol=1e-12)   # across arms and metrics
    assert np.all(np.isfinite(ptab[["av_p_value", "av_ci_lower", "av_ci_upper"]].to_numpy()))


def test_conditions_the_call_can_infer(fitted):
    _, model = fitted
    direct = model.infer_effect(condition_on=[C1, C2]).project({C1: 0.5, C2: 0.5}).to_frame()
    inferred = model.infer_effect().project({C1: 0.5, C2: 0.5}).to_frame()
    np.testing.assert_allclose(inferred.estimate, direct.estimate, rtol=1e-12)
    np.testing.assert_allclose(inferred.std_error, direct.std_error, rtol=1e-10)


@pytest.mark.parametrize("weights", [
    {C1: 0.2, C2: 0.7},                    # does not sum to 1
    {C1: 0.5, "region == 'x'": 0.5},       # unknown column: cannot be inferred
    {C1: 0.5, C2: "half"},                 # not a number
    {},                                    # empty
    {C1: float("nan"), C2: 1.0},
    {C1: 0.5, "econ ==": 0.5},             # bad syntax
])
def test_bad_weights(fitted, weights):
    _, model = fitted
    with pytest.raises(ValidationError):
        model.infer_effect(condition_on=[C1, C2]).project(weights)


def test_target_table_projection_matches_coefficients(fitted):
    # Independent reference from the public coefficient API: the core's covariates are
    # centred at their mean mu over the fit's rows, so the effect at the target's means is
    # b_arm + sum_l (xbar_l - mu_l) b_{arm:l}, with variance d'Vd (rtol 1e-10).
    df, model = fitted
    rng = np.random.default_rng(8)
    target = pd.DataFrame({"econ": rng.choice(["strong", "weak"], 400, p=[0.8, 0.2]),
                           "x": rng.normal(size=400) + 2.0})
    proj = model.infer_effect().project(target).to_frame()
    params, covs = model.params(), model.cov_params()
    names = model.names
    mu = {"econ[weak]": (df.econ == "weak").mean(), "x": df.x.mean()}
    xt = {"econ[weak]": (target.econ == "weak").mean(), "x": target.x.mean()}
    for _, row in proj.iterrows():
        arm = f"t[{row.arm}]"
        d = np.zeros(len(names))
        d[names.index(arm)] = 1.0
        for c in ("econ[weak]", "x"):
            d[names.index(f"{arm}:{c}")] = xt[c] - mu[c]
        assert row.estimate == pytest.approx(d @ params[row.metric].to_numpy(), rel=1e-10)
        assert row.std_error == pytest.approx(np.sqrt(d @ covs[row.metric].to_numpy() @ d), rel=1e-10)
    # the experiment's own covariate mix gives back the average effect
    own = model.infer_effect().project(df[["econ", "x"]]).to_frame()
    ate = model.infer_effect().to_frame()
    np.testing.assert_allclose(own.estimate, ate.estimate, rtol=1e-10)
    np.testing.assert_allclose(own.std_error, ate.std_error, rtol=1e-10)


@pytest.mark.parametrize("target", [pd.DataFrame({"x": [1.0, 2.0]}),
                                    pd.DataFrame({"econ": ["boom", "weak"], "x": [1.0, 2.0]}),
                                    pd.DataFrame({"econ": ["weak"], "x": [np.nan]}),
                                    pd.DataFrame({"econ": [], "x": []})])
def test_bad_target_table(fitted, target):
    _, model = fitted
    with pytest.raises(ValidationError):
        model.infer_effect().project(target)
