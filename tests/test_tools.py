"""The agent tools (API.md section 7): schemas, examples, numbers, and a scripted agent that
makes mistakes.

The scripted transcript is a fixed list of tool calls as an LLM would make them, covering
every tool, with the mistakes of the issue (unknown column, bad expression, path outside
the root, ``../`` and symlink escapes, a 10 MB string, unknown handle, a wrong type): each
returns a structured error, nothing is written outside the roots, and the next call works.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

import causalflow as cf
from causalflow import tools
from causalflow.demo import simulate_store
from causalflow.tools.registry import PENDING, REGISTRY, Session, demo_session
from causalflow.tools.safety import ERROR_TYPES, Limits

pytestmark = pytest.mark.filterwarnings("ignore::causalflow.errors.DesignWarning")

VALIDATOR = jsonschema.Draft202012Validator


def _files(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture()
def world(tmp_path):
    """A data root with the demo data (CSV and parquet), an output root, and a folder outside both."""
    root, out, outside = tmp_path / "data", tmp_path / "out", tmp_path / "outside"
    session = demo_session(root, out)
    simulate_store(n=4000, n_regions=40).to_parquet(root / "store.parquet")
    outside.mkdir()
    (outside / "secret.csv").write_text("a,b\n1,2\n")
    return session, root, out, outside


def _ok(result: dict) -> dict:
    assert "error" not in result, result
    json.dumps(result, allow_nan=False)
    return result


def _error(result: dict, kind: str) -> dict:
    assert set(result) == {"error"}, result
    error = result["error"]
    assert error["type"] == kind, error
    assert error["type"] in ERROR_TYPES and isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in json.dumps(result)
    json.dumps(result, allow_nan=False)
    return error


# ---------------------------------------------------------------------------------------
# schemas and examples
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["openai", "anthropic", "mcp"])
def test_schemas_are_valid_json_schemas(fmt):
    exported = tools.schemas(fmt)
    assert len(exported) == len(REGISTRY)
    for entry in exported:
        if fmt == "openai":
            assert entry["type"] == "function"
            entry = entry["function"]
            schema = entry["parameters"]
        else:
            schema = entry["input_schema" if fmt == "anthropic" else "inputSchema"]
        VALIDATOR.check_schema(schema)
        assert schema["type"] == "object" and "$ref" not in json.dumps(schema)
        assert entry["description"] and "Example arguments" in entry["description"]
        if fmt == "mcp":
            VALIDATOR.check_schema(entry["outputSchema"])
            assert entry["outputSchema"]["type"] == "object"
            assert set(entry["annotations"]) == {"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}
    with pytest.raises(ValueError, match="format"):
        tools.schemas("gemini")


def test_schemas_are_generated_from_the_models_not_written_twice():
    for tool in REGISTRY.values():
        assert tool.input_schema()["properties"].keys() == tool.args.model_fields.keys()
        assert tool.output_schema()["properties"].keys() == tool.result.model_fields.keys()
        assert tool.summary == tool.function.__doc__.strip().replace("\n    ", "\n")
        VALIDATOR(tool.input_schema()).validate(tool.example)


def test_every_tools_example_runs_and_matches_its_output_schema(world):
    """The example in each tool's description runs, in registry order, on the demo workspace."""
    session, root, out, _ = world
    for name, tool in REGISTRY.items():
        assert json.dumps(tool.example) in tool.description
        for before, arguments in tool.after:  # the calls that make the handles the example uses
            assert json.dumps(arguments) in tool.description
            _ok(session.call(before, arguments))
        result = _ok(session.call(name, tool.example))
        VALIDATOR(tool.output_schema()).validate(result)
        assert result["markdown"].strip()


