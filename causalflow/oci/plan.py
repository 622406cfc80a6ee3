"""The analysis plan of an observational study, and the validated data it names.

A :class:`Plan` states the target trial: the data, the binary treatment, the outcome,
the confounders with priorities, negative-control (placebo) outcomes, the population
(a ``condition_on`` expression), the estimands and a seed. :func:`prepare_data`
checks the plan against the data and returns arrays, before any model is fitted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._optional import require
from ..errors import ValidationError
from ..expr import parse_condition

__all__ = ["ESTIMANDS", "PRIORITIES", "AnalysisData", "Plan", "prepare_data"]

ESTIMANDS = ("ATE", "ATT", "ATO")
PRIORITIES = ("high", "medium", "low")
_PLAN_KEYS = ("data", "treatment", "outcome", "confounders", "placebo_outcomes", "population",
              "estimands", "seed", "name", "partition")


def check_fields(mapping, owner: str, known, required=(), word: str = "field") -> None:
    """A JSON-like object has only ``known`` keys and every ``required`` one (errors name the key)."""
    if not isinstance(mapping, Mapping):
        raise ValidationError(f"{owner}: expected a mapping of {word}s, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise ValidationError(f"{owner}.{unknown[0]}: unknown {word}; known {word}s: {list(known)}")
    for name in required:
        if name not in mapping:
            raise ValidationError(f"{owner}.{name}: required {word} is missing")


def _name(value, field_name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"Plan.{field_name}: must be a non-empty column name, got {value!r}")
    return value


def _names(value, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValidationError(f"Plan.{field_name}: must be a list of column names, got {type(value).__name__}")
    out = tuple(_name(v, field_name) for v in value)
    if len(set(out)) != len(out):
        raise ValidationError(f"Plan.{field_name}: duplicate names in {list(out)}")
    return out


@dataclass(frozen=True, eq=False)
class Plan:
    """The plan of an observational study (the target trial, stated before any estimate).

    Parameters
    ----------
    data : str, path or table
        A CSV / parquet path (relative paths are taken relative to the plan file when
        the plan is read from a file) or an in-memory pandas / polars / pyarrow table.
    treatment : str
        Binary treatment column (0/1 or boolean).
    outcome : str
        Numeric outcome column.
    confounders : mapping priority -> list of columns, or a list
        Priorities ``"high"``, ``"medium"``, ``"low"``; a plain list means all high.
        Balance of high-priority confounders decides the verdict; low-priority ones are
        candidates the rule Actor adds when the Critic finds them imbalanced.
    placebo_outcomes : list of str
        Negative-control outcomes that the treatment cannot affect.
    population : str, optional
        A ``condition_on`` expression selecting the study population.
    estimands : list of "ATE", "ATT", "ATO"
    seed : int
    name : str, optional
        A label for reports.
    partition : str, optional
        A column to repeat the analysis across (follow-up tables).

    Examples
    --------
    >>> plan = Plan(data="nsw.csv", treatment="treat", outcome="re78",
    ...             confounders={"high": ["re74", "re75"], "medium": ["age"]}, estimands=["ATT"])
    >>> plan.all_confounders
    ('re74', 're75', 'age')
    >>> Plan(data="x.csv", treatment="t", outcome="y", confounders=["a"], estimands=["ATX"])
    Traceback (most recent call last):
    ...
    causalflow.errors.ValidationError: Plan.estimands: unknown estimand 'ATX'; choose from ('ATE', 'ATT', 'ATO')
    """

    data: object
    treatment: str
    outcome: str
    confounders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    placebo_outcomes: tuple[str, ...] = ()
    population: str | None = None
    estimands: tuple[str, ...] = ("ATE",)
    seed: int = 0
    name: str | None = None
    partition: str | None = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass normalisation)
        if self.data is None or (isinstance(self.data, str) and not self.data.strip()):
            raise ValidationError("Plan.data: give a CSV / parquet path or a table")
        if isinstance(self.data, os.PathLike):
            set_("data", os.fspath(self.data))
        if not isinstance(self.data, str) and not _is_table(self.data):
            raise ValidationError(f"Plan.data: expected a path or a pandas / polars / pyarrow table, "
                                  f"got {type(self.data).__name__}")
        _name(self.treatment, "treatment")
        _name(self.outcome, "outcome")
        confounders = self.confounders
        if isinstance(confounders, (list, tuple)):
            confounders = {"high": list(confounders)}
        if not isinstance(confounders, Mapping):
            raise ValidationError("Plan.confounders: must map 'high' / 'medium' / 'low' to lists of columns")
        normalised = {}
        for key, value in confounders.items():
            if key not in PRIORITIES:
                raise ValidationError(f"Plan.confounders: unknown priority {key!r}; choose from {PRIORITIES}")
            normalised[key] = _names(value, f"confounders.{key}")
        set_("confounders", {p: normalised.get(p, ()) for p in PRIORITIES})
        every = self.all_confounders
        if not every:
            raise ValidationError("Plan.confounders: name at least one confounder")
        if len(set(every)) != len(every):
            dup = sorted({c for c in every if every.count(c) > 1})
            raise ValidationError(f"Plan.confounders: {dup[0]!r} is listed under more than one priority")
        set_("placebo_outcomes", _names(self.placebo_outcomes, "placebo_outcomes"))
        for role, column in (("treatment", self.treatment), ("outcome", self.outcome)):
            if column in every:
                raise ValidationError(f"Plan.confounders: {column!r} is the {role}, not a confounder")
            if column in self.placebo_outcomes:
                raise ValidationError(f"Plan.placebo_outcomes: {column!r} is the {role}")
        if self.treatment == self.outcome:
            raise ValidationError("Plan.outcome: must differ from the treatment")
        for column in self.placebo_outcomes:
            if column in every:
                raise ValidationError(f"Plan.placebo_outcomes: {column!r} is also a confounder")
        if self.population is not None:
            if not isinstance(self.population, str) or not self.population.strip():
                raise ValidationError("Plan.population: must be a condition_on expression (string) or None")
            try:
                parse_condition(self.population)
            except ValidationError as exc:
                raise ValidationError(f"Plan.population: {exc}") from None
        estimands = (self.estimands,) if isinstance(self.estimands, str) else self.estimands
        if not isinstance(estimands, (list, tuple)) or not estimands:
            raise ValidationError("Plan.estimands: give a non-empty list among ATE, ATT, ATO")
        for e in estimands:
            if e not in ESTIMANDS:
                raise ValidationError(f"Plan.estimands: unknown estimand {e!r}; choose from {ESTIMANDS}")
        set_("estimands", tuple(dict.fromkeys(estimands)))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValidationError(f"Plan.seed: must be a non-negative integer, got {self.seed!r}")
        set_("seed", int(self.seed))
        if self.name is not None and not isinstance(self.name, str):
            raise ValidationError("Plan.name: must be a string")
        if self.partition is not None:
            _name(self.partition, "partition")

    @property
    def all_confounders(self) -> tuple[str, ...]:
        """Every confounder, high priority first."""
        return tuple(c for p in PRIORITIES for c in self.confounders.get(p, ()))

    def priority_of(self, column: str) -> str:
        """The priority of a confounder named in the plan."""
        for p in PRIORITIES:
            if column in self.confounders[p]:
                return p
        raise ValidationError(f"Plan.confounders: {column!r} is not a confounder of this plan")

    # ---- (de)serialisation -------------------------------------------------------------
    @classmethod
    def from_dict(cls, mapping: Mapping, base_dir: str | os.PathLike | None = None) -> Plan:
        """Build a plan from a JSON-like mapping; unknown keys are errors naming the key.

        A relative ``data`` path is resolved against ``base_dir`` when given.
        """
        check_fields(mapping, "Plan", _PLAN_KEYS, ("data", "treatment", "outcome"))
        kwargs = dict(mapping)
        data = kwargs["data"]
        if isinstance(data, str) and base_dir is not None and not os.path.isabs(data):
            kwargs["data"] = os.path.normpath(os.path.join(os.fspath(base_dir), data))
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Plan:
        """Read a plan from YAML (``yaml.safe_load``) or JSON.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "plan.yaml").write_text(
        ...     "data: d.csv\\ntreatment: t\\noutcome: y\\nconfounders: {high: [x]}\\nestimands: [ATO]\\n")
        >>> Plan.from_file(folder / "plan.yaml").estimands
        ('ATO',)
        """
        path = Path(path)
        if not path.is_file():
            raise ValidationError(f"plan: file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            try:
                mapping = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"plan {str(path)!r}: invalid JSON: {exc}") from None
        else:
            import yaml

            try:
                mapping = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValidationError(f"plan {str(path)!r}: invalid YAML: {exc}") from None
        return cls.from_dict(mapping, base_dir=path.parent.resolve())

    def to_dict(self) -> dict:
        """JSON-ready fields; an in-memory table is written as ``"<table>"``."""
        return {
            "data": self.data if isinstance(self.data, str) else "<table>",
            "treatment": self.treatment, "outcome": self.outcome,
            "confounders": {p: list(v) for p, v in self.confounders.items()},
            "placebo_outcomes": list(self.placebo_outcomes), "population": self.population,
            "estimands": list(self.estimands), "seed": self.seed, "name": self.name,
            "partition": self.partition,
        }

    def replace(self, **changes) -> Plan:
        """A new plan with some fields changed (validated again)."""
        fields = {k: getattr(self, k) for k in _PLAN_KEYS}
        fields.update(changes)
        return Plan(**fields)


def _is_table(obj) -> bool:
    return isinstance(obj, pd.DataFrame) or type(obj).__module__.split(".")[0] in ("polars", "pyarrow")


def _to_pandas(table) -> pd.DataFrame:
    from ..validate import to_pandas as table_to_pandas  # the one boundary conversion of the package

    try:
        return table_to_pandas(table)
    except ValidationError as exc:
        raise ValidationError(f"Plan.{exc}") from None


def load_table(data, columns: list[str] | None = None) -> pd.DataFrame:
    """Read the plan's data (path or table); never modifies an in-memory table."""
    if isinstance(data, str):
        path = Path(data)
        if not path.is_file():
            raise ValidationError(f"Plan.data: file {data!r} does not exist")
        suffixes = "".join(path.suffixes).lower()
        if suffixes.endswith((".parquet", ".pq")):
            names = require("pyarrow.parquet", "oci").read_schema(path).names
            usecols = [c for c in columns if c in names] if columns is not None else None
            return pd.read_parquet(path, columns=usecols)
        if ".csv" in suffixes or ".txt" in suffixes:
            header = pd.read_csv(path, nrows=0).columns
            usecols = [c for c in columns if c in header] if columns is not None else None
            return pd.read_csv(path, usecols=usecols)
        raise ValidationError(f"Plan.data: {data!r} is neither CSV nor parquet")
    return _to_pandas(data)


