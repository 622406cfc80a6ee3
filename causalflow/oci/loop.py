"""The OCI loop: Actor -> runner -> Critic, repeated, with every iteration kept.

Reported result: the most credible iteration (:func:`causalflow.oci.records.choose_final`:
the best verdict of the plan's estimands; among equal verdicts the earlier, unless a later
one has a clearly narrower interval for the same population), not the last.

Revision: the Actor revises the spec of the latest iteration that was not graded worse
than the one it came from, with the *open* proposals of its critique: those not tried
before that address a remaining caveat (every kind but the data-insufficiency note). An
iteration graded worse than its base has its proposals recorded as tried and rejected
(``OCIRun.rejected``), and the next revision starts again from the base.

The loop stops when every plan estimand is ``fully_satisfactory``
("all_fully_satisfactory"), when no open proposal is left or the Actor's next spec was
already run ("nothing_new"), at ``max_iterations``, or when a revised spec cannot run
("revision_failed").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Literal

from ..errors import ValidationError
from .actor import RuleActor
from .critic import RuleCritic
from .diagnostics import Thresholds
from .plan import Plan, prepare_data
from .records import Iteration, OCIRun, grade
from .runner import run_spec

__all__ = ["ARTIFACT_LEVELS", "Iteration", "OCIRun", "as_plan", "open_proposals", "run"]

ArtifactLevel = Literal["minimal", "standard", "full"]
#: minimal: JSON and markdown only; standard: + plots and HTML report; full: + executed notebook
ARTIFACT_LEVELS = ("minimal", "standard", "full")


def as_plan(plan) -> Plan:
    """A :class:`Plan` from a Plan, a mapping, or a YAML / JSON path."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, (str, os.PathLike)):
        return Plan.from_file(plan)
    if isinstance(plan, Mapping):
        return Plan.from_dict(plan)
    raise ValidationError(f"plan: expected a Plan, a mapping or a path, got {type(plan).__name__}")


def open_proposals(it: Iteration, tried) -> tuple:
    """The proposals of ``it``'s critique the Actor may still apply: not tried before
    (``tried``: the changes applied so far), addressing an estimand that is not fully
    satisfactory (or no estimand in particular), and not a data-insufficiency note (a
    statement that no spec change can help).

    >>> from types import SimpleNamespace as N
    >>> from causalflow.oci.critic import Proposal
    >>> a = Proposal("trim", {"trimming": "crump"}, "overlap", "ATE")
    >>> b = Proposal("flexible_learner", {"outcome_learner": "lightgbm"}, "imbalance", "ATE")
    >>> it = N(critique=N(proposals=(a, b)), verdicts={"ATE": "not_satisfactory"})
    >>> [p.kind for p in open_proposals(it, [{"trimming": "crump"}])]
    ['flexible_learner']
    """
    verdicts = it.verdicts
    return tuple(p for p in it.critique.proposals
                 if p.kind != "data_insufficiency" and p.change not in tried
                 and (p.estimand is None or verdicts.get(p.estimand) != "fully_satisfactory"))


