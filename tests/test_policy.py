"""Policies (Thompson, top-two, greedy, uniform), the bandit loop, and off-policy evaluation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import causalflow as cf
from causalflow.policy import Strategy

ARMS = ["a", "b", "c"]


def contexts(n, rng):
    return pd.DataFrame({"x": rng.normal(size=n), "seg": rng.choice(["p", "q"], n)})


def mean_outcome(ctx, arm):
    """Arm b is best for large x, arm c for small x, a (control) in between; seg shifts all arms."""
    x = ctx.x.to_numpy()
    base = 0.3 * (ctx.seg.to_numpy() == "q")
    return base + {"a": 0.0 * x, "b": 0.6 * x - 0.2, "c": -0.6 * x - 0.2}[arm]


def logged_experiment(rng, n, *, adaptive=False):
    """A logged 3-arm experiment: uniform allocation, or per-unit probabilities depending on x."""
    ctx = contexts(n, rng)
    if adaptive:
        tilt = np.clip(0.5 + 0.4 * np.tanh(ctx.x.to_numpy()), 0.1, 0.9)
        probs = np.column_stack([np.full(n, 0.2), 0.8 * tilt, 0.8 * (1 - tilt)])
    else:
        probs = np.full((n, 3), 1 / 3)
    arm = (np.cumsum(probs, axis=1) < rng.random(n)[:, None]).sum(axis=1)
    means = np.column_stack([mean_outcome(ctx, a) for a in ARMS])
    df = ctx.assign(arm=np.array(ARMS, dtype=object)[arm], y=means[np.arange(n), arm] + rng.normal(size=n))
    if adaptive:
        df = df.assign(**{f"p_{a}": probs[:, i] for i, a in enumerate(ARMS)})
        return cf.ExperimentData(df, intent_to_treat="arm", control="a",
                                 propensity={a: f"p_{a}" for a in ARMS}), probs[np.arange(n), arm]
    return cf.ExperimentData(df, intent_to_treat="arm", control="a"), np.full(n, 1 / 3)


@pytest.fixture(scope="module")
def model():
    data, _ = logged_experiment(np.random.default_rng(100), 3000)
    return data.add_metric(y="y", exogenous_covariates=["x", "seg"]).fit(cf.BayesianLinearRegression)


# -- decisions -----------------------------------------------------------------------------------
def test_decide_one_context_and_a_table(model):
    rng = np.random.default_rng(0)
    assert cf.Policy(model.infer_reward(cf.ContextVector(x=3.0, seg="p"))).decide(rng) == "b"
    assert cf.Policy(model.infer_reward(cf.ContextVector(x=-3.0, seg="q"))).decide(rng) == "c"
    table = pd.DataFrame({"x": [-3.0, 0.0, 3.0], "seg": ["p", "q", "p"]}, index=[10, 11, 12])
    out = cf.Policy(model.infer_reward(table), "greedy").decide(rng)
    assert out.tolist() == ["c", "a", "b"]
    for strategy in Strategy:
        decided = cf.Policy(model.infer_reward(table), strategy).decide(np.random.default_rng(1))
        assert len(decided) == 3 and set(decided) <= set(ARMS)


def test_thompson_and_top_two_probabilities_match_their_decisions(model):
    """P(arm) of Thompson sampling is its posterior probability of being best; top-two follows
    Russo's (2016) formula from it. Checked against the frequencies of 40,000 decisions."""
    ctx = pd.DataFrame({"x": np.full(40_000, 0.3), "seg": "p"})  # a context where b and a are close
    reward = model.infer_reward(ctx)  # 40,000 copies of it: one decision each
    one = model.infer_reward(ctx[:1])
    for strategy in ("thompson", "top_two_thompson"):
        freq = np.bincount(cf.Policy(reward, strategy).decide_index(np.random.default_rng(2)), minlength=3) / 40_000
        probs = cf.Policy(one, strategy).probabilities(np.random.default_rng(3), n_draws=20_000)[0]
        # binomial sd of a frequency of 40,000 <= 0.0025, of the probabilities' estimate <= 0.0035
        np.testing.assert_allclose(freq, probs, atol=2.5 * math.hypot(0.0025, 0.0035))
        assert abs(probs.sum() - 1) < 1e-12
    pi = cf.Policy(one).probabilities(np.random.default_rng(3), n_draws=20_000)[0]
    top = cf.Policy(one, "top_two_thompson", top_two_beta=0.5).probabilities(np.random.default_rng(3),
                                                                                   n_draws=20_000)[0]
    challenger = pi * sum(pi[i] / (1 - pi[i]) * (np.arange(3) != i) for i in range(3))
    np.testing.assert_allclose(top, 0.5 * pi + 0.5 * challenger, rtol=1e-12)