# ---------------------------------------------------------------------------------------
# the same numbers as the Python API
# ---------------------------------------------------------------------------------------
def test_tool_numbers_equal_the_python_api(world):
    session, root, _, _ = world
    df = pd.read_parquet(root / "store.parquet")
    model = cf.ExperimentData(df, intent_to_treat="assigned", treated="uses_widget", cluster_by="region").add_metric(
        y=["sales", "orders"], exogenous_covariates=["pre_sales", "device"]).fit(cf.LinearModel(cov_type="CR1"))
    conditions = ["device == 'desktop'", "device != 'desktop' and pre_sales > 10"]
    effects = model.infer_effect(condition_on=conditions)

    exp = _ok(session.call("create_experiment", {"source": "store.parquet", "intent_to_treat": "assigned",
                                                 "treated": "uses_widget", "cluster_by": "region"}))
    assert exp["design"]["kinds"] == ["encouragement", "cluster"] and exp["design"]["n_clusters"] == 40
    fit = _ok(session.call("fit_metrics", {"experiment": exp["handle"], "y": ["sales", "orders"],
                                           "exogenous_covariates": ["pre_sales", "device"], "cov_type": "CR1"}))
    assert fit["estimands"] == ["ITT", "LATE"] and fit["condition_columns"] == ["pre_sales", "device"]
    got = _ok(session.call("infer_effects", {"model": fit["handle"], "condition_on": conditions,
                                            "include_covariance": True}))
    want = effects.to_dict()
    assert got["columns"] == want["columns"] and got["effects"] == want["effects"]
    assert got["covariance"] == want["covariance"]
    assert got["markdown"].endswith(effects.to_markdown())

    rel = _ok(session.call("relative_effects", {"effects": got["handle"], "method": "fieller"}))
    assert rel["effects"] == effects.relative(method="fieller").to_dict()["effects"]
    adj = _ok(session.call("adjust_effects", {"effects": got["handle"], "method": "bh"}))
    assert adj["effects"] == effects.adjust("bh").to_dict()["effects"]
    weights = {conditions[0]: 0.4, conditions[1]: 0.6}
    proj = _ok(session.call("project_effects", {"effects": got["handle"], "weights": weights}))
    assert proj["effects"] == effects.project(weights).to_dict()["effects"]
    med = _ok(session.call("mediate_effect", {"effects": got["handle"], "graph": "T -> sessions -> sales"}))
    assert med["rows"] == effects.with_graph("T -> sessions -> sales").mediate_effect().to_dict()["paths"]
    srm = cf.ExperimentData(df, intent_to_treat="assigned", cluster_by="region").check_sample_ratio()
    assert exp["sample_ratio"]["p_value"] == srm.p_value

    plan = _ok(session.call("plan_experiment", {"solve_for": "mde", "n": 10_000, "sd": 2.0, "icc": 0.05,
                                                "cluster_size": 25, "compliance": 0.6}))
    want_plan = cf.mde(10_000, sd=2.0, icc=0.05, cluster_size=25, compliance=0.6)
    assert plan["effect"] == want_plan.effect and plan["n_per_arm"] == list(want_plan.n_per_arm)

    mon = _ok(session.call("monitor_experiment", {"experiment": exp["handle"], "y": "sales", "looks": 5,
                                                  "exogenous_covariates": ["pre_sales"], "include_looks": True}))
    want_mon = cf.monitor(cf.ExperimentData(df, intent_to_treat="assigned", treated="uses_widget",
                                            cluster_by="region"), y="sales", exogenous_covariates=["pre_sales"],
                          looks=5)
    assert mon["last_look"] == want_mon.looks[-1].to_dict()["effects"] and mon["g"] == want_mon.g
    assert len(mon["trajectory"]) == len(want_mon.to_frame())


