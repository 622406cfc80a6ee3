r"""Stacked estimating equations: several 2SLS / OLS equations over the columns of one block.

Mediation fits one equation per node of a causal graph on the same rows. All of them are
functions of one weighted Gram matrix :math:`G = B'WB` of a block
:math:`B = [Z \mid X \mid N]` (instruments, regressors, node columns): equation e picks its
instruments :math:`Z_e = B_{\cdot, z_e}`, regressors :math:`X_e = B_{\cdot, x_e}` and outcome
:math:`y_e = B_{\cdot, y_e}`, and its moments are sub-blocks of G
(:func:`equation_moments`), solved by :func:`causalflow.linalg.twosls.solve_2sls`.

Joint covariance (stacked M-estimation; Newey and McFadden 1994, sec. 6; Wooldridge 2010,
sec. 14.2): the estimating equations of e are :math:`\sum_i w_i z_{ie}(y_{ie} - x_{ie}'\theta_e)
= 0`; stacked, their Jacobian is block diagonal, so the influence of row i on
:math:`\theta_e` is :math:`w_i e_{ie}\, z_{ie}'\Pi_e A_e` (the single-equation influence of
:mod:`causalflow.linalg.sandwich`) and

.. math::

    V_{ef} = \sqrt{c_e c_f}\; \sum_g \Big(\sum_{i \in g} \psi_{ie}\Big)
             \Big(\sum_{i \in g} \psi_{if}\Big)', \qquad
    \psi_{ie} = w_i e_{ie}\, A_e \Pi_e' z_{ie}

(HC: every row its own cluster g), with :math:`c_e` the small-sample factor of equation e
(HC1 n/(n - P_e), CR1 G/(G-1) (n-1)/(n-P_e), P_e its regressors), so that every diagonal
block is that equation's own single-equation covariance. For contrasts
:math:`R_e\theta_e` only :math:`u_{ie} = w_i e_{ie}\, z_{ie}'\Pi_e A_e R_e'` is needed: with
:math:`L` (d x M) holding :math:`\Pi_e A_e R_e'` in the rows :math:`z_e` and :math:`C` (d x E)
holding :math:`e_{y_e} - \sum_j \theta_{ej} e_{x_{ej}}`, a block's scores are
:math:`(BL) \odot (W B C)_{\cdot, e(m)}`: two GEMMs (:func:`score_block`), never an
n x P x E array.

Nonlinear functions of the contrasts (products of path coefficients) get the delta method
from :func:`sum_of_products`; the jackknife and the bootstrap evaluate them at many
coefficient vectors at once with :func:`products`.

Examples
--------
Two equations on the columns of one block: y1 on [1, x], y2 on [1, x, y1].

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=200); y1 = x + rng.normal(size=200); y2 = y1 - x + rng.normal(size=200)
>>> B = np.c_[np.ones(200), x, y1, y2]
>>> eqs = [Equation.ols([0, 1], 2), Equation.ols([0, 1, 2], 3)]
>>> fits = solve_equations(B.T @ B, eqs, 200)
>>> bool(np.allclose(fits[1].coef[:, 0], np.linalg.lstsq(B[:, :3], y2, rcond=None)[0]))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .twosls import Moments, TwoSLSFit, solve_2sls

__all__ = ["Equation", "equation_moments", "products", "score_block", "score_maps", "solve_equations",
           "sum_of_products"]


@dataclass(frozen=True, slots=True)
class Equation:
    """One equation over the columns of a block.

    Attributes
    ----------
    z : (P,) int, columns of the instruments (the regressors for OLS)
    x : (P,) int, columns of the regressors (equal to ``z`` for OLS)
    y : int, column of the outcome
    names : tuple of str, the P coefficient names (for error messages and tables)
    """

    z: np.ndarray
    x: np.ndarray
    y: int
    names: tuple = ()

    @classmethod
    def ols(cls, columns, y: int, names=()) -> Equation:
        columns = np.asarray(columns, dtype=np.intp)
        return cls(columns, columns, int(y), tuple(names))

    @property
    def iv(self) -> bool:
        return not np.array_equal(self.z, self.x)

    @property
    def size(self) -> int:
        return len(self.z)


def equation_moments(gram: np.ndarray, eq: Equation, n: int) -> Moments:
    """The moments Z_e'WZ_e, Z_e'WX_e (None for OLS), Z_e'Wy_e of one equation: sub-blocks of
    the Gram matrix B'WB of the whole block."""
    zwz = gram[np.ix_(eq.z, eq.z)]
    zwx = gram[np.ix_(eq.z, eq.x)] if eq.iv else None
    return Moments(zwz, zwx, gram[eq.z, eq.y][:, None], n)


