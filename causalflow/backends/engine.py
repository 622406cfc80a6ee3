r"""Warehouse engines: the moments of the solver computed where the data lives.

An *engine table* is a parquet path or glob, a DuckDB relation, an Ibis table (DuckDB,
PySpark or any Ibis backend) or a Spark DataFrame. Nothing of it is pulled into memory but
small aggregates: counts, arm labels, covariate levels, and the sums below. Every query
is an Ibis expression (written once; Ibis and sqlglot compile it for DuckDB or Spark SQL,
with quoted identifiers and escaped literals, so no user text ever becomes SQL).

Validation runs in the engine and raises the in-memory messages (:mod:`causalflow.data`).
The checks read their numbers (missing values, ranges, levels) from a few scans of many
columns each (:meth:`EngineTable.profile`), in the in-memory order, not one query per check.

Pass 1: the moments by arm cell
-------------------------------
With covariate design columns c (centred at the group's weighted mean, computed in an
earlier query, DESIGN.md), the instruments of a row of assignment arm a are
:math:`z = P_a [1; c]` with :math:`P_a` the p x (1 + q) matrix that puts 1 at the
intercept and at arm a's indicator, and :math:`c_l` at covariate l and at its interaction
with arm a (Lin 2013). So

.. math::

    Z'WZ = \sum_s P_{a_s} M_s P_{a_s}', \qquad
    M_s = \sum_{i \in s} w_i [1; c_i][1; c_i]', \qquad
    Z'WY = \sum_s P_{a_s} \sum_{i \in s} w_i [1; c_i] y_i',

over the cells s of one GROUP BY (assignment arm, received arm): (1 + q)(2 + q)/2 + (1 + q)K
sums per cell instead of p(p + 1)/2 + pK ungrouped. Z'WX follows the same way with the
received arm (or, with a dose d, from the sums of :math:`w d [1; c][1; c]'`). Per-cluster
cross-products for CR3 are the same query grouped by cluster too.

The first scan (``add_metric``, :meth:`EngineExperiment.first_pass`) computes these cell
sums about 0, before the means are known, together with the numbers of the metric and
covariate checks; with the means read from the same cells, :math:`[1; x - \mu] = L [1; x]`
turns them into the centred sums (:math:`L M_s L'`) of the metrics observed on every row,
and gives the covariates' Gram matrix, with no second scan. The re-centring is exact
algebra whose rounding grows with :math:`\bar x^2 / \mathrm{var}(x)` within a cell; above
:data:`RECENTRE_LIMIT` pass 1 runs again, centred.

Pass 2: the scores at the fitted coefficients
---------------------------------------------
For contrasts D of a fit, row i enters the sandwich through :math:`u_i = w_i z_i'\Pi A D'`
times its residuals :math:`e_{ik} = y_{ik} - x_i'b_k` (:mod:`causalflow.linalg.sandwich`),
plus the influence of any estimated complier mean (:mod:`causalflow.linalg.compliers`).
With clusters (CR0 / CR1) the engine returns, per cluster, the sums of :math:`u_i y_{ik}`
and :math:`u_i x_i` (plus the complier-mean influences), and the cluster sums of the scores
are :math:`\sum u y_k - (\sum u x)' b_k` (G x m(K + p) numbers; their residual form, G x mK,
has the meat as Gram matrix). Without clusters (HC0 / HC1) it returns the sums of pairwise
products of the m K score columns (the meat itself). CR3 needs only per-cluster
cross-products and per-cluster arm sums (no pass over scores). CR2 needs every cluster's
rows and is not served by an engine.

Examples
--------
>>> import duckdb, numpy as np
>>> rel = duckdb.sql("SELECT i % 2 AS t, (i % 2) * 0.5 + (i % 7) AS y FROM range(100) r(i)")
>>> is_engine_table(rel), is_engine_table("events/*.parquet"), is_engine_table([1, 2])
(True, True, False)
>>> table = EngineTable.of(rel)
>>> table.n_rows, table.columns
(100, ('t', 'y'))
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._optional import require
from ..design import Covariates, role_column, single_propensity_error, sorted_labels
from ..errors import DesignWarning, ValidationError
from ..linalg.srm import SampleRatioCheck, sample_ratio_test
from ..linalg.twosls import Moments
from ..validate import (
    check_metric_range,
    missing_message,
    no_variation_message,
    not_arms_message,
    outside_message,
)

__all__ = ["EngineCovariates", "EngineExperiment", "EngineTable", "is_engine_table"]

#: aggregates per query; wider requests are split into several queries
MAX_AGGREGATES = 1500
#: distinct values fetched for an arm or covariate column at most (an identifier is not an arm)
MAX_LEVELS = 10_000
#: moments summed about 0 (the first scan, :meth:`EngineExperiment.first_pass`) are re-centred
#: at the mean when, in every arm cell, each design column's squared mean is at most this
#: many times its variance: the re-centring then loses at most about this factor times the
#: float64 epsilon (2e-12); otherwise pass 1 runs again, centred
RECENTRE_LIMIT = 1e4


def _ibis():
    return require("ibis", "warehouse")


def is_engine_table(obj) -> bool:
    """True for what :class:`EngineTable` accepts: a parquet path or glob (str or path), a
    DuckDB relation, an Ibis table, a Spark DataFrame."""
    if isinstance(obj, (str, os.PathLike, EngineTable)):
        return True
    module, name = type(obj).__module__, type(obj).__name__
    if module.startswith("duckdb") and "Relation" in name:
        return True
    if module.startswith("ibis.") and name == "Table":
        return True
    return module.startswith("pyspark.sql") and name == "DataFrame"


def _progress(what: str):
    from tqdm.auto import tqdm
    return tqdm(desc=what, unit="query", disable=None, leave=False)


class _TempViews:
    """The Spark temporary views that an engine table made of a Spark DataFrame, and every
    table derived from it (joins with lookup frames, filters), query by name. They stay in
    the session's catalog while any of those tables is alive and are dropped when the last
    one is garbage-collected, so a long-lived session that analyses many experiments does
    not collect them. Not at interpreter exit: the session may be gone by then, and its
    views with it."""

    def __init__(self, session, *names: str) -> None:
        self.names = list(names)
        weakref.finalize(self, _drop_temp_views, session, self.names).atexit = False


def _drop_temp_views(session, names) -> None:
    for name in names:
        try:
            session.catalog.dropTempView(name)
        except Exception:  # noqa: BLE001 (a stopped session: nothing is left to drop)
            pass


class EngineTable:
    """An Ibis table expression and the function that runs expressions built on it.

    Attributes
    ----------
    table : ibis Table (bound to a backend, or unbound and compiled to SQL for a DuckDB
        relation or a Spark DataFrame)
    backend : "duckdb", "pyspark" or another Ibis backend name
    columns : tuple of str
    """

    def __init__(self, table, backend: str, run, lookups: dict | None = None, session=None, views=None):
        self.table = table
        self.backend = backend
        self._run = run
        self.columns = tuple(table.columns)
        self._n_rows = None
        self._lookups = {} if lookups is None else lookups  # name -> frame, for a DuckDB relation
        self._session = session  # a Spark session
        self._views = views  # _TempViews: the Spark temporary views this table and those derived from it use
        self._bar = None
        self._stats: dict = {}   # column -> ColumnStats, from one query for many columns (profile)
        self._nan_columns: set = set()  # floating columns seen to hold NaN (their MAX is NaN)
        self._levels: dict = {}  # column -> {value: rows}

    def joined(self, frame: pd.DataFrame, key, key_column: str) -> EngineTable:
        """This table inner-joined with a small frame of numbers (one row per value of
        ``key``, in the frame's column ``key_column``): each row gets its own group's numbers,
        e.g. the coefficients of its experiment. The frame travels as data: an Ibis memtable
        (bound tables), a temporary view (Spark), or a VALUES list of typed literals built by
        sqlglot (a DuckDB relation); never as text pasted into SQL."""
        ibis = _ibis()
        schema = ibis.schema({c: (key.type() if c == key_column else "float64") for c in frame.columns})
        name = f"__causalflow_lookup_{uuid.uuid4().hex}"
        if self.backend == "pyspark" and self._session is not None:
            self._session.createDataFrame(frame).createOrReplaceTempView(name)
            if self._views is not None:
                self._views.names.append(name)
            lookup = ibis.table(schema, name=name)
        elif getattr(self._run, "__name__", "") == "run_relation":  # a DuckDB relation: a VALUES CTE
            self._lookups[name] = frame
            lookup = ibis.table(schema, name=name)
        else:
            lookup = ibis.memtable(frame, schema=schema)
        joined = self.table.join(lookup, key == lookup[key_column])
        out = EngineTable(joined, self.backend, self._run, self._lookups, self._session, self._views)
        out.base = self
        return out

    @classmethod
    def of(cls, obj) -> EngineTable:
        """Wrap a parquet path / glob, a DuckDB relation, an Ibis table or a Spark DataFrame."""
        if isinstance(obj, EngineTable):
            return obj
        ibis = _ibis()
        if isinstance(obj, (str, os.PathLike)):
            duckdb = require("duckdb", "warehouse")
            try:
                relation = duckdb.connect().read_parquet(os.fspath(obj))
            except Exception as exc:  # noqa: BLE001 (duckdb's IO and parser errors, kept as the reason)
                raise ValidationError(f"data: cannot read parquet {os.fspath(obj)!r}: {exc}") from None
            return cls._relation(relation)
        module, name = type(obj).__module__, type(obj).__name__
        if module.startswith("duckdb"):
            return cls._relation(obj)
        if module.startswith("ibis."):
            try:
                backend = obj._find_backend(use_default=True).name
            except Exception:  # noqa: BLE001 (an unbound table has no backend)
                raise ValidationError("data: the Ibis table is not bound to a backend") from None
            return cls(obj, backend, lambda expr: expr.to_pandas())
        if module.startswith("pyspark.sql") and name == "DataFrame":
            require("ibis.backends.pyspark", "spark")
            ibis.pyspark  # noqa: B018 (loading the backend registers the options its SQL compiler reads)
            from ibis.backends.pyspark.datatypes import PySparkType

            view = f"__causalflow_{uuid.uuid4().hex}"
            obj.createOrReplaceTempView(view)  # a session-scoped name; the DataFrame is unchanged
            session = obj.sparkSession
            table = ibis.table(ibis.schema({f.name: PySparkType.to_ibis(f.dataType) for f in obj.schema.fields}),
                               name=view)
            return cls(table, "pyspark", lambda expr: session.sql(ibis.to_sql(expr, dialect="pyspark")).toPandas(),
                       session=session, views=_TempViews(session, view))
        raise ValidationError(f"data: expected a table, a parquet path or an engine table, got {name}")

    def where(self, predicate) -> EngineTable:
        """The rows where the Ibis boolean ``predicate`` (built on :attr:`table`) holds, on
        the same engine (a look of :func:`causalflow.monitor`: a filter on the arrival column)."""
        return EngineTable(self.table.filter(predicate), self.backend, self._run, self._lookups, self._session,
                           self._views)

    def arrival_cuts(self, arrival: str, counts) -> np.ndarray:
        """The value of column ``arrival`` at each 1-based rank in ``counts`` when the rows are
        sorted by it (one query with a window function)."""
        ibis = _ibis()
        ranked = self.table.select(a=self.table[arrival]).mutate(rank=ibis.row_number().over(order_by="a"))
        wanted = [int(c) - 1 for c in counts]  # row_number() counts from 0 in Ibis
        out = self._run(ranked.filter(ranked["rank"].isin(wanted)).order_by("rank").select("a"))
        return out["a"].to_numpy()

    @classmethod
    def _relation(cls, relation) -> EngineTable:
        ibis = _ibis()
        from ibis.backends.sql.datatypes import DuckDBType

        types = {}
        for name, dtype in zip(relation.columns, relation.types):
            try:
                types[name] = DuckDBType.from_string(str(dtype))
            except Exception:  # noqa: BLE001 (a type Ibis does not know: never a role column)
                types[name] = ibis.dtype("binary")
        view = f"__causalflow_{uuid.uuid4().hex}"
        table = ibis.table(ibis.schema(types), name=view)
        lookups: dict = {}

        def run_relation(expr):
            sql = str(ibis.to_sql(expr, dialect="duckdb"))
            used = [name for name in lookups if name in sql]
            if used:
                sql = _with_values(sql, {name: lookups[name] for name in used})
            return relation.query(view, sql).df()

        return cls(table, "duckdb", run_relation, lookups)

    # -- running ---------------------------------------------------------------------------
    def run(self, expr) -> pd.DataFrame:
        """Run one query; a progress bar counts the queries and times the last (shown on a
        terminal only, tqdm's ``disable=None``)."""
        if self._bar is None:
            self._bar = _progress(f"{self.backend} queries")
        start = time.perf_counter()
        out = self._run(expr)
        self._bar.set_postfix_str(f"last {time.perf_counter() - start:.1f} s", refresh=False)
        self._bar.update()
        return out

    def aggregate(self, values: Sequence, by: Sequence = (), where=None, source=None) -> pd.DataFrame:
        """Sums (or any reductions) ``values`` grouped by the expressions ``by``, over the
        rows where ``where`` holds (of ``source``, a table derived from this one by
        :class:`Stager`; default this table); columns ``g0..`` (groups) then ``a0..``
        (values). Wide requests run as several queries, joined on the groups."""
        table = self.table if source is None else source
        table = table if where is None else table.filter(where)
        keys = {f"g{i}": e for i, e in enumerate(by)}
        frames = []
        for start in range(0, max(len(values), 1), MAX_AGGREGATES):
            chunk = {f"a{start + i}": v for i, v in enumerate(values[start:start + MAX_AGGREGATES])}
            if not chunk:
                chunk = {"a_count": table.count()}
            expr = table.group_by(**keys).aggregate(**chunk) if keys else table.aggregate(**chunk)
            frames.append(self.run(expr))
        out = frames[0]
        for frame in frames[1:]:
            out = out.merge(frame, on=list(keys)) if keys else pd.concat([out, frame], axis=1)
        return out

    def scalars(self, values: Sequence, where=None) -> np.ndarray:
        """One row of reductions as float64 (NULL -> NaN)."""
        frame = self.aggregate(values, where=where)
        return frame[[f"a{i}" for i in range(len(values))]].to_numpy(dtype=float, na_value=np.nan)[0]

    @property
    def n_rows(self) -> int:
        if self._n_rows is None:
            self._n_rows = int(self.aggregate([_count()]).iloc[0, 0])
        return self._n_rows

    def profile(self, names: Sequence, sums: Sequence = ()) -> dict:
        """:class:`ColumnStats` of the named columns (those of the table; others are left
        out), from one scan: each validation check then reads its numbers here instead of
        scanning a column of its own; ``sums``: the columns whose sum is wanted too. Cached;
        the row count comes with the first call.

        Plain COUNT / MIN / MAX; only a floating column that holds NaN (its MAX is NaN)
        costs a second query for its NaN rows and its range without them."""
        names = [n for n in names if isinstance(n, str)]
        sums = {n for n in sums if isinstance(n, str)}
        todo = [n for n in dict.fromkeys(names) if n in self.columns and (
            n not in self._stats or (n in sums and self._stats[n].total is None and self._stats[n].low is not None))]
        if todo or self._n_rows is None:
            items, slots = self._profile_items(todo, sums)
            out = self.scalars([_count()] + items)
            self._n_rows = int(out[0])
            self._profile_store(out[None, 1:], slots)
        return {n: self._stats[n] for n in names if n in self._stats}

    def _profile_items(self, names: Sequence, sums) -> tuple[list, list]:
        """The reductions of :meth:`profile` for ``names`` and where each column's start."""
        values, slots = [], []
        for name in names:
            dtype = self.dtype(name)
            numeric = dtype.is_numeric() or dtype.is_boolean()
            items = [self.table[name].count()]
            if numeric:
                x = self.number(name)
                # a floating column's SUM is NaN iff it holds NaN (or both infinities): the
                # signal for the exact count of _profile_nan; MIN / MAX may come from metadata
                summed = name in sums or dtype.is_floating()
                items += [x.min(), x.max()] + ([x.sum()] if summed else [])
            slots.append((name, len(values), numeric, name in sums, dtype.is_floating()))
            values += items
        return values, slots

    def _profile_store(self, out: np.ndarray, slots: list) -> None:
        """Cache the :class:`ColumnStats` of :meth:`_profile_items`' reductions ``out``, one row
        per group of the query that computed them (combined here: counts and sums add up,
        the range is the widest); :attr:`_n_rows` is known."""
        n, nan = self._n_rows, []
        for name, at, numeric, summed, floating in slots:
            counts = np.nan_to_num(out[:, at])
            missing = n - int(counts.sum())
            if not numeric:
                self._stats[name] = ColumnStats(missing)
                continue
            some = counts > 0
            lows, highs = out[some, at + 1], out[some, at + 2]
            if np.isnan(highs).any() or floating and np.isnan(out[some, at + 3]).any():
                nan.append((name, summed))  # NaN values: missing, and the range without them
                continue
            low = lows.min() if some.any() else np.nan
            high = highs.max() if some.any() else np.nan
            total = float(np.nan_to_num(out[some, at + 3]).sum()) if summed else None
            self._stats[name] = ColumnStats(missing, low, high, total, bool(np.isinf(low) or np.isinf(high)))
        if nan:
            self._nan_columns.update(name for name, _ in nan)
            self._profile_nan(nan)

    def _profile_nan(self, columns: list) -> None:
        """:meth:`profile` of floating columns with NaN values: NaN counts as missing."""
        ibis = _ibis()
        values = []
        for name, _ in columns:
            x = self.table[name].cast("float64")
            valid = ibis.ifelse(self.missing(name), ibis.null("float64"), x)
            values += [self.missing(name).cast("int64").sum(), valid.min(), valid.max(), valid.sum(),
                       x.isinf().cast("int64").sum()]
        out = self.scalars(values)
        for i, (name, summed) in enumerate(columns):
            missing, low, high, total, infinite = out[5 * i:5 * i + 5]
            self._stats[name] = ColumnStats(int(missing), low, high, total if summed else None, bool(infinite))

    def stats(self, name: str) -> ColumnStats:
        """The :class:`ColumnStats` of one column (a query unless :meth:`profile` has it)."""
        return self.profile([name])[name]

    # -- columns ---------------------------------------------------------------------------
    def dtype(self, name: str):
        return self.table.schema()[name]

    def is_numeric(self, name: str) -> bool:
        """Numeric and not boolean (pandas' ``is_numeric_dtype and not is_bool_dtype``)."""
        dtype = self.dtype(name)
        return dtype.is_numeric() and not dtype.is_boolean()

    def is_bool(self, name: str) -> bool:
        return self.dtype(name).is_boolean()

    def col(self, name: str):
        return self.table[name]

    def number(self, name: str):
        """The column as float64 (booleans as 0 / 1)."""
        return self.table[name].cast("float64")

    def missing(self, name: str):
        """Rows where the column is NULL (or NaN, for floating columns; see :func:`_nan_test`)."""
        column = self.table[name]
        if self.dtype(name).is_floating():
            return column.isnull() | (_nan_test(column) if name in self._nan_columns else column.isnan())
        return column.isnull()

    def distinct(self, name: str, where=None) -> list:
        """The distinct non-missing values of a column (at most MAX_LEVELS + 1), as Python values."""
        if where is None:
            return list(self.level_counts(name))
        table = self.table.filter(where)
        column = table[name]
        expr = table.filter(column.notnull()).select(v=column).distinct().limit(MAX_LEVELS + 1)
        values = self.run(expr)["v"].tolist()
        return [_python(v) for v in values]

    def level_counts(self, name: str) -> dict:
        """{value: rows} of the distinct non-missing values of a column (at most MAX_LEVELS + 1
        of them; cached): the arm labels and their counts, or a covariate's levels, in one query."""
        if name not in self._levels:
            column = self.table[name]
            expr = self.table.filter(column.notnull()).group_by(v=column).aggregate(
                n=_count()).limit(MAX_LEVELS + 1)
            frame = self.run(expr)
            self._levels[name] = {_python(v): int(k) for v, k in zip(frame["v"].tolist(), frame["n"].tolist())}
        return self._levels[name]


@dataclass(frozen=True, slots=True)
class ColumnStats:
    """A column's numbers from :meth:`EngineTable.profile`.

    Attributes
    ----------
    missing : rows that are NULL (or NaN)
    low, high : min and max of the non-missing values as float64 (numeric and boolean
        columns; NaN when there is none; None for other types)
    total : their sum (None unless asked for)
    infinite : whether some value is +-inf
    """

    missing: int
    low: float | None = None
    high: float | None = None
    total: float | None = None
    infinite: bool = False


def _with_values(sql: str, frames: dict) -> str:
    """``sql`` with a CTE per lookup frame: ``WITH name AS (SELECT * FROM (VALUES ...) AS v(cols))``,
    built as a sqlglot tree of typed literals (numbers cast to DOUBLE), not as text."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb")
    for name, frame in frames.items():
        rows = []
        for record in frame.itertuples(index=False):
            rows.append(exp.Tuple(expressions=[
                exp.cast(exp.convert(float(v)), "double") if isinstance(v, (float, np.floating))
                else exp.convert(_python(v)) for v in record]))
        values = exp.Values(expressions=rows, alias=exp.TableAlias(
            this=exp.to_identifier("v"), columns=[exp.to_identifier(c, quoted=True) for c in frame.columns]))
        tree = tree.with_(exp.to_identifier(name, quoted=True), as_=exp.select("*").from_(values), copy=False)
    return tree.sql(dialect="duckdb")


class Stager:
    """Projects intermediate columns once per row (``mutate``), so that expressions used
    many times (the centred covariates, a contrast's row influence, a metric's residual)
    are computed once, not once per aggregate that uses them."""

    def __init__(self, table):
        self.table = table
        self._count = 0

    def __call__(self, exprs: Sequence) -> list:
        if not exprs:
            return []
        names = [f"__causalflow_v{self._count + i}" for i in range(len(exprs))]
        self._count += len(exprs)
        self.table = self.table.mutate(**dict(zip(names, exprs)))
        return [self.table[name] for name in names]


def _python(value):
    """A value fetched from an engine as a plain Python value (numpy scalars unwrapped)."""
    return value.item() if isinstance(value, np.generic) else value


def _count():
    """COUNT(*) of the table being aggregated (a deferred expression, so it binds to the
    filtered table of the query)."""
    return _ibis()._.count()


def _literal(value):
    ibis = _ibis()
    return ibis.literal(value)


# -- condition_on: the parsed tree compiled to an Ibis expression -----------------------------------
def compile_condition(cond, columns: Mapping):
    """The Ibis boolean expression of a parsed :class:`~causalflow.expr.Condition` over
    ``columns`` (name -> Ibis column). Literals become Ibis literals (quoted by the
    compiler), so a value such as ``"x' OR 1=1 --"`` is a string to compare with, never SQL.

    >>> import ibis
    >>> from causalflow.expr import parse_condition
    >>> t = ibis.table({"cat": "string", "x": "float64"}, name="t")
    >>> e = compile_condition(parse_condition("cat == \\"x' OR 1=1 --\\" and x > 1"), {"cat": t.cat, "x": t.x})
    >>> "'x'' OR 1=1 --'" in ibis.to_sql(t.filter(e), dialect="duckdb")
    True
    """
    import ast

    ibis = _ibis()
    missing = sorted(cond.columns - set(columns))
    if missing:
        raise ValidationError(f"condition_on expression {cond.text!r}: unknown column {missing[0]!r}; "
                              f"available: {sorted(columns)}")
    compare = {ast.Eq: "__eq__", ast.NotEq: "__ne__", ast.Lt: "__lt__", ast.LtE: "__le__",
               ast.Gt: "__gt__", ast.GtE: "__ge__"}
    arith = {ast.Add: "__add__", ast.Sub: "__sub__", ast.Mult: "__mul__", ast.Div: "__truediv__",
             ast.Mod: "__mod__", ast.Pow: "__pow__"}

    def fail(problem):
        return ValidationError(f"condition_on expression {cond.text!r}: {problem}")

    def lit(node):
        if isinstance(node, ast.Constant):
            return node.value
        value = lit(node.operand)
        return -value if isinstance(node.op, ast.USub) else value

    def value(node):
        if isinstance(node, ast.BoolOp):
            parts = [boolean(value(v)) for v in node.values]
            out = parts[0]
            for part in parts[1:]:
                out = (out & part) if isinstance(node.op, ast.And) else (out | part)
            return out
        if isinstance(node, ast.UnaryOp):
            operand = value(node.operand)
            if isinstance(node.op, ast.Not):
                return ~boolean(operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Compare):
            left, out = value(node.left), None
            for op, right_node in zip(node.ops, node.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    result = left.isin([lit(e) for e in right_node.elts])
                    result = ~result if isinstance(op, ast.NotIn) else result
                    right = None
                else:
                    right = value(right_node)
                    result = getattr(_expr(left), compare[type(op)])(right)
                out = result if out is None else out & result
                left = right
            return out
        if isinstance(node, ast.BinOp):
            left, right = value(node.left), value(node.right)
            return getattr(_expr(left), arith[type(node.op)])(right)
        if isinstance(node, ast.Name):
            return columns[node.id]
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
                return ibis.literal(float(node.value), type="float64")
            return ibis.literal(node.value)
        raise fail("unsupported expression")

    def boolean(expr):
        if not _expr(expr).type().is_boolean():
            raise fail("and/or/not need true/false operands (comparisons)")
        return expr

    try:
        out = value(cond._tree.body)
    except ValidationError:
        raise
    except Exception as exc:  # noqa: BLE001 (Ibis type errors: comparing text with numbers, ...)
        raise fail(f"cannot be computed in the engine: {exc}") from None
    if not _expr(out).type().is_boolean():
        raise fail("does not evaluate to true/false (use a comparison)")
    return out


def _expr(value):
    return value if hasattr(value, "type") else _literal(value)


# -- covariates --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EngineCovariates(Covariates):
    """Covariates of an engine table: names and levels only (no arrays: ``numeric`` holds
    (name, None), ``categorical`` (name, None, levels)). The engine builds the design
    columns as expressions (:meth:`EngineExperiment.design_columns`)."""

    def original(self) -> dict:
        return {}

    def raw(self, rows, out=None):  # pragma: no cover - never called for an engine
        raise ValidationError("the covariates of an engine table stay in the engine")

    def means(self, rows, weights):  # pragma: no cover - never called for an engine
        raise ValidationError("the covariates of an engine table stay in the engine")


# -- the experiment in the engine ---------------------------------------------------------------
def _selector(code: int, n_arms: int, q: int, dose: bool = False) -> np.ndarray:
    """P (p x (1 + q)): where [1; c] of a row of arm ``code`` lands in [1, A, c, A x c]; with
    ``dose`` the arm-1 part only (the columns the dose multiplies)."""
    p = (1 + n_arms) * (1 + q)
    P = np.zeros((p, 1 + q))
    if not dose:
        P[0, 0] = 1.0
        P[1 + n_arms + np.arange(q), 1 + np.arange(q)] = 1.0
    if code > 0:
        P[code, 0] = 1.0
        start = 1 + n_arms + q * code
        P[start + np.arange(q), 1 + np.arange(q)] = 1.0
    return P


def _sym(upper: np.ndarray, size: int) -> np.ndarray:
    """A symmetric matrix from its upper triangle (row-major order)."""
    out = np.zeros((size, size))
    out[np.triu_indices(size)] = upper
    return out + np.triu(out, 1).T


@dataclass
class EngineExperiment:
    """The roles of an experiment on an engine table, as expressions, and its queries.

    Attributes
    ----------
    table : EngineTable
    arms : tuple, control first; n_arms : J
    assign : int expression, the assignment (instrument) arm code of a row (0 = control)
    arm : int expression, the code of ``intent_to_treat`` (allocation, sample ratio)
    dose : float expression of the treatment received (two arms), or None
    treated : int expression of the received arm (several arms), or None
    weights : float expression (inverse propensities), or None
    cluster_by : list of column names, or None; n_clusters : G
    n : rows
    """

    table: EngineTable
    arms: tuple
    assign: object
    arm: object
    dose: object = None
    treated: object = None
    weights: object = None
    cluster_by: list | None = None
    n_clusters: int | None = None
    n: int = 0
    intent: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_arms(self) -> int:
        return len(self.arms) - 1

    @property
    def iv(self) -> bool:
        return self.dose is not None or self.treated is not None

    @property
    def w(self):
        return self.weights if self.weights is not None else _literal(1.0)

    def total(self, expr):
        """SUM of an expression; a constant (no weights, the intercept) sums to count * value."""
        if isinstance(expr, _ibis().expr.types.Column):
            return expr.sum()
        return _count().cast("float64") * expr

    def take_up(self, j: int):
        """Treatment received of arm j (float): the dose, or the indicator of receiving arm j."""
        if self.dose is not None:
            return self.dose
        received = self.assign if self.treated is None else self.treated
        return (received == j).cast("float64")

    def untreated(self):
        if self.dose is not None:
            return 1.0 - self.dose
        received = self.assign if self.treated is None else self.treated
        return (received == 0).cast("float64")

    def clusters(self) -> list:
        return [self.table.col(c) for c in self.cluster_by]

    # -- covariates, metrics -------------------------------------------------------------------
    def raw_columns(self, cov: Covariates) -> list:
        """Uncentred design columns (numbers, then level indicators) as float expressions."""
        out = [self.table.number(name) for name, _ in cov.numeric]
        for name, _, levels in cov.categorical:
            column = self.table.col(name)
            out += [(column == _literal(level)).cast("float64") for level in levels[1:]]
        return out

    def design_columns(self, cov: Covariates, mu) -> list:
        """Centred design columns; ``mu`` holds numbers, or expressions (a per-group lookup)."""
        return [c - (m if hasattr(m, "type") else float(m)) for c, m in zip(self.raw_columns(cov), mu)]

    def complete(self, metrics: Sequence[str]):
        """Rows where every metric of a group is observed (None: no filter)."""
        out = None
        for m in metrics:
            part = ~self.table.missing(m)
            out = part if out is None else out & part
        return out

    def means(self, cov: Covariates, where, clusters: bool = True) -> tuple[np.ndarray, int, float, int | None]:
        """Weighted means of the design columns over ``where``, the rows, the total weight and
        (with ``clusters``) the clusters there (None without clusters)."""
        sums = None
        early = self._early_cells(cov, ()) if where is None else None
        if early is not None:  # the cells of the first scan: sums of w, w x over all rows
            r = 1 + cov.q
            sums = early[[f"a{i}" for i in range(1 + r)]].to_numpy(dtype=float).sum(axis=0)
        if sums is None and where is None and self.weights is None:
            raw = self._raw_sums(cov)
            if raw is not None:
                n = self.table.n_rows
                sums = np.concatenate([[n, float(n)], raw])
        if sums is None:
            w = self.w
            values = [_count(), self.total(w)] + [(w * c).sum() for c in self.raw_columns(cov)]
            sums = self.table.scalars(values, where)
        n_clusters = None
        if self.cluster_by and clusters:
            n_clusters = self.n_clusters if where is None and self.n_clusters else self.count_clusters(where)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums[2:] / sums[1], int(sums[0]), float(sums[1]), n_clusters

    def _raw_sums(self, cov: Covariates) -> np.ndarray | None:
        """Sums of the uncentred design columns over all rows from the cached column
        statistics and level counts (:meth:`EngineTable.profile`), or None when the
        validation queries did not leave them."""
        table, out = self.table, []
        for name, _ in cov.numeric:
            stats = table._stats.get(name)
            if stats is None or stats.missing:
                return None
            out.append(stats.total)
        for name, _, levels in cov.categorical:
            counts = table._levels.get(name)
            if counts is None:
                return None
            out += [float(counts.get(level, 0)) for level in levels[1:]]
        return np.array(out, dtype=float)

    def _column_means(self, cov: Covariates) -> np.ndarray:
        """Unweighted means of the uncentred design columns over all rows."""
        raw = self._raw_sums(cov)
        if raw is not None:
            return raw / self.table.n_rows
        return self.table.scalars([c.mean() for c in self.raw_columns(cov)])

    def count_clusters(self, where=None) -> int:
        table = self.table.table if where is None else self.table.table.filter(where)
        keys = table.select(**{f"k{i}": table[c] for i, c in enumerate(self.cluster_by)}).distinct()
        return int(self.table.run(keys.aggregate(n=keys.count()))["n"].iloc[0])

    # -- pass 1 ----------------------------------------------------------------------------------
    def _cells(self, cov: Covariates, mu, metrics: Sequence[str], where, by_cluster: bool, prefix: Sequence = (),
               extra: Sequence = ()):
        """The per-cell sums of pass 1 (see the module docstring): a frame with the cell keys
        (g0 = assignment arm, [g1 = received arm], [clusters...]) and the sums (then those of
        ``extra``, other reductions over the same rows); ``mu`` None: the design columns
        uncentred (sums about 0)."""
        q = cov.q
        stage = Stager(self.table.table)
        c = stage(self.raw_columns(cov) if mu is None else self.design_columns(cov, mu))
        one = [None] + c  # None: the intercept, a factor 1 left out of the products
        w = self.weights

        def total(*factors):
            factors = [f for f in factors if f is not None]
            if not factors:
                return _count().cast("float64")
            out = factors[0]
            for f in factors[1:]:
                out = out * f
            return out.sum()

        values = [_count()]
        values += [total(w, one[a], one[b]) for a in range(q + 1) for b in range(a, q + 1)]
        Y = [self.table.number(m) for m in metrics]
        values += [total(w, one[a], y) for a in range(q + 1) for y in Y]
        if self.dose is not None:
            values += [total(w, self.dose, one[a], one[b]) for a in range(q + 1) for b in range(a, q + 1)]
        by = list(prefix) + [self.assign] + ([self.treated] if self.treated is not None else [])
        if by_cluster:
            by += self.clusters()
        return self.table.aggregate(values + list(extra), by=by, where=where, source=stage.table)

    def _assemble(self, frame: pd.DataFrame, q: int, K: int, offset: int = 0, recentre=None) -> Moments:
        """Moments (Z'WZ, Z'WX, Z'WY) from the cell sums of :meth:`_cells` (``offset``: the
        number of prefix keys before the arm keys). ``recentre``: the means mu (q,) when the
        sums are about 0: with :math:`L = [[1, 0], [-\\mu, I]]`, :math:`[1; x - \\mu] = L [1; x]`,
        so each cell's sums become :math:`L M L'` and :math:`L \\sum [1; x] y'` (exact algebra;
        :data:`RECENTRE_LIMIT` bounds its rounding)."""
        J = self.n_arms
        p, r = (1 + J) * (1 + q), 1 + q
        tri = r * (r + 1) // 2
        zwz, zwy = np.zeros((p, p)), np.zeros((p, K))
        zwx = np.zeros((p, p)) if self.iv else None
        sums = frame[[f"a{i}" for i in range(1 + tri + r * K + (tri if self.dose is not None else 0))]] \
            .to_numpy(dtype=float, na_value=0.0)
        L = None
        if recentre is not None:
            L = np.eye(r)
            L[1:, 0] = -np.asarray(recentre, dtype=float)
        n = int(sums[:, 0].sum())
        for row, a in enumerate(frame[f"g{offset}"].to_numpy(dtype=np.int64)):
            P = _selector(int(a), J, q)
            M = _sym(sums[row, 1:1 + tri], r)
            Y = sums[row, 1 + tri:1 + tri + r * K].reshape(r, K)
            if L is not None:
                M, Y = L @ M @ L.T, L @ Y
            zwz += P @ M @ P.T
            zwy += P @ Y
            if self.treated is not None:
                zwx += P @ M @ _selector(int(frame[f"g{offset + 1}"].iloc[row]), J, q).T
            elif self.dose is not None:
                Md = _sym(sums[row, 1 + tri + r * K:], r)
                if L is not None:
                    Md = L @ Md @ L.T
                zwx += P @ M @ _selector(0, J, q).T + P @ Md @ _selector(1, J, q, dose=True).T
        return Moments(0.5 * (zwz + zwz.T), zwx, zwy, n)

    def moments(self, cov: Covariates, mu: np.ndarray, metrics: Sequence[str], where) -> Moments:
        """Pass 1: the moments of one metric group (covariates centred at ``mu``), from the
        first scan's cells (:meth:`first_pass`) when they hold the group, else one query."""
        early = self._early_cells(cov, metrics) if where is None else None
        if early is not None:
            return self._assemble(early, cov.q, len(metrics), recentre=mu)
        return self._assemble(self._cells(cov, mu, metrics, where, False), cov.q, len(metrics))

    # -- the first scan: validation numbers and pass 1 together ------------------------------------
    def first_pass(self, cov: Covariates, metrics: Sequence[str]) -> None:
        """One scan for ``add_metric``: the column statistics of the metrics and covariates
        (:meth:`EngineTable.profile`, which the checks read) and the pass-1 cell sums of all
        rows about 0 (not yet knowing the means). The fit of the metrics observed on every
        row, the covariates' means and their Gram matrix are then read from these cells,
        re-centred (:meth:`_assemble`), instead of scanning again."""
        table = self.table
        names = list(dict.fromkeys(list(metrics) + list(cov.sources)))
        items, slots = table._profile_items(names, {name for name, _ in cov.numeric})
        frame = self._cells(cov, None, metrics, None, False, extra=items)
        width = len(frame.columns) - len(items) - (2 if self.treated is not None else 1)
        out = frame[[f"a{width + i}" for i in range(len(items))]].to_numpy(dtype=float, na_value=np.nan)
        table._n_rows = int(frame["a0"].sum())
        table._profile_store(out, slots)
        self._cache["first_pass"] = (cov, tuple(metrics), frame, self._recentrable(frame, cov.q))

    def _recentrable(self, frame: pd.DataFrame, q: int) -> bool:
        """Whether every cell's sums about 0 can be re-centred within :data:`RECENTRE_LIMIT`."""
        r = 1 + q
        tri = r * (r + 1) // 2
        sums = frame[[f"a{i}" for i in range(1, 1 + tri)]].to_numpy(dtype=float, na_value=np.nan)
        for row in sums:
            M = _sym(row, r)
            if not np.all(np.isfinite(M)) or M[0, 0] <= 0:
                return False
            mean = M[0, 1:] / M[0, 0]
            var = np.diag(M)[1:] / M[0, 0] - mean ** 2
            if np.any(var <= 0) or np.any(mean ** 2 > RECENTRE_LIMIT * var):
                return False
        return True

    def _early_cells(self, cov: Covariates, metrics: Sequence[str]) -> pd.DataFrame | None:
        """The first scan's cells restricted to ``metrics`` (columns renumbered as
        :meth:`_cells` numbers them), or None when it did not cover them or cannot be
        re-centred."""
        cached = self._cache.get("first_pass")
        if cached is None:
            return None
        cached_cov, cached_metrics, frame, ok = cached
        if not ok or cached_cov != cov or any(m not in cached_metrics for m in metrics):
            return None
        r, K = 1 + cov.q, len(cached_metrics)
        tri = r * (r + 1) // 2
        keep = [cached_metrics.index(m) for m in metrics]
        take = list(range(1 + tri)) + [1 + tri + a * K + k for a in range(r) for k in keep]
        if self.dose is not None:
            take += list(range(1 + tri + r * K, 1 + tri + r * K + tri))
        keys = [c for c in frame.columns if c.startswith("g")]
        out = frame[keys + [f"a{i}" for i in take]].copy()
        out.columns = keys + [f"a{i}" for i in range(len(take))]
        return out

    def cluster_index(self) -> pd.MultiIndex:
        """Every cluster's key, in a fixed order (codes 0..G-1 of the per-cluster arrays)."""
        if "clusters" not in self._cache:
            table = self.table.table
            keys = {f"g{i}": table[c] for i, c in enumerate(self.cluster_by)}
            frame = self.table.run(table.select(**keys).distinct())
            frame = frame.sort_values(list(keys), kind="stable", ignore_index=True)
            self._cache["clusters"] = pd.MultiIndex.from_frame(frame)
        return self._cache["clusters"]

    def _cluster_codes(self, frame: pd.DataFrame) -> np.ndarray:
        keys = [f"g{i}" for i in range(len(self.cluster_by))]
        index = self.cluster_index()
        return index.get_indexer(pd.MultiIndex.from_frame(frame[keys].set_axis(index.names, axis=1)))

    def cluster_moments(self, cov: Covariates, mu: np.ndarray, metrics: Sequence[str], where):
        """Per-cluster cross-products (G, p, p), (G, p, p) or None, (G, p, K), (G,) for CR3."""
        frame = self._cells(cov, mu, metrics, where, True)
        return self.cluster_moments_of(frame, cov.q, len(metrics), self.cluster_index())

    def cluster_moments_of(self, frame: pd.DataFrame, q: int, K: int, index: pd.MultiIndex, offset: int = 0):
        """:class:`~causalflow.linalg.small_sample.ClusterCrossProducts` from the cell sums of
        :meth:`_cells` by cluster, in the order of ``index`` (the clusters' keys)."""
        from ..linalg.small_sample import ClusterCrossProducts

        shift = offset + (2 if self.treated is not None else 1)
        keys = frame[[f"g{i}" for i in range(shift, shift + len(self.cluster_by))]]
        codes = index.get_indexer(pd.MultiIndex.from_frame(keys.set_axis(index.names, axis=1)))
        G = len(index)
        p = (1 + self.n_arms) * (1 + q)
        zwz, zwy, n = np.zeros((G, p, p)), np.zeros((G, p, K)), np.zeros(G, dtype=np.int64)
        zwx = np.zeros((G, p, p)) if self.iv else None
        for g, rows in pd.Series(np.arange(len(frame))).groupby(codes):
            m = self._assemble(frame.iloc[rows.to_numpy()], q, K, offset)
            zwz[g], zwy[g], n[g] = m.zwz, m.zwy, m.n
            if zwx is not None:
                zwx[g] = m.zwx
        return ClusterCrossProducts(zwz, zwx, zwy, n)

    # -- pass 2 ----------------------------------------------------------------------------------
    def score_sums(self, columns: list, clustered: bool, source=None) -> np.ndarray:
        """The meat's raw material of score columns (Ibis float expressions, 0 outside their
        rows; over ``source``, a staged table, when given): clustered, the (G, M) per-cluster
        sums; otherwise the (M, M) sums of pairwise products over the rows."""
        M = len(columns)
        if clustered:
            frame = self.table.aggregate([s.sum() for s in columns], by=self.clusters(), source=source)
            return frame[[f"a{i}" for i in range(M)]].to_numpy(dtype=float, na_value=0.0)
        # the score columns are projected once, then multiplied pairwise (each product would
        # otherwise repeat both columns' expressions)
        names = [f"__causalflow_s{i}" for i in range(M)]
        scored = (self.table.table if source is None else source).mutate(**dict(zip(names, columns)))
        pairs = [(a, b) for a in range(M) for b in range(a, M)]
        sums = EngineTable(scored, self.table.backend, self.table._run).scalars(
            [(scored[names[a]] * scored[names[b]]).sum() for a, b in pairs])
        out = np.zeros((M, M))
        index = np.array(pairs).reshape(-1, 2)
        out[index[:, 0], index[:, 1]] = sums
        out[index[:, 1], index[:, 0]] = sums
        return np.nan_to_num(out)

    def arm_sums(self, V: list, T, in_arm, in_control, by_cluster: bool = False):
        """:func:`causalflow.linalg.compliers.arm_sums` (2, 2 + L) in the engine, or per cluster
        (G, 2, 2 + L) in the order of :meth:`cluster_index`."""
        w = self.w
        parts = [w, w * T] + [w * v for v in V]
        values = [(member.cast("float64") * x).sum() for member in (in_arm, in_control) for x in parts]
        L2 = len(parts)
        if not by_cluster:
            return np.nan_to_num(self.table.scalars(values)).reshape(2, L2)
        frame = self.table.aggregate(values, by=self.clusters())
        codes = self._cluster_codes(frame)
        out = np.zeros((len(self.cluster_index()), 2, L2))
        out[codes] = frame[[f"a{i}" for i in range(len(values))]].to_numpy(
            dtype=float, na_value=0.0).reshape(-1, 2, L2)
        return out

    def covariate_gram(self, cov: Covariates) -> np.ndarray:
        """(q, q) Gram matrix of the design columns centred at their unweighted mean over all
        rows (:meth:`MetricSpec._check_covariates`): means first, then the centred sums."""
        early = self._early_cells(cov, ()) if self.weights is None else None
        if early is not None:  # the first scan's cells, summed and re-centred at the means
            r = 1 + cov.q
            tri = r * (r + 1) // 2
            M = _sym(early[[f"a{i}" for i in range(1, 1 + tri)]].to_numpy(dtype=float).sum(axis=0), r)
            L = np.eye(r)
            L[1:, 0] = -M[0, 1:] / M[0, 0]
            return (L @ M @ L.T)[1:, 1:]
        raw = self.raw_columns(cov)
        mean = self._column_means(cov)
        c = [x - float(m) for x, m in zip(raw, mean)]
        q = len(c)
        return _sym(self.table.scalars([(c[a] * c[b]).sum() for a in range(q) for b in range(a, q)]), q)

    def within_arm_sums(self, cov: Covariates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per assignment arm: rows, sums and cross-products of the covariates centred at their
        (unweighted) overall mean, for :meth:`MetricSpec._check_within_arms`."""
        raw = self.raw_columns(cov)
        q = len(raw)
        mean = self._column_means(cov)
        c = [x - float(m) for x, m in zip(raw, mean)]
        values = [_count()] + [x.sum() for x in c]
        values += [(c[a] * c[b]).sum() for a in range(q) for b in range(a, q)]
        frame = self.table.aggregate(values, by=[self.assign])
        J1 = len(self.arms)
        count, sums, cross = np.zeros(J1), np.zeros((J1, q)), np.zeros((J1, q, q))
        data = frame[[f"a{i}" for i in range(len(values))]].to_numpy(dtype=float)
        for row, j in enumerate(frame["g0"].to_numpy(dtype=np.int64)):
            count[j], sums[j] = data[row, 0], data[row, 1:1 + q]
            cross[j] = _sym(data[row, 1 + q:], q)
        return count, sums, cross

    # -- the design record -----------------------------------------------------------------------
    def describe(self):
        """Arm counts, compliance rate and complier shares (like :meth:`ExperimentData._describe`)."""
        J1 = len(self.arms)
        counts = np.zeros(J1, dtype=np.int64)
        levels = self.table._levels.get(self.intent)
        if levels is not None and self.table.stats(self.intent).missing == 0 and set(levels) == set(self.arms):
            counts[:] = [levels[a] for a in self.arms]  # the arm labels' counts, from reading the arms
        else:
            frame = self.table.aggregate([_count()], by=[self.arm])
            counts[frame["g0"].to_numpy(dtype=np.int64)] = frame["a0"].to_numpy(dtype=np.int64)
        compliance, complier_share = None, None
        if self.dose is not None:
            enc = (self.assign == 1).cast("float64")
            s = self.table.scalars([enc.sum(), (enc * self.dose).sum(), self.dose.sum(), _count()])
            compliance = float(s[1] / s[0] - (s[2] - s[1]) / (s[3] - s[0]))
        elif self.treated is not None:
            compliance = float(self.table.scalars([(self.treated == self.assign).cast("float64").mean()])[0])
        if self.iv:
            complier_share = {}
            w = self.w
            for j, arm in enumerate(self.arms[1:], start=1):
                took = self.take_up(j)
                s = self.table.scalars([((self.assign == z).cast("float64") * w * x).sum()
                                        for z in (j, 0) for x in (_literal(1.0), took)])
                complier_share[arm] = float(s[1] / s[0] - s[3] / s[2])
        return counts, compliance, complier_share

    def cluster_arm_counts(self) -> np.ndarray:
        """Clusters per arm (a cluster's arm: its smallest arm code)."""
        table = self.table.table
        per = table.group_by(**{f"k{i}": table[c] for i, c in enumerate(self.cluster_by)}).aggregate(a=self.arm.min())
        frame = self.table.run(per.group_by("a").aggregate(n=_ibis()._.count()))
        out = np.zeros(len(self.arms), dtype=np.int64)
        out[frame["a"].to_numpy(dtype=np.int64)] = frame["n"].to_numpy(dtype=np.int64)
        return out

    def sample_ratio(self, shares, source: str, threshold: float, counts: np.ndarray) -> SampleRatioCheck:
        arms = tuple(self.arms)
        units = sample_ratio_test(counts, shares, arms=arms, level="units", threshold=threshold)
        clusters = None
        if self.cluster_by:
            clusters = sample_ratio_test(self.cluster_arm_counts(), shares, arms=arms, level="clusters",
                                         threshold=threshold)
        return SampleRatioCheck(units=units, clusters=clusters, expected_source=source)


# -- validation: ExperimentData on an engine table ----------------------------------------------
def _nan_test(column):
    """``isnan(coalesce(x, random()))``: the NaN rows of a floating column (``random()`` is never
    NaN and stands only where x is NULL). DuckDB 2.0 folds a plain ``isnan(x)`` to false, and
    answers MIN / MAX, from a parquet file's column statistics, which leave NaN out; a NaN
    stored in parquet (not NULL) would then count as a value where pandas reports it missing.
    :meth:`EngineTable.profile` finds such columns by their SUM (NaN iff a value is NaN, or
    both infinities occur), then counts their NaN rows with this test, which
    :meth:`EngineTable.missing` uses for them from then on."""
    return column.coalesce(_ibis().random()).isnan()


def check_column(table: EngineTable, name, argument: str) -> None:
    """:func:`causalflow.data._column` in the engine: a name, present, without missing values."""
    if not isinstance(name, str):
        raise ValidationError(f"{argument}: expected a column name (str), got {name!r}")
    if name not in table.columns:
        raise ValidationError(f"{argument}: column {name!r} is not in the data; "
                              f"columns: {list(map(str, table.columns))[:30]}")
    missing = table.stats(name).missing
    if missing:
        raise ValidationError(missing_message(argument, name, missing))


def arm_code(table: EngineTable, name: str, arms: tuple):
    """The position of a column's value in ``arms`` (-1 when it is not an arm)."""
    ibis = _ibis()
    column = table.col(name)
    return ibis.cases(*[(column == _literal(a), j) for j, a in enumerate(arms)], else_=-1)


def probability(table: EngineTable, name, argument: str):
    """A numeric column without missing values in (0, 1) (:func:`causalflow.data._probability_column`)."""
    check_column(table, name, argument)
    if not table.is_numeric(name):
        raise ValidationError(f"{argument}: column {name!r} is not numeric")
    p = table.number(name)
    stats = table.stats(name)  # no missing values (checked above): outside (0, 1) iff min <= 0 or max >= 1
    low, high = stats.low, stats.high
    if low <= 0 or high >= 1:
        raise ValidationError(outside_message(argument, name, low, high))
    return p


def read_experiment(table: EngineTable, data, propensity, pick_control, arm_mapping, mapping_of_columns):
    """Validate the roles of ``data`` (an :class:`~causalflow.data.ExperimentData` being
    built, holding the role names) in the engine; set its attributes like the in-memory
    constructor does and return the :class:`EngineExperiment`.

    ``pick_control``, ``arm_mapping`` and ``mapping_of_columns`` are the in-memory
    constructor's own helpers, so the choice of the control arm and the messages are shared.
    """
    intent = data.intent_to_treat
    # the row count and every role column's missing values and range: one scan
    roles = [intent, data.treated, data.instrument, *(data.cluster_by or [])]
    roles += [propensity] if isinstance(propensity, str) else (
        list(propensity.values()) if isinstance(propensity, Mapping) else [])
    table.profile([r for r in roles if isinstance(r, str)])
    n = table.n_rows
    if n < 2:
        raise ValidationError(f"data: needs at least 2 rows, got {n}")
    check_column(table, intent, "intent_to_treat")
    labels = table.distinct(intent)
    if len(labels) < 2:
        raise ValidationError(f"intent_to_treat: column {intent!r} has a single arm "
                              f"({labels[0]!r}); an experiment needs at least two")
    labels = sorted_labels(labels)
    control = pick_control(labels, data.control_arg)
    arms = tuple([control] + [a for a in labels if a != control])
    data.arms, data.n_arms = arms, len(arms) - 1  # the mapping checks of propensity read them
    code = arm_code(table, intent, arms)
    exp = EngineExperiment(table, arms, assign=code, arm=code, n=n, intent=intent)
    J = len(arms) - 1

    if data.treated is not None and data.treated != intent:
        _read_treated(table, exp, data.treated, J)
    if data.instrument is not None and data.instrument != intent:
        check_column(table, data.instrument, "instrument")
        inst = _label_codes(table, data.instrument, arms, intent, "instrument")
        present = table.aggregate([_count()], by=[inst])["g0"].astype(int).tolist()
        absent = [a for j, a in enumerate(arms) if j not in present]
        if absent:
            raise ValidationError(f"instrument: column {data.instrument!r} never takes the arm(s) {absent} "
                                  f"of {intent!r}; every arm needs its own instrument rows")
        differs = int(table.scalars([(inst != code).cast("int64").sum()])[0])
        if differs:
            if exp.dose is None and exp.treated is None:
                if J == 1:
                    exp.dose = code.cast("float64")
                else:
                    exp.treated = code
            exp.assign = inst

    expected = None
    if propensity is not None:
        expected = _read_propensity(table, exp, propensity, data, arm_mapping, mapping_of_columns)

    if data.cluster_by is not None:
        if not data.cluster_by:
            raise ValidationError("cluster_by: empty list of columns")
        for c in data.cluster_by:
            check_column(table, c, "cluster_by")
        exp.cluster_by = list(data.cluster_by)
        t = table.table
        per = t.group_by(**{f"k{i}": t[c] for i, c in enumerate(exp.cluster_by)}).aggregate(
            lo=exp.arm.min(), hi=exp.arm.max())
        # the clusters and those with more than one assigned arm: one query
        counts = table.run(per.aggregate(n=per.count(), mixed=(per.lo != per.hi).cast("int64").sum()))
        G, mixed = int(counts["n"].iloc[0]), int(counts["mixed"].iloc[0])
        if G < 2:
            raise ValidationError(f"cluster_by: {data.cluster_by} defines a single cluster")
        exp.n_clusters = G
        if mixed:
            warnings.warn(f"cluster_by {data.cluster_by}: {mixed} of {G} clusters contain "
                          "more than one assigned arm; is cluster_by the unit of randomisation?",
                          DesignWarning, stacklevel=4)
    return exp, control, expected


def _label_codes(table: EngineTable, name: str, arms: tuple, intent: str, argument: str):
    """Arm codes of a column of arm labels, which must all be arms and vary."""
    codes = arm_code(table, name, arms)
    bad, low, high = table.scalars([(codes < 0).cast("int64").sum(), codes.min(), codes.max()])
    if bad:
        raise ValidationError(not_arms_message(argument, name, intent, arms))
    if low == high:
        raise ValidationError(no_variation_message(argument, name))
    return codes


def _read_treated(table: EngineTable, exp: EngineExperiment, name: str, J: int) -> None:
    check_column(table, name, "treated")
    if J == 1:
        numeric = table.is_numeric(name) or table.is_bool(name)
        dose = table.number(name) if numeric else None
        low = high = None
        if numeric:
            low, high = table.stats(name).low, table.stats(name).high
        if dose is None or low < 0 or high > 1:
            codes = arm_code(table, name, exp.arms)
            bad = int(table.scalars([(codes < 0).cast("int64").sum()])[0])
            if not numeric and bad:
                raise ValidationError(f"treated: column {name!r} must be numeric in [0, 1] or hold the "
                                      f"arm labels {list(exp.arms)} of {exp.intent!r}")
            if not bad:
                dose = codes.cast("float64")
                low, high = table.scalars([dose.min(), dose.max()])
        if low < 0 or high > 1:
            raise ValidationError(outside_message("treated", name, low, high, "[0, 1]"))
        if high == low:
            raise ValidationError(no_variation_message("treated", name, low))
        differs = int(table.scalars([(dose != exp.arm.cast("float64")).cast("int64").sum()])[0])
        if differs:
            exp.dose = dose
        return
    codes = _label_codes(table, name, exp.arms, exp.intent, "treated")
    if int(table.scalars([(codes != exp.arm).cast("int64").sum()])[0]):
        exp.treated = codes


def _read_propensity(table, exp, propensity, data, arm_mapping, mapping_of_columns):
    """Weights (per-unit probabilities) as an expression, or the expected allocation."""
    ibis = _ibis()
    J = exp.n_arms
    if isinstance(propensity, str):
        if J != 1:
            raise single_propensity_error(propensity, data.intent_to_treat, exp.arms)
        p = probability(table, propensity, "propensity")
        own = ibis.cases((exp.assign == 1, p), else_=1.0 - p)
        exp.weights = 1.0 / own
        data.propensity_columns = (propensity,)
        return None
    if isinstance(propensity, Mapping):
        if mapping_of_columns(propensity):
            names = arm_mapping(propensity, "a column")
            columns = [probability(table, name, f"propensity[{arm!r}]") for arm, name in names.items()]
            own = ibis.cases(*[(exp.assign == j, c) for j, c in enumerate(columns)], else_=1.0)
            exp.weights = 1.0 / own
            total = columns[0]
            for c in columns[1:]:
                total = total + c
            off = int(table.scalars([((total - 1.0).abs() > 1e-6).cast("int64").sum()])[0])
            if off:
                warnings.warn(
                    f"propensity: the probabilities of the arms' columns {list(names.values())} do not sum "
                    f"to 1 on {off} of {exp.n} rows; the weights use each row's own arm's probability only, "
                    "so the fit goes ahead. Rounded logs, or an arm the policy could draw but no unit here "
                    "got, explain a small or a below-1 sum; otherwise check the columns",
                    DesignWarning, stacklevel=5)
            data.propensity_columns = tuple(dict.fromkeys(names.values()))
            return None
        return "memory"  # planned shares: the in-memory checks apply (no data involved)
    return "memory"


def read_metrics(exp: EngineExperiment, data, y, covariates) -> tuple[tuple, EngineCovariates]:
    """:meth:`MetricSpec.build` in the engine: the metric names and the covariates, checked
    with the in-memory messages (roles, numeric metrics, missing and constant covariates,
    collinearity)."""
    from ..validate import column_names

    table = exp.table
    metrics = column_names(y, "y")
    if not metrics:
        raise ValidationError("y: name at least one metric column")
    try:  # the numbers of every metric and covariate check (missing values, ranges): one scan
        listed = column_names(covariates, "exogenous_covariates")
    except ValidationError:
        listed = []  # raised again, in its turn, below
    _first_scan(exp, metrics, listed)
    roles = data.column_roles
    frame = _Columns(table)
    for name in metrics:
        role_column(frame, name, "y", roles, "a metric")
        _check_metric(table, name)
    if len(set(metrics)) != len(metrics):
        raise ValidationError(f"y: a metric is listed twice in {metrics}")
    roles.update({m: "metric" for m in metrics})
    if isinstance(covariates, str) and covariates not in table.columns:
        raise ValidationError(f"exogenous_covariates: {covariates!r} is not a column; formulas are computed in "
                              "memory only: on an engine table list the columns (numbers, or text / boolean "
                              "columns that become level indicators)")
    cov = _read_covariates(exp, column_names(covariates, "exogenous_covariates"), roles)
    p = (1 + exp.n_arms) * (1 + cov.q)
    if p >= exp.n:
        levels = sorted(((len(lv), name) for name, _, lv in cov.categorical), reverse=True)[:3]
        raise ValidationError(
            f"exogenous_covariates: {cov.q} design columns interacted with {exp.n_arms + 1} arms give "
            f"{p} parameters for {exp.n} rows" + (" (levels: " + ", ".join(f"{name!r} {k}" for k, name in levels)
                                                  + "; an identifier is not a covariate)" if levels else ""))
    return tuple(metrics), cov


def _first_scan(exp: EngineExperiment, metrics: list, listed: list) -> None:
    """The numbers of the metric and covariate checks, from one scan that also sums pass 1
    (:meth:`EngineExperiment.first_pass`) when the columns can enter it (names of numeric
    metrics and of covariates that are numbers or a few levels); else the column
    statistics alone (:meth:`EngineTable.profile`). No check is made here: the checks
    read these numbers in their order and raise the in-memory messages."""
    table = exp.table

    def usable(names):
        return (all(isinstance(n, str) and n in table.columns for n in names)
                and len(set(names)) == len(names))

    fused = usable(metrics) and usable(listed) and not set(metrics) & set(listed) and all(
        table.is_numeric(m) or table.is_bool(m) for m in metrics) and not any(
        table.dtype(n).is_temporal() or table.dtype(n).is_interval() for n in listed)
    numeric, categorical, names, level_names = [], [], [], []
    if fused:
        for name in listed:
            if table.is_numeric(name):
                numeric.append((name, None))
                names.append(name)
                continue
            levels = sorted_labels(table.distinct(name))
            if not 2 <= len(levels) <= MAX_LEVELS:
                fused = False
                break
            categorical.append((name, None, tuple(levels)))
            level_names.extend(f"{name}[{level}]" for level in levels[1:])
    r = 1 + len(names) + len(level_names)
    width = 1 + r * (r + 1) // 2 * (2 if exp.dose is not None else 1) + r * len(metrics) + 4 * (len(metrics) + r)
    if not fused or width > MAX_AGGREGATES:
        table.profile(list(metrics) + list(listed), sums=listed)  # the sums: the covariates' means
        return
    exp.first_pass(EngineCovariates(tuple(listed), tuple(names + level_names), tuple(numeric), tuple(categorical)),
                   metrics)


class _Columns:
    """What :func:`causalflow.design.role_column` reads of a table: its ``columns``."""

    def __init__(self, table: EngineTable):
        self.columns = table.columns


def _pandas_name(dtype) -> str:
    """The name pandas gives the column's type (messages read the same as in memory)."""
    if dtype.is_string():
        return str(pd.Series(["a"]).dtype)  # "str" with pandas 3, "object" before
    try:
        return str(dtype.to_pandas())
    except Exception:  # noqa: BLE001 (a type without a pandas counterpart)
        return str(dtype)


def _check_metric(table: EngineTable, name: str) -> None:
    """:func:`causalflow.validate.metric_values` in the engine."""
    dtype = table.dtype(name)
    if not (dtype.is_numeric() or dtype.is_boolean()):
        raise ValidationError(f"y: metric {name!r} is not numeric (dtype {_pandas_name(dtype)})")
    stats = table.stats(name)
    check_metric_range(stats.low, stats.high, name)


def _read_covariates(exp: EngineExperiment, columns: list, roles: dict) -> EngineCovariates:
    """:meth:`Covariates.from_frame` in the engine (and the collinearity check of
    :meth:`MetricSpec._check_covariates`)."""
    table = exp.table
    sources, names, level_names, numeric, categorical = [], [], [], [], []
    frame = _Columns(table)
    for name in columns:
        if name in sources:
            raise ValidationError(f"exogenous_covariates: column {name!r} is listed twice")
        role_column(frame, name, "exogenous_covariates", roles, "a covariate")
        missing = table.stats(name).missing
        if missing:
            raise ValidationError(f"exogenous_covariates: column {name!r} has {missing} "
                                  "missing values; impute them (pre-treatment) or drop the rows")
        dtype = table.dtype(name)
        if dtype.is_temporal() or dtype.is_interval():
            raise ValidationError(f"exogenous_covariates: column {name!r} holds dates or durations "
                                  f"({dtype}); convert it to a number (e.g. days since a date)")
        sources.append(name)
        if table.is_numeric(name):
            stats = table.stats(name)
            low, high = stats.low, stats.high
            if stats.infinite:
                raise ValidationError(f"exogenous_covariates: column {name!r} has infinite values")
            if max(-low, high) > 1e150:
                raise ValidationError(f"exogenous_covariates: column {name!r} has values beyond +-1e+150, "
                                      "whose squares overflow float64; rescale it")
            if high == low:
                raise ValidationError(f"exogenous_covariates: column {name!r} is constant ({low:g})")
            numeric.append((name, None))
            names.append(name)
        else:
            levels = sorted_labels(table.distinct(name))
            if len(levels) < 2:
                raise ValidationError(f"exogenous_covariates: column {name!r} is constant ({levels[0]!r})")
            categorical.append((name, None, tuple(levels)))
            level_names.extend(f"{name}[{level}]" for level in levels[1:])
    return EngineCovariates(tuple(sources), tuple(names + level_names), tuple(numeric), tuple(categorical))
