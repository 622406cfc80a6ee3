"""Design matrices, built block by block from the validated columns.

Regressors and instruments (Lin 2013; DESIGN.md):

.. math::

    X = [1, D, X_c, D \\otimes X_c], \\qquad Z = [1, A, X_c, A \\otimes X_c],

with D the received-treatment indicators (J columns), A the assignment (instrument)
indicators, and :math:`X_c` the covariates centred at their (weighted) mean over the rows
of the fit. Rows are never gathered into one n x p matrix: each pass walks row blocks.
"""

from __future__ import annotations

import ast
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import ValidationError

__all__ = ["Covariates", "DesignSource", "arm_names", "pick_control", "regressor_names"]

_BLOCK_ROWS = 1 << 15


def single_propensity_error(propensity: str, intent_to_treat, arms) -> ValidationError:
    """The error for one propensity column given to a design with more than two arms
    (in memory and in the engines alike)."""
    example = ", ".join(f"{a!r}: 'p_{a}'" for a in arms)
    return ValidationError(
        f"propensity: a single column ({propensity!r}) is the propensity score "
        f"P(assigned to treatment) of a two-arm design, but {intent_to_treat!r} has "
        f"{len(arms)} arms {list(arms)}; give a mapping arm -> column of that "
        f"arm's assignment probability, e.g. {{{example}}}")


def role_column(df: pd.DataFrame, name, argument: str, roles: dict, as_what: str) -> None:
    """Check that ``name`` is a column of ``df`` that has no other role yet."""
    if not isinstance(name, str):
        raise ValidationError(f"{argument}: expected column names, got {name!r}")
    if name not in df.columns:
        raise ValidationError(f"{argument}: column {name!r} is not in the data")
    if name in roles:
        raise ValidationError(f"{argument}: column {name!r} is the {roles[name]}, not {as_what}")


def _covariate_column(df: pd.DataFrame, name, roles: dict) -> pd.Series:
    """A covariate column, checked: a column without another role, no missing values, no dates."""
    role_column(df, name, "exogenous_covariates", roles, "a covariate")
    series = df[name]
    if series.isna().any():
        raise ValidationError(f"exogenous_covariates: column {name!r} has {int(series.isna().sum())} "
                              "missing values; impute them (pre-treatment) or drop the rows")
    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
        raise ValidationError(f"exogenous_covariates: column {name!r} holds dates or durations "
                              f"({series.dtype}); convert it to a number (e.g. days since a date)")
    return series


