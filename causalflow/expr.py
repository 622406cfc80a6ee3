"""The safe ``condition_on`` language: parse once, evaluate over columns, never ``eval``.

Grammar (a subset of Python expression syntax, checked node by node)::

    expr     := expr 'or' expr | expr 'and' expr | 'not' expr | compare
    compare  := arith (op arith)+          op in == != < <= > >= in, not in
    arith    := arith (+ - * / % **) arith | -arith | +arith | atom
    atom     := column name | number | 'string' | True | False
              | [literal, ...] | (literal, ...) | (expr)

Python's own tokenizer and parser (``ast.parse(mode="eval")``) build the tree;
only the node types above are accepted, and evaluation walks the tree over numpy
arrays. No name is ever looked up outside the columns given, and no attribute,
call, subscript or comprehension is accepted.

Examples
--------
>>> import numpy as np
>>> cond = parse_condition("device == 'desktop' and pre_sales > 10")
>>> sorted(cond.columns)
['device', 'pre_sales']
>>> cond.evaluate({"device": np.array(["desktop", "mobile", "desktop"]),
...                "pre_sales": np.array([12.0, 20.0, 3.0])})
array([ True, False, False])
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ValidationError

__all__ = ["Condition", "parse_condition"]

_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ARITH = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_MAX_LENGTH = 2000


_MAX_DEPTH = 100
_ARITH_ERRORS = (TypeError, ValueError, ArithmeticError)


def _position(text: str, lineno: int, column: int, column_in_bytes: bool = True) -> int:
    """Character position in ``text`` (as the user wrote it) of a parser (line, column).

    The parser sees ``text.strip()``, counts lines from 1 and, for tree nodes, columns in
    UTF-8 bytes.
    """
    lead = len(text) - len(text.lstrip())
    lines = text.strip().splitlines(keepends=True) or [""]
    line = lines[min(max(lineno, 1), len(lines)) - 1]
    if column_in_bytes:
        column = len(line.encode("utf-8")[:column].decode("utf-8", errors="ignore"))
    return lead + sum(len(prior) for prior in lines[:max(lineno, 1) - 1]) + column


def _fail(text: str, node: ast.AST | None, problem: str) -> ValidationError:
    where = ""
    if node is not None and hasattr(node, "col_offset"):
        where = f" at position {_position(text, node.lineno, node.col_offset)}"
    return ValidationError(f"condition_on expression {text!r}{where}: {problem}")


def _literal(node: ast.AST, text: str):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise _fail(text, node, "a list after 'in' may hold only numbers, strings and booleans")


def _check(node: ast.AST, text: str, names: set[str], depth: int = 0) -> None:
    """Reject every node type outside the grammar; collect column names."""
    if depth > _MAX_DEPTH:
        raise _fail(text, node, f"nested more than {_MAX_DEPTH} levels deep")
    depth += 1
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, text, names, depth)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
        _check(node.operand, text, names, depth)
    elif isinstance(node, ast.Compare):
        _check(node.left, text, names, depth)
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                    raise _fail(text, right, "'in' must be followed by a list such as ['a', 'b']")
                for element in right.elts:
                    _literal(element, text)
            elif type(op) in _COMPARE:
                _check(right, text, names, depth)
            else:
                raise _fail(text, right, f"comparison {type(op).__name__} is not supported")
    elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        _check(node.left, text, names, depth)
        _check(node.right, text, names, depth)
    elif isinstance(node, ast.Name):
        names.add(node.id)
    elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        pass
    else:
        raise _fail(text, node, f"{type(node).__name__} is not allowed (only columns, literals, "
                                "comparisons, and/or/not, 'in [...]' and arithmetic)")


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed ``condition_on`` expression.

    Attributes
    ----------
    text : str
        The expression as written; also its label in result tables.
    columns : frozenset of str
        The column names it reads.
    """

    text: str
    columns: frozenset
    _tree: ast.Expression

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Boolean mask (n,) of the rows that satisfy the condition."""
        missing = sorted(self.columns - set(columns))
        if missing:
            raise ValidationError(
                f"condition_on expression {self.text!r}: unknown column {missing[0]!r}; "
                f"available: {sorted(columns)}")
        value = self._eval(self._tree.body, columns)
        mask = np.asarray(value)
        if mask.dtype != bool:
            raise _fail(self.text, None, "does not evaluate to true/false (use a comparison)")
        n = len(next(iter(columns.values()))) if columns else 1
        return np.broadcast_to(mask, (n,)).copy()

    def _eval(self, node: ast.AST, cols: Mapping[str, np.ndarray]):
        if isinstance(node, ast.BoolOp):
            values = [self._as_bool(self._eval(v, cols), v) for v in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = values[0]
            for value in values[1:]:
                out = combine(out, value)
            return out
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, cols)
            if isinstance(node.op, ast.Not):
                return np.logical_not(self._as_bool(operand, node.operand))
            try:
                return -operand if isinstance(node.op, ast.USub) else +operand
            except _ARITH_ERRORS as exc:
                raise _fail(self.text, node, f"sign of a non-number: {exc}") from None
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, cols)
            out = None
            for op, right_node in zip(node.ops, node.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    options = [_literal(e, self.text) for e in right_node.elts]
                    result = np.isin(np.asarray(left, dtype=object), np.asarray(options, dtype=object))
                    if isinstance(op, ast.NotIn):
                        result = ~result
                    right = None
                else:
                    right = self._eval(right_node, cols)
                    try:
                        result = _COMPARE[type(op)](left, right)
                    except _ARITH_ERRORS as exc:
                        raise _fail(self.text, right_node, f"cannot compare: {exc}") from None
                out = result if out is None else np.logical_and(out, result)
                left = right
            return np.asarray(out, dtype=bool)
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, cols), self._eval(node.right, cols)
            try:
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    return _ARITH[type(node.op)](left, right)
            except _ARITH_ERRORS as exc:
                raise _fail(self.text, node, f"arithmetic failed: {exc}") from None
        if isinstance(node, ast.Name):
            return np.asarray(cols[node.id])
        if isinstance(node, ast.Constant):
            # numbers become float64 so that constant arithmetic such as 9 ** 9 ** 9 is
            # bounded (inf) instead of an unbounded Python integer computation
            if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
                try:
                    return np.float64(node.value)
                except OverflowError:
                    raise _fail(self.text, node, "number too large") from None
            return node.value
        raise _fail(self.text, node, "unsupported expression")  # unreachable after _check

    def _as_bool(self, value, node: ast.AST) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype != bool:
            raise _fail(self.text, node, "and/or/not need true/false operands (comparisons)")
        return array


def parse_condition(text: str, known_columns=None) -> Condition:
    """Parse one ``condition_on`` expression without evaluating anything.

    Parameters
    ----------
    text : str
        For example ``"device != 'desktop' and pre_sales > 10"``.
    known_columns : iterable of str, optional
        When given, a name outside it is a :class:`ValidationError` that says where.

    Raises
    ------
    ValidationError
        Bad syntax (with the position), a construct outside the grammar, or an
        unknown column.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValidationError(f"condition_on: each condition must be a non-empty string, got {text!r}")
    if len(text) > _MAX_LENGTH:
        raise ValidationError(f"condition_on expression is longer than {_MAX_LENGTH} characters")
    try:
        with warnings.catch_warnings():
            # e.g. an invalid escape such as '\d' warns in the parser: the same result whatever
            # the caller's warning filters (the text is kept as written, as Python does)
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        problem = exc.msg
        if not exc.offset:  # Python's parser gives no column when the input ends too early
            position = len(text.rstrip())
            problem += " (the expression ends too early)"
        else:
            position = _position(text, exc.lineno or 1, exc.offset - 1, column_in_bytes=False)
        raise ValidationError(
            f"condition_on expression {text!r}: syntax error at position {position}: {problem}") from None
    except (RecursionError, MemoryError):
        raise ValidationError(f"condition_on expression {text!r}: nested too deeply") from None
    names: set[str] = set()
    _check(tree.body, text, names)
    if known_columns is not None:
        known = set(known_columns)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id not in known:
                raise _fail(text, node, f"unknown column {node.id!r}; available: {sorted(known)}")
    return Condition(text=text.strip(), columns=frozenset(names), _tree=tree)
