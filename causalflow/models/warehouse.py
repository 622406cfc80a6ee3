r"""``LinearModel`` on an engine table: the same results class, its passes run in the engine.

:class:`EngineModelResults` is a :class:`~causalflow.models.linear.LinearModelResults` whose
steps that read rows are answered by the engine (:mod:`causalflow.backends.engine`); the
solver, the covariances, the contrasts and every record built on them are the in-memory
ones, fed with the engine's small aggregates:

* pass 1 (:meth:`EngineModelResults._fit`): per metric group with its own missing rows,
  the covariates' weighted means, then the moments Z'WZ, Z'WX, Z'WY
  (:class:`~causalflow.linalg.twosls.Moments`), solved by
  :func:`~causalflow.linalg.twosls.solve_2sls`;
* pass 2 (:meth:`EngineModelResults._score_gram`, one query per ``infer_effect``): the
  score columns :math:`u_{ir} e_{ik}` of every requested contrast r and metric k (plus the
  influence of estimated complier means, :mod:`causalflow.linalg.compliers`) summed per
  cluster (CR0 / CR1) or multiplied pairwise and summed over rows (HC0 / HC1);
* CR3: per-cluster cross-products and per-cluster arm sums
  (:func:`~causalflow.linalg.small_sample.jackknife_coefs`), no pass over scores;
* CR2 needs every cluster's rows (Bell and McCaffrey's adjustment): refused with the
  alternatives.

Subgroup means of ``condition_on`` and Wald ratios are sums over the rows of a condition,
compiled from the parsed condition (:func:`causalflow.backends.engine.compile_condition`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..backends.engine import EngineTable, Stager, compile_condition
from ..design import pick_control, sorted_labels
from ..errors import ValidationError
from ..linalg.compliers import WaldRatio
from ..linalg.layout import CoefLayout
from ..linalg.twosls import solve_2sls
from ..validate import missing_message, no_variation_message, not_arms_message, outside_message
from .linear import LinearModelResults, _Group, _Ratio, estimand_notes

__all__ = ["CR2_ON_ENGINE", "EngineModelResults", "analyze_many_engine"]

CR2_ON_ENGINE = ("cov_type: 'CR2' needs the rows of every cluster (the Bell-McCaffrey adjustment inverts a "
                 "matrix per cluster), which an engine table does not bring into memory; use cov_type='CR3' "
                 "(exact, from per-cluster cross-products computed in the engine) or 'CR1'")


def missing_groups(exp, metrics: tuple) -> list[tuple]:
    """Metric indices grouped by their pattern of missing rows (as
    :func:`causalflow.models.linear._missing_groups`): one query counts each metric's
    missing rows, one more compares the patterns of metrics with equal counts."""
    table = exp.table
    stats = table.profile(metrics)  # cached by the validation of the metrics (else one query)
    counts = np.array([stats[m].missing for m in metrics], dtype=int)
    partial = [k for k in range(len(metrics)) if counts[k]]
    pairs = [(k, m) for i, k in enumerate(partial) for m in partial[i + 1:] if counts[k] == counts[m]]
    same = set()
    if pairs:
        differ = table.scalars([(table.missing(metrics[k]) != table.missing(metrics[m])).cast("int64").sum()
                                for k, m in pairs])
        same = {pair for pair, d in zip(pairs, differ) if d == 0}
    key_of, groups = {}, {}
    for k in range(len(metrics)):
        if not counts[k]:
            key = "all"
        else:
            key = next((key_of[m] for m in partial if m < k and (m, k) in same), k)
        key_of[k] = key
        groups.setdefault(key, []).append(k)
    return [(key != "all", tuple(ks)) for key, ks in groups.items()]


class EngineModelResults(LinearModelResults):
    """A :class:`LinearModelResults` whose row passes run in an engine (module docstring)."""

    @classmethod
    def _fit(cls, spec, covariance, estimator) -> EngineModelResults:
        if covariance.meat == "bias_reduced":
            raise ValidationError(CR2_ON_ENGINE)
        exp, cov = spec.data.engine, spec.covariates
        layout = CoefLayout(exp.n_arms, cov.q)
        names = layout.names([f"x{j}" for j in range(1, exp.n_arms + 1)], cov.names)
        groups, where_of = [], []
        for partial, metrics in missing_groups(exp, spec.metrics):
            columns = [spec.metrics[k] for k in metrics]
            where = exp.complete(columns) if partial else None
            mu, n, _, n_clusters = exp.means(cov, where)
            p = len(names)
            if n <= p:
                raise ValidationError(f"y: metric(s) {columns} have {n} complete rows for {p} parameters")
            moments = exp.moments(cov, mu, columns, where)
            fits = {"itt": solve_2sls(moments.reduced_form(), names)}
            if exp.iv:
                fits["iv"] = solve_2sls(moments, names)
            if exp.cluster_by and n_clusters < 2:
                raise ValidationError(f"y: metric(s) {columns} have complete rows in a single cluster")
            groups.append(_Group(None, None, metrics, mu, n, n_clusters, fits))
            where_of.append(where)
        out = cls(spec, covariance, estimator, exp, groups, layout)
        out._where = where_of
        return out

    # -- expressions of a group -----------------------------------------------------------
    def _num(self, value):
        """A number of an expression (a fitted coefficient, a mean): a literal here; a column
        of the per-experiment lookup in :func:`analyze_many_engine`."""
        return float(value)

    def _columns(self, gi: int) -> list:
        key = ("columns", gi)
        if key not in self._block_cache:
            self._block_cache[key] = self._source.design_columns(self.spec.covariates, self._groups[gi].mu)
        return self._block_cache[key]

    def _within(self, gi: int, extra=None):
        """The rows of group gi (its complete rows) and ``extra`` (an expression or None)."""
        where = self._where[gi]
        if extra is None:
            return where
        return extra if where is None else where & extra

    def _linear(self, vec: np.ndarray, c: list, T: list) -> object:
        """The expression of [1, T, c, T x c] @ vec: ``T`` holds the float expressions of the J
        arm indicators (or, two arms with a dose, the dose); products, not CASE branches, so
        that an engine evaluates them as plain arithmetic."""
        J, q = self.layout.n_arms, self.layout.q
        num = self._num

        def part(start, first):
            out = c[0] * num(vec[start]) if q else None
            for h in range(1, q):
                out = out + c[h] * num(vec[start + h])
            return num(vec[first]) if out is None else out + num(vec[first])

        out = part(1 + J, 0)
        for j in range(1, len(T) + 1):
            out = out + T[j - 1] * part(self.layout.interactions(j).start, j)
        return out

    def _indicators(self, codes) -> list:
        """The J arm indicators of int ``codes`` as floats, or [dose] for a float dose."""
        if codes.type().is_floating():
            return [codes]
        return [(codes == j).cast("float64") for j in range(1, self.layout.n_arms + 1)]

    def _condition(self, parsed):
        """The compiled condition (cached by its text)."""
        if parsed is None:
            return None
        key = ("condition_expr", parsed.text)
        if key not in self._block_cache:
            table, cov = self._source.table, self.spec.covariates
            columns = {name: table.number(name) for name, _ in cov.numeric}
            columns.update({name: table.col(name) for name, _, _ in cov.categorical})
            self._block_cache[key] = compile_condition(parsed, columns)
        return self._block_cache[key]

    # -- pass 2 ---------------------------------------------------------------------------
    def _score_columns(self, requests: list, layout: list, stage=None) -> list:
        """The score columns of the requests (module docstring); ``stage`` (a
        :class:`~causalflow.backends.engine.Stager`) projects the shared intermediate columns
        once per row."""
        ibis = _ibis()
        exp = self._source
        w = exp.w
        stage = stage or (lambda exprs: list(exprs))
        out, staged, indicators = [], {}, {}
        for (gi, kind, D, terms), (_, m, K) in zip(requests, layout):
            g = self._groups[gi]
            fit = g.fits[kind]
            if gi not in staged:
                staged[gi] = stage(self._columns(gi))
            c = staged[gi]
            G = fit.influence @ D.T
            if kind not in indicators:
                regressors = exp.assign if kind == "itt" else (exp.dose if exp.dose is not None else exp.treated)
                indicators[kind] = stage(self._indicators(regressors))
                if "itt" not in indicators:
                    indicators["itt"] = stage(self._indicators(exp.assign))
            u = stage([w * self._linear(G[:, i], c, indicators["itt"]) for i in range(m)])
            Y = [exp.table.number(self.metrics[k]) for k in g.metrics]
            e = stage([Y[pos] - self._linear(fit.coef[:, pos], c, indicators[kind]) for pos in range(K)])
            columns = [[u[i] * e[pos] for pos in range(K)] for i in range(m)]
            for term in terms:
                parts = self._term_parts(term, fit)
                for pos in range(K):
                    columns[term.row][pos] = columns[term.row][pos] + parts[pos]
            where = self._where[gi]
            for i in range(m):
                for pos in range(K):
                    value = columns[i][pos]
                    out.append(value if where is None else ibis.ifelse(where, value, 0.0))
        return out

    def _term_parts(self, term, fit) -> list:
        """Per metric of the group, the influence of a term's estimated ratio on the row's
        value (:meth:`WaldRatio.influence`, times the coefficients it multiplies)."""
        ratio = self._wald(term.ratio)
        V, T, in_arm, in_control = self._ratio_exprs(term.ratio)
        num = self._num
        scale = self._source.w * (in_arm.cast("float64") * num(1.0 / ratio.weight[0])
                                  - in_control.cast("float64") * num(1.0 / ratio.weight[1]))
        scale = scale * num(1.0 / ratio.first_stage)
        psi = [scale * (V[h] - T * num(ratio.theta[h]) - num(ratio.level[h])) for h in range(len(V))]
        K = len(self._groups[term.ratio.group].metrics)
        if term.coef is None:
            return psi
        b = fit.coef[term.coef]  # (L, K)
        out = []
        for k in range(K):
            value = psi[0] * num(b[0, k])
            for h in range(1, len(psi)):
                value = value + psi[h] * num(b[h, k])
            out.append(value)
        return out

    def _score_gram(self, requests: list, layout: list, total: int) -> np.ndarray:
        if self.covariance.clustered:
            sums = self._cluster_score_sums(requests, layout, total)
            return sums.T @ sums
        stage = Stager(self._source.table.table)
        columns = self._score_columns(requests, layout, stage)
        return self._source.score_sums(columns, False, source=stage.table)

    def _cluster_score_sums(self, requests: list, layout: list, total: int) -> np.ndarray:
        r"""(G, total) per-cluster sums of the score columns (CR0 / CR1), from sums of plain
        products: with :math:`u_{ir}` a contrast's row influence (zero outside its group's rows),

        .. math:: \sum_{i \in g} u_{ir} e_{ik} = \sum_{i \in g} u_{ir} y_{ik}
                  - \Big(\sum_{i \in g} u_{ir} x_i\Big)' b_k,

        so the engine sums m (K + p) products per cluster (and the complier-mean influences,
        K per term) instead of evaluating K residuals of p terms on every row; the residual
        sums are formed here, exactly. With arm indicators T (no dose), the rows are grouped
        by cluster and arm codes too: within such a group :math:`\sum u T_j x = [a = j] \sum u x`,
        so the engine sums m (K + 1 + q) products per group, fewer than m (K + p) (an update of
        a sum grouped by tens of thousands of clusters costs an engine far more than one over
        a few groups); the rows of a cluster are added up here."""
        ibis = _ibis()
        exp = self._source
        w = exp.w
        stage = Stager(exp.table.table)
        split = exp.dose is None
        codes = {"itt": exp.assign, "iv": exp.treated}
        by_codes = list(dict.fromkeys(kind for _, kind, _, _ in requests)) if split else []
        values, plan, staged, indicators = [], [], {}, {}
        for (gi, kind, D, terms), (_, m, _) in zip(requests, layout):
            g = self._groups[gi]
            fit = g.fits[kind]
            where = self._where[gi]
            if gi not in staged:
                staged[gi] = stage(self._columns(gi))
            c = staged[gi]
            if kind not in indicators:
                regressors = exp.assign if kind == "itt" else (exp.dose if exp.dose is not None else exp.treated)
                indicators[kind] = stage(self._indicators(regressors))
                if "itt" not in indicators:
                    indicators["itt"] = stage(self._indicators(exp.assign))
            G = fit.influence @ D.T
            u = [w * self._linear(G[:, i], c, indicators["itt"]) for i in range(m)]
            u = stage(u if where is None else [ibis.ifelse(where, x, 0.0) for x in u])
            T = indicators[kind]
            # [1, T, c, T x c] without the 1; split: T and T x c follow from the group's arm code
            x = list(c) if split else list(T) + list(c) + [t * ch for t in T for ch in c]
            Y = [exp.table.number(self.metrics[k]) for k in g.metrics]
            start = len(values)
            for i in range(m):
                values += [(u[i] * y).sum() for y in Y] + [u[i].sum()] + [(u[i] * xa).sum() for xa in x]
            term_start = len(values)
            for term in terms:
                values += [part.sum() for part in self._term_parts(term, fit)]
            plan.append((start, term_start, fit.coef, terms, kind))
        clusters = exp.clusters()
        frame = exp.table.aggregate(values, by=clusters + [codes[kind] for kind in by_codes], source=stage.table)
        sums = frame[[f"a{i}" for i in range(len(values))]].to_numpy(dtype=float, na_value=0.0)
        sums = np.nan_to_num(sums)
        cluster_of = None
        if split:
            keys = [f"g{i}" for i in range(len(clusters))]
            cluster_of = frame.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
        rows = len(sums) if cluster_of is None else int(cluster_of.max()) + 1 if len(sums) else 0
        out = np.zeros((rows, total))
        for (start, term_start, coef, terms, kind), (s, m, K) in zip(plan, layout):
            p = coef.shape[0]
            if split:
                J, q = self.layout.n_arms, self.layout.q
                code = frame[f"g{len(clusters) + by_codes.index(kind)}"].to_numpy(dtype=np.int64)
                raw = sums[:, start:term_start].reshape(len(sums), m, K + 1 + q)
                block = np.zeros((len(sums), m, K + p))
                block[:, :, :K + 1] = raw[:, :, :K + 1]
                block[:, :, K + 1 + J:K + 1 + J + q] = raw[:, :, K + 1:]
                for j in range(1, J + 1):
                    arm = code == j
                    block[arm, :, K + j] = raw[arm, :, K]
                    at = K + 1 + J + q + (j - 1) * q
                    block[arm, :, at:at + q] = raw[arm][:, :, K + 1:]
            else:
                block = sums[:, start:term_start].reshape(len(sums), m, K + p)
            S = block[:, :, :K] - block[:, :, K:] @ coef          # (rows, m, K)
            for t, term in enumerate(terms):
                S[:, term.row, :] += sums[:, term_start + t * K:term_start + (t + 1) * K]
            S = S.reshape(len(sums), m * K)
            if cluster_of is None:
                out[:, s:s + m * K] = S
            else:
                np.add.at(out[:, s:s + m * K], cluster_of, S)
        return out

    def _cluster_moments(self, gi: int):
        key = ("cluster_moments", gi)
        if key not in self._block_cache:
            g = self._groups[gi]
            self._block_cache[key] = self._source.cluster_moments(
                self.spec.covariates, g.mu, [self.metrics[k] for k in g.metrics], self._where[gi])
        return self._block_cache[key]

    def _bias_reduced_gram(self, requests, layout):
        raise ValidationError(CR2_ON_ENGINE)

    # -- Wald ratios, subgroups -------------------------------------------------------------
    def _ratio_exprs(self, ratio: _Ratio) -> tuple:
        """(V list, T, in_arm, in_control) of a ratio, as expressions (``_ratio_rows``)."""
        exp, g = self._source, self._groups[ratio.group]
        cond = self._condition(ratio.parsed)
        in_arm = self._within(ratio.group, (exp.assign == ratio.arm) if cond is None
                              else (exp.assign == ratio.arm) & cond)
        in_control = self._within(ratio.group, (exp.assign == 0) if cond is None else (exp.assign == 0) & cond)
        if ratio.what == "compliers":
            T = exp.take_up(ratio.arm)
            V = [x * T for x in self._columns(ratio.group)]
        else:
            T = exp.untreated()
            V = [exp.table.number(self.metrics[k]) * T for k in g.metrics]
        return V, T, in_arm, in_control

    def _wald(self, ratio: _Ratio) -> WaldRatio:
        key = ("wald", ratio)
        if key not in self._block_cache:
            sums = self._source.arm_sums(*self._ratio_exprs(ratio))
            self._block_cache[key] = WaldRatio.from_sums(sums, self._ratio_what(ratio))
        return self._block_cache[key]

    def _wald_jackknife(self, ratio: _Ratio) -> np.ndarray:
        key = ("wald_jackknife", ratio)
        if key not in self._block_cache:
            total = self._source.arm_sums(*self._ratio_exprs(ratio), by_cluster=True)
            self._block_cache[key] = self._wald_jackknife_from(ratio, total)
        return self._block_cache[key]

    def _condition_mask(self, parsed):
        raise ValidationError("the rows of an engine table stay in the engine")  # pragma: no cover

    def _shift(self, cond, g: _Group, originals) -> tuple[np.ndarray, int]:
        """Centred covariate mean over the rows of a condition within a metric group, and their
        number (:meth:`Covariates.condition_shift`), from one query."""
        if cond is None:
            return np.zeros(self.layout.q), g.n
        gi = next(i for i, h in enumerate(self._groups) if h is g)
        exp = self._source
        where = self._within(gi, self._condition(cond))
        means, size, _, _ = _means(exp, self.spec.covariates, where)
        if size == 0:
            raise ValidationError(f"condition_on {cond.text!r}: selects no rows"
                                  + ("" if self._where[gi] is None else " with this metric observed"))
        return means - g.mu, size

    def _complier_centre(self) -> np.ndarray:
        return _means(self._source, self.spec.covariates, None)[0]

    def _complier_sums(self, parsed, centre: np.ndarray) -> tuple[np.ndarray, list]:
        """:meth:`LinearModelResults._complier_sums` as engine aggregations."""
        exp, cov = self._source, self.spec.covariates
        J, q = self.layout.n_arms, cov.q
        xc = [x - float(m) for x, m in zip(exp.raw_columns(cov), centre)]
        w = exp.w
        cond = self._condition(parsed)
        inside = _ibis().literal(1.0) if cond is None else cond.cast("float64")
        population = exp.table.scalars([exp.total(inside * w)] + [(inside * w * x).sum() for x in xc]
                                       + [(inside * w * x * x).sum() for x in xc]).reshape(-1)
        population = np.vstack([np.full(q, population[0]), population[1:1 + q], population[1 + q:]]) \
            if q else np.zeros((3, 0))
        sums = []
        for j in range(1, J + 1):
            T = exp.take_up(j)
            in_arm = (exp.assign == j) if cond is None else (exp.assign == j) & cond
            in_control = (exp.assign == 0) if cond is None else (exp.assign == 0) & cond
            sums.append(exp.arm_sums([x * T for x in xc], T, in_arm, in_control))
        return population, sums


def _means(exp, cov, where):
    return exp.means(cov, where, clusters=False)


def _ibis():
    from .._optional import require
    return require("ibis", "warehouse")


# -- many experiments: one grouped aggregation per pass ------------------------------------------
class _Collected(Exception):
    """Raised by a batch member's score pass in the collecting round: its requests are kept."""


