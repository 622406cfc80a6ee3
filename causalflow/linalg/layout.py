r"""Where each coefficient sits in the Lin (2013) design, and the delta vectors built on it.

The regressors are :math:`X = [1, D_1..D_J, X_c, D_1 X_c, .., D_J X_c]` (DESIGN.md) with J
arms besides control and q centred covariates, so p = (1 + J)(1 + q). Arms are numbered
by their code: 1..J (0 is control). With covariates centred, arm j's average effect is
its coefficient, and at a covariate shift :math:`\bar x` (the mean of the centred
covariates over a subgroup):

.. math::

    d^{effect}_j(\bar x) = e_{D_j} + \sum_l \bar x_l\, e_{D_j X_l}, \qquad
    d^{level}(\bar x) = e_1 + \sum_l \bar x_l\, e_{X_l}

(the effect of arm j, and the control arm's mean outcome, at those covariates).

Examples
--------
>>> layout = CoefLayout(n_arms=2, q=1)
>>> layout.p, layout.arm(2), layout.interactions(2)
(6, 2, slice(5, 6, None))
>>> layout.effect(2, np.array([0.5])).tolist()
[0.0, 0.0, 1.0, 0.0, 0.0, 0.5]
>>> layout.names(["t[a]", "t[b]"], ["x"])
['Intercept', 't[a]', 't[b]', 'x', 't[a]:x', 't[b]:x']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CoefLayout"]


@dataclass(frozen=True, slots=True)
class CoefLayout:
    """The layout ``[1, D, Xc, D x Xc]`` of J arms and q covariates.

    Attributes
    ----------
    n_arms : J, arms besides control
    q : number of (expanded) covariate columns
    """

    n_arms: int
    q: int

    @property
    def p(self) -> int:
        return (1 + self.n_arms) * (1 + self.q)

    def arm(self, j: int) -> int:
        """Column of arm j's indicator (j = 1..J)."""
        return j

    @property
    def covariates(self) -> slice:
        """Columns of the centred covariates."""
        return slice(1 + self.n_arms, 1 + self.n_arms + self.q)

    def interactions(self, j: int) -> slice:
        """Columns of arm j's interactions with the covariates (j = 1..J)."""
        start = 1 + self.n_arms + self.q * j
        return slice(start, start + self.q)

    def effect(self, j: int, shift: np.ndarray | None = None) -> np.ndarray:
        """Delta vector of arm j's effect at covariate shift ``shift`` (q,; None: 0)."""
        d = np.zeros(self.p)
        d[self.arm(j)] = 1.0
        if shift is not None and self.q:
            d[self.interactions(j)] = shift
        return d

    def effects(self, shift: np.ndarray | None = None) -> np.ndarray:
        """(J, p): the effects of arms 1..J at one covariate shift."""
        return np.array([self.effect(j, shift) for j in range(1, self.n_arms + 1)]).reshape(self.n_arms, self.p)

    def level(self, shift: np.ndarray | None = None) -> np.ndarray:
        """Delta vector of the control arm's mean outcome at covariate shift ``shift``."""
        d = np.zeros(self.p)
        d[0] = 1.0
        if shift is not None and self.q:
            d[self.covariates] = shift
        return d

    def names(self, arm_names: list[str], covariate_names) -> list[str]:
        """Names of the p columns, in order (``arm:covariate`` for an interaction)."""
        names = ["Intercept", *arm_names, *covariate_names]
        return names + [f"{a}:{c}" for a in arm_names for c in covariate_names]