def test_bayesian_tools_equal_the_python_api(world):
    session, root, _, _ = world
    df = pd.read_csv(root / "store.csv")
    bmodel = cf.ExperimentData(df, intent_to_treat="assigned").add_metric(
        y=["sales", "orders"], exogenous_covariates=["pre_sales", "device"]).fit(
        cf.BayesianLinearRegression, prior=cf.NormalPrior(mean=0.0, scale=0.5))
    posterior = bmodel.infer_effect(condition_on=["device == 'desktop'"])
    exp = _ok(session.call("create_experiment", {"source": "store.csv", "intent_to_treat": "assigned"}))
    fit = _ok(session.call("fit_metrics", {"experiment": exp["handle"], "y": ["sales", "orders"],
                                           "exogenous_covariates": ["pre_sales", "device"], "estimator": "bayesian",
                                           "prior": {"mean": 0.0, "scale": 0.5}}))
    got = _ok(session.call("infer_effects", {"model": fit["handle"], "condition_on": ["device == 'desktop'"]}))
    assert got["kind"] == "posterior" and got["effects"] == posterior.to_dict()["effects"]
    ranks = _ok(session.call("rank_arms", {"effects": got["handle"], "reward": {"sales": 1, "orders": 10},
                                           "n_draws": 5000, "seed": 4}))
    want = posterior.infer_rank(reward={"sales": 1, "orders": 10}, n_draws=5000, seed=4).to_dict()
    assert ranks["rows"] == want["ranks"] and ranks["meta"] == {"n_draws": 5000}
    context = {"device": "tablet", "pre_sales": 3.0}
    decision = _ok(session.call("decide", {"model": fit["handle"], "context": context, "reward": "sales",
                                           "seed": 11}))
    policy = cf.Policy(bmodel.infer_reward(cf.ContextVector(**context), reward="sales"))
    assert decision["arm"] == policy.decide(np.random.default_rng(11))
    assert [p["probability"] for p in decision["probabilities"]] == \
        policy.probabilities(np.random.default_rng(11), 2000)[0].tolist()


def test_a_registered_table_is_a_source(tmp_path):
    session = Session(roots=[tmp_path], out=tmp_path / "out")
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"arm": rng.choice(["ctl", "b", "c"], 900), "x": rng.normal(size=900)})
    df["y"] = df.x + (df.arm == "b") + rng.normal(size=900)
    handle = session.add_table(df)
    exp = _ok(session.call("create_experiment", {"source": handle, "intent_to_treat": "arm", "control": "ctl",
                                                 "expected_allocation": {"ctl": 0.4, "b": 0.3, "c": 0.3}}))
    assert exp["design"]["arms"][0] == "ctl" and exp["sample_ratio"]["expected_source"] == "argument"
    assert _ok(session.call("describe_source", {"source": handle}))["rows"] == 900
    _error(session.call("create_experiment", {"source": handle, "intent_to_treat": "arm", "control": "d"}),
           "invalid_value")


