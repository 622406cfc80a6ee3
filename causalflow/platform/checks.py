r"""Everyday experiment checks: sample-ratio mismatch (SRM) and A/A simulation.

The sample-ratio test itself is a kernel of :mod:`causalflow.linalg.srm`; this module runs
it on an experiment, and re-randomises the whole pipeline (A/A simulation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data import ExperimentData
from ..errors import ValidationError
from ..linalg.srm import (
    SRM_THRESHOLD,
    SampleRatioCheck,
    SampleRatioTest,
    cluster_arms,
    sample_ratio_test,
)
from ..models.linear import LinearModel
from ..validate import check_alpha

__all__ = ["SRM_THRESHOLD", "AASimulation", "SampleRatioCheck", "SampleRatioTest",
           "check_sample_ratio", "sample_ratio_test", "sample_ratio_warning", "simulate_aa"]


def check_sample_ratio(data, expected: Mapping | Sequence | None = None, *,
                       threshold: float = SRM_THRESHOLD) -> SampleRatioCheck:
    """Chi-square sample-ratio test of an ``ExperimentData``; see
    :meth:`causalflow.ExperimentData.check_sample_ratio`.

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> df = pd.DataFrame({"t": np.repeat([0, 1], [30, 10]), "store": np.arange(40) // 2})
    >>> check = check_sample_ratio(cf.ExperimentData(df, intent_to_treat="t", cluster_by="store"))
    >>> check.units.observed, check.clusters.observed, round(check.p_value, 4)
    ((30, 10), (15, 5), 0.0253)
    """
    if not isinstance(data, ExperimentData):
        raise ValidationError(f"data: expected an ExperimentData, got {type(data).__name__}")
    return data.check_sample_ratio(expected, threshold=threshold)


def sample_ratio_warning(data) -> str | None:
    """A one-line warning when the planned allocation is known and the check fails (p < 0.001).

    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> df = pd.DataFrame({"t": np.repeat([0, 1], [600, 400])})
    >>> sample_ratio_warning(cf.ExperimentData(df, intent_to_treat="t", propensity=0.5))[:37]
    'WARNING: sample ratio mismatch on uni'
    """
    check = getattr(getattr(data, "design", None), "sample_ratio", None)
    return None if check is None else check.warning()


# ---------------------------------------------------------------------------------------
# A/A simulation
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AASimulation:
    """False-positive rates of the whole pipeline under re-randomised (A/A) assignments.

    Attributes
    ----------
    n : int, number of re-randomisations
    alpha : float
    false_positive_rate : float
        Share of all (replication, effect) pairs with p_value < alpha.
    av_false_positive_rate : float
        The same for the anytime-valid p-value.
    mc_std_error : float
        sqrt(alpha (1 - alpha) / n): the Monte Carlo SE of one effect's rate if the
        p-values are exact.
    per_effect : pandas.DataFrame
        metric, arm, condition, estimand, false_positive_rate, av_false_positive_rate.
    p_values : (n, m) ndarray
    seed : int or None
    """

    n: int
    alpha: float
    false_positive_rate: float
    av_false_positive_rate: float
    mc_std_error: float
    per_effect: pd.DataFrame
    p_values: np.ndarray
    seed: int | None

    def to_dict(self) -> dict:
        return {"n": self.n, "alpha": self.alpha, "false_positive_rate": self.false_positive_rate,
                "av_false_positive_rate": self.av_false_positive_rate,
                "mc_std_error": self.mc_std_error, "seed": self.seed,
                "per_effect": self.per_effect.to_dict(orient="records")}

    def __str__(self) -> str:
        return (f"A/A simulation, {self.n} re-randomisations: false-positive rate "
                f"{self.false_positive_rate:.4f} at alpha {self.alpha} (MC SE per effect "
                f"{self.mc_std_error:.4f}); anytime-valid {self.av_false_positive_rate:.4f}")


def simulate_aa(data, n: int = 200, seed: int | None = 0, *, y=None,
                exogenous_covariates=None, condition_on=None, estimator=None,
                alpha: float = 0.05) -> AASimulation:
    r"""A/A test of the whole pipeline: re-randomise the assignment, refit, count rejections.

    Each replication draws a new assignment by permuting the observed one (complete
    randomisation with the observed arm sizes): across clusters when the data have
    ``cluster_by`` (every row of a cluster gets its cluster's new arm), else across
    units. The outcome is untouched, so every effect is truly zero, and the share of
    p-values below alpha estimates the false-positive rate of the whole analysis
    (covariates, covariance, conditions). An honest pipeline gives alpha up to Monte Carlo
    error :math:`\sqrt{\alpha(1-\alpha)/n}`.

    The re-randomised experiment is analysed as an A/B (or cluster) test of the
    assignment: the ``treated`` column of an encouragement design is dropped (with a
    random assignment there is no first stage), and so are per-unit propensities (the
    permutation does not follow them); a planned allocation (``propensity`` number or
    mapping) is kept.

    Parameters
    ----------
    data : ExperimentData or MetricSpec
        With an ``ExperimentData`` give ``y`` (and ``exogenous_covariates``); a
        ``MetricSpec`` (``data.add_metric(...)``) carries them.
    n : int
        Number of re-randomisations.
    seed : int or None
        Seed of the permutations.
    condition_on : optional, as in ``infer_effect``.
    estimator : optional, default ``LinearModel()`` (its default covariance).
    alpha : float

    Returns
    -------
    AASimulation

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> from causalflow.platform.checks import simulate_aa
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 300), "y": rng.normal(size=300)})
    >>> aa = simulate_aa(cf.ExperimentData(df, intent_to_treat="t"), n=40, seed=1, y="y")
    >>> aa.p_values.shape
    (40, 1)
    """
    if hasattr(data, "metrics") and hasattr(data, "covariates") and hasattr(data, "data"):
        if y is not None or exogenous_covariates is not None:
            raise ValidationError("y / exogenous_covariates: already given by the MetricSpec")
        spec = data
        y, data = list(spec.metrics), spec.data
        exogenous_covariates = spec.covariates.formula or list(spec.covariates.sources)
    if not isinstance(data, ExperimentData):
        raise ValidationError("data: expected an ExperimentData (or data.add_metric(...))")
    if y is None:
        raise ValidationError("y: name the metric(s) to simulate")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValidationError(f"n: must be a positive integer, got {n!r}")
    alpha = check_alpha(alpha)
    if isinstance(data.propensity, str):
        raise ValidationError("data: A/A re-randomisation of an adaptive design with per-unit "
                              "propensities is not supported (the permutation ignores them)")
    estimator = estimator if estimator is not None else LinearModel()
    rng = np.random.default_rng(seed)
    df = data.data
    codes = np.asarray(data.arm_codes)
    arms = np.empty(len(data.arms), dtype=object)
    arms[:] = list(data.arms)
    clusters = None if data.cluster_codes is None else np.asarray(data.cluster_codes)
    arm_of_cluster = None if clusters is None else cluster_arms(codes, clusters)
    column = data.intent_to_treat
    dtype = df[column].dtype
    p_rows, av_rows, first = [], [], None
    for _ in range(n):
        if clusters is None:
            new = rng.permutation(codes)
        else:
            new = rng.permutation(arm_of_cluster)[clusters]
        labels = arms[new] if pd.api.types.is_object_dtype(dtype) else pd.array(arms[new].tolist(), dtype=dtype)
        table = df.assign(**{column: labels})
        sim = ExperimentData(table, intent_to_treat=column, cluster_by=data.cluster_by,
                             propensity=data.propensity, control=data.control)
        frame = sim.add_metric(y=y, exogenous_covariates=exogenous_covariates).fit(
            estimator).infer_effect(condition_on=condition_on, alpha=alpha).to_frame()
        if first is None:
            first = frame[["metric", "arm", "condition", "estimand"]]
        p_rows.append(frame["p_value"].to_numpy(dtype=float))
        av_rows.append(frame["av_p_value"].to_numpy(dtype=float))
    p = np.vstack(p_rows)
    av = np.vstack(av_rows)
    per_effect = first.copy()
    per_effect["false_positive_rate"] = np.mean(p < alpha, axis=0)
    per_effect["av_false_positive_rate"] = np.mean(av < alpha, axis=0)
    p.setflags(write=False)
    return AASimulation(n=int(n), alpha=float(alpha), false_positive_rate=float(np.mean(p < alpha)),
                        av_false_positive_rate=float(np.mean(av < alpha)),
                        mc_std_error=float(np.sqrt(alpha * (1 - alpha) / n)),
                        per_effect=per_effect, p_values=p, seed=seed)
