"""``ExperimentData``: the validated experiment, and the ``Design`` record.

One structure holds the four designs of randomized experiments and any mix of them:

* **A/B**: the assignment is the treatment received (OLS).
* **encouragement**: ``treated`` differs from the assignment; the assignment (or
  ``instrument``) is the instrument of a 2SLS fit (Angrist, Imbens & Rubin 1996).
* **cluster**: ``cluster_by`` names the units randomized together; covariances are
  cluster-robust.
* **adaptive**: a per-unit ``propensity`` column gives the probability of the arm each unit
  was assigned; rows are weighted by its inverse (Horvitz & Thompson 1952).

Multi-arm assignment is one column of arm labels with a ``control`` label.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import DesignWarning, ValidationError

__all__ = ["Design", "ExperimentData"]


def _to_pandas(table) -> pd.DataFrame:
    """Convert a pandas / polars / pyarrow table once, at the boundary (no copy for pandas)."""
    if isinstance(table, pd.DataFrame):
        return table
    module = type(table).__module__.split(".")[0]
    if module in ("polars", "pyarrow") and hasattr(table, "to_pandas"):
        converted = table.to_pandas()
        if isinstance(converted, pd.DataFrame):  # a polars / pyarrow Series or array is not a table
            return converted
    raise ValidationError(
        f"data: expected a pandas, polars or pyarrow table, got {type(table).__name__}")


def _column(df: pd.DataFrame, name, argument: str) -> pd.Series:
    if not isinstance(name, str):
        raise ValidationError(f"{argument}: expected a column name (str), got {name!r}")
    if name not in df.columns:
        raise ValidationError(f"{argument}: column {name!r} is not in the data; "
                              f"columns: {list(map(str, df.columns))[:30]}")
    column = df[name]
    if column.isna().any():
        raise ValidationError(f"{argument}: column {name!r} has {int(column.isna().sum())} "
                              "missing values (NaN)")
    return column


def _arm_codes(series: pd.Series, arms: tuple) -> np.ndarray:
    """Position of each value in ``arms``; -1 for a value that is not an arm.

    The column is factorised (fast, also for arrow-backed text), and its few distinct values
    are looked up: typed first, then as Python objects, so that equal values of different
    types match (1 and 1.0, 1 and True), as Python's ``==`` says.
    """
    codes, uniques = pd.factorize(series)
    lookup = pd.Index(list(arms)).get_indexer(uniques)
    if (lookup < 0).any():
        lookup = pd.Index(list(arms), dtype=object).get_indexer(pd.Index(uniques.tolist(), dtype=object))
    out = lookup[codes]
    out[codes < 0] = -1  # missing values (refused earlier by _column)
    return out


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


@dataclass(frozen=True, slots=True)
class Design:
    """What the experiment is, read off the data.

    Attributes
    ----------
    ab, encouragement, cluster, adaptive : bool
        Which of the four designs are present (several can be).
    arms : tuple
        Arm labels, control first.
    control : label of the control arm
    compliance_rate : float or None
        First-stage difference P(treated | assigned) - P(treated | control) of a binary
        encouragement design (the share of compliers under monotonicity); None otherwise.
    n_units, n_clusters : int (n_clusters None without clusters)
    allocation : dict arm -> observed share of units
    expected_allocation : dict arm -> planned share, when ``propensity`` was a number or a map
    """

    ab: bool
    encouragement: bool
    cluster: bool
    adaptive: bool
    arms: tuple
    control: object
    compliance_rate: float | None
    n_units: int
    n_clusters: int | None
    allocation: dict = field(default_factory=dict)
    expected_allocation: dict | None = None
    sample_ratio: object = None  # checks.SampleRatioCheck when the planned allocation is known

    def __str__(self) -> str:
        kinds = [k for k in ("ab", "encouragement", "cluster", "adaptive") if getattr(self, k)]
        lines = [
            f"Design: {' + '.join(kinds)}",
            f"  arms: {list(self.arms)} (control: {self.control!r})",
            f"  units: {self.n_units:,}" + (f", clusters: {self.n_clusters:,}" if self.cluster else ""),
            "  allocation: " + ", ".join(f"{a!r}: {s:.3f}" for a, s in self.allocation.items()),
        ]
        if self.compliance_rate is not None:
            lines.append(f"  compliance rate (first stage): {self.compliance_rate:.3f}")
        if self.expected_allocation is not None:
            lines.append("  expected allocation: " + ", ".join(
                f"{a!r}: {s:.3f}" for a, s in self.expected_allocation.items()))
        if self.sample_ratio is not None:
            lines.append(f"  sample ratio: p = {self.sample_ratio.p_value:.3g} on {self.sample_ratio.primary.level}"
                         + (" -- WARNING: sample ratio mismatch (p < 0.001)" if self.sample_ratio.mismatch else ""))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return "<pre>" + str(self).replace("&", "&amp;").replace("<", "&lt;") + "</pre>"


class ExperimentData:
    """A randomized experiment: the table and the roles of its columns.

    Parameters
    ----------
    data : pandas, polars or pyarrow table
        Never modified.
    intent_to_treat : str
        Column with the randomized assignment: 0/1, booleans, or arm labels.
    treated : str, optional
        Treatment actually received. Binary designs: numbers in [0, 1] (a share of the
        treatment), or the arm labels of ``intent_to_treat``; multi-arm: arm labels. Default: equal to ``intent_to_treat`` (full compliance).
    propensity : str, float or mapping, optional
        A column name: the probability that each unit was assigned the arm it got
        (adaptive designs); rows are weighted by 1 / propensity. A number (two arms):
        the planned P(assigned to treatment); a mapping arm -> share: the planned
        allocation. Numbers and mappings do not weight; they are the expected allocation.
    instrument : str, optional
        Column of the instrument; default ``intent_to_treat`` whenever ``treated`` differs.
    cluster_by : str or list of str, optional
        Columns identifying the units randomized together.
    control : label, optional
        Control arm. Default: 0 / False if present, else ``"control"``, else the first
        label of a two-arm design; required with three or more other labels.

    Examples
    --------
    >>> import pandas as pd, causalflow as cf
    >>> df = pd.DataFrame({"assigned": [0, 1, 0, 1], "y": [1.0, 2.0, 1.5, 2.5]})
    >>> data = cf.ExperimentData(df, intent_to_treat="assigned")
    >>> data.design.arms, data.design.ab
    ((0, 1), True)
    """

    def __init__(self, data, intent_to_treat: str, treated: str | None = None,
                 propensity: str | float | Mapping | None = None, instrument: str | None = None,
                 cluster_by: str | Sequence[str] | None = None, control=None):
        df = _to_pandas(data)
        duplicated = df.columns[df.columns.duplicated()].tolist()
        if duplicated:
            raise ValidationError(f"data: duplicated column names {duplicated}")
        if len(df) < 2:
            raise ValidationError(f"data: needs at least 2 rows, got {len(df)}")
        self._df = df
        self.intent_to_treat = intent_to_treat
        self.treated = treated
        self.propensity = propensity
        self.instrument = instrument
        if cluster_by is not None and not isinstance(cluster_by, (str, Sequence)):
            raise ValidationError(f"cluster_by: expected a column name or a list of names, got {cluster_by!r}")
        self.cluster_by = [cluster_by] if isinstance(cluster_by, str) else (
            list(cluster_by) if cluster_by is not None else None)

        assign = _column(df, intent_to_treat, "intent_to_treat")
        labels = pd.factorize(assign)[1]  # fast also for arrow-backed text (no object array)
        if len(labels) < 2:
            raise ValidationError(f"intent_to_treat: column {intent_to_treat!r} has a single arm "
                                  f"({labels.tolist()[0]!r}); an experiment needs at least two")
        try:
            labels = sorted(labels.tolist())
        except TypeError:
            labels = sorted(labels.tolist(), key=str)
        self.control = self._pick_control(labels, control)
        self.arms = tuple([self.control] + [a for a in labels if a != self.control])
        self.arm_codes = _arm_codes(assign, self.arms).astype(np.int64)
        self.n_arms = len(self.arms) - 1

        self.dose = None  # binary design: received treatment in [0, 1]
        self.treated_codes = None  # multi-arm design: received arm codes
        if treated is not None and treated != intent_to_treat:
            self._read_treated(df, treated)
        self.instrument_codes = self.arm_codes
        if instrument is not None and instrument != intent_to_treat:
            codes = self._arm_label_codes(_column(df, instrument, "instrument"), instrument, "instrument")
            absent = [a for j, a in enumerate(self.arms) if not (codes == j).any()]
            if absent:
                raise ValidationError(f"instrument: column {instrument!r} never takes the arm(s) {absent} "
                                      f"of {intent_to_treat!r}; every arm needs its own instrument rows")
            self.instrument_codes = codes.astype(np.int64)
            if (self.dose is None and self.treated_codes is None
                    and not np.array_equal(self.instrument_codes, self.arm_codes)):
                # another column instruments the assignment: the assignment is then the
                # treatment received (the regressor), not the instrument
                if self.n_arms == 1:
                    self.dose = self.arm_codes.astype(float)
                else:
                    self.treated_codes = self.arm_codes
        self.is_iv = self.dose is not None or self.treated_codes is not None

        self.weights = None
        self.expected_allocation = None
        self._read_propensity(df, propensity)

        self.cluster_codes, self.n_clusters = None, None
        if self.cluster_by is not None:
            self._read_clusters(df)
        self.design = self._describe()

    # -- validation helpers -------------------------------------------------------------
    def _pick_control(self, labels: list, control):
        if control is not None:
            if control not in labels:
                raise ValidationError(f"control: {control!r} is not an arm of {self.intent_to_treat!r} "
                                      f"(arms: {labels})")
            return control
        for candidate in (0, "control"):  # 0 also matches False
            for label in labels:
                if isinstance(label, str) == isinstance(candidate, str) and label == candidate:
                    return label
        if len(labels) == 2:
            return labels[0]
        raise ValidationError(f"control: intent_to_treat {self.intent_to_treat!r} has {len(labels)} arms "
                              f"{labels}; name the control arm with control=")

    def _read_treated(self, df: pd.DataFrame, name: str) -> None:
        treated = _column(df, name, "treated")
        if self.n_arms == 1:
            numeric = _is_numeric(treated) or pd.api.types.is_bool_dtype(treated)
            dose = treated.to_numpy(dtype=float) if numeric else None
            if dose is None or dose.min() < 0 or dose.max() > 1:
                # the arm labels of the assignment, e.g. "control" / "treatment" or 1 / 2
                codes = _arm_codes(treated, self.arms)
                if not numeric and (codes < 0).any():
                    raise ValidationError(f"treated: column {name!r} must be numeric in [0, 1] or hold the "
                                          f"arm labels {list(self.arms)} of {self.intent_to_treat!r}")
                if (codes >= 0).all():
                    dose = codes.astype(float)
            if dose.min() < 0 or dose.max() > 1:
                raise ValidationError(f"treated: column {name!r} has values outside [0, 1] "
                                      f"(min {dose.min():g}, max {dose.max():g})")
            if np.ptp(dose) == 0:
                raise ValidationError(f"treated: column {name!r} has no variation (always {dose[0]:g})")
            if not np.array_equal(dose, self.arm_codes.astype(float)):
                self.dose = dose
            return
        codes = self._arm_label_codes(treated, name, "treated")
        if not np.array_equal(codes, self.arm_codes):
            self.treated_codes = codes.astype(np.int64)

    def _arm_label_codes(self, column: pd.Series, name: str, argument: str) -> np.ndarray:
        """Arm codes of a column of arm labels (treated or instrument), which must vary."""
        codes = _arm_codes(column, self.arms)
        if (codes < 0).any():
            raise ValidationError(f"{argument}: column {name!r} has values that are not arms of "
                                  f"{self.intent_to_treat!r} ({list(self.arms)})")
        if len(np.unique(codes)) < 2:
            raise ValidationError(f"{argument}: column {name!r} has no variation")
        return codes

    def _read_propensity(self, df: pd.DataFrame, propensity) -> None:
        if propensity is None:
            return
        if isinstance(propensity, str):
            column = _column(df, propensity, "propensity")
            if not _is_numeric(column):
                raise ValidationError(f"propensity: column {propensity!r} is not numeric")
            values = column.to_numpy(dtype=float)
            if values.min() <= 0 or values.max() >= 1:
                raise ValidationError(f"propensity: column {propensity!r} has values outside (0, 1) "
                                      f"(min {values.min():g}, max {values.max():g})")
            with np.errstate(over="ignore"):
                self.weights = 1.0 / values
            if not np.isfinite(self.weights).all():
                raise ValidationError(f"propensity: column {propensity!r} has values so close to 0 "
                                      f"(min {values.min():g}) that the weights 1/propensity overflow")
            return
        if isinstance(propensity, Mapping):
            shares = {a: float(propensity[a]) for a in propensity}
            unknown = [a for a in shares if a not in self.arms]
            if unknown or set(shares) != set(self.arms):
                raise ValidationError(f"propensity: the mapping must give a share for every arm {list(self.arms)}")
            if any(not 0 < s < 1 for s in shares.values()) or abs(sum(shares.values()) - 1) > 1e-9:
                raise ValidationError("propensity: shares must be in (0, 1) and sum to 1")
            self.expected_allocation = {a: shares[a] for a in self.arms}
            return
        if isinstance(propensity, (int, float, np.floating)) and not isinstance(propensity, bool):
            if self.n_arms != 1:
                raise ValidationError("propensity: a number is only meaningful with two arms; "
                                      "give a mapping arm -> share or a column")
            if not 0 < float(propensity) < 1:
                raise ValidationError(f"propensity: {propensity!r} is outside (0, 1)")
            p = float(propensity)
            self.expected_allocation = {self.arms[0]: 1 - p, self.arms[1]: p}
            return
        raise ValidationError(f"propensity: expected a column name, a number or a mapping, got {propensity!r}")

    def _read_clusters(self, df: pd.DataFrame) -> None:
        if not self.cluster_by:
            raise ValidationError("cluster_by: empty list of columns")
        columns = [_column(df, c, "cluster_by") for c in self.cluster_by]
        if len(columns) == 1:
            codes, uniques = pd.factorize(columns[0], sort=False)
            n_clusters = len(uniques)
        else:
            codes = pd.MultiIndex.from_arrays(columns).factorize()[0]
            n_clusters = int(codes.max()) + 1
        if n_clusters < 2:
            raise ValidationError(f"cluster_by: {self.cluster_by} defines a single cluster")
        self.cluster_codes, self.n_clusters = codes.astype(np.int64), int(n_clusters)
        # a cluster is mixed when its arm codes vary: n * sum(a^2) > sum(a)^2 (exact in float64
        # for integer codes while n * sum(a^2) < 2**53)
        size = np.bincount(self.cluster_codes, minlength=n_clusters).astype(float)
        first = np.bincount(self.cluster_codes, weights=self.arm_codes, minlength=n_clusters)
        second = np.bincount(self.cluster_codes, weights=self.arm_codes.astype(float) ** 2, minlength=n_clusters)
        mixed = int(np.count_nonzero(size * second > first ** 2))
        if mixed:
            warnings.warn(f"cluster_by {self.cluster_by}: {mixed} of {n_clusters} clusters contain "
                          "more than one assigned arm; is cluster_by the unit of randomisation?",
                          DesignWarning, stacklevel=3)

    def _describe(self) -> Design:
        counts = np.bincount(self.arm_codes, minlength=len(self.arms))
        allocation = {a: counts[j] / len(self.arm_codes) for j, a in enumerate(self.arms)}
        compliance = None
        if self.dose is not None:
            encouraged = self.instrument_codes == 1
            compliance = float(self.dose[encouraged].mean() - self.dose[~encouraged].mean())
        elif self.treated_codes is not None:
            compliance = float(np.mean(self.treated_codes == self.instrument_codes))
        return Design(ab=not (self.is_iv or self.cluster_by or self.weights is not None),
                      encouragement=self.is_iv, cluster=self.cluster_by is not None,
                      adaptive=self.weights is not None, arms=self.arms, control=self.control,
                      compliance_rate=compliance, n_units=len(self.arm_codes),
                      n_clusters=self.n_clusters, allocation=allocation,
                      expected_allocation=self.expected_allocation,
                      sample_ratio=self.check_sample_ratio() if self.expected_allocation else None)

    def check_sample_ratio(self, expected=None):
        """Sample-ratio mismatch test: chi-square of the arm counts on units (and clusters).

        ``expected``: mapping arm -> share (default: the planned allocation given as
        ``propensity``, else an equal split). See :func:`causalflow.checks.check_sample_ratio`.

        >>> import pandas as pd, causalflow as cf
        >>> df = pd.DataFrame({"t": [0] * 480 + [1] * 520, "y": 0.0})
        >>> round(cf.ExperimentData(df, intent_to_treat="t").check_sample_ratio({0: 0.5, 1: 0.5}).p_value, 4)
        0.2059
        """
        from .checks import check_sample_ratio
        return check_sample_ratio(self, expected)

    # -- grammar ----------------------------------------------------------------------
    @property
    def data(self) -> pd.DataFrame:
        """The table as given (pandas view; never modified)."""
        return self._df

    def add_metric(self, y: str | Sequence[str], exogenous_covariates: Sequence[str] | None = None,
                   *, exogeneous_covariates: Sequence[str] | None = None,
                   cap: Mapping | None = None, ratio: Mapping | None = None):
        """Name the outcome metric(s) and pre-treatment covariates; returns a ``MetricSpec``.

        ``exogeneous_covariates`` (the seed paper's spelling) is accepted as an alias.
        Numeric covariates enter as they are; text, boolean and categorical ones are
        expanded once into indicators of every level but the first. See
        :class:`causalflow.models.linear.MetricSpec`.

        ``cap={"revenue": {"upper_quantile": 0.99}}`` fits ``revenue_capped`` (thresholds
        over the pooled data of all arms) instead of ``revenue``; ``ratio={"orders_per_session":
        ("orders", "sessions")}`` adds a ratio metric (delta method). See
        :func:`causalflow.transforms.derive_metrics`.
        """
        from .models.spec import MetricSpec
        if exogenous_covariates is not None and exogeneous_covariates is not None:
            raise ValidationError("give exogenous_covariates or its alias exogeneous_covariates, not both")
        covariates = exogenous_covariates if exogenous_covariates is not None else exogeneous_covariates
        if cap is not None or ratio is not None:
            from .transforms import derive_metrics
            derived, y = derive_metrics(self, y, cap=cap, ratio=ratio)
            return MetricSpec.build(derived, y, covariates)
        return MetricSpec.build(self, y, covariates)

    def __repr__(self) -> str:
        return f"ExperimentData({self.design.n_units} rows)\n{self.design}"
