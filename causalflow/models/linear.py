"""``LinearModel``: the one generalized 2SLS solver for every design, all metrics at once.

A fit walks the rows twice at most: one pass accumulates the weighted cross-products
Z'WZ, Z'WX, Z'WY of every metric (:mod:`causalflow.linalg.twosls`), and each
``infer_effect`` call makes one pass that forms the cluster (or row) sums of the
influence of every requested contrast on every metric (:mod:`causalflow.linalg.sandwich`).
Metrics with the same missing rows share all work; a metric with missing values uses its
complete rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd

from ..backends.memory import accumulate
from ..design import arm_names
from ..effects.record import Effects, Inference
from ..errors import ValidationError
from ..expr import parse_condition
from ..linalg.anytime import check_av_options
from ..linalg.layout import CoefLayout
from ..linalg.sandwich import (
    ClusterBlock,
    Covariance,
    CovType,
    ScoreAccumulator,
    default_cov_type,
)
from ..linalg.small_sample import ClusterCrossProducts, cluster_cross_products, jackknife_coefs, cr2
from ..linalg.threads import single_blas_thread
from ..linalg.twosls import TwoSLSFit, solve_2sls
from ..validate import check_alpha, check_choice

__all__ = ["LinearModel", "LinearModelResults"]

FitKind = Literal["itt", "iv"]
_SCORE_BLOCK_ROWS = 1 << 14  # cluster order: blocks of whole clusters, sums compress
_NATURAL_BLOCK_ROWS = 1 << 16  # data order: bincount sums, larger blocks amortise them


class LinearModel:
    """Generalized 2SLS with heteroskedasticity- or cluster-robust sandwich covariances.

    OLS for an A/B test, 2SLS for an encouragement design (the assignment instruments the
    treatment received), inverse-propensity weights for an adaptive design, clustered
    covariances for a cluster design; any mix. Covariates enter centred at their (weighted)
    mean and interacted with the arm indicators (Lin 2013), so the arm coefficient is the
    average effect and conditional effects are identified.

    Parameters
    ----------
    cov_type : {"HC0", "HC1", "CR0", "CR1", "CR2", "CR3"}, optional
        Default: ``"HC1"`` without ``cluster_by``; with clusters ``"CR1"``, or with fewer
        than 50 clusters the small-cluster covariance of
        :func:`causalflow.linalg.sandwich.default_cov_type` (whose intervals cover there;
        benchmarks/README.md has the simulation). The covariance of metric k is
        :math:`c\\,A M_k A` with bread :math:`A = (\\hat X'W\\hat X)^{-1}`, meat
        :math:`M_k = \\sum_g S_{gk} S_{gk}'` and small-sample factor c: HC0 1, HC1 n/(n-p),
        CR0 1, CR1 G/(G-1) (n-1)/(n-p) (Stata; R ``sandwich`` ``type="HC1"``). ``"CR2"`` is
        Bell and McCaffrey's (2002) bias-reduced linearisation (cost: an n_g x n_g matrix
        per cluster, refused for very large clusters); ``"CR3"`` the leave-one-cluster-out
        jackknife, from per-cluster cross-products (cost grows with clusters, not rows).
        See :mod:`causalflow.linalg.sandwich` and :mod:`causalflow.linalg.small_sample`.
    inference : {"t", "normal"}
        Reference distribution of fixed-horizon p-values and intervals: t with the
        covariance's degrees of freedom (G - 1 for CR0/CR1/CR3, n - p for HC,
        Bell-McCaffrey / Pustejovsky-Tipton Satterthwaite dof for CR2), or normal.
    av_g, av_planned_n : float, optional
        Tuning of the anytime-valid columns (``av_p_value``, ``av_ci_*``; Lindon et al.,
        arXiv:2210.08589; see :mod:`causalflow.linalg.anytime`): the mixture precision g,
        or the planned sample size (rows; clusters with CR covariances) at which g gives
        the tightest confidence sequence. Default: optimal g at the fitted sample size.

    Notes
    -----
    Estimands: in an A/B test the arm coefficient is the average treatment effect
    (``ATE``; ``CATE`` in a subgroup). In an encouragement design two fits share the
    cross-products: the reduced form gives the intent-to-treat effect (``ITT``: the effect
    of being *assigned / encouraged*, the policy question "what happens if we roll out the
    encouragement?"), and 2SLS gives the local average treatment effect (``LATE``: the
    effect of *taking* the treatment among compliers, Imbens & Angrist 1994; with one-sided
    non-compliance, where controls cannot take the treatment, it is the effect on the
    treated).

    References
    ----------
    Lin, W. (2013). Agnostic notes on regression adjustments to experimental data.
    Annals of Applied Statistics 7(1), 295-318.

    Examples
    --------
    >>> import causalflow as cf
    >>> from causalflow.demo import simulate_store
    >>> df = simulate_store(n=4000, n_regions=80, seed=1)
    >>> model = cf.ExperimentData(df, intent_to_treat="assigned", treated="uses_widget",
    ...                           cluster_by="region").add_metric(
    ...     y=["sales", "orders"], exogenous_covariates=["pre_sales"]).fit(cf.LinearModel)
    >>> model.cov_type, model.fit_kinds
    ('CR1', ('itt', 'iv'))
    >>> list(model.params("iv").index[:3]), list(model.params("itt").index[:2])
    (['Intercept', 'uses_widget[1]', 'pre_sales'], ['Intercept', 'assigned[1]'])
    """

    def __init__(self, cov_type: CovType | None = None, av_g: float | None = None,
                 av_planned_n: float | None = None, *, inference: Literal["t", "normal"] = "t"):
        if cov_type is not None:
            Covariance.of(cov_type)  # a clear error for an unknown type, before any work
        check_av_options(av_g, av_planned_n)
        check_choice("inference", inference, ("t", "normal"))
        self.cov_type = cov_type
        self.av_g = av_g
        self.av_planned_n = av_planned_n
        self.inference = inference

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("av_g", "av_planned_n")
                        if getattr(self, k) is not None)
        extra += "" if self.inference == "t" else f", inference={self.inference!r}"
        return f"LinearModel(cov_type={self.cov_type!r}{extra})"

    def fit_spec(self, spec) -> LinearModelResults:
        data = spec.data
        covariance = Covariance.of(self.cov_type or default_cov_type(data.n_clusters))
        if covariance.clustered and data.cluster_codes is None:
            raise ValidationError(f"cov_type: {covariance.cov_type} needs cluster_by on ExperimentData")
        return LinearModelResults._fit(spec, covariance, self)


@dataclass(frozen=True, slots=True)
class _Group:
    """Metrics that share their complete rows, and their fits."""

    rows: np.ndarray | None  # None: every row
    member: np.ndarray | None  # bool (n,) when rows is not None
    metrics: tuple  # indices into spec.metrics
    mu: np.ndarray  # covariate centring (q,)
    n: int
    n_clusters: int | None
    fits: dict  # "itt" / "iv" -> TwoSLSFit


def estimand_label(kind: str, iv: bool, conditional: bool) -> str:
    """ITT / LATE for an encouragement design's two fits, else ATE (CATE in a subgroup)."""
    if kind == "iv":
        return "LATE"
    if iv:
        return "ITT"
    return "CATE" if conditional else "ATE"


