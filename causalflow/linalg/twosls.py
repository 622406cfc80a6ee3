"""Generalized two-stage least squares from three weighted cross-products.

With regressors X (n x p), instruments Z (n x p), weights w and outcomes Y (n x K):

.. math::

    \\Pi = (Z'WZ)^{-1} Z'WX, \\qquad \\hat X = Z \\Pi, \\qquad
    B = (\\hat X' W X)^{-1} \\hat X' W Y = A\\, \\Pi' Z'WY,

with the bread :math:`A = (\\hat X'W\\hat X)^{-1}` (note :math:`\\hat X'WX = \\hat X'W\\hat X =
\\Pi' Z'WX`). With Z = X this is OLS / WLS (:math:`\\Pi = I`). Everything is a function of
the moments Z'WZ, Z'WX, Z'WY, which are sums over rows, so they can be accumulated in
blocks, across looks of a monitored experiment, or by a database.

References: Wooldridge (2010), *Econometric Analysis of Cross Section and Panel Data*,
ch. 5; linearmodels' k-class estimator (kappa = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..errors import ValidationError

__all__ = ["Moments", "TwoSLSFit", "check_full_rank", "solve_2sls"]


@dataclass(frozen=True, slots=True)
class Moments:
    """Weighted cross-products of one design; all fields add up over disjoint row sets.

    Attributes
    ----------
    zwz : (p, p) Z'WZ
    zwx : (p, p) Z'WX, or None when X = Z (OLS)
    zwy : (p, K) Z'WY
    n : int, number of rows
    ywy : (K, K) Y'WY, or None when not accumulated (the conjugate posterior's residual
        sum of squares needs it: :mod:`causalflow.linalg.conjugate`)
    """

    zwz: np.ndarray
    zwx: np.ndarray | None
    zwy: np.ndarray
    n: int
    ywy: np.ndarray | None = None

    def __add__(self, other: Moments) -> Moments:
        def add(a, b):
            return None if a is None else a + b
        ywy = None if self.ywy is None or other.ywy is None else self.ywy + other.ywy
        return Moments(self.zwz + other.zwz, add(self.zwx, other.zwx), self.zwy + other.zwy,
                       self.n + other.n, ywy)

    def reduced_form(self) -> Moments:
        """The moments of the OLS fit of Y on Z (the intent-to-treat regression)."""
        return Moments(self.zwz, None, self.zwy, self.n, self.ywy)


@dataclass(frozen=True, slots=True)
class TwoSLSFit:
    """Result of :func:`solve_2sls`.

    Attributes
    ----------
    coef : (p, K) coefficients B, one column per outcome
    bread : (p, p) A = (Xh'WXh)^-1
    pi : (p, p) first-stage coefficients Pi (identity for OLS)
    influence : (p, p) Pi A: row i's influence on B is w_i e_ik z_i' Pi A
    iv : bool, whether X differs from Z
    """

    coef: np.ndarray
    bread: np.ndarray
    pi: np.ndarray
    influence: np.ndarray
    iv: bool


def check_full_rank(gram: np.ndarray, names: list[str], what: str) -> None:
    """Raise a ValidationError naming the columns that make a Gram matrix singular.

    Uses a QR decomposition with column pivoting of the unit-diagonal scaled Gram matrix;
    the columns pivoted last with negligible diagonal are the dependent ones.
    """
    diag = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    zero = diag <= 1e-300
    if zero.any():
        bad = [names[i] for i in np.flatnonzero(zero)]
        raise ValidationError(f"{what}: column(s) {bad} are zero everywhere (constant after centring?)")
    scaled = gram / np.outer(diag, diag)
    _, r, piv = scipy.linalg.qr(scaled, pivoting=True)
    tol = max(scaled.shape) * np.finfo(float).eps * 1e3 * abs(r[0, 0])
    rank = int(np.sum(np.abs(np.diag(r)) > tol))
    if rank < len(names):
        bad = [names[i] for i in piv[rank:]]
        raise ValidationError(
            f"{what}: the design is singular; column(s) {bad} are linear combinations of the others "
            "(collinear covariates, a covariate constant within an arm, or an arm without rows)")


def solve_2sls(m: Moments, names: list[str] | None = None) -> TwoSLSFit:
    """Solve the generalized 2SLS normal equations from :class:`Moments`.

    Parameters
    ----------
    m : Moments
    names : column names, used only in the error message of a singular design.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.column_stack([np.ones(50), rng.normal(size=50)])
    >>> Y = X @ np.array([[1.0], [2.0]]) + rng.normal(size=(50, 1))
    >>> fit = solve_2sls(Moments(X.T @ X, None, X.T @ Y, 50))
    >>> bool(np.allclose(fit.coef, np.linalg.lstsq(X, Y, rcond=None)[0]))
    True
    """
    p = m.zwz.shape[0]
    names = names or [f"x{i}" for i in range(p)]
    check_full_rank(m.zwz, names, "instruments" if m.zwx is not None else "regressors")
    zwz_factor = scipy.linalg.cho_factor(m.zwz)
    if m.zwx is None:
        bread = scipy.linalg.cho_solve(zwz_factor, np.eye(p))
        bread = 0.5 * (bread + bread.T)
        return TwoSLSFit(bread @ m.zwy, bread, np.eye(p), bread, False)
    pi = scipy.linalg.cho_solve(zwz_factor, m.zwx)
    xhx = pi.T @ m.zwx
    xhx = 0.5 * (xhx + xhx.T)
    check_full_rank(xhx, names, "first stage (weak or collinear instruments)")
    bread = np.linalg.inv(xhx)
    bread = 0.5 * (bread + bread.T)
    coef = bread @ (pi.T @ m.zwy)
    return TwoSLSFit(coef, bread, pi, pi @ bread, True)
