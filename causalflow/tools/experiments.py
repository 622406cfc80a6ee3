"""Tools over the experiment grammar: find and describe data, create the experiment, fit,
infer effects, derive (relative, adjusted, projected, mediated), monitor, plan, save.

Each tool is the grammar call it names, plus the checks that turn a mistake into an error
an LLM can act on (an unknown column lists the columns; a bad expression says where and
what the language allows). The example arguments of the tools run in registry order on the
session of :func:`causalflow.tools.registry.demo_session` (a file ``store.csv`` of
:func:`causalflow.demo.simulate_store`).

Examples
--------
A tool is a plain function of its argument model and a workspace (``Session.call`` validates
JSON into the model, calls it, and returns the result's JSON):

>>> import tempfile
>>> from causalflow.tools.registry import demo_session
>>> session = demo_session(tempfile.mkdtemp(), n=2000)
>>> exp = create_experiment(CreateExperiment(source="store.csv", intent_to_treat="assigned"), session)
>>> exp.handle, exp.design.kinds, exp.design.arms
('exp_1', ['ab'], [0, 1])
>>> fit_metrics(FitMetrics(experiment="exp_1", y="sale"), session)
Traceback (most recent call last):
...
causalflow.tools.safety.ToolError: y: no column 'sale' in the data; did you mean 'sales'?
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..data import ExperimentData
from ..effects.render import plain
from ..errors import ValidationError
from ..models.linear import LinearModel
from ..platform.monitor import monitor
from ..platform.planning import mde, power, sample_size
from .base import (
    Args,
    Expression,
    Handle,
    Label,
    Name,
    PathText,
    Result,
    Row,
    TableResult,
    Workspace,
    match_label,
    require_columns,
    table_result,
    tool,
)
from .handles import KINDS
from .safety import ToolError

__all__ = ["TOOLS", "CONDITION_GRAMMAR"]

CovType = Literal["HC0", "HC1", "CR0", "CR1", "CR2", "CR3"]
#: one metric column or a list of them
Metrics = Name | Annotated[list[Name], Field(min_length=1, max_length=200)]
#: one condition or a list of them (at most 50)
Conditions = Expression | Annotated[list[Expression], Field(min_length=1, max_length=50)]

#: what a condition_on expression may contain, for error messages
CONDITION_GRAMMAR = ("condition_on language: covariate columns, numbers, 'quoted text', True/False; comparisons "
                     "== != < <= > >=; 'in [...]' / 'not in [...]'; and / or / not; + - * / % ** and "
                     "parentheses. No calls, attributes or indexing. Example: \"device == 'desktop' and "
                     "pre_sales > 10\"")


def _label(value):
    """An arm label as a JSON value (numpy scalars to Python)."""
    value = plain(value)
    return value.item() if hasattr(value, "item") else value


def _json_cell(value):
    """A table cell as a JSON value (NaN to None, dates to ISO text, others to text)."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return plain(float(value))
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)[:200]


def _effects_grammar_error(exc: ValidationError, argument: str, columns) -> ToolError:
    text = str(exc)
    if "unknown column" in text:
        return ToolError("unknown_column", text, argument=argument, allowed=sorted(map(str, columns)),
                         hint="only covariates of the model can be conditioned on; fit again with the column "
                              "in exogenous_covariates")
    if "condition_on" in text:
        return ToolError("invalid_expression", text, argument=argument, allowed=[CONDITION_GRAMMAR])
    return ToolError("invalid_design", text, argument=argument)


# ---------------------------------------------------------------------------------------
# data sources
# ---------------------------------------------------------------------------------------
class ListSources(Args):
    contains: str | None = Field(None, max_length=256, description="keep only paths containing this text")


class SourceList(Result):
    data_roots: list[str] = Field(description="folders whose files the tools read")
    output_root: str = Field(description="folder under which the tools write")
    files: list[str] = Field(description="data files (CSV / TSV / parquet), relative to their root")
    truncated: bool = Field(description="True when there are more files than listed")


@tool(example={})
def list_sources(args: ListSources, ws: Workspace) -> SourceList:
    """List the data files (CSV, TSV, parquet) that the tools may read, relative to their data
    root, and the data and output roots. Use a listed path as `source` in describe_source or
    create_experiment."""
    files = ws.roots.list_files(limit=501)
    if args.contains:
        files = [f for f in files if args.contains in f]
    truncated = len(files) > 500
    files = files[:500]
    lines = [f"Data roots: {', '.join(str(r) for r in ws.roots.data)}; output root: {ws.roots.out}",
             f"{len(files)} data file(s)" + (" (more not listed)" if truncated else "") + ":"]
    lines += [f"- {f}" for f in files[:50]] + (["- ..."] if len(files) > 50 else [])
    return SourceList(data_roots=[str(r) for r in ws.roots.data], output_root=str(ws.roots.out),
                      files=files, truncated=truncated, markdown="\n".join(lines))


class DescribeSource(Args):
    source: PathText = Field(description="a CSV / TSV / parquet path under a data root (see list_sources), "
                                         "or a table handle such as table_1")
    sample_rows: int = Field(5, ge=0, le=50, description="how many first rows to return as a sample")


class ColumnInfo(BaseModel):
    name: str
    dtype: str = Field(description="the pandas dtype")
    kind: Literal["numeric", "boolean", "text", "datetime", "other"]
    n_missing: int
    n_unique: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    top: list[str] | None = Field(None, description="most frequent values of a text column (at most 5)")


class SourceDescription(Result):
    source: str = Field(description="the source as the tools accept it")
    rows: int
    columns: list[ColumnInfo]
    sample: list[Row]


