"""Agent tools: the overhead of a tool call over the Python API (issue 20; target < 50 ms).

A 100,000-row encouragement + cluster experiment (``causalflow.demo.simulate_store``,
1,000 regions), three metrics, covariates ``pre_sales`` and ``device``. The same five steps
run through the Python API and through ``Session.call``:

    create the experiment -> fit -> infer (average + 2 conditions) -> relative -> adjust (holm)

*API* makes the objects only; *API + JSON* also renders what a tool returns (``to_dict()``
and ``to_markdown()`` of each record, the design summary and the sample-ratio check).
*tools* calls the five tools on a registered in-memory table (``Session.add_table``), so
file reading is excluded from both sides. Overhead per call = (tools - API) / 5, against
the API with and without the JSON rendering. Rounds interleave the paths and the median
is reported. ``--mcp`` adds the round trip of one ``infer_effects`` call through the MCP
SDK's client over stdio (a server subprocess reading the same table from parquet) against
the same call in process.

    python benchmarks/bench_tools.py                # 100,000 rows, 9 rounds
    python benchmarks/bench_tools.py --mcp --readme # and write benchmarks/README.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import causalflow as cf  # noqa: E402
from benchmarks._common import machine_info  # noqa: E402
from causalflow.demo import simulate_store  # noqa: E402
from causalflow.tools.registry import Session  # noqa: E402

CONDITIONS = ["device == 'desktop'", "device != 'desktop' and pre_sales > 10"]
METRICS = ["sales", "sessions", "orders"]
COVARIATES = ["pre_sales", "device"]
N_CALLS = 5


def api(df, render: bool) -> float:
    start = time.perf_counter()
    data = cf.ExperimentData(df, intent_to_treat="assigned", treated="uses_widget", cluster_by="region")
    check = data.check_sample_ratio()
    model = data.add_metric(y=METRICS, exogenous_covariates=COVARIATES).fit(cf.LinearModel)
    effects = model.infer_effect(condition_on=CONDITIONS)
    relative = effects.relative()
    adjusted = effects.adjust("holm")
    if render:
        str(data.design), str(check), check.to_dict()
        for record in (effects, relative, adjusted):
            record.to_dict(), record.to_markdown()
    return time.perf_counter() - start


def tools(session: Session, table: str) -> float:
    start = time.perf_counter()
    exp = session.call("create_experiment", {"source": table, "intent_to_treat": "assigned",
                                             "treated": "uses_widget", "cluster_by": "region"})
    model = session.call("fit_metrics", {"experiment": exp["handle"], "y": METRICS,
                                         "exogenous_covariates": COVARIATES})
    effects = session.call("infer_effects", {"model": model["handle"], "condition_on": CONDITIONS})
    relative = session.call("relative_effects", {"effects": effects["handle"]})
    adjusted = session.call("adjust_effects", {"effects": effects["handle"], "method": "holm"})
    elapsed = time.perf_counter() - start
    assert all("error" not in r for r in (exp, model, effects, relative, adjusted))
    assert effects["effects"][0]["estimate"] is not None
    return elapsed


def mcp_round_trip(df, rounds: int) -> dict:
    """Median seconds of one infer_effects call over stdio, and of the same call in process."""
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    folder = tempfile.mkdtemp()
    df.to_parquet(os.path.join(folder, "store.parquet"))
    params = StdioServerParameters(command=sys.executable, args=["-m", "causalflow.cli", "mcp", "--root", folder,
                                                                 "--out", os.path.join(folder, "out")])
    arguments = {"condition_on": CONDITIONS}

    async def remote():
        times = []
        with open(os.devnull, "w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                exp = (await client.call_tool("create_experiment", {
                    "source": "store.parquet", "intent_to_treat": "assigned", "treated": "uses_widget",
                    "cluster_by": "region"})).structured_content
                model = (await client.call_tool("fit_metrics", {"experiment": exp["handle"], "y": METRICS,
                                                                "exogenous_covariates": COVARIATES})).structured_content
                for _ in range(rounds):
                    start = time.perf_counter()
                    result = await client.call_tool("infer_effects", {"model": model["handle"], **arguments})
                    times.append(time.perf_counter() - start)
                    assert not result.is_error
        return statistics.median(times)

    session = Session(roots=[folder], out=os.path.join(folder, "out"))
    exp = session.call("create_experiment", {"source": "store.parquet", "intent_to_treat": "assigned",
                                             "treated": "uses_widget", "cluster_by": "region"})
    model = session.call("fit_metrics", {"experiment": exp["handle"], "y": METRICS,
                                         "exogenous_covariates": COVARIATES})
    local = []
    for _ in range(rounds):
        start = time.perf_counter()
        session.call("infer_effects", {"model": model["handle"], **arguments})
        local.append(time.perf_counter() - start)
    return {"stdio": anyio.run(remote), "in_process": statistics.median(local)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--mcp", action="store_true", help="also time an infer_effects call over MCP stdio")
    parser.add_argument("--readme", action="store_true", help="write the 'Agent tools' section of README.md")
    args = parser.parse_args()

    df = simulate_store(n=args.n, n_regions=max(20, args.n // 100), seed=0)
    session = Session(roots=[tempfile.mkdtemp()], out=tempfile.mkdtemp())
    table = session.add_table(df)
    api(df, True), tools(session, table)  # warm up (imports, caches)
    times = {"api": [], "api_json": [], "tools": []}
    for _ in range(args.rounds):
        times["api"].append(api(df, False))
        times["api_json"].append(api(df, True))
        times["tools"].append(tools(session, table))
    med = {k: statistics.median(v) for k, v in times.items()}
    over = (med["tools"] - med["api"]) / N_CALLS
    over_json = (med["tools"] - med["api_json"]) / N_CALLS
    print(f"n = {args.n:,} rows, {args.rounds} rounds (median), {N_CALLS} calls")
    print(f"API {med['api'] * 1e3:.1f} ms; API + JSON {med['api_json'] * 1e3:.1f} ms; "
          f"tools {med['tools'] * 1e3:.1f} ms")
    print(f"overhead per call: {over * 1e3:.2f} ms vs API, {over_json * 1e3:.2f} ms vs API + JSON (target < 50 ms)")
    mcp = mcp_round_trip(df, args.rounds) if args.mcp else None
    if mcp:
        print(f"infer_effects: {mcp['in_process'] * 1e3:.1f} ms in process, {mcp['stdio'] * 1e3:.1f} ms over MCP stdio "
              f"(+{(mcp['stdio'] - mcp['in_process']) * 1e3:.1f} ms)")
    if args.readme:
        write_readme(args, med, over, over_json, mcp)


def write_readme(args, med, over, over_json, mcp) -> None:
    import pydantic

    info = machine_info()
    load = info["uptime"].split("load average:")[-1].strip()
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    row = (f"| {when} | {args.n:,} | {med['api'] * 1e3:.1f} ms | {med['api_json'] * 1e3:.1f} ms | "
           f"{med['tools'] * 1e3:.1f} ms | **{over * 1e3:.2f} ms** / {over_json * 1e3:.2f} ms |")
    mcp_line = ("" if mcp is None else
                f"\nOne `infer_effects` call over the MCP SDK's stdio client: {mcp['stdio'] * 1e3:.1f} ms, against "
                f"{mcp['in_process'] * 1e3:.1f} ms in process (+{(mcp['stdio'] - mcp['in_process']) * 1e3:.1f} ms "
                "of JSON-RPC framing, the pipes of two processes on a loaded machine, and the client's\n"
                "validation of the result against its output schema).\n")
    section = f"""## Agent tools: overhead of a tool call over the Python API (issue 20)