class _Batch:
    """The grouped aggregates of many experiments, served to each experiment's results."""

    def __init__(self):
        self.collecting = True
        self.requests: dict = {}       # key -> (results, requests, layout)
        self.grams: dict = {}          # key -> (M, M) uncorrected meat
        self.cluster_moments: dict = {}  # key -> {group: ClusterCrossProducts}
        self.wald: dict = {}           # key -> {ratio: (2, 2 + L) sums}
        self.cluster_wald: dict = {}   # key -> {ratio: (G, 2, 2 + L) sums}
        self.recorder: list | None = None
        self.lookup = None
        self.counter = 0


class _BatchResults(EngineModelResults):
    """One experiment of :func:`analyze_many_engine`: its engine passes are answered from the
    batch's grouped aggregates; its numbers enter the batch's queries through a lookup table."""

    def _num(self, value):
        batch = self._batch
        if batch.lookup is not None:
            batch.counter += 1
            return batch.lookup[f"n{batch.counter - 1}"]
        if batch.recorder is not None:
            batch.recorder.append(float(value))
        return float(value)

    def _columns(self, gi: int) -> list:
        return self._source.design_columns(self.spec.covariates, [self._num(m) for m in self._groups[gi].mu])

    def _score_gram(self, requests, layout, total):
        if self._batch.collecting:
            self._batch.requests[self._key] = (self, requests, layout)
            raise _Collected
        return self._batch.grams[self._key]

    def _cluster_moments(self, gi: int):
        return self._batch.cluster_moments[self._key][gi]

    def _wald(self, ratio: _Ratio) -> WaldRatio:
        key = ("wald", ratio)
        if key not in self._block_cache:
            self._block_cache[key] = WaldRatio.from_sums(self._batch.wald[self._key][ratio], self._ratio_what(ratio))
        return self._block_cache[key]

    def _wald_jackknife(self, ratio: _Ratio) -> np.ndarray:
        return self._wald_jackknife_from(ratio, self._batch.cluster_wald[self._key][ratio])

    def _notes(self, labels: list) -> tuple:
        return estimand_notes(labels, self._source.iv, bool(self.layout.q))