def _column_info(name, series: pd.Series) -> ColumnInfo:
    n_missing = int(series.isna().sum())
    n_unique = int(series.nunique(dropna=True))
    info = dict(name=str(name), dtype=str(series.dtype), n_missing=n_missing, n_unique=n_unique)
    if pd.api.types.is_bool_dtype(series):
        return ColumnInfo(kind="boolean", **info)
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=float, na_value=np.nan)
        finite = values[np.isfinite(values)]
        if len(finite):
            info.update(min=float(finite.min()), max=float(finite.max()), mean=float(finite.mean()))
        return ColumnInfo(kind="numeric", **info)
    if pd.api.types.is_datetime64_any_dtype(series):
        return ColumnInfo(kind="datetime", **info)
    if pd.api.types.is_string_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype) \
            or series.dtype == object:
        top = [str(v)[:100] for v in series.value_counts(dropna=True).index[:5]]
        return ColumnInfo(kind="text", top=top, **info)
    return ColumnInfo(kind="other", **info)


@tool(example={"source": "store.csv", "sample_rows": 3})
def describe_source(args: DescribeSource, ws: Workspace) -> SourceDescription:
    """Describe a data table: its rows, each column's type, missing values, distinct values,
    range (numeric) or most frequent values (text), and a few sample rows. Call it first to
    learn the column names the other tools take (assignment, treatment, clusters, metrics,
    covariates)."""
    df, label = ws.table(args.source)
    columns = [_column_info(name, df[name]) for name in df.columns]
    sample = [{str(k): _json_cell(v) for k, v in row.items()}
              for row in df.head(args.sample_rows).to_dict(orient="records")]
    lines = [f"{label}: {len(df):,} rows x {df.shape[1]} columns", "",
             "| column | kind | dtype | missing | distinct | range / top values |", "|---|---|---|---|---|---|"]
    for c in columns[:200]:
        span = (f"{c.min:.4g} .. {c.max:.4g} (mean {c.mean:.4g})" if c.min is not None else
                ", ".join(c.top or []))
        lines.append(f"| {c.name} | {c.kind} | {c.dtype} | {c.n_missing:,} | {c.n_unique:,} | "
                     f"{span.replace('|', '/')} |")
    if len(columns) > 200:
        lines.append(f"| ... {len(columns) - 200} more | | | | | |")
    return SourceDescription(source=label, rows=len(df), columns=columns, sample=sample,
                             markdown="\n".join(lines))


# ---------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------
class CreateExperiment(Args):
    source: PathText = Field(description="a CSV / TSV / parquet path under a data root, or a table handle")
    intent_to_treat: Name = Field(description="column of the randomized assignment (0/1, booleans or arm labels)")
    treated: Name | None = Field(None, description="column of the treatment actually received, when it can "
                                                   "differ from the assignment (an encouragement design)")
    propensity: Name | float | dict[str, Name | float] | None = Field(
        None, description="assignment probabilities: a column of P(assigned to treatment) (two arms, adaptive "
                          "designs), a mapping arm -> column (several arms), or the planned share of the "
                          "treatment arm / a mapping arm -> share (no weighting; used by the sample-ratio check)")
    instrument: Name | None = Field(None, description="instrument column; default: the assignment")
    cluster_by: Name | list[Name] | None = Field(None, description="column(s) of the units randomized together")
    control: Label | None = Field(None, description="label of the control arm (needed with 3+ arms without 0 "
                                                    "or 'control')")
    expected_allocation: dict[str, float] | None = Field(
        None, description="planned share of each arm (arm -> share) for the sample-ratio check; default: "
                          "the planned allocation given as propensity, else an equal split")


class ArmShare(BaseModel):
    arm: Label
    share: float


class DesignSummary(BaseModel):
    kinds: list[Literal["ab", "encouragement", "cluster", "adaptive"]] = Field(
        description="the designs present (several can be)")
    arms: list[Label] = Field(description="arm labels, control first")
    control: Label
    compliance_rate: float | None = Field(description="first-stage difference of an encouragement design")
    n_units: int
    n_clusters: int | None
    allocation: list[ArmShare] = Field(description="observed share of units per arm")
    expected_allocation: list[ArmShare] | None
    cov_type: str = Field(description="the default covariance of a fit of this design")


class SampleRatioTestInfo(BaseModel):
    level: Literal["units", "clusters"]
    observed: list[int]
    expected_share: list[float]
    statistic: float
    df: int
    p_value: float
    mismatch: bool


class SampleRatioInfo(BaseModel):
    p_value: float = Field(description="of the valid test: on clusters in a cluster design, else on units")
    mismatch: bool = Field(description="p below the threshold: assignment or logging may be broken")
    threshold: float
    expected_source: str = Field(description="where the expected shares came from")
    tests: list[SampleRatioTestInfo]


class ExperimentResult(Result):
    handle: str = Field(description="the experiment's handle, e.g. exp_1, for fit_metrics and monitor_experiment")
    source: str
    design: DesignSummary
    sample_ratio: SampleRatioInfo
    other_columns: list[str] = Field(description="columns without a role yet: metrics and covariates")


def _shares(mapping: dict, arms: tuple, argument: str) -> dict:
    return {match_label(k, arms, argument): v for k, v in mapping.items()}


@tool(example={"source": "store.csv", "intent_to_treat": "assigned", "treated": "uses_widget",
               "cluster_by": "region"})
