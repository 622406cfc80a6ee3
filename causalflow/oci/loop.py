"""The OCI loop: Actor -> runner -> Critic, repeated, with every iteration kept.

The loop stops when every estimand is ``fully_satisfactory``, when the Critic has
nothing to propose or the Actor's next spec was already run ("nothing new"), at
``max_iterations``, or when a revised spec cannot run ("revision_failed").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Literal

from ..errors import ValidationError
from .actor import RuleActor
from .critic import RuleCritic
from .diagnostics import Thresholds
from .plan import Plan, prepare_data
from .records import Iteration, OCIRun
from .runner import run_spec

__all__ = ["ARTIFACT_LEVELS", "Iteration", "OCIRun", "as_plan", "run"]

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


def run(plan, max_iterations: int = 3, artifacts: str | os.PathLike | None = None, *,
        artifact_level: ArtifactLevel = "full", data=None, actor=None, critic=None,
        thresholds: Thresholds | None = None,
        progress: Callable[[Iteration], None] | None = None) -> OCIRun:
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

        writer = ArtifactWriter(artifacts, artifact_level, analysis)
    iterations: list[Iteration] = []
    seen: set[str] = set()
    previous, critique = None, None
    stop_reason, stop_detail = "max_iterations", None
    for index in range(1, max_iterations + 1):
        step = actor.propose(plan, previous, critique)
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
        iteration = Iteration(index, step, result, critique)
        if writer is not None:
            iteration = writer.write_iteration(iteration)
        iterations.append(iteration)
        if progress is not None:
            progress(iteration)
        if critique.all_fully_satisfactory:
            stop_reason = "all_fully_satisfactory"
            break
        if not critique.proposals:
            stop_reason = "nothing_new"
            break
        previous = step.spec
    outcome = OCIRun(plan, tuple(iterations), stop_reason,
                     None if artifacts is None else os.fspath(artifacts), stop_detail)
    if writer is not None:
        writer.write_index(outcome)
    return outcome
