"""The pieces every tool is made of: typed arguments and results, the ``tool`` decorator,
and the :class:`Workspace` a tool works in (roots, handles, limits, tables read).

A tool is a plain function ``f(args: SomeArgs, ws: Workspace) -> SomeResult`` whose
argument and result types are pydantic models. The decorator reads those two annotations
and the docstring, and attaches a :class:`Tool` to the function: its name, its description
(the docstring, plus a runnable example), and the JSON schemas of its arguments and its
result, generated from the models. Nothing is written twice.

Examples
--------
>>> from pydantic import Field
>>> class Echo(Args):
...     text: str = Field(max_length=10, description="what to echo")
>>> class Echoed(Result):
...     text: str
>>> @tool(example={"text": "hi"})
... def echo(args: Echo, ws: Workspace) -> Echoed:
...     '''Echo the text back.'''
...     return Echoed(text=args.text, markdown=args.text)
>>> echo.__tool__.name, echo.__tool__.input_schema()["properties"]["text"]["maxLength"]
('echo', 10)
"""

from __future__ import annotations

import inspect
import json
import threading
import typing
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from .handles import HANDLE_PATTERN, HandleStore
from .safety import Limits, Roots, ToolError

__all__ = ["Args", "Expression", "Handle", "Label", "Name", "PathText", "Result", "Row", "Scalar", "TableResult",
           "Tool", "Workspace", "inline_refs", "match_label", "require_columns", "table_result", "tool"]

# -- argument and result types -----------------------------------------------------------
Name = Annotated[str, Field(min_length=1, max_length=256)]
Expression = Annotated[str, Field(min_length=1, max_length=1000)]
PathText = Annotated[str, Field(min_length=1, max_length=1024)]
Handle = Annotated[str, Field(pattern=HANDLE_PATTERN, max_length=40)]
#: an arm label as JSON gives it (matched to the data's labels by value, then by text)
Label = str | int | float | bool
#: a cell of a result table; one JSON-schema type list rather than pydantic's anyOf of five
#: branches, which a client validates several times faster (it checks every cell of every row)
Scalar = Annotated[str | int | float | bool | None, WithJsonSchema({"type": ["string", "number", "boolean", "null"]})]
#: one row of a result table
Row = dict[str, Scalar]


