"""BayesianLinearRegression: the conjugate posterior against closed forms written here, against
OLS, against pymc; posterior effects, ranking, rewards, sequential updates and JSON serving."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import causalflow as cf
from causalflow.models.bayes import HierarchicalPrior, NoisePrior, StudentTPrior

GROUPS = ("intercept", "effects", "covariates", "interactions")


def three_arms(rng, n, effects=(0.0, 0.3, -0.2), slope=(0.0, 1.0, -1.0)):
    """Three arms a (control), b, c; a numeric covariate x, a categorical dev; two correlated metrics."""
    df = pd.DataFrame({"arm": rng.choice(["a", "b", "c"], n), "x": rng.normal(1.0, 2.0, n),
                       "dev": rng.choice(["app", "web", "tv"], n)})
    code = df.arm.map({"a": 0, "b": 1, "c": 2}).to_numpy()
    tau = np.asarray(effects)[code] + np.asarray(slope)[code] * (df.x - 1.0)
    e = rng.normal(size=n)
    df["revenue"] = 5 + tau + 0.5 * df.x + (df.dev == "web") + e
    df["cost"] = 2 + 0.3 * tau + 0.8 * e + 0.6 * rng.normal(size=n)
    return df


def design_matrix(df, arms, covs):
    """The Lin (2013) design [1, A, Xc, A x Xc], written out here (independently of causalflow)."""
    A = np.column_stack([(df.arm == a).to_numpy(float) for a in arms[1:]])
    Xc = covs - covs.mean(axis=0)
    inter = np.column_stack([A[:, [j]] * Xc for j in range(A.shape[1])])
    return np.column_stack([np.ones(len(df)), A, Xc, inter])


def covariate_columns(df):
    return np.column_stack([df.x, df.dev == "tv", df.dev == "web"]).astype(float)  # levels sorted: app, tv, web


# -- the conjugate posterior is the closed form ------------------------------------------------
def test_conjugate_posterior_equals_closed_form():
    rng = np.random.default_rng(11)
    df = three_arms(rng, 600)
    prior = {"intercept": cf.NormalPrior(4.0, 10.0), "effects": cf.NormalPrior(0.1, 0.5),
             "covariates": cf.NormalPrior(0.0, 2.0), "interactions": cf.NormalPrior(0.0, 0.7),
             "noise": NoisePrior(shape=3.0, rate=2.0)}
    model = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        y="revenue", exogenous_covariates=["x", "dev"]).fit(cf.BayesianLinearRegression(prior))
    # the textbook NIG posterior (Gelman et al. BDA3 14.8): beta | s2 ~ N(m0, s2 V0), s2 ~ IG(a0, b0)
    covs = covariate_columns(df)
    X = design_matrix(df, ("a", "b", "c"), covs)
    y = df.revenue.to_numpy()
    sd = covs.std(axis=0)  # prior scales per sd of the covariate column (population sd)
    scales = np.r_[10.0, 0.5, 0.5, 2.0 / sd, 0.7 / sd, 0.7 / sd]
    means = np.r_[4.0, 0.1, 0.1, np.zeros(9)]
    V0inv = np.diag(1 / scales ** 2)
    Vn = np.linalg.inv(V0inv + X.T @ X)
    mn = Vn @ (V0inv @ means + X.T @ y)
    an = 3.0 + len(y) / 2
    bn = 2.0 + 0.5 * (y @ y + means @ V0inv @ means - mn @ np.linalg.solve(Vn, mn))
    np.testing.assert_allclose(model.params().revenue.to_numpy(), mn, rtol=1e-10, atol=1e-12)
    # posterior of the effect of arm c at the covariate means of dev == 'web'
    web = (df.dev == "web").to_numpy()
    d = np.zeros(X.shape[1])
    d[2] = 1.0
    d[3 + 3 + 3:] = covs[web].mean(axis=0) - covs.mean(axis=0)  # arm c's interactions
    loc, scale = d @ mn, math.sqrt(bn / an * d @ Vn @ d)
    row = model.infer_effect(condition_on="dev == 'web'", alpha=0.1).to_frame().iloc[1]
    assert row.arm == "c" and row.estimand == "posterior CATE" and row.dof == 2 * an
    t = stats.t(2 * an, loc, scale)
    np.testing.assert_allclose([row.estimate, row.std_error, row.ci_lower, row.ci_upper, row.prob_positive],
                               [loc, t.std(), t.ppf(0.05), t.ppf(0.95), t.sf(0.0)], rtol=1e-9)


def test_closed_form_with_weights_and_default_priors():
    """Adaptive design: weights 1/p normalised to mean 1; default priors (flat intercept)."""
    rng = np.random.default_rng(3)
    n = 500
    x = rng.normal(size=n)
    p = np.clip(0.5 + 0.3 * np.tanh(x), 0.1, 0.9)
    t = (rng.random(n) < p).astype(int)
    df = pd.DataFrame({"t": t, "p": p, "x": x, "y": 1 + 0.4 * t + x + rng.normal(size=n)})
    model = cf.ExperimentData(df, intent_to_treat="t", propensity="p").add_metric(
        y="y", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression)
    w = np.where(t == 1, 1 / p, 1 / (1 - p))
    w = w / w.mean()
    xc = x - np.average(x, weights=w)
    X = np.column_stack([np.ones(n), t, xc, t * xc])
    sdx = math.sqrt(np.average(xc ** 2, weights=w))
    prec = np.r_[0.0, 1.0, (sdx / 2.5) ** 2, sdx ** 2]  # flat, N(0, 1), N(0, 2.5/sd), N(0, 1/sd)
    Ln = np.diag(prec) + X.T @ (w[:, None] * X)
    mn = np.linalg.solve(Ln, X.T @ (w * df.y))
    an = (n - 1) / 2  # one flat coefficient integrated out, p(s2) ~ 1/s2
    bn = 0.5 * (df.y @ (w * df.y) - mn @ Ln @ mn)
    row = model.infer_effect().to_frame().iloc[0]
    scale = math.sqrt(bn / an * np.linalg.inv(Ln)[1, 1])
    np.testing.assert_allclose([row.estimate, row.std_error, row.dof], [mn[1], scale * math.sqrt(2 * an / (2 * an - 2)),
                                                                       2 * an], rtol=1e-9)


def test_joint_posterior_of_metrics_matches_matrix_normal_inverse_wishart_draws():
    """A reward that combines metrics: the exact t of D B c agrees with draws of the MNIW posterior
    (Sigma ~ IW, B | Sigma ~ MN) written here."""
    rng = np.random.default_rng(5)
    df = three_arms(rng, 800)
    model = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        y=["revenue", "cost"], exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression)
    post = model._groups[0].posterior
    K = 2
    nu = 2 * post.shape + K - 1
    S = 40_000
    sigmas = stats.invwishart(df=nu, scale=2 * post.scale).rvs(S, random_state=1)
    root = np.linalg.cholesky(np.linalg.inv(post.precision))
    z = np.random.default_rng(2).standard_normal((S, post.mean.shape[0], K))
    B = post.mean + np.einsum("pq,sqk,slk->spl", root, z, np.linalg.cholesky(sigmas))
    c = np.array([1.0, -1.0])
    profit = B[:, 1, :] @ c  # arm b's average effect on revenue - cost
    draws = model.effect_draws({0: np.zeros(1)}, c, S, np.random.default_rng(3))[:, 1]
    se = profit.std() / math.sqrt(S)
    assert abs(draws.mean() - profit.mean()) < 2.5 * math.sqrt(2) * se
    assert abs(draws.std() / profit.std() - 1) < 0.02  # sd of a sd ratio with S = 40,000: ~0.005
    # and the exact margin: the reward's posterior equals a regression on revenue - cost itself
    df["profit"] = df.revenue - df.cost
    single = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        y="profit", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression)
    a = model.infer_reward(cf.ContextVector(x=3.0), reward={"revenue": 1, "cost": -1}).components[0]
    b = single.infer_reward(cf.ContextVector(x=3.0)).components[0]
    np.testing.assert_allclose(a.loc, b.loc, rtol=1e-10)
    np.testing.assert_allclose(a.root, b.root, rtol=1e-8)
    assert a.dof == b.dof


# -- near-flat prior = OLS ---------------------------------------------------------------------
FLAT = {g: cf.NormalPrior(0.0, 1e6) for g in GROUPS}


@pytest.mark.parametrize("design", ["ab", "multi_arm", "adaptive", "encouragement"])
def test_near_flat_prior_gives_ols(simulate, design):
    sim = simulate(design, 4)
    sim.df.loc[sim.df.index[::7], "y2"] = np.nan  # a second missingness group
    spec = sim.experiment().add_metric(y=sim.y, exogenous_covariates=sim.covariates)
    bayes = spec.fit(cf.BayesianLinearRegression(FLAT))
    ols = spec.fit(cf.LinearModel).params("itt")
    np.testing.assert_allclose(bayes.params().to_numpy(), ols.to_numpy(), rtol=1e-6, atol=1e-9)
    estimand = bayes.infer_effect().to_frame().estimand.unique().tolist()
    assert estimand == (["posterior ITT"] if design == "encouragement" else ["posterior ATE"])


def test_flat_prior_marginal_is_the_classical_t():
    """Every coefficient flat and p(s2) ~ 1/s2: the posterior of a coefficient is the classical
    t with n - p dof around OLS with scale s^2 (X'X)^-1 (Gelman et al. BDA3 14.2)."""
    rng = np.random.default_rng(8)
    df = pd.DataFrame({"t": rng.integers(0, 2, 300), "x": rng.normal(size=300)})
    df["y"] = 0.2 * df.t + df.x + rng.normal(size=300)
    spec = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y", exogenous_covariates=["x"])
    row = spec.fit(cf.BayesianLinearRegression({g: cf.NormalPrior(0, math.inf) for g in GROUPS})
                   ).infer_effect().to_frame().iloc[0]
    ols = spec.fit(cf.LinearModel(cov_type="HC0"))
    X = np.column_stack([np.ones(300), df.t, df.x - df.x.mean(), df.t * (df.x - df.x.mean())])
    resid = df.y - X @ ols.params().y
    s2 = resid @ resid / (300 - 4)
    scale = math.sqrt(s2 * np.linalg.inv(X.T @ X)[1, 1])
    assert row.dof == 296
    np.testing.assert_allclose(row.ci_upper - row.estimate, stats.t.isf(0.025, 296) * scale, rtol=1e-9)


# -- ranking -------------------------------------------------------------------------------------
def four_arms(rng, n, best=0.1):
    df = pd.DataFrame({"arm": rng.choice(["a", "b", "c", "d"], n)})
    df["y"] = np.where(df.arm == "d", best, 0.0) + rng.normal(size=n)
    return cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(y="y").fit(
        cf.BayesianLinearRegression)


def test_p_best_goes_to_one_with_n():
    """Arm d is 0.1 sd better. Mean p_best over 8 data sets per n: about 0.45, 0.9 and 1 (at
    10,000 rows per arm d's z against each arm is ~7); the sd of a mean of 8 is < 0.5 / sqrt(8)."""
    rng = np.random.default_rng(0)
    p = np.array([[four_arms(rng, n).infer_effect().infer_rank(n_draws=4000, seed=r).to_frame()
                   .set_index("arm").p_best["d"] for r in range(8)] for n in (400, 4000, 40_000)])
    means = p.mean(axis=1)
    assert means[0] < means[1] < means[2]
    assert p[2].min() > 0.99


def test_identical_arms_rank_near_uniform():
    """Every arm gets the same outcomes: the posterior is (nearly) exchangeable over arms."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=5000)
    df = pd.DataFrame({"arm": np.repeat(["a", "b", "c", "d"], 5000), "y": np.tile(y, 4)})
    ranks = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(y="y").fit(
        cf.BayesianLinearRegression).infer_effect().infer_rank(n_draws=40_000, seed=2).to_frame()
    # MC sd of each p_best with 40,000 draws: sqrt(.25 * .75 / 40000) = 0.0022; band 2.5 sd + the
    # prior's small asymmetry between control and the other arms
    np.testing.assert_allclose(ranks.p_best, 0.25, atol=0.01)
    np.testing.assert_allclose(ranks.expected_rank, 2.5, atol=0.03)
    np.testing.assert_allclose(ranks.expected_loss, ranks.expected_loss.mean(), rtol=0.05)


@pytest.mark.slow
def test_identical_arms_p_best_averages_to_uniform_over_replications():
    rng = np.random.default_rng(2)
    p = np.array([four_arms(rng, 2000, best=0.0).infer_effect().infer_rank(n_draws=2000, seed=r)
                  .to_frame().p_best.to_numpy() for r in range(200)])
    # p_best of one arm over replications has sd <= 0.5 (about 0.3 here): 2.5 * 0.5 / sqrt(200) = 0.09
    np.testing.assert_allclose(p.mean(axis=0), 0.25, atol=0.09)


def test_rank_of_a_combined_reward_uses_the_joint_posterior():
    rng = np.random.default_rng(4)
    df = three_arms(rng, 3000, effects=(0.0, 0.3, 0.25))
    df["profit"] = df.revenue - df.cost
    data = cf.ExperimentData(df, intent_to_treat="arm", control="a")
    joint = data.add_metric(y=["revenue", "cost"]).fit(cf.BayesianLinearRegression).infer_effect()
    direct = data.add_metric(y="profit").fit(cf.BayesianLinearRegression).infer_effect()
    a = joint.infer_rank(reward={"revenue": 1, "cost": -1}, seed=7).to_frame()
    b = direct.infer_rank(seed=7).to_frame()
    assert a.metric.unique().tolist() == ["revenue - cost"]
    np.testing.assert_allclose(a[["p_best", "expected_rank", "expected_loss"]].to_numpy(),
                               b[["p_best", "expected_rank", "expected_loss"]].to_numpy(), atol=1e-3)
    per_metric = joint.infer_rank(seed=0).to_frame()
    assert per_metric.metric.unique().tolist() == ["revenue", "cost"]
    assert len(per_metric) == 6 and set(per_metric.arm) == {"a", "b", "c"}


def test_rank_per_condition():
    rng = np.random.default_rng(6)
    df = three_arms(rng, 4000)
    ranks = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        y="revenue", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression).infer_effect(
        condition_on=["x > 3", "x < -1"]).infer_rank(seed=0).to_frame().set_index(["condition", "arm"])
    assert ranks.p_best[("x > 3", "b")] > 0.99 and ranks.p_best[("x < -1", "c")] > 0.99
    assert ranks.expected_loss[("x > 3", "b")] < 1e-3 < ranks.expected_loss[("x > 3", "c")]


# -- rewards, contexts, serving -------------------------------------------------------------------
@pytest.fixture(scope="module")
def served():
    rng = np.random.default_rng(9)
    df = three_arms(rng, 2000)
    df["flag"] = rng.random(2000) < 0.5
    return cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        y=["revenue", "cost"], exogenous_covariates=["x", "dev", "flag"]).fit(cf.BayesianLinearRegression)


def test_reward_posterior_matches_the_effects(served):
    """At the covariate means the reward difference of arm b and control is the average effect."""
    df = served.spec.data.data
    means = {"x": df.x.mean(), "dev": "app", "flag": False}
    reward = served.infer_reward(pd.DataFrame([means]), reward="revenue")
    shift = np.r_[0.0, (df.dev == "tv").mean(), (df.dev == "web").mean(), df.flag.mean()]
    d = served.layout.effect(1, -shift)  # the context's centred covariates: (x, app, False) - means
    d[0] = 0
    np.testing.assert_allclose(reward.mean[0, 1] - reward.mean[0, 0], d @ served.params().revenue, rtol=1e-10)


def test_context_errors(served):
    ok = dict(x=1.0, dev="web", flag=True)
    served.infer_reward(cf.ContextVector(**ok), reward="cost")
    with pytest.raises(cf.ValidationError, match="covariate 'dev' is missing"):
        served.infer_reward(cf.ContextVector(x=1.0, flag=True), reward="cost")
    with pytest.raises(cf.ValidationError, match="unknown category 'radio'"):
        served.infer_reward(cf.ContextVector(**{**ok, "dev": "radio"}), reward="cost")
    with pytest.raises(cf.ValidationError, match="'x' must be a finite number"):
        served.infer_reward(cf.ContextVector(**{**ok, "x": "high"}), reward="cost")
    with pytest.raises(cf.ValidationError, match="unknown categories \\['radio'\\]"):
        served.infer_reward(pd.DataFrame({"x": [1.0], "dev": ["radio"], "flag": [True]}), reward="cost")
    with pytest.raises(cf.ValidationError, match="covariate column 'flag' is missing"):
        served.infer_reward(pd.DataFrame({"x": [1.0], "dev": ["web"]}), reward="cost")
    with pytest.raises(cf.ValidationError, match="reward: the model has metrics"):
        served.infer_reward(cf.ContextVector(**ok))
    with pytest.raises(cf.ValidationError, match="reward: 'profit' is not a metric"):
        served.infer_reward(cf.ContextVector(**ok), reward={"profit": 1})
    with pytest.raises(cf.ValidationError, match="ContextVector: 'x' is missing"):
        cf.ContextVector(x=None)


def test_json_round_trip_decides_identically(served):
    text = served.to_json()
    loaded = cf.BayesianLinearRegression.from_json(text)
    assert loaded.to_json() == text
    np.testing.assert_array_equal(loaded.params().to_numpy(), served.params().to_numpy())
    contexts = pd.DataFrame({"x": np.linspace(-3, 5, 50), "dev": ["app", "web"] * 25, "flag": [True] * 50})
    for strategy in ("thompson", "top_two_thompson", "greedy"):
        a = cf.Policy(served.infer_reward(contexts, reward={"revenue": 1, "cost": -1}), strategy)
        b = cf.Policy(loaded.infer_reward(contexts, reward={"revenue": 1, "cost": -1}), strategy)
        assert a.decide(np.random.default_rng(4)).tolist() == b.decide(np.random.default_rng(4)).tolist()
    one = cf.ContextVector(x=0.5, dev="tv", flag=False)
    assert cf.Policy(served.infer_reward(one, "revenue")).decide(np.random.default_rng(1)) == \
        cf.Policy(loaded.infer_reward(one, "revenue")).decide(np.random.default_rng(1))
    pd.testing.assert_frame_equal(loaded.infer_effect().to_frame(), served.infer_effect().to_frame())
    with pytest.raises(cf.ValidationError, match="condition_on: this model has no data"):
        loaded.infer_effect(condition_on="x > 0")
    with pytest.raises(cf.ValidationError, match="unknown category 'radio'"):
        loaded.infer_reward(cf.ContextVector(x=0.5, dev="radio", flag=False), "cost")
    with pytest.raises(cf.ValidationError, match="covariate 'flag' is missing"):
        loaded.infer_reward(cf.ContextVector(x=0.5, dev="tv"), "cost")


def test_bad_json_is_a_clear_error(served):
    good = json.loads(served.to_json())

    def load(d):
        return cf.BayesianLinearRegression.from_json(json.dumps(d))

    with pytest.raises(cf.ValidationError, match="schema_version 2 is not supported"):
        load({**good, "schema_version": 2})
    with pytest.raises(cf.ValidationError, match="schema 'other' is not"):
        load({**good, "schema": "other"})
    for field in ("arms", "metrics", "covariates", "groups", "arm_column"):
        with pytest.raises(cf.ValidationError, match=f"missing field '{field}'"):
            load({k: v for k, v in good.items() if k != field})
    broken = json.loads(served.to_json())
    del broken["groups"][0]["posterior"]["precision"]
    with pytest.raises(cf.ValidationError, match="missing field groups\\[0\\].posterior.'precision'"):
        load(broken)
    broken = json.loads(served.to_json())
    broken["groups"][0]["posterior"]["mean"] = broken["groups"][0]["posterior"]["mean"][:-1]
    with pytest.raises(cf.ValidationError, match="groups\\[0\\].posterior.mean must be finite numbers of shape"):
        load(broken)
    broken = json.loads(served.to_json())
    broken["covariates"]["categorical"][0]["levels"] = ["app"]
    with pytest.raises(cf.ValidationError, match="needs two or more levels"):
        load(broken)
    with pytest.raises(cf.ValidationError, match="not valid JSON"):
        cf.BayesianLinearRegression.from_json("{not json")
    with pytest.raises(cf.ValidationError, match="top level"):
        cf.BayesianLinearRegression.from_json("[1, 2]")


def test_formula_covariates_decide_but_do_not_serialise():
    rng = np.random.default_rng(2)
    df = three_arms(rng, 1000)
    model = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        y="revenue", exogenous_covariates="x + C(dev)").fit(cf.BayesianLinearRegression)
    listed = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        y="revenue", exogenous_covariates=["x", "dev"]).fit(cf.BayesianLinearRegression)
    ctx = cf.ContextVector(x=2.0, dev="web")
    np.testing.assert_allclose(model.infer_reward(ctx).mean, listed.infer_reward(ctx).mean, rtol=1e-9)
    with pytest.raises(cf.ValidationError, match="unknown categories"):
        model.infer_reward(cf.ContextVector(x=2.0, dev="radio"))
    with pytest.raises(cf.ValidationError, match="formula cannot be serialised"):
        model.to_json()


# -- sequential updates ----------------------------------------------------------------------------
def test_update_equals_the_posterior_of_all_rows():
    """Flat priors: the posterior of the rewards does not depend on the centring, so the fit on
    the first half updated with the second equals the fit on all rows (exact sequential Bayes)."""
    rng = np.random.default_rng(12)
    df = three_arms(rng, 1200)
    df.loc[df.index[::5], "cost"] = np.nan
    flat = cf.BayesianLinearRegression({g: cf.NormalPrior(0, math.inf) for g in GROUPS})

    def fit(rows):
        return cf.ExperimentData(rows, intent_to_treat="arm", control="a").add_metric(
            y=["revenue", "cost"], exogenous_covariates=["x", "dev"]).fit(flat)

    updated = fit(df[:500]).update(df[500:])
    full = fit(df)
    ctx = pd.DataFrame({"x": [-1.0, 0.0, 4.0], "dev": ["app", "tv", "web"]})
    for reward in ("revenue", "cost", {"revenue": 1, "cost": -1}):
        a, b = updated.infer_reward(ctx, reward), full.infer_reward(ctx, reward)
        for ca, cb in zip(a.components, b.components):
            np.testing.assert_allclose(ca.loc, cb.loc, rtol=1e-9)
            np.testing.assert_allclose(ca.root, cb.root, rtol=1e-7, atol=1e-12)
            assert ca.dof == cb.dof
    assert [g.n for g in updated._groups] == [g.n for g in full._groups]


def test_update_refuses_weighted_fits_and_bad_tables(simulate):
    sim = simulate("adaptive", 1)
    model = sim.experiment().add_metric(y="y1", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression)
    with pytest.raises(cf.ValidationError, match="weights='none'"):
        model.update(sim.df)
    model = sim.experiment().add_metric(y="y1", exogenous_covariates=["x"]).fit(
        cf.BayesianLinearRegression(weights="none"))
    with pytest.raises(cf.ValidationError, match="values \\['7'\\] that are not arms"):
        model.update(sim.df.assign(assigned=7))
    with pytest.raises(cf.ValidationError, match="column 'y1' is not in the table"):
        model.update(sim.df.drop(columns="y1"))


# -- options, errors, designs ----------------------------------------------------------------------
def test_prior_and_option_errors():
    with pytest.raises(cf.ValidationError, match="NormalPrior scale"):
        cf.NormalPrior(0.0, 0.0)
    with pytest.raises(cf.ValidationError, match="NormalPrior mean"):
        cf.NormalPrior(float("nan"))
    with pytest.raises(cf.ValidationError, match="unknown group 'slopes'"):
        cf.BayesianLinearRegression({"slopes": cf.NormalPrior()})
    with pytest.raises(cf.ValidationError, match="HierarchicalPrior pools arm effects"):
        cf.BayesianLinearRegression({"covariates": HierarchicalPrior()})
    with pytest.raises(cf.ValidationError, match="method: 'conjugate' needs normal priors"):
        cf.BayesianLinearRegression(StudentTPrior(), method="conjugate")
    with pytest.raises(cf.ValidationError, match="weights: must be one of"):
        cf.BayesianLinearRegression(weights="ipw")
    with pytest.raises(cf.ValidationError, match="draws: must be an integer"):
        cf.BayesianLinearRegression(draws=0)
    with pytest.raises(cf.ValidationError, match="prior: expected a NormalPrior"):
        cf.BayesianLinearRegression(prior=1.0)
    with pytest.raises(cf.ValidationError, match="StudentTPrior df"):
        StudentTPrior(df=-1)


def test_seed_paper_forms_are_the_same(simulate):
    sim = simulate("multi_arm", 2)
    spec = sim.experiment().add_metric(y="y1", exogenous_covariates=["x"])
    a = spec.fit(cf.BayesianLinearRegression, prior=cf.NormalPrior(mean=0.0, scale=1.0)).infer_effect()
    b = spec.fit(cf.BayesianLinearRegression(prior=cf.NormalPrior(mean=0.0, scale=1.0))).infer_effect()
    pd.testing.assert_frame_equal(a.to_frame(), b.to_frame())
    frame = a.to_frame()
    assert list(frame.columns) == ["metric", "arm", "condition", "estimand", "estimate", "std_error", "ci_lower",
                                   "ci_upper", "prob_positive", "n", "dof"]
    assert a.to_dict()["effects"][0]["estimand"] == "posterior ATE"
    assert "CrI" in a.summary() and "<table>" in a._repr_html_() and a.to_markdown().startswith("| metric")


def test_a_prior_shrinks_the_effect():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"t": rng.integers(0, 2, 100)})
    df["y"] = 0.5 * df.t + rng.normal(size=100)
    spec = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y")
    wide = spec.fit(cf.BayesianLinearRegression(cf.NormalPrior(0, 100))).infer_effect().estimate[0]
    tight = spec.fit(cf.BayesianLinearRegression(cf.NormalPrior(0, 0.05))).infer_effect().estimate[0]
    centred = spec.fit(cf.BayesianLinearRegression(cf.NormalPrior(2.0, 0.05))).infer_effect().estimate[0]
    assert abs(tight) < abs(wide) / 3 and centred > 1.5


def test_cluster_design_warns(simulate):
    sim = simulate("cluster", 0)
    with pytest.warns(cf.DesignWarning, match="within-cluster correlation"):
        sim.experiment().add_metric(y="y1").fit(cf.BayesianLinearRegression)


def test_missing_pymc_names_the_extra(monkeypatch, simulate):
    import causalflow._optional as optional

    real = optional.importlib.import_module

    def fake(name, *args):
        if name.startswith(("pymc", "pytensor")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(optional.importlib, "import_module", fake)
    sim = simulate("ab", 0)
    with pytest.raises(ImportError, match='pip install "causalflow\\[bayes\\]"'):
        sim.experiment().add_metric(y="y1").fit(cf.BayesianLinearRegression(StudentTPrior()))


# -- pymc ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pymc_samples_the_conjugate_model():
    """The conjugate posterior agrees with pymc's NUTS draws of the same model (normal priors,
    p(s2) ~ 1/s2) within Monte Carlo error."""
    pytest.importorskip("pymc")
    rng = np.random.default_rng(21)
    df = three_arms(rng, 800)
    spec = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        y="revenue", exogenous_covariates=["x"])
    prior = {"effects": cf.NormalPrior(0.0, 0.3), "covariates": cf.NormalPrior(0.0, 2.5)}
    exact = spec.fit(cf.BayesianLinearRegression(prior))
    sampled = spec.fit(cf.BayesianLinearRegression(prior, method="pymc", draws=2000, tune=1000, chains=2, seed=3))
    post = sampled._groups[0].posterior
    assert post.rhat < 1.01 and post.ess > 800
    mean, sd = exact.params().revenue, exact.posterior_sd().revenue
    # MC error of a posterior mean: sd / sqrt(ESS); band 2.5 of them
    np.testing.assert_array_less(np.abs(sampled.params().revenue - mean) / sd, 2.5 / math.sqrt(post.ess))
    np.testing.assert_allclose(sampled.posterior_sd().revenue / sd, 1.0, atol=0.06)  # sd of a sd ~ 1/sqrt(2 ESS)
    a, b = exact.infer_effect().to_frame(), sampled.infer_effect().to_frame()
    np.testing.assert_allclose(a.prob_positive, b.prob_positive, atol=0.03)
    assert b.dof.isna().all()


@pytest.mark.slow
def test_pymc_student_t_and_hierarchical_priors_fit_behind_the_same_call():
    pytest.importorskip("pymc")
    rng = np.random.default_rng(22)
    arms = [f"v{i}" for i in range(8)]
    true = np.linspace(-0.2, 0.2, 8)
    df = pd.DataFrame({"arm": rng.choice(arms, 1600)})
    df["y"] = true[df.arm.map({a: i for i, a in enumerate(arms)})] + rng.normal(size=1600)
    spec = cf.ExperimentData(df, intent_to_treat="arm", control="v0").add_metric(y="y")
    flat = spec.fit(cf.BayesianLinearRegression(cf.NormalPrior(0, 100))).infer_effect().estimate
    pooled = spec.fit(cf.BayesianLinearRegression(HierarchicalPrior(spread=0.2), seed=1, draws=1000))
    heavy = spec.fit(cf.BayesianLinearRegression(StudentTPrior(0, 0.5, 3), seed=1, draws=1000))
    assert pooled.method == heavy.method == "pymc"
    shrunk = pooled.infer_effect().estimate
    assert np.std(shrunk) < np.std(flat)  # partial pooling pulls the arm effects together
    frame = heavy.infer_effect().infer_rank(seed=0).to_frame()
    assert abs(frame.p_best.sum() - 1) < 1e-9
    loaded = cf.BayesianLinearRegression.from_json(heavy.to_json())
    assert cf.Policy(loaded.infer_reward(cf.ContextVector())).decide(np.random.default_rng(0)) == \
        cf.Policy(heavy.infer_reward(cf.ContextVector())).decide(np.random.default_rng(0))


def test_conjugate_fit_and_decisions_need_no_optional_package():
    """The core install (API.md section 10): pymc, pytensor and arviz hidden, the conjugate fit,
    ranking, JSON and decisions run, and a Student-t prior names the extra."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        class _Missing:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("pymc", "pytensor", "arviz"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, _Missing())
        import numpy as np, pandas as pd, causalflow as cf
        from causalflow.models.bayes import StudentTPrior
        rng = np.random.default_rng(0)
        df = pd.DataFrame({"t": rng.integers(0, 2, 300), "x": rng.normal(size=300)})
        df["y"] = df.t * df.x + rng.normal(size=300)
        spec = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y", exogenous_covariates=["x"])
        bmodel = spec.fit(cf.BayesianLinearRegression)
        bmodel.infer_effect().infer_rank()
        served = cf.BayesianLinearRegression.from_json(bmodel.to_json())
        print(cf.Policy(served.infer_reward(cf.ContextVector(x=2.0))).decide(np.random.default_rng(0)))
        try:
            spec.fit(cf.BayesianLinearRegression(StudentTPrior()))
        except ImportError as exc:
            print(exc)
        print(sorted(m for m in sys.modules if m.partition(".")[0] in ("pymc", "pytensor", "arviz")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "1" and 'pip install "causalflow[bayes]"' in lines[1] and lines[2] == "[]"