# ---------------------------------------------------------------------------------------
# the scripted agent, with its mistakes
# ---------------------------------------------------------------------------------------
def test_scripted_agent_transcript_with_mistakes(world):
    session, root, out, outside = world
    (root / "escape.csv").symlink_to(outside / "secret.csv")           # a link out of the data root
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    out.mkdir(exist_ok=True)
    (out / "evil").symlink_to(outside, target_is_directory=True)       # a link out of the output root
    before = _files(outside)

    transcript = [
        ("list_sources", {}, None),
        ("describe_source", {"source": "store.csv"}, None),
        # paths: outside, '..', symlinks (a file and a folder), a missing file, not a data file
        ("describe_source", {"source": str(outside / "secret.csv")}, "path_not_allowed"),
        ("describe_source", {"source": "../outside/secret.csv"}, "path_not_allowed"),
        ("describe_source", {"source": "escape.csv"}, "path_not_allowed"),
        ("describe_source", {"source": "linked_dir/secret.csv"}, "path_not_allowed"),
        ("describe_source", {"source": "/etc/passwd"}, "path_not_allowed"),
        ("describe_source", {"source": "stor.csv"}, "file_not_found"),
        ("describe_source", {"source": "store.csv", "sample_rows": "three"}, "invalid_arguments"),
        # the experiment: an unknown column, a wrong type, a 10 MB string, an unknown argument
        ("create_experiment", {"source": "store.csv", "intent_to_treat": "assign"}, "unknown_column"),
        ("create_experiment", {"source": "store.csv", "intent_to_treat": 1}, "invalid_arguments"),
        ("create_experiment", {"source": "store.csv", "intent_to_treat": "x" * 10_000_000}, "too_large"),
        ("create_experiment", {"source": "store.csv", "intent_to_treat": "assigned", "clusters": "region"},
         "invalid_arguments"),
        ("create_experiment", {"source": "store.csv", "intent_to_treat": "device"}, "invalid_design"),
        ("create_experiment", {"source": "store.csv", "intent_to_treat": "assigned", "treated": "uses_widget",
                               "cluster_by": "region"}, None),
        # metrics: an unknown handle, a wrong handle kind, an unknown metric, code in a formula
        ("fit_metrics", {"experiment": "exp_9", "y": "sales"}, "unknown_handle"),
        ("fit_metrics", {"experiment": "exp_1", "y": "sale"}, "unknown_column"),
        ("fit_metrics", {"experiment": "exp_1", "y": "sales",
                         "exogenous_covariates": "__import__('os').system('touch pwned')"}, "invalid_expression"),
        ("fit_metrics", {"experiment": "exp_1", "y": ["sales", "orders"],
                         "exogenous_covariates": ["pre_sales", "device"]}, None),
        ("infer_effects", {"model": "exp_1"}, "wrong_handle"),
        # effects: a bad expression, an unknown column, code in a condition, a wrong type
        ("infer_effects", {"model": "model_1", "condition_on": ["device = 'desktop'"]}, "invalid_expression"),
        ("infer_effects", {"model": "model_1", "condition_on": ["region > 3"]}, "unknown_column"),
        ("infer_effects", {"model": "model_1", "condition_on": ["__import__('os').system('touch pwned')"]},
         "invalid_expression"),
        ("infer_effects", {"model": "model_1", "alpha": "five percent"}, "invalid_arguments"),
        ("infer_effects", {"model": "model_1", "condition_on": ["device == 'desktop'", "device != 'desktop'"]},
         None),
        ("infer_effects", {"model": "model_1", "condition_on": "pre_sales > 10"}, None),  # one condition as text
        ("relative_effects", {"effects": "effects_1", "method": "bootstrap"}, "invalid_arguments"),
        ("relative_effects", {"effects": "effects_1"}, None),
        ("adjust_effects", {"effects": "effects_1", "method": "holm"}, None),
        ("project_effects", {"effects": "effects_1", "weights": {"device == 'desktop'": 0.5}}, "invalid_value"),
        ("project_effects", {"effects": "effects_1", "weights": {"device == 'desktop'": 0.3,
                                                                 "device != 'desktop'": 0.7}}, None),
        # mediation: a node that is no column, a cycle, code in the graph
        ("mediate_effect", {"effects": "effects_1", "graph": "T -> clicks -> sales"}, "invalid_value"),
        ("mediate_effect", {"effects": "effects_1", "graph": "T -> sessions -> sales -> sessions"},
         "invalid_expression"),
        ("mediate_effect", {"effects": "effects_1", "graph": "__import__('os').system('touch pwned')"},
         "invalid_expression"),
        ("mediate_effect", {"effects": "effects_1", "graph": "T -> sessions -> sales", "mediator": "sessions"}, None),
        # Bayesian: an option of the other estimator, a missing covariate, an unknown metric
        ("fit_metrics", {"experiment": "exp_1", "y": "sales", "estimator": "bayesian", "cov_type": "CR1"},
         "invalid_arguments"),
        ("fit_metrics", {"experiment": "exp_1", "y": ["sales", "orders"], "exogenous_covariates": ["device"],
                         "estimator": "bayesian", "prior": {"mean": 0, "scale": 0.5}}, None),
        ("infer_effects", {"model": "bmodel_1"}, None),
        ("relative_effects", {"effects": "posterior_1"}, "wrong_handle"),
        ("rank_arms", {"effects": "posterior_1", "reward": {"sales": 1, "refunds": -1}}, "invalid_value"),
        ("rank_arms", {"effects": "posterior_1", "reward": {"sales": 1, "orders": -1}}, None),
        ("decide", {"model": "bmodel_1", "context": {}}, "invalid_value"),
        ("decide", {"model": "bmodel_1", "context": {"device": "tv"}, "reward": "sales"}, "invalid_design"),
        ("decide", {"model": "bmodel_1", "context": {"device": "mobile"}, "reward": "sales",
                    "strategy": "top_two_thompson", "seed": 3}, None),
        ("monitor_experiment", {"experiment": "exp_1", "y": "sales", "looks": "ten"}, "invalid_arguments"),
        ("monitor_experiment", {"experiment": "exp_1", "y": "sales", "looks": 4}, None),
        ("plan_experiment", {"solve_for": "power", "effect": 0.5}, "invalid_arguments"),
        ("plan_experiment", {"solve_for": "power", "effect": 0.5, "n": 2000, "sd": 2.0}, None),
        # writes: outside the output root, '..', through a link, a wrong suffix
        ("save_effects", {"effects": "effects_1", "path": str(outside / "x.csv")}, "path_not_allowed"),
        ("save_effects", {"effects": "effects_1", "path": "../outside/x.csv"}, "path_not_allowed"),
        ("save_effects", {"effects": "effects_1", "path": "evil/x.csv"}, "path_not_allowed"),
        ("save_effects", {"effects": "effects_1", "path": "x.exe"}, "invalid_value"),
        ("save_effects", {"effects": "relative_1", "path": "tables/relative.json"}, None),
        ("save_effects", {"effects": "monitor_1", "path": "tables/monitor.csv"}, None),
        ("run_oci", {"data": "store.csv", "treatment": "uses_widget", "outcome": "sale",
                     "confounders": ["pre_sales"]}, "unknown_column"),
        ("run_oci", {"data": "store.csv", "treatment": "uses_widget", "outcome": "sales",
                     "confounders": ["pre_sales"], "out": "../oci"}, "path_not_allowed"),
        ("run_oci", {"data": "store.csv", "treatment": "uses_widget", "outcome": "sales",
                     "confounders": ["pre_sales"], "population": "pre_sales >"}, "invalid_expression"),
        ("run_oci", {"data": "store.csv", "treatment": "uses_widget", "outcome": "sales",
                     "confounders": {"high": ["pre_sales"]}, "estimands": ["ATT"], "max_iterations": 1,
                     "out": "oci/widget"}, None),
        ("show_oci_run", {"run": "oci_7"}, "unknown_handle"),
        ("show_oci_run", {"run": "oci/widget", "iteration": 9}, "invalid_value"),
        ("show_oci_run", {"run": "oci/widget", "iteration": 1}, None),
        ("show_oci_run", {"run": "oci_1"}, None),
        ("list_handles", {"kind": "effects"}, None),
        ("analyze_many", {"source": "store.csv", "experiment": "device", "intent_to_treat": "assigned",
                          "cluster_by": "region", "y": ["sales", "orders"]}, None),
        ("analyze_many", {"source": "store.csv", "experiment": "devise", "intent_to_treat": "assigned",
                          "y": "sales"}, "unknown_column"),
        ("drop_table", {"name": "users"}, "unknown_tool"),
        ("list_handles", [], "invalid_arguments"),
    ]
    used = set()
    for name, arguments, expect in transcript:
        result = session.call(name, arguments)
        used.add(name)
        if expect is None:
            _ok(result)
            VALIDATOR(REGISTRY[name].output_schema()).validate(result)
        else:
            error = _error(result, expect)
            # the next call still works
            _ok(session.call("list_handles", {}))
        if expect == "unknown_column":
            assert error["allowed"], error  # what exists
    assert set(REGISTRY) <= used

    # nothing written outside the roots, nothing executed
    assert _files(outside) == before
    assert not (root / "pwned").exists() and not Path("pwned").exists()
    assert {"tables/relative.json", "tables/monitor.csv", "oci/widget/run.json"} <= _files(out)
    saved = json.loads((out / "tables" / "relative.json").read_text())
    assert saved["effects"] == session.call("relative_effects", {"effects": "effects_1"})["effects"]
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temp files


