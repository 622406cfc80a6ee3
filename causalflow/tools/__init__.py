"""Tools for LLM agents: the grammar as JSON-schema tools, a handle store, an MCP server.

Each tool is a plain function with typed arguments and a typed result (pydantic models);
their JSON schemas are generated from those types. Tools take and return JSON only, refer
to fitted objects by handle (``"exp_1"``, ``"model_1"``), never execute code sent to them,
read files only under the data roots and write only under the output root. A bad call
returns ``{"error": {"type", "message", "argument", "allowed", "hint"}}``.

- :func:`call` serves a call; :class:`Session` holds the roots, limits and handles (a
  default session reads under the current folder and writes under ``~/causalflow-output``).
- :func:`schemas` exports the definitions (``"openai"``, ``"anthropic"``, ``"mcp"``).
- ``causalflow mcp --root DIR`` serves the same tools over MCP
  (:mod:`causalflow.tools.mcp_server`).

Needs ``pip install "causalflow[mcp]"`` (pydantic; the server also needs the ``mcp`` SDK).
Importing this package is cheap: pydantic is imported on first use.

Examples
--------
>>> import tempfile, pathlib
>>> from causalflow import tools
>>> from causalflow.demo import simulate_store
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> simulate_store(n=4000, n_regions=80).to_csv(root / "store.csv", index=False)
>>> session = tools.Session(roots=[root], out=root / "out")
>>> exp = session.call("create_experiment", {"source": "store.csv", "intent_to_treat": "assigned",
...                                           "treated": "uses_widget", "cluster_by": "region"})
>>> model = session.call("fit_metrics", {"experiment": exp["handle"], "y": ["sales"],
...                                       "exogenous_covariates": ["pre_sales", "device"]})
>>> effects = session.call("infer_effects", {"model": model["handle"]})
>>> [(row["estimand"], round(row["estimate"], 2)) for row in effects["effects"]]
[('ITT', 0.92), ('LATE', 1.57)]
>>> session.call("infer_effects", {"model": model["handle"], "condition_on": ["devise == 'desktop'"]})["error"]["type"]
'unknown_column'
>>> [t["name"] for t in tools.schemas("anthropic")][:3]
['list_sources', 'describe_source', 'create_experiment']
"""

from __future__ import annotations

__all__ = ["PENDING", "REGISTRY", "Session", "call", "default_session", "demo_session", "schemas"]

_default = None


def _registry():
    from .._optional import require

    require("pydantic", "mcp")
    from . import registry

    return registry


def default_session():
    """The session :func:`call` uses without ``session=``: reads under the current folder,
    writes under ``~/causalflow-output`` (created on the first write)."""
    global _default
    if _default is None:
        _default = _registry().Session()
    return _default


def call(name: str, arguments: dict | None = None, *, session=None) -> dict:
    """Serve one tool call and return its JSON result (or ``{"error": {...}}``, never an exception).

    ``session``: a :class:`Session`; default :func:`default_session`.
    """
    return _registry().call(session if session is not None else default_session(), name, arguments)


def schemas(format: str = "openai") -> list[dict]:
    """Tool definitions for ``"openai"``, ``"anthropic"`` or ``"mcp"`` (see
    :func:`causalflow.tools.registry.schemas`)."""
    return _registry().schemas(format)


def __getattr__(name: str):
    if name in ("Session", "REGISTRY", "PENDING", "demo_session"):
        return getattr(_registry(), name)
    raise AttributeError(f"module 'causalflow.tools' has no attribute {name!r}")
