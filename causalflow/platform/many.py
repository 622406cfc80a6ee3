r"""``cf.analyze_many``: many experiments, one effects table.

An experimentation platform analyses thousands of experiments a day, each with the same
metrics and covariates. :func:`analyze_many` takes one table with an experiment-id column
(or a list / dict of :class:`~causalflow.ExperimentData`), fits every experiment with the
one solver (:class:`~causalflow.LinearModel`, or the estimator given) and stacks the rows of
each experiment's ``infer_effect().to_frame()`` under a leading experiment column.

Each experiment's fit is the fit of its own rows: row :math:`i` of experiment :math:`e`
contributes to the moments :math:`Z_e'W_eZ_e, Z_e'W_eX_e, Z_e'W_eY_e` of :math:`e` only, so
the table is the concatenation of what ``ExperimentData(df[df.experiment == e], ...)
.add_metric(...).fit(...).infer_effect()`` gives for every :math:`e`, number for number.

In memory the experiments run in joblib worker processes (loky), in chunks of whole
experiments so that the cost of a process call is paid once per chunk, not once per
experiment; the output is sorted by experiment, so it does not depend on ``n_jobs``.
A warehouse table (parquet path, DuckDB relation, Ibis or Spark table) is analysed in the
engine by :func:`causalflow.backends.engine.analyze_many_engine`: one grouped aggregation
per pass, grouped by the experiment id.

Failures of one experiment (a single arm, NaN assignment, a singular design, too few
rows) are values, not exceptions: that experiment gets one row whose ``error`` column holds
the message and whose numbers are NaN, and the others are analysed as usual. Errors that
concern every experiment (a missing column, a bad ``alpha``) raise
:class:`~causalflow.errors.ValidationError` before any fit.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ValidationError
from ..validate import check_alpha, column_names, to_pandas

__all__ = ["analyze_many"]

#: the columns of an effects table (API.md section 3), used when no experiment succeeded
EFFECT_COLUMNS = ("metric", "arm", "condition", "estimand", "estimate", "std_error", "ci_lower",
                  "ci_upper", "p_value", "av_p_value", "av_ci_lower", "av_ci_upper", "n")
#: the roles of :class:`~causalflow.ExperimentData` an experiment-id table may name
ROLES = ("intent_to_treat", "treated", "propensity", "instrument", "cluster_by", "control")
#: per-experiment failures that are reported in the table (anything else is a bug: raised)
_REPORTED = (ValidationError, np.linalg.LinAlgError, ValueError, ArithmeticError)
_MIN_CHUNK = 8  # experiments per process call at least
_CHUNKS_PER_JOB = 4  # a few chunks per worker balance uneven experiments


def _is_in_memory(table) -> bool:
    if isinstance(table, pd.DataFrame):
        return True
    return type(table).__module__.split(".")[0] in ("polars", "pyarrow")


def _estimator(estimator):
    from ..models.linear import LinearModel

    if estimator is None:
        return LinearModel()
    if isinstance(estimator, type):
        estimator = estimator()
    if not hasattr(estimator, "fit_spec"):
        raise ValidationError(f"estimator: {estimator!r} is not a causalflow estimator (e.g. cf.LinearModel())")
    return estimator


def _check_jobs(n_jobs) -> int | None:
    if n_jobs is None:
        return None
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ValidationError(f"n_jobs: expected a positive integer, -1 (all cores) or None, got {n_jobs!r}")
    return int(n_jobs)


def _fit_one(data, y, covariates, estimator, alpha, estimands, condition_on) -> pd.DataFrame:
    """One experiment's effects table; raises what the fit raises."""
    model = data.add_metric(y=y, exogenous_covariates=covariates).fit(estimator)
    return model.infer_effect(condition_on=condition_on, alpha=alpha, estimands=estimands).to_frame()


