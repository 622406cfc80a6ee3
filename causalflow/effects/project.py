r"""Projection of conditional effects onto a new mix of conditions or a target population.

Both are delta-vector contrasts (DESIGN.md, "Effects are delta vectors"):

* onto weights :math:`v_c` over conditions (:math:`\sum_c v_c = 1`): for every metric, arm
  and estimand, :math:`\hat\tau_v = \sum_c v_c \hat\tau_c`, i.e. :math:`W\hat\tau` with a
  weight matrix W over the call's effects, and the joint covariance :math:`W \Sigma W'`
  (so the SE is :math:`\sqrt{v'\Sigma_{cc}v}` and projected effects keep their covariance
  across arms and metrics);
* onto a target covariate distribution given as a table: the conditional effect at the
  table's covariate means, :math:`d = e_{D_j} + \sum_l (\bar x^{target}_l - \mu_l)
  e_{D_j \times X_l}` (Lin 2013 regression: the effect is linear in the covariates), which
  carries an effect measured in one market to another with a different covariate mix.
  In an encouragement design an ITT stays an ITT, and a LATE becomes the effect of taking
  the treatment at the target's means (labelled CATE): the target's compliers are not
  observed, so this is the ATE's extrapolation (see ``infer_effect``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import ValidationError
from ..validate import to_pandas

__all__ = ["project", "projection_weights"]


def projection_weights(records, weights: Mapping) -> tuple[np.ndarray, list]:
    """Weight matrix W (m_new x m) and the records of the projected effects.

    ``weights`` maps condition texts (``"all"`` for the average effect) to weights; every
    metric x arm x estimand that has all the named conditions gets one projected effect.

    >>> recs = [dict(metric="y", arm=1, condition=c, estimand="CATE", estimate=e, n=n, dof=90,
    ...              n_clusters=None) for c, e, n in (("a", 1.0, 40), ("b", 3.0, 60))]
    >>> W, new = projection_weights(recs, {"a": 0.25, "b": 0.75})
    >>> W.tolist(), new[0]["estimate"], new[0]["condition"]
    ([[0.25, 0.75]], 2.5, "project{'a': 0.25, 'b': 0.75}")
    """
    label = "project{" + ", ".join(f"{k!r}: {v:g}" for k, v in weights.items()) + "}"
    groups: dict = {}
    for i, r in enumerate(records):
        groups.setdefault((r["metric"], r["arm"], r["estimand"]), {})[r["condition"]] = i
    rows, new = [], []
    for (metric, arm, estimand), by_cond in groups.items():
        if not all(c in by_cond for c in weights):
            continue
        w = np.zeros(len(records))
        for c, v in weights.items():
            w[by_cond[c]] = v
        first = records[by_cond[next(iter(weights))]]
        rows.append(w)
        new.append(dict(metric=metric, arm=arm, condition=label, estimand=estimand,
                        estimate=float(sum(v * records[by_cond[c]]["estimate"] for c, v in weights.items())),
                        n=int(sum(records[by_cond[c]]["n"] for c in weights)),
                        dof=first.get("dof"), n_clusters=first.get("n_clusters")))
    return np.array(rows).reshape(len(rows), len(records)), new


def _check_weights(weights) -> dict:
    if not isinstance(weights, Mapping) or not weights:
        raise ValidationError("weights: expected a non-empty mapping {condition: weight}")
    out = {}
    for key, value in weights.items():
        if not isinstance(key, str) or not key.strip():
            raise ValidationError(f"weights: condition {key!r} is not a condition text")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value):
            raise ValidationError(f"weights: weight of {key!r} must be a finite number, got {value!r}")
        out[key.strip() if key.strip() != "all" else "all"] = float(value)
    total = sum(out.values())
    if abs(total - 1.0) > 1e-9:
        raise ValidationError(f"weights: must sum to 1, they sum to {total:.12g}")
    return out


def project(effects, weights):
    """Project ``effects`` onto a mix of conditions (mapping) or a target table.

    See :meth:`causalflow.effects.Effects.project`.
    """
    if isinstance(weights, Mapping):
        weights = _check_weights(weights)
        known = {r["condition"] for r in effects.records}
        missing = [c for c in weights if c not in known]
        if missing:
            infer = getattr(effects.model, "infer_effect", None)
            if infer is None:
                raise ValidationError(f"weights: conditions {missing} were not inferred by this call and "
                                      "cannot be inferred from it")
            wanted = [c for c in dict.fromkeys([*(c for c in effects.conditions if c is not None),
                                                *weights]) if c != "all"]
            asked = {"estimands": effects.estimands} if effects.estimands else {}
            effects = infer(condition_on=wanted, alpha=effects.alpha, **asked)   # bad text: ValidationError
            if "all" in weights:
                raise ValidationError("weights: 'all' (the average effect) cannot be mixed with conditions "
                                      "that this call did not infer; infer them together first")
        W, records = projection_weights(effects.records, weights)
        if not records:
            raise ValidationError(f"weights: no metric x arm has every condition of {sorted(weights)}")
        cov = W @ effects.cov @ W.T
        return effects._derive(records, cov, [records[0]["condition"]])
    return _project_to_table(effects, weights)


def _target_means(covariates, table: pd.DataFrame) -> np.ndarray:
    """Means of the model's design covariate columns over a target table (listed columns
    or a formula: :meth:`causalflow.design.Covariates.target_means`)."""
    return covariates.target_means(table)


def _project_to_table(effects, table):
    model = effects.model
    if model is None or not hasattr(model, "effects_at_means"):
        raise ValidationError("target: projection onto a table needs effects from a fitted model")
    try:
        frame = to_pandas(table)
    except Exception as exc:  # noqa: BLE001 (name the argument, keep the reason)
        raise ValidationError(f"target: expected a pandas, polars or pyarrow table ({exc})") from None
    if len(frame) == 0:
        raise ValidationError("target: the table has no rows")
    means = _target_means(model.covariates, frame)
    asked = {}
    if effects.estimands:  # a LATE has no value at a target's means (its compliers are unseen): the ATE
        asked["estimands"] = tuple(dict.fromkeys("ATE" if e == "LATE" else e for e in effects.estimands))
    return model.effects_at_means(f"target table ({len(frame)} rows)", means, effects.alpha, **asked)
