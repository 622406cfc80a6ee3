"""Design matrices, built block by block from the validated columns.

Regressors and instruments (Lin 2013; DESIGN.md):

.. math::

    X = [1, D, X_c, D \\otimes X_c], \\qquad Z = [1, A, X_c, A \\otimes X_c],

with D the received-treatment indicators (J columns), A the assignment (instrument)
indicators, and :math:`X_c` the covariates centred at their (weighted) mean over the rows
of the fit. Rows are never gathered into one n x p matrix: each pass walks row blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import ValidationError

__all__ = ["Covariates", "DesignSource", "regressor_names"]

_BLOCK_ROWS = 1 << 15


@dataclass(frozen=True, slots=True)
class Covariates:
    """Covariate columns and their expansion into design columns.

    Attributes
    ----------
    sources : tuple of str, the user's column names
    names : tuple of str, the q design columns (``device[mobile]`` for a level indicator), in
        the order of :meth:`raw`: every numeric column first, then the level indicators
    numeric : tuple of (name, float array (n,))
    categorical : tuple of (name, int codes (n,), levels tuple); levels[0] is the reference
    """

    sources: tuple
    names: tuple
    numeric: tuple
    categorical: tuple

    @classmethod
    def from_frame(cls, df: pd.DataFrame, columns, roles: dict) -> "Covariates":
        sources, names, level_names, numeric, categorical = [], [], [], [], []
        for name in columns:
            if not isinstance(name, str):
                raise ValidationError(f"exogenous_covariates: expected column names, got {name!r}")
            if name not in df.columns:
                raise ValidationError(f"exogenous_covariates: column {name!r} is not in the data")
            if name in roles:
                raise ValidationError(f"exogenous_covariates: column {name!r} is already the {roles[name]}")
            if name in sources:
                raise ValidationError(f"exogenous_covariates: column {name!r} is listed twice")
            series = df[name]
            if series.isna().any():
                raise ValidationError(f"exogenous_covariates: column {name!r} has {int(series.isna().sum())} "
                                      "missing values; impute them (pre-treatment) or drop the rows")
            if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
                raise ValidationError(f"exogenous_covariates: column {name!r} holds dates or durations "
                                      f"({series.dtype}); convert it to a number (e.g. days since a date)")
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

    @property
    def q(self) -> int:
        return len(self.names)

    def raw(self, rows) -> np.ndarray:
        """Uncentred covariate block (len(rows) x q)."""
        n_rows = len(rows) if not isinstance(rows, slice) else rows.stop - rows.start
        out = np.empty((n_rows, self.q))
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

    def original(self) -> dict:
        """The original columns (labels for categoricals), for ``condition_on``."""
        cols = {name: values for name, values in self.numeric}
        for name, codes, levels in self.categorical:
            # a boolean covariate stays boolean, so that ``flag`` and ``not flag`` are conditions
            is_bool = all(isinstance(level, (bool, np.bool_)) for level in levels)
            cols[name] = np.asarray(levels, dtype=bool if is_bool else object)[codes]
        return cols


def regressor_names(arm_names: list[str], covariate_names) -> list[str]:
    """Names of the p columns of X, in order [1, D, Xc, D x Xc]."""
    names = ["Intercept", *arm_names, *covariate_names]
    names += [f"{a}:{c}" for a in arm_names for c in covariate_names]
    return names


def _stack(T: np.ndarray, Xc: np.ndarray) -> np.ndarray:
    n, J = T.shape
    q = Xc.shape[1]
    out = np.empty((n, 1 + J + q + J * q))
    out[:, 0] = 1.0
    out[:, 1:1 + J] = T
    out[:, 1 + J:1 + J + q] = Xc
    for j in range(J):
        np.multiply(T[:, j:j + 1], Xc, out=out[:, 1 + J + q + j * q:1 + J + q + (j + 1) * q])
    return out


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

    def _one_hot(self, codes: np.ndarray) -> np.ndarray:
        return (codes[:, None] == np.arange(1, self.n_arms + 1)).astype(float)

    def block(self, rows, mu: np.ndarray, metrics) -> tuple:
        """(Z, X or None, Y, w or None) for the rows; X is None when it equals Z."""
        Xc = self.covariates.raw(rows) - mu
        Z = _stack(self._one_hot(self.assign[rows]), Xc)
        X = None
        if self.dose is not None:
            X = _stack(self.dose[rows][:, None], Xc)
        elif self.treated is not None:
            X = _stack(self._one_hot(self.treated[rows]), Xc)
        Y = np.empty((Z.shape[0], len(metrics)))
        for k, metric in enumerate(metrics):
            Y[:, k] = self.outcomes[metric][rows]
        w = None if self.weights is None else self.weights[rows]
        return Z, X, Y, w

    def row_blocks(self, rows: np.ndarray | None, size: int | None = None) -> Iterator:
        """Row selections of a pass: slices of the data, or chunks of an index array."""
        size = size or _BLOCK_ROWS
        n = self.n if rows is None else len(rows)
        for start in range(0, n, size):
            stop = min(start + size, n)
            yield slice(start, stop) if rows is None else rows[start:stop]
