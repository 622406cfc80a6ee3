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

__all__ = ["FRAME_COLUMNS", "NARROWER", "VERDICT_RANK", "Iteration", "OCIRun", "choose_final", "grade"]

FRAME_COLUMNS = ["estimand", "estimate", "std_error", "ci_lower", "ci_upper", "p_value", "n", "verdict",
                 "population"]
#: order of the Critic's verdicts, worst first
VERDICT_RANK = {"not_satisfactory": 0, "satisfactory_with_caveats": 1, "fully_satisfactory": 2}
#: a later iteration with the same verdict replaces an earlier one only when every reported
#: estimand's interval is at most this fraction of the earlier one's, on the same population
NARROWER = 0.8


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
    applied : tuple of Proposal
        The open proposals the Actor was given to make this spec (empty for iteration 1).
    base : int or None
        The iteration whose spec was revised into this one (None for iteration 1).
    """

    index: int
    actor: ActorStep
    result: SpecResult
    critique: Critique
    files: dict = field(default_factory=dict)
    applied: tuple = ()
    base: int | None = None

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


def grade(it: Iteration, estimands) -> int:
    """The credibility of an iteration: the worst verdict (:data:`VERDICT_RANK`) over the
    reported estimands ``estimands`` (the plan's; an estimand the spec lacks counts as
    not satisfactory).

    >>> from types import SimpleNamespace as N
    >>> it = N(verdicts={"ATT": "satisfactory_with_caveats", "ATO": "fully_satisfactory"})
    >>> grade(it, ["ATT"]), grade(it, ["ATT", "ATO"]), grade(it, ["ATE"])
    (1, 1, 0)
    """
    verdicts = it.verdicts
    return min(VERDICT_RANK.get(verdicts.get(e), 0) for e in estimands)


def _clearly_narrower(later: Iteration, earlier: Iteration, estimands) -> bool:
    """Every reported estimand of ``later`` describes the same population as in ``earlier``
    and its interval is at most :data:`NARROWER` times as long."""
    for e in estimands:
        a = next((r for r in later.estimates if r.estimand == e), None)
        b = next((r for r in earlier.estimates if r.estimand == e), None)
        if a is None or b is None or a.population != b.population:
            return False
        if not (a.ci_upper - a.ci_lower) <= NARROWER * (b.ci_upper - b.ci_lower):
            return False
    return True


def choose_final(iterations, estimands) -> tuple[int, str]:
    """The most credible iteration and why: ``(position in iterations, reason)``.

    Rule: the best :func:`grade` wins; among iterations with the same grade the earlier
    (fewer changes) one is kept, unless a later one has a clearly narrower interval for the
    same population (:data:`NARROWER`, every reported estimand).

    >>> from types import SimpleNamespace as N
    >>> r = lambda lo, hi: N(estimand="ATT", population="p", ci_lower=lo, ci_upper=hi)
    >>> its = [N(index=i + 1, verdicts={"ATT": v}, estimates=(r(*ci),)) for i, (v, ci) in enumerate(
    ...     [("not_satisfactory", (0, 9)), ("satisfactory_with_caveats", (0, 3)),
    ...      ("not_satisfactory", (0, 6))])]
    >>> choose_final(its, ["ATT"])[0]
    1
    """
    if not iterations:
        raise ValueError("choose_final: no iterations")
    best = 0
    how = "first"
    for pos in range(1, len(iterations)):
        it, cur = iterations[pos], iterations[best]
        g, gb = grade(it, estimands), grade(cur, estimands)
        if g > gb:
            best, how = pos, "better"
        elif g == gb and _clearly_narrower(it, cur, estimands):
            best, how = pos, f"narrower than iteration {cur.index}"
    chosen = iterations[best]
    verdicts = ", ".join(f"{e}: {chosen.verdicts.get(e, 'missing')}" for e in estimands)
    if len(iterations) == 1:
        return best, f"iteration {chosen.index} is the only iteration ({verdicts})"
    same = [it.index for it in iterations if grade(it, estimands) == grade(chosen, estimands)]
    worse = [it.index for it in iterations if grade(it, estimands) < grade(chosen, estimands)]
    reason = f"iteration {chosen.index} has the best verdict of the {len(iterations)} iterations ({verdicts})"
    if how.startswith("narrower"):
        reason += (f"; {_iterations(i for i in same if i != chosen.index)} the same verdict, and "
                   f"iteration {chosen.index}'s intervals are clearly narrower (at most {NARROWER:g} "
                   "times as long) on the same population")
    elif len(same) > 1:
        later = [i for i in same if i > chosen.index]
        if later:
            reason += (f"; {_iterations(later)} the same verdict, no clearly narrower interval "
                       "for the same population, and more changes: the earlier one is kept")
    if worse:
        reason += f"; {_iterations(worse, 'was', 'were')} graded worse"
    return best, reason


def _iterations(items, one: str = "has", many: str = "have") -> str:
    """``iteration 3 has`` / ``iterations 1 and 3 have``."""
    items = [str(i) for i in items]
    if len(items) == 1:
        return f"iteration {items[0]} {one}"
    return f"iterations {', '.join(items[:-1])} and {items[-1]} {many}"


@dataclass(frozen=True, slots=True)
class OCIRun:
    """The whole loop: the plan, every iteration, why it stopped, where artifacts are.

    ``stop_reason`` is ``"all_fully_satisfactory"`` (every plan estimand),
    ``"nothing_new"`` (no open proposal addresses a remaining caveat, or the Actor's next
    spec was already run), ``"max_iterations"`` or ``"revision_failed"`` (a revised spec
    could not run, for example trimming left an arm empty: ``stop_detail`` says why).

    ``final`` is the most credible iteration (:func:`choose_final`: best verdict of the plan's
    estimands; among equals the earlier, unless a later one is clearly narrower on the same
    population), ``final_reason`` says why; ``last`` is the last iteration. ``rejected``
    holds the proposals that made the result worse (tried once, never proposed again).
    """

    plan: Plan
    iterations: tuple
    stop_reason: str
    directory: str | None = None
    stop_detail: str | None = None
    rejected: tuple = ()

    @property
    def final(self) -> Iteration:
        """The most credible iteration (what the report, the CLI and agents show)."""
        return self.iterations[choose_final(self.iterations, self.plan.estimands)[0]]

    @property
    def final_reason(self) -> str:
        """Why :attr:`final` is the reported iteration."""
        return choose_final(self.iterations, self.plan.estimands)[1]

    @property
    def last(self) -> Iteration:
        """The last iteration the loop ran."""
        return self.iterations[-1]

    def to_frame(self) -> pd.DataFrame:
        """Every iteration's table, with an ``iteration`` column first."""
        frames = [it.to_frame().assign(iteration=it.index) for it in self.iterations]
        out = pd.concat(frames, ignore_index=True)
        return out[["iteration", *FRAME_COLUMNS]]
