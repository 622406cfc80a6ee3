"""``causalflow mcp`` end to end, with the ``mcp`` SDK's own client over stdio (and HTTP).

The server runs as a subprocess (``python -m causalflow.cli mcp --root DIR --out DIR``);
the client lists the tools, analyses an encouragement + cluster experiment through tool
calls only, and gets the same numbers as the Python API. Bad calls come back as
``is_error`` results with a structured error, and the server keeps serving.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

import causalflow as cf  # noqa: E402
from causalflow.demo import simulate_store  # noqa: E402
from causalflow.tools.registry import REGISTRY  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::causalflow.errors.DesignWarning")

CONDITIONS = ["device == 'desktop'", "device != 'desktop' and pre_sales > 10"]


@pytest.fixture()
def roots(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    (root / "shop").mkdir(parents=True)
    df = simulate_store(n=6000, n_regions=60, seed=7)
    df.to_parquet(root / "shop" / "store.parquet")
    df.to_csv(root / "store.csv", index=False)
    return root, out


def _server(root, out) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable,
                                 args=["-m", "causalflow.cli", "mcp", "--root", str(root), "--out", str(out)])


def _python_api(path) -> tuple:
    df = pd.read_parquet(path)
    data = cf.ExperimentData(df, intent_to_treat="assigned", treated="uses_widget", cluster_by="region")
    model = data.add_metric(y=["sales", "sessions"], exogenous_covariates=["pre_sales", "device"]).fit(cf.LinearModel)
    effects = model.infer_effect(condition_on=CONDITIONS)
    return data, effects


def test_stdio_end_to_end_analysis_matches_the_python_api(roots, tmp_path):
    root, out = roots
    data, effects = _python_api(root / "shop" / "store.parquet")
    stderr = tmp_path / "server.stderr"

    async def session():
        with open(stderr, "w") as errlog:
            async with Client(stdio_client(_server(root, out), errlog=errlog)) as client:
                listed = (await client.list_tools()).tools
                assert [t.name for t in listed] == list(REGISTRY)
                by_name = {t.name: t for t in listed}
                assert by_name["fit_metrics"].input_schema == REGISTRY["fit_metrics"].input_schema()
                assert by_name["infer_effects"].output_schema == REGISTRY["infer_effects"].output_schema()
                assert by_name["save_effects"].annotations.read_only_hint is False
                assert by_name["infer_effects"].annotations.read_only_hint is True

                async def call(name, arguments):
                    result = await client.call_tool(name, arguments)
                    return result, result.structured_content

                r, files = await call("list_sources", {})
                assert not r.is_error and set(files["files"]) == {"shop/store.parquet", "store.csv"}
                r, described = await call("describe_source", {"source": "shop/store.parquet"})
                assert {c["name"] for c in described["columns"]} >= {"assigned", "uses_widget", "region"}
                # a mistake: the model guesses a column name
                r, bad = await call("create_experiment", {"source": "shop/store.parquet", "intent_to_treat": "treat"})
                assert r.is_error and bad["error"]["type"] == "unknown_column"
                assert "assigned" in bad["error"]["allowed"] and "unknown_column" in r.content[0].text
                r, exp = await call("create_experiment", {"source": "shop/store.parquet", "intent_to_treat": "assigned",
                                                          "treated": "uses_widget", "cluster_by": "region"})
                assert not r.is_error and exp["design"]["kinds"] == ["encouragement", "cluster"]
                assert exp["design"]["compliance_rate"] == data.design.compliance_rate
                assert exp["sample_ratio"]["p_value"] == data.check_sample_ratio().p_value
                r, model = await call("fit_metrics", {"experiment": exp["handle"], "y": ["sales", "sessions"],
                                                      "exogenous_covariates": ["pre_sales", "device"]})
                assert not r.is_error and model["cov_type"] == effects.inference.cov_type
                # a wrong type, a bad expression: errors, and the server keeps serving
                r, bad = await call("infer_effects", {"model": model["handle"], "condition_on": 5})
                assert r.is_error and bad["error"]["type"] == "invalid_arguments"
                r, bad = await call("infer_effects", {"model": model["handle"], "condition_on": ["device === 1"]})
                assert r.is_error and bad["error"]["type"] == "invalid_expression"
                r, got = await call("infer_effects", {"model": model["handle"], "condition_on": CONDITIONS})
                assert not r.is_error
                # the text content carries the markdown and the JSON
                assert r.content[0].text == got["markdown"]
                assert json.loads(r.content[1].text)["effects"] == got["effects"]
                r, rel = await call("relative_effects", {"effects": got["handle"]})
                r, adj = await call("adjust_effects", {"effects": got["handle"], "method": "holm"})
                r, saved = await call("save_effects", {"effects": adj["handle"], "path": "shop/effects.csv"})
                assert not r.is_error
                r, bad = await call("save_effects", {"effects": adj["handle"], "path": "../escape.csv"})
                assert r.is_error and bad["error"]["type"] == "path_not_allowed"
                r, bad = await call("no_such_tool", {})
                assert r.is_error and bad["error"]["type"] == "unknown_tool"
                r, handles = await call("list_handles", {})
                assert not r.is_error and len(handles["handles"]) == 5
                return got, rel, adj

    got, rel, adj = anyio.run(session)
    want = effects.to_dict()
    assert got["columns"] == want["columns"] and got["effects"] == want["effects"]  # the same numbers, exactly
    assert rel["effects"] == effects.relative().to_dict()["effects"]
    assert adj["effects"] == effects.adjust("holm").to_dict()["effects"]
    saved = pd.read_csv(out / "shop" / "effects.csv")
    np.testing.assert_allclose(saved["estimate"], effects.estimate, rtol=1e-15)
    assert not (tmp_path / "escape.csv").exists()
    log = stderr.read_text()
    assert "causalflow MCP server (stdio)" in log and "Traceback" not in log


def test_resources_and_prompt(roots, tmp_path):
    root, out = roots

    async def session():
        with open(tmp_path / "server.stderr", "w") as errlog:
            async with Client(stdio_client(_server(root, out), errlog=errlog)) as client:
                uris = [str(r.uri) for r in (await client.list_resources()).resources]
                guide = (await client.read_resource("causalflow://guide/tools")).contents[0].text
                page = None
                if "causalflow://docs/core" in uris:
                    page = (await client.read_resource("causalflow://docs/core")).contents[0].text
                prompts = [p.name for p in (await client.list_prompts()).prompts]
                prompt = await client.get_prompt("analyse_experiment", {"source": "store.csv",
                                                                        "question": "does the widget sell?"})
                return uris, guide, page, prompts, prompt

    uris, guide, page, prompts, prompt = anyio.run(session)
    assert "causalflow://guide/tools" in uris
    assert all(f"## {name}" in guide for name in REGISTRY)
    if page is not None:  # a source checkout: the docs pages are served
        assert page.startswith("# ")
    assert prompts == ["analyse_experiment"]
    text = prompt.messages[0].content.text
    assert "store.csv" in text and "does the widget sell?" in text and "create_experiment" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streamable_http_on_localhost(roots, tmp_path):
    root, out = roots
    port = _free_port()
    log = open(tmp_path / "http.stderr", "w")
    server = subprocess.Popen([sys.executable, "-m", "causalflow.cli", "mcp", "--root", str(root), "--out", str(out),
                               "--http", str(port)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "http.stderr").read_text()
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.3)

        async def session():
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                names = [t.name for t in (await client.list_tools()).tools]
                result = await client.call_tool("describe_source", {"source": "store.csv", "sample_rows": 0})
                bad = await client.call_tool("describe_source", {"source": "/etc/passwd"})
                return names, result, bad

        names, result, bad = anyio.run(session)
        assert names == list(REGISTRY)
        assert not result.is_error and result.structured_content["rows"] == 6000
        assert bad.is_error and bad.structured_content["error"]["type"] == "path_not_allowed"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
