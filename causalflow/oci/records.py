"""The records of the OCI loop: one :class:`Iteration` (spec, results, critique, files) and
the whole :class:`OCIRun`. The loop (:mod:`causalflow.oci.loop`) makes them and the artifact
writer (:mod:`causalflow.oci.artifacts`) reads them; both import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .actor import ActorStep
from .critic import Critique
from .plan import Plan
from .runner import SpecResult
from .spec import Spec

__all__ = ["FRAME_COLUMNS", "Iteration", "OCIRun"]

FRAME_COLUMNS = ["estimand", "estimate", "std_error", "ci_lower", "ci_upper", "p_value", "n", "verdict",
                 "population"]


@dataclass(frozen=True, slots=True)
class Iteration:
    """One pass of the loop.

    Attributes
    ----------
    index : int
        1-based.
    actor : ActorStep
        The spec and who made it.
    result : SpecResult
        Estimates and diagnostics.
    critique : Critique
    files : dict
        Artifact name -> path relative to the run folder (empty without artifacts).
    """

    index: int
    actor: ActorStep
    result: SpecResult
    critique: Critique
    files: dict = field(default_factory=dict)

    @property
    def spec(self) -> Spec:
        return self.actor.spec

    @property
    def estimates(self) -> tuple:
        return self.result.estimates

    @property
    def diagnostics(self) -> tuple:
        return self.result.diagnostics

    @property
    def verdicts(self) -> dict:
        return {v.estimand: v.verdict for v in self.critique.verdicts}

    def to_frame(self) -> pd.DataFrame:
        """One row per estimand: estimand, estimate, std_error, ci_lower, ci_upper, p_value,
        n, verdict, population."""
        verdicts = self.verdicts
        rows = [{**{k: getattr(r, k) for k in FRAME_COLUMNS if hasattr(r, k)},
                 "verdict": verdicts.get(r.estimand)} for r in self.result.estimates]
        return pd.DataFrame(rows, columns=FRAME_COLUMNS)


@dataclass(frozen=True, slots=True)
class OCIRun:
    """The whole loop: the plan, every iteration, why it stopped, where artifacts are.

    ``stop_reason`` is ``"all_fully_satisfactory"``, ``"nothing_new"``, ``"max_iterations"``
    or ``"revision_failed"`` (a revised spec could not run, for example trimming left an
    arm empty: ``stop_detail`` says why, and the last good iteration is final).
    """

    plan: Plan
    iterations: tuple
    stop_reason: str
    directory: str | None = None
    stop_detail: str | None = None

    @property
    def final(self) -> Iteration:
        return self.iterations[-1]

    def to_frame(self) -> pd.DataFrame:
        """Every iteration's table, with an ``iteration`` column first."""
        frames = [it.to_frame().assign(iteration=it.index) for it in self.iterations]
        out = pd.concat(frames, ignore_index=True)
        return out[["iteration", *FRAME_COLUMNS]]
