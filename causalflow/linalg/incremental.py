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
  (:class:`ClusterMoments`) suffice. :class:`ClusterScoreGram` also keeps their Gram
  matrix over the clusters that no longer receive rows, so that a look costs what its new
  rows and the recently active clusters cost, not a pass over every cluster.

In both cases the meat in instrument space is mapped by the influence matrix
:math:`\Pi A` of :class:`~causalflow.linalg.twosls.TwoSLSFit`:
:math:`V_k = c\,(\Pi A)' M^z_k (\Pi A)`, and for contrasts D, :math:`D V_k D'`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClusterMoments", "ClusterScoreGram", "LinMeatMoments", "RowMeatMoments"]

from itertools import combinations_with_replacement, product


def _vech_cols(M: np.ndarray, iu) -> np.ndarray:
    """Row-wise products M[:, i] * M[:, j] for i <= j (n x s)."""
    return M[:, iu[0]] * M[:, iu[1]]


def _unvech(v: np.ndarray, p: int, iu) -> np.ndarray:
    """(s, ...) upper-triangle values -> symmetric (..., p, p)."""
    out = np.zeros(v.shape[1:] + (p, p))
    out[..., iu[0], iu[1]] = np.moveaxis(v, 0, -1)
    out[..., iu[1], iu[0]] = np.moveaxis(v, 0, -1)
    return out


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
    def from_block(cls, Z, X, Y, w) -> RowMeatMoments:
        """Moments of one block; X = None means X = Z (OLS / the reduced form)."""
        X = Z if X is None else X
        n, p = Z.shape
        K = Y.shape[1]
        iu = np.triu_indices(p)
        U = _vech_cols(Z, iu)
        if w is not None:
            U = U * (w * w)[:, None]
        right = np.empty((n, K + p * K + len(iu[0])))      # one GEMM for the three moments
        right[:, :K] = Y * Y
        right[:, K:K + p * K] = (X[:, :, None] * Y[:, None, :]).reshape(n, p * K)
        right[:, K + p * K:] = _vech_cols(X, iu)
        out = U.T @ right
        return cls(out[:, :K], out[:, K:K + p * K].reshape(-1, p, K), out[:, K + p * K:], p)

    def __add__(self, other: RowMeatMoments) -> RowMeatMoments:
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

    def tensors(self, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""Fourth-order sums for scores bilinear in (z, x), at coefficients ``coef`` (p x K):
        ``P`` (K, p, p, p) :math:`\sum_i w_i^2 z_{ia} z_{ib} x_{ic} e_{ik}` and ``Q`` (p, p, p, p)
        :math:`\sum_i w_i^2 z_{ia} z_{ib} x_{ic} x_{id}`. A score
        :math:`w_i (z_i'a)(x_i'h)` (the influence of a complier mean on a LATE,
        :mod:`causalflow.linalg.compliers`) has its products with the 2SLS scores and with
        itself in these.

        >>> import numpy as np
        >>> rng = np.random.default_rng(2)
        >>> Z, X, Y = rng.normal(size=(30, 3)), rng.normal(size=(30, 3)), rng.normal(size=(30, 1))
        >>> B, w = rng.normal(size=(3, 1)), rng.uniform(1, 2, 30)
        >>> P, Q = RowMeatMoments.from_block(Z, X, Y, w).tensors(B)
        >>> E = Y - X @ B
        >>> bool(np.allclose(P[0], np.einsum("i,ia,ib,ic->abc", w * w * E[:, 0], Z, Z, X)))
        True
        """
        p = self.p
        iu = np.triu_indices(p)
        Q = _unvech(_unvech(self.uxx, p, iu), p, iu)                    # [a, b, c, d]: z_a z_b x_c x_d
        U = _unvech(self.uxy, p, iu)                                     # [c, k, a, b]: x_c y_k z_a z_b
        P = np.transpose(U, (1, 2, 3, 0)) - np.einsum("abcd,dk->kabc", Q, coef)
        return P, Q


def _lin_structure(J: int, q: int):
    """Monomials of Z = [1, A, Xc, A x Xc] (A one-hot) and the index maps of z-products.

    A product of z columns is zero when it has two different arms, else it is
    (A_j or 1) times a product of covariates (A_j^2 = A_j). Returns the monomial keys
    (arm or -1, sorted covariate tuple) by degree bound, and for degree 2, 3, 4 the
    index arrays (p,)*d into those lists (-1 for a zero product).
    """
    cols = [(-1, ())] + [(j, ()) for j in range(J)] + [(-1, (c,)) for c in range(q)]
    cols += [(j, (c,)) for j in range(J) for c in range(q)]
    p = len(cols)
    # ordered by covariate degree first, so the keys of degree <= 2 and <= 3 are prefixes
    keys = {d: [(a, c) for k in range(d + 1) for a in range(-1, J)
                for c in combinations_with_replacement(range(q), k)] for d in (2, 3, 4)}
    where = {d: {key: i for i, key in enumerate(keys[d])} for d in (2, 3, 4)}
    maps = {}
    for d in (2, 3, 4):
        idx = np.full((p,) * d, -1, dtype=np.int64)
        for combo in product(range(p), repeat=d):
            arms = {cols[c][0] for c in combo} - {-1}
            if len(arms) > 1:
                continue
            arm = arms.pop() if arms else -1
            covs = tuple(sorted(sum((cols[c][1] for c in combo), ())))
            idx[combo] = where[d][(arm, covs)]
        maps[d] = idx
    return keys, maps


def _monomials(A: np.ndarray, Xc: np.ndarray, keys) -> np.ndarray:
    """Columns (n x len(keys)) of the monomials (arm, covariates) of one block."""
    out = np.empty((len(A), len(keys)))
    base: dict = {(): np.ones(len(A))}
    for i, (arm, covs) in enumerate(keys):
        if covs not in base:
            base[covs] = base[covs[:-1]] * Xc[:, covs[-1]]
        np.multiply(base[covs], A[:, arm] if arm >= 0 else 1.0, out=out[:, i])
    return out


@dataclass(frozen=True, slots=True)
class LinMeatMoments:
    r"""HC meat moments of the regression on Z = [1, A, Xc, A x Xc] itself (OLS / ITT).

    Same role as :class:`RowMeatMoments` with X = Z, but the fourth-order products of
    z are collapsed to their distinct monomials (arm indicators are one-hot, so
    :math:`A_j^2 = A_j`, :math:`A_jA_k = 0`): sums of :math:`w^2 m\,y^2` over monomials m
    of degree <= 2, :math:`w^2 m\,y` of degree <= 3 and :math:`w^2 m` of degree <= 4.
    For one arm and two covariates this is 12 K + 20 K + 30 numbers per row instead of
    21 (K + 6 K + 21).

    Attributes
    ----------
    s2 : (m2, K), s3 : (m3, K), s4 : (m4,) the sums; J, q : arms and covariates
    """

    s2: np.ndarray
    s3: np.ndarray
    s4: np.ndarray
    J: int
    q: int

    #: above this many regressors the index maps (p^4) cost more than they save
    MAX_P = 24

    @classmethod
    def from_block(cls, Z, Y, w, J: int, q: int) -> LinMeatMoments:
        keys, _ = _lin_structure_cached(J, q)
        A, Xc = Z[:, 1:1 + J], Z[:, 1 + J:1 + J + q]
        M = _monomials(A, Xc, keys[4])               # degree <= 4 contains the lower degrees
        ww = np.ones(len(Z)) if w is None else w * w
        right = np.empty((len(Z), 2 * Y.shape[1] + 1))
        K = Y.shape[1]
        np.multiply(Y, ww[:, None], out=right[:, K:2 * K])
        np.multiply(right[:, K:2 * K], Y, out=right[:, :K])
        right[:, 2 * K] = ww
        n2, n3 = len(keys[2]), len(keys[3])              # prefixes of keys[4]
        s2 = M[:, :n2].T @ right[:, :K]
        s3 = M[:, :n3].T @ right[:, K:2 * K]
        s4 = M.T @ right[:, 2 * K]
        return cls(s2, s3, s4, J, q)

    def __add__(self, other: LinMeatMoments) -> LinMeatMoments:
        return LinMeatMoments(self.s2 + other.s2, self.s3 + other.s3, self.s4 + other.s4, self.J, self.q)

    def meat_z(self, coef: np.ndarray) -> np.ndarray:
        r"""(K, p, p): :math:`\sum_i w_i^2 e_{ik}^2 z_i z_i'` at ``coef`` (p x K), e = y - Z b.

        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> a = rng.integers(0, 3, 80); xc = rng.normal(size=(80, 2))
        >>> A = np.c_[a == 1, a == 2].astype(float)
        >>> Z = np.c_[np.ones(80), A, xc, A[:, :1] * xc, A[:, 1:] * xc]
        >>> Y = rng.normal(size=(80, 3)); B = rng.normal(size=(Z.shape[1], 3)); w = rng.uniform(1, 2, 80)
        >>> got = LinMeatMoments.from_block(Z, Y, w, 2, 2).meat_z(B)
        >>> bool(np.allclose(got, RowMeatMoments.from_block(Z, None, Y, w).meat_z(B)))
        True
        """
        _, maps = _lin_structure_cached(self.J, self.q)

        def gather(values, idx):
            pad = np.concatenate([values, np.zeros((1,) + values.shape[1:])])   # -1 -> 0
            return pad[idx]

        t2 = gather(self.s2, maps[2])                                   # (p, p, K)
        t3 = np.einsum("ablk,lk->kab", gather(self.s3, maps[3]), coef)
        t4 = gather(self.s4, maps[4])                                   # (p, p, p, p)
        quad = np.einsum("ablm,lk,mk->kab", t4, coef, coef)
        return np.moveaxis(t2, -1, 0) - 2.0 * t3 + quad


_STRUCTURES: dict = {}


def _lin_structure_cached(J: int, q: int):
    if (J, q) not in _STRUCTURES:
        _STRUCTURES[(J, q)] = _lin_structure(J, q)
    return _STRUCTURES[(J, q)]


class ClusterMoments:
    """Per-cluster cross-products, accumulated in place over row blocks (an accumulator,
    like :class:`~causalflow.linalg.sandwich.ScoreAccumulator`).

    Attributes
    ----------
    xz : (G, p, p) sum over the cluster's rows of w x z' (regressors by instruments)
    yz : (G, K, p) sum over the cluster's rows of w y z'
    seen : (G,) bool, clusters with at least one row

    The layouts put the instrument axis last, so that the contraction with the influence
    of the contrasts in :meth:`score_sums` is one GEMM without copies.
    """

    def __init__(self, n_clusters: int, p: int, K: int):
        self.xz = np.zeros((n_clusters, p, p))
        self.yz = np.zeros((n_clusters, K, p))
        self.seen = np.zeros(n_clusters, dtype=bool)

    def add_block(self, Z, X, Y, w, codes) -> None:
        """Add one block's rows (cluster ``codes``); X = None means X = Z."""
        X = Z if X is None else X
        n, p = Z.shape
        K = Y.shape[1]
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
        Zw = Z[order] if w is None else Z[order] * w[order, None]
        both = np.empty((n, p + K, p))
        np.multiply(X[order][:, :, None], Zw[:, None, :], out=both[:, :p])
        np.multiply(Y[order][:, :, None], Zw[:, None, :], out=both[:, p:])
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ids = codes[starts]
        sums = np.add.reduceat(both.reshape(n, -1), starts, axis=0).reshape(len(ids), p + K, p)
        self.xz[ids] += sums[:, :p]
        self.yz[ids] += sums[:, p:]
        self.seen[ids] = True

    @property
    def n_clusters(self) -> int:
        return int(self.seen.sum())

    def score_sums(self, coef: np.ndarray, influence_d: np.ndarray) -> np.ndarray:
        r"""(G_seen, K, m): :math:`T_{gk} = L'(Z_g'W_gy_{gk} - Z_g'W_gX_g b_k)`, :math:`L = \Pi A D'`.

        Their Gram matrix over clusters is the (uncorrected) joint meat of the m contrasts
        of every metric. Computed as :math:`L'Z_g'W_gY_g - (L'Z_g'W_gX_g) B`: two GEMMs
        against the small L first, then B.
        """
        seen = self.seen if not self.seen.all() else slice(None)
        xz, yz = self.xz[seen], self.yz[seen]
        G, K, p = yz.shape
        m = influence_d.shape[1]
        ly = (yz.reshape(G * K, p) @ influence_d).reshape(G, K, m)
        lx = (xz.reshape(G * p, p) @ influence_d).reshape(G, p, m)       # (L' Z'WX)' per cluster
        lxb = (lx.transpose(0, 2, 1).reshape(G * m, p) @ coef).reshape(G, m, K)  # one GEMM
        return ly - lxb.transpose(0, 2, 1)


class ClusterScoreGram:
    r"""Per-cluster cross-products and their Gram matrix over clusters: the CR meat at any
    coefficients from the clusters that received rows recently and one D x D matrix for
    all the others.

    Per cluster g keep :math:`v_g = [\mathrm{vec}\,(Y_g - 1c')'W_gZ_g,\ \mathrm{vech}\,
    Z_g'W_gZ_g \text{ (reduced form)},\ \mathrm{vec}\,Z_g'W_gX_g \text{ (2SLS)}]` (length D;
    c: the metrics' weighted means over the first rows, a fixed shift against cancellation).
    The score sum of metric k at coefficients b is linear in :math:`v_g`, because the first
    column of X and Z is the intercept:

    .. math::  s_{gk} = Z_g'W_g(y_{gk} - X_gb_k) = [Z_g'W_g(y_{gk} - c_k)] - Z_g'W_gX_g(b_k - c_ke_1),

    so the contrast sums :math:`T_g = (I_K \otimes L')s_g = Qv_g` (L = Pi A D' the contrasts'
    influence) have the Gram matrix :math:`\sum_g T_gT_g' = Q S Q'` with
    :math:`S = \sum_g v_gv_g'`, exactly. Clusters that received rows in the last ``hold``
    looks are *active*: their :math:`v_g` still change, so they stay out of S and enter a
    look as :math:`T_A'T_A`, :math:`T_A = V_AQ'` (:math:`O(|A| D\,Km)`). A cluster idle for
    ``hold`` looks retires into S (a symmetric rank-1 update, :math:`O(D^2)` once); one that
    receives rows again leaves S (its contribution subtracted) and is active again. A look
    thus costs its rows and the recently active clusters, not a pass over every cluster:
    with arrivals of new units (each cluster receives rows over a few looks) the active set
    is small. With the rows of every cluster spread over the whole experiment nearly all
    clusters stay active and a look costs one product over the clusters, :math:`O(G D\,Km)`,
    as with :class:`ClusterMoments`. ``hold`` starts at one look and doubles whenever more
    clusters come back from S at a look than half of those that retired at the previous one:
    a cluster retires once however long it is held (:math:`D^2/2`, one BLAS syrk), while
    each look it stays active costs a gather of its :math:`v_g` and :math:`D\,Km` (memory
    bound), so holding pays only for clusters that come back (their :math:`D^2` twice). On
    the benchmark of 50,000 arriving units (K = 20, D = 141; benchmarks/README.md) a hold of
    1 cost 10% less in this class than the earlier start at :math:`\lceil D / (2Km) \rceil = 4`.

    Parameters
    ----------
    n_clusters, p, K : clusters, coefficients, metrics
    kinds : fits whose meat is needed, ``"itt"`` (X = Z) and / or ``"iv"``
    width : columns of the contrast sums per look (K x contrasts): an active cluster costs D x width a look

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Z = np.c_[np.ones(200), rng.normal(size=(200, 2))]; Y = rng.normal(size=(200, 2))
    >>> codes = rng.integers(0, 30, 200); B = rng.normal(size=(3, 2)); L = rng.normal(size=(3, 1))
    >>> gram = ClusterScoreGram(30, 3, 2, ("itt",), width=2)
    >>> gram.add_block(Z[:120], None, Y[:120], None, codes[:120])
    >>> gram.add_block(Z[120:], None, Y[120:], None, codes[120:])
    >>> S = np.stack([Z[codes == g].T @ (Y - Z @ B)[codes == g] for g in range(30)])   # (G, p, K)
    >>> T = np.einsum("gak,am->gkm", S, L).reshape(30, 2)
    >>> bool(np.allclose(gram.gram([gram.contrasts("itt", B, L)]), T.T @ T))
    True
    """

    def __init__(self, n_clusters: int, p: int, K: int, kinds, width: int):
        self.p, self.K, self.kinds = p, K, tuple(kinds)
        self.iu = np.triu_indices(p)
        self.offsets, off = {}, K * p
        for kind in self.kinds:
            self.offsets[kind] = off
            off += len(self.iu[0]) if kind == "itt" else p * p
        self.D = off
        # v_g in two arrays: Va the Z'W(y - c) part, row-major (index a K + k: a look adds the
        # rows' sums as they come out of the sparse product, and T_A is one batched product)
        self.Va = np.zeros((n_clusters, K * p))
        self.Vw = np.zeros((n_clusters, self.D - K * p))
        self.seen = np.zeros(n_clusters, dtype=bool)
        self.is_active = np.zeros(n_clusters, dtype=bool)  # clusters kept out of S
        self.last = np.full(n_clusters, -1, dtype=np.int64)  # look that last gave the cluster rows
        self.S = np.zeros((self.D, self.D))  # upper triangle of the retired clusters' Gram
        self.width = max(int(width), 1)
        self.hold = 1
        self.retired = 0  # clusters retired at the last look
        self.looks = 0
        self.centre = None

    @property
    def n_clusters(self) -> int:
        return int(self.seen.sum())

    def rows(self, clusters) -> np.ndarray:
        """:math:`v_g` of the given clusters (len x D)."""
        return np.concatenate([self.Va[clusters], self.Vw[clusters]], axis=1)

    @property
    def V(self) -> np.ndarray:
        """Every :math:`v_g` (G x D), a copy."""
        return np.concatenate([self.Va, self.Vw], axis=1)

    def _add_sums(self, Z, X, Y, w, touched, local) -> None:
        r"""Add the rows' sums to :math:`v_g` of the ``touched`` clusters (``local``: each
        row's position among them), from one sparse product whose row (g, a) holds
        :math:`w_i z_{ia}` over cluster g's rows, applied to :math:`[y_i - c, z_i, x_i]`; no
        n x D array. The sparse matrix is built column by column (CSC: column i holds row
        i's p entries), on the rows in their order: no sort, and within a cluster the rows
        are added in that order."""
        import scipy.sparse

        n, p, K = len(Z), self.p, self.K
        U = len(touched)
        iv = "iv" in self.offsets
        right = np.empty((n, K + p * (2 if iv else 1)))
        np.subtract(Y, self.centre, out=right[:, :K])
        right[:, K:K + p] = Z
        if iv:
            right[:, K + p:] = X
        weighted = right[:, K:K + p] if w is None else right[:, K:K + p] * w[:, None]
        index = np.int32 if max(U, n) * p < 1 << 31 else np.int64   # scipy's own choice: no copy
        local = local.astype(index, copy=False)
        P = scipy.sparse.csc_matrix(
            (np.ascontiguousarray(weighted).ravel(), ((local * p)[:, None] + np.arange(p, dtype=index)).ravel(),
             np.arange(0, n * p + 1, p, dtype=index)), shape=(U * p, n))
        sums = (P @ right).reshape(U, p, right.shape[1])  # [g, a, (y - c, z, x)]
        self.Va.reshape(-1, p, K)[touched] += sums[:, :, :K]  # index a K + k
        Vw = np.empty((U, self.D - K * p))
        for kind, off in self.offsets.items():
            off -= K * p
            if kind == "itt":  # vech: entries (a, c >= a)
                Vw[:, off:off + len(self.iu[0])] = sums[:, self.iu[0], K + self.iu[1]]
            else:
                Vw[:, off:off + p * p] = sums[:, :, K + p:K + 2 * p].reshape(U, p * p)
        self.Vw[touched] += Vw

    @staticmethod
    def _syrk(A: np.ndarray) -> np.ndarray:
        """Upper triangle of A'A (BLAS syrk: half the products of a GEMM)."""
        import scipy.linalg

        if len(A) == 0:
            return np.zeros((A.shape[1], A.shape[1]))
        # A is C-ordered (U x D): A' is its Fortran-ordered view, and A'A = A'(A')' (trans=0)
        return scipy.linalg.blas.dsyrk(1.0, np.ascontiguousarray(A).T, trans=0, lower=0)

    def add_block(self, Z, X, Y, w, codes) -> None:
        """Add the rows of one look (cluster ``codes``); X = None means X = Z."""
        look = self.looks
        self.looks += 1
        if len(Z) == 0:
            self._retire(look)
            return
        if self.centre is None:
            self.centre = np.average(Y, axis=0, weights=w)
        # the touched clusters (sorted) and each row's position among them, without a sort
        G = len(self.Va)
        hit = np.zeros(G, dtype=bool)
        hit[codes] = True
        touched = np.flatnonzero(hit)
        position = np.empty(G, dtype=np.int64)
        position[touched] = np.arange(len(touched))
        back = touched[self.seen[touched] & ~self.is_active[touched]]
        if len(back):  # retired clusters with new rows: their contribution leaves S
            self.S -= self._syrk(self.rows(back))
            if 2 * len(back) > self.retired:
                # clusters come back as often as they retire (rows of every cluster spread over
                # the experiment): retiring them only costs; keep them active longer
                self.hold *= 2
        self._add_sums(Z, X, Y, w, touched, position[codes])
        self.seen[touched] = True
        self.last[touched] = look
        self.is_active[touched] = True
        self._retire(look)

    def _retire(self, look: int) -> None:
        """Clusters idle for ``hold`` looks join S."""
        active = self.active
        idle = active[self.last[active] <= look - self.hold]
        self.retired = len(idle)
        if self.retired:
            self.S += self._syrk(self.rows(idle))
            self.is_active[idle] = False

    @property
    def active(self) -> np.ndarray:
        """The active clusters (sorted codes)."""
        return np.flatnonzero(self.is_active)

    def contrasts(self, kind: str, coef: np.ndarray, influence_d: np.ndarray, keep=None) -> tuple:
        r"""The contrast map of one fit: :math:`T_g = Qv_g` with row k m + r of Q (contrast
        r of metric k at coefficients ``coef`` (p x K), influence ``influence_d`` (p x m))
        holding :math:`L_r'` on metric k's entries of the :math:`Z'W(y - c)` part and
        :math:`-L_r \otimes (b_k - c_ke_1)` in the fit's :math:`Z'WX` part. Returned as
        ``(L' (m x p), the rest of Q (K m x (D - K p)), keep)``; ``keep`` (bool (K m,), or
        None for all) selects rows. For :meth:`gram`."""
        p, K = self.p, self.K
        m = influence_d.shape[1]
        shifted = coef.copy()
        shifted[0] -= self.centre
        Kp = K * p
        Qw = np.zeros((K, m, self.D - Kp))
        off = self.offsets[kind] - Kp
        Lt = np.ascontiguousarray(influence_d.T)  # (m, p)
        b = shifted.T[:, None, :]  # (K, 1, p): metric k's b_k - c_k e_1
        if kind == "itt":  # W symmetric: entry (i, j) enters s[i] with b[j], and s[j] with b[i] off the diagonal
            i, j = self.iu
            Qw[:, :, off:off + len(i)] = -(Lt[:, i] * b[:, :, j] + np.where(i != j, Lt[:, j] * b[:, :, i], 0.0))
        else:
            Qw[:, :, off:off + p * p] = -(Lt[None, :, :, None] * b[:, :, None, :]).reshape(K, m, p * p)
        return Lt, Qw.reshape(K * m, self.D - Kp), keep

    def _full(self, part) -> np.ndarray:
        """The rows of Q of one :meth:`contrasts` map, kept rows only (K m' x D)."""
        Lt, Qw, keep = part
        m, K, p = len(Lt), self.K, self.p
        Q = np.zeros((K * m, self.D))
        Q[:, :K * p].reshape(K, m, p, K)[np.arange(K), :, :, np.arange(K)] = Lt  # L' on metric k's entries
        Q[:, K * p:] = Qw
        return Q if keep is None else Q[keep]

    def _times(self, Va: np.ndarray, Vw: np.ndarray, part) -> np.ndarray:
        """V Q' of one map: the Z'W(y - c) part is one batched product of L' with each
        cluster's (p x K) block (Q holds L' on metric k's entries only), the rest one product."""
        Lt, Qw, keep = part
        T = Vw @ Qw.T
        G, m = len(Va), len(Lt)
        T += np.matmul(Lt, Va.reshape(G, self.p, self.K)).transpose(0, 2, 1).reshape(G, self.K * m)
        return T if keep is None else T[:, keep]

    def gram(self, parts) -> np.ndarray:
        r""":math:`\sum_g (Qv_g)(Qv_g)' = QSQ' + T_A'T_A` (retired and active clusters) of the
        maps ``parts`` (from :meth:`contrasts`), stacked in order."""
        Q = np.concatenate([self._full(part) for part in parts], axis=0)
        S = self.S + self.S.T  # the upper triangle's symmetric matrix (the lower one is zero)
        S.flat[::len(S) + 1] = self.S.diagonal()
        out = Q @ S @ Q.T
        active = self.active
        if len(active):
            if 2 * len(active) > len(self.Va):  # most clusters active: no gather of their rows
                T = np.concatenate([self._times(self.Va, self.Vw, part) for part in parts], axis=1)[active]
            else:
                Va, Vw = self.Va[active], self.Vw[active]
                T = np.concatenate([self._times(Va, Vw, part) for part in parts], axis=1)
            out += T.T @ T
        return 0.5 * (out + out.T)