_ROLES = ("intent_to_treat", "treated", "propensity", "cluster_by", "control")


def analyze_many_engine(table, experiment: str, *, y, exogenous_covariates=None, alpha: float = 0.05,
                        estimands=None, estimator=None, **roles) -> pd.DataFrame:
    r"""Fit the same design in every experiment of an engine table: one grouped aggregation per pass.

    Every query groups by the ``experiment`` column (and, where a pass needs it, by arm
    cell or cluster): the validation counts, the covariate means, pass 1 (the cell sums of
    :mod:`causalflow.backends.engine`, from which each experiment's moments Z'WZ, Z'WX, Z'WY
    are assembled and solved), the complier sums of a LATE with covariates, and pass 2 (the
    score columns :math:`w_i u_i e_{ik}` summed per cluster, or their pairwise products
    summed over rows for HC). Each experiment's coefficients, means and ratios reach the
    rows of pass 2 through a join with a small table of numbers (one row per experiment),
    never through the text of the query. Per experiment the result is what
    ``cf.ExperimentData(rows of the experiment, **roles).add_metric(y, exogenous_covariates)
    .fit(estimator).infer_effect(alpha=alpha, estimands=estimands)`` gives in memory.

    An experiment that fails (NaN assignment, a single arm, no variation of the treatment, a
    propensity outside (0, 1), a single cluster, too few rows, a singular design) gets one row
    with its ``error`` and NaN numbers; the others go on. Limits: the experiments share the
    table's arm labels and the levels of categorical covariates (an experiment without one of
    them is reported, not fitted); CR2 is not served by an engine (use CR3 or CR1).

    Parameters
    ----------
    table : an engine table (parquet path, DuckDB relation, Ibis table, Spark DataFrame)
    experiment : str, the column of experiment ids (rows without an id belong to none)
    y, exogenous_covariates : as :meth:`ExperimentData.add_metric` (listed columns)
    alpha, estimands : as :meth:`LinearModelResults.infer_effect`
    estimator : a :class:`LinearModel` (class or instance; default ``LinearModel()``, whose
        covariance follows each experiment's design: HC1, CR1, or CR3 below 50 clusters)
    **roles : ``intent_to_treat`` (required), ``treated``, ``propensity`` (a column),
        ``cluster_by``, ``control``

    Returns
    -------
    pandas.DataFrame
        The rows of ``Effects.to_frame()`` of every experiment, with a first column named
        ``experiment`` and a last column ``error`` (None on success).

    Examples
    --------
    >>> import duckdb, numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"exp": np.repeat(["a", "b", "c"], 200), "t": rng.integers(0, 2, 600)})
    >>> df["y"] = 1 + 0.5 * df.t + rng.normal(size=600)
    >>> df.loc[df.exp == "c", "t"] = 1                                  # a single arm
    >>> out = analyze_many_engine(duckdb.from_df(df), "exp", y="y", intent_to_treat="t")
    >>> out[["exp", "metric", "estimand", "error"]].values.tolist()[2][3]
    "intent_to_treat: column 't' has a single arm (1); an experiment needs at least two"
    >>> out.estimate.notna().tolist()
    [True, True, False]
    """
    from ..validate import check_alpha, column_names
    from .linear import LinearModel, check_estimands

    alpha = check_alpha(alpha)
    unknown = sorted(set(roles) - set(_ROLES))
    if unknown:
        raise ValidationError(f"analyze_many: unknown argument(s) {unknown}; roles are {list(_ROLES)}")
    if "intent_to_treat" not in roles:
        raise ValidationError("analyze_many: intent_to_treat= names the assignment column")
    if estimator is None:
        estimator = LinearModel()
    elif isinstance(estimator, type):
        estimator = estimator()
    if not isinstance(estimator, LinearModel):
        raise ValidationError(f"estimator: analyze_many on an engine table fits cf.LinearModel, got {estimator!r}")
    if estimator.cov_type == "CR2":
        raise ValidationError(CR2_ON_ENGINE)
    et = EngineTable.of(table)
    return _Many(et, experiment, column_names(y, "y"), column_names(exogenous_covariates, "exogenous_covariates"),
                 alpha, estimands, estimator, roles, check_estimands).run()