def parse_conditions(condition_on, covariates) -> list:
    """Parse ``condition_on`` (None -> ``[None]``, the average effect) over the covariate columns."""
    if condition_on is None:
        return [None]
    if isinstance(condition_on, str):
        condition_on = [condition_on]
    if not len(condition_on):
        raise ValidationError("condition_on: empty list; omit it for the average effect")
    known = set(covariates)
    parsed = []
    for text in condition_on:
        try:
            cond = parse_condition(text, known_columns=known)
        except ValidationError as exc:
            if "unknown column" not in str(exc):
                raise
            raise ValidationError(f"{exc}. Only covariates of this model can be conditioned on: "
                                  "add the column to exogenous_covariates") from None
        parsed.append(cond)
    if len({c.text for c in parsed}) != len(parsed):
        raise ValidationError("condition_on: a condition is listed twice")
    return parsed


def _integral(value: float):
    """A whole number of degrees of freedom as int (G - 1, n - p); Satterthwaite's stay float."""
    return int(value) if float(value).is_integer() else float(value)


def _len(rows) -> int:
    return (rows.stop - rows.start) if isinstance(rows, slice) else len(rows)


def _missing_groups(outcomes: tuple) -> list[tuple[np.ndarray | None, tuple]]:
    """Group metric indices by their pattern of missing rows."""
    patterns: dict[bytes, list[int]] = {}
    masks: dict[bytes, np.ndarray] = {}
    for k, y in enumerate(outcomes):
        finite = ~np.isnan(y)
        key = b"all" if finite.all() else np.packbits(finite).tobytes()
        patterns.setdefault(key, []).append(k)
        masks[key] = finite
    return [(None if key == b"all" else np.flatnonzero(masks[key]), tuple(ks))
            for key, ks in patterns.items()]


