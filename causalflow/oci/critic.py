"""The Critic: grade each estimand from the diagnostic values and propose spec changes.

Verdicts (per estimand):

- ``not_satisfactory``: some check failed (high-priority imbalance |SMD| >= 0.2,
  overlap, extreme weights, too few units);
- ``satisfactory_with_caveats``: no failure but some warning (moderate imbalance,
  moderate overlap, a significant placebo effect, a fragile estimate, a trimmed
  population);
- ``fully_satisfactory``: every check passed.

Proposals are concrete spec changes (:func:`causalflow.oci.spec.apply_change`):

- overlap / extreme weights / extrapolation dependence for ATE or ATT -> add ATO, and
  Crump trimming;
- an imbalanced confounder outside the adjustment set (weighted |SMD| >= 0.2, or
  >= 0.1 when a placebo outcome shows an effect) -> add it, as high priority;
- imbalance of a confounder in the model with a linear learner -> a flexible learner;
  already flexible -> trimming (with poor overlap the trimming / ATO proposals come first);
- a placebo effect with nothing left to add -> a flexible learner, else a
  data-insufficiency note (an unmeasured confounder is likely);
- too few units -> a data-insufficiency note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from .diagnostics import Thresholds
from .formatting import fmt_number
from .learners import FLEXIBLE_LEARNERS, get_learner
from .plan import Plan
from .runner import SpecResult

__all__ = ["VERDICTS", "Critic", "Critique", "Proposal", "RuleCritic", "Verdict"]

VerdictName = Literal["fully_satisfactory", "satisfactory_with_caveats", "not_satisfactory"]
VERDICTS = ("fully_satisfactory", "satisfactory_with_caveats", "not_satisfactory")
ProposalKind = Literal["add_estimand", "trim", "add_covariates", "flexible_learner", "data_insufficiency"]
PROPOSAL_KINDS = ("add_estimand", "trim", "add_covariates", "flexible_learner", "data_insufficiency")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The grade of one estimand, with the reasons (one per check that did not pass).

    >>> Verdict("ATE", "fully_satisfactory").to_dict()
    {'estimand': 'ATE', 'verdict': 'fully_satisfactory', 'reasons': []}
    """

    estimand: str
    verdict: VerdictName
    reasons: tuple = ()

    def to_dict(self) -> dict:
        return {"estimand": self.estimand, "verdict": self.verdict, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Proposal:
    """A concrete spec change with the reason for it.

    ``change`` is a JSON object for :func:`causalflow.oci.spec.apply_change`.

    >>> Proposal("trim", {"trimming": "crump"}, "poor overlap").to_dict()["change"]
    {'trimming': 'crump'}
    """

    kind: ProposalKind
    change: dict
    reason: str
    estimand: str | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "change": self.change, "reason": self.reason, "estimand": self.estimand}


@dataclass(frozen=True, slots=True)
class Critique:
    """Verdicts for every estimand of the spec, and the proposals.

    ``source`` is ``"rules"`` or ``"llm"``; ``note`` says why an LLM answer was set
    aside, when it was.

    >>> c = Critique((Verdict("ATE", "fully_satisfactory"), Verdict("ATO", "not_satisfactory")), ())
    >>> c.all_fully_satisfactory, c.verdict("ATO")
    (False, 'not_satisfactory')
    """

    verdicts: tuple
    proposals: tuple
    source: str = "rules"
    note: str | None = None

    @property
    def all_fully_satisfactory(self) -> bool:
        return all(v.verdict == "fully_satisfactory" for v in self.verdicts)

    def verdict(self, estimand: str) -> str:
        return next(v.verdict for v in self.verdicts if v.estimand == estimand)

    def to_dict(self) -> dict:
        return {"source": self.source, "note": self.note,
                "verdicts": [v.to_dict() for v in self.verdicts],
                "proposals": [p.to_dict() for p in self.proposals]}


class Critic(Protocol):
    """What the loop needs from a Critic."""

    def review(self, plan: Plan, result: SpecResult) -> Critique: ...


def _reason(check) -> str:
    value = fmt_number(check.value, missing="n/a")
    limits = []
    if check.warn_at is not None:
        limits.append(f"warn at {fmt_number(check.warn_at)}")
    if check.fail_at is not None:
        limits.append(f"fail at {fmt_number(check.fail_at)}")
    suffix = f" ({', '.join(limits)})" if limits else ""
    return f"{check.name} {check.status}: {check.detail} = {value}{suffix}"


