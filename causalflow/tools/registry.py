"""The tool registry, the one call path, and the schema export.

:data:`REGISTRY` maps each tool's name to its :class:`~causalflow.tools.base.Tool`.
:func:`call` serves one call: it checks the size of the arguments, validates them against
the tool's model, runs the tool, and returns the result's JSON; every failure comes back as
``{"error": {"type", "message", "argument", "allowed", "hint"}}`` instead of an exception,
so that a caller (an LLM, the MCP server) can read what was wrong and what is allowed.
:func:`schemas` exports the definitions for OpenAI, Anthropic or MCP.

Tools not offered yet, because the feature they wrap is not in the library yet, are listed
in :data:`PENDING` (they are added here when their feature lands).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from typing import Literal

from pydantic import ValidationError as ArgumentsError

from ..errors import ValidationError
from . import decisions, experiments, observational
from .base import Tool, Workspace
from .safety import ToolError, check_argument_size

__all__ = ["PENDING", "REGISTRY", "Session", "call", "demo_session", "schemas"]

logger = logging.getLogger("causalflow.tools")

REGISTRY: dict[str, Tool] = {f.__tool__.name: f.__tool__
                              for f in (*experiments.TOOLS, *decisions.TOOLS, *observational.TOOLS)}

#: tools of API.md section 7 whose feature is not in the library yet
PENDING: dict[str, str] = {}

Format = Literal["openai", "anthropic", "mcp"]


class Session(Workspace):
    """A tool session: roots, output root, limits and handle store, and :meth:`call`.

    Examples
    --------
    >>> import tempfile
    >>> from causalflow.demo import simulate_store
    >>> session = Session(roots=[tempfile.mkdtemp()], out=tempfile.mkdtemp())
    >>> table = session.add_table(simulate_store(n=2000, n_regions=40))
    >>> exp = session.call("create_experiment", {"source": table, "intent_to_treat": "assigned",
    ...                                           "treated": "uses_widget", "cluster_by": "region"})
    >>> exp["handle"], exp["design"]["kinds"]
    ('exp_1', ['encouragement', 'cluster'])
    >>> session.call("fit_metrics", {"experiment": exp["handle"], "y": "sale"})["error"]["allowed"][:3]
    ['region', 'assigned', 'uses_widget']
    """

    def call(self, name: str, arguments: dict | None = None) -> dict:
        """Serve one tool call; see :func:`call`."""
        return call(self, name, arguments)

    @staticmethod
    def schemas(format: Format = "openai") -> list[dict]:
        """The tool definitions; see :func:`schemas`."""
        return schemas(format)


def demo_session(root, out=None, *, n: int = 4000, seed: int = 0) -> Session:
    """A session whose data root ``root`` holds ``store.csv``, the online-store experiment of
    :func:`causalflow.demo.simulate_store` (an encouragement design randomised by region).
    The tools' example arguments run on it, in the order of :data:`REGISTRY`.

    ``out``: the output root (default ``root/out``).
    """
    from pathlib import Path

    from ..demo import simulate_store

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    simulate_store(n=n, n_regions=max(20, n // 100), seed=seed).to_csv(root / "store.csv", index=False)
    return Session(roots=[root], out=Path(out) if out is not None else root / "out")


def _schema_text(schema: dict) -> str:
    return json.dumps(schema, separators=(",", ":"))[:400]


def _arguments_error(tool: Tool, exc: ArgumentsError) -> ToolError:
    """The first problem of a pydantic validation error, as an actionable ToolError."""
    fields = tool.args.model_fields
    properties = tool.input_schema().get("properties", {})
    problems, found = [], {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        top = loc[0] if loc else None
        if err["type"] == "extra_forbidden":
            problems.append(f"{top}: unknown argument")
            found.setdefault("unknown", top)
        elif err["type"] == "missing":
            problems.append(f"{top}: required argument is missing")
            found.setdefault("missing", top)
        else:
            got = err.get("input")
            got = repr(got)[:80] if not isinstance(got, (dict, list)) else type(got).__name__
            # a union reports one error per branch (loc ends in the branch's type): keep the argument's name
            where = ".".join(p for p in loc if not re.match(r"^(str|int|float|bool|list\[|dict\[|constrained)", p))
            problems.append(f"{where}: {err['msg']} (got {got})")
            found.setdefault("value", top)
    # a misspelt argument is both unknown and missing: the unknown one explains the call
    kind = next((k for k in ("unknown", "missing", "value") if k in found), "value")
    argument = found.get(kind)
    unique = list(dict.fromkeys(problems))
    message = "; ".join(unique[:4]) + (f"; and {len(unique) - 4} more" if len(unique) > 4 else "")
    if kind == "unknown":
        return ToolError("invalid_arguments", message, argument=argument, allowed=sorted(fields),
                         hint=f"the arguments of {tool.name} are {sorted(fields)}")
    prop = properties.get(argument, {})
    allowed = prop.get("enum")
    return ToolError("invalid_arguments", message, argument=argument, allowed=allowed,
                     hint=f"{argument} expects {_schema_text(prop)}" if prop else None)


def _argument_of(text: str) -> str | None:
    head = text.split(":", 1)[0]
    return head if ":" in text and re.fullmatch(r"[A-Za-z_][\w.\[\]'\"]{0,60}", head) else None


def _grammar_error(exc: ValidationError) -> ToolError:
    """A causalflow ValidationError (the grammar refused the input) as a ToolError."""
    text = str(exc)
    argument = _argument_of(text)
    if "is not in the data" in text or "unknown column" in text:
        return ToolError("unknown_column", text, argument=argument)
    if "condition_on expression" in text or "formula" in text:
        return ToolError("invalid_expression", text, argument=argument)
    return ToolError("invalid_design", text, argument=argument)


def call(ws: Workspace, name: str, arguments: dict | None = None) -> dict:
    """Serve one call of tool ``name`` with JSON ``arguments`` in workspace ``ws``.

    Returns the result's JSON (a dict), or ``{"error": {...}}``; never raises for a bad
    call. Calls on one workspace are served one at a time (the store and the warning
    filters are shared).
    """
    try:
        tool = REGISTRY.get(name) if isinstance(name, str) else None
        if tool is None:
            pending = PENDING.get(name) if isinstance(name, str) else None
            if pending is not None:
                raise ToolError("not_available", f"{name}: not available yet ({pending})", allowed=sorted(REGISTRY))
            raise ToolError("unknown_tool", f"no tool named {str(name)[:100]!r}", allowed=sorted(REGISTRY))
        arguments = {} if arguments is None else arguments
        if not isinstance(arguments, dict):
            raise ToolError("invalid_arguments", f"arguments: expected a JSON object, got {type(arguments).__name__}",
                            allowed=sorted(tool.args.model_fields))
        check_argument_size(arguments, ws.limits)
        try:
            args = tool.args.model_validate(arguments)
        except ArgumentsError as exc:
            raise _arguments_error(tool, exc) from None
        with ws._lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = tool.function(args, ws)
        result.warnings = list(dict.fromkeys(str(w.message) for w in caught))[:20]
        from ..oci.artifacts import json_ready

        return json_ready(result.model_dump(mode="json"))
    except ToolError as exc:
        return exc.to_dict()
    except ValidationError as exc:
        return _grammar_error(exc).to_dict()
    except ImportError as exc:
        return ToolError("not_available", str(exc)).to_dict()
    except MemoryError:
        return ToolError("too_large", "the call ran out of memory; use a smaller table or fewer metrics / "
                                      "conditions").to_dict()
    except RecursionError:
        return ToolError("too_large", "the input is nested too deeply").to_dict()
    except Exception as exc:  # a bug: logged with its traceback on the server, one line to the caller
        logger.exception("tool %r failed", name)
        return ToolError("internal_error", f"{type(exc).__name__}: {str(exc)[:300]}",
                         hint="this is a bug in causalflow; the session still works").to_dict()


def _annotations(tool: Tool) -> dict:
    return {"readOnlyHint": not tool.writes, "destructiveHint": False, "idempotentHint": not tool.writes,
            "openWorldHint": False}


def schemas(format: Format = "openai") -> list[dict]:
    """The tool definitions in the form an LLM API takes.

    ``"openai"``: Chat Completions ``tools`` entries (``{"type": "function", "function":
    {"name", "description", "parameters"}}``); ``"anthropic"``: Messages API ``tools``
    entries (``{"name", "description", "input_schema"}``); ``"mcp"``: MCP ``Tool`` objects
    as on the wire (``name``, ``description``, ``inputSchema``, ``outputSchema``,
    ``annotations``). Schemas are self-contained (no ``$ref``).

    >>> [t["function"]["name"] for t in schemas("openai")][:3]
    ['list_sources', 'describe_source', 'create_experiment']
    """
    if format == "openai":
        return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.input_schema()}} for t in REGISTRY.values()]
    if format == "anthropic":
        return [{"name": t.name, "description": t.description, "input_schema": t.input_schema()}
                for t in REGISTRY.values()]
    if format == "mcp":
        return [{"name": t.name, "description": t.description, "inputSchema": t.input_schema(),
                 "outputSchema": t.output_schema(), "annotations": _annotations(t)} for t in REGISTRY.values()]
    raise ValueError(f"format: must be one of 'openai', 'anthropic', 'mcp', got {format!r}")