class Args(BaseModel):
    """Arguments of a tool: unknown keys are errors that list the known ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Result(BaseModel):
    """What every tool returns besides its own fields."""

    model_config = ConfigDict(extra="forbid")

    markdown: str = Field(description="a short summary to read (a table or a few lines)")
    warnings: list[str] = Field(default_factory=list,
                                description="warnings raised while serving the call (e.g. a design warning)")


class TableResult(Result):
    """A record rendered as a table (a ranking, a mediation): its rows and its fields."""

    handle: str = Field(description="handle of this record")
    kind: str = Field(description="what the record is")
    derived_from: str = Field(description="the handle it comes from")
    columns: list[str]
    rows: list[Row]
    meta: dict[str, Scalar | list[Scalar] | list[list[Scalar]]] = Field(
        default_factory=dict, description="the record's other fields (alpha, method, ...)")


def table_result(record, kind: str, derived_from: str, ws: Workspace, summary: str = "",
                 drop: tuple = ("covariance",)) -> TableResult:
    """Store a rendered record (``to_dict``, ``to_markdown``) and return it as a :class:`TableResult`."""
    out = record.to_dict()
    columns = out.pop("columns")
    rows = out.pop(record._rows_key)
    meta = {k: v for k, v in out.items() if k not in drop and not isinstance(v, dict)}
    handle = ws.store.put(kind, record, summary or f"{len(rows)} row(s) from {derived_from}")
    return TableResult(handle=handle, kind=kind, derived_from=derived_from, columns=columns, rows=rows, meta=meta,
                       markdown=f"**{handle}**\n\n" + record.to_markdown())


def inline_refs(schema: dict) -> dict:
    """The schema with every local ``$ref`` replaced by its definition, ``$defs`` dropped,
    and pydantic's generated ``title`` keywords removed (they repeat the field names).

    Tool formats differ in how they treat ``$ref``; a self-contained schema works in all.
    The argument and result models are not recursive, so the inlining terminates.

    >>> inline_refs({"$defs": {"A": {"type": "integer", "title": "A"}}, "title": "M",
    ...              "properties": {"a": {"$ref": "#/$defs/A"}}})
    {'properties': {'a': {'type': 'integer'}}}
    """
    defs = schema.get("$defs", {})

    def walk(node, in_properties: bool = False):
        if isinstance(node, dict):
            if in_properties:  # field name -> schema: every key is a name, not a keyword
                return {k: walk(v) for k, v in node.items()}
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                target = walk(defs[node["$ref"].removeprefix("#/$defs/")])
                return {**target, **{k: walk(v) for k, v in node.items() if k not in ("$ref", "title")}}
            return {k: walk(v, k == "properties") for k, v in node.items() if k not in ("$defs", "title")}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


@dataclass(frozen=True)
class Tool:
    """A registered tool: the function and what is derived from it.

    Attributes
    ----------
    name : the function's name
    function : ``f(args, ws) -> result``
    args, result : the pydantic models of its argument and result
    summary : the docstring
    example : arguments that run on the demo workspace (``tests/test_tools.py`` runs them)
    writes : True when the tool writes files (under the output root)
    after : the calls ``(name, arguments)`` that make the handles the example uses, when the
        examples of the tools before it in the registry do not
    """

    name: str
    function: Callable
    args: type
    result: type
    summary: str
    example: dict = field(default_factory=dict)
    writes: bool = False
    after: tuple = ()

    @property
    def description(self) -> str:
        """The docstring and the example arguments, as a model reads them."""
        before = "".join(f"{name} {json.dumps(arguments)}, then " for name, arguments in self.after)
        return f"{self.summary}\n\nExample arguments{' (after ' + before[:-7] + ')' if before else ''}: " \
               f"{json.dumps(self.example)}"

    @cached_property
    def _input_schema(self) -> str:
        return json.dumps(inline_refs(self.args.model_json_schema()))

    @cached_property
    def _output_schema(self) -> str:
        return json.dumps(inline_refs(self.result.model_json_schema(mode="serialization")))

    def input_schema(self) -> dict:
        """JSON schema of the arguments (a fresh copy)."""
        return json.loads(self._input_schema)

    def output_schema(self) -> dict:
        """JSON schema of the result (a fresh copy)."""
        return json.loads(self._output_schema)


def tool(*, example: dict, writes: bool = False, after: tuple = ()):
    """Register a function ``f(args: Args, ws: Workspace) -> Result`` as a tool.

    The argument and result models are read from the annotations; the example must validate
    against the argument model (checked here, at import).
    """

    def decorate(function: Callable) -> Callable:
        hints = typing.get_type_hints(function)
        args, result = hints.get("args"), hints.get("return")
        if not (isinstance(args, type) and issubclass(args, Args)):
            raise TypeError(f"tool {function.__name__}: annotate the first parameter 'args' with an Args model")
        if not (isinstance(result, type) and issubclass(result, Result)):
            raise TypeError(f"tool {function.__name__}: annotate the return type with a Result model")
        args.model_validate(example)
        function.__tool__ = Tool(function.__name__, function, args, result, inspect.getdoc(function) or "",
                                 dict(example), writes, tuple(after))
        return function

    return decorate


# -- the workspace -----------------------------------------------------------------------
class Workspace:
    """What a tool works in: the roots, the handle store, the limits and the tables read.

    Parameters
    ----------
    roots : folders whose data files tools may read (default: the current folder)
    out : the folder tools may write under (default: ``~/causalflow-output``)
    limits : :class:`~causalflow.tools.safety.Limits`
    """

    def __init__(self, roots=(".",), out=None, limits: Limits | None = None):
        from pathlib import Path

        self.limits = limits if limits is not None else Limits()
        self.roots = Roots(roots, out if out is not None else Path.home() / "causalflow-output")
        self.store = HandleStore(self.limits.max_handles)
        self._tables: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.roots!r}, {len(self.store)} handle(s))"

    def add_table(self, table, summary: str = "") -> str:
        """Register an in-memory pandas / polars / pyarrow table; returns its handle ``table_<n>``,
        which tools accept wherever they take a ``source``."""
        from ..validate import to_pandas

        df = to_pandas(table)
        self._check_shape(df.shape, "table")
        return self.store.put("table", df, summary or f"{df.shape[0]:,} rows x {df.shape[1]} columns")

    def _check_shape(self, shape: tuple, argument: str) -> None:
        rows, columns = shape
        if rows > self.limits.max_rows:
            raise ToolError("too_large", f"{argument}: {rows:,} rows; at most {self.limits.max_rows:,} are accepted",
                            argument=argument, allowed=[self.limits.max_rows])
        if columns > self.limits.max_columns:
            raise ToolError("too_large", f"{argument}: {columns:,} columns; at most {self.limits.max_columns:,} "
                            "are accepted", argument=argument, allowed=[self.limits.max_columns])

    def table(self, source: str, argument: str = "source") -> tuple[pd.DataFrame, str]:
        """The table a ``source`` names (a table handle, or a CSV / parquet path under the data
        roots) and its label. Files are read once and kept (a few, least recently used out)."""
        import re

        if re.match(HANDLE_PATTERN, source) and source.startswith("table_"):
            return self.store.get(source, ("table",), argument), source
        path = self.roots.read_path(source, argument)
        if not path.is_file():  # a folder, a pipe or a device: never opened
            raise ToolError("unsupported_file", f"{argument}: {source!r} is not a regular file; give a CSV or "
                            "parquet file", argument=argument, allowed=self.roots.list_files(limit=30))
        suffix = path.suffix.lower()
        if suffix not in Roots.DATA_SUFFIXES:
            raise ToolError("unsupported_file", f"{argument}: {source!r} is not a CSV / TSV / parquet file",
                            argument=argument, allowed=list(Roots.DATA_SUFFIXES))
        stat = path.stat()
        if stat.st_size > self.limits.max_file_bytes:
            raise ToolError("too_large", f"{argument}: {source!r} has {stat.st_size:,} bytes; at most "
                            f"{self.limits.max_file_bytes:,} are read", argument=argument,
                            allowed=[self.limits.max_file_bytes])
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._tables:
                self._tables.move_to_end(key)
                return self._tables[key], self.roots.display(path)
        df = self._read(path, suffix, argument)
        with self._lock:
            self._tables[key] = df
            while len(self._tables) > self.limits.max_tables_cached:
                self._tables.popitem(last=False)
        return df, self.roots.display(path)

    def _read(self, path, suffix: str, argument: str) -> pd.DataFrame:
        limit = self.limits.max_rows
        try:
            if suffix in (".parquet", ".pq"):
                from .._optional import require

                metadata = require("pyarrow.parquet", "mcp").ParquetFile(path).metadata
                self._check_shape((metadata.num_rows, metadata.num_columns), argument)
                return pd.read_parquet(path)
            sep = "\t" if suffix == ".tsv" else ","
            header = pd.read_csv(path, sep=sep, nrows=0)
            self._check_shape((0, len(header.columns)), argument)
            df = pd.read_csv(path, sep=sep, nrows=limit + 1)
        except ToolError:
            raise
        except ImportError:
            raise
        except Exception as exc:  # a malformed file: say what the reader said, in one line
            raise ToolError("unsupported_file", f"{argument}: could not read {path.name!r}: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                            argument=argument) from None
        self._check_shape(df.shape, argument)
        return df


def require_columns(df: pd.DataFrame, names, argument: str) -> None:
    """Every name in ``names`` is a column of ``df``; else ``unknown_column`` listing the columns."""
    for name in [names] if isinstance(names, str) else names:
        if name not in df.columns:
            import difflib

            columns = [str(c) for c in df.columns]
            close = difflib.get_close_matches(str(name), columns, n=3)
            raise ToolError("unknown_column", f"{argument}: no column {name!r} in the data"
                            + (f"; did you mean {close[0]!r}?" if close else ""), argument=argument,
                            allowed=columns[:500])


def match_label(value: Any, labels, argument: str):
    """The data's arm label that ``value`` (a JSON value) names: equal, or equal as text."""
    for label in labels:
        if type(label) is type(value) and label == value:
            return label
    for label in labels:
        if not isinstance(value, str) and label == value:
            return label
    for label in labels:
        if str(label) == str(value):
            return label
    from ..effects.render import plain

    raise ToolError("invalid_value", f"{argument}: {value!r} is not an arm", argument=argument,
                    allowed=[plain(label) for label in labels])
