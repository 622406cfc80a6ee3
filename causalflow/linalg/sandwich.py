"""Sandwich covariances of delta-vector contrasts, without n x p x K score arrays.

For one outcome k, the covariance of the coefficients is :math:`V_k = c\\, A M_k A` with
the meat :math:`M_k = \\sum_g S_{gk} S_{gk}'`, :math:`S_{gk} = \\sum_{i \\in g} w_i e_{ik}
\\hat x_i` (HC: every row is its own cluster). For contrasts :math:`D_m` (m x p) the
covariance is :math:`D_m V_k D_m'`, and row i enters only through

.. math:: u_i = w_i \\, z_i' \\Pi A D_m' \\quad (1 \\times m),

so the cluster sums :math:`T_{g} = \\sum_{i\\in g} u_i \\otimes e_i` (m K values per cluster)
and their Gram matrix give the joint covariance of all m effects of all K outcomes, at a
cost linear in n and without forming per-metric score matrices.

Small-sample factors c (Stata; R ``sandwich::vcovHC`` / ``vcovCL`` with ``type="HC1"``;
linearmodels ``debiased=True``):

=====  =============================================
HC0    1
HC1    n / (n - p)
CR0    1
CR1    G / (G - 1) * (n - 1) / (n - p)
=====  =============================================

with n rows, p regressors and G clusters (for a metric with missing values: its complete
rows and the clusters with at least one of them).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse

__all__ = ["ClusterBlock", "CovType", "ScoreAccumulator", "small_sample_factor"]

CovType = Literal["HC0", "HC1", "CR0", "CR1"]


def small_sample_factor(cov_type: CovType, n: int, p: int, n_clusters: int | None) -> float:
    """The factor c of the table above.

    Examples
    --------
    >>> small_sample_factor("CR1", n=100, p=4, n_clusters=10)  # 10/9 * 99/96
    1.1458333333333333
    """
    if cov_type in ("HC0", "CR0"):
        return 1.0
    if cov_type == "HC1":
        return n / (n - p)
    return n_clusters / (n_clusters - 1) * (n - 1) / (n - p)


class ScoreAccumulator:
    """Accumulates the meat of contrast influences over row blocks.

    Call :meth:`add` once per block with ``scores`` (nb x M: the products u_i e_ik for all
    M effect-metric columns) and, for clustered covariances, either the block's
    :class:`ClusterBlock` (rows in cluster order: the sums compress) or its cluster
    ``codes`` (rows in data order: one ``np.bincount`` per column, a tight C loop). A
    cluster split across blocks simply receives several partial sums. :meth:`gram`
    returns the uncorrected meat (M x M).
    """

    def __init__(self, n_columns: int, n_clusters: int | None):
        self.n_columns = n_columns
        self._n_clusters = n_clusters
        self._gram = np.zeros((n_columns, n_columns))
        self._sums = None  # (G, M), filled from ClusterBlocks
        self._sums_t = None  # (M, G), filled by bincount

    def add(self, scores: np.ndarray, clusters: ClusterBlock | None = None,
            codes: np.ndarray | None = None) -> None:
        if clusters is not None:
            if self._sums is None:
                self._sums = np.zeros((self._n_clusters, self.n_columns))
            self._sums[clusters.ids] += clusters.indicator @ scores
        elif codes is not None:
            if self._sums_t is None:
                self._sums_t = np.zeros((self.n_columns, self._n_clusters))
            for c in range(self.n_columns):
                self._sums_t[c] += np.bincount(codes, weights=scores[:, c], minlength=self._n_clusters)
        else:
            self._gram += np.ascontiguousarray(scores.T) @ scores

    def gram(self) -> np.ndarray:
        out = self._gram
        if self._sums is not None:
            out = out + self._sums.T @ self._sums
        if self._sums_t is not None:
            out = out + self._sums_t @ self._sums_t.T
        return out


class ClusterBlock:
    """The clusters of one row block: ``indicator`` (G_b x nb sparse 0/1) and their ``ids``.

    Built once per block and reused by every pass, so a cluster sum is one sparse product.
    """

    __slots__ = ("ids", "indicator")

    def __init__(self, codes: np.ndarray):
        ids, local = np.unique(codes, return_inverse=True)
        self.ids = ids
        self.indicator = scipy.sparse.csr_matrix(
            (np.ones(len(codes)), (local, np.arange(len(codes)))), shape=(len(ids), len(codes)))
