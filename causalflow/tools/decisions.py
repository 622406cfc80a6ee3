"""Tools over the Bayesian fit: rank the arms, and decide an arm for a unit (Thompson sampling).

Both need a model of ``fit_metrics`` with ``estimator="bayesian"`` (handle ``bmodel_<n>``);
``rank_arms`` takes its posterior effects (``infer_effects`` on that model, handle
``posterior_<n>``). Randomness comes only from the ``seed`` argument, so a call repeats.

Examples
--------
>>> import tempfile
>>> from causalflow.tools.registry import demo_session
>>> session = demo_session(tempfile.mkdtemp(), n=2000)
>>> _ = session.call("create_experiment", {"source": "store.csv", "intent_to_treat": "assigned"})
>>> fit = session.call("fit_metrics", {"experiment": "exp_1", "y": "sales", "exogenous_covariates": ["device"],
...                                    "estimator": "bayesian"})
>>> session.call("decide", {"model": fit["handle"], "context": {"device": "desktop"}})["arm"]
1
>>> posterior = session.call("infer_effects", {"model": fit["handle"]})
>>> [round(row["p_best"], 2) for row in session.call("rank_arms", {"effects": posterior["handle"]})["rows"]]
[0.02, 0.98]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from .base import Args, Handle, Label, Name, Result, Row, Scalar, TableResult, Workspace, table_result, tool
from .experiments import _label
from .safety import ToolError

__all__ = ["TOOLS"]

_BAYES_FIT = ("fit_metrics", {"experiment": "exp_1", "y": ["sales", "orders"],
                              "exogenous_covariates": ["pre_sales", "device"], "estimator": "bayesian"})


class RankArms(Args):
    effects: Handle = Field(description="handle of posterior effects (infer_effects on a bayesian model), "
                                        "e.g. posterior_1")
    reward: Name | dict[Name, float] | None = Field(
        None, description="rank on one metric, or on a weighted sum of metrics such as {\"revenue\": 1, "
                          "\"cost\": -1}; default every metric on its own")
    n_draws: int = Field(10_000, ge=100, le=200_000, description="joint posterior draws per condition")
    seed: int = Field(0, ge=0)


@tool(example={"effects": "posterior_1", "reward": "sales"},
      after=(_BAYES_FIT, ("infer_effects", {"model": "bmodel_1"})))
def rank_arms(args: RankArms, ws: Workspace) -> TableResult:
    """Rank the arms (control included) per metric and condition from the joint posterior:
    the probability that each arm is best (p_best), its expected rank (1 = best) and its
    expected loss (expected shortfall from the best arm, in the metric's units). Choose by
    expected loss when a small loss is acceptable, by p_best to find a winner."""
    effects = ws.store.get(args.effects, ("posterior",), "effects")
    if isinstance(args.reward, (str, dict)):
        names = [args.reward] if isinstance(args.reward, str) else list(args.reward)
        unknown = [n for n in names if n not in effects.model.metrics]
        if unknown:
            raise ToolError("invalid_value", f"reward: {unknown[0]!r} is not a metric of the model", argument="reward",
                            allowed=list(effects.model.metrics))
    ranking = effects.infer_rank(reward=args.reward, n_draws=args.n_draws, seed=args.seed)
    return table_result(ranking, "ranking", args.effects, ws, f"ranking of the arms of {args.effects}")


class Decide(Args):
    model: Handle = Field(description="handle of a bayesian model (fit_metrics with estimator bayesian), e.g. bmodel_1")
    context: dict[Name, Scalar] = Field(
        default_factory=dict, max_length=200,
        description="the unit's covariates (every covariate of the model), e.g. {\"device\": \"desktop\", "
                    "\"pre_sales\": 12.0}")
    reward: Name | dict[Name, float] | None = Field(
        None, description="the metric to maximise, or a weighted sum such as {\"revenue\": 1, \"cost\": -1}; "
                          "default the model's only metric")
    strategy: Literal["thompson", "top_two_thompson", "greedy", "uniform"] = Field(
        "thompson", description="thompson: play each arm with its posterior probability of being best")
    n_draws: int = Field(2000, ge=100, le=100_000, description="posterior draws for the arms' probabilities")
    seed: int = Field(0, ge=0, description="seed of the decision's randomness")


class ArmProbability(BaseModel):
    arm: Label
    probability: float


class Decision(Result):
    arm: Label = Field(description="the arm decided for this unit")
    strategy: str
    reward: str = Field(description="what is maximised")
    probabilities: list[ArmProbability] = Field(description="the probability that the policy plays each arm here")
    rewards: list[Row] = Field(description="posterior expected reward of each arm at this context")


@tool(example={"model": "bmodel_1", "context": {"device": "desktop", "pre_sales": 12.0}, "reward": "sales"},
      after=(_BAYES_FIT,))
def decide(args: Decide, ws: Workspace) -> Decision:
    """Decide an arm for one unit from the Bayesian model's posterior reward at the unit's
    covariates (a contextual bandit's step): Thompson sampling by default (play an arm with
    its posterior probability of being the best), or top-two Thompson, greedy or uniform.
    Returns the arm, every arm's probability of being played, and the posterior rewards."""
    from ..policy import ContextVector, Policy

    model = ws.store.get(args.model, ("bmodel",), "model")
    sources = list(model.covariates.sources)
    missing = [c for c in sources if c not in args.context]
    if missing:
        raise ToolError("invalid_value", f"context: give a value for every covariate of the model; missing "
                        f"{missing}", argument="context", allowed=sources)
    if isinstance(args.reward, (str, dict)):
        names = [args.reward] if isinstance(args.reward, str) else list(args.reward)
        unknown = [n for n in names if n not in model.metrics]
        if unknown:
            raise ToolError("invalid_value", f"reward: {unknown[0]!r} is not a metric of the model", argument="reward",
                            allowed=list(model.metrics))
    context = ContextVector({k: v for k, v in args.context.items() if k in sources})
    reward = model.infer_reward(context, reward=args.reward)
    policy = Policy(reward, args.strategy)
    arm = policy.decide(np.random.default_rng(args.seed))
    probabilities = policy.probabilities(np.random.default_rng(args.seed), args.n_draws)[0]
    rows = reward.to_dict()["rewards"]
    lines = [f"decision for {dict(args.context)}: **{_label(arm)}** ({args.strategy}, reward {reward.label!r})",
             "", "| arm | P(played) | posterior mean reward |", "|---|---|---|"]
    for a, p, r in zip(policy.arms, probabilities, rows):
        lines.append(f"| {_label(a)} | {p:.3f} | {r['estimate']:.4g} |")
    return Decision(arm=_label(arm), strategy=args.strategy, reward=reward.label,
                    probabilities=[ArmProbability(arm=_label(a), probability=float(p))
                                   for a, p in zip(policy.arms, probabilities)],
                    rewards=rows, markdown="\n".join(lines))


TOOLS = (rank_arms, decide)