def test_errors_say_what_is_allowed(world):
    session, *_ = world
    error = _error(session.call("create_experiment", {"source": "store.csv", "intent_to_treat": "asigned"}),
                   "unknown_column")
    assert "did you mean 'assigned'" in error["message"] and "assigned" in error["allowed"]
    error = _error(session.call("fit_metrics", {"experiment": "exp_1", "y": "sales"}), "unknown_handle")
    assert error["allowed"] == [] and "list_handles" in error["hint"]
    error = _error(session.call("infer_effects", {"modell": "model_1"}), "invalid_arguments")
    assert "condition_on" in error["allowed"]
    error = _error(session.call("adjust_effects", {"effects": "effects_1", "method": "fdr"}), "invalid_arguments")
    assert error["allowed"] == ["holm", "bonferroni", "bh", "by", "maxt"]
    error = _error(session.call("infr_effects", {}), "unknown_tool")
    assert "infer_effects" in error["allowed"]
    for name in PENDING:
        assert "not available yet" in _error(session.call(name, {}), "not_available")["message"]


def test_handle_store_is_bounded_and_evicted_handles_say_so(tmp_path):
    demo_session(tmp_path / "data")
    session = Session(roots=[tmp_path / "data"], out=tmp_path / "out", limits=Limits(max_handles=3))
    exp = _ok(session.call("create_experiment", {"source": "store.csv", "intent_to_treat": "assigned"}))["handle"]
    model = _ok(session.call("fit_metrics", {"experiment": exp, "y": "sales"}))["handle"]
    for _ in range(3):
        _ok(session.call("infer_effects", {"model": model}))
    assert len(session.store) == 3
    error = _error(session.call("fit_metrics", {"experiment": exp, "y": "sales"}), "unknown_handle")
    assert "evicted" in error["message"]


