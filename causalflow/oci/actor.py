"""The Actor: turn the plan (and the Critic's proposals) into the next spec.

The default :class:`RuleActor` is deterministic. First spec: the plan's estimands,
the high- and medium-priority confounders as the adjustment set (low-priority ones
are candidates whose balance is still checked), the plan's placebo outcomes, the
configured learners and folds, no trimming. The default learners (propensity
``"auto_calibrated"``: the convex combination of logistic regression and LightGBM, each
calibrated by isotonic regression, with the smallest out-of-fold log-loss; outcome
``"gbm_x_select"``), 5 folds, AIPW and one cross-fitting split were chosen on the validation
suite of issue 16 (ACIC 2016, the Nie-Wager setups, two real studies;
benchmarks/README.md, "Candidate defaults"): the one configuration that met the coverage
target on every family with the smallest error. Revision: apply every proposal of the
critique in order with :func:`causalflow.oci.spec.apply_change`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .critic import Critique
from .plan import Plan
from .spec import FinalStage, Spec, apply_change

__all__ = ["Actor", "ActorStep", "RuleActor"]


@dataclass(frozen=True, slots=True)
class ActorStep:
    """The Actor's output: the spec, who made it (``rules`` / ``llm``), and a note
    (for example why an LLM answer was rejected)."""

    spec: Spec
    source: str = "rules"
    note: str | None = None


class Actor(Protocol):
    """What the loop needs from an Actor: ``previous`` and ``critique`` are None the first time."""

    def propose(self, plan: Plan, previous: Spec | None, critique: Critique | None) -> ActorStep: ...


@dataclass(frozen=True, slots=True)
class RuleActor:
    """Deterministic Actor (rules in the module docstring).

    Parameters
    ----------
    propensity_learner, outcome_learner : str
        Learner names for the first spec (see :mod:`causalflow.oci.learners`).
    n_folds : int
    final_stage : "aipw", "aipw_sample", "tmle" or "weighted_linear"
    include_low : bool
        Adjust for low-priority confounders from the start.
    n_repeats : int
        Cross-fitting splits whose estimates are aggregated (``Spec.n_repeats``).

    Examples
    --------
    >>> from causalflow.oci.plan import Plan
    >>> plan = Plan(data="d.csv", treatment="t", outcome="y",
    ...             confounders={"high": ["x"], "low": ["u"]}, estimands=["ATE"])
    >>> RuleActor().propose(plan, None, None).spec.covariates
    ('x',)
    """

    propensity_learner: str = "auto_calibrated"
    outcome_learner: str = "gbm_x_select"
    n_folds: int = 5
    final_stage: FinalStage = "aipw"
    include_low: bool = False
    n_repeats: int = 1

    def initial_spec(self, plan: Plan) -> Spec:
        levels = ("high", "medium", "low") if self.include_low else ("high", "medium")
        covariates = tuple(c for p in levels for c in plan.confounders[p])
        if not covariates:  # only low-priority confounders were named: use them
            covariates = plan.all_confounders
        return Spec(estimands=plan.estimands, covariates=covariates,
                    priorities=tuple((c, plan.priority_of(c)) for c in plan.all_confounders),
                    propensity_learner=self.propensity_learner, outcome_learner=self.outcome_learner,
                    n_folds=self.n_folds, final_stage=self.final_stage, n_repeats=self.n_repeats,
                    placebo_outcomes=plan.placebo_outcomes, seed=plan.seed)

    def propose(self, plan: Plan, previous: Spec | None, critique: Critique | None) -> ActorStep:
        if previous is None:
            return ActorStep(self.initial_spec(plan))
        spec = previous
        for proposal in (critique.proposals if critique is not None else ()):
            spec = apply_change(spec, proposal.change, plan)
        return ActorStep(spec)
