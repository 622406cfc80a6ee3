"""Final stage ``"tmle"``: targeted outcome predictions for a bounded continuous outcome.

Targeted maximum likelihood (van der Laan and Rubin 2006, Int. J. Biostat. 2(1)) with the
logistic fluctuation of Gruber and van der Laan (2010, "A targeted maximum likelihood
estimator of a causal effect on a bounded continuous outcome", Int. J. Biostat. 6(1)).
The outcome is mapped to ``[0, 1]`` by the observed range ``[a, b]``, ``y* = (y - a)/(b - a)``;
each arm's cross-fitted prediction ``m*_k`` (clipped to ``[delta, 1 - delta]``) is moved by
one scalar ``eps_k`` on the logit scale, fitted by weighted quasi-binomial maximum
likelihood on arm ``k`` with the clever covariate as the weight (the weighted fluctuation
of Robins, Sued, Lei-Gomez and Rotnitzky 2007, Stat. Sci. 22(4), which keeps the shift
the same for every unit instead of ``eps H`` growing without bound where ``e`` is small)::

    logit m*_k(eps) = logit m*_k + eps_k,     weights  ATE: H_1 = 1/e, H_0 = 1/(1-e);  ATT: H_0 = e/(1-e)

Its score equation is ``sum_{t=k} H_k (y*_i - m*_k(eps)) = 0``: the targeted predictions
leave no weighted residual, so the AIPW estimators of
:mod:`causalflow.oci.sample_estimands` (Hajek or not) become the plug-in estimates
``mean(m1 - m0)`` (ATE) and ``mean_{t=1}(y - m0)`` (ATT), and their standard errors apply
unchanged. Unlike the AIPW correction, the targeted predictions stay inside ``[a, b]``.

The ATT leaves ``m1`` as it is (its plug-in uses the treated units' outcomes). The ATO has
no targeted version here: the runner uses the augmented overlap weights for it.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logit

from ..errors import ValidationError

__all__ = ["fluctuate", "target"]

_DELTA = 1e-4      # bound of the scaled predictions away from 0 and 1
_EPS_MAX = 64.0    # cap of the logit shift


def fluctuate(y01, m01, w) -> float:
    """Weighted quasi-binomial maximum likelihood ``eps`` of ``logit m(eps) = logit m01 + eps``.

    The likelihood ``sum w [y log m(eps) + (1 - y) log(1 - m(eps))]`` is concave in ``eps``
    and its score ``sum w (y - m(eps))`` decreases, so the root is bracketed and found by
    Brent's method; it is capped at ``|eps| <= 64`` (an arm whose outcomes all sit at one
    end of the range has no finite root).

    Examples
    --------
    >>> import numpy as np
    >>> eps = fluctuate(np.array([0.6, 0.8]), np.array([0.5, 0.5]), np.ones(2))
    >>> round(float(1 / (1 + np.exp(-eps))), 10)     # one shift fits the mean 0.7
    0.7
    """
    y01, w = np.asarray(y01, float), np.asarray(w, float)
    offset = logit(np.asarray(m01, float))

    def score(eps):
        return float(w @ (y01 - expit(offset + eps)))

    lo, hi = -1.0, 1.0
    while score(lo) < 0 and lo > -_EPS_MAX:
        lo *= 2
    while score(hi) > 0 and hi < _EPS_MAX:
        hi *= 2
    if score(lo) < 0:
        return lo
    if score(hi) > 0:
        return hi
    return float(brentq(score, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps))


def target(estimand: str, y, t, e, m0, m1) -> tuple[np.ndarray, np.ndarray]:
    """Targeted ``(m0, m1)`` for the ATE or ATT (module docstring), on the outcome's scale.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=500); e = 1 / (1 + np.exp(-x)); t = (rng.random(500) < e).astype(float)
    >>> y = x + t + rng.normal(size=500)
    >>> m0, m1 = target("ATE", y, t, e, np.zeros(500), np.ones(500))   # poor initial fits
    >>> w0 = (1 - t) / (1 - e)
    >>> round(float(w0 @ (y - m0)), 8) == 0                          # no weighted residual left
    True
    """
    y, t, e, m0, m1 = (np.asarray(a, dtype=float) for a in (y, t, e, m0, m1))
    if estimand not in ("ATE", "ATT"):
        raise ValidationError(f"estimand: 'tmle' targets ATT and ATE, not {estimand!r}")
    lo, hi = float(y.min()), float(y.max())
    if not hi > lo:
        return m0.copy(), m1.copy()
    scale = hi - lo
    y01 = (y - lo) / scale

    def fluctuated(m, arm, h):
        m01 = np.clip((m - lo) / scale, _DELTA, 1 - _DELTA)
        return lo + scale * expit(logit(m01) + fluctuate(y01[arm], m01[arm], h[arm]))

    m0_t = fluctuated(m0, t == 0, e / (1 - e) if estimand == "ATT" else 1 / (1 - e))
    m1_t = m1.copy() if estimand == "ATT" else fluctuated(m1, t == 1, 1 / e)
    return m0_t, m1_t