@dataclass(frozen=True, slots=True)
class Covariates:
    """Covariate columns and their expansion into design columns.

    Two forms (see :meth:`from_frame` and :meth:`from_formula`): a list of column names, or
    a formulaic right-hand side such as ``"np.log1p(pre_sales) + C(device) + bs(age, df=4)"``.
    Either way the q design columns are materialised once, as arrays, and :meth:`raw` fills
    blocks of rows from them.

    Attributes
    ----------
    sources : tuple of str, the data columns used (the names ``condition_on`` knows)
    names : tuple of str, the q design columns in the order of :meth:`raw`; listed columns:
        every numeric column first, then the level indicators (``device[mobile]``); a formula:
        formulaic's columns, names and order (``C(device)[T.mobile]``)
    numeric : tuple of (name, float array (n,)); with a formula, every expanded design column
    categorical : tuple of (name, int codes (n,), levels tuple); levels[0] is the reference
        (empty with a formula)
    formula : str or None, the right-hand side as given
    model_spec : formulaic ``ModelSpec`` with the state of the fit (spline knots, levels,
        centres), or None; it rebuilds the same columns on another table (:meth:`target_means`)
    originals : tuple of (name, array (n,)), the formula's data columns as numbers or labels
    levels : tuple of (name, levels tuple), the formula's columns that enter as categories
    """

    sources: tuple
    names: tuple
    numeric: tuple
    categorical: tuple
    formula: str | None = None
    model_spec: object = None
    originals: tuple = ()
    levels: tuple = ()

    @classmethod
    def from_frame(cls, df: pd.DataFrame, columns, roles: dict) -> Covariates:
        sources, names, level_names, numeric, categorical = [], [], [], [], []
        for name in columns:
            if name in sources:
                raise ValidationError(f"exogenous_covariates: column {name!r} is listed twice")
            series = _covariate_column(df, name, roles)
            sources.append(name)
            if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
                values = series.to_numpy(dtype=float)
                if not np.isfinite(values).all():
                    raise ValidationError(f"exogenous_covariates: column {name!r} has infinite values")
                if np.abs(values).max() > 1e150:
                    raise ValidationError(f"exogenous_covariates: column {name!r} has values beyond +-1e+150, "
                                          "whose squares overflow float64; rescale it")
                if np.ptp(values) == 0:
                    raise ValidationError(f"exogenous_covariates: column {name!r} is constant ({values[0]:g})")
                numeric.append((name, values))
                names.append(name)
            else:
                codes, levels = pd.factorize(series, sort=True)
                if len(levels) < 2:
                    raise ValidationError(f"exogenous_covariates: column {name!r} is constant ({levels[0]!r})")
                categorical.append((name, codes.astype(np.int64), tuple(levels.tolist())))
                level_names.extend(f"{name}[{level}]" for level in levels[1:])
        # raw() and means() lay out numeric columns first, then level indicators
        return cls(tuple(sources), tuple(names + level_names), tuple(numeric), tuple(categorical))

    @classmethod
    def from_formula(cls, df: pd.DataFrame, formula: str, roles: dict) -> Covariates:
        r"""Covariates from a formulaic right-hand side, e.g. ``"x + C(g) + bs(age, df=4)"``.

        ``exogenous_covariates`` is read as a formula when it is one string that is not the
        name of a column of the data: a column name wins, so ``"x"`` stays the column x, and
        a list always holds column names. A leading ``~`` is allowed; an outcome (``y ~``) or
        several parts (``|``) are not.

        Expansion: formulaic (https://matthewwardrop.github.io/formulaic/) builds the columns
        *with* an intercept and ``ensure_full_rank=True`` (treatment coding that drops the
        first level of every categorical, the sorted first for text), and the intercept
        column is then dropped: the design has its own intercept, and a formula without one
        would keep every level of its first categorical. So ``0`` / ``-1`` in the formula
        change nothing. Design columns carry formulaic's names (``C(g)[T.b]``,
        ``bs(age, df=4)[1]``). Rows with missing values are refused, never dropped.

        Safety: formulaic evaluates the Python expression of each term with ``eval``. Nothing
        reaches it unchecked: after formulaic's parser (which evaluates nothing) has split
        the formula into terms, every term is parsed with :mod:`ast` and must consist only
        of column names, numbers, ``+ - * / // % **``, comparisons, and calls of ``C`` (on a
        column), ``bs``, ``cr``, ``cs``, ``cc``, ``poly``, ``center``, ``scale``, ``I``,
        ``log``, ``log2``, ``log10``, ``exp`` and ``np.abs / exp / expm1 / log / log1p / log2
        / log10 / sqrt / square``, with literal extra arguments; anything else (attributes,
        subscripts, other names or calls, dunder names) is a ValidationError before any
        evaluation. Formulaic then sees only the used columns and an explicit context whose
        ``np`` holds just those numpy functions (besides formulaic's own transforms), never
        the caller's variables.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> df = pd.DataFrame({"x": np.arange(6.0), "g": list("abcabc"), "y": 0.0})
        >>> cov = Covariates.from_formula(df, "np.log1p(x) + C(g)", roles={"y": "metric"})
        >>> cov.names, cov.sources
        (('np.log1p(x)', 'C(g)[T.b]', 'C(g)[T.c]'), ('x', 'g'))
        """
        from formulaic import Formula, ModelSpec

        text = formula.strip()
        if text.startswith("~"):
            text = text[1:].strip()
        if not text:
            raise ValidationError("exogenous_covariates: the formula is empty")
        if "~" in text:
            raise ValidationError(f"exogenous_covariates: formula {formula!r} has an outcome; give only the "
                                  "right-hand side (the outcome is y=)")
        _parse_formula(Formula, text)  # one part, parsable: refuse '|' before wrapping
        # with an intercept, ensure_full_rank drops a reference level of every categorical
        parsed = _parse_formula(Formula, f"1 + ({text})")
        used: dict = {}
        categories: set = set()
        for term in parsed:
            for factor in term.factors:
                method = factor.eval_method.value
                if method == "literal" and factor.expr == "1":
                    continue
                if method == "lookup":
                    _TermCheck(factor.expr, df, used, categories).column(factor.expr, "alone")
                elif method == "python":
                    _TermCheck(factor.expr, df, used, categories).run()
                else:
                    raise ValidationError(f"exogenous_covariates: formula term {factor.expr!r} is not allowed")
        if not used:
            raise ValidationError(f"exogenous_covariates: formula {formula!r} uses no column of the data")
        originals, levels = [], []
        for name in used:
            series = _covariate_column(df, name, roles)
            values = _original_values(series)
            if len(pd.unique(values)) < 2:
                raise ValidationError(f"exogenous_covariates: column {name!r} is constant ({values[0]!r})")
            originals.append((name, values))
            if name in categories:
                levels.append((name, tuple(pd.unique(values).tolist())))
        spec = ModelSpec.from_spec(parsed, ensure_full_rank=True, na_action="raise", output="numpy")
        matrix, spec = _materialise(spec, _formula_frame(df, used), "exogenous_covariates", formula)
        names = tuple(spec.column_names[1:])
        if not names:
            raise ValidationError(f"exogenous_covariates: formula {formula!r} gives no design column")
        for j, name in enumerate(names):
            column = matrix[:, j]
            if not np.isfinite(column).all():
                raise ValidationError(f"exogenous_covariates: design column {name!r} of the formula has "
                                      f"{int((~np.isfinite(column)).sum())} non-finite values (e.g. a log of 0)")
            if np.abs(column).max() > 1e150:
                raise ValidationError(f"exogenous_covariates: design column {name!r} has values beyond +-1e+150, "
                                      "whose squares overflow float64; rescale it")
            if np.ptp(column) == 0:
                raise ValidationError(f"exogenous_covariates: design column {name!r} of the formula is constant "
                                      f"({column[0]:g})")
        numeric = tuple((name, matrix[:, j]) for j, name in enumerate(names))  # contiguous columns
        return cls(tuple(used), names, numeric, (), formula=formula, model_spec=spec,
                   originals=tuple(originals), levels=tuple(levels))

    @property
    def q(self) -> int:
        return len(self.names)

    def raw(self, rows, out: np.ndarray | None = None) -> np.ndarray:
        """Uncentred covariate block (len(rows) x q), written into ``out`` when given."""
        n_rows = len(rows) if not isinstance(rows, slice) else rows.stop - rows.start
        if out is None:
            out = np.empty((self.q, n_rows)).T  # column-major: each column is one contiguous write
        col = 0
        for _, values in self.numeric:
            out[:, col] = values[rows]
            col += 1
        for _, codes, levels in self.categorical:
            block = codes[rows]
            for level in range(1, len(levels)):
                out[:, col] = block == level
                col += 1
        return out

    def means(self, rows: np.ndarray | None, weights: np.ndarray | None) -> np.ndarray:
        """(Weighted) mean of every design column over ``rows`` (None: all rows)."""
        out = np.empty(self.q)
        col = 0
        sel = slice(None) if rows is None else rows
        w = None if weights is None else weights[sel]
        for _, values in self.numeric:
            out[col] = np.average(values[sel], weights=w)
            col += 1
        for _, codes, levels in self.categorical:
            counts = np.bincount(codes[sel], weights=w, minlength=len(levels))
            out[col:col + len(levels) - 1] = counts[1:] / counts.sum()
            col += len(levels) - 1
        return out

    def condition_shift(self, cond, originals: dict, member: np.ndarray | None, n: int, mu: np.ndarray,
                        weights: np.ndarray | None) -> tuple[np.ndarray, int]:
        """Centred covariate mean over the rows where a parsed condition holds (None: all
        rows) among the rows of a metric group (``member``; None: every row), and their number.

        >>> import pandas as pd
        >>> from causalflow.expr import parse_condition
        >>> cov = Covariates.from_frame(pd.DataFrame({"x": [1.0, 2.0, 3.0, 6.0]}), ["x"], {})
        >>> cov.condition_shift(parse_condition("x > 1.5"), cov.original(), None, 4, cov.means(None, None), None)
        (array([0.66666667]), 3)
        """
        if cond is None:
            return np.zeros(self.q), n
        mask = cond.evaluate(originals)
        if member is not None:
            mask &= member
        size = int(mask.sum())
        if size == 0:
            raise ValidationError(f"condition_on {cond.text!r}: selects no rows"
                                  + ("" if member is None else " with this metric observed"))
        return self.means(np.flatnonzero(mask), weights) - mu, size

    def original(self) -> dict:
        """The original columns (labels for categoricals), for ``condition_on``."""
        if self.formula is not None:
            return dict(self.originals)
        cols = {name: values for name, values in self.numeric}
        for name, codes, levels in self.categorical:
            # a boolean covariate stays boolean, so that ``flag`` and ``not flag`` are conditions
            is_bool = all(isinstance(level, (bool, np.bool_)) for level in levels)
            cols[name] = np.asarray(levels, dtype=bool if is_bool else object)[codes]
        return cols

    def target_means(self, table: pd.DataFrame) -> np.ndarray:
        """Means (q,) of the design columns over a target table, for projection onto it.

        Listed columns: means of the numeric ones and shares of the levels. A formula: its
        fitted formulaic ``ModelSpec`` applied to the table, so splines keep the experiment's
        knots, categories its levels, ``center`` / ``scale`` its moments. A column missing
        from the table, a missing value, a text where the experiment had numbers or a level
        the experiment did not see is a ValidationError naming the column.
        """
        if self.formula is None:
            return _listed_target_means(self, table)
        levels = dict(self.levels)
        for name in self.sources:
            if name not in table.columns:
                raise ValidationError(f"target: covariate column {name!r} is not in the table")
            series = table[name]
            if series.isna().any():
                raise ValidationError(f"target: covariate {name!r} has {int(series.isna().sum())} missing values")
            if name in levels:
                unknown = sorted({str(v) for v in series[~series.isin(levels[name])].unique()})
                if unknown:
                    raise ValidationError(f"target: covariate {name!r} has levels {unknown} not seen in the "
                                          f"experiment ({list(levels[name])})")
            elif dict(self.originals)[name].dtype == float and not _is_number(series):
                raise ValidationError(f"target: covariate {name!r} must be numeric without missing values")
        matrix, _ = _materialise(self.model_spec, _formula_frame(table, self.sources), "target", self.formula)
        if not np.isfinite(matrix).all():
            bad = [self.names[j] for j in np.flatnonzero(~np.isfinite(matrix).all(axis=0))]
            raise ValidationError(f"target: design column(s) {bad} of the formula have non-finite values")
        return matrix.mean(axis=0)


