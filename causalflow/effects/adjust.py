r"""``Effects.adjust``: multiple-testing adjusted p-values and simultaneous intervals.

The family is every effect of one ``infer_effect`` call (metrics x arms x conditions x
estimands). Adds three columns to the effects table:

* ``p_value_adjusted``: Holm, Bonferroni, Benjamini-Hochberg, Benjamini-Yekutieli (the
  kernels of :mod:`causalflow.linalg.multitest`), or ``"maxt"``: single-step max-t
  adjusted p-values :math:`P(\max_j |T_j| \ge |t_i|)` with T ~ N(0, R) and R the
  correlation of the effects' joint covariance (Hothorn, Bretz & Westfall 2008);
* ``sim_ci_lower`` / ``sim_ci_upper``: simultaneous (max-t) intervals
  :math:`\hat\tau_i \pm c\,\mathrm{se}_i` with c the (1 - alpha) quantile of
  :math:`\max_j |T_j|`: all effects are covered jointly with probability 1 - alpha,
  and c is below the Bonferroni value when the effects are correlated (shared control
  arm, correlated metrics, overlapping conditions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ValidationError
from ..linalg.multitest import adjust_pvalues, maxt_adjusted_pvalues, maxt_critical_value
from ..validate import check_choice

__all__ = ["ADJUSTED_COLUMNS", "Adjustment", "adjustment"]

ADJUSTED_COLUMNS = ("p_value_adjusted", "sim_ci_lower", "sim_ci_upper")
Method = Literal["holm", "bonferroni", "bh", "by", "maxt"]


@dataclass(frozen=True, slots=True)
class Adjustment:
    """Multiple-testing adjusted p-values and simultaneous intervals of one family of effects.

    Attributes
    ----------
    method : the p-value adjustment
    p_value_adjusted : (m,) ndarray
    critical_value : float, the max-t critical value c
    sim_ci_lower, sim_ci_upper : (m,) ndarrays, estimate -+ c * std_error
    """

    method: str
    p_value_adjusted: np.ndarray
    critical_value: float
    sim_ci_lower: np.ndarray
    sim_ci_upper: np.ndarray


def adjustment(estimate: np.ndarray, std_error: np.ndarray, cov: np.ndarray, p_value: np.ndarray,
               alpha: float, method: Method = "holm", *,
               seed: int | np.random.Generator = 0) -> Adjustment:
    """Adjust the p-values of a family of effects and add simultaneous intervals.

    ``p_value`` are the unadjusted p-values (as the record reports them); ``seed`` fixes
    the simulation of the max-t distribution when there are more than five correlated
    effects (see :func:`causalflow.linalg.multitest.maxt_critical_value`).

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 300), "a": rng.normal(size=300)})
    >>> df["b"] = df.a + rng.normal(size=300)
    >>> eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(y=["a", "b"]).fit(
    ...     cf.LinearModel).infer_effect()
    >>> adj = eff.adjust("bonferroni").adjustment
    >>> 1.96 < adj.critical_value < 2.24     # correlated metrics: below Bonferroni's 2.241
    True
    """
    check_choice("method", method, ("holm", "bonferroni", "bh", "by", "maxt"))
    est, se = np.asarray(estimate, dtype=float), np.asarray(std_error, dtype=float)
    if len(est) == 0:
        raise ValidationError("adjust: no effects to adjust")
    if not (np.all(np.isfinite(est)) and np.all(se > 0) and np.all(np.isfinite(cov))):
        raise ValidationError("adjust: every effect needs a finite estimate and a positive standard error")
    if method == "maxt":
        p_adj = maxt_adjusted_pvalues(est / se, cov, seed=seed)
    else:
        p_adj = adjust_pvalues(np.asarray(p_value, dtype=float), method)
    c = float(maxt_critical_value(cov, alpha, seed=seed).critical_value)
    return Adjustment(method, p_adj, c, est - c * se, est + c * se)