def solve_equations(gram: np.ndarray, equations: list, n: int) -> list[TwoSLSFit]:
    """Solve every equation from the one Gram matrix (a singular equation raises the
    ValidationError of :func:`~causalflow.linalg.twosls.solve_2sls`, naming its columns)."""
    return [solve_2sls(equation_moments(gram, eq, n), list(eq.names) or None) for eq in equations]


def score_maps(equations: list, fits: list, contrasts: list, width: int) -> tuple:
    """The maps of :func:`score_block` for contrasts ``contrasts[e]`` (r_e x P_e) of each equation.

    Returns ``L`` (width x M), ``C`` (width x E) and ``column_equation`` (M,): the equation of
    each of the M = sum r_e contrast columns, equation by equation.
    """
    M = sum(R.shape[0] for R in contrasts)
    L = np.zeros((width, M))
    C = np.zeros((width, len(equations)))
    column_equation = np.empty(M, dtype=np.intp)
    start = 0
    for e, (eq, fit, R) in enumerate(zip(equations, fits, contrasts)):
        stop = start + R.shape[0]
        L[eq.z, start:stop] = fit.influence @ R.T
        C[eq.y, e] = 1.0
        np.subtract.at(C[:, e], eq.x, fit.coef[:, 0])
        column_equation[start:stop] = e
        start = stop
    return L, C, column_equation


def score_block(block: np.ndarray, w: np.ndarray | None, L: np.ndarray, C: np.ndarray,
                column_equation: np.ndarray) -> np.ndarray:
    r"""Row scores (nb x M) of every contrast column: :math:`u_{im} = w_i e_{i,e(m)} (BL)_{im}`.

    >>> B = np.array([[1.0, 2.0], [1.0, 3.0]]); L = np.array([[1.0], [0.0]])
    >>> C = np.array([[-2.0], [1.0]])              # residual y - 2 (column 1 minus twice column 0)
    >>> score_block(B, None, L, C, np.array([0])).ravel().tolist()
    [0.0, 1.0]
    """
    # computed transposed: the GEMMs read the column-major block as row-major, and the
    # result is column-major, so its transpose (the left factor of the meat's Gram) needs no copy
    residuals = C.T @ block.T
    if w is not None:
        residuals *= w
    scores = L.T @ block.T
    scores *= residuals[column_equation]
    return scores.T


def products(values: np.ndarray, terms: list) -> np.ndarray:
    r"""Sums of products of the rows of ``values`` (B x L, or (L,)): (B, m) (or (m,)).

    ``terms[r]`` is a list of products, each a tuple of indices into a row of ``values``:
    :math:`f_r = \sum_t \prod_{k \in t} v_k`. An empty list is 0.

    >>> products(np.array([[2.0, 3.0, 0.5], [1.0, 1.0, 1.0]]), [[(0, 1)], [(0, 1), (2,)]]).tolist()
    [[6.0, 6.5], [1.0, 2.0]]
    """
    values = np.asarray(values, dtype=float)
    batch = np.atleast_2d(values)
    out = np.zeros((batch.shape[0], len(terms)))
    for r, summands in enumerate(terms):
        for term in summands:
            out[:, r] += np.prod(batch[:, list(term)], axis=1)
    return out if values.ndim == 2 else out[0]


def sum_of_products(values: np.ndarray, terms: list) -> tuple[np.ndarray, np.ndarray]:
    r"""Estimates (:func:`products`) and Jacobian of sums of products of ``values`` (L,).

    Row r is :math:`f_r = \sum_t \prod_{k \in t} v_k` and its gradient has
    :math:`\partial f_r / \partial v_k = \sum_{t \ni k} \prod_{l \in t, l \neq k} v_l`
    (computed without division, so a zero factor is fine). The delta method then gives
    :math:`\mathrm{Cov}(f) = J\, \mathrm{Cov}(v)\, J'` (Sobel 1982 for one product; the
    multivariate delta method for serial paths, VanderWeele 2015, sec. 5.2).

    >>> est, jac = sum_of_products(np.array([2.0, 3.0, 0.5]), [[(0, 1)], [(0, 1), (2,)]])
    >>> est.tolist(), jac.tolist()
    ([6.0, 6.5], [[3.0, 2.0, 0.0], [3.0, 2.0, 1.0]])
    """
    values = np.asarray(values, dtype=float)
    jac = np.zeros((len(terms), len(values)))
    for r, summands in enumerate(terms):
        for term in summands:
            factors = values[list(term)]
            for position, k in enumerate(term):
                jac[r, k] += np.prod(np.delete(factors, position))
    return products(values, terms), jac