def create_experiment(args: CreateExperiment, ws: Workspace) -> ExperimentResult:
    """Declare a randomized experiment on a table: which column is the random assignment,
    and optionally the treatment received (encouragement design: ITT and LATE), clusters
    (units randomized together), per-unit assignment probabilities (adaptive designs).
    Returns a handle (exp_1) and the design summary with the sample-ratio check (a mismatch
    means the assignment or logging may be broken: report it before any effect)."""
    df, label = ws.table(args.source)
    roles = {"intent_to_treat": args.intent_to_treat, "treated": args.treated, "instrument": args.instrument}
    for argument, name in roles.items():
        if name is not None:
            require_columns(df, name, argument)
    cluster_by = args.cluster_by
    if cluster_by is not None:
        require_columns(df, cluster_by, "cluster_by")
    # the labels are read only when a mapping or the control names arms (one pass over the column)
    arms = () if not (isinstance(args.propensity, dict) or args.control is not None) else tuple(
        pd.unique(df[args.intent_to_treat].dropna()))
    propensity = args.propensity
    if isinstance(propensity, str):
        require_columns(df, propensity, "propensity")
    elif isinstance(propensity, dict):
        propensity = _shares(propensity, arms, "propensity")
        for name in propensity.values():
            if isinstance(name, str):
                require_columns(df, name, "propensity")
    control = None if args.control is None else match_label(args.control, arms, "control")
    data = ExperimentData(df, intent_to_treat=args.intent_to_treat, treated=args.treated,
                          propensity=propensity, instrument=args.instrument, cluster_by=cluster_by,
                          control=control)
    expected = None if args.expected_allocation is None else _shares(args.expected_allocation, data.arms,
                                                                      "expected_allocation")
    check = data.check_sample_ratio(expected)
    d = data.design
    kinds = [k for k in ("ab", "encouragement", "cluster", "adaptive") if getattr(d, k)]
    design = DesignSummary(
        kinds=kinds, arms=[_label(a) for a in d.arms], control=_label(d.control),
        compliance_rate=d.compliance_rate, n_units=d.n_units, n_clusters=d.n_clusters,
        allocation=[ArmShare(arm=_label(a), share=float(s)) for a, s in d.allocation.items()],
        expected_allocation=None if d.expected_allocation is None else [
            ArmShare(arm=_label(a), share=float(s)) for a, s in d.expected_allocation.items()],
        cov_type=d.cov_type)
    tests = [t for t in (check.units, check.clusters) if t is not None]
    ratio = SampleRatioInfo(p_value=check.p_value, mismatch=check.mismatch, threshold=check.primary.threshold,
                            expected_source=check.expected_source,
                            tests=[SampleRatioTestInfo(level=t.level, observed=[int(o) for o in t.observed],
                                                       expected_share=[float(s) for s in t.expected_share],
                                                       statistic=t.statistic, df=t.df, p_value=t.p_value,
                                                       mismatch=t.mismatch) for t in tests])
    used = {args.intent_to_treat, args.treated, args.instrument, *([cluster_by] if isinstance(cluster_by, str)
                                                                    else cluster_by or [])}
    if isinstance(propensity, str):
        used.add(propensity)
    elif isinstance(propensity, dict):
        used.update(v for v in propensity.values() if isinstance(v, str))
    handle = ws.store.put("exp", data, f"{' + '.join(kinds)} experiment on {label}, {d.n_units:,} units")
    lines = [f"**{handle}** ({label})", "```", str(d), str(check), "```"]
    if check.mismatch:
        lines.append(check.warning())
    return ExperimentResult(handle=handle, source=label, design=design, sample_ratio=ratio,
                            other_columns=[str(c) for c in df.columns if c not in used][:500],
                            markdown="\n".join(lines))


# ---------------------------------------------------------------------------------------
# metrics and the fit
# ---------------------------------------------------------------------------------------
class NormalPriorArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: float = Field(0.0, description="prior mean of each arm effect")
    scale: float = Field(1.0, gt=0, description="prior sd of each arm effect, in units of the noise sd")


class FitMetrics(Args):
    experiment: Handle = Field(description="handle of create_experiment, e.g. exp_1")
    y: Metrics = Field(description="metric column(s) (numeric outcomes); many metrics fit in one pass")
    exogenous_covariates: list[Name] | Expression | None = Field(
        None, description="pre-treatment covariate columns (text columns become indicators), or one formulaic "
                          "right-hand side such as \"np.log1p(pre_sales) + C(device)\"")
    cov_type: CovType | None = Field(None, description="covariance; default HC1, or with clusters CR1 "
                                                       "(CR2/CR3 below 50 clusters)")
    inference: Literal["t", "normal"] = Field("t", description="reference distribution of p-values and intervals")
    av_planned_n: float | None = Field(None, gt=0, description="sample size the anytime-valid columns are "
                                                               "tuned for (default: the fitted one)")
    estimator: Literal["linear", "bayesian"] = Field(
        "linear", description="linear: the 2SLS model (effects with confidence intervals and p-values); bayesian: "
                              "a conjugate Bayesian regression (posterior effects, for rank_arms and decide; "
                              "it regresses on the assignment: ITT in an encouragement design)")
    prior: NormalPriorArgs | None = Field(None, description="bayesian only: the normal prior of the arm effects "
                                                            "(default mean 0, scale 1 noise sd)")


class ModelResult(Result):
    handle: str = Field(description="the model's handle, e.g. model_1, for infer_effects")
    experiment: str
    metrics: list[str]
    covariates: list[str] = Field(description="design columns of the covariates (levels of text columns)")
    condition_columns: list[str] = Field(description="columns condition_on may use in infer_effects")
    cov_type: str
    inference: str
    estimands: list[str] = Field(description="ATE (A/B), or ITT and LATE (encouragement design)")
    n_units: int


