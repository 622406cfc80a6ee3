r"""Sample-ratio mismatch (SRM): the chi-square test of arm counts, as plain numbers.

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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import ValidationError

__all__ = ["SRM_THRESHOLD", "SampleRatioCheck", "SampleRatioTest", "sample_ratio_check", "sample_ratio_test"]

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

    def warning(self) -> str | None:
        """A one-line warning when the check fails (p below the threshold), else None."""
        if not self.mismatch:
            return None
        return (f"WARNING: sample ratio mismatch on {self.primary.level}: chi2 = {self.statistic:.4g}, "
                f"p = {self.p_value:.3g} < {self.primary.threshold:g}; assignment or logging may be "
                "broken and the effects may be biased")

    def __str__(self) -> str:
        lines = [str(self.units)] + ([str(self.clusters)] if self.clusters is not None else [])
        lines.append(f"expected shares: {self.expected_source}")
        return "\n".join(lines)


def cluster_arms(arm_codes: np.ndarray, cluster_codes: np.ndarray) -> np.ndarray:
    """Arm of each cluster: that of its first row (clusters are randomised as a whole)."""
    _, first = np.unique(cluster_codes, return_index=True)
    return arm_codes[first]


def sample_ratio_check(arm_codes: np.ndarray, cluster_codes: np.ndarray | None, arms: tuple,
                       shares: Sequence[float], source: str,
                       threshold: float = SRM_THRESHOLD) -> SampleRatioCheck:
    """The sample-ratio tests of integer arm codes (0 .. J-1) on units, and on clusters.

    >>> check = sample_ratio_check(np.repeat([0, 1], [30, 10]), np.arange(40) // 2, (0, 1),
    ...                            [0.5, 0.5], "argument")
    >>> check.units.observed, check.clusters.observed, round(check.p_value, 4)
    ((30, 10), (15, 5), 0.0253)
    """
    codes = np.asarray(arm_codes)
    units = sample_ratio_test(np.bincount(codes, minlength=len(arms)), shares, arms=arms,
                              level="units", threshold=threshold)
    clusters = None
    if cluster_codes is not None:
        per_cluster = cluster_arms(codes, np.asarray(cluster_codes))
        clusters = sample_ratio_test(np.bincount(per_cluster, minlength=len(arms)), shares,
                                     arms=arms, level="clusters", threshold=threshold)
    return SampleRatioCheck(units=units, clusters=clusters, expected_source=source)
