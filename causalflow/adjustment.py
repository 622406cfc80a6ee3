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
import pandas as pd

from .effects import COLUMNS, Effects
from .errors import ValidationError
from .linalg.multitest import adjust_pvalues, maxt_adjusted_pvalues, maxt_critical_value

__all__ = ["ADJUSTED_COLUMNS", "AdjustedEffects", "adjust_effects"]

ADJUSTED_COLUMNS = ("p_value_adjusted", "sim_ci_lower", "sim_ci_upper")
Method = Literal["holm", "bonferroni", "bh", "by", "maxt"]


@dataclass(frozen=True, repr=False)  # keep the readable table of Effects.__repr__
class AdjustedEffects(Effects):
    """Effects with multiple-testing adjusted p-values and simultaneous intervals.

    Attributes (besides those of :class:`~causalflow.effects.Effects`)
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

    def to_dicts(self) -> list[dict]:
        rows = Effects.to_dicts(self)
        for i, row in enumerate(rows):
            row["p_value_adjusted"] = float(self.p_value_adjusted[i])
            row["sim_ci_lower"] = float(self.sim_ci_lower[i])
            row["sim_ci_upper"] = float(self.sim_ci_upper[i])
        return rows

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.to_dicts(), columns=list(COLUMNS) + list(ADJUSTED_COLUMNS))

    def to_dict(self) -> dict:
        out = Effects.to_dict(self)
        out["columns"] = list(COLUMNS) + list(ADJUSTED_COLUMNS)
        out["adjustment"] = {"method": self.method, "critical_value": self.critical_value}
        return out

    def _table(self) -> tuple[list[str], list[list[str]]]:
        header, body = Effects._table(self)
        at = header.index("p_value") + 1
        header = header[:at] + [f"p_adj ({self.method})", f"simultaneous {1 - self.alpha:.0%} CI"] + header[at:]
        body = [row[:at] + [f"{self.p_value_adjusted[i]:.3g}",
                            f"[{self.sim_ci_lower[i]:.4g}, {self.sim_ci_upper[i]:.4g}]"] + row[at:]
                for i, row in enumerate(body)]
        return header, body


def adjust_effects(effects: Effects, method: Method = "holm", *,
                   seed: int | np.random.Generator = 0) -> AdjustedEffects:
    """Adjust the p-values of all effects of one call and add simultaneous intervals.

    ``seed`` fixes the simulation of the max-t distribution when there are more than five
    correlated effects (see :func:`causalflow.linalg.multitest.maxt_critical_value`).

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 300), "a": rng.normal(size=300)})
    >>> df["b"] = df.a + rng.normal(size=300)
    >>> eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(y=["a", "b"]).fit(
    ...     cf.LinearModel).infer_effect()
    >>> adj = adjust_effects(eff, "bonferroni")
    >>> 1.96 < adj.critical_value < 2.24     # correlated metrics: below Bonferroni's 2.241
    True
    """
    if method not in ("holm", "bonferroni", "bh", "by", "maxt"):
        raise ValidationError(f"method: must be 'holm', 'bonferroni', 'bh', 'by' or 'maxt', got {method!r}")
    if not isinstance(effects, Effects):
        raise ValidationError("adjust: needs an Effects record")
    est, se = effects.estimate, effects.std_error
    if len(est) == 0:
        raise ValidationError("adjust: no effects to adjust")
    if not (np.all(np.isfinite(est)) and np.all(se > 0) and np.all(np.isfinite(effects.cov))):
        raise ValidationError("adjust: every effect needs a finite estimate and a positive standard error")
    p = np.array([row["p_value"] for row in Effects.to_dicts(effects)])
    t = est / se
    if method == "maxt":
        p_adj = maxt_adjusted_pvalues(t, effects.cov, seed=seed)
    else:
        p_adj = adjust_pvalues(p, method)
    c = maxt_critical_value(effects.cov, effects.alpha, seed=seed).critical_value
    return AdjustedEffects(records=effects.records, cov=effects.cov, alpha=effects.alpha,
                           model=effects.model, conditions=effects.conditions, method=method,
                           p_value_adjusted=p_adj, critical_value=float(c),
                           sim_ci_lower=est - c * se, sim_ci_upper=est + c * se)
