"""``causalflow mcp``: the tools over the Model Context Protocol (the official ``mcp`` SDK, 2.x).

The server is the SDK's high-level :class:`mcp.server.mcpserver.MCPServer` with its tool
listing and tool calls served by :mod:`causalflow.tools.registry`: the tools, their
schemas and their errors are the same as :func:`causalflow.tools.call` and
:func:`causalflow.tools.schemas` (``format="mcp"``) give. A call's result carries the
record as ``structured_content`` (checked by clients against the tool's output schema)
and, as text, the markdown summary and the JSON; a bad call is an ``is_error`` result whose
``structured_content`` is ``{"error": {...}}``. Calls run in a worker thread, so a long fit
does not stall the transport, and one at a time per server.

Also served: the documentation pages (``docs/*.md`` of a source checkout) and a guide to the
tools as resources (``causalflow://docs/<page>``, ``causalflow://guide/tools``), and the
prompt ``analyse_experiment``.

Transports: stdio (the default), or streamable HTTP bound to 127.0.0.1 (``--http PORT``).

Examples
--------
>>> import anyio, tempfile
>>> from causalflow.tools.registry import demo_session
>>> server = build_server(demo_session(tempfile.mkdtemp(), n=2000))
>>> tools = anyio.run(server.list_tools)
>>> tools[0].name, "inputSchema" in tools[0].model_dump(by_alias=True)
('list_sources', True)
>>> result = anyio.run(server.call_tool, "describe_source", {"source": "../x.csv"})
>>> result.is_error, result.structured_content["error"]["type"]
(True, 'path_not_allowed')
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .._optional import require

require("mcp", "mcp")

import anyio  # noqa: E402  (the SDK's own async runtime; installed with it)
import mcp_types  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.resources import FileResource, TextResource  # noqa: E402

from .registry import PENDING, REGISTRY, Session  # noqa: E402

__all__ = ["CausalflowServer", "build_server", "docs_folder", "serve"]

INSTRUCTIONS = """causalflow analyses randomized experiments (A/B, encouragement, cluster, adaptive designs)
and observational studies. Typical flow: list_sources -> describe_source (learn the columns) ->
create_experiment (the design and its sample-ratio check: report a mismatch before any effect) ->
fit_metrics (metrics and pre-treatment covariates) -> infer_effects (average, and subgroups with
condition_on) -> relative_effects / adjust_effects (several metrics or subgroups) / project_effects ->
save_effects. plan_experiment sizes a new experiment; monitor_experiment gives anytime-valid results
at successive looks; run_oci / show_oci_run analyse observational data. Objects are referred to by
handle (exp_1, model_1, effects_1). A bad call returns {"error": {"type", "message", "allowed",
"hint"}}: read it, fix the argument and call again. Report estimands as the records name them (ITT:
effect of being assigned; LATE: effect of taking the treatment among compliers)."""


def docs_folder() -> Path | None:
    """The ``docs`` folder of a source checkout (next to the package), or None."""
    folder = Path(__file__).resolve().parents[2] / "docs"
    return folder if folder.is_dir() else None


def tools_guide() -> str:
    """A markdown guide to the tools, generated from the registry."""
    lines = ["# causalflow tools", "", INSTRUCTIONS, ""]
    for t in REGISTRY.values():
        lines += [f"## {t.name}", "", t.summary, "", f"Example arguments: `{json.dumps(t.example)}`", ""]
    lines += ["## Not available yet", ""] + [f"- {name}: {why}" for name, why in PENDING.items()]
    return "\n".join(lines) + "\n"


def _error_text(error: dict) -> str:
    text = f"error ({error['type']}): {error['message']}"
    if error.get("allowed") is not None:
        text += f"\nallowed: {json.dumps(error['allowed'])[:2000]}"
    if error.get("hint"):
        text += f"\nhint: {error['hint']}"
    return text


def to_call_result(result: dict) -> mcp_types.CallToolResult:
    """A tool's JSON result (or error) as an MCP ``CallToolResult``."""
    if "error" in result:
        return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=_error_text(result["error"]))],
                                        structured_content=result, is_error=True)
    data = {k: v for k, v in result.items() if k != "markdown"}
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=result.get("markdown", "")),
                 mcp_types.TextContent(type="text", text=json.dumps(data, allow_nan=False))],
        structured_content=result)


