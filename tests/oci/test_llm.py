"""LLM-backed Actor and Critic with a scripted fake client: valid answers are used,
malformed ones are rejected and never executed."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oci_sims import good_overlap, omitted_confounder

from causalflow.errors import ValidationError
from causalflow.oci import (
    AnthropicClient,
    LLMActor,
    LLMCritic,
    OpenAIClient,
    Plan,
    RuleActor,
    RuleCritic,
    run,
)
from causalflow.oci.llm import parse_json_object


class ScriptedClient:
    """Returns canned answers in order and records the prompts."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.prompts = []

    def complete(self, system, user):
        self.prompts.append((system, json.loads(user)))
        return self.answers.pop(0)


def _plan(n=600):
    df, _ = omitted_confounder(n=n)
    return Plan(data=df, treatment="t", outcome="y", confounders={"high": ["x"], "low": ["u"]},
                placebo_outcomes=["z"], estimands=["ATE"], seed=5)


def test_llm_actor_spec_is_used_and_validated():
    answer = json.dumps({"estimands": ["ATE", "ATO"], "covariates": ["x", "u"], "n_folds": 2,
                         "trimming": 0.05, "placebo_outcomes": ["z"]})
    client = ScriptedClient(["```json\n" + answer + "\n```"])
    result = run(_plan(), actor=LLMActor(client), max_iterations=1)
    spec = result.final.spec
    assert result.final.actor.source == "llm" and result.final.actor.note is None
    assert spec.estimands == ("ATE", "ATO") and spec.covariates == ("x", "u") and spec.trimming == 0.05
    assert spec.seed == 5  # from the plan
    system, message = client.prompts[0]
    assert "ONE JSON object" in system and message["plan"]["treatment"] == "t"


MALFORMED = [
    "Sure! Here is the spec: {\"estimands\": [\"ATE\"]}",                # prose around JSON
    "__import__('os').system('touch /tmp/oci_llm_pwned')",               # code, not JSON
    json.dumps(["ATE"]),                                                 # not an object
    json.dumps({"estimands": ["ATE"], "covariates": ["x"], "exec": "print(1)"}),   # unknown key
    json.dumps({"estimands": ["ATE"], "covariates": ["x", "y"]}),         # the outcome as covariate
    json.dumps({"estimands": ["ATE"], "covariates": ["x"], "outcome_learner": "eval"}),  # unknown learner
    json.dumps({"estimands": ["CATE"], "covariates": ["x"]}),             # unknown estimand
    json.dumps({"estimands": ["ATE"], "covariates": ["x"], "n_folds": "5; rm -rf /"}),
]


@pytest.mark.parametrize("answer", MALFORMED)
def test_malformed_actor_output_is_rejected_not_executed(answer, tmp_path):
    marker = "/tmp/oci_llm_pwned"
    step = LLMActor(ScriptedClient([answer])).propose(_plan(100), None, None)
    assert step.source == "rules" and step.note.startswith("LLM answer rejected")
    assert step.spec == RuleActor().propose(_plan(100), None, None).spec
    with pytest.raises(ValidationError):
        LLMActor(ScriptedClient([answer]), on_invalid="raise").propose(_plan(100), None, None)
    import os

    assert not os.path.exists(marker)


def _critique_answer(verdict="satisfactory_with_caveats", change=None, kind="add_covariates"):
    return json.dumps({
        "verdicts": [{"estimand": "ATE", "verdict": verdict, "reasons": ["placebo z moves"]}],
        "proposals": [] if change is None else [{"kind": kind, "change": change, "reason": "z"}],
    })


def test_llm_critic_drives_the_loop():
    client = ScriptedClient([
        _critique_answer(change={"add_covariates": ["u"], "priority": "high"}),
        _critique_answer("fully_satisfactory"),
    ])
    result = run(_plan(), actor=RuleActor(n_folds=2), critic=LLMCritic(client), max_iterations=3)
    assert [it.critique.source for it in result.iterations] == ["llm", "llm"]
    assert result.iterations[1].spec.covariates == ("x", "u")
    assert result.stop_reason == "all_fully_satisfactory"
    message = client.prompts[0][1]
    assert {"spec", "estimates", "diagnostics"} <= set(message)


@pytest.mark.parametrize("answer", [
    "not json",
    _critique_answer("great"),
    _critique_answer(change={"add_covariates": ["y"]}),            # outcome leakage
    _critique_answer(change={"shell": "ls"}),                        # unknown change key
    _critique_answer(change={"trimming": "crump"}, kind="delete_data"),
    json.dumps({"verdicts": [], "proposals": []}),                    # ATE not graded
    json.dumps({"verdicts": [{"estimand": None, "verdict": "fully_satisfactory"}]}),
])
def test_malformed_critic_output_falls_back_to_rules(answer):
    df, _ = good_overlap(n=300)
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["x1", "x2", "x3"], estimands=["ATE"])
    result = run(plan, actor=RuleActor(n_folds=2), critic=LLMCritic(ScriptedClient([answer])),
                 max_iterations=1)
    critique = result.final.critique
    assert critique.source == "rules" and critique.note.startswith("LLM answer rejected")
    assert critique.verdicts == RuleCritic().review(plan, result.final.result).verdicts
    with pytest.raises(ValidationError):
        LLMCritic(ScriptedClient([answer]), on_invalid="raise").review(plan, result.final.result)


def test_real_clients_are_optional(monkeypatch):
    import importlib

    real_import = importlib.import_module

    def no_sdk(name, *args):
        if name in ("anthropic", "openai"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_sdk)
    for client in (AnthropicClient(), OpenAIClient()):
        with pytest.raises(ValidationError, match="is not installed"):
            client.complete("s", "u")
        with pytest.raises(ValidationError, match=r'pip install "causalflow\[llm\]"'):
            client.complete("s", "u")


def test_parse_json_object_limits():
    assert parse_json_object(' {"a": [1, 2]} ') == {"a": [1, 2]}
    with pytest.raises(ValidationError):
        parse_json_object("x" * 200_000)
    with pytest.raises(ValidationError):
        parse_json_object(None)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3),
                     max_leaves=8)
_spec_like = st.fixed_dictionaries({}, optional={
    "estimands": _json | st.just(["ATE"]), "covariates": _json | st.just(["x", "u"]),
    "priorities": _json, "trimming": _json, "n_folds": _json, "propensity_learner": _json,
    "outcome_learner": _json, "final_stage": _json, "seed": _json, "notes": _json, "n_repeats": _json})


@settings(max_examples=150, deadline=None)
@given(answer=_spec_like | _json)
def test_arbitrary_json_answers_never_escape_validation(answer):
    plan = Plan(data="unused.csv", treatment="t", outcome="y", confounders={"high": ["x"], "low": ["u"]},
                placebo_outcomes=["z"])
    step = LLMActor(ScriptedClient([json.dumps(answer)])).propose(plan, None, None)
    assert set(step.spec.covariates) <= {"x", "u"}
    assert set(step.spec.estimands) <= {"ATE", "ATT", "ATO"}
    assert step.source == "llm" or step.note.startswith("LLM answer rejected")
