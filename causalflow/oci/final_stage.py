"""The optional final stage through the grammar's weighted ``LinearModel``.

With ``spec.final_stage == "weighted_linear"`` the effect is the treatment
coefficient of a weighted least-squares regression ``y ~ 1 + t + Xc + t x Xc``
(covariates centred at their weighted mean, Lin 2013) with the estimand's balancing
weights (ATE ``1/e``, ``1/(1-e)``; ATT ``1``, ``e/(1-e)``; ATO ``1-e``, ``e``). A
weighted regression with the treatment, an intercept and inverse-propensity weights
is doubly robust (Robins, Sued, Lei-Gomez & Rotnitzky 2007, Stat. Sci., comment on
Kang & Schafer). It is fitted by the same call an LLM agent makes:
``cf.ExperimentData(df, intent_to_treat=t, propensity=p).add_metric(y, covariates).fit(cf.LinearModel("HC0"))``
where ``p`` is read as P(treatment), weighting treated rows by 1/p and control rows by
1/(1 - p): ``p = c / w`` on treated and ``p = 1 - c / w`` on control rows gives every row
``w / c`` (``c = min(w) / 2`` keeps ``c / w`` in (0, 1/2]; least squares is invariant to
the scale of the weights). The standard error is the HC0 sandwich and
treats the weights as known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ValidationError
from .estimators import EstimateKernel

__all__ = ["require", "weighted_linear_effect"]


def require() -> None:
    """Raise :class:`ValidationError` when the grammar's LinearModel is not importable."""
    try:
        from ..data import ExperimentData  # noqa: F401
        from ..models.linear import LinearModel  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the core ships with the package
        raise ValidationError(f"Spec.final_stage: 'weighted_linear' needs causalflow's LinearModel, "
                              f"which cannot be imported here ({exc}); use 'aipw'") from None


def weighted_linear_effect(covariates: pd.DataFrame, y, t, w) -> EstimateKernel:
    """Effect and HC0 standard error from the grammar's weighted LinearModel.

    ``mu0`` is the fitted intercept (the adjusted control mean at the weighted
    covariate mean) and ``mu1 = mu0 + estimate``; ``influence`` is empty.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> x = np.linspace(-1, 1, 40); t = np.tile([0.0, 1.0], 20); y = 1 + 2 * t + x
    >>> k = weighted_linear_effect(pd.DataFrame({"x": x}), y, t, np.ones(40))
    >>> round(k.estimate, 10)
    2.0
    """
    from ..data import ExperimentData
    from ..models.linear import LinearModel

    w = np.asarray(w, float)
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValidationError("weights: the weighted final stage needs finite positive weights")
    reserved = {"__t__", "__y__", "__p__"}
    clash = reserved & set(covariates.columns)
    if clash:
        raise ValidationError(f"covariates: column name {sorted(clash)[0]!r} is reserved")
    frame = covariates.reset_index(drop=True).copy()
    frame["__t__"] = np.asarray(t, dtype=int)
    frame["__y__"] = np.asarray(y, float)
    share = w.min() / 2 / w  # the row's own-arm probability: weight 1 / share = w / c
    frame["__p__"] = np.where(frame["__t__"] == 1, share, 1.0 - share)
    fitted = (ExperimentData(frame, intent_to_treat="__t__", propensity="__p__")
              .add_metric(y="__y__", exogenous_covariates=list(covariates.columns))
              .fit(LinearModel(cov_type="HC0")))
    row = fitted.infer_effect().to_frame().iloc[0]
    intercept = float(fitted.params()["__y__"].iloc[0])
    tau, se = float(row["estimate"]), float(row["std_error"])
    return EstimateKernel(tau, se, np.empty(0), intercept + tau, intercept, len(frame))
