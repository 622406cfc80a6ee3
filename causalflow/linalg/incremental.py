r"""Additive pieces of sandwich meats, so that looks of a monitored experiment add up.

The 2SLS point estimates need only the cross-products Z'WZ, Z'WX, Z'WY
(:class:`causalflow.linalg.twosls.Moments`, already additive). The meat needs the
residuals :math:`e_{ik} = y_{ik} - x_i'b_k` at the *current* coefficients, which change at
every look. Both meats can still be accumulated exactly, in one pass over each row:

* HC (every row its own cluster): with :math:`u_i = \mathrm{vech}(z_i z_i')`,

  .. math::
      \sum_i w_i^2 e_{ik}^2\, u_i = \sum_i w_i^2 u_i y_{ik}^2
      - 2 \sum_l b_{lk} \sum_i w_i^2 u_i x_{il} y_{ik}
      + \sum_{l,m} b_{lk} b_{mk} \sum_i w_i^2 u_i x_{il} x_{im},

  so the fourth-order moments :math:`\sum w^2 u\,y^2`, :math:`\sum w^2 u\,(x \otimes y)`,
  :math:`\sum w^2 u\,\mathrm{vech}(xx')` (:class:`RowMeatMoments`) give the HC meat for any
  b. Cost per row :math:`s(K + pK + s)` with :math:`s = p(p+1)/2`, done as GEMMs.
* CR: the per-cluster score sums are :math:`S_{gk} = Z_g'W_gY_{gk} - Z_g'W_gX_g b_k`
  (DESIGN.md, "Out of core"), so per-cluster :math:`Z_g'W_gX_g` and :math:`Z_g'W_gY_g`
  (:class:`ClusterMoments`) suffice.

In both cases the meat in instrument space is mapped by the influence matrix
:math:`\Pi A` of :class:`~causalflow.linalg.twosls.TwoSLSFit`:
:math:`V_k = c\,(\Pi A)' M^z_k (\Pi A)`, and for contrasts D, :math:`D V_k D'`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RowMeatMoments", "ClusterMoments", "block_moments"]


def _vech_cols(M: np.ndarray, iu) -> np.ndarray:
    """Row-wise products M[:, i] * M[:, j] for i <= j (n x s)."""
    return M[:, iu[0]] * M[:, iu[1]]


def _unvech(v: np.ndarray, p: int, iu) -> np.ndarray:
    """(s, ...) upper-triangle values -> symmetric (..., p, p)."""
    out = np.zeros(v.shape[1:] + (p, p))
    out[..., iu[0], iu[1]] = np.moveaxis(v, 0, -1)
    out[..., iu[1], iu[0]] = np.moveaxis(v, 0, -1)
    return out


def block_moments(Z: np.ndarray, X: np.ndarray | None, Y: np.ndarray, w: np.ndarray | None):
    """The :class:`~causalflow.linalg.twosls.Moments` of one row block (X = None: OLS).

    >>> import numpy as np
    >>> Z = np.c_[np.ones(3), [0., 1., 1.]]; Y = np.array([[1.], [2.], [4.]])
    >>> block_moments(Z, None, Y, None).zwy.ravel().tolist()
    [7.0, 6.0]
    """
    from .twosls import Moments
    Zw = Z if w is None else Z * w[:, None]
    return Moments(Zw.T @ Z, None if X is None else Zw.T @ X, Zw.T @ Y, None, len(Z))


@dataclass(frozen=True, slots=True)
class RowMeatMoments:
    """Fourth-order moments that give the HC meat at any coefficients; they add up over rows.

    Attributes
    ----------
    uyy : (s, K) sum of w^2 vech(zz') y_k^2
    uxy : (s, p, K) sum of w^2 vech(zz') x_l y_k
    uxx : (s, s) sum of w^2 vech(zz') vech(xx')'
    p : int
    """

    uyy: np.ndarray
    uxy: np.ndarray
    uxx: np.ndarray
    p: int

    @classmethod
    def from_block(cls, Z, X, Y, w) -> "RowMeatMoments":
        """Moments of one block; X = None means X = Z (OLS / the reduced form)."""
        X = Z if X is None else X
        n, p = Z.shape
        K = Y.shape[1]
        iu = np.triu_indices(p)
        U = _vech_cols(Z, iu)
        if w is not None:
            U = U * (w * w)[:, None]
        XY = (X[:, :, None] * Y[:, None, :]).reshape(n, p * K)
        return cls(U.T @ (Y * Y), (U.T @ XY).reshape(-1, p, K), U.T @ _vech_cols(X, iu), p)

    def __add__(self, other: "RowMeatMoments") -> "RowMeatMoments":
        return RowMeatMoments(self.uyy + other.uyy, self.uxy + other.uxy, self.uxx + other.uxx, self.p)

    def meat_z(self, coef: np.ndarray) -> np.ndarray:
        r"""(K, p, p): :math:`\sum_i w_i^2 e_{ik}^2 z_i z_i'` at coefficients ``coef`` (p x K).

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> Z = np.c_[np.ones(50), rng.normal(size=50)]; Y = rng.normal(size=(50, 2))
        >>> B = rng.normal(size=(2, 2)); E = Y - Z @ B
        >>> direct = np.einsum("ik,ia,ib->kab", E**2, Z, Z)
        >>> bool(np.allclose(RowMeatMoments.from_block(Z, None, Y, None).meat_z(B), direct))
        True
        """
        p = self.p
        iu = np.triu_indices(p)
        pair = coef[iu[0]] * coef[iu[1]] * np.where(iu[0] == iu[1], 1.0, 2.0)[:, None]  # (s, K)
        v = self.uyy - 2.0 * np.einsum("slk,lk->sk", self.uxy, coef) + self.uxx @ pair
        return _unvech(v, p, iu)


@dataclass(frozen=True, slots=True)
class ClusterMoments:
    """Per-cluster cross-products; they add up over rows of the same cluster.

    Attributes
    ----------
    zx : (G, p, p) sum over the cluster's rows of w z x'
    zy : (G, p, K) sum over the cluster's rows of w z y'
    seen : (G,) bool, clusters with at least one row
    """

    zx: np.ndarray
    zy: np.ndarray
    seen: np.ndarray

    @classmethod
    def zeros(cls, n_clusters: int, p: int, K: int) -> "ClusterMoments":
        return cls(np.zeros((n_clusters, p, p)), np.zeros((n_clusters, p, K)),
                   np.zeros(n_clusters, dtype=bool))

    def add_block(self, Z, X, Y, w, codes) -> "ClusterMoments":
        """A new record with one block's rows (cluster ``codes``) added (X = None: X = Z)."""
        X = Z if X is None else X
        n, p = Z.shape
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
        Zw = Z[order] if w is None else Z[order] * w[order, None]
        zx = (Zw[:, :, None] * X[order][:, None, :]).reshape(n, -1)
        zy = (Zw[:, :, None] * Y[order][:, None, :]).reshape(n, -1)
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ids = codes[starts]
        new_zx, new_zy, seen = self.zx.copy(), self.zy.copy(), self.seen.copy()
        new_zx[ids] += np.add.reduceat(zx, starts, axis=0).reshape(len(ids), p, p)
        new_zy[ids] += np.add.reduceat(zy, starts, axis=0).reshape(len(ids), p, -1)
        seen[ids] = True
        return ClusterMoments(new_zx, new_zy, seen)

    @property
    def n_clusters(self) -> int:
        return int(self.seen.sum())

    def score_sums(self, coef: np.ndarray, influence_d: np.ndarray) -> np.ndarray:
        r"""(G_seen, m, K): :math:`T_{g} = (\Pi A D')' (Z_g'W_gY_g - Z_g'W_gX_g B)` per seen cluster.

        Their Gram matrix over clusters is the (uncorrected) joint meat of the m contrasts
        of every metric.
        """
        zx, zy = self.zx[self.seen], self.zy[self.seen]
        S = zy - np.einsum("gpl,lk->gpk", zx, coef)
        return np.einsum("gpk,pm->gmk", S, influence_d)