@tool(example={"experiment": "exp_1", "y": ["sales", "orders"], "exogenous_covariates": ["pre_sales", "device"]})
def fit_metrics(args: FitMetrics, ws: Workspace) -> ModelResult:
    """Add metrics (outcome columns) and pre-treatment covariates to an experiment and fit the
    one generalized 2SLS model: OLS for an A/B test, 2SLS for an encouragement design, cluster-
    robust covariances for clusters, inverse-propensity weights for adaptive designs.
    Covariates enter centred and interacted with treatment (Lin 2013), so effects in subgroups
    of covariates can be inferred. Returns a model handle (model_1) for infer_effects."""
    data = ws.store.get(args.experiment, ("exp",), "experiment")
    df = data.data
    require_columns(df, args.y, "y")
    linear_only = [k for k in ("cov_type", "av_planned_n") if getattr(args, k) is not None]
    if args.estimator == "bayesian" and (linear_only or args.inference != "t"):
        raise ToolError("invalid_arguments", f"{(linear_only or ['inference'])[0]}: applies to the linear estimator "
                        "only", argument=(linear_only or ["inference"])[0])
    if args.estimator == "linear" and args.prior is not None:
        raise ToolError("invalid_arguments", "prior: applies to the bayesian estimator only", argument="prior")
    covariates = args.exogenous_covariates
    if isinstance(covariates, list):
        require_columns(df, covariates, "exogenous_covariates")
    try:
        spec = data.add_metric(y=args.y, exogenous_covariates=covariates)
    except (ValidationError, SyntaxError) as exc:
        # formulaic's tokenizer can raise a bare SyntaxError on some texts: a bad formula all the same
        if isinstance(covariates, str) and ("formula" in str(exc) or isinstance(exc, SyntaxError)):
            raise ToolError("invalid_expression", f"exogenous_covariates: formula {covariates!r} does not parse"
                            if isinstance(exc, SyntaxError) else str(exc), argument="exogenous_covariates",
                            allowed=[str(c) for c in df.columns][:500],
                            hint="a formula may use column names, numbers, + - * / ** : and transforms such as "
                                 "np.log1p(x), C(x), bs(x, df=4)") from None
        raise
    if args.estimator == "bayesian":
        return _fit_bayesian(args, spec, ws)
    model = spec.fit(LinearModel(cov_type=args.cov_type, av_planned_n=args.av_planned_n, inference=args.inference))
    estimands = ["ITT", "LATE"] if model.fit_kinds == ("itt", "iv") else ["ATE"]
    handle = ws.store.put("model", model, f"{', '.join(model.metrics)} on {args.experiment} ({model.cov_type})")
    sources = list(model.covariates.sources)
    lines = [f"**{handle}**: {len(model.metrics)} metric(s) {list(model.metrics)} on {args.experiment}, "
             f"covariates {list(model.covariates.names) or 'none'}",
             f"estimands: {', '.join(estimands)}; covariance {model.cov_type}, {args.inference} reference",
             f"next: infer_effects with model={handle!r}"
             + (f"; condition_on may use {sources}" if sources else "")]
    return ModelResult(handle=handle, experiment=args.experiment, metrics=list(model.metrics),
                       covariates=list(model.covariates.names), condition_columns=sources,
                       cov_type=model.cov_type, inference=args.inference, estimands=estimands,
                       n_units=data.design.n_units, markdown="\n".join(lines))


def _fit_bayesian(args: FitMetrics, spec, ws: Workspace) -> ModelResult:
    from ..models.bayes import BayesianLinearRegression, NormalPrior

    prior = None if args.prior is None else NormalPrior(mean=args.prior.mean, scale=args.prior.scale)
    model = spec.fit(BayesianLinearRegression(prior))
    handle = ws.store.put("bmodel", model, f"Bayesian {', '.join(model.metrics)} on {args.experiment}")
    sources = list(model.covariates.sources)
    estimand = f"posterior {model.estimand}"
    lines = [f"**{handle}**: Bayesian regression of {list(model.metrics)} on {args.experiment}, covariates "
             f"{list(model.covariates.names) or 'none'}; {estimand}",
             f"next: infer_effects with model={handle!r} (posterior effects, then rank_arms), or decide"]
    return ModelResult(handle=handle, experiment=args.experiment, metrics=list(model.metrics),
                       covariates=list(model.covariates.names), condition_columns=sources, cov_type="posterior",
                       inference="posterior", estimands=[estimand], n_units=spec.data.design.n_units,
                       markdown="\n".join(lines))


# ---------------------------------------------------------------------------------------
# effects and what derives from them
# ---------------------------------------------------------------------------------------
class EffectsResult(Result):
    handle: str = Field(description="handle of this record, e.g. effects_1")
    kind: Literal["effects", "relative", "posterior"]
    derived_from: str = Field(description="the model or effects handle this record comes from")
    columns: list[str]
    effects: list[Row] = Field(description="one row per metric x arm x condition x estimand")
    alpha: float
    cov_type: str | None = None
    inference: str | None = None
    method: str | None = Field(None, description="interval method of relative effects")
    scale: str | None = Field(None, description="percent or fraction, for relative effects")
    adjustment: dict[str, str | float] | None = Field(None, description="multiple-testing adjustment, if any")
    covariance: list[list[float | None]] | None = Field(
        None, description="joint covariance of the estimates (when include_covariance)")


def _effects_result(record, kind: str, derived_from: str, ws: Workspace, include_covariance: bool = False,
                    summary: str = "") -> EffectsResult:
    out = record.to_dict()
    covariance = out.pop("covariance", None)
    rows, columns = out.pop("effects"), out.pop("columns")
    handle = ws.store.put(kind, record, summary or f"{len(rows)} effect(s) from {derived_from}")
    return EffectsResult(handle=handle, kind=kind, derived_from=derived_from, columns=columns, effects=rows,
                         alpha=out.pop("alpha"), cov_type=out.pop("cov_type", None),
                         inference=out.pop("inference", None), method=out.pop("method", None),
                         scale=out.pop("scale", None), adjustment=out.pop("adjustment", None),
                         covariance=covariance if include_covariance else None,
                         markdown=f"**{handle}**\n\n" + record.to_markdown())


class InferEffects(Args):
    model: Handle = Field(description="handle of fit_metrics, e.g. model_1 (or bmodel_1: posterior effects)")
    condition_on: Conditions | None = Field(
        None,
        description="subgroups, each an expression over the model's covariates, e.g. \"device == 'desktop'\" "
                    "or \"pre_sales > 10 and device != 'tablet'\"; omit for the average effect")
    alpha: float = Field(0.05, gt=0, lt=1, description="1 - confidence level")
    include_covariance: bool = Field(False, description="return the joint covariance of the estimates")


