r"""The in-memory backend: weighted cross-products of a design, accumulated in row blocks.

For row blocks :math:`b` the moments of the generalized 2SLS fit (DESIGN.md) are sums,

.. math::  Z'WZ = \sum_b Z_b'W_bZ_b, \quad Z'WX = \sum_b Z_b'W_bX_b, \quad Z'WY = \sum_b Z_b'W_bY_b,

and each block's three products are one GEMM :math:`Z_b'W_b[Z_b\ X_b\ Y_b]` over the
column-major block that :meth:`causalflow.design.DesignSource.matrix` fills. This module is
the one producer of :class:`~causalflow.linalg.twosls.Moments` (the fit, the monitor's
looks); the warehouse backends will produce the same record.
"""

from __future__ import annotations

import numpy as np

from ..linalg.threads import single_blas_thread
from ..linalg.twosls import Moments

__all__ = ["BLOCK_ROWS", "accumulate", "block_moments"]

BLOCK_ROWS = 1 << 16


def block_moments(block: np.ndarray, w: np.ndarray | None, p: int, iv: bool, n_metrics: int,
                  outcome_gram: bool = False) -> Moments:
    """The moments of one block ``[Z | X (iv only) | Y]`` (n_b x (p [+ p] + K)) with weights w;
    with ``outcome_gram`` also Y'WY (K x K).

    >>> Z = np.c_[np.ones(3), [0., 1., 1.]]; Y = np.array([[1.], [2.], [4.]])
    >>> block_moments(np.c_[Z, Y], None, 2, False, 1).zwy.ravel().tolist()
    [7.0, 6.0]
    """
    Z = block[:, :p]
    cross = (Z if w is None else Z * w[:, None]).T @ block  # Z'W[Z X Y]: one GEMM
    zwz = 0.5 * (cross[:, :p] + cross[:, :p].T)
    ywy = None
    if outcome_gram:
        Y = block[:, block.shape[1] - n_metrics:]
        ywy = (Y if w is None else Y * w[:, None]).T @ Y
        ywy = 0.5 * (ywy + ywy.T)
    return Moments(zwz, cross[:, p:2 * p] if iv else None, cross[:, cross.shape[1] - n_metrics:], len(block),
                   ywy)


def accumulate(source, rows: np.ndarray | None, mu: np.ndarray, metrics, block_rows: int = BLOCK_ROWS,
               outcome_gram: bool = False) -> Moments:
    """One pass over ``rows`` (None: all) of a :class:`~causalflow.design.DesignSource`:
    the moments of one group of metrics, covariates centred at ``mu`` (with ``outcome_gram``
    also Y'WY, which the conjugate Bayesian fit needs).

    >>> import pandas as pd, causalflow as cf
    >>> df = pd.DataFrame({"t": [0, 1, 0, 1], "y": [1.0, 2.0, 1.5, 2.5]})
    >>> spec = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y")
    >>> accumulate(spec.source(), None, np.zeros(0), (0,)).zwy.ravel().tolist()
    [7.0, 4.5]
    """
    buffer = source.buffer(block_rows, len(metrics))
    total = None
    with single_blas_thread():
        for rows_b in source.row_blocks(rows, block_rows):
            block, w = source.matrix(rows_b, mu, metrics, buffer)
            part = block_moments(block, w, source.p, source.iv, len(metrics), outcome_gram)
            total = part if total is None else total + part
    return total