class LinearModelResults:
    """A fitted :class:`LinearModel`: coefficients of every metric, effects on demand.

    Attributes
    ----------
    spec : MetricSpec
    covariance : Covariance, the covariance estimator (``cov_type`` is its name)
    layout : CoefLayout, where each coefficient sits
    names : list of str, the p coefficient names of the reported fit (2SLS in an
        encouragement design: arms named by the ``treated`` column; see :meth:`names_of`)
    inference : Inference, what the effects records use for p-values and intervals
    """

    def __init__(self, spec, covariance: Covariance, estimator, source, groups: list[_Group], layout: CoefLayout):
        self.spec = spec
        self.covariance = covariance
        self.estimator = estimator
        self.layout = layout
        self._source = source
        self._groups = groups
        self.names = self.names_of(self.fit_kinds[-1])
        self.inference = Inference(covariance.cov_type, getattr(estimator, "inference", "t"), layout.p,
                                   getattr(estimator, "av_g", None), getattr(estimator, "av_planned_n", None))
        self._block_cache: dict = {}  # memo of row blocks and per-cluster moments; never changes results

    @property
    def cov_type(self) -> str:
        return self.covariance.cov_type

    @property
    def design(self):
        """The :class:`~causalflow.data.Design` record of the experiment."""
        return self.spec.data.design

    def names_of(self, kind: FitKind) -> list[str]:
        """Coefficient names of one fit: the ITT (reduced form) names its arms by the
        assignment (instrument) column, 2SLS by the treatment received."""
        return self.layout.names(arm_names(self.spec.data, kind), self.spec.covariates.names)

    # -- fitting ---------------------------------------------------------------------
    @classmethod
    def _fit(cls, spec, covariance: Covariance, estimator) -> LinearModelResults:
        source = spec.source()
        layout = CoefLayout(source.n_arms, spec.covariates.q)
        names = layout.names([f"x{j}" for j in range(1, source.n_arms + 1)], spec.covariates.names)
        groups = []
        for rows, metrics in _missing_groups(source.outcomes):
            n = source.n if rows is None else len(rows)
            p = len(names)
            if n <= p:
                raise ValidationError(f"y: metric(s) {[spec.metrics[k] for k in metrics]} have {n} "
                                      f"complete rows for {p} parameters")
            mu = spec.covariates.means(rows, source.weights)
            moments = accumulate(source, rows, mu, metrics)
            fits = {"itt": solve_2sls(moments.reduced_form(), names)}
            if source.iv:
                fits["iv"] = solve_2sls(moments, names)
            n_clusters = None
            if source.clusters is not None:
                codes = source.clusters if rows is None else source.clusters[rows]
                n_clusters = int(np.count_nonzero(np.bincount(codes, minlength=source.n_clusters)))
                if n_clusters < 2:
                    raise ValidationError(f"y: metric(s) {[spec.metrics[k] for k in metrics]} have "
                                          "complete rows in a single cluster")
            member = None
            if rows is not None:
                member = np.zeros(source.n, dtype=bool)
                member[rows] = True
            groups.append(_Group(rows, member, metrics, mu, n, n_clusters, fits))
        return cls(spec, covariance, estimator, source, groups, layout)

    # -- coefficients ------------------------------------------------------------------
    @property
    def metrics(self) -> tuple:
        return self.spec.metrics

    @property
    def fit_kinds(self) -> tuple:
        """``("itt",)``, or ``("itt", "iv")`` for an encouragement design."""
        return ("itt", "iv") if self._source.iv else ("itt",)

    def _check_kind(self, kind) -> str:
        kind = kind or self.fit_kinds[-1]
        if kind not in self.fit_kinds:
            raise ValidationError(f"kind: {kind!r} is not fitted; available: {self.fit_kinds}")
        return kind

    def _fit_of(self, kind: FitKind):
        for g in self._groups:
            for position, k in enumerate(g.metrics):
                yield k, g, g.fits[kind], position

    def params(self, kind: FitKind | None = None) -> pd.DataFrame:
        """Coefficients (p x K frame): 2SLS for an encouragement design unless ``kind="itt"``."""
        kind = self._check_kind(kind)
        out = np.empty((len(self.names), len(self.metrics)))
        for k, _, fit, pos in self._fit_of(kind):
            out[:, k] = fit.coef[:, pos]
        return pd.DataFrame(out, index=self.names_of(kind), columns=list(self.metrics))

    @cached_property
    def _coef_cov(self) -> dict:
        p = len(self.names)
        out = {}
        for kind in self.fit_kinds:
            requests = [(gi, kind, np.eye(p)) for gi in range(len(self._groups))]
            cov, layout, _ = self._contrast_cov(requests)
            per_metric = np.empty((len(self.metrics), p, p))
            for (gi, _, _), (start, m, K) in zip(requests, layout):
                for pos, k in enumerate(self._groups[gi].metrics):
                    idx = start + np.arange(m) * K + pos
                    per_metric[k] = cov[np.ix_(idx, idx)]
            out[kind] = per_metric
        return out

    def cov_params(self, kind: FitKind | None = None) -> dict:
        """Covariance of the coefficients, one (p x p) frame per metric."""
        kind = self._check_kind(kind)
        names = self.names_of(kind)
        return {m: pd.DataFrame(self._coef_cov[kind][k], index=names, columns=names)
                for k, m in enumerate(self.metrics)}

    def std_errors(self, kind: FitKind | None = None) -> pd.DataFrame:
        """Standard errors of the coefficients (p x K frame)."""
        kind = self._check_kind(kind)
        se = np.sqrt(np.einsum("kii->ik", self._coef_cov[kind]))
        return pd.DataFrame(se, index=self.names_of(kind), columns=list(self.metrics))

    # -- the contrast pass -------------------------------------------------------------
    def _contrast_cov(self, requests: list) -> tuple[np.ndarray, list, np.ndarray]:
        """Joint covariance of the contrasts ``requests = [(group, kind, D (m x p)), ...]``.

        Returns the (M x M) covariance over columns ordered request by request, then
        contrast, then metric of the group, the layout [(start, m, K), ...], and the (M,)
        degrees of freedom of each column's t reference.
        """
        layout, start = [], 0
        for gi, _, D in requests:
            m, K = D.shape[0], len(self._groups[gi].metrics)
            layout.append((start, m, K))
            start += m * K
        dof = np.empty(start)
        for (gi, _, _), (s, m, K) in zip(requests, layout):
            g = self._groups[gi]
            dof[s:s + m * K] = self.covariance.dof(g.n, self.layout.p, g.n_clusters)
        if self.covariance.meat == "jackknife":
            gram = self._jackknife_gram(requests, layout)
        elif self.covariance.meat == "bias_reduced":
            gram, dof = self._bias_reduced_gram(requests, layout)
        else:
            gram = self._score_gram(requests, layout, start)
        return self._scaled(gram, requests, layout), layout, dof

    def _score_gram(self, requests: list, layout: list, total: int) -> np.ndarray:
        """The uncorrected meat of the contrasts from one pass over the row scores."""
        source = self._source
        clustered = self.covariance.clustered
        acc = ScoreAccumulator(total, source.n_clusters if clustered else None)
        partial = any(self._groups[gi].rows is not None for gi, _, _ in requests)
        influence = [self._groups[gi].fits[kind].influence @ D.T for gi, kind, D in requests]
        inputs = len(self.metrics) + self.spec.covariates.q + 4
        order = "clustered" if clustered and total > 1.5 * inputs else "natural"
        with single_blas_thread():
            acc = self._score_pass(requests, layout, influence, acc, partial, order)
            return acc.gram()

    def _jackknife_gram(self, requests: list, layout: list) -> np.ndarray:
        r"""Uncorrected CR3 meat of the contrasts: :math:`\sum_g t_g t_g'` with
        :math:`t_g = \mathrm{vec}(D(b_{(-g)} - b))` over every request (clusters indexed
        globally, so contrasts of different metric groups and fits get their joint
        covariance); the factor (G - 1)/G is applied by :meth:`_scaled`."""
        G = self._source.n_clusters
        T = np.zeros((G, layout[-1][0] + layout[-1][1] * layout[-1][2]))
        for (gi, kind, D), (s, m, K) in zip(requests, layout):
            cp = self._cluster_moments(gi)
            if kind == "itt":
                cp = ClusterCrossProducts(cp.zwz, None, cp.zwy, cp.n)
            fit = self._groups[gi].fits[kind]
            jack = jackknife_coefs(cp, names=self.names_of(kind))
            shift = np.einsum("rp,gpk->grk", D, jack - fit.coef[None])
            T[:, s:s + m * K] = np.nan_to_num(shift.reshape(G, m * K), nan=0.0)  # clusters without rows
        return T.T @ T

    def _cluster_moments(self, gi: int) -> ClusterCrossProducts:
        """Per-cluster cross-products of a metric group's rows (one pass, cached)."""
        key = ("cluster_moments", gi)
        if key not in self._block_cache:
            g, source = self._groups[gi], self._source
            total = None
            buffer = source.buffer(_NATURAL_BLOCK_ROWS, len(g.metrics))
            with single_blas_thread():
                for rows in source.row_blocks(g.rows, _NATURAL_BLOCK_ROWS):
                    Z, X, Y, w = source.block(rows, g.mu, g.metrics, buffer)
                    part = cluster_cross_products(Z, X, Y, w, source.clusters[rows], source.n_clusters)
                    total = part if total is None else total + part
            self._block_cache[key] = total
        return self._block_cache[key]

    def _bias_reduced_gram(self, requests: list, layout: list) -> tuple[np.ndarray, np.ndarray]:
        """CR2: the Gram matrix of the Bell-McCaffrey adjusted cluster sums of every request
        (clusters indexed globally, so requests of different groups and fits get their joint
        covariance), and each column's Satterthwaite degrees of freedom
        (:func:`causalflow.linalg.small_sample.cr2`). Needs the rows: one gather per group."""
        source = self._source
        total = layout[-1][0] + layout[-1][1] * layout[-1][2]
        T = np.zeros((source.n_clusters, total))
        dof = np.empty(total)
        rows_of = {}
        with single_blas_thread():
            for (gi, kind, D), (s, m, K) in zip(requests, layout):
                g = self._groups[gi]
                if gi not in rows_of:
                    rows = np.arange(source.n) if g.rows is None else g.rows
                    rows_of[gi] = (rows, source.block(rows, g.mu, g.metrics))
                rows, (Z, X, Y, w) = rows_of[gi]
                fit = g.fits[kind]
                E = Y - (X if kind == "iv" else Z) @ fit.coef
                out = cr2(Z, w, E, source.clusters[rows], source.n_clusters,
                          fit.pi if kind == "iv" else None, fit.bread, D)
                T[:, s:s + m * K] = out.sums
                dof[s:s + m * K] = np.repeat(out.dof, K)
        return T.T @ T, dof

    @cached_property
    def _cluster_order(self) -> np.ndarray:
        return np.argsort(self._source.clusters, kind="stable")

    def _blocks(self, order: Literal["natural", "clustered"]) -> list:
        """Row blocks of the score passes, with their clusters (built once per order).

        In data order the clusters of a block are scattered: each block's cluster sums are
        one ``bincount`` per score column over its codes. In cluster order a block holds
        whole clusters and the sums compress (a cached sparse indicator), but the rows must
        be gathered: n x (K + q) values. The cheaper one is chosen per pass.
        """
        if order not in self._block_cache:
            clusters = self._source.clusters if self.covariance.clustered else None
            if order == "clustered":
                blocks = [(rows, ClusterBlock(clusters[rows]), None)
                          for rows in self._source.row_blocks(self._cluster_order, _SCORE_BLOCK_ROWS)]
            else:
                blocks = [(rows, None, None if clusters is None else clusters[rows])
                          for rows in self._source.row_blocks(None, _NATURAL_BLOCK_ROWS)]
            self._block_cache[order] = blocks
        return self._block_cache[order]

    def _score_pass(self, requests, layout, influence, acc, partial, order):
        total = acc.n_columns
        blocks = self._blocks(order)
        block_rows = max(_len(rows) for rows, _, _ in blocks)
        buffers = {}
        for rows, clusters, codes in blocks:
            nb = _len(rows)
            scores = np.zeros((nb, total)) if partial else np.empty((nb, total))
            built = {}
            for r, (gi, kind, _) in enumerate(requests):
                g = self._groups[gi]
                if gi not in built:
                    sel = None
                    sub = rows
                    if g.rows is not None:
                        index = np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows
                        sel = g.member[index]
                        sub = index[sel]
                    if gi not in buffers:
                        buffers[gi] = self._source.buffer(block_rows, len(g.metrics))
                    built[gi] = (sel, self._source.block(sub, g.mu, g.metrics, buffers[gi]))
                sel, (Z, X, Y, w) = built[gi]
                fit: TwoSLSFit = g.fits[kind]
                E = Y - (X if kind == "iv" else Z) @ fit.coef
                U = Z @ influence[r]
                if w is not None:
                    U *= w[:, None]
                s, m, K = layout[r]
                if sel is None:  # write the products straight into their columns
                    np.multiply(U[:, :, None], E[:, None, :], out=scores[:, s:s + m * K].reshape(len(Z), m, K))
                else:
                    scores[sel, s:s + m * K] = (U[:, :, None] * E[:, None, :]).reshape(len(Z), m * K)
            acc.add(scores, clusters, codes)
        return acc

    def _scaled(self, gram, requests, layout) -> np.ndarray:
        factor = np.empty(gram.shape[0])
        for (gi, _, _), (s, m, K) in zip(requests, layout):
            g = self._groups[gi]
            factor[s:s + m * K] = self.covariance.factor(g.n, self.layout.p, g.n_clusters)
        root = np.sqrt(factor)
        return gram * np.outer(root, root)

    # -- effects -----------------------------------------------------------------------
    def infer_effect(self, condition_on=None, alpha: float = 0.05):
        """Effects of every arm vs control on every metric, overall or in subgroups.

        Each effect is a delta-vector contrast of the coefficients b_k of metric k:
        estimate :math:`d'b_k`, variance :math:`d'V_kd`. The average effect of arm j is
        :math:`d = e_{D_j}` (covariates are centred); in a subgroup S,
        :math:`d = e_{D_j} + \\sum_l \\bar x_{S,l}\\, e_{D_j \\times X_l}` with
        :math:`\\bar x_S` the (weighted) mean of the centred covariates over S, taken as
        fixed (a conditional-on-covariates effect). The joint covariance of every effect
        of the call, across arms, conditions, estimands and metrics, is kept on the result.

        Parameters
        ----------
        condition_on : str or list of str, optional
            Subgroups in the safe expression language of :mod:`causalflow.expr`, over the
            covariates' columns.
        alpha : float
            1 - confidence level of the intervals (t quantiles with each effect's degrees
            of freedom, or normal with ``LinearModel(inference="normal")``).

        Returns
        -------
        Effects

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 2000), "x": rng.normal(size=2000)})
        >>> df["y"] = 1 + (0.5 + 0.5 * df.x) * df.t + df.x + rng.normal(size=2000)
        >>> model = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.LinearModel)
        >>> frame = model.infer_effect(condition_on=["x > 1", "x < -1"]).to_frame()
        >>> frame[["condition", "estimand"]].values.tolist()
        [['x > 1', 'CATE'], ['x < -1', 'CATE']]
        >>> bool(frame.estimate[0] > frame.estimate[1])  # the effect grows with x
        True
        """
        alpha = check_alpha(alpha)
        conditions = self._parse_conditions(condition_on)
        originals = self.spec.covariates.original() if conditions[0] is not None else None
        points = [("all" if c is None else c.text, c is not None,
                   lambda g, c=c: self._shift(c, g, originals)) for c in conditions]
        return self._effects_at(points, alpha, [None if c is None else c.text for c in conditions])

    @property
    def covariates(self):
        """The covariates of the fit (:class:`~causalflow.design.Covariates`)."""
        return self.spec.covariates

    def effects_at_means(self, label: str, means: np.ndarray, alpha: float = 0.05) -> Effects:
        """Effects of every arm x metric at given (uncentred) covariate means, e.g. of a
        target population (the :class:`~causalflow.effects.record.ContrastModel` protocol;
        ``Effects.project`` onto a table uses it)."""
        alpha = check_alpha(alpha)
        return self._effects_at([(label, True, lambda g: (means - g.mu, g.n))], alpha, [label])

    def _shift(self, cond, g: _Group, originals) -> tuple[np.ndarray, int]:
        """Centred covariate mean over the rows of a parsed condition (None: all rows) of a
        metric group, and the number of those rows."""
        if cond is None:
            return np.zeros(self.layout.q), g.n
        mask = cond.evaluate(originals)
        if g.member is not None:
            mask &= g.member
        size = int(mask.sum())
        if size == 0:
            raise ValidationError(f"condition_on {cond.text!r}: selects no rows"
                                  + ("" if g.member is None else " with this metric observed"))
        return self.spec.covariates.means(np.flatnonzero(mask), self._source.weights) - g.mu, size

    def _effects_at(self, points: list, alpha: float, conditions: list) -> Effects:
        """Effects of every arm x metric at covariate points.

        ``points`` holds (label, conditional, locate) with ``locate(group) -> (xbar, n)``: the
        centred covariate means that define the delta vectors of that metric group, and the
        number of rows the effect describes.
        """
        J = self.layout.n_arms
        requests, sizes = [], []
        for gi, g in enumerate(self._groups):
            deltas, group_sizes = [], []
            for _, _, locate in points:
                xbar, size = locate(g)
                deltas.append(self.layout.effects(xbar))
                group_sizes += [size] * J
            for kind in self.fit_kinds:
                requests.append((gi, kind, np.vstack(deltas)))
                sizes.append(group_sizes)
        cov, layout, dof = self._contrast_cov(requests)
        records, index, keys = [], [], []
        for (gi, kind, D), group_sizes, (s, _, K) in zip(requests, sizes, layout):
            g = self._groups[gi]
            estimates = D @ g.fits[kind].coef  # (m, K)
            av_dof = self.covariance.dof(g.n, self.layout.p, g.n_clusters)
            for c_i, (label, conditional, _) in enumerate(points):
                for j in range(J):
                    row = c_i * J + j
                    for pos, k in enumerate(g.metrics):
                        column = s + row * K + pos
                        records.append(dict(metric=self.metrics[k], arm=self.spec.data.arms[j + 1],
                                            condition=label, estimand=self._estimand(kind, conditional),
                                            estimate=float(estimates[row, pos]), n=group_sizes[row],
                                            dof=_integral(dof[column]), av_dof=av_dof, n_clusters=g.n_clusters))
                        keys.append((k, j, c_i, kind))
                        index.append(column)
        order = sorted(range(len(records)), key=keys.__getitem__)
        index = np.asarray(index)[order]
        return Effects._from_fit([records[i] for i in order], cov[np.ix_(index, index)], alpha, self,
                                 conditions, self.inference)

    def control_means(self, effects: Effects) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Per effect of ``effects`` (from this model): the adjusted control mean
        :math:`\hat\mu = d_\mu'b` in its condition, :math:`Var(\hat\mu)` and
        :math:`Cov(\hat\tau, \hat\mu)` from one contrast pass (see
        :func:`causalflow.effects.relative.relative_effects`)."""
        group_of = {k: gi for gi, g in enumerate(self._groups) for k in g.metrics}
        metric_index = {m: k for k, m in enumerate(self.metrics)}
        known = set(self.spec.covariates.sources)
        originals = None
        plan: dict = {}  # (group, kind) -> {condition: (row offset, parsed)}
        for r in effects.records:
            kind = "iv" if r["estimand"] == "LATE" else "itt"
            conds = plan.setdefault((group_of[metric_index[r["metric"]]], kind), {})
            if r["condition"] in conds:
                continue
            parsed = None
            if r["condition"] != "all":
                try:
                    parsed = parse_condition(r["condition"], known_columns=known)
                except ValidationError:
                    raise ValidationError(
                        f"relative: effect of {r['condition']!r} is a projection, not a condition; take "
                        "relative() of the conditional effects it combines") from None
                if originals is None:
                    originals = self.spec.covariates.original()
            conds[r["condition"]] = (len(conds) * (self.layout.n_arms + 1), parsed)
        requests = []
        for (gi, kind), conds in plan.items():
            rows = []
            for _, parsed in conds.values():
                xbar, _ = self._shift(parsed, self._groups[gi], originals)
                rows += [self.layout.level(xbar)[None, :], self.layout.effects(xbar)]
            requests.append((gi, kind, np.vstack(rows)))
        cov, layout, _ = self._contrast_cov(requests)
        where = {key: i for i, key in enumerate(plan)}
        m = len(effects.records)
        tau, mu, v_mm, v_tm = (np.empty(m) for _ in range(4))
        for i, r in enumerate(effects.records):
            k = metric_index[r["metric"]]
            gi = group_of[k]
            kind = "iv" if r["estimand"] == "LATE" else "itt"
            ri = where[(gi, kind)]
            D = requests[ri][2]
            start, _, K = layout[ri]
            pos = self._groups[gi].metrics.index(k)
            base = plan[(gi, kind)][r["condition"]][0]
            j = self.spec.data.arms.index(r["arm"])
            coef = self._groups[gi].fits[kind].coef[:, pos]
            i_mu, i_tau = start + base * K + pos, start + (base + j) * K + pos
            tau[i], mu[i] = D[base + j] @ coef, D[base] @ coef
            v_mm[i], v_tm[i] = cov[i_mu, i_mu], cov[i_tau, i_mu]
        if not np.allclose(tau, effects.estimate, rtol=1e-9, atol=1e-12 * (1 + np.abs(tau).max())):
            raise ValidationError("relative: these effects are not the model's contrasts (projected "
                                  "or modified); call relative() on effects from infer_effect")
        return mu, v_mm, v_tm

    def _estimand(self, kind: str, conditional: bool) -> str:
        return estimand_label(kind, self._source.iv, conditional)

    infer_effects = infer_effect

    def _parse_conditions(self, condition_on) -> list:
        return parse_conditions(condition_on, self.spec.covariates.sources)

    def __repr__(self) -> str:
        return (f"LinearModelResults({len(self.metrics)} metric(s), {len(self.names)} parameters, "
                f"cov_type={self.cov_type!r}, fits={self.fit_kinds})")