def test_greedy_uniform_and_the_propensity_floor(model):
    reward = model.infer_reward(pd.DataFrame({"x": [-3.0, 3.0], "seg": ["p", "q"]}))
    np.testing.assert_array_equal(cf.Policy(reward, "greedy").probabilities(), [[0, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(cf.Policy(reward, "uniform").probabilities(), 1 / 3)
    floored = cf.Policy(reward, "greedy", min_propensity=0.05).probabilities()
    np.testing.assert_allclose(floored, [[0.05, 0.05, 0.9], [0.05, 0.9, 0.05]])
    picks = cf.Policy(model.infer_reward(pd.DataFrame({"x": np.full(30_000, 3.0), "seg": "p"})), "greedy",
                      min_propensity=0.05).decide(np.random.default_rng(0))
    np.testing.assert_allclose((picks == "a").mean(), 0.05, atol=2.5 * math.sqrt(0.05 * 0.95 / 30_000))


def test_sample_logs_the_probability_it_drew_with(model):
    policy = cf.Policy(model.infer_reward(pd.DataFrame({"x": np.full(20_000, 0.3), "seg": "p"})))
    index, probs = policy.sample(np.random.default_rng(5), n_draws=200)
    assert probs.shape == (20_000, 3) and np.allclose(probs.sum(axis=1), 1)
    # the decisions follow the logged probabilities: mean over rows of 1[a] - p_a is ~0
    gaps = (index[:, None] == np.arange(3)) - probs
    np.testing.assert_array_less(np.abs(gaps.mean(axis=0)), 2.5 * gaps.std(axis=0) / math.sqrt(20_000) + 1e-12)


def test_policy_errors(model):
    reward = model.infer_reward(cf.ContextVector(x=0.0, seg="p"))
    with pytest.raises(cf.ValidationError, match="strategy: must be one of"):
        cf.Policy(reward, "epsilon")
    with pytest.raises(cf.ValidationError, match="rng: expected a numpy Generator"):
        cf.Policy(reward).decide(0)
    with pytest.raises(cf.ValidationError, match="min_propensity"):
        cf.Policy(reward, min_propensity=0.5)
    with pytest.raises(cf.ValidationError, match="top_two_beta"):
        cf.Policy(reward, "top_two_thompson", top_two_beta=1.0)
    with pytest.raises(cf.ValidationError, match="reward: expected a PosteriorReward"):
        cf.Policy({"a": 1.0})
    with pytest.raises(cf.ValidationError, match="n_draws"):
        cf.Policy(reward).probabilities(np.random.default_rng(0), n_draws=1)


# -- the bandit loop --------------------------------------------------------------------------------
def test_simulate_bandit_log_is_an_adaptive_design_and_updates_exactly():
    flat = {g: cf.NormalPrior(0, math.inf) for g in ("intercept", "effects", "covariates", "interactions")}
    sim = cf.simulate_bandit(contexts, mean_outcome, ARMS, rounds=40, batch_size=10, prior=flat, seed=3)
    data = sim.data
    assert data.design.adaptive and data.arms == ("a", "b", "c") and len(data.data) == 60 + 400
    p = data.data[[f"propensity[{a}]" for a in ARMS]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-12)
    assert p.min() >= 1e-3 - 1e-15
    assert len(sim.regret) == 460 and (sim.regret >= 0).all()
    # the posterior updated round by round = the posterior of all logged rows (flat priors: the
    # rewards do not depend on the centring)
    refit = data.add_metric(y="y", exogenous_covariates=["x", "seg"]).fit(
        cf.BayesianLinearRegression(flat, weights="none"))
    ctx = pd.DataFrame({"x": [-1.0, 2.0], "seg": ["p", "q"]})
    a, b = sim.model.infer_reward(ctx).components[0], refit.infer_reward(ctx).components[0]
    np.testing.assert_allclose(a.loc, b.loc, rtol=1e-9)
    np.testing.assert_allclose(a.root, b.root, rtol=1e-7, atol=1e-12)
    assert "cumulative expected regret" in sim.summary() and sim.to_frame().pulls.sum() == 460
    # the log is analysable as an adaptive design (inverse-propensity weights)
    assert len(data.add_metric(y="y").fit(cf.LinearModel).infer_effect().to_frame()) == 2


def test_simulate_bandit_errors():
    with pytest.raises(cf.ValidationError, match="min_propensity"):
        cf.simulate_bandit(contexts, mean_outcome, ARMS, rounds=1, min_propensity=0.0)
    with pytest.raises(cf.ValidationError, match="arms"):
        cf.simulate_bandit(contexts, mean_outcome, ["a"], rounds=1)
    with pytest.raises(cf.ValidationError, match="strategy"):
        cf.simulate_bandit(contexts, mean_outcome, ARMS, rounds=1, strategy="softmax")
    with pytest.raises(cf.ValidationError, match="warmup"):
        cf.simulate_bandit(contexts, mean_outcome, ARMS, rounds=1, warmup=3)


@pytest.mark.slow
def test_contextual_thompson_regret_beats_uniform_and_non_contextual_thompson():
    """3 arms, the best arm depends on x, 5,000 rounds, fixed seed. Regret per unit: uniform
    ~0.43 (E[max] - mean of the arms), non-contextual Thompson ~0.31 (it settles on one arm);
    contextual Thompson's total grows like log T (120 here, benchmarks/README.md)."""
    runs = {name: cf.simulate_bandit(contexts, mean_outcome, ARMS, rounds=5000, seed=2024, **kw)
            for name, kw in {"contextual": {}, "uniform": {"strategy": "uniform"},
                             "non_contextual": {"covariates": []}}.items()}
    regret = {name: sim.total_regret for name, sim in runs.items()}
    print("cumulative regret after 5,060 units:", {k: round(v, 1) for k, v in regret.items()})
    assert regret["contextual"] < regret["uniform"] / 5
    assert regret["contextual"] < regret["non_contextual"] / 5
    late = {name: sim.regret[-1000:].mean() for name, sim in runs.items()}
    assert late["contextual"] < 0.05 < late["non_contextual"]  # still learning vs stuck


# -- off-policy evaluation --------------------------------------------------------------------------
def test_ips_and_dr_equal_hand_written_estimates(model):
    data, p_logged = logged_experiment(np.random.default_rng(7), 2000, adaptive=True)
    policy = cf.Policy(model.infer_reward(cf.ContextVector(x=0.0, seg="p")), "thompson", min_propensity=0.02)
    value = policy.evaluate(data, n_draws=500, seed=11).to_frame().set_index(["policy", "estimator"])
    df = data.data
    target = policy.at(df).probabilities(np.random.default_rng(11), 500)
    logged = df.arm.map({"a": 0, "b": 1, "c": 2}).to_numpy()
    rows = np.arange(len(df))
    y = df.y.to_numpy()
    ips = np.mean(target[rows, logged] * y / p_logged)
    assert abs(value.value[("policy", "IPS")] - ips) < 1e-10
    q = data.add_metric(y="y", exogenous_covariates=["x", "seg"]).fit(
        cf.BayesianLinearRegression(weights="none")).infer_reward(df).mean
    dr_terms = (target * q).sum(axis=1) + target[rows, logged] / p_logged * (y - q[rows, logged])
    assert abs(value.value[("policy", "DR")] - dr_terms.mean()) < 1e-10
    assert abs(value.std_error[("policy", "DR")] - dr_terms.std(ddof=1) / math.sqrt(len(y))) < 1e-10
    always_b = np.mean((logged == 1) * y / p_logged)
    assert abs(value.value[("always b", "IPS")] - always_b) < 1e-10
    assert abs(value.value[("logging", "observed")] - y.mean()) < 1e-12
    assert abs(value.vs_logging[("policy", "DR")] - (dr_terms - y).mean()) < 1e-10


def test_evaluate_on_a_bandit_log_and_errors(model):
    sim = cf.simulate_bandit(contexts, mean_outcome, ARMS, rounds=60, batch_size=20, seed=1)
    frame = cf.Policy(sim.model.infer_reward(cf.ContextVector(x=0.0, seg="p")), "greedy").evaluate(
        sim.data).to_frame()
    assert frame.policy.tolist() == ["policy", "policy", "always a", "always a", "always b", "always b",
                                     "always c", "always c", "logging"]
    assert np.isfinite(frame[["value", "std_error"]].to_numpy()).all()
    other = cf.ExperimentData(pd.DataFrame({"arm": ["a", "z"] * 20, "x": 0.0, "seg": "p", "y": 1.0}),
                              intent_to_treat="arm")
    with pytest.raises(cf.ValidationError, match="are not the policy's"):
        cf.Policy(model.infer_reward(cf.ContextVector(x=0.0, seg="p"))).evaluate(other)


@pytest.mark.slow
def test_doubly_robust_interval_covers_the_known_policy_value():
    """A fixed greedy policy evaluated on 1,000 independent uniform 3-arm logs of 600 units; its
    true value E_x mu(x, pi(x)) from 2,000,000 contexts (MC sd ~0.0005). The 95% DR interval
    must cover in 93-97% of logs (MC sd of a coverage of 1,000 replications: 0.7%)."""
    pilot, _ = logged_experiment(np.random.default_rng(1), 1000)
    fitted = pilot.add_metric(y="y", exogenous_covariates=["x", "seg"]).fit(cf.BayesianLinearRegression)
    policy = cf.Policy(fitted.infer_reward(cf.ContextVector(x=0.0, seg="p")), "greedy")
    big = contexts(2_000_000, np.random.default_rng(2))
    choice = policy.at(big).probabilities().argmax(axis=1)
    truth = np.column_stack([mean_outcome(big, a) for a in ARMS])[np.arange(len(big)), choice].mean()
    rng = np.random.default_rng(3)
    hits, ips_hits = [], []
    for _ in range(1000):
        data, _ = logged_experiment(rng, 600)
        v = policy.evaluate(data).to_frame().set_index(["policy", "estimator"])
        hits.append(v.ci_lower[("policy", "DR")] <= truth <= v.ci_upper[("policy", "DR")])
        ips_hits.append(v.ci_lower[("policy", "IPS")] <= truth <= v.ci_upper[("policy", "IPS")])
    coverage = float(np.mean(hits))
    print(f"DR coverage {coverage:.3f}, IPS coverage {np.mean(ips_hits):.3f}, truth {truth:.4f}")
    assert 0.93 <= coverage <= 0.97


def test_evaluate_with_clusters_uses_cluster_robust_errors(model):
    rng = np.random.default_rng(8)
    df = contexts(1200, rng).assign(store=np.arange(1200) % 60)
    arm = rng.integers(0, 3, 60)[df.store]  # randomised by store
    means = np.column_stack([mean_outcome(df, a) for a in ARMS])
    df = df.assign(arm=np.array(ARMS, dtype=object)[arm], y=means[np.arange(1200), arm] + rng.normal(size=1200))
    data = cf.ExperimentData(df.drop(columns="store"), intent_to_treat="arm", control="a")
    clustered = cf.ExperimentData(df, intent_to_treat="arm", control="a", cluster_by="store")
    policy = cf.Policy(model.infer_reward(cf.ContextVector(x=0.0, seg="p")), "greedy")
    value = policy.evaluate(clustered).to_frame().set_index(["policy", "estimator"])
    y = df.y.to_numpy()
    sums = np.bincount(df.store, weights=y - y.mean())
    se = math.sqrt(60 / 59 * (sums ** 2).sum()) / 1200
    assert abs(value.std_error[("logging", "observed")] - se) < 1e-12
    plain = policy.evaluate(data).to_frame().set_index(["policy", "estimator"])
    assert abs(value.value[("policy", "DR")] - plain.value[("policy", "DR")]) < 1e-12
