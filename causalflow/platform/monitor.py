r"""Continuous monitoring: the effects of an experiment at successive looks, in one pass.

``cf.monitor`` re-estimates every effect at each look with anytime-valid p-values and
confidence sequences (Lindon et al., arXiv:2210.08589; :mod:`causalflow.linalg.anytime`),
which stay valid however often one looks and whenever one stops.

Each row is read once. The 2SLS cross-products Z'WZ, Z'WX, Z'WY are sums over rows, so
look l adds the new rows' cross-products to those of look l - 1 and solves with the
core's :func:`~causalflow.linalg.twosls.solve_2sls`. The sandwich meats, which need the
residuals at the current coefficients, are accumulated exactly as well
(:mod:`causalflow.linalg.incremental`): fourth-order moments for HC, per-cluster
cross-products for CR, kept with their Gram matrix over the clusters that no longer receive
rows (:class:`~causalflow.linalg.incremental.ClusterScoreGram`), so that a look with clusters
costs its new rows and the recently active clusters, not a pass over every cluster.
Covariates enter with a fixed shift (their mean over all rows) and each look's effect is
the contrast at that look's covariate mean, which equals the core's fit on the rows seen
so far (covariates centred at their mean then).

The mixture precision g is fixed before the first look (the martingale argument needs one
mixture for all looks): ``LinearModel(av_g=...)``, or the optimum at
``LinearModel(av_planned_n=...)``, by default at the final sample size (rows, or clusters
with CR covariances) — a sample size only, never an outcome.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..backends.memory import block_moments
from ..data import ExperimentData
from ..effects.record import Effects, Inference, effect_columns, effect_numbers
from ..errors import DesignWarning, ValidationError
from ..linalg.anytime import optimal_g, running_anytime_valid
from ..linalg.compliers import WaldRatio, arm_sums, cluster_arm_sums
from ..linalg.incremental import (
    ClusterMoments,
    ClusterScoreGram,
    LinMeatMoments,
    RowMeatMoments,
)
from ..linalg.layout import CoefLayout
from ..linalg.sandwich import Covariance
from ..linalg.twosls import solve_2sls
from ..models.linear import (
    LinearModel,
    _missing_groups,
    check_estimands,
    estimand_name,
    estimand_notes,
    parse_conditions,
)

__all__ = ["Monitoring", "monitor"]


@dataclass(frozen=True)
class Monitoring:
    """Effects at every look of a monitored experiment.

    Attributes
    ----------
    looks : tuple of Effects, one per look (with ``av_*`` columns at a fixed g)
    n_rows : tuple of int, rows seen at each look
    g : float, the mixture precision used at every look
    alpha : float
    """

    looks: tuple
    n_rows: tuple
    g: float
    alpha: float

    def to_frame(self) -> pd.DataFrame:
        """One row per look x effect, with the running (monitored) anytime-valid columns.

        ``av_p_value_running`` is the running minimum of ``av_p_value`` and
        ``av_cs_lower`` / ``av_cs_upper`` the running intersection of the confidence
        sequences: both keep the guarantees under continuous monitoring.
        """
        # one frame from every look's records (as Effects.to_frame, with look and n_rows first)
        first = self.looks[0]
        sizes = [len(eff) for eff in self.looks]
        head = {"look": np.repeat(np.arange(len(self.looks)), sizes),
                "n_rows": np.repeat(np.asarray(self.n_rows, dtype=np.int64), sizes)}
        if all(eff.inference == first.inference and eff.alpha == first.alpha and eff.adjustment is None
               for eff in self.looks):
            # every number depends on its own effect only: all looks in one evaluation
            records = [r for eff in self.looks for r in eff.records]
            numbers = effect_numbers(records, np.concatenate([eff.estimate for eff in self.looks]),
                                     np.concatenate([eff.std_error for eff in self.looks]), first.inference,
                                     first.alpha)
            out = pd.DataFrame({**head, **effect_columns(records, numbers, first.inference)})
        else:
            rows = [{"look": i, "n_rows": self.n_rows[i], **row}
                    for i, eff in enumerate(self.looks) for row in eff.to_dicts()]
            out = pd.DataFrame(rows, columns=["look", "n_rows", *first.columns()])
        m = len(self.looks[0])
        shape = (len(self.looks), m)
        run = running_anytime_valid(out["av_p_value"].to_numpy().reshape(shape),
                                    out["av_ci_lower"].to_numpy().reshape(shape),
                                    out["av_ci_upper"].to_numpy().reshape(shape), self.alpha)
        out["av_p_value_running"] = run.p_value.ravel()
        out["av_cs_lower"] = run.ci_lower.ravel()
        out["av_cs_upper"] = run.ci_upper.ravel()
        return out

    def first_significant(self) -> pd.DataFrame:
        """Per effect, the first look (and its rows) with anytime-valid p-value <= alpha."""
        f = self.to_frame()
        keys = ["metric", "arm", "condition", "estimand"]
        last = f[f.look == f.look.max()][keys].reset_index(drop=True)
        m = len(last)
        p = f["av_p_value"].to_numpy().reshape(len(self.looks), m)
        first = running_anytime_valid(p, p, p, self.alpha).first_significant
        last["first_look"] = pd.array(np.where(first >= 0, first, -1), dtype="Int64")
        last.loc[first < 0, "first_look"] = pd.NA
        last["n_rows_at_first_look"] = pd.array(
            [self.n_rows[i] if i >= 0 else pd.NA for i in first], dtype="Int64")
        return last

    def __len__(self) -> int:
        return len(self.looks)

    def __repr__(self) -> str:
        return f"Monitoring({len(self.looks)} looks, g={self.g:.4g}, alpha={self.alpha})"


def _cuts(looks, n: int) -> np.ndarray:
    if isinstance(looks, (int, np.integer)) and not isinstance(looks, bool):
        if not 1 <= looks <= n:
            raise ValidationError(f"looks: number of looks must be between 1 and {n} rows, got {looks}")
        return np.round(np.arange(1, looks + 1) * n / looks).astype(np.int64)
    try:
        cuts = np.asarray(list(looks), dtype=float)
    except (TypeError, ValueError):
        raise ValidationError(f"looks: expected a number of looks or increasing row counts, got {looks!r}") from None
    if cuts.ndim != 1 or len(cuts) == 0 or np.any(cuts != np.round(cuts)) or np.any(np.diff(cuts) <= 0) \
            or cuts[0] < 1 or cuts[-1] > n:
        raise ValidationError(f"looks: row counts must be increasing integers in [1, {n}], got {looks!r}")
    return cuts.astype(np.int64)


def _batches_to_data(batches: Sequence):
    first = batches[0]
    roles = ("intent_to_treat", "treated", "propensity", "instrument", "cluster_by", "control")
    for b in batches:
        if not isinstance(b, ExperimentData):
            raise ValidationError(f"data: a list of looks must hold ExperimentData, got {type(b).__name__}")
        for r in roles:
            if getattr(b, r) != getattr(first, r):
                raise ValidationError(f"data: look batches disagree on {r} ({getattr(b, r)!r} vs "
                                      f"{getattr(first, r)!r})")
    frame = pd.concat([b.data for b in batches], ignore_index=True)
    data = ExperimentData(frame, intent_to_treat=first.intent_to_treat, treated=first.treated,
                          propensity=first.propensity, instrument=first.instrument,
                          cluster_by=first.cluster_by, control=first.control)
    return data, np.cumsum([len(b.data) for b in batches])


def monitor(data, y, exogenous_covariates=None, *, arrival: str | None = None, looks=100,
            estimator=None, condition_on=None, alpha: float = 0.05, estimands=None) -> Monitoring:
    r"""Effects with anytime-valid p-values and confidence sequences at successive looks.

    Parameters
    ----------
    data : ExperimentData, or a list of ExperimentData
        The experiment; or the batches of rows that arrived between looks (same roles).
        On a warehouse table (parquet, DuckDB, Ibis, Spark) ``arrival`` is required and a
        look is a filter on it, fitted in the engine: the rows whose arrival is at most that
        of the row ranked at the look's count (ties included).
    y, exogenous_covariates : as in ``ExperimentData.add_metric``.
    arrival : str, optional
        Column that orders arrival (rows are sorted by it, stably); default: row order.
    looks : int or sequence of int
        Number of equally sized looks, or the cumulative row counts at each look.
        Ignored for a list of batches (one look per batch).
    estimator : LinearModel (class or instance), optional
        Its ``cov_type``, ``av_g`` / ``av_planned_n`` apply.
    condition_on : str or list of str, optional
        Subgroups, as in ``infer_effect``; each look uses the subgroup's covariate mean
        over the rows seen so far.
    alpha : float
        Level of the confidence sequences and significance.
    estimands : str or list of str, optional
        As in ``infer_effect``: default ``ITT`` and ``LATE`` in an encouragement design,
        ``ATE`` otherwise. At each look the LATE sits at the compliers' covariate means
        of the rows seen so far (Wald ratios of additive sums, so they accumulate like
        the moments), and its variance includes their estimation (HC: fourth-order moments
        restricted to each condition; CR: per-cluster sums), exactly as the core's.

    Returns
    -------
    Monitoring
        ``looks[l]`` is the :class:`Effects` at look l (its ``to_frame()`` has the
        ``av_*`` columns); ``to_frame()`` stacks them with running columns;
        ``first_significant()`` gives the first significant look per effect.

    Notes
    -----
    Every effect has its variance, and the covariance between the arms and conditions of
    one metric is formed. Between metrics (and between estimands) it is formed with CR
    covariances for metrics with the same missing rows; with HC covariances it would need
    cross-metric fourth-order moments and is left NaN in ``Effects.cov``. Each look's
    effects equal the core's ``infer_effect`` on the rows seen so far
    (``tests/test_anytime_monitor.py``).

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> from causalflow.platform.monitor import monitor
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 4000), "x": rng.normal(size=4000)})
    >>> df["y"] = 0.3 * df.t + df.x + rng.normal(size=4000)
    >>> mon = monitor(cf.ExperimentData(df, intent_to_treat="t"), y="y",
    ...               exogenous_covariates=["x"], looks=20)
    >>> len(mon), int(mon.first_significant().first_look[0]) < 20
    (20, True)
    """
    if not 0 < alpha < 1:
        raise ValidationError(f"alpha: {alpha!r} is outside (0, 1)")
    if getattr(data, "engine", None) is not None:
        return _monitor_engine(data, y, exogenous_covariates, arrival, looks, estimator, condition_on, alpha,
                               estimands)
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValidationError("data: empty list of looks")
        data, cuts = _batches_to_data(data)
        order = np.arange(len(data.data))
    elif isinstance(data, ExperimentData):
        n_all = len(data.data)
        if arrival is None:
            order = np.arange(n_all)
        else:
            if arrival not in data.data.columns:
                raise ValidationError(f"arrival: column {arrival!r} is not in the data")
            col = data.data[arrival]
            if col.isna().any():
                raise ValidationError(f"arrival: column {arrival!r} has missing values")
            order = np.argsort(col.to_numpy(), kind="stable")
        cuts = _cuts(looks, n_all)
    else:
        raise ValidationError(f"data: expected ExperimentData or a list of them, got {type(data).__name__}")
    if estimator is None:
        estimator = LinearModel()
    elif isinstance(estimator, type):
        estimator = estimator()
    if not isinstance(estimator, LinearModel):
        raise ValidationError(f"estimator: monitoring needs a LinearModel, got {estimator!r}")
    spec = data.add_metric(y=y, exogenous_covariates=exogenous_covariates)
    source = spec.source()
    covariance = Covariance.of(estimator.cov_type or ("CR1" if source.clusters is not None else "HC1"))
    cov_type, clustered = covariance.cov_type, covariance.clustered
    if covariance.meat != "scores":
        raise ValidationError(f"cov_type: monitoring accumulates score moments, which serve HC0, HC1, CR0 "
                              f"and CR1; {cov_type} is not available at looks (the anytime-valid columns "
                              "do not need it)")
    if clustered and source.clusters is None:
        raise ValidationError(f"cov_type: {cov_type} needs cluster_by on ExperimentData")
    conditions = parse_conditions(condition_on, spec.covariates.sources)
    estimands = check_estimands(estimands, source.iv)
    J, q = source.n_arms, spec.covariates.q
    layout = CoefLayout(J, q)
    names = layout.names([f"x{j}" for j in range(1, J + 1)], spec.covariates.names)
    p = len(names)
    kinds = tuple(dict.fromkeys(_kind(e, source.iv) for e in estimands))
    late = "LATE" in estimands and q > 0   # complier means to accumulate

    extra = 1.0 if clustered else float(p)
    g = estimator.av_g
    if g is None:
        planned = estimator.av_planned_n or (source.n_clusters if clustered else source.n)
        if planned - extra <= 0:
            raise ValidationError(f"av_planned_n: {planned!r} leaves no residual degrees of freedom")
        g = float(optimal_g(planned, planned - extra, alpha))
    inference = Inference(cov_type, estimator.inference, p, float(g))

    originals = spec.covariates.original() if conditions[0] is not None else None
    masks = [None if c is None else c.evaluate(originals) for c in conditions]
    states = []
    for rows, metrics in _missing_groups(source.outcomes):
        member = np.ones(source.n, bool)
        if rows is not None:
            member[:] = False
            member[rows] = True
        states.append(_GroupState(metrics, member, spec.covariates.means(rows, source.weights),
                                  len(conditions), q, p, source.n_clusters if clustered else None, kinds,
                                  J if late else 0, contrasts=len(conditions) * J * len(estimands)))

    results, start = [], 0
    for cut in cuts:
        new = order[start:cut]
        start = cut
        for st in states:
            st.add(source, new[st.member[new]], masks, J)
        results.append(_look_effects(states, source, conditions, estimands, covariance, layout, names,
                                     spec.metrics, data, alpha, inference))
    return Monitoring(tuple(results), tuple(int(c) for c in cuts), float(g), float(alpha))


def _monitor_engine(data, y, exogenous_covariates, arrival, looks, estimator, condition_on, alpha,
                    estimands) -> Monitoring:
    """:func:`monitor` on a warehouse table: look l is the fit, in the engine, of the rows
    whose ``arrival`` is at most the arrival of the row ranked ``n_rows[l]`` (rows tied with
    it are in the look too; an engine table has no row order, so ``arrival`` is required).
    Each look is one engine fit of the rows seen so far, with the mixture precision g fixed
    at the planned size as in memory, so its effects equal the in-memory monitor's."""
    if arrival is None:
        raise ValidationError("arrival: an engine table has no row order; name the column that orders arrival")
    table = data.engine.table
    if arrival not in table.columns:
        raise ValidationError(f"arrival: column {arrival!r} is not in the data")
    estimator = LinearModel() if estimator is None else (estimator() if isinstance(estimator, type) else estimator)
    if not isinstance(estimator, LinearModel):
        raise ValidationError(f"estimator: monitoring needs a LinearModel, got {estimator!r}")
    n = data.design.n_units
    cuts = _cuts(looks, n)
    cov_type = estimator.cov_type or ("CR1" if data.cluster_by else "HC1")
    if Covariance.of(cov_type).meat != "scores":
        raise ValidationError(f"cov_type: monitoring serves HC0, HC1, CR0 and CR1, not {cov_type}")
    clustered = Covariance.of(cov_type).clustered
    g = estimator.av_g
    if g is None:
        planned = estimator.av_planned_n or (data.design.n_clusters if clustered else n)
        spec = data.add_metric(y=y, exogenous_covariates=exogenous_covariates)
        extra = 1.0 if clustered else float(CoefLayout(data.n_arms, spec.covariates.q).p)
        if planned - extra <= 0:
            raise ValidationError(f"av_planned_n: {planned!r} leaves no residual degrees of freedom")
        g = float(optimal_g(planned, planned - extra, alpha))
    look_model = LinearModel(cov_type=cov_type, av_g=g, inference=estimator.inference)
    roles = dict(intent_to_treat=data.intent_to_treat, treated=data.treated, propensity=data.propensity,
                 instrument=data.instrument, cluster_by=data.cluster_by, control=data.control)
    values = table.arrival_cuts(arrival, cuts)
    results = []
    for value in values:
        with warnings.catch_warnings():  # the design's warnings were given once, for the whole table
            warnings.simplefilter("ignore", DesignWarning)
            look = ExperimentData(table.where(table.table[arrival] <= value), **roles)
        results.append(look.add_metric(y=y, exogenous_covariates=exogenous_covariates).fit(look_model)
                       .infer_effect(condition_on=condition_on, alpha=alpha, estimands=estimands))
    return Monitoring(tuple(results), tuple(int(c) for c in cuts), float(g), float(alpha))


