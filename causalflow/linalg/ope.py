r"""Off-policy value estimates from logged decisions: inverse propensity and doubly robust.

Logged rows i = 1..n: context :math:`x_i`, arm :math:`a_i` drawn with the logging policy's
probability :math:`p_i = \mu(a_i \mid x_i)`, reward :math:`y_i`. A target policy puts
probability :math:`\pi(a \mid x_i)` on each arm; :math:`\hat q(x, a)` is a reward model.
The value :math:`V(\pi) = E_x \sum_a \pi(a \mid x)\, E[y \mid x, a]` is estimated by the
means of the per-row terms (Horvitz and Thompson 1952; Dudík, Langford and Li 2011):

.. math::

    \hat V_{IPS} = \frac1n \sum_i \frac{\pi(a_i \mid x_i)}{p_i} y_i, \qquad
    \hat V_{DR} = \frac1n \sum_i \Big[\sum_a \pi(a \mid x_i)\hat q(x_i, a)
        + \frac{\pi(a_i \mid x_i)}{p_i}\big(y_i - \hat q(x_i, a_i)\big)\Big].

Both are unbiased with the true propensities; DR stays consistent when either the
propensities or the reward model are right and usually has a smaller variance. Standard
errors are those of a mean of the terms: :math:`s/\sqrt n`, or with clusters
:math:`\sqrt{G/(G-1) \sum_g (\sum_{i \in g} (t_i - \hat V))^2} / n`. A difference of two
policies' values on the same rows is the mean of the differences of their terms.

References
----------
Dudík, M., Langford, J. and Li, L. (2011). Doubly robust policy evaluation and learning.
ICML 2011, 1097-1104.

Examples
--------
>>> y = np.array([1.0, 0.0, 2.0]); logged = np.array([0, 1, 1]); p = np.array([0.5, 0.5, 0.25])
>>> target = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
>>> ips, dr = policy_terms(y, logged, p, target, np.zeros((3, 2)))
>>> ips.tolist(), bool(np.allclose(ips, dr))
([2.0, 0.0, 4.0], True)
>>> [round(v, 6) for v in mean_se(ips)]
[2.0, 1.154701]
"""

from __future__ import annotations

import numpy as np

__all__ = ["mean_se", "policy_terms"]


def policy_terms(y: np.ndarray, logged: np.ndarray, propensity: np.ndarray, target: np.ndarray,
                 q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row IPS and DR terms (n,) of a target policy ``target`` (n, A) from rewards y (n,),
    logged arm indices (n,), their logging probabilities (n,) and a reward model q (n, A)."""
    rows = np.arange(len(y))
    ratio = target[rows, logged] / propensity
    ips = ratio * y
    dr = (target * q).sum(axis=1) + ratio * (y - q[rows, logged])
    return ips, dr


def mean_se(terms: np.ndarray, clusters: np.ndarray | None = None) -> tuple[float, float]:
    """Mean of the terms and its standard error (cluster-robust with cluster codes)."""
    n = len(terms)
    mean = float(terms.mean())
    if clusters is None:
        return mean, float(terms.std(ddof=1) / np.sqrt(n))
    sums = np.bincount(clusters, weights=terms - mean)
    sums = sums[np.bincount(clusters) > 0]
    G = len(sums)
    return mean, float(np.sqrt(G / (G - 1) * (sums ** 2).sum()) / n)