# -- formulas: a whitelist of what a term may contain ---------------------------------------------
# formulaic evaluates every Python term with eval(); a term must pass _TermCheck first.
_SPLINE = frozenset({"df", "knots", "lower_bound", "upper_bound", "extrapolation"})
_TRANSFORM_CALLS = {  # name -> (at most this many positional arguments, allowed keywords)
    "C": (1, frozenset({"levels"})),
    "bs": (2, _SPLINE | {"degree"}),
    "cr": (2, _SPLINE), "cs": (2, _SPLINE), "cc": (2, _SPLINE),
    "poly": (2, frozenset({"degree", "raw"})),
    "center": (1, frozenset()),
    "scale": (1, frozenset({"center", "scale", "ddof"})),
    "I": (1, frozenset()),
    "log": (1, frozenset()), "log2": (1, frozenset()), "log10": (1, frozenset()), "exp": (1, frozenset()),
}
_NUMPY_CALLS = ("abs", "exp", "expm1", "log", "log1p", "log2", "log10", "sqrt", "square")
# the context formulaic evaluates terms in (besides the data columns and its own transforms)
_FORMULA_CONTEXT = {"np": types.SimpleNamespace(**{f: getattr(np, f) for f in _NUMPY_CALLS})}
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_COMPARISONS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_ALLOWED = ("column names, numbers, + - * / // % ** and comparisons, C(column), "
            + ", ".join(f"{f}()" for f in _TRANSFORM_CALLS if f != "C")
            + ", " + ", ".join(f"np.{f}()" for f in _NUMPY_CALLS))


