"""Argument and column checks shared by every layer, with one wording.

Each check raises :class:`causalflow.ValidationError` naming the argument (or column) and
the problem, before any work is done. Nothing here imports above :mod:`causalflow.errors`.

Examples
--------
>>> check_alpha(0.05)
0.05
>>> check_choice("method", "holm", ("holm", "bh"))
'holm'
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import ValidationError

__all__ = ["LARGEST", "check_alpha", "check_choice", "column_names", "float_values", "metric_values",
           "missing_message", "no_variation_message", "not_arms_message", "outside_message", "to_pandas"]

LARGEST = 1e150  # squares and cross-products of larger values overflow float64


def check_alpha(alpha, argument: str = "alpha") -> float:
    """A level in (0, 1), as a float."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not math.isfinite(alpha) or not 0 < alpha < 1:
        raise ValidationError(f"{argument}: must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def check_choice(argument: str, value, allowed: Sequence):
    """``value`` if it is one of ``allowed``; else an error that lists them."""
    if isinstance(value, str) and value in allowed:
        return value
    raise ValidationError(f"{argument}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def to_pandas(table) -> pd.DataFrame:
    """Convert a pandas / polars / pyarrow table once, at the boundary (no copy for pandas).

    >>> to_pandas(pd.DataFrame({"a": [1]})).shape
    (1, 1)
    """
    if isinstance(table, pd.DataFrame):
        return table
    module = type(table).__module__.split(".")[0]
    if module in ("polars", "pyarrow") and hasattr(table, "to_pandas"):
        converted = table.to_pandas()
        if isinstance(converted, pd.DataFrame):  # a polars / pyarrow Series or array is not a table
            return converted
    raise ValidationError(f"data: expected a pandas, polars or pyarrow table, got {type(table).__name__}")


def column_names(value, argument: str) -> list:
    """A column name or a list-like of names as a list (None: empty)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (Sequence, pd.Index, np.ndarray)) or type(value) in (set, frozenset):
        return list(value)
    raise ValidationError(f"{argument}: expected a column name or a list of names, got {value!r}")


def float_values(series: pd.Series) -> np.ndarray:
    """A column as float64 with NaN for missing values; no copy when it already is one."""
    if series.dtype == np.float64:
        return series.to_numpy()
    return series.to_numpy(dtype=float, na_value=np.nan)


def metric_values(series: pd.Series, name: str, argument: str) -> np.ndarray:
    """A numeric column as float64 (NaN for missing), checked: numeric, not all missing,
    finite, and small enough that its squares do not overflow.

    >>> metric_values(pd.Series([1, None, 3]), "y", "y").tolist()
    [1.0, nan, 3.0]
    """
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise ValidationError(f"{argument}: metric {name!r} is not numeric (dtype {series.dtype})")
    values = float_values(series)
    with np.errstate(invalid="ignore"):
        low, high = np.fmin.reduce(values), np.fmax.reduce(values)  # NaN only if all are
    check_metric_range(low, high, name, argument)
    return values


def check_metric_range(low: float, high: float, name: str, argument: str = "y") -> None:
    """A metric's smallest and largest non-missing values (NaN: none) are finite and small
    enough that their squares do not overflow float64; else a ValidationError that says which."""
    if np.isnan(high):
        raise ValidationError(f"{argument}: metric {name!r} has no non-missing values")
    if np.isinf(low) or np.isinf(high):
        raise ValidationError(f"{argument}: metric {name!r} has infinite values")
    if max(-low, high) > LARGEST:
        raise ValidationError(f"{argument}: metric {name!r} has values beyond +-{LARGEST:g}, whose squares "
                              "overflow float64; rescale it")


# -- the wording of column problems found in memory, in the engine and per experiment ------
def missing_message(argument: str, name, count) -> str:
    """A role column with missing values.

    >>> missing_message("treated", "d", 3)
    "treated: column 'd' has 3 missing values (NaN)"
    """
    return f"{argument}: column {name!r} has {int(count)} missing values (NaN)"


def outside_message(argument: str, name, low, high, interval: str = "(0, 1)") -> str:
    """A column with values outside the interval it must lie in.

    >>> outside_message("propensity", "p", 0.0, 0.9)
    "propensity: column 'p' has values outside (0, 1) (min 0, max 0.9)"
    """
    return f"{argument}: column {name!r} has values outside {interval} (min {low:g}, max {high:g})"


def not_arms_message(argument: str, name, intent_to_treat, arms) -> str:
    """A column of arm labels (treated, instrument) holding values that are not arms.

    >>> not_arms_message("treated", "d", "z", ("a", "b"))
    "treated: column 'd' has values that are not arms of 'z' (['a', 'b'])"
    """
    return f"{argument}: column {name!r} has values that are not arms of {intent_to_treat!r} ({list(arms)})"


def no_variation_message(argument: str, name, value=None) -> str:
    """A column that must vary and does not (``value``: its one value, when numeric).

    >>> no_variation_message("treated", "d", 1.0)
    "treated: column 'd' has no variation (always 1)"
    """
    return f"{argument}: column {name!r} has no variation" + ("" if value is None else f" (always {value:g})")
