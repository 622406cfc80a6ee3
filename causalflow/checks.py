r"""Everyday experiment checks: sample-ratio mismatch (SRM) and A/A simulation.

**Sample-ratio mismatch** (Fabijan et al. 2019, "Diagnosing sample ratio mismatch in
online controlled experiments"): with observed counts :math:`O_j` per arm and expected
shares :math:`\pi_j`, the Pearson statistic

.. math::

    X^2 = \sum_j \frac{(O_j - E_j)^2}{E_j}, \qquad E_j = \pi_j \sum_k O_k,

is :math:`\chi^2_{J-1}` when assignment worked as planned. A tiny p-value (the
convention is p < 0.001) means units were lost or duplicated unevenly between arms and
the effect estimates cannot be trusted. In a cluster-randomised design the independent
draws are the clusters, so the test is run on cluster counts; the unit-count test then
over-rejects (units of one cluster move together) and is reported for information only.

Examples
--------
>>> r = sample_ratio_test([5000, 5200], [0.5, 0.5])
>>> round(r.statistic, 4), round(r.p_value, 5), r.mismatch
(3.9216, 0.04767, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .errors import ValidationError

__all__ = ["SRM_THRESHOLD", "AASimulation", "SampleRatioCheck", "SampleRatioTest",
           "check_sample_ratio", "sample_ratio_test", "sample_ratio_warning", "simulate_aa"]

SRM_THRESHOLD = 0.001


@dataclass(frozen=True, slots=True)
class SampleRatioTest:
    """Chi-square goodness-of-fit test of the arm counts.

    Attributes
    ----------
    level : "units" or "clusters"
    arms : tuple of arm labels
    observed : tuple of int, counts per arm
    expected : tuple of float, expected counts per arm
    expected_share : tuple of float
    statistic : float, Pearson X^2
    df : int, J - 1
    p_value : float
    threshold : float, p below which ``mismatch`` is True (0.001)
    mismatch : bool
    """

    level: str
    arms: tuple
    observed: tuple
    expected: tuple
    expected_share: tuple
    statistic: float
    df: int
    p_value: float
    threshold: float
    mismatch: bool

    def to_dict(self) -> dict:
        """JSON-ready dictionary (arm labels as strings)."""
        out = {name: getattr(self, name) for name in self.__slots__}
        out["arms"] = [str(a) for a in self.arms]
        for key in ("observed", "expected", "expected_share"):
            out[key] = list(out[key])
        return out

    def __str__(self) -> str:
        verdict = "MISMATCH" if self.mismatch else "ok"
        counts = ", ".join(f"{a!r}: {o:,} (expected {e:,.1f})"
                           for a, o, e in zip(self.arms, self.observed, self.expected))
        return (f"sample ratio on {self.level}: chi2 = {self.statistic:.4g} (df {self.df}), "
                f"p = {self.p_value:.3g} -> {verdict} [{counts}]")


def sample_ratio_test(
    observed: Sequence[float],
    expected_share: Sequence[float],
    *,
    arms: Sequence | None = None,
    level: str = "units",
    threshold: float = SRM_THRESHOLD,
) -> SampleRatioTest:
    """Pearson chi-square test that the arm counts follow the planned allocation.

    Parameters
    ----------
    observed : sequence of int, shape (J,)
        Units (or clusters) per arm.
    expected_share : sequence of float, shape (J,)
        Planned share of each arm (normalised to sum to 1).
    arms : sequence, optional
        Arm labels (default 0 .. J-1).
    level : str
        "units" or "clusters" (a label for the record).
    threshold : float
        p-value below which the record flags a mismatch.

    Returns
    -------
    SampleRatioTest

    Examples
    --------
    >>> sample_ratio_test([50, 150], [0.25, 0.75], arms=["a", "b"]).p_value
    1.0
    """
    o = np.asarray(observed, dtype=float)
    s = np.asarray(expected_share, dtype=float)
    if o.ndim != 1 or o.size < 2:
        raise ValidationError(f"observed: need counts for at least two arms, got {observed!r}")
    if np.any(~np.isfinite(o)) or np.any(o < 0) or np.any(o != np.round(o)):
        raise ValidationError(f"observed: counts must be non-negative whole numbers, got {observed!r}")
    if s.shape != o.shape:
        raise ValidationError(f"expected: needs one share per arm ({o.size}), got {expected_share!r}")
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValidationError(f"expected: shares must be positive, got {expected_share!r}")
    if o.sum() == 0:
        raise ValidationError("observed: no units in any arm")
    if not 0 < threshold < 1:
        raise ValidationError(f"threshold: must lie in (0, 1), got {threshold!r}")
    labels = tuple(range(o.size)) if arms is None else tuple(arms)
    if len(labels) != o.size:
        raise ValidationError(f"arms: need {o.size} labels, got {len(labels)}")
    share = s / s.sum()
    e = share * o.sum()
    statistic = float(np.sum((o - e) ** 2 / e))
    df = o.size - 1
    p = float(stats.chi2.sf(statistic, df))
    return SampleRatioTest(level=level, arms=labels, observed=tuple(int(v) for v in o),
                           expected=tuple(float(v) for v in e),
                           expected_share=tuple(float(v) for v in share), statistic=statistic,
                           df=df, p_value=p, threshold=float(threshold),
                           mismatch=bool(p < threshold))


# ---------------------------------------------------------------------------------------
# SRM on an ExperimentData
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SampleRatioCheck:
    """Sample-ratio check of an experiment: on units, and on clusters when clustered.

    Attributes
    ----------
    units : SampleRatioTest
    clusters : SampleRatioTest or None
        The valid test of a cluster-randomised design (clusters are the independent draws).
    expected_source : str
        Where the expected shares came from: "argument", "design" (the planned
        allocation given as ``propensity``) or "equal split (assumed)".
    statistic, p_value, mismatch :
        Those of ``clusters`` when present, else of ``units``.
    """

    units: SampleRatioTest
    clusters: SampleRatioTest | None
    expected_source: str

    @property
    def primary(self) -> SampleRatioTest:
        return self.clusters if self.clusters is not None else self.units

    @property
    def statistic(self) -> float:
        return self.primary.statistic

    @property
    def p_value(self) -> float:
        return self.primary.p_value

    @property
    def mismatch(self) -> bool:
        return self.primary.mismatch

    def to_dict(self) -> dict:
        return {"units": self.units.to_dict(),
                "clusters": None if self.clusters is None else self.clusters.to_dict(),
                "expected_source": self.expected_source, "statistic": self.statistic,
                "p_value": self.p_value, "mismatch": self.mismatch}

    def __str__(self) -> str:
        lines = [str(self.units)] + ([str(self.clusters)] if self.clusters is not None else [])
        lines.append(f"expected shares: {self.expected_source}")
        return "\n".join(lines)


def _cluster_arms(arm_codes: np.ndarray, cluster_codes: np.ndarray) -> np.ndarray:
    """Arm of each cluster: that of its first row (clusters are randomised as a whole)."""
    _, first = np.unique(cluster_codes, return_index=True)
    return arm_codes[first]


def check_sample_ratio(data, expected: Mapping | Sequence | None = None, *,
                       threshold: float = SRM_THRESHOLD) -> SampleRatioCheck:
    """Chi-square sample-ratio test of an ``ExperimentData``.

    Parameters
    ----------
    data : ExperimentData
    expected : mapping arm -> share, or shares in arm order (control first), optional
        Default: the planned allocation of the design (``propensity`` given as a number or
        a mapping), else an equal split.
    threshold : float
        p below which a mismatch is flagged (0.001).

    Returns
    -------
    SampleRatioCheck

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> df = pd.DataFrame({"t": np.repeat([0, 1], [30, 10]), "store": np.arange(40) // 2})
    >>> check = check_sample_ratio(cf.ExperimentData(df, intent_to_treat="t", cluster_by="store"))
    >>> check.units.observed, check.clusters.observed, round(check.p_value, 4)
    ((30, 10), (15, 5), 0.0253)
    """
    arms = tuple(data.arms)
    if expected is None:
        planned = getattr(data, "expected_allocation", None)
        if planned is not None:
            shares, source = [planned[a] for a in arms], "design"
        else:
            shares, source = [1.0 / len(arms)] * len(arms), "equal split (assumed)"
    elif isinstance(expected, Mapping):
        unknown = [a for a in expected if a not in arms]
        missing = [a for a in arms if a not in expected]
        if unknown or missing:
            raise ValidationError(f"expected: needs a share for every arm {list(arms)}"
                                  + (f"; unknown arms {unknown}" if unknown else "")
                                  + (f"; missing {missing}" if missing else ""))
        shares, source = [expected[a] for a in arms], "argument"
    else:
        shares, source = list(expected), "argument"
        if len(shares) != len(arms):
            raise ValidationError(f"expected: needs {len(arms)} shares (arms {list(arms)}), got {len(shares)}")
    try:
        shares = [float(s) for s in shares]
    except (TypeError, ValueError):
        raise ValidationError(f"expected: shares must be numbers, got {shares!r}") from None
    codes = np.asarray(data.arm_codes)
    units = sample_ratio_test(np.bincount(codes, minlength=len(arms)), shares, arms=arms,
                              level="units", threshold=threshold)
    clusters = None
    if getattr(data, "cluster_codes", None) is not None:
        per_cluster = _cluster_arms(codes, np.asarray(data.cluster_codes))
        clusters = sample_ratio_test(np.bincount(per_cluster, minlength=len(arms)), shares,
                                     arms=arms, level="clusters", threshold=threshold)
    return SampleRatioCheck(units=units, clusters=clusters, expected_source=source)


def sample_ratio_warning(data) -> str | None:
    """A one-line warning when the planned allocation is known and the check fails (p < 0.001).

    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> df = pd.DataFrame({"t": np.repeat([0, 1], [600, 400])})
    >>> sample_ratio_warning(cf.ExperimentData(df, intent_to_treat="t", propensity=0.5))[:37]
    'WARNING: sample ratio mismatch on uni'
    """
    design = getattr(data, "design", None)
    check = getattr(design, "sample_ratio", None)
    if check is None or not check.mismatch:
        return None
    return (f"WARNING: sample ratio mismatch on {check.primary.level}: chi2 = {check.statistic:.4g}, "
            f"p = {check.p_value:.3g} < {check.primary.threshold:g}; assignment or logging may be "
            "broken and the effects may be biased")


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
    >>> from causalflow.checks import simulate_aa
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 300), "y": rng.normal(size=300)})
    >>> aa = simulate_aa(cf.ExperimentData(df, intent_to_treat="t"), n=40, seed=1, y="y")
    >>> aa.p_values.shape
    (40, 1)
    """
    from .data import ExperimentData
    from .models.linear import LinearModel

    if hasattr(data, "metrics") and hasattr(data, "covariates") and hasattr(data, "data"):
        if y is not None or exogenous_covariates is not None:
            raise ValidationError("y / exogenous_covariates: already given by the MetricSpec")
        y, exogenous_covariates, data = list(data.metrics), list(data.covariates.sources), data.data
    if not isinstance(data, ExperimentData):
        raise ValidationError("data: expected an ExperimentData (or data.add_metric(...))")
    if y is None:
        raise ValidationError("y: name the metric(s) to simulate")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValidationError(f"n: must be a positive integer, got {n!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValidationError(f"alpha: must lie in (0, 1), got {alpha!r}")
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
    cluster_arms = None if clusters is None else _cluster_arms(codes, clusters)
    column = data.intent_to_treat
    dtype = df[column].dtype
    p_rows, av_rows, first = [], [], None
    for _ in range(n):
        if clusters is None:
            new = rng.permutation(codes)
        else:
            new = rng.permutation(cluster_arms)[clusters]
        labels = pd.array(arms[new].tolist(), dtype=dtype) if dtype != object else arms[new]
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
