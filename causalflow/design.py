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


def role_column(df: pd.DataFrame, name, argument: str, roles: dict, as_what: str) -> None:
    """Check that ``name`` is a column of ``df`` that has no other role yet."""
    if not isinstance(name, str):
        raise ValidationError(f"{argument}: expected column names, got {name!r}")
    if name not in df.columns:
        raise ValidationError(f"{argument}: column {name!r} is not in the data")
    if name in roles:
        raise ValidationError(f"{argument}: column {name!r} is the {roles[name]}, not {as_what}")


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
    def from_frame(cls, df: pd.DataFrame, columns, roles: dict) -> Covariates:
        sources, names, level_names, numeric, categorical = [], [], [], [], []
        for name in columns:
            role_column(df, name, "exogenous_covariates", roles, "a covariate")
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

    def block(self, rows, mu: np.ndarray, metrics, buffer: np.ndarray | None = None) -> tuple:
        """(Z, X or None, Y, w or None) for the rows; X is None when it equals Z (views of
        one column-major block, see :meth:`matrix`)."""
        out, w = self.matrix(rows, mu, metrics, buffer)
        p, K = self.p, len(metrics)
        return out[:, :p], (out[:, p:2 * p] if self.iv else None), out[:, out.shape[1] - K:], w

    def row_blocks(self, rows: np.ndarray | None, size: int | None = None) -> Iterator:
        """Row selections of a pass: slices of the data, or chunks of an index array."""
        size = size or _BLOCK_ROWS
        n = self.n if rows is None else len(rows)
        for start in range(0, n, size):
            stop = min(start + size, n)
            yield slice(start, stop) if rows is None else rows[start:stop]