@tool(example={"model": "model_1", "condition_on": ["device == 'desktop'", "device != 'desktop'"]})
def infer_effects(args: InferEffects, ws: Workspace) -> EffectsResult:
    """Effects of every arm vs control on every metric, overall or in subgroups given by
    condition_on (a safe expression language over the covariates: comparisons, and/or/not,
    'in [...]', arithmetic; nothing is evaluated as code). Rows give the estimand (ATE,
    CATE in a subgroup, ITT and LATE in an encouragement design), estimate, standard error,
    confidence interval, p-value and anytime-valid p-value and confidence sequence. Returns an
    effects handle for relative_effects, adjust_effects, project_effects and save_effects."""
    model = ws.store.get(args.model, ("model", "bmodel"), "model")
    try:
        effects = model.infer_effect(condition_on=args.condition_on, alpha=args.alpha)
    except ValidationError as exc:
        raise _effects_grammar_error(exc, "condition_on", model.covariates.sources) from None
    kind = "posterior" if args.model.startswith("bmodel_") else "effects"
    return _effects_result(effects, kind, args.model, ws, args.include_covariance)


class RelativeEffects(Args):
    effects: Handle = Field(description="handle of infer_effects, e.g. effects_1")
    method: Literal["delta", "fieller"] = Field("delta", description="interval: delta method, or Fieller's "
                                                                     "(better when the control mean is noisy)")
    scale: Literal["percent", "fraction"] = Field("percent", description="5.0 (percent) or 0.05 (fraction)")


@tool(example={"effects": "effects_1"})
def relative_effects(args: RelativeEffects, ws: Workspace) -> EffectsResult:
    """Relative lifts: each effect divided by the adjusted control mean in the same condition,
    with a delta-method standard error from their joint covariance (or Fieller's interval).
    Needs effects from infer_effects (not projected or adjusted ones)."""
    effects = ws.store.get(args.effects, ("effects",), "effects")
    if effects.model is None:
        raise ToolError("invalid_value", f"effects: {args.effects} has no model (a monitored look); relative "
                        "lifts need effects from infer_effects", argument="effects",
                        allowed=ws.store.handles(("effects",)))
    return _effects_result(effects.relative(method=args.method, scale=args.scale), "relative", args.effects, ws)


class AdjustEffects(Args):
    effects: Handle = Field(description="handle of infer_effects or project_effects")
    method: Literal["holm", "bonferroni", "bh", "by", "maxt"] = Field(
        "holm", description="family-wise (holm, bonferroni, maxt) or false-discovery-rate (bh, by) adjustment")


@tool(example={"effects": "effects_1", "method": "holm"})
def adjust_effects(args: AdjustEffects, ws: Workspace) -> EffectsResult:
    """Multiple-testing adjustment over all effects of a record: adds p_value_adjusted and
    simultaneous (max-t) confidence intervals from the joint covariance. Use it whenever
    several metrics, arms or subgroups are read together."""
    effects = ws.store.get(args.effects, ("effects",), "effects")
    return _effects_result(effects.adjust(args.method), "effects", args.effects, ws,
                           summary=f"{args.method}-adjusted {args.effects}")


class ProjectEffects(Args):
    effects: Handle = Field(description="handle of infer_effects")
    weights: dict[Expression, float] | None = Field(
        None, max_length=50, description="condition -> weight (summing to 1) over the record's conditions "
                                         "(\"all\" is the average effect), e.g. {\"device == 'desktop'\": 0.3, "
                                         "\"device != 'desktop'\": 0.7}")
    target: PathText | None = Field(None, description="or a table (path or table handle) with the covariate "
                                                      "columns: the effect at its covariate means")


@tool(example={"effects": "effects_1", "weights": {"device == 'desktop'": 0.3, "device != 'desktop'": 0.7}})
def project_effects(args: ProjectEffects, ws: Workspace) -> EffectsResult:
    """Project conditional effects onto a future mix of conditions (weights summing to 1), or
    onto a target population's covariates (a table): the estimate is the weighted
    combination and its standard error comes from the joint covariance."""
    effects = ws.store.get(args.effects, ("effects",), "effects")
    if (args.weights is None) == (args.target is None):
        raise ToolError("invalid_arguments", "give weights or target (one of them)", argument="weights")
    if args.weights is not None:
        known = ["all", *(c for c in effects.conditions if c is not None)]
        try:
            projected = effects.project(dict(args.weights))
        except ValidationError as exc:
            raise ToolError("invalid_value", str(exc), argument="weights", allowed=known) from None
    else:
        table, _ = ws.table(args.target, "target")
        try:
            projected = effects.project(table)
        except ValidationError as exc:
            raise _effects_grammar_error(exc, "target", getattr(effects.model.covariates, "sources", ())) from None
    return _effects_result(projected, "effects", args.effects, ws)


class MediateEffect(Args):
    effects: Handle = Field(description="handle of infer_effects (a linear model's effects)")
    graph: str = Field(min_length=1, max_length=2000,
                       description="the causal graph over T (the treatment) and metric columns, edges separated by "
                                   "';', e.g. \"T -> searches; T -> views; searches -> views -> sales\"; parsed, "
                                   "never evaluated")
    mediator: Name | list[Name] | None = Field(
        None, description="the mediator(s) whose paths to report: one node, or an ordered chain; default every "
                          "indirect path")
    condition_on: Conditions | None = Field(
        None, description="subgroups; default the conditions of the effects record")
    alpha: float | None = Field(None, gt=0, lt=1, description="1 - confidence level; default the record's")