def _run_chunk(chunk, roles, y, covariates, estimator, alpha, estimands, condition_on) -> list:
    """Fit the experiments of one chunk: ``(key, frame, error)`` per experiment.

    ``chunk`` holds ``(key, table)`` pairs (a table with roles: an ExperimentData is built)
    or ``(key, ExperimentData)`` pairs (``roles`` is None).
    """
    from ..data import ExperimentData

    out = []
    for key, item in chunk:
        try:
            with warnings.catch_warnings():
                # a design warning of one experiment (mixed clusters) would repeat per experiment
                warnings.simplefilter("ignore")
                data = item if roles is None else ExperimentData(item, **roles)
                out.append((key, _fit_one(data, y, covariates, estimator, alpha, estimands, condition_on), None))
        except _REPORTED as exc:
            message = str(exc) or type(exc).__name__
            out.append((key, None, message if isinstance(exc, ValidationError) else f"{type(exc).__name__}: {message}"))
    return out


def _chunks(items: list, n_jobs: int) -> list[list]:
    size = max(_MIN_CHUNK, -(-len(items) // (n_jobs * _CHUNKS_PER_JOB)))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _run(items: list, n_jobs: int | None, args: tuple) -> list:
    """Every item's result, in the order of ``items``, serially or in loky processes."""
    if n_jobs is None:
        # one core is left to the caller's process (it pickles the experiments' rows to the
        # workers and assembles the table), and a process needs enough experiments for a chunk
        n_jobs = 1 if len(items) < 2 * _MIN_CHUNK else max(1, min((os.cpu_count() or 1) - 1, len(items) // _MIN_CHUNK))
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    chunks = _chunks(items, n_jobs)
    if n_jobs == 1 or len(chunks) == 1:
        return [r for chunk in chunks for r in _run_chunk(chunk, *args)]
    from joblib import Parallel, delayed

    parts = Parallel(n_jobs=min(n_jobs, len(chunks)), backend="loky")(
        delayed(_run_chunk)(chunk, *args) for chunk in chunks)
    return [r for part in parts for r in part]


def _split(df: pd.DataFrame, experiment: str, columns: list) -> list:
    """``(experiment id, its rows)`` per experiment, sorted by id (first appearance when ids
    do not sort); the rows keep their order and only the columns the fit reads."""
    ids = df[experiment]
    if ids.isna().any():
        raise ValidationError(f"experiment: column {experiment!r} has {int(ids.isna().sum())} missing "
                              "values (NaN); every row needs an experiment id")
    try:
        codes, uniques = pd.factorize(ids, sort=True)
    except TypeError:
        codes, uniques = pd.factorize(ids, sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    sub = df[columns]
    keys = [u.item() if isinstance(u, np.generic) else u for u in uniques]  # numpy scalars as Python's
    return [(keys[g], sub.iloc[order[bounds[g]:bounds[g + 1]]]) for g in range(len(uniques))]


def _assemble(results: list, experiment: str) -> pd.DataFrame:
    frames, columns = [], None
    for _, frame, _ in results:
        if frame is not None and columns is None:
            columns = list(frame.columns)
    columns = columns or list(EFFECT_COLUMNS)
    for key, frame, error in results:
        if frame is None:
            row = {c: np.nan for c in columns}
            row.update({c: None for c in ("metric", "arm", "condition", "estimand") if c in row})
            frame = pd.DataFrame([row], columns=columns)
        frame = frame.copy()
        frame.insert(0, experiment, [key] * len(frame))
        frame["error"] = error
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[experiment, *columns, "error"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # concat of all-NaN failure rows
        out = pd.concat(frames, ignore_index=True)
    out["error"] = out["error"].astype(object).where(out["error"].notna(), None)
    return out


def analyze_many(table, experiment: str = "experiment_id", *, y, exogenous_covariates=None,
                 intent_to_treat: str | None = None, treated: str | None = None, propensity=None,
                 instrument: str | None = None, cluster_by=None, control=None, estimator=None,
                 condition_on=None, alpha: float = 0.05, estimands=None, n_jobs: int | None = None,
                 exogeneous_covariates=None) -> pd.DataFrame:
    r"""Analyse many experiments at once; one effects table (API.md section 11).

    For every experiment e the rows of

        ``ExperimentData(rows of e, intent_to_treat=..., ...).add_metric(y, exogenous_covariates)
        .fit(estimator).infer_effect(condition_on, alpha, estimands).to_frame()``

    with a leading column named ``experiment`` holding e, plus an ``error`` column (None on
    success). Experiments are independent fits: the moments of experiment e are sums over its
    rows only, so each block of rows equals the experiment's own fit exactly.

    Parameters
    ----------
    table : table with an experiment-id column, a list of ExperimentData, or a dict id -> ExperimentData
        A pandas / polars / pyarrow table is analysed in memory (``n_jobs`` processes); a
        parquet path, DuckDB relation, Ibis or Spark table in its engine (one grouped
        aggregation per pass, :func:`causalflow.backends.engine.analyze_many_engine`, which
        needs ``pip install "causalflow[warehouse]"``). For a list the experiment column holds
        each item's position, for a dict its key; the roles come from each ExperimentData.
    experiment : str
        The experiment-id column of ``table``, and the name of the output's leading column.
    y, exogenous_covariates : as in :meth:`ExperimentData.add_metric` (``exogeneous_covariates``
        is accepted as an alias).
    intent_to_treat, treated, propensity, instrument, cluster_by, control : the roles of
        :class:`~causalflow.ExperimentData`, the same for every experiment (a table only;
        ``intent_to_treat`` is required there).
    estimator : estimator instance or class, optional
        Default ``cf.LinearModel()`` (each experiment's default covariance, HC1 or CR1 /
        small-cluster as its design says).
    condition_on, alpha, estimands : as in ``infer_effect``.
    n_jobs : int, optional
        Worker processes (-1: all cores). Default: serial for fewer than 16 experiments,
        else one process per core but one (so serial on a 2-core machine, where
        benchmarks/README.md measured two processes slower than one). The result does not
        depend on it.

    Returns
    -------
    pandas.DataFrame
        ``[experiment, <columns of Effects.to_frame()>, error]``, sorted by experiment id (a
        list / dict keeps its order). A failed experiment (a single arm, NaN assignment, a
        singular design, ...) has one row with NaN numbers and the message in ``error``.

    Raises
    ------
    ValidationError
        Before any fit, for what concerns all experiments: a missing column, a bad
        ``alpha`` or ``n_jobs``, roles given with a list of ExperimentData, NaN experiment ids.

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"exp": np.repeat(["a", "b", "c"], 200), "t": rng.integers(0, 2, 600),
    ...                    "x": rng.normal(size=600)})
    >>> df["y"] = df.x + 0.5 * df.t + rng.normal(size=600)
    >>> df.loc[df.exp == "c", "t"] = 1                      # experiment c has a single arm
    >>> out = cf.analyze_many(df, experiment="exp", intent_to_treat="t", y="y",
    ...                       exogenous_covariates=["x"])
    >>> out[["exp", "metric", "estimate"]].round(2)
      exp metric  estimate
    0   a      y      0.53
    1   b      y      0.56
    2   c   None       NaN
    >>> out.error[2][:40]
    "intent_to_treat: column 't' has a single"
    """
    if exogenous_covariates is not None and exogeneous_covariates is not None:
        raise ValidationError("give exogenous_covariates or its alias exogeneous_covariates, not both")
    covariates = exogenous_covariates if exogenous_covariates is not None else exogeneous_covariates
    alpha = check_alpha(alpha)
    n_jobs = _check_jobs(n_jobs)
    estimator = _estimator(estimator)
    if not isinstance(experiment, str):
        raise ValidationError(f"experiment: expected a column name (str), got {experiment!r}")
    metrics = column_names(y, "y")
    if not metrics:
        raise ValidationError("y: name at least one metric column")
    roles = dict(intent_to_treat=intent_to_treat, treated=treated, propensity=propensity,
                 instrument=instrument, cluster_by=cluster_by, control=control)
    given = {k: v for k, v in roles.items() if v is not None}
    if estimands is not None:
        from ..models.linear import ESTIMANDS

        names = [estimands] if isinstance(estimands, str) else list(estimands)
        bad = [e for e in names if not isinstance(e, str) or e.strip().upper() not in ESTIMANDS]
        if bad:
            raise ValidationError(f"estimands: {bad} not in {list(ESTIMANDS)}")

    if isinstance(table, Mapping) or (isinstance(table, Sequence) and not isinstance(table, (str, bytes))):
        from ..data import ExperimentData

        items = list(table.items()) if isinstance(table, Mapping) else list(enumerate(table))
        if given:
            raise ValidationError(f"{sorted(given)}: roles come from each ExperimentData when a "
                                  f"{'dict' if isinstance(table, Mapping) else 'list'} of them is given")
        for key, data in items:
            if not isinstance(data, ExperimentData):
                raise ValidationError(f"table: item {key!r} is a {type(data).__name__}, not a cf.ExperimentData")
            _check_columns(data.data, metrics, covariates, {}, None)
        results = _run(items, n_jobs, (None, metrics, covariates, estimator, alpha, estimands, condition_on))
        return _assemble(results, experiment)

    if intent_to_treat is None:
        raise ValidationError("intent_to_treat: required (the column of the randomized assignment)")
    if not _is_in_memory(table):
        analyze = _engine_analyze(table)
        if n_jobs is not None or condition_on is not None:
            raise ValidationError("n_jobs, condition_on: not available for a warehouse table (it is "
                                  "analysed in its engine, grouped by experiment)")
        return analyze(table, experiment, y=metrics, exogenous_covariates=covariates, alpha=alpha,
                       estimands=estimands, estimator=estimator, **given)
    df = to_pandas(table)
    columns = _check_columns(df, metrics, covariates, given, experiment)
    items = _split(df, experiment, columns)
    results = _run(items, n_jobs, (given, metrics, covariates, estimator, alpha, estimands, condition_on))
    return _assemble(results, experiment)


def _engine_analyze(table):
    """The engine's ``analyze_many_engine`` (one grouped aggregation per pass), imported
    lazily: the warehouse extra is optional."""
    try:
        from ..models import warehouse as engine  # the warehouse engines (DuckDB, Spark through Ibis)
    except ImportError:
        try:
            from ..backends import engine
        except ImportError as exc:
            raise ValidationError(f"table: a {type(table).__name__} is not a pandas, polars or pyarrow table, "
                                  f"and the warehouse engines are not available ({exc})") from None
    analyze = getattr(engine, "analyze_many_engine", None)
    if analyze is None:
        raise ValidationError(f"table: a {type(table).__name__} is not a pandas, polars or pyarrow table, "
                              "and the warehouse engines cannot analyse many experiments")
    return analyze


def _check_columns(df: pd.DataFrame, metrics: list, covariates, roles: dict, experiment) -> list:
    """The columns an experiment's fit reads, each checked to be in ``df`` (up front, once)."""
    wanted = [] if experiment is None else [(experiment, "experiment")]
    for role in ("intent_to_treat", "treated", "instrument"):
        if roles.get(role) is not None:
            wanted.append((roles[role], role))
    propensity = roles.get("propensity")
    if isinstance(propensity, str):
        wanted.append((propensity, "propensity"))
    elif isinstance(propensity, Mapping):
        wanted += [(v, f"propensity[{k!r}]") for k, v in propensity.items() if isinstance(v, str)]
    wanted += [(c, "cluster_by") for c in column_names(roles.get("cluster_by"), "cluster_by")]
    wanted += [(m, "y") for m in metrics]
    if isinstance(covariates, str) and covariates not in df.columns:
        # a formula: its columns are checked by each fit; keep every column
        names = list(df.columns)
    else:
        wanted += [(c, "exogenous_covariates") for c in column_names(covariates, "exogenous_covariates")]
        names = None
    for name, argument in wanted:
        if not isinstance(name, str):
            raise ValidationError(f"{argument}: expected a column name (str), got {name!r}")
        if name not in df.columns:
            raise ValidationError(f"{argument}: column {name!r} is not in the data; "
                                  f"columns: {list(map(str, df.columns))[:30]}")
    return names if names is not None else list(dict.fromkeys(n for n, _ in wanted))