def _kind(estimand: str, iv: bool) -> str:
    """The fit an estimand is a contrast of (as ``LinearModelResults._kind``)."""
    return "iv" if iv and estimand != "ITT" else "itt"


class _GroupState:
    """Running sums of one missingness group (mutable, private to one monitor call).

    ``late_arms`` (J, or 0): with covariates and a LATE, the compliers' arm sums of every
    condition x arm (:func:`causalflow.linalg.compliers.arm_sums`, also per cluster for CR)
    and, for HC, the 2SLS meat moments restricted to every condition and pair of
    conditions, which the complier means' influence on the LATE needs.
    """

    def __init__(self, metrics, member, mu0, n_cond, q, p, n_clusters, kinds, late_arms=0, contrasts=1):
        self.metrics, self.member, self.mu0 = metrics, member, mu0
        self.moments = None
        self.meat = {k: None for k in kinds}
        K = len(metrics)
        # CR: a Gram of per-cluster sums, updated where rows arrive; with complier-mean terms
        # (a LATE with covariates) per-fit cluster moments, whose score sums those terms join
        self.clusters, self.gram = None, None
        if n_clusters and late_arms:
            self.clusters = {k: ClusterMoments(n_clusters, p, K) for k in kinds}
        elif n_clusters:
            self.gram = ClusterScoreGram(n_clusters, p, K, kinds, width=K * contrasts)
        self.cond_sum = np.zeros((n_cond, q))
        self.cond_w = np.zeros(n_cond)
        self.cond_n = np.zeros(n_cond, dtype=np.int64)
        self.n = 0
        self.late_arms = late_arms
        self.complier = np.zeros((n_cond, late_arms, 2, 2 + q))
        self.complier_g = np.zeros((n_cond, late_arms, n_clusters, 2, 2 + q)) if n_clusters and late_arms else None
        self.restricted: dict = {}   # (c, c') -> RowMeatMoments over S_c and S_c' (HC, LATE)

    def add(self, source, rows, masks, J):
        if len(rows) == 0:
            return
        rows = np.sort(rows)
        block, w = source.matrix(rows, self.mu0, self.metrics)
        part = block_moments(block, w, source.p, source.iv, len(self.metrics))
        Z, X, Y = source.split(block, len(self.metrics))
        self.moments = part if self.moments is None else self.moments + part
        self.n += len(rows)
        if self.gram is not None:
            self.gram.add_block(Z, X, Y, w, source.clusters[rows])
        for kind in self.meat:
            Xk = X if kind == "iv" else None
            if self.gram is not None:
                continue
            if self.clusters is not None:
                self.clusters[kind].add_block(Z, Xk, Y, w, source.clusters[rows])
            else:
                q = self.cond_sum.shape[1]
                if Xk is None and Z.shape[1] <= LinMeatMoments.MAX_P:
                    m = LinMeatMoments.from_block(Z, Y, w, J, q)      # distinct monomials only
                else:
                    m = RowMeatMoments.from_block(Z, Xk, Y, w)
                self.meat[kind] = m if self.meat[kind] is None else self.meat[kind] + m
        q = self.cond_sum.shape[1]
        xc = Z[:, 1 + J:1 + J + q]
        ww = np.ones(len(rows)) if w is None else w
        for c, mask in enumerate(masks):
            if mask is None:  # all rows: no selection
                self.cond_sum[c] += ww @ xc
                self.cond_w[c] += ww.sum()
                self.cond_n[c] += len(rows)
            else:
                sel = mask[rows]
                self.cond_sum[c] += ww[sel] @ xc[sel]
                self.cond_w[c] += ww[sel].sum()
                self.cond_n[c] += int(sel.sum())
        if not self.late_arms:
            return
        inside = [np.ones(len(rows), bool) if mask is None else mask[rows] for mask in masks]
        control = 1.0 - Z[:, 1:1 + J].sum(axis=1)
        for c, sel in enumerate(inside):
            for j in range(J):
                take = X[:, 1 + j]
                args = (xc * take[:, None], take, Z[:, 1 + j] * sel, control * sel, w)
                self.complier[c, j] += arm_sums(*args)
                if self.complier_g is not None:
                    self.complier_g[c, j] += cluster_arm_sums(*args, source.clusters[rows], len(self.complier_g[c, j]))
        if self.clusters is None:
            for c in range(len(masks)):
                for c2 in range(c, len(masks)):
                    if masks[c] is None and masks[c2] is None:
                        continue   # all rows: the meat moments themselves
                    sel = inside[c] & inside[c2]
                    m = RowMeatMoments.from_block(Z[sel], X[sel], Y[sel], None if w is None else w[sel])
                    self.restricted[(c, c2)] = m if (c, c2) not in self.restricted else self.restricted[(c, c2)] + m

    def moments_of(self, c: int, c2: int, masks) -> RowMeatMoments:
        """The 2SLS meat moments over the rows of conditions c and c2 (c <= c2)."""
        if masks[c] is None and masks[c2] is None:
            return self.meat["iv"]
        return self.restricted[(c, c2)]

    def complier_ratio(self, c: int, j: int) -> WaldRatio | None:
        """Arm j's (0-based) compliers of condition c at this look; None before they are identified."""
        try:
            return WaldRatio.from_sums(self.complier[c, j])
        except ValidationError:
            return None