@tool(example={"effects": "effects_1", "graph": "T -> sessions -> sales"})
def mediate_effect(args: MediateEffect, ws: Workspace) -> TableResult:
    """Split an effect into its direct part and the indirect paths through mediators of a
    causal graph (serial mediators too: T -> a -> b -> metric), with standard errors from the
    joint covariance of the node equations. Rows: direct, each indirect path, total_indirect
    and total, per arm, condition and estimand. The mediators are metric columns measured
    after treatment; the usual mediation assumptions (no unmeasured mediator-outcome
    confounding) are the user's to defend."""
    effects = ws.store.get(args.effects, ("effects",), "effects")
    try:
        graph = effects.with_graph(args.graph)
        keywords = {} if args.condition_on is None else {"condition_on": args.condition_on}
        mediation = graph.mediate_effect(mediator=args.mediator, alpha=args.alpha, **keywords)
    except ValidationError as exc:
        text = str(exc)
        if text.startswith("graph") and ("not a column" in text or "is not" in text):
            raise ToolError("invalid_value", text, argument="graph",
                            allowed=[str(c) for c in effects.model.spec.data.data.columns][:500]) from None
        if text.startswith("graph"):
            raise ToolError("invalid_expression", text, argument="graph",
                            hint="edges look like 'T -> a -> metric; T -> metric', separated by ';'") from None
        if "condition_on" in text:
            raise _effects_grammar_error(exc, "condition_on", effects.model.covariates.sources) from None
        raise
    return table_result(mediation, "mediation", args.effects, ws,
                        f"mediation of {args.effects} through {list(mediation.mediators)}")


# ---------------------------------------------------------------------------------------
# many experiments at once
# ---------------------------------------------------------------------------------------
class AnalyzeMany(Args):
    source: PathText = Field(description="a CSV / TSV / parquet path under a data root, or a table handle, "
                                         "with one row per unit and an experiment-id column")
    experiment: Name = Field(description="column of the experiment id")
    intent_to_treat: Name = Field(description="column of the randomized assignment, the same in every experiment")
    treated: Name | None = Field(None, description="column of the treatment received (encouragement designs)")
    propensity: Name | float | None = Field(None, description="column of P(assigned to treatment), or the "
                                                              "planned share of the treatment arm")
    cluster_by: Name | list[Name] | None = Field(None, description="column(s) of the units randomized together")
    control: Label | None = Field(None, description="label of the control arm (3+ arms without 0 or 'control')")
    y: Metrics = Field(description="metric column(s)")
    exogenous_covariates: list[Name] | None = Field(None, description="pre-treatment covariate columns")
    cov_type: CovType | None = Field(None, description="default: each experiment's design default")
    alpha: float = Field(0.05, gt=0, lt=1)


class AnalyzeManyResult(Result):
    handle: str = Field(description="handle of the effects table, e.g. many_1")
    experiments: int
    failed: list[Row] = Field(description="experiments that could not be analysed, with the reason")
    columns: list[str]
    rows: list[Row] = Field(description="one row per experiment x metric x arm x estimand (at most 5,000)")
    truncated: bool = Field(description="more rows than returned: save or narrow the call")


#: rows of an analyze_many table returned inline
MANY_ROWS = 5000


@tool(example={"source": "store.csv", "experiment": "device", "intent_to_treat": "assigned", "y": "sales",
               "cluster_by": "region", "exogenous_covariates": ["pre_sales"]})
def analyze_many(args: AnalyzeMany, ws: Workspace) -> AnalyzeManyResult:
    """Analyse many experiments of one table at once (cf.analyze_many): every experiment id
    is fitted on its own rows with the same roles, metrics and covariates; returns one
    effects table with the experiment column first and an error column. An experiment that
    cannot be analysed (a single arm, a singular design) gets one row with the reason and
    does not stop the others."""
    from ..platform.many import analyze_many as run_many

    df, label = ws.table(args.source)
    require_columns(df, args.experiment, "experiment")
    for argument in ("intent_to_treat", "treated"):
        if getattr(args, argument) is not None:
            require_columns(df, getattr(args, argument), argument)
    if isinstance(args.propensity, str):
        require_columns(df, args.propensity, "propensity")
    if args.cluster_by is not None:
        require_columns(df, args.cluster_by, "cluster_by")
    y = [args.y] if isinstance(args.y, str) else list(args.y)
    require_columns(df, y, "y")
    if args.exogenous_covariates:
        require_columns(df, args.exogenous_covariates, "exogenous_covariates")
    control = None
    if args.control is not None:
        control = match_label(args.control, tuple(pd.unique(df[args.intent_to_treat].dropna())), "control")
    table = run_many(df, args.experiment, y=y, exogenous_covariates=args.exogenous_covariates,
                     intent_to_treat=args.intent_to_treat, treated=args.treated, propensity=args.propensity,
                     cluster_by=args.cluster_by, control=control, alpha=args.alpha,
                     estimator=LinearModel(cov_type=args.cov_type), n_jobs=1)
    handle = ws.store.put("many", table, f"effects of {table[args.experiment].nunique():,} experiments on {label}")
    rows = [{str(k): _json_cell(v) for k, v in r.items()} for r in table.head(MANY_ROWS).to_dict("records")]
    failed = table[table["error"].notna()]
    failures = [{args.experiment: _json_cell(r[args.experiment]), "error": str(r["error"])}
                for r in failed.to_dict("records")]
    lines = [f"**{handle}**: {table[args.experiment].nunique():,} experiments, {len(failures)} failed", ""]
    lines += [f"- {f[args.experiment]}: {f['error']}" for f in failures[:20]]
    return AnalyzeManyResult(handle=handle, experiments=int(table[args.experiment].nunique()), failed=failures,
                             columns=[str(c) for c in table.columns], rows=rows, truncated=len(table) > MANY_ROWS,
                             markdown="\n".join(lines))