@dataclass(frozen=True, slots=True)
class AnalysisData:
    """The validated study population as arrays (rows outside ``population`` dropped).

    Attributes
    ----------
    frame : pandas.DataFrame
        The plan's columns for the study population (a copy; index reset).
    treatment : ndarray (n,) of float 0/1
    outcome : ndarray (n,) of float
    placebos : dict name -> ndarray (n,)
    plan : Plan
    """

    frame: pd.DataFrame
    treatment: np.ndarray
    outcome: np.ndarray
    placebos: dict
    plan: Plan

    @property
    def n(self) -> int:
        return len(self.treatment)


def _numeric(series: pd.Series, role: str) -> np.ndarray:
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise ValidationError(f"Plan.{role}: column {series.name!r} must be numeric, got dtype {series.dtype}")
    values = series.to_numpy(dtype=float, na_value=np.nan)
    if np.isnan(values).any():
        raise ValidationError(f"Plan.{role}: column {series.name!r} has {int(np.isnan(values).sum())} "
                              "missing values")
    if not np.isfinite(values).all():
        raise ValidationError(f"Plan.{role}: column {series.name!r} has infinite values")
    return values


def prepare_data(plan: Plan, table=None) -> AnalysisData:
    """Check the plan against its data and return the study population as arrays.

    Raises :class:`ValidationError` (naming the field and column) for a missing column,
    a non-binary treatment, a non-numeric or missing outcome / placebo, missing
    confounder values, or a population with no treated or no control units. Nothing is
    fitted here.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"t": [0, 1, 0, 1], "y": [1.0, 2.0, 3.0, 4.0], "x": [0.1, 0.2, 0.3, 0.5]})
    >>> prepare_data(Plan(data=df, treatment="t", outcome="y", confounders=["x"])).n
    4
    >>> prepare_data(Plan(data=df, treatment="t", outcome="y", confounders=["z"]))
    Traceback (most recent call last):
    ...
    causalflow.errors.ValidationError: Plan.confounders: column 'z' is not in the data; available: ['t', 'x', 'y']
    """
    needed = [plan.treatment, plan.outcome, *plan.all_confounders, *plan.placebo_outcomes]
    population = parse_condition(plan.population) if plan.population else None
    extra = sorted(population.columns) if population is not None else []
    if plan.partition:
        extra.append(plan.partition)
    df = load_table(plan.data if table is None else table, columns=list(dict.fromkeys(needed + extra)))
    available = [str(c) for c in df.columns]
    roles = [("treatment", plan.treatment), ("outcome", plan.outcome)]
    roles += [("confounders", c) for c in plan.all_confounders]
    roles += [("placebo_outcomes", c) for c in plan.placebo_outcomes]
    if plan.partition:
        roles.append(("partition", plan.partition))
    for role, column in roles:
        if column not in df.columns:
            raise ValidationError(f"Plan.{role}: column {column!r} is not in the data; "
                                  f"available: {sorted(available)}")
    if population is not None:
        try:
            population = parse_condition(plan.population, known_columns=available)
            mask = population.evaluate({c: df[c].to_numpy() for c in population.columns})
        except ValidationError as exc:
            raise ValidationError(f"Plan.population: {exc}") from None
        df = df.loc[mask]
    keep = list(dict.fromkeys(needed + ([plan.partition] if plan.partition else [])))
    df = df[keep].reset_index(drop=True).copy()
    if len(df) == 0:
        raise ValidationError("Plan.population: no rows satisfy the population filter")
    t_series = df[plan.treatment]
    values = pd.unique(t_series.dropna())
    if t_series.isna().any():
        raise ValidationError(f"Plan.treatment: column {plan.treatment!r} has missing values")
    try:
        binary = set(np.asarray(values, dtype=float).tolist()) <= {0.0, 1.0}
    except (TypeError, ValueError):
        binary = False
    if not binary:
        shown = sorted(map(str, values))[:5]
        raise ValidationError(f"Plan.treatment: column {plan.treatment!r} must be binary 0/1 "
                              f"(or boolean); found values {shown}")
    t = t_series.to_numpy(dtype=float)
    if t.min() == t.max():
        raise ValidationError(f"Plan.treatment: column {plan.treatment!r} has only "
                              f"{'treated' if t.max() == 1 else 'control'} units in the population")
    y = _numeric(df[plan.outcome], "outcome")
    placebos = {c: _numeric(df[c], "placebo_outcomes") for c in plan.placebo_outcomes}
    for c in plan.all_confounders:
        if df[c].isna().any():
            raise ValidationError(f"Plan.confounders: column {c!r} has {int(df[c].isna().sum())} missing values")
    return AnalysisData(frame=df, treatment=t, outcome=y, placebos=placebos, plan=plan)