def run(plan, max_iterations: int = 3, artifacts: str | os.PathLike | None = None, *,
        artifact_level: ArtifactLevel = "full", data=None, actor=None, critic=None,
        thresholds: Thresholds | None = None,
        progress: Callable[[Iteration], None] | None = None, notebook: bool = True) -> OCIRun:
    """Run the OCI loop.

    Parameters
    ----------
    plan : Plan, mapping, or path to a YAML / JSON plan
    max_iterations : int
    artifacts : folder, optional
        Where to write every iteration's files and ``run.json``; None writes nothing.
    artifact_level : "minimal", "standard" or "full"
        minimal: plan, spec, results, diagnostics, critique (JSON) and a markdown report;
        standard: + PNG plots and a self-contained HTML report; full: + an executed notebook
        that re-runs the iteration from the saved files.
    data : table, optional
        An in-memory pandas / polars / pyarrow table that replaces ``plan.data``.
    actor, critic : optional
        Default :class:`RuleActor` and :class:`RuleCritic` (deterministic, no network).
    thresholds : Thresholds, optional
    progress : callable(Iteration), optional
        Called after each iteration (the CLI drives a progress bar with it).
    notebook : bool
        False skips the executed notebook of level "full" (batch evaluations; the CLI's
        ``--no-notebook``).

    Returns an :class:`OCIRun`: ``run.final`` is the most credible iteration (module
    docstring), ``run.last`` the last one, ``run.final_reason`` why.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=600); t = (rng.random(600) < 1 / (1 + np.exp(-0.5 * x))).astype(int)
    >>> df = pd.DataFrame({"x": x, "t": t, "y": 2 * t + x + rng.normal(size=600)})
    >>> plan = Plan(data=df, treatment="t", outcome="y", confounders=["x"], estimands=["ATE"])
    >>> result = run(plan, actor=RuleActor(n_folds=2))
    >>> result.stop_reason, list(result.final.to_frame().columns[:2])
    ('all_fully_satisfactory', ['estimand', 'estimate'])
    """
    plan = as_plan(plan)
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise ValidationError(f"max_iterations: must be a positive integer, got {max_iterations!r}")
    if artifact_level not in ARTIFACT_LEVELS:
        raise ValidationError(f"artifact_level: must be one of {ARTIFACT_LEVELS}, got {artifact_level!r}")
    analysis = prepare_data(plan, table=data)
    actor = actor if actor is not None else RuleActor()
    critic = critic if critic is not None else RuleCritic(thresholds or Thresholds())
    writer = None
    if artifacts is not None:
        from .artifacts import ArtifactWriter

        writer = ArtifactWriter(artifacts, artifact_level, analysis, notebook=notebook)
    iterations: list[Iteration] = []
    seen: set[str] = set()
    tried: list[dict] = []      # every change the Actor was given
    rejected: list = []         # proposals whose iteration was graded worse than its base
    base: Iteration | None = None  # the iteration the next revision starts from
    stop_reason, stop_detail = "max_iterations", None
    for index in range(1, max_iterations + 1):
        applied: tuple = ()
        if base is None:
            step = actor.propose(plan, None, None)
        else:
            applied = open_proposals(base, tried)
            if not applied:
                stop_reason = "nothing_new"
                break
            step = actor.propose(plan, base.spec, replace(base.critique, proposals=applied))
            tried += [p.change for p in applied]
        if step.spec.key() in seen:
            stop_reason = "nothing_new"
            break
        seen.add(step.spec.key())
        try:
            result = run_spec(analysis, step.spec, thresholds)
        except ValidationError as exc:
            if not iterations:  # the first spec must run: its errors are the user's to see
                raise
            stop_reason, stop_detail = "revision_failed", str(exc)
            break
        critique = critic.review(plan, result)
        iteration = Iteration(index, step, result, critique, applied=applied,
                              base=None if base is None else base.index)
        if writer is not None:
            iteration = writer.write_iteration(iteration)
        iterations.append(iteration)
        if progress is not None:
            progress(iteration)
        if base is not None and grade(iteration, plan.estimands) < grade(base, plan.estimands):
            rejected += [p for p in applied if p not in rejected]  # tried, made it worse: keep the base
        else:
            base = iteration
        if all(iteration.verdicts.get(e) == "fully_satisfactory" for e in plan.estimands):
            stop_reason = "all_fully_satisfactory"
            break
        if not open_proposals(base, tried):  # said here too, so that the last iteration's stop is exact
            stop_reason = "nothing_new"
            break
    outcome = OCIRun(plan, tuple(iterations), stop_reason,
                     None if artifacts is None else os.fspath(artifacts), stop_detail, tuple(rejected))
    if writer is not None:
        from .summary import run_summary_blocks

        writer.write_index(outcome, run_summary_blocks(outcome))
    return outcome