class CausalflowServer(MCPServer):
    """``MCPServer`` whose tools are the causalflow registry, served through ``session``."""

    def __init__(self, session: Session, **kwargs):
        super().__init__(**kwargs)
        self.session = session
        self._lock = anyio.Lock()

    async def list_tools(self) -> list[mcp_types.Tool]:
        out = []
        for t in REGISTRY.values():
            out.append(mcp_types.Tool(
                name=t.name, description=t.description, input_schema=t.input_schema(),
                output_schema=t.output_schema(),
                annotations=mcp_types.ToolAnnotations(read_only_hint=not t.writes, destructive_hint=False,
                                                      idempotent_hint=not t.writes, open_world_hint=False)))
        return out

    async def call_tool(self, name: str, arguments: dict, context=None) -> mcp_types.CallToolResult:
        async with self._lock:
            result = await anyio.to_thread.run_sync(self.session.call, name, arguments)
        return to_call_result(result)

    def _tool_input_schema(self, name: str):
        tool = REGISTRY.get(name)
        return None if tool is None else tool.input_schema()


def build_server(session: Session, docs: Path | None = None) -> CausalflowServer:
    """The MCP server over ``session``, with the docs pages (``docs``, default
    :func:`docs_folder`) and the tools guide as resources and the analysis prompt."""
    from .. import __version__

    server = CausalflowServer(session, name="causalflow", version=__version__, instructions=INSTRUCTIONS,
                              title="causalflow: randomized experiments and causal inference")
    server.add_resource(TextResource(uri="causalflow://guide/tools", name="tools", title="causalflow tools",
                                     description="every tool, what it does and an example call",
                                     mime_type="text/markdown", text=tools_guide()))
    docs = docs if docs is not None else docs_folder()
    if docs is not None:
        for page in sorted(Path(docs).glob("*.md")):
            first = page.read_text(encoding="utf-8").lstrip().splitlines()[:1]
            title = first[0].lstrip("# ").strip() if first else page.stem
            server.add_resource(FileResource(uri=f"causalflow://docs/{page.stem}", name=page.stem, title=title,
                                             description=f"causalflow documentation: {title}",
                                             mime_type="text/markdown", path=page.resolve()))

    @server.prompt(name="analyse_experiment", title="Analyse an experiment",
                   description="step-by-step instructions to analyse a randomized experiment with the tools")
    def analyse_experiment(source: str, question: str = "") -> str:
        return (
            f"Analyse the randomized experiment in the data source {source!r} with the causalflow tools."
            + (f" The question to answer: {question}" if question else "") + "\n\n"
            "1. describe_source to learn the columns: find the random assignment, the treatment actually "
            "received (if it can differ: an encouragement design), the unit of randomization (clusters), "
            "the outcome metrics and the pre-treatment covariates. Ask if a role is unclear.\n"
            "2. create_experiment with those roles. Read the sample-ratio check: if it reports a mismatch, "
            "say so first; the effects may be biased.\n"
            "3. fit_metrics with the metrics and pre-treatment covariates only (never post-treatment "
            "variables).\n"
            "4. infer_effects: the average effects, then the subgroups the question needs (condition_on).\n"
            "5. relative_effects for lifts in percent; adjust_effects (holm) when several metrics, arms or "
            "subgroups are read together.\n"
            "6. Answer in plain words: the estimand (ITT = effect of being assigned / encouraged; LATE = "
            "effect of taking the treatment among compliers; ATE / CATE), the estimate with its 95% "
            "interval, and what the p-values and anytime-valid p-values say. Do not claim more than the "
            "intervals support.")

    return server


def serve(session: Session, *, http_port: int | None = None, docs: Path | None = None) -> None:
    """Run the server over stdio, or streamable HTTP on 127.0.0.1:``http_port``."""
    server = build_server(session, docs)
    names = len(REGISTRY)
    where = "stdio" if http_port is None else f"http://127.0.0.1:{http_port}/mcp"
    print(f"causalflow MCP server ({where}): {names} tools; data roots "
          f"{[str(r) for r in session.roots.data]}; output root {session.roots.out}", file=sys.stderr, flush=True)
    if http_port is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=http_port)