def test_size_limits(tmp_path):
    root = tmp_path / "data"
    demo_session(root)
    session = Session(roots=[root], out=tmp_path / "out", limits=Limits(max_rows=1000, max_columns=5))
    error = _error(session.call("describe_source", {"source": "store.csv"}), "too_large")
    assert error["allowed"] == [5]  # 8 columns
    session = Session(roots=[root], out=tmp_path / "out", limits=Limits(max_rows=1000))
    assert _error(session.call("describe_source", {"source": "store.csv"}), "too_large")["allowed"] == [1000]
    many = {"model": "model_1", "condition_on": [f"x > {i}" for i in range(51)]}
    assert _error(session.call("infer_effects", many), "invalid_arguments")["argument"] == "condition_on"
    long = {"model": "model_1", "condition_on": ["x > 1 " + "and x > 1 " * 200]}
    assert _error(session.call("infer_effects", long), "invalid_arguments")
    deep: list = []
    for _ in range(40):
        deep = [deep]
    assert _error(session.call("list_handles", {"kind": deep}), "too_large")
    (root / "notes.txt").write_text("hello")
    assert _error(session.call("describe_source", {"source": "notes.txt"}), "unsupported_file")
    os.mkfifo(root / "pipe.csv")  # never opened (reading a pipe would block)
    assert _error(session.call("describe_source", {"source": "pipe.csv"}), "unsupported_file")
    (root / "broken.parquet").write_bytes(b"not parquet")
    assert _error(session.call("describe_source", {"source": "broken.parquet"}), "unsupported_file")


def test_grammar_warnings_come_back_as_values(tmp_path):
    session = Session(roots=[tmp_path], out=tmp_path / "out")
    df = pd.DataFrame({"t": [0, 1] * 50, "g": np.repeat(np.arange(10), 10), "y": np.arange(100.0)})
    handle = session.add_table(df)
    exp = _ok(session.call("create_experiment", {"source": handle, "intent_to_treat": "t", "cluster_by": "g"}))
    assert any("more than one assigned arm" in w for w in exp["warnings"])