def _is_number(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _original_values(series: pd.Series) -> np.ndarray:
    """A column as ``condition_on`` sees it: floats, or labels (booleans stay boolean)."""
    if _is_number(series):
        return series.to_numpy(dtype=float)
    codes, levels = pd.factorize(series, sort=True)
    levels = levels.tolist()
    is_bool = all(isinstance(level, (bool, np.bool_)) for level in levels)
    return np.asarray(levels, dtype=bool if is_bool else object)[codes]


def _formula_frame(df: pd.DataFrame, names) -> pd.DataFrame:
    """The columns a formula uses, in dtypes formulaic reads alike from any source: numbers
    and booleans as numpy arrays, categoricals as they are, any other text as objects (an
    arrow-backed string column would otherwise not be read as a category)."""
    columns = {}
    for name in names:
        series = df[name]
        if isinstance(series.dtype, pd.CategoricalDtype):
            columns[name] = series
        elif pd.api.types.is_bool_dtype(series):
            columns[name] = series.to_numpy(dtype=bool)
        elif _is_number(series):
            columns[name] = series.to_numpy(dtype=getattr(series.dtype, "numpy_dtype", series.dtype))
        else:
            columns[name] = pd.Series(series.to_numpy(dtype=object), index=df.index, dtype=object)
    return pd.DataFrame(columns, index=df.index)


def _message(exc: BaseException) -> str:
    """An exception's text without terminal colour codes, on one line."""
    import re
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())