class _Many:
    """The passes of :func:`analyze_many_engine` (one object per call)."""

    def __init__(self, et, experiment, metrics, covariates, alpha, estimands, estimator, roles, check_estimands):
        from ..backends import engine as eng

        self.eng, self.et, self.experiment = eng, et, experiment
        self.metrics, self.alpha, self.estimator = tuple(metrics), alpha, estimator
        self.estimands_arg, self.check_estimands = estimands, check_estimands
        self.intent = roles["intent_to_treat"]
        self.treated = roles.get("treated")
        self.propensity = roles.get("propensity")
        cluster_by = roles.get("cluster_by")
        self.cluster_by = [cluster_by] if isinstance(cluster_by, str) else (
            list(cluster_by) if cluster_by is not None else None)
        self.control = roles.get("control")
        self.covariate_names = list(covariates)
        self.errors: dict = {}

    # -- helpers -----------------------------------------------------------------------------
    def _exists(self, name, argument: str) -> None:
        if not isinstance(name, str):
            raise ValidationError(f"{argument}: expected a column name (str), got {name!r}")
        if name not in self.et.columns:
            raise ValidationError(f"{argument}: column {name!r} is not in the data; "
                                  f"columns: {list(map(str, self.et.columns))[:30]}")

    def _fail(self, key, message: str) -> None:
        self.errors.setdefault(key, message)

    def _grouped(self, values: list, where=None, extra=(), table=None) -> pd.DataFrame:
        et = self.et if table is None else table
        return et.aggregate(values, by=[self.key, *extra], where=where)

    # -- the passes ----------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        self._read_roles()
        self._validate()
        self._fit()
        return self._effects()

    def _read_roles(self) -> None:
        eng, et = self.eng, self.et
        self._exists(self.experiment, "experiment")
        self.key = et.col(self.experiment)
        self._exists(self.intent, "intent_to_treat")
        labels = sorted_labels(et.distinct(self.intent))
        if not labels:
            raise ValidationError(f"intent_to_treat: column {self.intent!r} has no values")
        self.labels = labels
        code = eng.arm_code(et, self.intent, tuple(labels))
        # the experiments' own arms are checked below; the codes follow the table's labels
        if len(labels) >= 2:
            control = pick_control(labels, self.control, self.intent)
            self.arms = tuple([control] + [a for a in labels if a != control])
            code = eng.arm_code(et, self.intent, self.arms)
        else:
            self.arms = tuple(labels)
        self.exp = eng.EngineExperiment(et, self.arms, assign=code, arm=code, n=0, intent=self.intent)
        J = len(self.arms) - 1
        if self.treated is not None and self.treated != self.intent:
            self._exists(self.treated, "treated")
            if J == 1 and (et.is_numeric(self.treated) or et.is_bool(self.treated)):
                self.exp.dose = et.number(self.treated)
            elif J == 1:
                self.exp.dose = eng.arm_code(et, self.treated, self.arms).cast("float64")
            else:
                self.exp.treated = eng.arm_code(et, self.treated, self.arms)
        if isinstance(self.propensity, str):
            self._exists(self.propensity, "propensity")
            if not et.is_numeric(self.propensity):
                raise ValidationError(f"propensity: column {self.propensity!r} is not numeric")
            p = et.number(self.propensity)
            self.exp.weights = 1.0 / _ibis().cases((self.exp.assign == 1, p), else_=1.0 - p)
        elif self.propensity is not None:
            raise ValidationError("analyze_many: propensity= names a column of P(assigned to treatment) on an "
                                  "engine table")
        if self.cluster_by is not None:
            for c in self.cluster_by:
                self._exists(c, "cluster_by")
            self.exp.cluster_by = list(self.cluster_by)
        roles = {self.intent: "intent_to_treat"}
        if self.treated is not None:
            roles[self.treated] = "treated"
        if isinstance(self.propensity, str):
            roles[self.propensity] = "propensity"
        for c in self.cluster_by or []:
            roles[c] = "cluster_by"
        if not self.metrics:
            raise ValidationError("y: name at least one metric column")
        frame = eng._Columns(et)
        for name in self.metrics:
            eng.role_column(frame, name, "y", roles, "a metric")
            dtype = et.dtype(name)
            if not (dtype.is_numeric() or dtype.is_boolean()):
                raise ValidationError(f"y: metric {name!r} is not numeric (dtype {eng._pandas_name(dtype)})")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValidationError(f"y: a metric is listed twice in {list(self.metrics)}")
        roles.update({m: "metric" for m in self.metrics})
        numeric, categorical, names, level_names = [], [], [], []
        for name in self.covariate_names:
            eng.role_column(frame, name, "exogenous_covariates", roles, "a covariate")
            dtype = et.dtype(name)
            if dtype.is_temporal() or dtype.is_interval():
                raise ValidationError(f"exogenous_covariates: column {name!r} holds dates or durations "
                                      f"({dtype}); convert it to a number (e.g. days since a date)")
            if et.is_numeric(name):
                numeric.append((name, None))
                names.append(name)
            else:
                levels = sorted_labels(et.distinct(name))
                categorical.append((name, None, tuple(levels)))
                level_names += [f"{name}[{level}]" for level in levels[1:]]
        if len(set(self.covariate_names)) != len(self.covariate_names):
            raise ValidationError("exogenous_covariates: a column is listed twice")
        self.cov = eng.EngineCovariates(tuple(self.covariate_names), tuple(names + level_names), tuple(numeric),
                                        tuple(categorical))
        self.ids = sorted(self.et.run(self.et.table.filter(self.key.notnull()).select(k=self.key).distinct())["k"]
                          .map(eng._python).tolist(), key=lambda v: (str(type(v)), v))

    def _validate(self) -> None:
        """Per experiment, the first in-memory error (in the constructor's order), from grouped counts."""
        et, exp, eng = self.et, self.exp, self.eng
        ibis = _ibis()
        as_int = lambda e: e.cast("int64").sum()  # noqa: E731
        values = [eng._count(), as_int(et.missing(self.intent))]
        slots = {}

        def add(name, items):
            slots[name] = (len(values), len(items))
            values.extend(items)

        if exp.dose is not None:
            add("treated", [as_int(et.missing(self.treated)), exp.dose.min(), exp.dose.max(),
                            as_int(exp.dose != exp.arm.cast("float64")),
                            as_int(eng.arm_code(et, self.treated, self.arms) < 0)])
        elif exp.treated is not None:
            add("treated", [as_int(et.missing(self.treated)), as_int(exp.treated < 0), exp.treated.min(),
                            exp.treated.max(), as_int(exp.treated != exp.arm)])
        if exp.weights is not None:
            p = et.number(self.propensity)
            add("propensity", [as_int(et.missing(self.propensity)), p.min(), p.max(), as_int((p <= 0) | (p >= 1))])
        add("metrics", [as_int(~et.missing(m)) for m in self.metrics])
        add("covariates", [as_int(et.missing(name)) for name in self.covariate_names])
        add("numeric", [x for name, _ in self.cov.numeric for x in (et.number(name).min(), et.number(name).max())])
        stats = self._grouped(values).set_index("g0")
        arms = self._grouped([eng._count()], extra=[et.col(self.intent)])
        levels = {name: self._grouped([eng._count()], extra=[et.col(name)]) for name, _, _ in self.cov.categorical}
        clusters = None
        if self.cluster_by:
            t = et.table
            keys = t.select(k=self.key, **{f"c{i}": t[c] for i, c in enumerate(self.cluster_by)}).distinct()
            clusters = et.run(keys.group_by("k").aggregate(n=ibis._.count())).set_index("k")["n"]
        self.n = {}
        J = len(self.arms) - 1
        for key in self.ids:
            row = stats.loc[key]

            def get(name, i, row=row):
                return row[f"a{slots[name][0] + i}"]

            missing = int(row["a1"])
            if missing:
                self._fail(key, missing_message("intent_to_treat", self.intent, missing))
                continue
            n = int(row["a0"])
            self.n[key] = n
            if n < 2:
                self._fail(key, f"data: needs at least 2 rows, got {n}")
                continue
            mine = arms.loc[arms.g0 == key, "g1"].map(eng._python).tolist()
            if len(mine) < 2:
                self._fail(key, f"intent_to_treat: column {self.intent!r} has a single arm ({mine[0]!r}); an "
                                "experiment needs at least two")
                continue
            if sorted(mine, key=str) != sorted(self.labels, key=str):
                self._fail(key, f"intent_to_treat: this experiment has the arms {sorted(mine, key=str)}, the table "
                                f"{self.labels}; analyse it alone")
                continue
            if "treated" in slots:
                if int(get("treated", 0)):
                    self._fail(key, missing_message("treated", self.treated, get("treated", 0)))
                    continue
                if exp.dose is not None:
                    low, high = get("treated", 1), get("treated", 2)
                    if low < 0 or high > 1:
                        self._fail(key, outside_message("treated", self.treated, low, high, "[0, 1]"))
                        continue
                    if low == high:
                        self._fail(key, no_variation_message("treated", self.treated, low))
                        continue
                elif int(get("treated", 1)):
                    self._fail(key, not_arms_message("treated", self.treated, self.intent, self.arms))
                    continue
                elif get("treated", 2) == get("treated", 3):
                    self._fail(key, no_variation_message("treated", self.treated))
                    continue
            if "propensity" in slots:
                if int(get("propensity", 0)):
                    self._fail(key, missing_message("propensity", self.propensity, get("propensity", 0)))
                    continue
                if int(get("propensity", 3)):
                    self._fail(key, outside_message("propensity", self.propensity, get("propensity", 1),
                                                    get("propensity", 2)))
                    continue
            if clusters is not None and int(clusters.get(key, 0)) < 2:
                self._fail(key, f"cluster_by: {self.cluster_by} defines a single cluster")
                continue
            empty = [m for i, m in enumerate(self.metrics) if not int(get("metrics", i))]
            if empty:
                self._fail(key, f"y: metric {empty[0]!r} has no non-missing values")
                continue
            bad = None
            for i, name in enumerate(self.covariate_names):
                if int(get("covariates", i)):
                    bad = (f"exogenous_covariates: column {name!r} has {int(get('covariates', i))} missing values; "
                           "impute them (pre-treatment) or drop the rows")
                    break
            if bad is None:
                for i, (name, _) in enumerate(self.cov.numeric):
                    low, high = get("numeric", 2 * i), get("numeric", 2 * i + 1)
                    if low == high:
                        bad = f"exogenous_covariates: column {name!r} is constant ({low:g})"
                        break
            if bad is None:
                for name, _, all_levels in self.cov.categorical:
                    seen = levels[name]
                    mine = seen.loc[seen.g0 == key, "g1"].map(eng._python).tolist()
                    if len(mine) < 2:
                        bad = f"exogenous_covariates: column {name!r} is constant ({mine[0]!r})"
                    elif len(mine) < len(all_levels):
                        bad = (f"exogenous_covariates: column {name!r} lacks the level(s) "
                               f"{sorted(set(all_levels) - set(mine), key=str)} in this experiment; analyse it alone")
                    if bad:
                        break
            if bad is not None:
                self._fail(key, bad)
                continue
            p = (1 + J) * (1 + self.cov.q)
            if p >= n:
                self._fail(key, f"exogenous_covariates: {self.cov.q} design columns interacted with {J + 1} arms "
                                f"give {p} parameters for {n} rows")
        self.iv = {}
        if exp.iv and "treated" in slots:
            for key in self.ids:
                differs = stats.loc[key][f"a{slots['treated'][0] + 3 + (1 if exp.treated is not None else 0)}"]
                self.iv[key] = bool(int(differs))

    def _fit(self) -> None:
        """Means and pass 1, grouped by experiment, then one solve per experiment."""
        eng, et, exp, cov = self.eng, self.et, self.exp, self.cov
        layout = CoefLayout(len(self.arms) - 1, cov.q)
        names = layout.names([f"x{j}" for j in range(1, len(self.arms))], cov.names)
        self.layout = layout
        self.groups = {key: [] for key in self.ids}
        self.wheres = []
        w = exp.w
        live = [key for key in self.ids if key not in self.errors]
        self.group_metrics = []
        for partial, metrics in missing_groups(exp, self.metrics):
            columns = [self.metrics[k] for k in metrics]
            where = exp.complete(columns) if partial else None
            self.wheres.append(where)
            self.group_metrics.append(metrics)
            frame = self._grouped([eng._count(), exp.total(w)] + [(w * c).sum() for c in exp.raw_columns(cov)],
                                  where=where).set_index("g0")
            n_clusters = {}
            if self.cluster_by:
                t = et.table if where is None else et.table.filter(where)
                keys = t.select(k=self.key, **{f"c{i}": t[c] for i, c in enumerate(self.cluster_by)}).distinct()
                n_clusters = et.run(keys.group_by("k").aggregate(n=_ibis()._.count())).set_index("k")["n"]
            mus = {}
            p = len(names)
            for key in live:
                if key in self.errors:
                    continue
                n = int(frame.loc[key, "a0"]) if key in frame.index else 0
                if n <= p:
                    self._fail(key, f"y: metric(s) {columns} have {n} complete rows for {p} parameters")
                    continue
                mus[key] = frame.loc[key, [f"a{2 + h}" for h in range(cov.q)]].to_numpy(float) / frame.loc[key, "a1"]
                self.groups[key].append([metrics, mus[key], n, int(n_clusters.get(key, 0)) if self.cluster_by
                                         else None])
            if not mus:
                continue
            lookup = pd.DataFrame({"__key": list(mus), **{f"m{h}": [mus[k][h] for k in mus] for h in range(cov.q)}})
            joined = et.joined(lookup, self.key, "__key")
            ej = _replace(exp, joined)
            mu_cols = [joined.table[f"m{h}"] for h in range(cov.q)]
            cells = ej._cells(cov, mu_cols, columns, where, False, prefix=[self.key])
            for key, sub in cells.groupby("g0", sort=False):
                key = eng._python(key)
                if key not in mus or key in self.errors:
                    continue
                moments = exp._assemble(sub, cov.q, len(columns), offset=1)
                try:
                    iv = self.iv.get(key, False)
                    fits = {"itt": solve_2sls(moments.reduced_form() if iv or not exp.iv else
                                              _ols_moments(moments), names)}
                    if iv:
                        fits["iv"] = solve_2sls(moments, names)
                except ValidationError as exc:
                    self._fail(key, str(exc))
                    continue
                if self.cluster_by and self.groups[key][-1][3] < 2:
                    self._fail(key, f"y: metric(s) {columns} have complete rows in a single cluster")
                    continue
                self.groups[key][-1].append(fits)
            self._cluster_moments_pass(len(self.wheres) - 1, ej, mu_cols, columns, where, mus)
        self.keys_ok = [key for key in self.ids if key not in self.errors]

    def _cov_type(self, key) -> str:
        from ..linalg.sandwich import default_cov_type
        return self.estimator.cov_type or default_cov_type(self._clusters_of(key) if self.cluster_by else None)

    def _clusters_of(self, key) -> int:
        return self.cluster_counts[key]

    def _cluster_moments_pass(self, gi, ej, mu_cols, columns, where, mus) -> None:
        """CR3 (per experiment, by its number of clusters): per-cluster cells by (experiment, cluster)."""
        if not self.cluster_by:
            return
        if not hasattr(self, "cluster_index"):
            t = self.et.table
            keys = {"k": self.key, **{f"g{i}": t[c] for i, c in enumerate(self.cluster_by)}}
            frame = self.et.run(t.filter(self.key.notnull()).select(**keys).distinct())
            frame["k"] = frame["k"].map(self.eng._python)
            self.cluster_index = {}
            for key, sub in frame.groupby("k", sort=False):
                sub = sub.drop(columns="k").sort_values([f"g{i}" for i in range(len(self.cluster_by))],
                                                         kind="stable", ignore_index=True)
                self.cluster_index[self.eng._python(key)] = pd.MultiIndex.from_frame(sub)
            self.cluster_counts = {key: len(index) for key, index in self.cluster_index.items()}
        wanted = [key for key in mus if key not in self.errors and self._cov_type(key) == "CR3"]
        if not wanted:
            return
        cells = ej._cells(self.cov, mu_cols, columns, where, True, prefix=[self.key])
        for key, sub in cells.groupby("g0", sort=False):
            key = self.eng._python(key)
            if key in wanted:
                self.cr3 = getattr(self, "cr3", {})
                self.cr3.setdefault(key, {})[gi] = self.exp.cluster_moments_of(
                    sub, self.cov.q, len(columns), self.cluster_index[key], offset=1)

    def _member(self, key, batch):
        """The per-experiment results object of a fitted experiment."""
        from types import SimpleNamespace

        from ..linalg.sandwich import Covariance

        iv = self.iv.get(key, False)
        exp = _replace(self.exp, self.et)
        exp.n = self.n[key]
        exp.n_clusters = self._clusters_of(key) if self.cluster_by else None
        if not iv:
            exp.dose = exp.treated = None
        data = SimpleNamespace(intent_to_treat=self.intent, treated=self.treated if iv else None, instrument=None,
                               is_iv=iv, arms=self.arms, control=self.arms[0], cluster_by=self.cluster_by,
                               design=None, engine=exp, n_clusters=exp.n_clusters)
        spec = SimpleNamespace(data=data, metrics=self.metrics, covariates=self.cov)
        groups = [_Group(None, None, metrics, mu, n, n_clusters, fits)
                  for metrics, mu, n, n_clusters, fits in self.groups[key]]
        covariance = Covariance.of(self._cov_type(key))
        out = _BatchResults(spec, covariance, self.estimator, exp, groups, self.layout)
        out._where, out._batch, out._key = self.wheres, batch, key
        return out

    def _effects(self) -> pd.DataFrame:
        batch = _Batch()
        members = {key: self._member(key, batch) for key in self.keys_ok}
        estimands = {}
        for key, res in list(members.items()):
            try:
                estimands[key] = self.check_estimands(self.estimands_arg, res._source.iv)
            except ValidationError as exc:
                self._fail(key, str(exc))
                members.pop(key)
        for key in members:
            batch.cluster_moments[key] = getattr(self, "cr3", {}).get(key, {})
        self._ratios(members, estimands, batch)
        for key, res in list(members.items()):
            try:
                res.infer_effect(alpha=self.alpha, estimands=estimands[key])
            except _Collected:
                pass
            except ValidationError as exc:
                self._fail(key, str(exc))
                members.pop(key)
        self._scores(batch)
        batch.collecting = False
        frames = []
        for key in self.ids:
            if key in members and key not in self.errors:
                try:
                    frame = members[key].infer_effect(alpha=self.alpha, estimands=estimands[key]).to_frame()
                except ValidationError as exc:
                    self._fail(key, str(exc))
                else:
                    frame.insert(0, self.experiment, key)
                    frame["error"] = None
                    frames.append(frame)
                    continue
            frames.append(pd.DataFrame({self.experiment: [key], "error": [self.errors[key]]}))
        columns = next((list(f.columns) for f in frames if f.shape[0] and f["error"].isna().all()), None)
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if columns is not None:
            out = out.reindex(columns=columns)
        return out

    def _ratios(self, members: dict, estimands: dict, batch: _Batch) -> None:
        """The complier sums of a LATE with covariates, grouped by experiment (and cluster)."""
        wanted = [key for key, res in members.items() if res._source.iv and "LATE" in estimands[key]
                  and self.cov.q]
        if not wanted:
            return
        exp, eng = self.exp, self.eng
        J = len(self.arms) - 1
        for gi, where in enumerate(self.wheres):
            keys = [key for key in wanted if len(members[key]._groups) > gi]
            if not keys:
                continue
            lookup = pd.DataFrame({"__key": keys, **{f"m{h}": [members[k]._groups[gi].mu[h] for k in keys]
                                                     for h in range(self.cov.q)}})
            joined = self.et.joined(lookup, self.key, "__key")
            c = exp.design_columns(self.cov, [joined.table[f"m{h}"] for h in range(self.cov.q)])
            for j in range(1, J + 1):
                ratio = _Ratio(gi, j, None, "compliers", None)
                T = exp.take_up(j)
                in_arm = exp.assign == j if where is None else (exp.assign == j) & where
                in_control = exp.assign == 0 if where is None else (exp.assign == 0) & where
                parts = [exp.w, exp.w * T] + [exp.w * x * T for x in c]
                values = [(member.cast("float64") * x).sum() for member in (in_arm, in_control) for x in parts]
                frame = self._grouped(values, table=joined)
                for key, row in frame.groupby("g0", sort=False):
                    key = eng._python(key)
                    if key in keys:
                        sums = row[[f"a{i}" for i in range(len(values))]].to_numpy(float, na_value=0.0)
                        batch.wald.setdefault(key, {})[ratio] = np.nan_to_num(sums).reshape(2, len(parts))
                cr3 = [key for key in keys if self._cov_type(key) == "CR3"]
                if cr3:
                    clusters = [self.et.table[col] for col in self.cluster_by]
                    frame = self._grouped(values, extra=clusters, table=joined)
                    for key, sub in frame.groupby("g0", sort=False):
                        key = eng._python(key)
                        if key not in cr3:
                            continue
                        index = self.cluster_index[key]
                        keys_frame = sub[[f"g{i + 1}" for i in range(len(self.cluster_by))]]
                        codes = index.get_indexer(pd.MultiIndex.from_frame(keys_frame.set_axis(index.names, axis=1)))
                        out = np.zeros((len(index), 2, len(parts)))
                        out[codes] = sub[[f"a{i}" for i in range(len(values))]].to_numpy(
                            float, na_value=0.0).reshape(-1, 2, len(parts))
                        batch.cluster_wald.setdefault(key, {})[ratio] = out

    def _scores(self, batch: _Batch) -> None:
        """Pass 2 for every experiment whose covariance sums scores: one grouped query per
        shape of request (experiments of one design share it)."""
        classes: dict = {}
        for key, (res, requests, layout) in batch.requests.items():
            batch.recorder = []
            res._score_columns(requests, layout)
            numbers, batch.recorder = batch.recorder, None
            shape = (res.covariance.clustered, res._source.iv,
                     tuple((gi, kind, D.shape, len(terms)) for gi, kind, D, terms in requests), len(numbers))
            classes.setdefault(shape, []).append((key, numbers))
        for (clustered, *_), members in classes.items():
            keys = [key for key, _ in members]
            lookup = pd.DataFrame({"__key": keys, **{f"n{i}": [numbers[i] for _, numbers in members]
                                                     for i in range(len(members[0][1]))}})
            joined = self.et.joined(lookup, self.key, "__key")
            res, requests, layout = batch.requests[keys[0]]
            batch.lookup, batch.counter = joined.table, 0
            try:
                columns = res._score_columns(requests, layout)
            finally:
                batch.lookup = None
            M = len(columns)
            if clustered:
                frame = self._grouped([s.sum() for s in columns], extra=[self.et.table[c] for c in self.cluster_by],
                                      table=joined)
                for key, sub in frame.groupby("g0", sort=False):
                    T = sub[[f"a{i}" for i in range(M)]].to_numpy(float, na_value=0.0)
                    batch.grams[self.eng._python(key)] = T.T @ T
            else:
                names = [f"__causalflow_s{i}" for i in range(M)]
                scored = joined.table.mutate(**dict(zip(names, columns)))
                pairs = [(a, b) for a in range(M) for b in range(a, M)]
                table = self.eng.EngineTable(scored, self.et.backend, self.et._run, self.et._lookups,
                                             self.et._session)
                frame = table.aggregate([(scored[names[a]] * scored[names[b]]).sum() for a, b in pairs],
                                        by=[scored[self.experiment]])
                index = np.array(pairs).reshape(-1, 2)
                for key, sub in frame.groupby("g0", sort=False):
                    out = np.zeros((M, M))
                    sums = np.nan_to_num(sub[[f"a{i}" for i in range(len(pairs))]].to_numpy(float)[0])
                    out[index[:, 0], index[:, 1]] = sums
                    out[index[:, 1], index[:, 0]] = sums
                    batch.grams[self.eng._python(key)] = out


def _ols_moments(moments):
    """The moments of an experiment that is an A/B test (its take-up equals its assignment):
    X = Z."""
    return moments.reduced_form()


def _replace(exp, table):
    """The experiment's expressions evaluated over another table (a join with a lookup)."""
    from dataclasses import replace
    return replace(exp, table=table, _cache={})