# ---------------------------------------------------------------------------------------
# monitoring and planning
# ---------------------------------------------------------------------------------------
class MonitorExperiment(Args):
    experiment: Handle = Field(description="handle of create_experiment")
    y: Metrics = Field(description="metric column(s)")
    exogenous_covariates: list[Name] | None = Field(None, description="pre-treatment covariate columns")
    arrival: Name | None = Field(None, description="column ordering arrival (default: row order)")
    looks: int = Field(20, ge=1, le=500, description="number of equally sized looks")
    condition_on: Conditions | None = Field(None, description="subgroups, as in infer_effects")
    cov_type: CovType | None = None
    alpha: float = Field(0.05, gt=0, lt=1)
    include_looks: bool = Field(False, description="return every look's effects (look x effect rows)")


class MonitorResult(Result):
    handle: str = Field(description="handle of the monitoring record, e.g. monitor_1")
    looks: int
    n_rows: list[int] = Field(description="rows seen at each look")
    g: float = Field(description="mixture precision of the anytime-valid inference")
    alpha: float
    first_significant: list[Row] = Field(description="per effect, the first look with anytime-valid p <= alpha")
    last_look: list[Row] = Field(description="the effects at the last look")
    trajectory: list[Row] | None = Field(None, description="every look's effects (when include_looks)")


@tool(example={"experiment": "exp_1", "y": "sales", "exogenous_covariates": ["pre_sales"], "looks": 10})
def monitor_experiment(args: MonitorExperiment, ws: Workspace) -> MonitorResult:
    """Continuous monitoring: the effects at successive looks (as rows arrived) with
    anytime-valid p-values and confidence sequences, which stay valid however often one
    looks and whenever one stops. Returns the first significant look per effect and the
    effects at the last look."""
    data = ws.store.get(args.experiment, ("exp",), "experiment")
    require_columns(data.data, args.y, "y")
    if args.exogenous_covariates:
        require_columns(data.data, args.exogenous_covariates, "exogenous_covariates")
    if args.arrival is not None:
        require_columns(data.data, args.arrival, "arrival")
    try:
        mon = monitor(data, y=args.y, exogenous_covariates=args.exogenous_covariates, arrival=args.arrival,
                      looks=args.looks, estimator=LinearModel(cov_type=args.cov_type),
                      condition_on=args.condition_on, alpha=args.alpha)
    except ValidationError as exc:
        if "condition_on" in str(exc):
            raise _effects_grammar_error(exc, "condition_on", args.exogenous_covariates or []) from None
        raise
    first = [{k: _json_cell(v) for k, v in row.items()} for row in mon.first_significant().to_dict("records")]
    last = mon.looks[-1].to_dict()["effects"]
    trajectory = None
    if args.include_looks:
        trajectory = [{str(k): _json_cell(v) for k, v in row.items()} for row in mon.to_frame().to_dict("records")]
    handle = ws.store.put("monitor", mon, f"{len(mon)} looks of {args.experiment}")
    table = ["| metric | arm | condition | estimand | first significant look | rows then |",
             "|---|---|---|---|---|---|"]
    for r in first:
        table.append(f"| {r['metric']} | {r['arm']} | {r['condition']} | {r['estimand']} | "
                     f"{'-' if r['first_look'] is None else r['first_look']} | "
                     f"{'-' if r['n_rows_at_first_look'] is None else format(r['n_rows_at_first_look'], ',')} |")
    markdown = (f"**{handle}**: {len(mon)} looks, g = {mon.g:.4g}, alpha {mon.alpha}\n\n" + "\n".join(table)
                + "\n\nLast look:\n\n" + mon.looks[-1].to_markdown())
    return MonitorResult(handle=handle, looks=len(mon), n_rows=[int(n) for n in mon.n_rows], g=float(mon.g),
                         alpha=float(mon.alpha), first_significant=first, last_look=last, trajectory=trajectory,
                         markdown=markdown)


class PlanExperiment(Args):
    solve_for: Literal["power", "sample_size", "mde"] = Field(
        description="power: at effect and n; sample_size: units needed for effect; mde: smallest effect at n")
    effect: float | None = Field(None, description="absolute effect (the LATE when compliance < 1), or a relative "
                                                   "lift when relative")
    n: float | None = Field(None, gt=0, description="total units over all arms")
    power: float = Field(0.8, gt=0, lt=1, description="target power (sample_size, mde)")
    sd: float | None = Field(None, gt=0, description="standard deviation of the metric; or give pilot and metric")
    pilot: PathText | None = Field(None, description="a pilot / historical table (path or table handle) to "
                                                     "estimate sd, r2, icc, cluster sizes and the baseline mean")
    metric: Name | None = Field(None, description="metric column of the pilot")
    covariates: list[Name] | None = Field(None, description="covariate columns of the pilot")
    cluster_by: Name | None = Field(None, description="cluster column of the pilot")
    r2: float | None = Field(None, ge=0, lt=1, description="covariate R^2 of the regression adjustment")
    icc: float | None = Field(None, ge=0, lt=1, description="intra-cluster correlation")
    cluster_size: float | None = Field(None, ge=1, description="mean units per cluster")
    cluster_size_cv: float | None = Field(None, ge=0, description="coefficient of variation of cluster sizes")
    baseline_mean: float | None = Field(None, description="control mean (for relative effects)")
    compliance: float = Field(1.0, gt=0, le=1, description="compliance rate of an encouragement design")
    allocation: list[float] | None = Field(None, max_length=50, description="share of units per arm, control first")
    arms: int = Field(2, ge=2, le=50, description="number of arms including control")
    alpha: float = Field(0.05, gt=0, lt=1)
    alternative: Literal["two-sided", "larger", "smaller"] = "two-sided"
    relative: bool = Field(False, description="effect is a relative lift over baseline_mean")
    test: Literal["t", "z", "anytime"] = "t"
    correction: Literal["none", "bonferroni"] = "none"