def _parse_formula(formula_class, text: str):
    """formulaic's parse of a right-hand side (its parser tokenizes, it evaluates nothing)."""
    from formulaic.errors import FormulaicError
    from formulaic.formula import SimpleFormula
    try:
        parsed = formula_class(text)
    except (FormulaicError, ValueError, TypeError, SyntaxError) as exc:
        raise ValidationError(f"exogenous_covariates: formula {text!r} does not parse: {_message(exc)}") from None
    if not isinstance(parsed, SimpleFormula):
        raise ValidationError(f"exogenous_covariates: formula {text!r} has several parts; give one "
                              "right-hand side (no '|')")
    return parsed


def _materialise(spec, frame: pd.DataFrame, argument: str, formula: str) -> tuple:
    """(n x q float array without the intercept, fitted ModelSpec) of a checked formula."""
    from formulaic.errors import DataMismatchWarning
    try:
        with warnings.catch_warnings():
            # formulaic turns a level it has not seen into NaN with this warning: refuse instead
            warnings.simplefilter("error", DataMismatchWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # log(0) etc.: non-finite values, named below
            mm = spec.get_model_matrix(frame, context=_FORMULA_CONTEXT)
    except Exception as exc:  # noqa: BLE001 (formulaic's and the transforms' errors, kept as the reason)
        raise ValidationError(f"{argument}: formula {formula!r}: {_message(exc)}") from None
    fitted = mm.model_spec
    if list(fitted.column_names[:1]) != ["Intercept"]:
        raise ValidationError(f"{argument}: formula {formula!r}: formulaic returned no intercept column")
    return np.asfortranarray(np.asarray(mm, dtype=float)[:, 1:]), fitted


class _TermCheck:
    """Whitelist check of one term of a formula, parsed with :mod:`ast`, never evaluated.

    Records the data columns it uses in ``used`` and those that enter as categories (text
    or boolean columns on their own, any column in ``C()``) in ``categories``.
    """

    def __init__(self, expr: str, df: pd.DataFrame, used: dict, categories: set):
        self.expr, self.df, self.used, self.categories = expr, df, used, categories
        self.aliases: dict = {}

    def refuse(self, why: str) -> ValidationError:
        return ValidationError(f"exogenous_covariates: formula term {self.expr!r}: {why}; a term may use "
                               f"{_ALLOWED}, with literal further arguments")

    def run(self) -> None:
        from formulaic.utils.code import sanitize_variable_names
        code = sanitize_variable_names(self.expr, {}, self.aliases)  # `odd name` -> identifier (text only)
        try:
            tree = ast.parse(code, mode="eval")
        except SyntaxError:
            raise self.refuse("not an expression") from None
        if not self.value(tree.body, "alone"):
            raise self.refuse("uses no column")

    def column(self, ident: str, where: str) -> bool:
        name = self.aliases.get(ident, ident)
        if name.startswith("__"):
            raise self.refuse(f"the name {name!r} is not allowed")
        if name not in self.df.columns:
            raise ValidationError(f"exogenous_covariates: formula term {self.expr!r}: column {name!r} is not "
                                  "in the data")
        number = _is_number(self.df[name])
        if not number and where == "number":
            raise ValidationError(f"exogenous_covariates: formula term {self.expr!r}: column {name!r} holds "
                                  f"{self.df[name].dtype} values; use it alone, in C() or in a comparison")
        if where == "category" or (where == "alone" and not number):
            self.categories.add(name)
        self.used[name] = None
        return True

    def value(self, node: ast.AST, where: str) -> bool:
        """Check a sub-expression; True when it depends on a column."""
        if isinstance(node, ast.Name):
            return self.column(node.id, where)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float)) or (isinstance(node.value, str) and where == "compare"):
                return False
            raise self.refuse(f"the constant {node.value!r} is not allowed here")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return self.value(node.operand, "number")
        if isinstance(node, ast.BinOp) and isinstance(node.op, _ARITHMETIC):
            # arithmetic on constants alone (9 ** 9 ** 9, 'a' * 10 ** 9) would run in Python
            if not (self.value(node.left, "number") | self.value(node.right, "number")):
                raise self.refuse("arithmetic needs a column")
            return True
        if isinstance(node, ast.Compare) and all(isinstance(op, _COMPARISONS) for op in node.ops):
            sides = [self.value(side, "compare") for side in (node.left, *node.comparators)]  # check all
            if not any(sides):
                raise self.refuse("a comparison needs a column")
            return True
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.refuse(f"{type(node).__name__} ({ast.unparse(node)!r}) is not allowed")

    def call(self, node: ast.Call) -> bool:
        func, columns = node.func, self.df.columns
        if isinstance(func, ast.Name) and func.id in _TRANSFORM_CALLS and func.id not in columns:
            name, (n_args, keywords) = func.id, _TRANSFORM_CALLS[func.id]
        elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "np"
              and "np" not in columns and func.attr in _NUMPY_CALLS):
            name, n_args, keywords = f"np.{func.attr}", 1, frozenset()
        else:
            raise self.refuse(f"the call of {ast.unparse(func)!r} is not allowed")
        if not node.args or len(node.args) > n_args or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.refuse(f"{name}() takes a column expression first and {n_args} positional "
                              "argument(s) at most")
        bad = [k.arg or "**" for k in node.keywords if k.arg not in keywords]
        if bad:
            raise self.refuse(f"{name}() does not take the argument(s) {bad} (allowed: {sorted(keywords)})")
        first = node.args[0]
        if name == "C":
            if not isinstance(first, ast.Name):
                raise self.refuse("C() takes a column name")
            self.column(first.id, "category")
        elif not self.value(first, "number"):
            raise self.refuse(f"{name}() needs a column")
        for extra in [*node.args[1:], *(k.value for k in node.keywords)]:
            if not _is_literal(extra):
                raise self.refuse(f"the argument {ast.unparse(extra)!r} of {name}() is not a literal")
        return True


