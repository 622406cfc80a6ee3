"""The analysis spec: what the runner executes in one iteration, and the changes the Critic proposes.

A :class:`Spec` is plain data (JSON in, JSON out) and is validated strictly, because
it may come from an LLM: unknown keys, unknown learners, covariates outside the
plan's confounders, or estimands outside ATE / ATT / ATO are rejected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from ..errors import ValidationError
from .learners import get_learner
from .plan import ESTIMANDS, PRIORITIES, Plan, check_fields

__all__ = ["CHANGE_KEYS", "Spec", "apply_change"]

FinalStage = Literal["aipw", "weighted_linear", "aipw_sample", "tmle"]
_FINAL_STAGES = ("aipw", "weighted_linear", "aipw_sample", "tmle")
_SPEC_KEYS = ("estimands", "covariates", "priorities", "propensity_learner", "outcome_learner",
              "n_folds", "trimming", "final_stage", "propensity_clip", "placebo_outcomes", "seed",
              "notes", "n_repeats")
#: the keys a proposed change may carry (see :func:`apply_change`)
CHANGE_KEYS = ("add_estimands", "add_covariates", "priority", "trimming", "propensity_learner",
               "outcome_learner", "final_stage", "notes")


@dataclass(frozen=True, slots=True)
class Spec:
    """One iteration's analysis.

    Attributes
    ----------
    estimands : tuple of "ATE" / "ATT" / "ATO"
    covariates : tuple of str
        The adjustment set (a subset of the plan's confounders).
    priorities : tuple of (column, priority) pairs
        Priority of every plan confounder as this spec sees it (the Critic may raise one).
    propensity_learner, outcome_learner : str
        Names in :mod:`causalflow.oci.learners`.
    n_folds : int
        Cross-fitting folds (>= 2).
    trimming : "none", "crump", or a float alpha in (0, 0.5)
        Keep units with alpha <= e(x) <= 1 - alpha for ATE and ATT; ``"crump"`` picks
        alpha by Crump et al. (2009). ATO is never trimmed (its weights are bounded).
    final_stage : "aipw", "aipw_sample", "tmle" or "weighted_linear"
        ``"weighted_linear"`` fits the grammar's weighted LinearModel for the final stage.
        ``"aipw_sample"``: Hajek-normalised AIPW with the sample-ATT variance
        (:mod:`causalflow.oci.sample_estimands`). ``"tmle"``: the same after targeting the
        outcome predictions with a bounded logistic fluctuation
        (:mod:`causalflow.oci.targeting`). The ATO always uses the augmented overlap weights.
    propensity_clip : float
        Propensities are clipped to [clip, 1 - clip] before weighting.
    placebo_outcomes : tuple of str
    seed : int
    notes : tuple of str
        Free-text notes carried along (for example a data-insufficiency note).
    n_repeats : int
        Repeated cross-fitting: the nuisances are cross-fitted on ``n_repeats`` fold splits
        (seeds ``seed, seed + 1, ...``) and the estimates aggregated
        (:func:`causalflow.oci.estimators.aggregate`; Chernozhukov et al. 2018, section 3.4).
    """

    estimands: tuple
    covariates: tuple
    priorities: tuple
    propensity_learner: str = "linear"
    outcome_learner: str = "linear"
    n_folds: int = 5
    trimming: object = "none"
    final_stage: FinalStage = "aipw"
    propensity_clip: float = 1e-3
    placebo_outcomes: tuple = ()
    seed: int = 0
    notes: tuple = ()
    n_repeats: int = 1

    def __post_init__(self) -> None:
        _check_spec(self)

    def priority(self, column: str) -> str:
        return dict(self.priorities)[column]

    def to_dict(self) -> dict:
        """JSON-ready fields (the inverse of :meth:`from_dict`)."""
        return {
            "estimands": list(self.estimands), "covariates": list(self.covariates),
            "priorities": {c: p for c, p in self.priorities},
            "propensity_learner": self.propensity_learner, "outcome_learner": self.outcome_learner,
            "n_folds": self.n_folds, "trimming": self.trimming, "final_stage": self.final_stage,
            "propensity_clip": self.propensity_clip, "placebo_outcomes": list(self.placebo_outcomes),
            "seed": self.seed, "notes": list(self.notes), "n_repeats": self.n_repeats,
        }

    def key(self) -> str:
        """A digest of everything that changes the numbers (notes excluded)."""
        d = self.to_dict()
        d.pop("notes")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, mapping: Mapping, plan: Plan | None = None) -> Spec:
        """Validate a JSON-like mapping (for example an LLM's answer) into a spec.

        With ``plan``, covariates must be plan confounders and placebo outcomes plan
        placebo outcomes; priorities default to the plan's.

        Examples
        --------
        >>> s = Spec.from_dict({"estimands": ["ATE"], "covariates": ["x"], "priorities": {"x": "high"}})
        >>> s.propensity_learner, s.trimming
        ('linear', 'none')
        >>> Spec.from_dict({"estimands": ["ATE"], "covariates": ["x"], "priorities": {"x": "high"},
        ...                 "code": "import os"})
        Traceback (most recent call last):
        ...
        causalflow.errors.ValidationError: Spec.code: unknown field; known fields: ['estimands',
        'covariates', 'priorities', 'propensity_learner', 'outcome_learner', 'n_folds', 'trimming',
        'final_stage', 'propensity_clip', 'placebo_outcomes', 'seed', 'notes', 'n_repeats']
        """
        check_fields(mapping, "Spec", _SPEC_KEYS, ("estimands", "covariates"))
        kwargs = dict(mapping)
        priorities = kwargs.get("priorities")
        if priorities is None and plan is not None:
            priorities = {c: plan.priority_of(c) for c in plan.all_confounders}
        if not isinstance(priorities, Mapping):
            raise ValidationError("Spec.priorities: must map each confounder to high / medium / low")
        kwargs["priorities"] = tuple((str(c), p) for c, p in priorities.items())
        for name in ("estimands", "covariates", "placebo_outcomes", "notes"):
            if name in kwargs:
                value = kwargs[name]
                if not isinstance(value, (list, tuple)):
                    raise ValidationError(f"Spec.{name}: must be a list, got {type(value).__name__}")
                kwargs[name] = tuple(value)
        if plan is not None:
            kwargs.setdefault("seed", plan.seed)
            _check_columns(kwargs.get("covariates", ()), plan)
        spec = cls(**kwargs)
        if plan is not None:
            check_against_plan(spec, plan)
        return spec


def _check_spec(spec: Spec) -> None:
    def fail(field: str, problem: str):
        raise ValidationError(f"Spec.{field}: {problem}")

    if not spec.estimands:
        fail("estimands", "give at least one of ATE, ATT, ATO")
    for e in spec.estimands:
        if e not in ESTIMANDS:
            fail("estimands", f"unknown estimand {e!r}; choose from {ESTIMANDS}")
    if len(set(spec.estimands)) != len(spec.estimands):
        fail("estimands", "duplicates")
    if not spec.covariates:
        fail("covariates", "the adjustment set is empty")
    for c in spec.covariates:
        if not isinstance(c, str) or not c:
            fail("covariates", f"not a column name: {c!r}")
    if len(set(spec.covariates)) != len(spec.covariates):
        fail("covariates", "duplicates")
    prio = dict(spec.priorities)
    for c, p in spec.priorities:
        if p not in PRIORITIES:
            fail("priorities", f"{c!r} has unknown priority {p!r}; choose from {PRIORITIES}")
    for c in spec.covariates:
        if c not in prio:
            fail("priorities", f"covariate {c!r} has no priority")
    for name in ("propensity_learner", "outcome_learner"):
        value = getattr(spec, name)
        try:
            get_learner(value)
        except ValidationError as exc:
            fail(name, str(exc))
    if isinstance(spec.n_folds, bool) or not isinstance(spec.n_folds, int) or not 2 <= spec.n_folds <= 20:
        fail("n_folds", f"must be an integer in [2, 20], got {spec.n_folds!r}")
    trimming = spec.trimming
    if isinstance(trimming, str):
        if trimming not in ("none", "crump"):
            fail("trimming", f"must be 'none', 'crump' or a number in (0, 0.5), got {trimming!r}")
    elif isinstance(trimming, bool) or not isinstance(trimming, (int, float)) or not 0 < trimming < 0.5:
        fail("trimming", f"must be 'none', 'crump' or a number in (0, 0.5), got {trimming!r}")
    if spec.final_stage not in _FINAL_STAGES:
        fail("final_stage", f"must be one of {_FINAL_STAGES}, got {spec.final_stage!r}")
    clip = spec.propensity_clip
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 <= clip < 0.5:
        fail("propensity_clip", f"must be a number in [0, 0.5), got {clip!r}")
    for c in spec.placebo_outcomes:
        if not isinstance(c, str) or not c:
            fail("placebo_outcomes", f"not a column name: {c!r}")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or spec.seed < 0:
        fail("seed", f"must be a non-negative integer, got {spec.seed!r}")
    for note in spec.notes:
        if not isinstance(note, str):
            fail("notes", "must be strings")
    repeats = spec.n_repeats
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 20:
        fail("n_repeats", f"must be an integer in [1, 20], got {spec.n_repeats!r}")


def _check_columns(covariates, plan: Plan) -> None:
    for c in covariates:
        if c not in plan.all_confounders:
            raise ValidationError(f"Spec.covariates: {c!r} is not a confounder of the plan "
                                  f"(allowed: {list(plan.all_confounders)})")


def check_against_plan(spec: Spec, plan: Plan) -> None:
    """Covariates must be plan confounders and placebos plan placebos (no outcome leakage)."""
    _check_columns(spec.covariates, plan)
    allowed = set(plan.all_confounders)
    for c in spec.placebo_outcomes:
        if c not in plan.placebo_outcomes:
            raise ValidationError(f"Spec.placebo_outcomes: {c!r} is not a placebo outcome of the plan")
    missing = allowed - set(dict(spec.priorities))
    if missing:
        raise ValidationError(f"Spec.priorities: no priority for confounder {sorted(missing)[0]!r}")


def apply_change(spec: Spec, change: Mapping, plan: Plan | None = None) -> Spec:
    """A new spec with a proposed change applied (validated; unknown keys rejected).

    Keys: ``add_estimands`` (list), ``add_covariates`` (list) with optional
    ``priority`` (their new priority), ``trimming``, ``propensity_learner``,
    ``outcome_learner``, ``final_stage``, ``notes`` (list, appended).

    Examples
    --------
    >>> s = Spec(estimands=("ATE",), covariates=("x",), priorities=(("x", "high"), ("u", "low")))
    >>> s2 = apply_change(s, {"add_covariates": ["u"], "priority": "high"})
    >>> s2.covariates, s2.priority("u")
    (('x', 'u'), 'high')
    """
    check_fields(change, "change", CHANGE_KEYS, word="key")
    for key in ("add_estimands", "add_covariates", "notes"):
        if key in change and not (isinstance(change[key], (list, tuple))
                                  and all(isinstance(v, str) for v in change[key])):
            raise ValidationError(f"change.{key}: must be a list of strings, got {change[key]!r}")
    fields = {}
    if plan is not None and "add_covariates" in change:
        _check_columns(change["add_covariates"], plan)
    if "add_estimands" in change:
        fields["estimands"] = tuple(dict.fromkeys([*spec.estimands, *change["add_estimands"]]))
    if "add_covariates" in change:
        added = list(change["add_covariates"])
        fields["covariates"] = tuple(dict.fromkeys([*spec.covariates, *added]))
        if "priority" in change:
            prio = dict(spec.priorities)
            for c in added:
                prio[c] = change["priority"]
            fields["priorities"] = tuple(prio.items())
    for key in ("trimming", "propensity_learner", "outcome_learner", "final_stage"):
        if key in change:
            fields[key] = change[key]
    if "notes" in change:
        fields["notes"] = tuple(dict.fromkeys([*spec.notes, *change["notes"]]))
    new = replace(spec, **fields)
    if plan is not None:
        check_against_plan(new, plan)
    return new