class PlanResult(Result):
    solved_for: str
    power: float = Field(description="power of the weakest treatment-vs-control comparison")
    power_per_arm: list[float]
    effect: float
    relative: bool
    n: int = Field(description="total units over all arms")
    n_exact: float
    n_per_arm: list[int]
    n_clusters: int | None
    std_error: float
    design_effect: float
    alpha: float
    alternative: str
    test: str
    correction: str
    inputs: dict[str, float | None] = Field(description="sd, r2, icc, cluster_size, cluster_size_cv, baseline_mean")
    compliance: float
    allocation: list[float]


@tool(example={"solve_for": "sample_size", "effect": 0.5, "pilot": "store.csv", "metric": "sales",
               "covariates": ["pre_sales"], "cluster_by": "region", "compliance": 0.6})
def plan_experiment(args: PlanExperiment, ws: Workspace) -> PlanResult:
    """Plan an experiment: power at a given effect and sample size, the sample size needed for
    an effect, or the minimum detectable effect at a sample size. Covers covariate
    adjustment (r2), clusters (icc, cluster_size), encouragement designs (compliance), several
    arms, relative lifts and anytime-valid tests; nuisance parameters can be estimated from a
    pilot table."""
    needs = {"power": ("effect", "n"), "sample_size": ("effect",), "mde": ("n",)}[args.solve_for]
    for name in needs:
        if getattr(args, name) is None:
            raise ToolError("invalid_arguments", f"{name}: required when solve_for is {args.solve_for!r}",
                            argument=name, allowed=list(needs))
    keywords = args.model_dump(exclude={"solve_for", "effect", "n", "power", "pilot"})
    pilot = None
    if args.pilot is not None:
        pilot, _ = ws.table(args.pilot, "pilot")
        if args.metric is None:
            raise ToolError("invalid_arguments", "metric: required with pilot", argument="metric",
                            allowed=[str(c) for c in pilot.columns][:500])
        for argument in ("metric", "covariates", "cluster_by"):
            if getattr(args, argument):
                require_columns(pilot, getattr(args, argument), argument)
    if args.solve_for == "power":
        record = power(args.effect, args.n, pilot=pilot, **keywords)
    elif args.solve_for == "sample_size":
        record = sample_size(args.effect, power=args.power, pilot=pilot, **keywords)
    else:
        record = mde(args.n, power=args.power, pilot=pilot, **keywords)
    out = record.to_dict()
    return PlanResult(**out, markdown=str(record))


# ---------------------------------------------------------------------------------------
# saving, and the store
# ---------------------------------------------------------------------------------------
class SaveEffects(Args):
    effects: Handle = Field(description="handle of a record: effects, relative, posterior, ranking, mediation or "
                                        "monitor")
    path: PathText = Field(description="file under the output root, ending in .csv, .json or .md")


class SavedFile(Result):
    path: str = Field(description="the file written, relative to the output root")
    output_root: str
    bytes: int
    rows: int


@tool(example={"effects": "effects_1", "path": "store/effects.csv"}, writes=True)
def save_effects(args: SaveEffects, ws: Workspace) -> SavedFile:
    """Save an effects table under the output root as CSV, JSON (the record's JSON form) or
    markdown, chosen by the file's suffix. The file is written atomically; paths outside the
    output root are refused."""
    from .safety import dumps

    record = ws.store.get(args.effects, ("effects", "relative", "posterior", "ranking", "mediation", "monitor"),
                          "effects")
    suffix = args.path.rsplit(".", 1)[-1].lower() if "." in args.path else ""
    target = ws.roots.write_path(args.path, "path", (".csv", ".json", ".md"))
    if hasattr(record, "looks"):  # Monitoring: every look
        frame = record.to_frame()
        payload = {"csv": lambda: frame.to_csv(index=False),
                   "json": lambda: dumps({"looks": [look.to_dict() for look in record.looks]}),
                   "md": lambda: "\n\n".join(f"## look {i}\n\n{look.to_markdown()}"
                                             for i, look in enumerate(record.looks))}[suffix]()
        rows = len(frame)
    else:
        payload = {"csv": lambda: record.to_frame().to_csv(index=False), "json": lambda: dumps(record.to_dict()),
                   "md": lambda: record.to_markdown() + "\n"}[suffix]()
        rows = len(record.to_dicts())
    written = ws.roots.write(str(target), payload, "path")
    size = written.stat().st_size
    shown = written.relative_to(ws.roots.out).as_posix()
    return SavedFile(path=shown, output_root=str(ws.roots.out), bytes=size, rows=rows,
                     markdown=f"wrote {rows} row(s) of {args.effects} to {shown} ({size:,} bytes) under "
                              f"{ws.roots.out}")


class ListHandles(Args):
    kind: Literal[tuple(KINDS)] | None = Field(  # type: ignore[valid-type]
        None, description="only handles of this kind")


class HandleInfo(BaseModel):
    handle: str
    kind: str
    summary: str


class HandleList(Result):
    handles: list[HandleInfo] = Field(description="live handles, least recently used first")
    limit: int = Field(description="the store keeps at most this many objects; the least recently used go first")


@tool(example={})
def list_handles(args: ListHandles, ws: Workspace) -> HandleList:
    """List the objects this session holds (experiments, models, effects, monitoring records,
    OCI runs) with their handles and a one-line summary."""
    handles = [HandleInfo(**h) for h in ws.store.describe() if args.kind is None or h["kind"] == args.kind]
    lines = [f"{len(handles)} handle(s) (the store keeps at most {ws.store.limit}):"]
    lines += [f"- {h.handle} ({KINDS[h.kind]}): {h.summary}" for h in handles]
    return HandleList(handles=handles, limit=ws.store.limit, markdown="\n".join(lines))


TOOLS = (list_sources, describe_source, create_experiment, fit_metrics, infer_effects, relative_effects,
         adjust_effects, project_effects, mediate_effect, monitor_experiment, analyze_many, plan_experiment,
         save_effects, list_handles)