def _is_literal(node: ast.AST) -> bool:
    """A number, text, True / False / None, or a list / tuple of them."""
    if isinstance(node, ast.Constant):
        return node.value is None or isinstance(node.value, (bool, int, float, str))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float))
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_is_literal(e) and not isinstance(e, (ast.List, ast.Tuple)) for e in node.elts)
    return False


def _listed_target_means(covariates: Covariates, table: pd.DataFrame) -> np.ndarray:
    """:meth:`Covariates.target_means` of listed columns: numeric means and level shares."""
    out = np.empty(covariates.q)
    col = 0
    for name, _ in covariates.numeric:
        if name not in table.columns:
            raise ValidationError(f"target: covariate column {name!r} is not in the table")
        series = table[name]
        if not pd.api.types.is_numeric_dtype(series) or series.isna().any():
            raise ValidationError(f"target: covariate {name!r} must be numeric without missing values")
        out[col] = float(series.to_numpy(dtype=float).mean())
        col += 1
    for name, _, levels in covariates.categorical:
        if name not in table.columns:
            raise ValidationError(f"target: covariate column {name!r} is not in the table")
        values = table[name].to_numpy(dtype=object)
        unknown = sorted({str(v) for v in values if v not in levels})
        if unknown:
            raise ValidationError(f"target: covariate {name!r} has levels {unknown} not seen in the "
                                  f"experiment ({list(levels)})")
        for level in levels[1:]:
            out[col] = float(np.mean(values == level))
            col += 1
    return out