`python benchmarks/bench_tools.py --mcp --readme`. A {args.n:,}-row encouragement + cluster
experiment (`simulate_store`, {max(20, args.n // 100):,} regions), 3 metrics, covariates `pre_sales` and
`device`; five steps (create the experiment, fit, infer with 2 conditions, relative, adjust)
through the Python API and through `Session.call` on a registered in-memory table (no file
reading on either side). *API + JSON* also renders the records a tool returns (`to_dict`,
`to_markdown`, the design and sample-ratio summaries). Median of {args.rounds} interleaved rounds.
Machine: {info['cpu']}, {info['nproc']} cores, Python {info['python']}, numpy {info['versions']['numpy']},
pandas {info['versions']['pandas']}, pydantic {pydantic.VERSION}; load average {load} (shared with other jobs).

| date (UTC) | rows | API | API + JSON | tools (5 calls) | overhead per call vs API / vs API + JSON |
| --- | --- | --- | --- | --- | --- |
{row}
{mcp_line}
Target: < 50 ms per call. The overhead is argument validation (pydantic), the handle store,
the JSON and markdown rendering of each record (most of it: compare the two last columns),
and the result model; it does not grow with the rows (the tools pass the table to the same
grammar calls and render records whose size is that of the effects table).
"""
    path = os.path.join(HERE, "README.md")
    text = open(path, encoding="utf-8").read()
    pattern = re.compile(r"## Agent tools: overhead of a tool call.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: section.rstrip() + "\n", text) if pattern.search(text) else \
        text.rstrip() + "\n\n" + section
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote the 'Agent tools' section of {path}")


if __name__ == "__main__":
    main()
