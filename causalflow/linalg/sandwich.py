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
linearmodels ``debiased=True``) and the degrees of freedom of the t reference:

=====  =====================================  ==========================================
type   factor c                               degrees of freedom
=====  =====================================  ==========================================
HC0    1                                      n - p
HC1    n / (n - p)                            n - p
CR0    1                                      G - 1
CR1    G / (G - 1) * (n - 1) / (n - p)        G - 1
CR2    1 (Bell-McCaffrey adjusted meat)       Satterthwaite, per contrast (Pustejovsky
                                              and Tipton 2018)
CR3    (G - 1) / G (leave-one-cluster-out     Bell-McCaffrey, per contrast, from the
       jackknife, MacKinnon, Nielsen and      per-cluster cross-products (Imbens and
       Webb 2023)                             Kolesar 2016; ``small_sample.design_dof``)
=====  =====================================  ==========================================

with n rows, p regressors and G clusters (for a metric with missing values: its complete
rows and the clusters with at least one of them). CR2 and CR3 are computed by
:mod:`causalflow.linalg.small_sample`; the others by the score pass of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse

from ..errors import ValidationError

__all__ = ["COV_TYPES", "FEW_CLUSTERS", "ClusterBlock", "CovType", "Covariance", "ScoreAccumulator",
           "default_cov_type", "small_sample_factor"]

CovType = Literal["HC0", "HC1", "CR0", "CR1", "CR2", "CR3"]
COV_TYPES = ("HC0", "HC1", "CR0", "CR1", "CR2", "CR3")

#: below this many clusters the default covariance is the small-cluster one
FEW_CLUSTERS = 50
FEW_CLUSTERS_COV_TYPE = "CR3"


def default_cov_type(n_clusters: int | None) -> str:
    """The default covariance of a design: HC1 without clusters; with clusters CR1, or below
    :data:`FEW_CLUSTERS` clusters the jackknife CR3 with t quantiles at the Bell-McCaffrey
    degrees of freedom of each contrast (the effective number of clusters, Imbens and
    Kolesar 2016). In the few-cluster simulation of benchmarks/README.md (10-40 clusters of
    5 to 200 rows, arm-dependent cluster variance; A/B and encouragement designs) its 95%
    intervals cover 93-97% where CR1 with normal quantiles covers 72-91% and CR3 with
    t(G - 1) 90.5-94.2%.

    >>> default_cov_type(None), default_cov_type(20), default_cov_type(400)
    ('HC1', 'CR3', 'CR1')
    """
    if n_clusters is None:
        return "HC1"
    return FEW_CLUSTERS_COV_TYPE if n_clusters < FEW_CLUSTERS else "CR1"


@dataclass(frozen=True, slots=True)
class Covariance:
    """One covariance estimator: its type, whether it clusters, its factor, dof and meat.

    Attributes
    ----------
    cov_type : one of :data:`COV_TYPES`
    clustered : bool, CR types
    meat : "scores" (HC0/HC1/CR0/CR1: sums of row scores), "bias_reduced" (CR2) or
        "jackknife" (CR3)

    Examples
    --------
    >>> cov = Covariance.of("CR1")
    >>> cov.clustered, cov.meat, cov.dof(n=100, p=4, n_clusters=10)
    (True, 'scores', 9)
    >>> round(cov.factor(n=100, p=4, n_clusters=10), 6)
    1.145833
    """

    cov_type: str
    clustered: bool
    meat: str

    @classmethod
    def of(cls, cov_type: str) -> Covariance:
        if cov_type not in COV_TYPES:
            raise ValidationError(f"cov_type: expected one of {', '.join(COV_TYPES)}, got {cov_type!r}")
        meat = {"CR2": "bias_reduced", "CR3": "jackknife"}.get(cov_type, "scores")
        return cls(cov_type, cov_type.startswith("CR"), meat)

    def factor(self, n: int, p: int, n_clusters: int | None) -> float:
        """The small-sample factor c of the table above."""
        return small_sample_factor(self.cov_type, n, p, n_clusters)

    def dof(self, n: int, p: int, n_clusters: int | None) -> int:
        """Residual degrees of freedom: G - 1 with clusters, else n - p (the t reference of
        HC0/HC1/CR0/CR1; CR2's and CR3's per-contrast dof replace it, and the anytime-valid
        columns use it whatever the covariance)."""
        return n_clusters - 1 if self.clustered else n - p


def small_sample_factor(cov_type: CovType, n: int, p: int, n_clusters: int | None) -> float:
    """The factor c of the table above.

    Examples
    --------
    >>> small_sample_factor("CR1", n=100, p=4, n_clusters=10)  # 10/9 * 99/96
    1.1458333333333333
    """
    if cov_type in ("HC0", "CR0", "CR2"):
        return 1.0
    if cov_type == "HC1":
        return n / (n - p)
    if cov_type == "CR3":
        return (n_clusters - 1) / n_clusters
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
