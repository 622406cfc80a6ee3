"""``ExperimentData``: the validated experiment, and the ``Design`` record.

One structure holds the four designs of randomized experiments and any mix of them:

* **A/B**: the assignment is the treatment received (OLS).
* **encouragement**: ``treated`` differs from the assignment; the assignment (or
  ``instrument``) is the instrument of a 2SLS fit (Angrist, Imbens & Rubin 1996).
* **cluster**: ``cluster_by`` names the units randomized together; covariances are
  cluster-robust.
* **adaptive**: per-unit assignment probabilities; rows are weighted by the inverse of the
  probability of the arm they got (Horvitz & Thompson 1952). With two arms ``propensity``
  names the column of the propensity score P(assigned to the treatment arm | unit)
  (Rosenbaum & Rubin 1983): treated rows get weight 1/p, control rows 1/(1 - p). With
  several arms it is a mapping arm -> column of that arm's assignment probability (the
  generalized propensity score, Imbens 2000), and each row gets 1 / its own arm's column.

Multi-arm assignment is one column of arm labels with a ``control`` label.

A log that records the probability of the arm *shown* (bandit logs do) is converted before
it is passed: with two arms, ``p_treat = np.where(arm == treatment, p_shown, 1 - p_shown)``;
with several arms, one column per arm holding that arm's probability on every row (see
:class:`ExperimentData`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .backends.engine import EngineTable, is_engine_table, read_experiment, read_metrics
from .design import pick_control, single_propensity_error, sorted_labels
from .errors import DesignWarning, ValidationError
from .linalg.sandwich import default_cov_type
from .linalg.srm import SRM_THRESHOLD, sample_ratio_check
from .models.spec import MetricSpec
from .transforms import derive_metrics
from .validate import missing_message, no_variation_message, not_arms_message, outside_message, to_pandas

__all__ = ["Design", "ExperimentData"]


def _column(df: pd.DataFrame, name, argument: str) -> pd.Series:
    if not isinstance(name, str):
        raise ValidationError(f"{argument}: expected a column name (str), got {name!r}")
    if name not in df.columns:
        raise ValidationError(f"{argument}: column {name!r} is not in the data; "
                              f"columns: {list(map(str, df.columns))[:30]}")
    column = df[name]
    if column.isna().any():
        raise ValidationError(missing_message(argument, name, column.isna().sum()))
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


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _mapping_of_columns(mapping: Mapping) -> bool:
    """True for arm -> column names, False for arm -> numbers; a mix is an error."""
    names = [isinstance(v, str) for v in mapping.values()]
    if names and all(names):
        return True
    if any(names):
        raise ValidationError(
            "propensity: a mapping gives either a column name for every arm (per-unit assignment "
            "probabilities) or a number for every arm (the planned allocation), not a mix; "
            f"got {dict(mapping)!r}")
    return False


def _probability_column(df: pd.DataFrame, name, argument: str = "propensity") -> np.ndarray:
    """A numeric column without NaN whose values lie in (0, 1), as float64."""
    column = _column(df, name, argument)
    if not _is_numeric(column):
        raise ValidationError(f"{argument}: column {name!r} is not numeric")
    values = column.to_numpy(dtype=float)
    if not ((values > 0) & (values < 1)).all():
        raise ValidationError(outside_message(argument, name, values.min(), values.max()))
    return values


def _inverse_probability(own: np.ndarray, name: str, argument: str = "propensity") -> np.ndarray:
    """1 / (each row's own arm's probability), refused where it overflows (a subnormal p)."""
    with np.errstate(divide="ignore", over="ignore"):
        weights = 1.0 / own
    bad = ~np.isfinite(weights)
    if bad.any():
        raise ValidationError(f"{argument}: column {name!r} has values so close to 0 (min "
                              f"{own[bad].min():g}, used by {int(bad.sum())} rows) that the "
                              "weights 1/propensity overflow")
    return weights


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
    complier_share : dict arm -> float, or None
        Per arm j of an encouragement design, the share of compliers
        E_w[D_j | Z=j] - E_w[D_j | Z=0] (arm j's take-up when encouraged minus under control;
        weighted with propensity weights), the population a LATE describes. Their covariate
        means need the covariates, which the design does not know before ``add_metric``:
        ``model.compliers()`` reports them (and the footer of effects with an ATE row).
    n_units, n_clusters : int (n_clusters None without clusters)
    allocation : dict arm -> observed share of units
    expected_allocation : dict arm -> planned share, when ``propensity`` was a number or a map
    sample_ratio : SampleRatioCheck or None, when the planned allocation is known
    cov_type : str, the default covariance of ``LinearModel`` for this design (HC1; CR1, or
        with fewer than 50 clusters the small-cluster one, see
        :func:`causalflow.linalg.sandwich.default_cov_type`)
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
    sample_ratio: object = None  # linalg.srm.SampleRatioCheck when the planned allocation is known
    cov_type: str = "HC1"  # the default covariance of LinearModel for this design
    complier_share: dict | None = None

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
        if self.complier_share is not None:
            lines.append("  complier share (LATE population): " + ", ".join(
                f"{a!r}: {s:.3f}" for a, s in self.complier_share.items())
                + "; their covariate means: model.compliers() after add_metric(...).fit(...)")
        if self.expected_allocation is not None:
            lines.append("  expected allocation: " + ", ".join(
                f"{a!r}: {s:.3f}" for a, s in self.expected_allocation.items()))
        if self.cluster and self.cov_type == "CR3":
            dof = (f"t with the Bell-McCaffrey degrees of freedom of each effect (at most "
                   f"{self.n_clusters - 1}, fewer when a few clusters dominate)")
        elif self.cluster:
            dof = f"t with {self.n_clusters - 1} degrees of freedom (clusters - 1)"
        else:
            dof = "t with n - p degrees of freedom"
        lines.append(f"  default covariance: {self.cov_type}, {dof}")
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
        treatment), or the arm labels of ``intent_to_treat``; multi-arm: arm labels. Default:
        equal to ``intent_to_treat`` (full compliance).
    propensity : str, float or mapping, optional
        Assignment probabilities. Per-unit probabilities (adaptive designs) weight the rows;
        planned ones (numbers) do not.

        - A column name (two arms only): the propensity score P(assigned to the treatment
          arm | unit) of Rosenbaum & Rubin (1983). Treated rows (assigned to the arm that
          is not ``control``) are weighted by 1/p, control rows by 1/(1 - p). The
          assignment is the randomized one: ``instrument`` when it names another column
          than ``intent_to_treat`` (which then holds the treatment received).
        - A mapping arm -> column name (any number of arms): the column of each arm's
          assignment probability; each row is weighted by 1 / its own arm's column. Every
          arm needs a column; every column is numeric, without NaN, in (0, 1).
        - A number (two arms): the planned P(assigned to treatment).
        - A mapping arm -> number: the planned allocation (shares summing to 1).

        Numbers are the expected allocation of the sample-ratio check, not weights. A
        mapping gives column names for every arm or numbers for every arm, not a mix.
        A single column with three or more arms is an error (give the mapping).
    instrument : str, optional
        Column of the instrument; default ``intent_to_treat`` whenever ``treated`` differs.
    cluster_by : str or list of str, optional
        Columns identifying the units randomized together.
    control : label, optional
        Control arm. Default: 0 / False if present, else ``"control"``, else the first
        label of a two-arm design; required with three or more other labels.

    Notes
    -----
    **Inverse-propensity weights.** Row i of arm a(i) gets the weight
    w_i = 1 / P(A_i = a(i) | unit i) (Horvitz & Thompson 1952): with two arms and the
    propensity score e_i = P(A_i = treatment | unit i) (Rosenbaum & Rubin 1983) that is
    1/e_i for treated and 1/(1 - e_i) for control rows; with several arms, 1 / the row's
    own arm's column (the generalized propensity score, Imbens 2000, Biometrika 87(3)).

    With the mapping form the probabilities of a row should sum to 1. When they do not
    (|sum - 1| > 1e-6 on some row) a :class:`~causalflow.errors.DesignWarning` names the
    columns and the rows, and the fit goes ahead: the weights use only each row's own
    arm's probability, and legitimate logs miss the sum (probabilities rounded when they
    were written; an arm that the policy could draw but that no unit of this table got,
    so that the observed arms' probabilities sum to less than 1).

    **Logs of the arm shown.** Bandit logs usually record the probability of the arm the
    unit was shown, ``p_shown``. Convert it before passing it:

    - two arms: ``p_treat = np.where(arm == treatment, p_shown, 1 - p_shown)`` and
      ``propensity="p_treat"`` (a control row's ``1 - p_shown`` is P(treatment));
    - several arms: ``p_shown`` alone does not determine the other arms' probabilities.
      Log (or recompute from the policy's state at decision time, e.g. its posterior)
      every arm's probability for every row, one column per arm, and pass the mapping
      ``{arm: column}``. The weights themselves only use ``p_shown`` (each row's own
      arm), but the mapping needs every arm's column so that it can be checked.

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> df = pd.DataFrame({"assigned": [0, 1, 0, 1], "y": [1.0, 2.0, 1.5, 2.5]})
    >>> data = cf.ExperimentData(df, intent_to_treat="assigned")
    >>> data.design.arms, data.design.ab
    ((0, 1), True)

    A bandit log with the probability of the arm shown, converted to the propensity score
    of arm ``"b"`` (the control arm is ``"a"``, the first of two labels):

    >>> log = pd.DataFrame({"arm": ["a", "b", "b", "a"], "p_shown": [0.7, 0.4, 0.6, 0.2],
    ...                     "y": [1.0, 2.0, 1.5, 2.5]})
    >>> log = log.assign(p_b=np.where(log.arm == "b", log.p_shown, 1 - log.p_shown))
    >>> data = cf.ExperimentData(log, intent_to_treat="arm", propensity="p_b")
    >>> data.design.adaptive, data.weights.round(4).tolist()   # 1/0.7, 1/0.4, 1/0.6, 1/0.2
    (True, [1.4286, 2.5, 1.6667, 5.0])

    Three arms: one column per arm, each row weighted by 1 / its own arm's column.

    >>> log3 = pd.DataFrame({"arm": ["ctl", "b", "c", "b"], "p_ctl": [0.5, 0.2, 0.3, 0.4],
    ...                      "p_b": [0.25, 0.5, 0.3, 0.4], "p_c": [0.25, 0.3, 0.4, 0.2]})
    >>> data = cf.ExperimentData(log3, intent_to_treat="arm", control="ctl",
    ...                          propensity={"ctl": "p_ctl", "b": "p_b", "c": "p_c"})
    >>> data.weights.tolist()
    [2.0, 2.0, 2.5, 2.5]
    """

    def __init__(self, data, intent_to_treat: str, treated: str | None = None,
                 propensity: str | float | Mapping | None = None, instrument: str | None = None,
                 cluster_by: str | Sequence[str] | None = None, control=None):
        if is_engine_table(data):  # parquet, DuckDB, Ibis, Spark: validated and computed in the engine
            self._init_engine(data, intent_to_treat, treated, propensity, instrument, cluster_by, control)
            return
        df = to_pandas(data)
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
        labels = sorted_labels(labels.tolist())
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

    #: the experiment in a warehouse engine (:class:`causalflow.backends.engine.EngineExperiment`),
    #: or None for a table in memory
    engine = None

    def _init_engine(self, data, intent_to_treat, treated, propensity, instrument, cluster_by, control) -> None:
        """The constructor on an engine table: the same checks and messages, run as queries
        (:func:`causalflow.backends.engine.read_experiment`); no row is brought into memory."""
        self._df = data
        self.intent_to_treat, self.treated, self.propensity, self.instrument = (
            intent_to_treat, treated, propensity, instrument)
        self.control_arg = control
        if cluster_by is not None and not isinstance(cluster_by, (str, Sequence)):
            raise ValidationError(f"cluster_by: expected a column name or a list of names, got {cluster_by!r}")
        self.cluster_by = [cluster_by] if isinstance(cluster_by, str) else (
            list(cluster_by) if cluster_by is not None else None)
        self.propensity_columns = ()
        self.expected_allocation = None
        self.arm_codes = self.instrument_codes = self.dose = self.treated_codes = None
        self.weights = self.cluster_codes = None
        exp, self.control, planned = read_experiment(EngineTable.of(data), self, propensity, self._pick_control,
                                                     self._arm_mapping, _mapping_of_columns)
        if planned == "memory":  # a planned allocation: numbers only, checked as in memory
            self._read_propensity(None, propensity)
        self.engine = exp
        self.arms, self.n_arms = exp.arms, exp.n_arms
        self.is_iv = exp.iv
        self.n_clusters = exp.n_clusters
        counts, compliance, complier_share = exp.describe()
        self._arm_counts = counts
        self.design = Design(ab=not (self.is_iv or self.cluster_by or exp.weights is not None),
                             encouragement=self.is_iv, cluster=self.cluster_by is not None,
                             adaptive=exp.weights is not None, arms=self.arms, control=self.control,
                             compliance_rate=compliance, n_units=exp.n, n_clusters=self.n_clusters,
                             allocation={a: counts[j] / exp.n for j, a in enumerate(self.arms)},
                             expected_allocation=self.expected_allocation,
                             sample_ratio=self.check_sample_ratio() if self.expected_allocation else None,
                             cov_type=default_cov_type(self.n_clusters), complier_share=complier_share)

    # -- validation helpers -------------------------------------------------------------
    def _pick_control(self, labels: list, control):
        return pick_control(labels, control, self.intent_to_treat)

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
                raise ValidationError(outside_message("treated", name, dose.min(), dose.max(), "[0, 1]"))
            if np.ptp(dose) == 0:
                raise ValidationError(no_variation_message("treated", name, dose[0]))
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
            raise ValidationError(not_arms_message(argument, name, self.intent_to_treat, self.arms))
        if len(np.unique(codes)) < 2:
            raise ValidationError(no_variation_message(argument, name))
        return codes

    def _read_propensity(self, df: pd.DataFrame, propensity) -> None:
        """Weights (per-unit probabilities) or the expected allocation (planned numbers)."""
        self.propensity_columns = ()  # the columns read, for roles and A/A checks
        if propensity is None:
            return
        if isinstance(propensity, str):
            if self.n_arms != 1:
                raise single_propensity_error(propensity, self.intent_to_treat, self.arms)
            p_treat = _probability_column(df, propensity)
            # Rosenbaum & Rubin's e(x) = P(treatment | x): treated 1/e, control 1/(1 - e).
            # "Assigned" is the randomized assignment: the instrument when instrument= names
            # another column (then intent_to_treat is the treatment received)
            own = np.where(self.instrument_codes == 1, p_treat, 1.0 - p_treat)
            self.weights = _inverse_probability(own, propensity)
            self.propensity_columns = (propensity,)
            return
        if isinstance(propensity, Mapping):
            if _mapping_of_columns(propensity):
                self._read_propensity_columns(df, propensity)
                return
            shares = self._arm_mapping(propensity, "a share")
            if any(not _is_number(s) for s in shares.values()):
                raise ValidationError(f"propensity: shares must be numbers, got {propensity!r}")
            shares = {a: float(s) for a, s in shares.items()}
            if any(not 0 < s < 1 for s in shares.values()) or abs(sum(shares.values()) - 1) > 1e-9:
                raise ValidationError("propensity: shares must be in (0, 1) and sum to 1")
            self.expected_allocation = shares
            return
        if _is_number(propensity):
            if self.n_arms != 1:
                raise ValidationError("propensity: a number is only meaningful with two arms; give a "
                                      "mapping arm -> share (the planned allocation) or arm -> column "
                                      "(per-unit assignment probabilities)")
            if not 0 < float(propensity) < 1:
                raise ValidationError(f"propensity: {propensity!r} is outside (0, 1)")
            p = float(propensity)
            self.expected_allocation = {self.arms[0]: 1 - p, self.arms[1]: p}
            return
        raise ValidationError(f"propensity: expected a column name, a number or a mapping, got {propensity!r}")

    def _arm_mapping(self, mapping: Mapping, what: str) -> dict:
        """The mapping's values in arm order; it must name every arm and nothing else."""
        unknown = [a for a in mapping if a not in self.arms]
        missing = [a for a in self.arms if a not in mapping]
        if unknown or missing:
            raise ValidationError(
                f"propensity: the mapping must give {what} for every arm {list(self.arms)} of "
                f"{self.intent_to_treat!r}" + (f"; missing: {missing}" if missing else "")
                + (f"; not arms: {unknown}" if unknown else ""))
        return {a: mapping[a] for a in self.arms}

    def _read_propensity_columns(self, df: pd.DataFrame, mapping: Mapping) -> None:
        """Mapping arm -> column of that arm's probability: weight 1 / the row's own arm's column."""
        names = self._arm_mapping(mapping, "a column")
        probabilities = np.column_stack([_probability_column(df, name, f"propensity[{arm!r}]")
                                         for arm, name in names.items()])
        assigned = self.instrument_codes  # the randomized assignment (see _read_propensity)
        own = probabilities[np.arange(len(assigned)), assigned]
        weights = np.empty(len(own))
        for j, (arm, name) in enumerate(names.items()):
            mine = assigned == j
            weights[mine] = _inverse_probability(own[mine], name, f"propensity[{arm!r}]")
        total = probabilities.sum(axis=1)
        off = np.flatnonzero(np.abs(total - 1.0) > 1e-6)
        if len(off):
            worst = off[np.argmax(np.abs(total[off] - 1.0))]
            warnings.warn(
                f"propensity: the probabilities of the arms' columns {list(names.values())} do not sum "
                f"to 1 on {len(off)} of {len(total)} rows (row {df.index[worst]!r}: {total[worst]:.6g}); "
                "the weights use each row's own arm's probability only, so the fit goes ahead. Rounded "
                "logs, or an arm the policy could draw but no unit here got, explain a small or a "
                "below-1 sum; otherwise check the columns", DesignWarning, stacklevel=4)
        self.weights = weights
        self.propensity_columns = tuple(dict.fromkeys(names.values()))

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
        complier_share = None
        if self.is_iv:
            complier_share = {}
            for j, arm in enumerate(self.arms[1:], start=1):
                took = self.dose if self.dose is not None else (self.treated_codes == j).astype(float)
                rates = []
                for z in (j, 0):
                    rows = self.instrument_codes == z
                    rates.append(float(np.average(took[rows], weights=None if self.weights is None
                                                  else self.weights[rows])))
                complier_share[arm] = rates[0] - rates[1]
        return Design(ab=not (self.is_iv or self.cluster_by or self.weights is not None),
                      encouragement=self.is_iv, cluster=self.cluster_by is not None,
                      adaptive=self.weights is not None, arms=self.arms, control=self.control,
                      compliance_rate=compliance, n_units=len(self.arm_codes),
                      n_clusters=self.n_clusters, allocation=allocation,
                      expected_allocation=self.expected_allocation,
                      sample_ratio=self.check_sample_ratio() if self.expected_allocation else None,
                      cov_type=default_cov_type(self.n_clusters), complier_share=complier_share)

    def check_sample_ratio(self, expected: Mapping | Sequence | None = None, *,
                           threshold: float = SRM_THRESHOLD):
        """Sample-ratio mismatch test: chi-square of the arm counts on units (and clusters).

        ``expected``: mapping arm -> share, or shares in arm order (control first); default
        the planned allocation given as ``propensity`` (a number or a mapping of shares),
        else an equal split. ``threshold``: p below which a mismatch is flagged. In a
        cluster design the cluster-count test is the valid one (clusters are the
        independent draws). See :mod:`causalflow.linalg.srm` for the statistic.

        >>> import pandas as pd, causalflow as cf
        >>> df = pd.DataFrame({"t": [0] * 480 + [1] * 520, "y": 0.0})
        >>> round(cf.ExperimentData(df, intent_to_treat="t").check_sample_ratio({0: 0.5, 1: 0.5}).p_value, 4)
        0.2059
        """
        arms = tuple(self.arms)
        if expected is None:
            if self.expected_allocation is not None:
                shares, source = [self.expected_allocation[a] for a in arms], "design"
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
        if self.engine is not None:
            return self.engine.sample_ratio(shares, source, threshold, self._arm_counts)
        return sample_ratio_check(self.arm_codes, self.cluster_codes, arms, shares, source, threshold)

    # -- grammar ----------------------------------------------------------------------
    @property
    def column_roles(self) -> dict:
        """{column: role} of the columns that have a design role (assignment, treatment,
        instrument, propensity, clusters): they cannot also be metrics or covariates."""
        roles = {self.intent_to_treat: "intent_to_treat"}
        for role in ("treated", "instrument"):
            if getattr(self, role) is not None:
                roles[getattr(self, role)] = role
        names = [self.propensity] if isinstance(self.propensity, str) else []
        for name in [*names, *self.propensity_columns]:
            roles[name] = "propensity"
        for name in self.cluster_by or []:
            roles[name] = "cluster_by"
        return roles

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
        if exogenous_covariates is not None and exogeneous_covariates is not None:
            raise ValidationError("give exogenous_covariates or its alias exogeneous_covariates, not both")
        covariates = exogenous_covariates if exogenous_covariates is not None else exogeneous_covariates
        if self.engine is not None:
            if cap is not None or ratio is not None:
                raise ValidationError("cap / ratio: derived metrics are computed in memory; on an engine table "
                                      "compute the capped or ratio columns in the engine (a view) and name them")
            metrics, cov = read_metrics(self.engine, self, y, covariates)
            spec = MetricSpec(self, metrics, cov)
            spec._check_covariates()
            return spec
        if cap is not None or ratio is not None:
            derived, y = derive_metrics(self, y, cap=cap, ratio=ratio)
            return MetricSpec.build(derived, y, covariates)
        return MetricSpec.build(self, y, covariates)

    def __repr__(self) -> str:
        return f"ExperimentData({self.design.n_units} rows)\n{self.design}"