@dataclass(frozen=True, slots=True)
class RuleCritic:
    """The deterministic Critic (rules in the module docstring).

    Examples
    --------
    >>> RuleCritic().thresholds.smd_fail
    0.2
    """

    thresholds: Thresholds = Thresholds()

    def grade(self, result: SpecResult) -> tuple[Verdict, ...]:
        verdicts = []
        for diag in result.diagnostics:
            statuses = {c.status for c in diag.checks}
            verdict = ("not_satisfactory" if "fail" in statuses else
                       "satisfactory_with_caveats" if "warn" in statuses else "fully_satisfactory")
            reasons = tuple(_reason(c) for c in diag.checks if c.status in ("warn", "fail"))
            verdicts.append(Verdict(diag.estimand, verdict, reasons))
        return tuple(verdicts)

    def review(self, plan: Plan, result: SpecResult) -> Critique:
        spec, th = result.spec, self.thresholds
        proposals: list[Proposal] = []

        def propose(kind, change, reason, estimand=None):
            if all(p.change != change for p in proposals):
                proposals.append(Proposal(kind, change, reason, estimand))

        flexible = get_learner(spec.propensity_learner).flexible and get_learner(spec.outcome_learner).flexible
        for diag in result.diagnostics:
            checks = {c.name: c for c in diag.checks if c.name != "placebo"}
            flagged = {name for name, c in checks.items() if c.status in ("warn", "fail")}
            placebo_flags = [c for c in diag.checks if c.name == "placebo" and c.status in ("warn", "fail")]
            support = ("overlap", "extreme_weights", "extrapolation")
            poor_overlap = diag.estimand != "ATO" and any(n in flagged for n in support)
            if poor_overlap:
                why = "; ".join(_reason(checks[n]) for n in support if n in flagged)
                if "ATO" not in spec.estimands:
                    propose("add_estimand", {"add_estimands": ["ATO"]},
                            f"{diag.estimand} is poorly supported ({why}); the overlap-weighted effect "
                            "(Li, Morgan & Zaslavsky 2018) is estimable", diag.estimand)
                if spec.trimming == "none":
                    propose("trim", {"trimming": "crump"},
                            f"trim to the Crump et al. (2009) optimal region ({why}); the "
                            f"{diag.estimand} becomes an effect on the trimmed population", diag.estimand)
            limit_out = th.smd_warn if placebo_flags else th.smd_fail
            omitted = sorted({r.confounder for r in diag.balance
                              if not r.in_model and abs(r.smd_weighted) >= limit_out},
                             key=lambda c: plan.all_confounders.index(c))
            if omitted:
                cause = ("a placebo outcome shows an effect" if placebo_flags
                         else "they are imbalanced after weighting")
                propose("add_covariates", {"add_covariates": omitted, "priority": "high"},
                        f"confounders outside the adjustment set have weighted |SMD| >= {limit_out:g} "
                        f"and {cause}: add {omitted} as high priority", diag.estimand)
            # with poor overlap, imbalance comes from extreme weights: fix the overlap first
            modelled_imbalance = not (poor_overlap and spec.trimming == "none") and any(
                r.in_model and abs(r.smd_weighted) >= (th.smd_warn if r.priority == "high" else th.smd_fail)
                for r in diag.balance)
            if modelled_imbalance or (placebo_flags and not omitted):
                why = ("covariates in the model remain imbalanced after weighting" if modelled_imbalance
                       else "a placebo outcome shows an effect: " + _reason(placebo_flags[0]))
                if not flexible:
                    propose("flexible_learner", {"propensity_learner": FLEXIBLE_LEARNERS[0],
                                                 "outcome_learner": FLEXIBLE_LEARNERS[0]},
                            f"{why}; a flexible learner may capture non-linear confounding", diag.estimand)
                elif modelled_imbalance and spec.trimming == "none" and diag.estimand != "ATO":
                    propose("trim", {"trimming": "crump"}, f"{why} with a flexible learner; trim "
                            "the region of poor overlap", diag.estimand)
                elif placebo_flags and not omitted:
                    propose("data_insufficiency", {"notes": [
                        "A placebo outcome shows an effect that no measured confounder explains: "
                        "an unmeasured confounder is likely; the data cannot support a causal claim."]},
                        why, diag.estimand)
            if "sample_size" in flagged:
                propose("data_insufficiency", {"notes": [
                    f"Too few treated or control units for {diag.estimand}."]},
                    _reason(checks["sample_size"]), diag.estimand)
        return Critique(self.grade(result), tuple(proposals), "rules")
