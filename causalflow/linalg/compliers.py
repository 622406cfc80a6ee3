r"""Means among compliers: Wald ratios of weighted arm means, their influence and jackknife.

In an encouragement design with instrument arm j vs control and take-up :math:`T`, under
monotonicity (Imbens and Angrist 1994) the mean of any quantity among the compliers is
identified by a Wald ratio (Abadie 2003, "Semiparametric instrumental variable estimation
of treatment response models", *J. Econometrics* 113, 231-263, the :math:`\kappa` weights):

.. math::

    \theta = \frac{E_w[V \mid Z=j] - E_w[V \mid Z=0]}{E_w[T \mid Z=j] - E_w[T \mid Z=0]},

with :math:`E_w` the (weighted) mean over the rows of that arm (within a subgroup, for a
condition). With :math:`V = x\,D_j` and :math:`T = D_j` (take-up of arm j) it is the
compliers' covariate mean; with :math:`V = y\,(1 - D)` and :math:`T = 1 - D` (not treated)
the compliers' mean untreated outcome :math:`E[Y(0) \mid \text{complier}]`.

Every quantity is a function of six weighted sums per arm, :math:`\sum w`, :math:`\sum wT`,
:math:`\sum wV` (:func:`arm_sums`), which add up over row blocks and clusters: the
leave-one-cluster-out jackknife (CR3) recomputes :math:`\theta_{(-g)}` exactly from the
totals minus cluster g's sums. The influence of row i on :math:`\hat\theta` (so that
:math:`\hat\theta - \theta \approx \sum_i \psi_i`; the same scale as the 2SLS scores of
:mod:`causalflow.linalg.sandwich`) is

.. math::

    \psi_i = \frac{\pm w_i}{W_a\,\Delta T}\,\big(V_i - \theta T_i - \kappa\big),
    \qquad \kappa = \bar V_a - \theta \bar T_a,

with + for the rows of arm j, - for control rows, :math:`W_a` the weight of the row's arm
and :math:`\Delta T` the denominator; :math:`\kappa` is the same for both arms (that is
what :math:`\theta = \Delta V / \Delta T` says). Rows of other arms, or outside the
condition, have :math:`\psi_i = 0`. Equivalently, :math:`\hat\theta` is the just-identified
IV slope of V on T instrumented by :math:`1\{Z = j\}` over those rows, and
:math:`\psi_i` its (HC0) score.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> z = rng.integers(0, 2, 2000).astype(float)
>>> x = rng.normal(size=2000)
>>> d = z * (rng.random(2000) < 1 / (1 + np.exp(-2 * x)))      # compliers have larger x
>>> sums = arm_sums(x[:, None] * d[:, None], d, z, 1 - z, None)
>>> ratio = WaldRatio.from_sums(sums)
>>> float(np.round(ratio.theta[0], 3)), float(np.round(x[d == 1].mean(), 3))   # one-sided: the takers
(0.633, 0.633)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ValidationError

__all__ = ["WaldRatio", "arm_sums", "cluster_arm_sums", "wald_theta"]


def _columns(V, T, w):
    V = np.asarray(V, dtype=float)
    V = V[:, None] if V.ndim == 1 else V
    ones = np.ones(len(T)) if w is None else np.asarray(w, dtype=float)
    return np.column_stack([ones, ones * T, ones[:, None] * V])     # [w, wT, wV]


def arm_sums(V, T, in_arm, in_control, w) -> np.ndarray:
    """(2, 2 + L) weighted sums ``[sum w, sum w T, sum w V_1..V_L]`` over the rows of arm j
    (first row) and of control (second row); ``in_arm`` / ``in_control`` are 0/1 (a
    condition or another arm is 0 in both)."""
    cols = _columns(V, T, w)
    return np.stack([np.asarray(in_arm, dtype=float) @ cols, np.asarray(in_control, dtype=float) @ cols])


def cluster_arm_sums(V, T, in_arm, in_control, w, codes, n_clusters: int) -> np.ndarray:
    """(G, 2, 2 + L): :func:`arm_sums` of every cluster (codes 0..G-1)."""
    cols = _columns(V, T, w)
    out = np.empty((n_clusters, 2, cols.shape[1]))
    for a, member in enumerate((in_arm, in_control)):
        member = np.asarray(member, dtype=float)
        for c in range(cols.shape[1]):
            out[:, a, c] = np.bincount(codes, weights=member * cols[:, c], minlength=n_clusters)
    return out


def wald_theta(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ratio of :func:`arm_sums` (any leading axes: (..., 2, 2 + L)) and its denominator.

    Returns (theta (..., L), first stage (...,)); NaN where an arm has no weight.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums[..., 1:] / sums[..., :1]            # (..., 2, 1 + L): [T bar, V bar]
        diff = means[..., 0, :] - means[..., 1, :]
        return diff[..., 1:] / diff[..., :1], diff[..., 0]


@dataclass(frozen=True, slots=True)
class WaldRatio:
    """A Wald ratio of arm means and what its influence needs.

    Attributes
    ----------
    theta : (L,) the ratio of each numerator column
    first_stage : float, the denominator :math:`E_w[T|Z=j] - E_w[T|Z=0]`
    weight : (2,) total weight of the rows of arm j and of control
    level : (L,) :math:`\\kappa = \\bar V_a - \\theta \\bar T_a` (equal for both arms)
    sums : (2, 2 + L) the sums it was computed from
    """

    theta: np.ndarray
    first_stage: float
    weight: np.ndarray
    level: np.ndarray
    sums: np.ndarray

    @classmethod
    def from_sums(cls, sums: np.ndarray, what: str = "the ratio") -> WaldRatio:
        """From :func:`arm_sums`; a ValidationError (naming ``what``) when an arm has no rows
        or the denominator is 0 (no compliers)."""
        weight = sums[:, 0]
        if not np.all(weight > 0):
            side = "the encouraged arm" if weight[0] <= 0 else "control"
            raise ValidationError(f"{what}: {side} has no rows, so the compliers are not identified")
        theta, first = wald_theta(sums)
        scale = max(1.0, float(np.abs(sums[:, 1] / weight).max()))
        if not abs(first) > 1e-12 * scale:
            raise ValidationError(f"{what}: take-up does not differ between the encouraged arm and "
                                  "control (first stage 0), so there are no compliers to average over")
        level = sums[0, 2:] / weight[0] - theta * sums[0, 1] / weight[0]
        return cls(theta, float(first), weight, level, sums)

    def influence(self, V, T, in_arm, in_control, w) -> np.ndarray:
        """(n, L) influence :math:`\\psi_i` of the rows on :math:`\\hat\\theta` (module docstring)."""
        V = np.asarray(V, dtype=float)
        V = V[:, None] if V.ndim == 1 else V
        scale = (np.asarray(in_arm, dtype=float) / self.weight[0]
                 - np.asarray(in_control, dtype=float) / self.weight[1]) / self.first_stage
        if w is not None:
            scale = scale * w
        return scale[:, None] * (V - np.outer(T, self.theta) - self.level)

    def summed_influence(self, sums: np.ndarray) -> np.ndarray:
        """(..., L) the sum of :meth:`influence` over a set of rows from its :func:`arm_sums`
        (..., 2, 2 + L), e.g. per cluster: the influence is linear in the rows' sums.

        >>> rng = np.random.default_rng(1)
        >>> a = rng.integers(0, 2, 50); t = rng.random(50); v = rng.normal(size=(50, 2)); w = rng.random(50)
        >>> ratio = WaldRatio.from_sums(arm_sums(v, t, a, 1 - a, w))
        >>> codes = rng.integers(0, 5, 50)
        >>> psi = ratio.influence(v, t, a, 1 - a, w)
        >>> direct = np.stack([psi[codes == g].sum(axis=0) for g in range(5)])
        >>> bool(np.allclose(ratio.summed_influence(cluster_arm_sums(v, t, a, 1 - a, w, codes, 5)), direct))
        True
        """
        centred = sums[..., 2:] - sums[..., 1:2] * self.theta - sums[..., :1] * self.level   # (..., 2, L)
        return (centred[..., 0, :] / self.weight[0] - centred[..., 1, :] / self.weight[1]) / self.first_stage
