"""``LinearModel``: the one generalized 2SLS solver for every design, all metrics at once.

A fit walks the rows twice at most: one pass accumulates the weighted cross-products
Z'WZ, Z'WX, Z'WY of every metric (:mod:`causalflow.linalg.twosls`), and each
``infer_effect`` call makes one pass that forms the cluster (or row) sums of the
influence of every requested contrast on every metric (:mod:`causalflow.linalg.sandwich`).
Metrics with the same missing rows share all work; a metric with missing values uses its
complete rows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd

from ..backends.memory import accumulate
from ..design import arm_names
from ..effects.record import ESTIMAND_NOTES, Effects, Inference
from ..effects.render import plain
from ..errors import ValidationError
from ..expr import parse_condition
from ..linalg.anytime import check_av_options
from ..linalg.compliers import WaldRatio, arm_sums, cluster_arm_sums, wald_theta
from ..linalg.layout import CoefLayout
from ..linalg.sandwich import (
    ClusterBlock,
    Covariance,
    CovType,
    ScoreAccumulator,
    default_cov_type,
)
from ..linalg.small_sample import ClusterCrossProducts, cluster_cross_products, cr2, design_dof, jackknife_coefs
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
        covariance's degrees of freedom (n - p for HC, G - 1 for CR0/CR1, per contrast the
        Bell-McCaffrey / Pustejovsky-Tipton Satterthwaite dof for CR2 and the Bell-McCaffrey
        dof of :func:`causalflow.linalg.small_sample.design_dof` for CR3), or normal.
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
        if covariance.clustered and data.cluster_by is None:
            raise ValidationError(f"cov_type: {covariance.cov_type} needs cluster_by on ExperimentData")
        if getattr(data, "engine", None) is not None:  # a warehouse table: the passes run in its engine
            return spec.engine_results(covariance, self)
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


#: the estimands ``infer_effect(estimands=...)`` knows (API.md section 3)
ESTIMANDS = ("ITT", "LATE", "ATE")


def estimand_label(kind: str, iv: bool, conditional: bool) -> str:
    """The default estimands' labels: ITT / LATE for an encouragement design's two fits,
    else ATE (CATE in a subgroup)."""
    if kind == "iv":
        return "LATE"
    if iv:
        return "ITT"
    return "CATE" if conditional else "ATE"


def check_estimands(estimands, iv: bool) -> tuple:
    """The estimands of one ``infer_effect`` call, checked against the design.

    Default: what the design implies: ``("ITT", "LATE")`` in an encouragement design,
    ``("ATE",)`` otherwise. ``"ATE"`` in an encouragement design is the average effect of
    taking the treatment over all units, an extrapolation from the compliers (see
    :meth:`LinearModelResults.infer_effect`).

    >>> check_estimands(None, iv=True), check_estimands("ate", iv=True)
    (('ITT', 'LATE'), ('ATE',))
    """
    if estimands is None:
        return ("ITT", "LATE") if iv else ("ATE",)
    if isinstance(estimands, str):
        estimands = [estimands]
    try:
        given = list(estimands)
    except TypeError:
        raise ValidationError(f"estimands: expected a name or a list of names {list(ESTIMANDS)}, "
                              f"got {estimands!r}") from None
    if not given:
        raise ValidationError("estimands: empty list; omit it for the design's default "
                              f"({list(check_estimands(None, iv))})")
    out = []
    for name in given:
        if not isinstance(name, str) or name.strip().upper() not in ESTIMANDS:
            hint = (" (a conditional average effect is 'ATE' with condition_on)"
                    if isinstance(name, str) and name.strip().upper() == "CATE" else "")
            raise ValidationError(f"estimands: {name!r} is not one of {list(ESTIMANDS)}{hint}")
        out.append(name.strip().upper())
    if len(set(out)) != len(out):
        raise ValidationError(f"estimands: a name is listed twice in {given}")
    if not iv and out != ["ATE"]:
        bad = [e for e in out if e != "ATE"]
        raise ValidationError(f"estimands: {bad} need an encouragement design (treated differs from "
                              "intent_to_treat); in this design every unit receives its assigned arm, so "
                              "the effect of the assignment is the 'ATE'")
    return tuple(out)


def estimand_name(estimand: str, conditional: bool) -> str:
    """The label of a row: the ATE in a subgroup is the CATE; ITT and LATE keep their names
    (a LATE in a subgroup is its compliers' average, the CLATE)."""
    return "CATE" if estimand == "ATE" and conditional else estimand


def estimand_notes(labels, iv: bool, covariates: bool, diagnostic: str = "") -> tuple:
    """One line per estimand label of a record saying what it is; in an encouragement design
    the LATE's population and the ATE's assumption (with ``diagnostic`` appended).

    >>> [line.split(":")[0] for line in estimand_notes(["ITT", "LATE", "ITT"], iv=True, covariates=False)]
    ['ITT', 'LATE']
    """
    out = []
    for label in dict.fromkeys(labels):
        if label == "LATE":
            text = ("LATE: effect of taking the treatment among compliers (units that take it because "
                    "they are encouraged; Imbens and Angrist 1994)")
            if covariates:
                text += ("; with covariates, the 2SLS effect at the compliers' covariate means (Wald "
                         "ratios, Abadie 2003; their estimation is in the standard error)")
            text += "; in a condition, among its compliers"
        elif label in ("ATE", "CATE") and iv:
            text = (f"{label}: effect of taking the treatment averaged over all units"
                    + (" of the condition" if label == "CATE" else "")
                    + ", extrapolated from the compliers: assumes the compliers' effect at given "
                      "covariates holds for every unit with those covariates (Angrist and "
                      "Fernandez-Val 2013; Aronow and Carnegie 2013)")
            if not covariates:
                text += "; without covariates, a constant effect: it equals the LATE"
            elif diagnostic:
                text += "; " + diagnostic
        else:
            text = ESTIMAND_NOTES.get(label)
        if text:
            out.append(text)
    return tuple(out)


@dataclass(frozen=True)
class _Ratio:
    """A Wald ratio of one metric group (:mod:`causalflow.linalg.compliers`): the compliers
    of arm ``arm`` (1..J) within ``condition`` (text; None: all rows), and what is averaged:
    ``"compliers"`` the centred covariates (V = xc D_j, T = D_j), ``"untreated"`` the
    outcomes of the group's metrics untreated (V = y (1 - D), T = 1 - D)."""

    group: int
    arm: int
    condition: str | None
    what: Literal["compliers", "untreated"]
    parsed: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class _Term:
    """An estimated ratio in contrast row ``row``. With ``coef`` (a slice of coefficients)
    the row's delta vector holds the ratio's estimate theta in those columns (the
    compliers' covariate shift on arm j's interactions), and the term adds what estimating
    theta adds: influence ``psi' b[coef]``, and theta recomputed in the jackknife. With
    ``coef=None`` the row's value is ``D_row b + theta_k`` (one ratio per metric)."""

    row: int
    ratio: _Ratio
    coef: slice | None


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
        """Joint covariance of the contrasts ``requests = [(group, kind, D (m x p)[, terms]), ...]``.

        ``terms`` (:class:`_Term`, optional) add estimated Wald ratios to some rows (the
        compliers' covariate means of a LATE, their untreated mean): their influence is
        added to each row's score before the cluster sums (HC, CR0, CR1), and the CR3
        jackknife recomputes them without each cluster. CR2 does not cover them.

        Returns the (M x M) covariance over columns ordered request by request, then
        contrast, then metric of the group, the layout [(start, m, K), ...], and the (M,)
        degrees of freedom of each column's t reference.
        """
        requests = [r if len(r) == 4 else (*r, ()) for r in requests]
        if self.covariance.meat == "bias_reduced" and any(terms for *_, terms in requests):
            raise ValidationError(
                "cov_type: 'CR2' does not cover effects that average over estimated complier means "
                "(the LATE with covariates sits at the compliers' covariate means; relative() of a LATE "
                "divides by the compliers' untreated mean): the Bell-McCaffrey adjustment is defined for "
                "regression residuals only. Use cov_type='CR3' (the default below 50 clusters: its "
                "jackknife recomputes the complier means without each cluster) or 'CR1', or "
                "estimands=['ITT', 'ATE'] for effects at the population's covariate means")
        layout, start = [], 0
        for gi, _, D, _ in requests:
            m, K = D.shape[0], len(self._groups[gi].metrics)
            layout.append((start, m, K))
            start += m * K
        dof = np.empty(start)
        for (gi, *_), (s, m, K) in zip(requests, layout):
            g = self._groups[gi]
            dof[s:s + m * K] = self.covariance.dof(g.n, self.layout.p, g.n_clusters)
        if self.covariance.meat == "jackknife":
            gram = self._jackknife_gram(requests, layout)
            dof = self._jackknife_dof(requests, layout)
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
        partial = any(self._groups[gi].rows is not None for gi, *_ in requests)
        influence = [self._groups[gi].fits[kind].influence @ D.T for gi, kind, D, _ in requests]
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
        for (gi, kind, D, terms), (s, m, K) in zip(requests, layout):
            cp = self._cluster_moments(gi)
            if kind == "itt":
                cp = ClusterCrossProducts(cp.zwz, None, cp.zwy, cp.n)
            fit = self._groups[gi].fits[kind]
            jack = jackknife_coefs(cp, names=self.names_of(kind))
            shift = np.einsum("rp,gpk->grk", D, jack - fit.coef[None])
            for term in terms:  # the ratio too is recomputed without the cluster, exactly
                change = self._wald_jackknife(term.ratio) - self._wald(term.ratio).theta  # (G, L)
                if term.coef is None:
                    shift[:, term.row] += change
                else:  # D holds theta: D_(-g) b_(-g) - D b = D (b_(-g) - b) + (theta_(-g) - theta)' b_(-g)
                    shift[:, term.row] += np.einsum("gl,glk->gk", change, jack[:, term.coef])
            T[:, s:s + m * K] = np.nan_to_num(shift.reshape(G, m * K), nan=0.0)  # clusters without rows
        return T.T @ T

    def _jackknife_dof(self, requests: list, layout: list) -> np.ndarray:
        """CR3's t reference: per contrast the effective number of clusters
        (:func:`causalflow.linalg.small_sample.design_dof`, the Bell-McCaffrey dof; design-only, from the per-cluster
        cross-products; a LATE's contrast sits at the estimated complier means)."""
        dof = np.empty(layout[-1][0] + layout[-1][1] * layout[-1][2])
        for (gi, kind, D, _), (s, m, K) in zip(requests, layout):
            fit = self._groups[gi].fits[kind]
            nu = design_dof(self._cluster_moments(gi), fit.pi if kind == "iv" else None, fit.bread, D)
            dof[s:s + m * K] = np.repeat(nu, K)
        return dof

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
            for (gi, kind, D, _), (s, m, K) in zip(requests, layout):
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

    # -- the compliers: Wald ratios (causalflow.linalg.compliers) -----------------------
    def _condition_mask(self, parsed) -> np.ndarray | None:
        """Rows (bool, n) of a parsed condition; None for all rows (cached by text)."""
        if parsed is None:
            return None
        key = ("condition", parsed.text)
        if key not in self._block_cache:
            self._block_cache[key] = np.asarray(parsed.evaluate(self.spec.covariates.original()), dtype=bool)
        return self._block_cache[key]

    def _ratio_rows(self, ratio: _Ratio, rows) -> tuple:
        """(V, T, in_arm, in_control, w) of a ratio on rows of its group (index array or slice)."""
        source, g = self._source, self._groups[ratio.group]
        assign = source.assign[rows]
        in_arm, in_control = assign == ratio.arm, assign == 0
        mask = self._condition_mask(ratio.parsed)
        if mask is not None:
            in_arm, in_control = in_arm & mask[rows], in_control & mask[rows]
        if ratio.what == "compliers":
            T = source.take_up(ratio.arm, rows)
            V = self.spec.covariates.raw(rows)
            V -= g.mu
            V *= T[:, None]
        else:
            T = source.untreated(rows)
            V = np.column_stack([source.outcomes[k][rows] for k in g.metrics]) * T[:, None]
        return V, T, in_arm, in_control, (None if source.weights is None else source.weights[rows])

    def _ratio_what(self, ratio: _Ratio) -> str:
        arm = self.spec.data.arms[ratio.arm]
        where = "" if ratio.condition is None else f" in condition {ratio.condition!r}"
        if ratio.what == "compliers":
            return f"LATE of arm {arm!r}{where} (the compliers' covariate means)"
        return f"relative LATE of arm {arm!r}{where} (the compliers' untreated mean)"

    def _wald(self, ratio: _Ratio) -> WaldRatio:
        """The ratio's estimate (one pass over its group's rows, cached)."""
        key = ("wald", ratio)
        if key not in self._block_cache:
            g, total = self._groups[ratio.group], 0.0
            with single_blas_thread():
                for rows in self._source.row_blocks(g.rows, _NATURAL_BLOCK_ROWS):
                    total = total + arm_sums(*self._ratio_rows(ratio, rows))
            self._block_cache[key] = WaldRatio.from_sums(total, self._ratio_what(ratio))
        return self._block_cache[key]

    def _wald_jackknife(self, ratio: _Ratio) -> np.ndarray:
        """(G, L) the ratio without each cluster, exactly, from per-cluster sums (CR3)."""
        key = ("wald_jackknife", ratio)
        if key not in self._block_cache:
            source, g = self._source, self._groups[ratio.group]
            total = None
            for rows in source.row_blocks(g.rows, _NATURAL_BLOCK_ROWS):
                part = cluster_arm_sums(*self._ratio_rows(ratio, rows), source.clusters[rows], source.n_clusters)
                total = part if total is None else total + part
            self._block_cache[key] = self._wald_jackknife_from(ratio, total)
        return self._block_cache[key]

    def _wald_jackknife_from(self, ratio: _Ratio, total: np.ndarray) -> np.ndarray:
        """(G, L) the ratio without each cluster, from its per-cluster arm sums (G, 2, 2 + L)."""
        deleted = total.sum(axis=0)[None] - total
        theta, first = wald_theta(deleted)
        scale = max(1.0, float(np.abs(self._wald(ratio).sums[:, 1] / self._wald(ratio).weight).max()))
        bad = ~((deleted[:, :, 0] > 0).all(axis=1) & (np.abs(first) > 1e-12 * scale))
        if bad.any():
            cluster = int(np.flatnonzero(bad)[0])
            raise ValidationError(
                f"cov_type CR3: {self._ratio_what(ratio)}: without cluster {cluster} (code of cluster_by) "
                "an arm has no rows or no compliers, so the jackknife cannot recompute the complier "
                "means; use cov_type='CR1' or a coarser condition")
        return theta

    def _values(self, gi: int, kind: str, D: np.ndarray, terms=()) -> np.ndarray:
        """(m, K) values of a request: D b plus its ratio terms."""
        out = D @ self._groups[gi].fits[kind].coef
        for term in terms:
            if term.coef is None:
                out[term.row] += self._wald(term.ratio).theta
        return out

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
            for r, (gi, kind, _, terms) in enumerate(requests):
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
                    built[gi] = (sel, sub, self._source.block(sub, g.mu, g.metrics, buffers[gi]))
                sel, sub, (Z, X, Y, w) = built[gi]
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
                for term in terms:  # + the influence of the estimated ratio on the row's value
                    psi = self._wald(term.ratio).influence(*self._ratio_rows(term.ratio, sub))
                    part = psi if term.coef is None else psi @ fit.coef[term.coef]
                    columns = slice(s + term.row * K, s + (term.row + 1) * K)
                    if sel is None:
                        scores[:, columns] += part
                    else:
                        scores[sel, columns] += part
            acc.add(scores, clusters, codes)
        return acc

    def _scaled(self, gram, requests, layout) -> np.ndarray:
        factor = np.empty(gram.shape[0])
        for (gi, *_), (s, m, K) in zip(requests, layout):
            g = self._groups[gi]
            factor[s:s + m * K] = self.covariance.factor(g.n, self.layout.p, g.n_clusters)
        root = np.sqrt(factor)
        return gram * np.outer(root, root)

    # -- effects -----------------------------------------------------------------------
    def infer_effect(self, condition_on=None, alpha: float = 0.05, estimands=None):
        r"""Effects of every arm vs control on every metric, overall or in subgroups.

        Each effect is a delta-vector contrast of the coefficients b_k of metric k:
        estimate :math:`d'b_k`, variance :math:`d'V_kd`. The average effect of arm j is
        :math:`d = e_{D_j}` (covariates are centred); in a subgroup S,
        :math:`d = e_{D_j} + \sum_l \bar x_{S,l}\, e_{D_j \times X_l}` with
        :math:`\bar x_S` the (weighted) mean of the centred covariates over S, taken as
        fixed (a conditional-on-covariates effect). The joint covariance of every effect
        of the call, across arms, conditions, estimands and metrics, is kept on the result.

        Estimands (``estimands=``; default: what the design implies, ``["ATE"]`` in an A/B
        test, ``["ITT", "LATE"]`` in an encouragement design):

        * ``"ATE"`` (``CATE`` in a subgroup): the average effect at the covariate means of
          all units (of the subgroup). In an encouragement design it is the 2SLS effect of
          *taking* the treatment there: an extrapolation from the compliers, which assumes
          that the compliers' effect at given covariates holds for every unit with those
          covariates (Angrist and Fernandez-Val 2013; Aronow and Carnegie 2013). It is
          reported only when asked for; the footer gives the largest standardised
          difference between the compliers' and the population's covariate means
          (:meth:`compliers`), the diagnostic of that step.
        * ``"ITT"`` (encouragement designs): the effect of being assigned (encouraged),
          the reduced form at the covariate means.
        * ``"LATE"`` (encouragement designs): the compliers' average effect of taking the
          treatment (Imbens and Angrist 1994), with or without covariates. Without
          covariates it is the 2SLS arm coefficient (the Wald ratio). With covariates it is
          the Lin-interacted 2SLS effect at the compliers' covariate means,
          :math:`d = e_{D_j} + \bar x_C\, e_{D_j \times X}` with :math:`\bar x_C` the Wald
          ratio :math:`(E_w[x D_j|Z=j] - E_w[x D_j|Z=0]) / (E_w[D_j|Z=j] - E_w[D_j|Z=0])`
          (Abadie 2003; :mod:`causalflow.linalg.compliers`), centred like the covariates.
          Its estimation is in the standard error: the ratio's influence on each row is
          added to the row's score before the cluster sums (HC0/HC1/CR0/CR1), and the CR3
          jackknife recomputes the ratio without each cluster (exactly, from per-cluster
          sums). CR2's bias-reduced adjustment does not cover it: a ValidationError names
          the alternatives. In a subgroup it averages over the subgroup's compliers (the
          CLATE); with several arms, over arm j's own compliers (its encouragement vs
          control). With weights, the ratios use weighted means.

        Parameters
        ----------
        condition_on : str or list of str, optional
            Subgroups in the safe expression language of :mod:`causalflow.expr`, over the
            covariates' columns.
        alpha : float
            1 - confidence level of the intervals (t quantiles with each effect's degrees
            of freedom, or normal with ``LinearModel(inference="normal")``).
        estimands : str or list of str, optional
            Any of ``"ITT"``, ``"LATE"``, ``"ATE"`` (see above); the rows of one metric, arm
            and condition follow this order.

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

        An encouragement design where compliers have larger x and the effect grows with x:

        >>> n = 40_000
        >>> enc = pd.DataFrame({"z": rng.integers(0, 2, n), "x": rng.normal(size=n)})
        >>> enc["d"] = enc.z * (rng.random(n) < 1 / (1 + np.exp(-2 * enc.x)))
        >>> enc["y"] = 1 + (1 + 2 * enc.x) * enc.d + enc.x + rng.normal(size=n)
        >>> model = cf.ExperimentData(enc, intent_to_treat="z", treated="d").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.LinearModel)
        >>> model.infer_effect(estimands=["LATE", "ATE"]).to_frame()[["estimand", "estimate"]].round(1).values.tolist()
        [['LATE', 2.2], ['ATE', 1.0]]
        """
        alpha = check_alpha(alpha)
        estimands = check_estimands(estimands, self._source.iv)
        conditions = self._parse_conditions(condition_on)
        originals = self.spec.covariates.original() if conditions[0] is not None else None
        points = [("all" if c is None else c.text, c is not None, c,
                   lambda g, c=c: self._shift(c, g, originals)) for c in conditions]
        return self._effects_at(points, alpha, [None if c is None else c.text for c in conditions], estimands)

    @property
    def covariates(self):
        """The covariates of the fit (:class:`~causalflow.design.Covariates`)."""
        return self.spec.covariates

    def effects_at_means(self, label: str, means: np.ndarray, alpha: float = 0.05,
                         estimands=None) -> Effects:
        """Effects of every arm x metric at given (uncentred) covariate means, e.g. of a
        target population (the :class:`~causalflow.effects.record.ContrastModel` protocol;
        ``Effects.project`` onto a table uses it).

        ``estimands``: ``"ITT"`` and / or ``"ATE"`` (default: both in an encouragement
        design, where the ATE at a target's means is the extrapolation described in
        :meth:`infer_effect`). A ``"LATE"`` has no value at a target's covariate means:
        the target's compliers are not observed.
        """
        alpha = check_alpha(alpha)
        estimands = (("ITT", "ATE") if self._source.iv else ("ATE",)) if estimands is None else \
            check_estimands(estimands, self._source.iv)
        if "LATE" in estimands:
            raise ValidationError("estimands: a LATE averages over the compliers of the experiment; at a "
                                  "target's covariate means ask for the 'ATE' (an extrapolation from the "
                                  "compliers) or the 'ITT'")
        return self._effects_at([(label, True, None, lambda g: (means - g.mu, g.n))], alpha, [label], estimands)

    def _shift(self, cond, g: _Group, originals) -> tuple[np.ndarray, int]:
        """Centred covariate mean over the rows of a parsed condition (None: all rows) of a
        metric group, and the number of those rows."""
        return self.spec.covariates.condition_shift(cond, originals, g.member, g.n, g.mu, self._source.weights)

    def _kind(self, estimand: str) -> FitKind:
        """The fit an estimand is a contrast of: 2SLS for LATE and (encouragement) ATE."""
        return "iv" if self._source.iv and estimand != "ITT" else "itt"

    def _late(self, gi: int, row: int, j: int, cond) -> tuple[np.ndarray, tuple]:
        """Delta vector of arm j's LATE among the compliers of a condition (parsed or None)
        of metric group gi, at contrast row ``row``, and its complier-mean terms."""
        if not self.layout.q:
            return self.layout.effect(j), ()
        ratio = _Ratio(gi, j, None if cond is None else cond.text, "compliers", cond)
        return (self.layout.effect(j, self._wald(ratio).theta),
                (_Term(row, ratio, self.layout.interactions(j)),))

    def _effects_at(self, points: list, alpha: float, conditions: list, estimands: tuple) -> Effects:
        """Effects of every arm x metric x estimand at covariate points.

        ``points`` holds (label, conditional, parsed, locate) with ``locate(group) -> (xbar,
        n)``: the centred covariate means of the ITT / ATE delta vectors of that metric
        group and the number of rows the effect describes; ``parsed`` (a condition or None)
        names the rows whose compliers a LATE averages over.
        """
        J = self.layout.n_arms
        requests, sizes, tags = [], [], []
        for gi, g in enumerate(self._groups):
            located = [locate(g) for *_, locate in points]
            group_sizes = [size for _, size in located for _ in range(J)]
            for e_i, estimand in enumerate(estimands):
                terms = ()
                if estimand == "LATE":
                    late = [self._late(gi, c_i * J + j - 1, j, cond) for c_i, (_, _, cond, _)
                            in enumerate(points) for j in range(1, J + 1)]
                    D = np.vstack([d for d, _ in late])
                    terms = tuple(t for _, ts in late for t in ts)
                else:
                    D = np.vstack([self.layout.effects(xbar) for xbar, _ in located])
                requests.append((gi, self._kind(estimand), D, terms))
                sizes.append(group_sizes)
                tags.append(e_i)
        cov, layout, dof = self._contrast_cov(requests)
        records, index, keys = [], [], []
        for (gi, kind, D, terms), group_sizes, e_i, (s, _, K) in zip(requests, sizes, tags, layout):
            g = self._groups[gi]
            estimates = self._values(gi, kind, D, terms)  # (m, K)
            av_dof = self.covariance.dof(g.n, self.layout.p, g.n_clusters)
            for c_i, (label, conditional, _, _) in enumerate(points):
                for j in range(J):
                    row = c_i * J + j
                    for pos, k in enumerate(g.metrics):
                        column = s + row * K + pos
                        records.append(dict(metric=self.metrics[k], arm=self.spec.data.arms[j + 1],
                                            condition=label, estimand=estimand_name(estimands[e_i], conditional),
                                            estimate=float(estimates[row, pos]), n=group_sizes[row],
                                            dof=_integral(dof[column]), av_dof=av_dof, n_clusters=g.n_clusters))
                        keys.append((k, j, c_i, e_i))
                        index.append(column)
        order = sorted(range(len(records)), key=keys.__getitem__)
        index = np.asarray(index)[order]
        records = [records[i] for i in order]
        return Effects._from_fit(records, cov[np.ix_(index, index)], alpha, self, conditions, self.inference,
                                 notes=self._notes([r["estimand"] for r in records]), estimands=estimands)

    def _requested(self, label: str) -> str:
        """The estimand a row's label was asked for as (CATE is the ATE in a subgroup)."""
        if label in ("ITT", "LATE"):
            return label
        if label in ("ATE", "CATE"):
            return "ATE"
        raise ValidationError(f"relative: estimand {label!r} is not one of this model's")

    def control_means(self, effects: Effects) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Per effect of ``effects`` (from this model): the mean untreated outcome of the
        effect's population :math:`\hat\mu`, :math:`Var(\hat\mu)` and
        :math:`Cov(\hat\tau, \hat\mu)` from one contrast pass (see
        :func:`causalflow.effects.relative.relative_effects`).

        ITT, ATE and CATE: the adjusted control mean :math:`d_\mu'b` of the same fit at the
        condition's covariate means (:meth:`CoefLayout.level`; in an encouragement design
        the 2SLS level, :math:`\bar y - \overline{D\hat\tau(x)}`, the population's untreated
        mean under the ATE's assumption). LATE: the compliers' untreated mean
        :math:`E[Y(0) \mid C] = (E_w[Y(1-D)|Z=0] - E_w[Y(1-D)|Z=j]) / (E_w[1-D|Z=0] -
        E_w[1-D|Z=j])` (Abadie 2003), within the condition, whose influence enters the
        joint covariance like the complier covariate means'.
        """
        group_of = {k: gi for gi, g in enumerate(self._groups) for k in g.metrics}
        metric_index = {m: k for k, m in enumerate(self.metrics)}
        known = set(self.spec.covariates.sources)
        J = self.layout.n_arms
        originals = None
        plan: dict = {}  # (group, estimand) -> {condition: (row offset, parsed)}
        for r in effects.records:
            conds = plan.setdefault((group_of[metric_index[r["metric"]]], self._requested(r["estimand"])), {})
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
            conds[r["condition"]] = (len(conds) * 2 * J, parsed)
        requests = []
        for (gi, estimand), conds in plan.items():
            rows, terms = [], []
            for base, parsed in conds.values():  # rows: [mu_1, tau_1, ..., mu_J, tau_J]
                if estimand == "LATE":
                    text = None if parsed is None else parsed.text
                    for j in range(1, J + 1):
                        d_tau, late_terms = self._late(gi, base + 2 * j - 1, j, parsed)
                        rows += [np.zeros(self.layout.p), d_tau]
                        terms += [_Term(base + 2 * j - 2, _Ratio(gi, j, text, "untreated", parsed), None),
                                  *late_terms]
                else:
                    xbar, _ = self._shift(parsed, self._groups[gi], originals)
                    for j in range(1, J + 1):
                        rows += [self.layout.level(xbar), self.layout.effect(j, xbar)]
            requests.append((gi, self._kind(estimand), np.vstack(rows), tuple(terms)))
        cov, layout, _ = self._contrast_cov(requests)
        values = [self._values(*request) for request in requests]
        where = {key: i for i, key in enumerate(plan)}
        m = len(effects.records)
        tau, mu, v_mm, v_tm = (np.empty(m) for _ in range(4))
        for i, r in enumerate(effects.records):
            k = metric_index[r["metric"]]
            gi = group_of[k]
            key = (gi, self._requested(r["estimand"]))
            ri = where[key]
            start, _, K = layout[ri]
            pos = self._groups[gi].metrics.index(k)
            j = self.spec.data.arms.index(r["arm"])
            row_mu = plan[key][r["condition"]][0] + 2 * j - 2
            i_mu, i_tau = start + row_mu * K + pos, start + (row_mu + 1) * K + pos
            tau[i], mu[i] = values[ri][row_mu + 1, pos], values[ri][row_mu, pos]
            v_mm[i], v_tm[i] = cov[i_mu, i_mu], cov[i_tau, i_mu]
        if not np.allclose(tau, effects.estimate, rtol=1e-9, atol=1e-12 * (1 + np.abs(tau).max())):
            raise ValidationError("relative: these effects are not the model's contrasts (projected "
                                  "or modified); call relative() on effects from infer_effect")
        return mu, v_mm, v_tm

    def compliers(self, condition_on=None) -> pd.DataFrame:
        r"""Who the compliers are: per arm (and condition) their share and covariate means.

        The complier share is the first stage :math:`E_w[D_j|Z=j] - E_w[D_j|Z=0]` (the
        share of compliers under monotonicity); the compliers' mean of each design column
        is the Wald ratio of :mod:`causalflow.linalg.compliers` (Abadie 2003; for a level
        of a categorical covariate, the compliers' share of it), over all rows of the
        experiment (of the condition), weighted with propensity weights. ``std_difference``
        is (complier mean - population mean) / population standard deviation: how far the
        LATE's population is from the ATE's, the diagnostic of the ATE's extrapolation
        (:meth:`infer_effect`). The design record (``data.design``) reports the complier
        share; the covariate means need the covariates, known from ``add_metric`` on, so
        they are here (and in the footer of an effects record with an ATE row).

        Returns
        -------
        pandas.DataFrame
            One row per arm x condition x design column: ``arm, condition, covariate,
            complier_share, complier_mean, population_mean, population_sd,
            std_difference`` (one row per arm x condition with ``covariate`` None when
            there are no covariates).

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"z": rng.integers(0, 2, 4000), "x": rng.normal(size=4000)})
        >>> df["d"] = df.z * (rng.random(4000) < 1 / (1 + np.exp(-2 * df.x)))
        >>> df["y"] = df.x + df.d + rng.normal(size=4000)
        >>> model = cf.ExperimentData(df, intent_to_treat="z", treated="d").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.LinearModel)
        >>> model.compliers()[["covariate", "complier_share", "complier_mean", "std_difference"]].round(2)
          covariate  complier_share  complier_mean  std_difference
        0         x             0.5           0.65            0.65
        """
        if not self._source.iv:
            raise ValidationError("compliers: everyone receives the assigned arm in this design (no "
                                  "encouragement), so every unit is a complier")
        key = ("compliers", None if condition_on is None else tuple(np.atleast_1d(condition_on).tolist()))
        if key in self._block_cache:
            return self._block_cache[key].copy()
        cov = self.spec.covariates
        J, q = self.layout.n_arms, cov.q
        centre = self._complier_centre()
        out = []
        for parsed in self._parse_conditions(condition_on):
            population, sums = self._complier_sums(parsed, centre)
            label = "all" if parsed is None else parsed.text
            for j in range(1, J + 1):
                what = (f"compliers of arm {self.spec.data.arms[j]!r}"
                        + ("" if parsed is None else f" in condition {parsed.text!r}"))
                ratio = WaldRatio.from_sums(sums[j - 1], what)
                if not q:
                    out.append(dict(arm=self.spec.data.arms[j], condition=label, covariate=None,
                                    complier_share=ratio.first_stage, complier_mean=np.nan,
                                    population_mean=np.nan, population_sd=np.nan, std_difference=np.nan))
                    continue
                mean = population[1] / population[0]
                with np.errstate(invalid="ignore", divide="ignore"):
                    sd = np.sqrt(np.clip(population[2] / population[0] - mean ** 2, 0.0, None))
                    std_diff = (ratio.theta - mean) / sd
                for c, name in enumerate(cov.names):
                    out.append(dict(arm=self.spec.data.arms[j], condition=label, covariate=name,
                                    complier_share=ratio.first_stage, complier_mean=centre[c] + ratio.theta[c],
                                    population_mean=centre[c] + mean[c], population_sd=sd[c],
                                    std_difference=std_diff[c]))
        frame = pd.DataFrame(out, columns=["arm", "condition", "covariate", "complier_share", "complier_mean",
                                           "population_mean", "population_sd", "std_difference"])
        self._block_cache[key] = frame
        return frame.copy()

    def _complier_centre(self) -> np.ndarray:
        """The covariates' (weighted) means, where :meth:`compliers` centres them."""
        return self.spec.covariates.means(None, self._source.weights)

    def _complier_sums(self, parsed, centre: np.ndarray) -> tuple[np.ndarray, list]:
        """For :meth:`compliers`: the population's (3, q) sums of w, w xc, w xc^2 in a
        condition, and per treatment arm the Wald-ratio sums of
        :func:`causalflow.linalg.compliers.arm_sums` (one pass over the rows)."""
        source, cov = self._source, self.spec.covariates
        J, q = self.layout.n_arms, cov.q
        mask = self._condition_mask(parsed)
        sums = [0.0] * J
        population = np.zeros((3, q))  # sum w, sum w xc, sum w xc^2 (per column)
        with single_blas_thread():
            for rows in source.row_blocks(None, _NATURAL_BLOCK_ROWS):
                xc = cov.raw(rows) - centre
                assign = source.assign[rows]
                inside = np.ones(len(assign), bool) if mask is None else mask[rows]
                w = None if source.weights is None else source.weights[rows]
                ww = inside * (1.0 if w is None else w)
                population += np.vstack([np.full(q, ww.sum()), ww @ xc, ww @ (xc * xc)])
                for j in range(1, J + 1):
                    T = source.take_up(j, rows)
                    sums[j - 1] = sums[j - 1] + arm_sums(xc * T[:, None], T, (assign == j) & inside,
                                                         (assign == 0) & inside, w)
        return population, sums

    def _notes(self, labels: list) -> tuple:
        """:func:`estimand_notes` of this fit, with the compliers' covariate-mean diagnostic."""
        diagnostic = ""
        if self._source.iv and self.layout.q and {"ATE", "CATE"} & set(labels):
            frame = self.compliers()
            worst = frame.loc[frame.std_difference.abs().idxmax()]
            diagnostic = (f"compliers vs all units: largest standardised covariate-mean difference "
                          f"{worst.std_difference:+.2f} ({worst.covariate}, arm {plain(worst.arm)!r}; "
                          "model.compliers())")
        return estimand_notes(labels, self._source.iv, bool(self.layout.q), diagnostic)

    def _estimand(self, kind: str, conditional: bool) -> str:
        """The default label of a fit's contrast at the units' covariate means (``estimand_label``;
        used by mediation). With covariates, a 2SLS contrast there is what ``infer_effect``
        calls the ATE; its LATE sits at the compliers' covariate means."""
        return estimand_label(kind, self._source.iv, conditional)

    infer_effects = infer_effect

    def _parse_conditions(self, condition_on) -> list:
        return parse_conditions(condition_on, self.spec.covariates.sources)

    def __repr__(self) -> str:
        return (f"LinearModelResults({len(self.metrics)} metric(s), {len(self.names)} parameters, "
                f"cov_type={self.cov_type!r}, fits={self.fit_kinds})")