def test_concurrent_calls_on_one_session(world):
    session, *_ = world
    exp = _ok(session.call("create_experiment", {"source": "store.csv", "intent_to_treat": "assigned",
                                                 "cluster_by": "region"}))["handle"]
    results = []

    def work():
        model = session.call("fit_metrics", {"experiment": exp, "y": "sales"})
        results.append(session.call("infer_effects", {"model": model["handle"]})["effects"])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r == results[0] for r in results)


def test_module_level_call_and_default_session(tmp_path, monkeypatch):
    session = demo_session(tmp_path)
    assert tools.call("list_sources", session=session)["files"] == ["store.csv"]
    monkeypatch.setattr(tools, "_default", None)
    monkeypatch.chdir(tmp_path)
    assert tools.default_session().roots.data == (tmp_path.resolve(),)
    assert tools.call("describe_source", {"source": "store.csv"})["rows"] == 4000
    monkeypatch.setattr(tools, "_default", None)


def test_importing_causalflow_does_not_import_pydantic():
    import subprocess
    import sys

    code = "import sys, causalflow as cf; cf.tools; print('pydantic' in sys.modules, 'mcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "False"], out.stderr


# ---------------------------------------------------------------------------------------
# the OCI loop's LLM Actor looks at the data through the same tools
# ---------------------------------------------------------------------------------------
def test_llm_actor_reads_the_data_through_the_tools(world):
    from causalflow.oci import LLMActor, Plan

    session, root, _, _ = world
    seen = []

    class Scripted:
        """Asks for a description of the data, then a bad path, then answers with a spec."""

        def complete(self, system, user):
            seen.append((system, user))
            if len(seen) == 1:
                assert "describe_source" in system and '"data_source": "store.csv"' in user
                return json.dumps({"tool": "describe_source", "arguments": {"source": "store.csv"}})
            if len(seen) == 2:
                assert '"name": "pre_sales"' in user  # the tool's result came back
                return json.dumps({"tool": "describe_source", "arguments": {"source": "../etc/passwd"}})
            if len(seen) == 3:
                assert "path_not_allowed" in user
                return json.dumps({"tool": "fit_metrics", "arguments": {}})
            assert "the Actor may call only" in user
            return json.dumps({"estimands": ["ATT"], "covariates": ["pre_sales", "device"]})

    plan = Plan(data="store.csv", treatment="uses_widget", outcome="sales", confounders=["pre_sales", "device"],
                estimands=["ATT"])
    step = LLMActor(Scripted(), tools=session).propose(plan, None, None)
    assert step.source == "llm" and step.spec.covariates == ("pre_sales", "device") and len(seen) == 4

    class Looping:
        def complete(self, system, user):
            return json.dumps({"tool": "list_sources", "arguments": {}})

    step = LLMActor(Looping(), tools=session, max_tool_calls=2).propose(plan, None, None)
    assert step.source == "rules" and "more than 2 tool calls" in step.note


def test_paths_are_shown_relative_and_absolute_paths_inside_the_roots_work(world):
    session, root, out, _ = world
    described = _ok(session.call("describe_source", {"source": str(root / "store.csv")}))
    assert described["source"] == "store.csv"
    saved = _ok(session.call("save_effects", {"effects": _effects(session), "path": str(out / "a" / "b.md")}))
    assert saved["path"] == "a/b.md" and (out / "a" / "b.md").read_text().startswith("|")
    assert os.path.isabs(saved["output_root"])


def test_the_docs_page_names_every_tool():
    page = (Path(__file__).resolve().parents[1] / "docs" / "tools.md").read_text()
    assert all(f"`{name}`" in page for name in REGISTRY)


def _effects(session) -> str:
    exp = _ok(session.call("create_experiment", {"source": "store.csv", "intent_to_treat": "assigned"}))["handle"]
    model = _ok(session.call("fit_metrics", {"experiment": exp, "y": "sales"}))["handle"]
    return _ok(session.call("infer_effects", {"model": model}))["handle"]
