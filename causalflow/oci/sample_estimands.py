"""Final stage ``"aipw_sample"``: Hajek-normalised AIPW for the sample ATT / ATE.

Notation as in :mod:`causalflow.oci.estimators` (``y``, ``t``, clipped propensity ``e``,
cross-fitted ``m0``, ``m1``), ``n1 = sum(t)``, ``n0 = n - n1``, residual ``r = y - m0``.

**ATT.** Control weights ``w_i = e_i / (1 - e_i)`` rescaled to sum to ``n1`` (Hajek)::

    tau = (1/n1) sum_{t=1} r_i - (1/n1) sum_{t=0} w_i r_i

The sample ATT, ``SATT = (1/n1) sum_{t=1} (y1_i - y0_i)``, is random only through the
treated units' unobserved ``y0``; given the covariates and assignments the error is
``(1/n1) [sum_{t=1} eps0_i - sum_{t=0} w_i eps0_i]`` (plus the nuisance bias), whose variance is::

    V = (1/n1^2) [ n1 s0^2 + sum_{t=0} w_i^2 r_i^2 ],     s0^2 = (1/n1) sum_{t=0} w_i r_i^2

(``s0^2``: the control noise variance among controls that resemble the treated). The
influence-function variance of :func:`causalflow.oci.estimators.aipw_att` adds the
variance of the unit effects among the treated, which the SATT does not have, so its
intervals over-cover the SATT (Imbens 2004, "Nonparametric estimation of average
treatment effects under exogeneity: a review", Rev. Econ. Stat. 86(1), section 3.3;
Imbens and Wooldridge 2009, J. Econ. Lit. 47(1), section 5.1; Abadie and Imbens 2006,
Econometrica 74(1), for the conditional variance of matching estimators).

**ATE.** Arm weights ``1/e`` and ``1/(1-e)`` rescaled to sum to ``n`` in their arm::

    psi_i = m1_i - m0_i + a1_i t_i (y_i - m1_i) - a0_i (1 - t_i)(y_i - m0_i),   tau = mean(psi)

with the influence-function standard error ``sd(psi) / sqrt(n)``. For the sample ATE this
is conservative (it includes the variance of the unit effects); it is kept because the
SATE also needs ``m1`` on controls and ``m0`` on treated units outside the other arm's
support, whose extrapolation error the conditional variance does not see.

The ATO has no sample version here: the runner uses the augmented overlap weights.
"""

from __future__ import annotations

import numpy as np

from ..errors import ValidationError
from .estimators import EstimateKernel

__all__ = ["ate_hajek", "att_sample", "sample_estimate"]


def att_sample(y, t, e, m0) -> EstimateKernel:
    """Hajek AIPW estimate of the ATT with the sample-ATT standard error (module docstring).

    ``influence`` is empty: the standard error is not a mean of unit influences.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([1.0, 3.0, 2.0, 5.0]); t = np.array([0.0, 1.0, 0.0, 1.0])
    >>> k = att_sample(y, t, np.full(4, 0.5), np.zeros(4))
    >>> k.estimate                      # mean(y | t=1) - mean(y | t=0) with equal weights
    2.5
    >>> round(k.std_error ** 2, 12)     # (2 * 2.5 + (1 + 4)) / 4, s0^2 = 2.5
    2.5
    """
    y, t, e, m0 = (np.asarray(a, dtype=float) for a in (y, t, e, m0))
    treated = t == 1
    control = ~treated
    n1 = int(treated.sum())
    if n1 == 0 or control.sum() == 0:
        raise ValidationError("t: the ATT needs treated and control units")
    r = y - m0
    w = e[control] / (1 - e[control])
    w = w * (n1 / w.sum())
    correction = float(w @ r[control]) / n1
    tau = float(r[treated].mean()) - correction
    s0 = float(w @ r[control] ** 2) / n1
    se = float(np.sqrt(n1 * s0 + float((w**2) @ (r[control] ** 2)))) / n1
    mu1 = float(y[treated].mean())
    return EstimateKernel(tau, se, np.empty(0), mu1, mu1 - tau, len(y))


def ate_hajek(y, t, e, m0, m1) -> EstimateKernel:
    """Hajek AIPW estimate of the ATE with the influence-function standard error.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([1.0, 3.0, 2.0, 5.0]); t = np.array([0.0, 1.0, 0.0, 1.0])
    >>> ate_hajek(y, t, np.full(4, 0.5), np.zeros(4), np.zeros(4)).estimate
    2.5
    """
    y, t, e, m0, m1 = (np.asarray(a, dtype=float) for a in (y, t, e, m0, m1))
    n = len(y)
    if t.sum() == 0 or t.sum() == n:
        raise ValidationError("t: the ATE needs treated and control units")
    a1 = t / e
    a1 *= n / a1.sum()
    a0 = (1 - t) / (1 - e)
    a0 *= n / a0.sum()
    psi1 = m1 + a1 * (y - m1)
    psi0 = m0 + a0 * (y - m0)
    psi = psi1 - psi0
    tau = float(psi.mean())
    influence = psi - tau
    se = float(np.sqrt(np.sum(influence**2))) / n
    return EstimateKernel(tau, se, influence, float(psi1.mean()), float(psi0.mean()), n)


def sample_estimate(estimand: str, y, t, e, m0, m1) -> EstimateKernel:
    """Dispatch for the runner's ``"aipw_sample"`` final stage (ATT, ATE)."""
    if estimand == "ATT":
        return att_sample(y, t, e, m0)
    if estimand == "ATE":
        return ate_hajek(y, t, e, m0, m1)
    raise ValidationError(f"estimand: 'aipw_sample' covers ATT and ATE, not {estimand!r}")