def sorted_labels(labels) -> list:
    """Arm labels or category levels in their natural order, or by their text when they
    do not compare (mixed types): the one order of arms and levels, in memory and in engines.

    >>> sorted_labels([2, 1]), sorted_labels(["b", 1])
    ([1, 2], [1, 'b'])
    """
    labels = list(labels)
    try:
        return sorted(labels)
    except TypeError:
        return sorted(labels, key=str)


def pick_control(labels: list, control, intent_to_treat: str):
    """The control arm among the sorted ``labels`` of ``intent_to_treat``: ``control`` when
    given (it must be a label); else 0 / False, else ``"control"``, else the first of two.

    >>> pick_control(["a", "b"], None, "arm"), pick_control([0, 1, 2], None, "arm")
    ('a', 0)
    """
    if control is not None:
        if control not in labels:
            raise ValidationError(f"control: {control!r} is not an arm of {intent_to_treat!r} "
                                  f"(arms: {labels})")
        return control
    for candidate in (0, "control"):  # 0 also matches False
        for label in labels:
            if isinstance(label, str) == isinstance(candidate, str) and label == candidate:
                return label
    if len(labels) == 2:
        return labels[0]
    raise ValidationError(f"control: intent_to_treat {intent_to_treat!r} has {len(labels)} arms "
                          f"{labels}; name the control arm with control=")


def arm_names(data, kind: str) -> list[str]:
    """Names of the arm columns of a fit: ``column[arm]`` for every arm but the control.

    The ITT fit (``kind="itt"``, the reduced form) regresses on the instrument: the
    assignment, or the ``instrument`` column when another column instruments it. The
    2SLS fit (``kind="iv"``) regresses on the treatment received: the ``treated`` column
    when it differs from the assignment, else the assignment. ``data`` is an
    ExperimentData (read for its column names and arms only).
    """
    column = data.intent_to_treat
    if kind == "iv" and data.treated is not None and data.treated != data.intent_to_treat:
        column = data.treated
    elif (kind == "itt" and data.is_iv and data.instrument is not None
          and data.instrument != data.intent_to_treat):
        column = data.instrument
    return [f"{column}[{a}]" for a in data.arms[1:]]


def regressor_names(arm_names: list[str], covariate_names) -> list[str]:
    """Names of the p columns of X, in order [1, D, Xc, D x Xc]."""
    names = ["Intercept", *arm_names, *covariate_names]
    names += [f"{a}:{c}" for a in arm_names for c in covariate_names]
    return names


def _fill_lin(out: np.ndarray, arms: np.ndarray, n_arms: int, Xc: np.ndarray, dose: bool,
              copy_xc: bool) -> None:
    """out[:] = [1, T, Xc, T (x) Xc] with T the arm indicators (or the dose column) of the rows;
    ``copy_xc=False`` when Xc already sits in its columns of ``out``."""
    J, q = (1 if dose else n_arms), Xc.shape[1]
    out[:, 0] = 1.0
    for j in range(J):
        column = out[:, 1 + j]
        if dose:
            column[:] = arms
        else:
            np.equal(arms, j + 1, out=column, casting="unsafe")
        np.multiply(out[:, 1 + j:2 + j], Xc, out=out[:, 1 + J + q + j * q:1 + J + q + (j + 1) * q])
    if copy_xc:
        out[:, 1 + J:1 + J + q] = Xc