def _psi_vectors(ratio: WaldRatio, layout: CoefLayout, j: int, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The influence of arm j's (1..J) complier mean on its LATE in the coordinates of the
    2SLS rows: :math:`\psi_i'\beta = w_i (z_i'a)(x_i'h)` with z the instruments and x the
    regressors of :mod:`causalflow.design` (control's indicator is :math:`1 - \sum_k A_k`),
    for the interaction coefficients ``beta`` (q,) of one metric."""
    a = np.zeros(layout.p)
    a[layout.arm(j)] = 1.0 / ratio.weight[0]
    a[0] = -1.0 / ratio.weight[1]
    for k in range(1, layout.n_arms + 1):
        a[layout.arm(k)] += 1.0 / ratio.weight[1]
    a /= ratio.first_stage
    h = np.zeros(layout.p)
    h[layout.interactions(j)] = beta
    h[layout.arm(j)] = -ratio.theta @ beta
    h[0] = -ratio.level @ beta
    return a, h


def _look_effects(states, source, conditions, estimands, covariance, layout, names, metric_names, data,
                  alpha, inference) -> Effects:
    clustered, p, J, q = covariance.clustered, layout.p, layout.n_arms, layout.q
    masks = [None if c is None else c for c in conditions]   # only None-ness is read below
    records, blocks = [], []        # blocks: (indices into records, covariance)
    for st in states:
        K = len(st.metrics)
        G = None
        if clustered:
            G = st.gram.n_clusters if st.gram is not None else st.clusters[next(iter(st.clusters))].n_clusters
        dof = covariance.dof(st.n, p, G)
        fits = {}
        kinds = tuple(st.meat)
        if st.moments is not None and dof > 0 and st.n > p:
            for kind in kinds:
                m = st.moments if kind == "iv" else st.moments.reduced_form()
                try:
                    fits[kind] = solve_2sls(m, names)
                except (ValidationError, np.linalg.LinAlgError):
                    fits = {}
                    break
        means = [st.cond_sum[c] / st.cond_w[c] if st.cond_w[c] > 0 else np.full(q, np.nan)
                 for c in range(len(conditions))]
        factor = covariance.factor(st.n, p, G) if fits else np.nan
        joint = []   # CR: (cluster sums (G, K m), their records) of every estimand, for one Gram matrix
        for e_i, estimand in enumerate(estimands):
            kind = _kind(estimand, source.iv)
            ratios = None
            if estimand == "LATE" and st.late_arms:
                ratios = [[st.complier_ratio(c, j) for j in range(J)] for c in range(len(conditions))]
                D = np.vstack([layout.effect(j + 1, ratios[c][j].theta if ratios[c][j] else np.full(q, np.nan))
                               for c in range(len(conditions)) for j in range(J)])
            elif estimand == "LATE":
                D = np.vstack([layout.effects() for _ in conditions])
            else:
                D = np.vstack([layout.effects(mean) for mean in means])
            m = D.shape[0]
            idx = {}
            for c, cond in enumerate(conditions):
                for j in range(J):
                    for pos, k in enumerate(st.metrics):
                        idx[(c * J + j, pos)] = len(records)
                        est = float(D[c * J + j] @ fits[kind].coef[:, pos]) if fits else np.nan
                        records.append(dict(
                            metric=metric_names[k], arm=data.arms[j + 1],
                            condition="all" if cond is None else cond.text,
                            estimand=estimand_name(estimand, cond is not None), estimate=est,
                            n=int(st.cond_n[c]), dof=dof if fits else np.nan,
                            av_dof=dof if fits else np.nan, n_clusters=G,
                            _sort=(k, j, c, e_i)))
            if not fits:
                continue
            fit = fits[kind]
            inf_d = fit.influence @ D.T
            valid = np.isfinite(inf_d).all(axis=0)     # LATE rows whose compliers are identified
            inf_d = np.where(valid, inf_d, 0.0)
            if clustered and st.gram is not None:
                order = [idx[(r, pos)] for pos in range(K) for r in range(m)]
                keep = np.tile(valid, K)
                part = st.gram.contrasts(kind, fit.coef, inf_d, keep)   # T_g = Q v_g
                joint.append((part, [o for o, v in zip(order, keep) if v]))
            elif clustered:
                T = st.clusters[kind].score_sums(fit.coef, inf_d)        # (G_seen, K, m)
                if ratios is not None:
                    seen = st.clusters[kind].seen
                    for c in range(len(conditions)):
                        for j in range(J):
                            if ratios[c][j] is not None:
                                psi = ratios[c][j].summed_influence(st.complier_g[c, j][seen])   # (G, q)
                                T[:, :, c * J + j] += psi @ fit.coef[layout.interactions(j + 1)]
                order = [idx[(r, pos)] for pos in range(K) for r in range(m)]
                keep = np.tile(valid, K)
                joint.append((T.reshape(len(T), K * m)[:, keep], [o for o, v in zip(order, keep) if v]))
            else:
                meat = st.meat[kind].meat_z(fit.coef)
                extra = np.zeros((K, m, m))
                if ratios is not None:
                    extra = _late_meat_terms(st, masks, ratios, layout, fit, inf_d, J)
                for pos in range(K):
                    cov = factor * (inf_d.T @ meat[pos] @ inf_d + extra[pos])
                    rows_ = [r for r in range(m) if valid[r]]
                    blocks.append(([idx[(r, pos)] for r in rows_], cov[np.ix_(rows_, rows_)]))
        if joint and st.gram is not None:
            blocks.append(([o for _, order in joint for o in order],
                           factor * st.gram.gram([part for part, _ in joint])))
        elif joint:
            T = np.concatenate([t for t, _ in joint], axis=1)
            blocks.append(([o for _, order in joint for o in order], factor * (T.T @ T)))
    M = len(records)
    full = np.full((M, M), np.nan)
    for index, cov in blocks:
        full[np.ix_(index, index)] = cov
    perm = sorted(range(M), key=lambda i: records[i]["_sort"])
    records = [records[i] for i in perm]
    for r in records:
        del r["_sort"]
    return Effects._from_fit(records, full[np.ix_(perm, perm)], alpha, None,
                             [None if c is None else c.text for c in conditions], inference,
                             notes=estimand_notes([r["estimand"] for r in records], source.iv, q > 0),
                             estimands=estimands)


def _late_meat_terms(st, masks, ratios, layout, fit, inf_d, J) -> np.ndarray:
    r"""(K, m, m) the HC meat terms of the complier means' influence on the LATE rows:
    the products of each row's 2SLS score :math:`w_i (z_i'L_r) e_{ik}` (all rows) with the
    influence :math:`w_i (z_i'a_{r'})(x_i'h_{r'k})` of row r''s complier mean (rows of its
    condition), both ways, and of the influences with each other (rows of both conditions),
    from :meth:`~causalflow.linalg.incremental.RowMeatMoments.tensors`."""
    n_cond = len(masks)
    K = fit.coef.shape[1]
    m = n_cond * J
    tensors = {}
    for c in range(n_cond):
        for c2 in range(c, n_cond):
            tensors[(c, c2)] = st.moments_of(c, c2, masks).tensors(fit.coef)
    out = np.zeros((K, m, m))
    for k in range(K):
        vec = {}
        for c in range(n_cond):
            for j in range(J):
                ratio = ratios[c][j]
                if ratio is not None:
                    vec[c * J + j] = (c, *_psi_vectors(ratio, layout, j + 1, fit.coef[layout.interactions(j + 1), k]))
        for r in range(m):
            for r2 in range(m):
                total = 0.0
                if r2 in vec:   # score of r (all rows) x influence of r2 (rows of its condition)
                    c2, a2, h2 = vec[r2]
                    total += np.einsum("a,b,c,abc->", inf_d[:, r], a2, h2, tensors[(c2, c2)][0][k])
                if r in vec:
                    c1, a1, h1 = vec[r]
                    total += np.einsum("a,b,c,abc->", inf_d[:, r2], a1, h1, tensors[(c1, c1)][0][k])
                if r in vec and r2 in vec:
                    key = (min(c1, c2), max(c1, c2))
                    total += np.einsum("a,b,c,d,abcd->", a1, a2, h1, h2, tensors[key][1])
                out[k, r, r2] = total
    return out
