"""LLM-backed Actor and Critic behind a one-method client protocol (optional, never required).

The client protocol is ``complete(system: str, user: str) -> str``. The model must
answer with one JSON object; the answer is parsed with ``json.loads`` and validated
field by field (:meth:`Spec.from_dict` against the plan for the Actor; verdicts,
proposal kinds and changes for the Critic). Anything else is rejected and never
executed: with ``on_invalid="fallback"`` the deterministic rules take over and the
rejection is recorded in the step's ``note``; with ``"raise"`` a
:class:`~causalflow.errors.ValidationError` is raised.

:class:`AnthropicClient` and :class:`OpenAIClient` import their SDKs lazily (optional
extras) and read the key from the environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

from ..errors import ValidationError
from .actor import ActorStep, RuleActor
from .critic import PROPOSAL_KINDS, VERDICTS, Critique, Proposal, RuleCritic, Verdict
from .learners import learner_names
from .plan import Plan
from .runner import SpecResult
from .spec import Spec, apply_change

__all__ = ["ACTOR_TOOLS", "AnthropicClient", "LLMActor", "LLMClient", "LLMCritic", "OpenAIClient", "parse_json_object"]

_MAX_ANSWER = 100_000


class LLMClient(Protocol):
    """A chat model: one system prompt, one user message, the text of the answer."""

    def complete(self, system: str, user: str) -> str: ...


def parse_json_object(text) -> dict:
    """The single JSON object of an answer (a surrounding ```json fence is allowed).

    Examples
    --------
    >>> parse_json_object('```json\\n{"a": 1}\\n```')
    {'a': 1}
    >>> parse_json_object("import os; os.remove('x')")
    Traceback (most recent call last):
    ...
    causalflow.errors.ValidationError: LLM answer: not a JSON object (Expecting value: line 1 column 1 (char 0))
    """
    if not isinstance(text, str):
        raise ValidationError(f"LLM answer: expected text, got {type(text).__name__}")
    if len(text) > _MAX_ANSWER:
        raise ValidationError(f"LLM answer: longer than {_MAX_ANSWER} characters")
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"LLM answer: not a JSON object ({exc})") from None
    if not isinstance(value, dict):
        raise ValidationError(f"LLM answer: expected a JSON object, got {type(value).__name__}")
    return value


_ACTOR_SYSTEM = """You are the Actor of an observational causal-inference loop.
Answer with ONE JSON object and nothing else: the analysis spec with keys
estimands (subset of ATE, ATT, ATO), covariates (subset of the plan's confounders),
priorities (confounder -> high/medium/low), propensity_learner and outcome_learner
(one of: {learners}), n_folds (2-20), n_repeats (1-20 cross-fitting splits),
trimming ("none", "crump" or a number in (0, 0.5)),
final_stage ("aipw", "aipw_sample", "tmle" or "weighted_linear"), placebo_outcomes (subset of the plan's),
notes (list of text)."""

#: the read-only tools of causalflow.tools an LLMActor with ``tools`` may call
ACTOR_TOOLS = ("list_sources", "describe_source", "list_handles")

_TOOLS_NOTE = """
Before answering with the spec you may look at the data with read-only tools (the plan's data
source is "data_source"): answer with ONE JSON object {{"tool": <name>, "arguments": {{...}}}} and the
next message holds its result; at most {n} calls, then answer with the spec. The tools: {tools}"""

_CRITIC_SYSTEM = """You are the Critic of an observational causal-inference loop.
Grade every estimand from the diagnostics (balance: high-priority |SMD| < 0.2 after weighting;
overlap: share of propensities outside (0.1, 0.9); placebo outcomes: no significant effect;
sensitivity to hidden confounding). Answer with ONE JSON object and nothing else:
{"verdicts": [{"estimand": ..., "verdict": "fully_satisfactory" | "satisfactory_with_caveats" |
"not_satisfactory", "reasons": [text, ...]}, ...],
 "proposals": [{"kind": "add_estimand" | "trim" | "add_covariates" | "flexible_learner" |
"data_insufficiency", "change": {...}, "reason": text}, ...]}
A change may only use the keys add_estimands, add_covariates, priority, trimming,
propensity_learner, outcome_learner, final_stage, notes."""


@dataclass(frozen=True, slots=True)
class LLMActor:
    """An Actor that asks a chat model for the spec, validated before use.

    With ``tools`` (a :class:`causalflow.tools.Session`, or anything with ``call(name,
    arguments) -> dict``) the model may first look at the data through the read-only tools
    of :data:`ACTOR_TOOLS` (``describe_source`` gives the columns, their types and ranges),
    at most ``max_tool_calls`` times: it answers ``{"tool": name, "arguments": {...}}`` and
    gets the tool's JSON result (or its structured error) back in the next message. The
    session's roots bound what it can read.

    Examples
    --------
    >>> class Canned:
    ...     def complete(self, system, user):
    ...         return '{"estimands": ["ATO"], "covariates": ["x"], "trimming": "crump"}'
    >>> from causalflow.oci.plan import Plan
    >>> plan = Plan(data="d.csv", treatment="t", outcome="y", confounders=["x"])
    >>> step = LLMActor(Canned()).propose(plan, None, None)
    >>> step.source, step.spec.estimands, step.spec.trimming
    ('llm', ('ATO',), 'crump')
    """

    client: object
    fallback: RuleActor = RuleActor()
    on_invalid: Literal["fallback", "raise"] = "fallback"
    tools: object = None
    max_tool_calls: int = 4

    def _system(self) -> str:
        system = _ACTOR_SYSTEM.format(learners=", ".join(learner_names()))
        if self.tools is None:
            return system
        schemas = getattr(self.tools, "schemas", None)
        listed = [s for s in schemas("anthropic") if s["name"] in ACTOR_TOOLS] if callable(schemas) else ACTOR_TOOLS
        return system + _TOOLS_NOTE.format(n=self.max_tool_calls, tools=json.dumps(listed))

    def _call_tool(self, mapping: dict) -> dict:
        name, arguments = mapping.get("tool"), mapping.get("arguments") or {}
        if name not in ACTOR_TOOLS:
            return {"error": {"type": "not_available", "message": f"the Actor may call only {list(ACTOR_TOOLS)}"}}
        result = self.tools.call(name, arguments)  # structured errors come back as values, never raise
        return {k: v for k, v in result.items() if k != "markdown"}

    def _answer(self, plan: Plan, message: dict) -> dict:
        """The model's spec; with ``tools``, after the read-only tool calls it asks for."""
        if self.tools is not None:
            message = {**message, "data_source": plan.data if isinstance(plan.data, str) else None}
        system, transcript = self._system(), [json.dumps(message, default=str)]
        for calls in range(self.max_tool_calls + 1):
            mapping = parse_json_object(self.client.complete(system, "\n\n".join(transcript)))
            if self.tools is None or "tool" not in mapping:
                return mapping
            if calls == self.max_tool_calls:
                break
            result = json.dumps({"tool_call": mapping, "tool_result": self._call_tool(mapping)}, default=str)
            transcript.append(result[:_MAX_ANSWER])
        raise ValidationError(f"LLM answer: more than {self.max_tool_calls} tool calls")

    def propose(self, plan: Plan, previous: Spec | None, critique: Critique | None) -> ActorStep:
        message = {"plan": plan.to_dict(),
                   "previous_spec": previous.to_dict() if previous is not None else None,
                   "critique": critique.to_dict() if critique is not None else None}
        try:
            mapping = self._answer(plan, message)
            mapping.setdefault("seed", plan.seed)
            return ActorStep(Spec.from_dict(mapping, plan=plan), "llm")
        except (ValidationError, TypeError) as exc:  # a TypeError is a malformed answer too
            if self.on_invalid == "raise":
                raise ValidationError(f"LLM answer rejected: {exc}") from None
            step = self.fallback.propose(plan, previous, critique)
            return ActorStep(step.spec, "rules", f"LLM answer rejected: {exc}")


def _check_critique(mapping: dict, plan: Plan, spec: Spec) -> Critique:
    unknown = sorted(set(mapping) - {"verdicts", "proposals"})
    if unknown:
        raise ValidationError(f"LLM critique.{unknown[0]}: unknown field")
    verdicts = mapping.get("verdicts")
    if not isinstance(verdicts, list):
        raise ValidationError("LLM critique.verdicts: must be a list")
    out = []
    for v in verdicts:
        if not isinstance(v, dict) or set(v) - {"estimand", "verdict", "reasons"}:
            raise ValidationError(f"LLM critique.verdicts: bad entry {v!r}")
        if not isinstance(v.get("estimand"), str):
            raise ValidationError(f"LLM critique.verdicts: estimand must be text, got {v.get('estimand')!r}")
        if v.get("verdict") not in VERDICTS:
            raise ValidationError(f"LLM critique.verdicts: unknown verdict {v.get('verdict')!r}")
        reasons = v.get("reasons", [])
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise ValidationError("LLM critique.verdicts.reasons: must be a list of text")
        out.append(Verdict(v.get("estimand"), v["verdict"], tuple(reasons)))
    if sorted(v.estimand for v in out) != sorted(spec.estimands):
        raise ValidationError(f"LLM critique.verdicts: must grade exactly the estimands {list(spec.estimands)}")
    proposals = []
    raw = mapping.get("proposals", [])
    if not isinstance(raw, list):
        raise ValidationError("LLM critique.proposals: must be a list")
    for p in raw:
        if not isinstance(p, dict) or set(p) - {"kind", "change", "reason", "estimand"}:
            raise ValidationError(f"LLM critique.proposals: bad entry {p!r}")
        if p.get("kind") not in PROPOSAL_KINDS:
            raise ValidationError(f"LLM critique.proposals: unknown kind {p.get('kind')!r}")
        apply_change(spec, p.get("change", {}), plan)  # validates the change; raises when invalid
        proposals.append(Proposal(p["kind"], dict(p.get("change", {})), str(p.get("reason", "")),
                                  p.get("estimand")))
    return Critique(tuple(out), tuple(proposals), "llm")


@dataclass(frozen=True, slots=True)
class LLMCritic:
    """A Critic that asks a chat model to grade the diagnostics, validated before use.

    The model receives the spec, the estimates and every diagnostic value as JSON.
    """

    client: object
    fallback: RuleCritic = RuleCritic()
    on_invalid: Literal["fallback", "raise"] = "fallback"

    def review(self, plan: Plan, result: SpecResult) -> Critique:
        message = {"plan": plan.to_dict(), "spec": result.spec.to_dict(), **result.results_dict(),
                   "diagnostics": [asdict(d) for d in result.diagnostics]}
        try:
            answer = self.client.complete(_CRITIC_SYSTEM, json.dumps(message, default=str))
            return _check_critique(parse_json_object(answer), plan, result.spec)
        except (ValidationError, TypeError) as exc:
            if self.on_invalid == "raise":
                raise ValidationError(f"LLM answer rejected: {exc}") from None
            critique = self.fallback.review(plan, result)
            return Critique(critique.verdicts, critique.proposals, "rules", f"LLM answer rejected: {exc}")


def _require(module: str):
    # a ValidationError, not the ImportError of causalflow._optional.require: the LLM Actor and
    # Critic fall back to the rules on a client's ValidationError (on_invalid="fallback")
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValidationError(f"client: the {module!r} package is not installed; "
                              'pip install "causalflow[llm]"') from None


@dataclass(frozen=True, slots=True)
class AnthropicClient:
    """Anthropic Messages API client (``pip install "causalflow[llm]"``; key in ``ANTHROPIC_API_KEY``)."""

    model: str = "claude-sonnet-4-5"
    max_tokens: int = 4096

    def complete(self, system: str, user: str) -> str:
        anthropic = _require("anthropic")
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise ValidationError("client: set ANTHROPIC_API_KEY")
        reply = anthropic.Anthropic().messages.create(
            model=self.model, max_tokens=self.max_tokens, system=system,
            messages=[{"role": "user", "content": user}])
        return "".join(getattr(block, "text", "") for block in reply.content)


@dataclass(frozen=True, slots=True)
class OpenAIClient:
    """OpenAI Chat Completions client (``pip install "causalflow[llm]"``; key in ``OPENAI_API_KEY``)."""

    model: str = "gpt-4o"

    def complete(self, system: str, user: str) -> str:
        openai = _require("openai")
        if not os.environ.get("OPENAI_API_KEY"):
            raise ValidationError("client: set OPENAI_API_KEY")
        reply = openai.OpenAI().chat.completions.create(
            model=self.model, messages=[{"role": "system", "content": system},
                                        {"role": "user", "content": user}])
        return reply.choices[0].message.content or ""