@dataclass(frozen=True, slots=True)
class DesignSource:
    """All columns a fit needs, as arrays, and the block builders.

    Attributes
    ----------
    assign : int codes (n,) of the instrument / assignment arm (0 = control)
    dose : float (n,) received treatment of a binary design, or None
    treated : int codes (n,) of the received arm of a multi-arm design, or None
    n_arms : J
    covariates : Covariates
    weights : float (n,) or None
    clusters : int codes (n,) or None; n_clusters
    outcomes : tuple of float arrays (n,), one per metric
    """

    assign: np.ndarray
    dose: np.ndarray | None
    treated: np.ndarray | None
    n_arms: int
    covariates: Covariates
    weights: np.ndarray | None
    clusters: np.ndarray | None
    n_clusters: int | None
    outcomes: tuple

    @property
    def n(self) -> int:
        return len(self.assign)

    @property
    def iv(self) -> bool:
        return self.dose is not None or self.treated is not None

    @property
    def p(self) -> int:
        return (1 + self.n_arms) * (1 + self.covariates.q)

    def buffer(self, rows: int, n_metrics: int) -> np.ndarray:
        """A reusable column-major block buffer for :meth:`matrix` (rows x (p [+ p] + K))."""
        width = self.p * (2 if self.iv else 1) + n_metrics
        return np.empty((width, rows)).T

    def matrix(self, rows, mu: np.ndarray, metrics, buffer: np.ndarray | None = None):
        """The block [Z | X (IV designs only) | Y] of the rows, and their weights (or None).

        Filled column by column into ``buffer`` (column-major, from :meth:`buffer`), so that
        Z'W[Z X Y] is one GEMM. The returned array is a view of the buffer.
        """
        nb = (rows.stop - rows.start) if isinstance(rows, slice) else len(rows)
        if buffer is None or buffer.shape[0] < nb:
            buffer = self.buffer(nb, len(metrics))
        out = buffer[:nb]
        p, J, q = self.p, self.n_arms, self.covariates.q
        Xc = out[:, 1 + J:1 + J + q]
        self.covariates.raw(rows, out=Xc)
        Xc -= mu
        _fill_lin(out[:, :p], self.assign[rows], J, Xc, dose=False, copy_xc=False)
        if self.dose is not None:  # a two-arm design: the dose column takes the arm's place
            _fill_lin(out[:, p:2 * p], self.dose[rows], 1, Xc, dose=True, copy_xc=True)
        elif self.treated is not None:
            _fill_lin(out[:, p:2 * p], self.treated[rows], J, Xc, dose=False, copy_xc=True)
        y0 = out.shape[1] - len(metrics)
        for k, metric in enumerate(metrics):
            out[:, y0 + k] = self.outcomes[metric][rows]
        return out, (None if self.weights is None else self.weights[rows])

    def split(self, block: np.ndarray, n_metrics: int) -> tuple:
        """(Z, X or None, Y): views of a block from :meth:`matrix`; X is None when it equals Z."""
        p = self.p
        return block[:, :p], (block[:, p:2 * p] if self.iv else None), block[:, block.shape[1] - n_metrics:]

    def block(self, rows, mu: np.ndarray, metrics, buffer: np.ndarray | None = None) -> tuple:
        """(Z, X or None, Y, w or None) for the rows (views of one column-major block, see
        :meth:`matrix` and :meth:`split`)."""
        out, w = self.matrix(rows, mu, metrics, buffer)
        return (*self.split(out, len(metrics)), w)

    def take_up(self, arm: int, rows) -> np.ndarray:
        """Treatment received of arm ``arm`` (1..J) on the rows: the dose of a binary design,
        else the indicator of receiving that arm (the assignment in an A/B test)."""
        if self.dose is not None:
            return self.dose[rows]
        received = self.assign if self.treated is None else self.treated
        return (received[rows] == arm).astype(float)

    def untreated(self, rows) -> np.ndarray:
        """1 - the treatment received (any arm) on the rows: 1 - dose, or 1 for control."""
        if self.dose is not None:
            return 1.0 - self.dose[rows]
        received = self.assign if self.treated is None else self.treated
        return (received[rows] == 0).astype(float)

    def row_blocks(self, rows: np.ndarray | None, size: int | None = None) -> Iterator:
        """Row selections of a pass: slices of the data, or chunks of an index array."""
        size = size or _BLOCK_ROWS
        n = self.n if rows is None else len(rows)
        for start in range(0, n, size):
            stop = min(start + size, n)
            yield slice(start, stop) if rows is None else rows[start:stop]
