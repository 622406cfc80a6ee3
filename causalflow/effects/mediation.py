r"""Serial mediation over a causal graph: ``effects.with_graph(graph).mediate_effect(...)``.

Does a new page raise sales *because* it raises searches, which raise views? Given a
graph such as ``"T -> searches; T -> views; searches -> views -> sales"`` (``T`` is the
treatment), every node on a directed path from T to the effect's metric gets one linear
equation on its parents, the treatment (as the design has it: its arm indicators and
their interactions with the centred covariates, Lin 2013) and the covariates of the
total-effect model:

.. math::

    v = W_v \gamma_v + \sum_{u \in pa(v)} \beta_{uv}\, u + \varepsilon_v, \qquad
    W = [1, D, X_c, D \otimes X_c],

fitted by the generalized 2SLS solver on the same rows (so in an encouragement design the
treatment received D is instrumented by the assignment in every node equation, the
mediators entering as their own instruments; clusters and weights carry through). The
effect of arm j along a path :math:`T \to v_1 \to \dots \to v_k = y` in a condition with
delta vector d (:mod:`causalflow.linalg.layout`: the treatment's coefficient plus its
interactions at the condition's covariate means) is the product of the path's
coefficients,

.. math:: \tau_{T v_1 \dots y} = (d'\gamma_{v_1})\, \beta_{v_1 v_2} \cdots \beta_{v_{k-1} y},

the direct effect is :math:`d'\gamma_y`, and direct plus all indirect paths is the total
effect implied by the system (Wright 1934's path tracing; Alwin and Hauser 1975;
VanderWeele 2015, ch. 5 for serial mediators). Standard errors come from the joint
covariance of all node equations' coefficients (their estimating equations stacked, with
the model's robust or clustered sandwich: :mod:`causalflow.linalg.stacked`) by the delta
method, or from a (cluster) bootstrap.

Assumptions (stated, not tested; Imai, Keele and Tingley 2010; VanderWeele 2015, ch. 5):

1. *Linear structural model without treatment-mediator interaction*: every node is linear
   in its parents with coefficients that do not depend on the treatment or on the levels
   of other nodes (the treatment's own edges may vary with the covariates: conditional
   mediation). The graph's missing edges between nodes are true zeros.
2. *Sequential ignorability*: the treatment is randomized; given the treatment, the
   covariates and its parents, each node's error is independent of the other nodes'
   errors: no unmeasured confounder of any mediator-mediator or mediator-outcome relation,
   and in particular no confounder that the treatment itself affects. This is what lets
   a mediator enter its children's equations as an exogenous regressor (its own
   instrument) even in an encouragement design. Randomization alone identifies the
   treatment's edges and the total; the mediator edges need this assumption.
3. In an encouragement design the 2SLS (``LATE`` / ``ATE``) paths also need the exclusion
   restriction in every node equation (the assignment moves a node only through the
   treatment received); the ``ITT`` paths (the assignment as the treatment) do not.

References
----------
Imai, K., Keele, L. and Tingley, D. (2010). A general approach to causal mediation
analysis. Psychological Methods 15(4), 309-334.
VanderWeele, T. J. (2015). Explanation in Causal Inference: Methods for Mediation and
Interaction. Oxford University Press (ch. 5, multiple and serial mediators).
Sobel, M. E. (1982). Asymptotic confidence intervals for indirect effects in structural
equation models. Sociological Methodology 13, 290-312.
Alwin, D. F. and Hauser, R. M. (1975). The decomposition of effects in path analysis.
American Sociological Review 40(1), 37-47.
Wright, S. (1934). The method of path coefficients. Annals of Mathematical Statistics 5(3),
161-215.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from ..backends.memory import block_moments
from ..design import arm_names
from ..errors import ValidationError
from ..graph import TREATMENT, CausalGraph
from ..linalg.compliers import WaldRatio, arm_sums, cluster_arm_sums, wald_theta
from ..linalg.layout import CoefLayout
from ..linalg.sandwich import ClusterBlock, ScoreAccumulator
from ..linalg.small_sample import ClusterCrossProducts, cluster_cross_products, cr2, jackknife_coefs
from ..linalg.stacked import (
    Equation,
    equation_moments,
    products,
    score_block,
    score_maps,
    solve_equations,
    sum_of_products,
)
from ..linalg.threads import single_blas_thread
from ..validate import check_alpha, check_choice, metric_values
from .paths import Bootstrap, Mediation, TotalCheck

__all__ = ["Bootstrap", "GraphEffect", "Mediation", "NodeEquations", "TotalCheck"]

TreatmentEdges = Literal["all", "graph"]
_BLOCK_ROWS = 1 << 15
#: score columns up to which cluster sums are per-column bincounts (measured: cheaper than
#: building a sparse cluster indicator per block)
_BINCOUNT_COLUMNS = 48
#: values of per-unit Gram matrices held for the bootstrap (beyond: one pass per replicate)
_UNIT_GRAM_VALUES = 1 << 23
_SAME = object()  # condition_on default: the conditions of the effects record


class GraphEffect:
    """An effects record with a causal graph, ready to mediate (from ``Effects.with_graph``).

    Immutable builder: it validates the graph against the data and holds the fitted node
    equations once computed (a memo that never changes results).

    Parameters
    ----------
    effects : Effects from ``LinearModelResults.infer_effect``
    graph : str or networkx.DiGraph, see :mod:`causalflow.graph`
    metric : str, optional
        The outcome node: default the one metric of the effects that the graph holds (with
        several, the one the others lead to).

    Raises
    ------
    ValidationError
        The graph is cyclic, lacks ``T`` or the metric, has an edge into ``T``, no path from
        ``T`` to the metric, or a node (other than ``T``) that is not a numeric column of the
        data, or is the assignment / treatment / cluster / propensity column or a covariate.

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> from causalflow.effects.mediation import simulate_chain
    >>> effects = cf.ExperimentData(simulate_chain(2000, seed=1), intent_to_treat="t").add_metric(
    ...     y="sales", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect()
    >>> g = effects.with_graph("T -> searches; T -> views; searches -> views -> sales")
    >>> g.metric, g.mediators
    ('sales', ('searches', 'views'))
    >>> effects.with_graph("T -> searches -> clicks -> sales")
    Traceback (most recent call last):
    ...
    causalflow.errors.ValidationError: graph: node 'clicks' is not a column of the data
    """

    def __init__(self, effects, graph, metric: str | None = None):
        model = getattr(effects, "model", None)
        needed = ("spec", "covariance", "inference", "_parse_conditions")
        if model is None or not all(hasattr(model, a) for a in needed):
            raise ValidationError("with_graph: mediation needs effects from a fitted cf.LinearModel "
                                  f"(got effects of {type(model).__name__})")
        self._effects = effects
        self._model = model
        self.graph = CausalGraph.parse(graph)
        _check_nodes(self.graph, model.spec)
        self.metric = _outcome(self.graph, effects, metric)
        self.graph.between(self.metric)  # a path from T to the metric
        self._fits: dict = {}

    @property
    def mediators(self) -> tuple:
        """Every node on a directed path from ``T`` to the metric, in causal order."""
        return self.graph.between(self.metric)[:-1]

    def node_equations(self, treatment_edges: TreatmentEdges = "all") -> NodeEquations:
        """The fitted node equations and their joint covariance (:class:`NodeEquations`).

        ``treatment_edges="all"`` (default) puts the treatment into every node equation, as
        Imai, Keele and Tingley's mediator and outcome models do; ``"graph"`` only into the
        equations of nodes with an edge ``T -> node`` (a restriction the total-effect check
        of :class:`TotalCheck` then tests).
        """
        check_choice("treatment_edges", treatment_edges, ("all", "graph"))
        if treatment_edges not in self._fits:
            self._fits[treatment_edges] = NodeEquations(self._model, self.graph, self.metric, treatment_edges)
        return self._fits[treatment_edges]

    def mediate_effect(self, mediator=None, condition_on=_SAME, alpha: float | None = None, *, estimands=None,
                       treatment_edges: TreatmentEdges = "all", bootstrap: int = 0, seed: int | None = 0,
                       n_jobs: int | None = -1) -> Mediation:
        r"""Direct, indirect (per path), total indirect and total effect of the treatment on the metric.

        Each node on a path from T to the metric gets one equation (module docstring); a
        path's effect is the product of its coefficients, with the treatment's edge taken
        at the condition's delta vector (conditional mediation through the treatment's
        interactions with the covariates). Rows (``path`` column):

        - ``direct``: the effect along paths that avoid the mediator(s) of ``mediator``;
          with the default (every mediator) it is :math:`d'\gamma_y`, the treatment's
          coefficient in the metric's equation.
        - one row per indirect path through the mediator(s), e.g. ``T -> searches -> views -> sales``;
        - ``total_indirect``: their sum;
        - ``total``: direct + total_indirect, the total effect implied by the system.

        Standard errors: delta method on the joint covariance of all node equations
        (:meth:`NodeEquations.cov_params`, the model's ``cov_type``), so every row's interval
        and the joint covariance ``Mediation.cov`` account for the correlation of the
        equations (same rows, same clusters); with CR3 the rows themselves are jackknifed
        (every equation refitted without each cluster). Degrees of freedom of the t
        reference: G - 1 with clusters, n - P (P the largest number of regressors of the
        equations a row uses) without, with CR2 the smallest Satterthwaite dof of the
        coefficients a row uses (a conservative choice: Satterthwaite's dof are defined for
        a linear contrast of one equation). HC1 / CR1 scale each equation by its own
        n - P, so the ``total`` row's standard error exceeds ``infer_effect``'s by a factor
        of about sqrt((n - p) / (n - P)) (1e-4 relative at n = 3,000); with HC0, CR0 and CR3
        the two are equal.

        Parameters
        ----------
        mediator : str or list of str, optional
            None: every mediator, every indirect path of the graph. One node: the paths
            through it. A list is an ordered chain: the paths through each of them in that
            order (``["searches", "views"]``: paths through searches and then views). Each
            must lie on a directed path from T to the metric.
        condition_on : str or list of str, optional
            Subgroups as in ``infer_effect`` (the safe expression language over the
            covariates); default the conditions of the effects record, ``None`` the average.
        alpha : float, optional
            1 - confidence level (default: the effects record's).
        estimands : str or list of str, optional
            Which effect to decompose, as in ``infer_effect`` (default: the estimands of the
            effects record). ``"ATE"`` (``CATE`` in a subgroup): the treatment's edges at the
            condition's covariate means (in an encouragement design, of the 2SLS fit: the
            extrapolation from the compliers that ``infer_effect`` documents); ``"ITT"``
            (encouragement designs): the assignment as the treatment (OLS of every node on
            it), the mediated effect of being encouraged; ``"LATE"`` (encouragement
            designs): the 2SLS edges at the compliers' covariate means (a Wald ratio per
            arm and condition, whose estimation enters the standard errors, as in
            ``infer_effect``). The mediator edges are those of the 2SLS (ATE, LATE) or OLS
            (ITT) node equations.
        treatment_edges : {"all", "graph"}
            See :meth:`node_equations`.
        bootstrap : int
            Number of bootstrap replicates (0: none). Resamples clusters when the design has
            them, else rows, with replacement; refits every node equation on each replicate
            (weights carried) and adds ``boot_std_error`` and percentile
            ``boot_ci_lower`` / ``boot_ci_upper`` columns. Replicates run in parallel with
            joblib (threads); each has its own seed spawned from ``seed``, so the result does
            not depend on ``n_jobs``.
        seed : int or None
            Seed of the bootstrap (None: fresh entropy).
        n_jobs : int or None
            joblib's ``n_jobs`` for the bootstrap (-1: every core).

        Returns
        -------
        Mediation

        Notes
        -----
        With the treatment in every node equation (the default) the implied total equals
        the regression of the metric on the treatment and covariates *exactly*, for every
        acyclic graph: each equation's residual is orthogonal to (2SLS: uncorrelated with
        the instruments of) W, so :math:`\gamma^{tot}_v = \gamma_v + \sum_u \beta_{uv}
        \gamma^{tot}_u` holds in the sample, node by node. The total then equals
        ``infer_effect``'s on the same rows. A graph restricts the total only where it
        claims that T does not reach a node: ``treatment_edges="graph"`` without ``T -> v``,
        or a parent T does not reach; :attr:`Mediation.check` reports the difference.

        Examples
        --------
        >>> import causalflow as cf
        >>> from causalflow.effects.mediation import simulate_chain
        >>> effects = cf.ExperimentData(simulate_chain(4000, seed=2), intent_to_treat="t").add_metric(
        ...     y="sales", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect()
        >>> med = effects.with_graph("T -> searches; T -> views; searches -> views -> sales").mediate_effect()
        >>> med.to_frame()[["path", "estimate"]].round(2).values.tolist()  # doctest: +NORMALIZE_WHITESPACE
        [['direct', 0.21], ['T -> views -> sales', 0.16], ['T -> searches -> views -> sales', 0.09],
         ['total_indirect', 0.25], ['total', 0.46]]
        >>> bool(abs(med.estimate[-1] - effects.estimate[0]) < 1e-12)      # the total of infer_effect
        True
        >>> effects.with_graph("T -> searches; T -> views; searches -> views -> sales").mediate_effect(
        ...     mediator=["views", "searches"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        causalflow.errors.ValidationError: mediator: no directed path leads from 'views' to 'searches'; ...
        """
        check_choice("treatment_edges", treatment_edges, ("all", "graph"))
        alpha = self._effects.alpha if alpha is None else check_alpha(alpha)
        focal = self._focal(mediator)
        conditions = self._conditions(condition_on)
        bootstrap = _check_replicates(bootstrap)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValidationError(f"seed: expected a non-negative integer or None, got {seed!r}")
        estimands = self._estimands(estimands)
        system = self.node_equations(treatment_edges)
        return system.mediate(focal, conditions, estimands, alpha, bootstrap, seed, n_jobs)

    # -- arguments -------------------------------------------------------------------------
    def _focal(self, mediator) -> tuple | None:
        inside = self.mediators
        if not inside:
            raise ValidationError(f"graph: no mediator lies between {TREATMENT!r} and {self.metric!r}")
        if mediator is None:
            return None
        chain = [mediator] if isinstance(mediator, str) else mediator
        if not isinstance(chain, (list, tuple)) or not chain or not all(isinstance(m, str) for m in chain):
            raise ValidationError(f"mediator: expected a node name or a list of names, got {mediator!r}")
        if len(set(chain)) != len(chain):
            raise ValidationError(f"mediator: a node is listed twice in {list(chain)}")
        for m in chain:
            if m not in self.graph.nodes:
                raise ValidationError(f"mediator: {m!r} is not a node of the graph ({str(self.graph)!r})")
            if m in (TREATMENT, self.metric):
                raise ValidationError(f"mediator: {m!r} is the {'treatment' if m == TREATMENT else 'outcome'}, "
                                      "not a mediator")
            if m not in inside:
                raise ValidationError(f"mediator: {m!r} is not on a directed path from {TREATMENT!r} to "
                                      f"{self.metric!r} in the graph")
        for a, b in zip(chain[:-1], chain[1:]):
            if b not in self.graph.descendants(a):
                raise ValidationError(f"mediator: no directed path leads from {a!r} to {b!r}; a list is a "
                                      "chain in causal order")
        return tuple(chain)

    def _estimands(self, estimands) -> tuple:
        iv = self._model.spec.data.is_iv
        if estimands is None:
            given = tuple(getattr(self._effects, "estimands", ()) or ())
            if not given:
                given = tuple(dict.fromkeys("ATE" if r["estimand"] == "CATE" else r["estimand"]
                                            for r in self._effects.records))
            return given
        names = [estimands] if isinstance(estimands, str) else estimands
        if not isinstance(names, (list, tuple)) or not names:
            raise ValidationError(f"estimands: expected a name or a list of names ['ITT', 'LATE', 'ATE'], "
                                  f"got {estimands!r}")
        out = []
        for name in names:
            label = name.strip().upper() if isinstance(name, str) else name
            if label not in ("ITT", "LATE", "ATE"):
                raise ValidationError(f"estimands: {name!r} is not one of ['ITT', 'LATE', 'ATE']")
            if label != "ATE" and not iv:
                raise ValidationError(f"estimands: {label!r} needs an encouragement design (treated differs "
                                      "from intent_to_treat); here the effect of the assignment is the 'ATE'")
            out.append(label)
        if len(set(out)) != len(out):
            raise ValidationError(f"estimands: a name is listed twice in {list(names)}")
        return tuple(out)

    def _conditions(self, condition_on) -> list:
        model = self._model
        if condition_on is _SAME:
            texts = [c for c in self._effects.conditions if c is not None]
            if not texts:
                return [None]
            try:
                return model._parse_conditions(texts)
            except ValidationError:
                raise ValidationError(f"condition_on: the effects hold conditions {texts} that are not "
                                      "conditions on the covariates (a projection?); pass condition_on") from None
        return model._parse_conditions(condition_on)

    def __repr__(self) -> str:
        return f"GraphEffect(metric={self.metric!r}, graph={str(self.graph)!r})"


def _check_replicates(bootstrap) -> int:
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValidationError(f"bootstrap: expected a number of replicates (0 for none), got {bootstrap!r}")
    if 0 < bootstrap < 50:
        raise ValidationError(f"bootstrap: {bootstrap} replicates are too few for percentile intervals; use "
                              "at least 50 (999 or more for 95% intervals)")
    return int(bootstrap)


def _outcome(graph: CausalGraph, effects, metric) -> str:
    metrics = list(dict.fromkeys(r["metric"] for r in effects.records))
    if metric is not None:
        if metric not in metrics:
            raise ValidationError(f"metric: {metric!r} is not a metric of these effects ({metrics})")
        return metric
    inside = [m for m in metrics if m in graph.nodes]
    if not inside:
        raise ValidationError(f"graph: it holds none of the effects' metrics {metrics}; the outcome of the "
                              "mediation must be a node")
    if len(inside) == 1:
        return inside[0]
    last = [m for m in inside if not any(o in graph.descendants(m) for o in inside if o != m)]
    if len(last) != 1:
        raise ValidationError(f"graph: it holds several of the effects' metrics {inside}; name the outcome "
                              "with with_graph(graph, metric=...)")
    return last[0]


def _check_nodes(graph: CausalGraph, spec) -> None:
    """Every node but T is a numeric column of the data with no other role."""
    data = spec.data
    df = data.data
    roles = {**data.column_roles, data.intent_to_treat: "intent_to_treat (assignment)"}
    covariates = set(spec.covariates.sources)
    for node in graph.nodes:
        if node == TREATMENT:
            continue
        if node not in df.columns:
            raise ValidationError(f"graph: node {node!r} is not a column of the data")
        if node in roles:
            raise ValidationError(f"graph: node {node!r} is the {roles[node]} column, not a metric; the "
                                  f"treatment is the node {TREATMENT!r}")
        if node in covariates:
            raise ValidationError(f"graph: node {node!r} is a covariate of the model (pre-treatment, in every "
                                  "node equation); a node of the graph is a metric the treatment may affect")
        metric_values(df[node], node, "graph")


# -- the fitted system -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _NodeEq:
    """One equation of the system: its node, fit kind (itt / iv) and columns."""

    kind: str
    node: str
    total: bool  # the total-effect regression of the metric (no parents)
    treated: bool  # the treatment is a regressor
    parents: tuple
    equation: Equation

    @property
    def label(self) -> str:
        return f"{self.node} (total)" if self.total else self.node


@dataclass(frozen=True, slots=True)
class _Point:
    """A condition: its label, rows (bool over all rows, within the complete ones; None: all
    complete rows), centred covariate shift and number of rows."""

    label: str
    conditional: bool
    mask: np.ndarray | None
    shift: np.ndarray
    size: int


@dataclass(frozen=True)
class _Ratio:
    """The compliers of arm ``arm`` (1..J) in condition ``point``: their centred covariate means
    (a Wald ratio, :mod:`causalflow.linalg.compliers`), where a LATE's delta vector sits."""

    arm: int
    point: int
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class _RatioTerm:
    """Contrast column ``column`` of equation ``equation`` sits at the complier means of
    ``ratio``; ``coef`` holds the positions of the arm's interactions in that equation's
    coefficients (the gradient of the column's value in the means)."""

    column: int
    ratio: _Ratio
    equation: int
    coef: np.ndarray


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a mediation call estimates: the contrast matrix of every equation, where each edge
    value sits (``where``), the LATE columns' complier-mean terms and the Wald ratios."""

    contrasts: list
    where: dict
    ratio_terms: tuple
    walds: dict


def _kind(estimand: str, iv: bool) -> str:
    """The fit an estimand contrasts: 2SLS for the LATE and, in an encouragement design, the ATE."""
    return "iv" if iv and estimand != "ITT" else "itt"


def _label(estimand: str, conditional: bool) -> str:
    return "CATE" if estimand == "ATE" and conditional else estimand


class NodeEquations:
    r"""The node equations of a graph, fitted on the same rows, and their joint covariance.

    One pass over the data forms the weighted Gram matrix of the block
    :math:`[Z \mid X \mid N]` (instruments and regressors of the Lin design, and every node
    column); every equation's moments are sub-blocks of it. Per fit kind of the model
    (``"itt"``: the assignment as the treatment, OLS; ``"iv"``: the treatment received,
    instrumented by the assignment) there is one equation per node of
    :meth:`~causalflow.graph.CausalGraph.between` and one total-effect regression of the
    metric on the treatment and covariates alone (for :class:`TotalCheck`). Rows: those
    where every node column is observed; covariates centred at their (weighted) mean over
    them.

    Attributes
    ----------
    nodes : tuple of str, the nodes with an equation, in causal order (the metric last)
    side : tuple of str, parents T does not reach (regressors without an equation)
    n : int, rows; n_clusters : int or None, clusters with rows
    cov_type : str, the model's covariance type

    Examples
    --------
    >>> import causalflow as cf
    >>> from causalflow.effects.mediation import simulate_chain
    >>> effects = cf.ExperimentData(simulate_chain(500, seed=0), intent_to_treat="t").add_metric(
    ...     y="sales", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect()
    >>> system = effects.with_graph("T -> searches -> sales").node_equations()
    >>> [name for _, name in system.params().xs("sales", level="equation").index]
    ['Intercept', 't[1]', 'x', 't[1]:x', 'searches']
    >>> system.cov_params().shape     # searches (4) + sales (5) + sales (total) (4)
    (13, 13)
    """

    def __init__(self, model, graph: CausalGraph, metric: str, treatment_edges: str):
        spec = model.spec
        data = spec.data
        self.graph, self.metric, self.treatment_edges = graph, metric, treatment_edges
        self.nodes = graph.between(metric)
        self.side = graph.side_parents(metric)
        self.columns = self.nodes + self.side
        self.covariance = model.covariance
        self.inference = model.inference
        self.arms = tuple(data.arms)
        self.covariates = spec.covariates
        outcomes = tuple(metric_values(data.data[c], c, "graph") for c in self.columns)
        self.source = source = replace(spec.source(), outcomes=outcomes)
        self.member = np.logical_and.reduce([~np.isnan(y) for y in outcomes])
        self.rows = None if self.member.all() else np.flatnonzero(self.member)
        self.n = int(self.member.sum())
        self.mu = spec.covariates.means(self.rows, source.weights)
        self.n_clusters = None
        if source.clusters is not None:
            codes = source.clusters[self.member]
            self.n_clusters = int(np.count_nonzero(np.bincount(codes, minlength=source.n_clusters)))
            if self.n_clusters < 2:
                raise ValidationError(f"graph: the rows where every node {list(self.columns)} is observed lie "
                                      "in a single cluster")
        self.layout = CoefLayout(source.n_arms, spec.covariates.q)
        self.kinds = ("itt", "iv") if source.iv else ("itt",)
        self.width = source.p * (2 if source.iv else 1) + len(self.columns)
        self.equations = self._equations(data, spec)
        largest = max(e.equation.size for e in self.equations)
        if self.n <= largest:
            raise ValidationError(f"graph: {self.n} rows where every node is observed, for equations with "
                                  f"{largest} coefficients")
        with single_blas_thread():
            self.gram, _ = self._pass()
        self.fits = solve_equations(self.gram, [e.equation for e in self.equations], self.n)
        self._memo: dict = {}

    def _equations(self, data, spec) -> list:
        """Per fit kind: one equation per node (in causal order), then the total regression.

        Lin block: instruments Z = [1, A, Xc, A x Xc]; regressors the X block of an IV
        design ([1, D, Xc, D x Xc], whose intercept and covariate columns equal Z's), or Z.
        A node equation without the treatment (``treatment_edges="graph"``) keeps the
        intercept and the covariates only, and is OLS."""
        p, J, q = self.source.p, self.layout.n_arms, self.layout.q
        offset = self.width - len(self.columns)
        without = np.r_[0, np.arange(1 + J, 1 + J + q)].astype(np.intp)
        out = []
        for kind in self.kinds:
            names = self.layout.names(arm_names(data, kind), spec.covariates.names)
            for node, total in [*((v, False) for v in self.nodes), (self.metric, True)]:
                treated = total or self.treatment_edges == "all" or (TREATMENT, node) in self.graph.edges
                parents = () if total else tuple(u for u in self.graph.parents(node) if u != TREATMENT)
                z = np.arange(p, dtype=np.intp) if treated else without
                x = z + p if (kind == "iv" and treated) else z
                extra = np.array([offset + self.columns.index(u) for u in parents], dtype=np.intp)
                eq = Equation(np.r_[z, extra], np.r_[x, extra], offset + self.columns.index(node),
                              tuple([names[i] for i in z] + list(parents)))
                out.append(_NodeEq(kind, node, total, treated, parents, eq))
        return out

    # -- passes over the rows ------------------------------------------------------------
    def _blocks(self, multiplier: np.ndarray | None = None, buffered: bool = True):
        """(rows, block [Z | X | N], w) of every row block; ``multiplier`` scales each row's
        weight (bootstrap counts)."""
        source, K = self.source, len(self.columns)
        buffer = source.buffer(_BLOCK_ROWS, K) if buffered else None
        for rows in source.row_blocks(self.rows, _BLOCK_ROWS):
            block, w = source.matrix(rows, self.mu, range(K), buffer)
            if multiplier is not None:
                w = multiplier[rows] if w is None else w * multiplier[rows]
            yield rows, block, w

    def _pass(self, multiplier: np.ndarray | None = None, ratios=()) -> tuple[np.ndarray, dict]:
        """B'WB over the rows (:func:`causalflow.backends.memory.block_moments` per block), and
        the arm sums (:func:`causalflow.linalg.compliers.arm_sums`) of every ratio: one pass."""
        gram, sums = None, {r: 0.0 for r in ratios}
        for rows, block, w in self._blocks(multiplier):
            part = block_moments(block, w, self.width, False, 0)
            gram = part if gram is None else gram + part
            for r in ratios:
                sums[r] = sums[r] + arm_sums(*self._ratio_inputs(block, rows, w, r))
        return gram.zwz, sums

    def _ratio_inputs(self, block, rows, w, ratio: _Ratio) -> tuple:
        """(V, T, in_arm, in_control, w) of a complier-means ratio on a block: V the centred
        covariates times the take-up of the arm (:mod:`causalflow.linalg.compliers`)."""
        J, q = self.layout.n_arms, self.layout.q
        take_up = self.source.take_up(ratio.arm, rows)
        assign = self.source.assign[rows]
        in_arm, in_control = assign == ratio.arm, assign == 0
        if ratio.mask is not None:
            in_arm, in_control = in_arm & ratio.mask[rows], in_control & ratio.mask[rows]
        return block[:, 1 + J:1 + J + q] * take_up[:, None], take_up, in_arm, in_control, w

    def _ratio_what(self, ratio: _Ratio, points) -> str:
        where = "" if ratio.mask is None else f" in condition {points[ratio.point].label!r}"
        return f"LATE of arm {self.arms[ratio.arm]!r}{where} (the compliers' covariate means)"

    def _walds(self, ratios, points) -> dict:
        if not ratios:
            return {}
        _, sums = self._pass(ratios=ratios)
        return {r: WaldRatio.from_sums(sums[r], self._ratio_what(r, points)) for r in ratios}

    def _cluster_sums(self) -> ClusterCrossProducts:
        """Per-cluster B_g'W_gB_g (G x d x d), one pass (cached: CR3 and the cluster bootstrap)."""
        if "unit_grams" not in self._memo:
            total = None
            for rows, block, w in self._blocks(buffered=False):
                part = cluster_cross_products(block, None, np.empty((len(block), 0)), w,
                                              self.source.clusters[rows], self.source.n_clusters)
                total = part if total is None else total + part
            self._memo["unit_grams"] = total
        return self._memo["unit_grams"]

    def _cluster_ratio_sums(self, ratio: _Ratio) -> np.ndarray:
        """(G, 2, 2 + q) per-cluster arm sums of a ratio (cached)."""
        key = ("ratio_sums", ratio)
        if key not in self._memo:
            total = 0.0
            for rows, block, w in self._blocks():
                total = total + cluster_arm_sums(*self._ratio_inputs(block, rows, w, ratio),
                                                 self.source.clusters[rows], self.source.n_clusters)
            self._memo[key] = total
        return self._memo[key]

    # -- covariances -------------------------------------------------------------------------
    def contrast_cov(self, contrasts: list, ratio_terms=(), walds=None) -> tuple[np.ndarray, np.ndarray]:
        r"""Joint covariance of the contrasts ``contrasts[e] @ theta_e`` of every equation
        (``contrasts[e]``: r_e x P_e; zero rows allowed), and each column's t degrees of freedom.

        Columns are ordered equation by equation. The meat is the model's: row (HC) or
        cluster (CR0/CR1) sums of the stacked scores (:func:`causalflow.linalg.stacked.score_block`),
        the leave-one-cluster-out jackknife of every equation (CR3), or Bell-McCaffrey
        adjusted cluster sums per equation (CR2); every equation's columns are scaled by
        :math:`\sqrt{c_e}` with its own small-sample factor, so each diagonal block is the
        single-equation covariance. ``ratio_terms``: columns whose delta vector sits at
        estimated complier means (a LATE with covariates); their estimation enters through
        the ratio's influence (scores) or its exact recomputation without each cluster (CR3).
        """
        meat = self.covariance.meat
        sizes = [e.equation.size for e in self.equations]
        dof = np.concatenate([np.full(R.shape[0], float(self.covariance.dof(self.n, s, self.n_clusters)))
                              for R, s in zip(contrasts, sizes)])
        with single_blas_thread():
            if meat == "jackknife":
                gram = self._jackknife_gram(contrasts, ratio_terms, walds)
            elif meat == "bias_reduced":
                if ratio_terms:
                    raise ValidationError(
                        "cov_type: 'CR2' does not cover a LATE with covariates, whose delta vector sits at "
                        "estimated complier means; use 'CR3' or 'CR1', or estimands=['ITT'] / ['ATE']")
                gram, dof = self._bias_reduced_gram(contrasts)
            else:
                gram = self._score_gram(contrasts, ratio_terms, walds)
        root = np.concatenate([np.full(R.shape[0], math.sqrt(self.covariance.factor(self.n, s, self.n_clusters)))
                               for R, s in zip(contrasts, sizes)])
        return gram * np.outer(root, root), dof

    def _score_gram(self, contrasts: list, ratio_terms, walds) -> np.ndarray:
        L, C, column_equation = score_maps([e.equation for e in self.equations], self.fits, contrasts, self.width)
        by_ratio: dict = {}
        for t in ratio_terms:
            columns, gammas = by_ratio.setdefault(t.ratio, ([], []))
            columns.append(t.column)
            gammas.append(self.fits[t.equation].coef[t.coef, 0])
        clustered = self.covariance.clustered
        acc = ScoreAccumulator(L.shape[1], self.source.n_clusters if clustered else None)
        # cluster sums: one bincount per column for a few columns, else a sparse indicator
        few = L.shape[1] <= _BINCOUNT_COLUMNS
        for rows, block, w in self._blocks():
            scores = score_block(block, w, L, C, column_equation)
            for ratio, (columns, gammas) in by_ratio.items():
                psi = walds[ratio].influence(*self._ratio_inputs(block, rows, w, ratio))
                scores[:, columns] += psi @ np.array(gammas).T
            if not clustered:
                acc.add(scores)
            elif few:
                acc.add(scores, codes=self.source.clusters[rows])
            else:
                acc.add(scores, ClusterBlock(self.source.clusters[rows]))
        return acc.gram()

    def _jackknife_gram(self, contrasts: list, ratio_terms=(), walds=None) -> np.ndarray:
        r"""CR3: :math:`\sum_g t_g t_g'` with :math:`t_g` the contrasts of
        :math:`\theta_{(-g)} - \theta` of every equation (:meth:`_jackknife_deviations`); the
        factor (G - 1)/G comes with ``Covariance.factor``."""
        T = np.nan_to_num(self._jackknife_deviations(contrasts, ratio_terms, walds), nan=0.0)
        return T.T @ T

    def _jackknife_deviations(self, contrasts: list, ratio_terms=(), walds=None) -> np.ndarray:
        """(G, M) the contrasts of every equation refitted without each cluster (first stages
        and complier means too), minus the full-sample ones; NaN rows for codes without rows."""
        cp = self._cluster_sums()
        parts, jacks = [], []
        for ne, fit, R in zip(self.equations, self.fits, contrasts):
            eq = ne.equation
            sub = ClusterCrossProducts(cp.zwz[:, eq.z][:, :, eq.z],
                                       cp.zwz[:, eq.z][:, :, eq.x] if eq.iv else None,
                                       cp.zwz[:, eq.z][:, :, [eq.y]], cp.n)
            jack = jackknife_coefs(sub, equation_moments(self.gram, eq, self.n), list(eq.names))
            jacks.append(jack)
            parts.append((jack[:, :, 0] - fit.coef[None, :, 0]) @ R.T)
        T = np.hstack(parts)
        for t in ratio_terms:
            theta = self._wald_jackknife(t.ratio, walds[t.ratio])
            T[:, t.column] += np.einsum("gq,gq->g", theta - walds[t.ratio].theta, jacks[t.equation][:, t.coef, 0])
        return T

    def _wald_jackknife(self, ratio: _Ratio, wald: WaldRatio) -> np.ndarray:
        """(G, q) the complier means without each cluster, exactly, from per-cluster sums."""
        total = self._cluster_ratio_sums(ratio)
        deleted = total.sum(axis=0)[None] - total
        theta, first = wald_theta(deleted)
        scale = max(1.0, float(np.abs(wald.sums[:, 1] / wald.weight).max()))
        seen = np.bincount(self.source.clusters[self.member], minlength=self.source.n_clusters) > 0
        bad = seen & ~((deleted[:, :, 0] > 0).all(axis=1) & (np.abs(first) > 1e-12 * scale))
        if bad.any():
            raise ValidationError(f"cov_type CR3: without cluster {int(np.flatnonzero(bad)[0])} (a code of "
                                  "cluster_by) an arm has no rows or no compliers, so the jackknife cannot "
                                  "recompute the complier means of the LATE; use cov_type='CR1'")
        return theta

    def _bias_reduced_gram(self, contrasts: list) -> tuple[np.ndarray, np.ndarray]:
        """CR2: Bell-McCaffrey adjusted cluster sums of every equation's contrasts (their Gram
        matrix is the joint covariance), and each contrast's Satterthwaite dof."""
        source, K = self.source, len(self.columns)
        rows = np.arange(source.n) if self.rows is None else self.rows
        block, w = source.matrix(rows, self.mu, range(K))
        codes = source.clusters[rows]
        sums, dofs = [], []
        for ne, fit, R in zip(self.equations, self.fits, contrasts):
            eq = ne.equation
            E = block[:, eq.y] - block[:, eq.x] @ fit.coef[:, 0]
            out = cr2(block[:, eq.z], w, E[:, None], codes, source.n_clusters,
                      fit.pi if eq.iv else None, fit.bread, R)
            sums.append(out.sums)
            dofs.append(out.dof)
        T = np.hstack(sums)
        return T.T @ T, np.concatenate(dofs)

    # -- tables ----------------------------------------------------------------------------
    def _index(self) -> pd.MultiIndex:
        return pd.MultiIndex.from_tuples([(e.kind, e.label, name) for e in self.equations for name in e.equation.names],
                                         names=["kind", "equation", "coefficient"])

    def params(self) -> pd.Series:
        """Every equation's coefficients, indexed by (kind, equation, coefficient); ``kind`` is
        ``"itt"`` (the assignment as the treatment) or ``"iv"`` (2SLS, encouragement designs)."""
        return pd.Series(np.concatenate([f.coef[:, 0] for f in self.fits]), index=self._index(), name="estimate")

    def cov_params(self) -> pd.DataFrame:
        """The joint covariance of all equations' coefficients (the stacked sandwich of
        :meth:`contrast_cov`), indexed like :meth:`params`."""
        if "cov_params" not in self._memo:
            cov, _ = self.contrast_cov([np.eye(e.equation.size) for e in self.equations])
            self._memo["cov_params"] = cov
        index = self._index()
        return pd.DataFrame(self._memo["cov_params"], index=index, columns=index)

    @property
    def cov_type(self) -> str:
        return self.covariance.cov_type

    # -- mediation -------------------------------------------------------------------------
    def _points(self, conditions: list) -> list:
        """A :class:`_Point` per condition (None: the average over the complete rows)."""
        originals = self.covariates.original() if any(c is not None for c in conditions) else None
        out = []
        for cond in conditions:
            if cond is None:
                out.append(_Point("all", False, None, np.zeros(self.layout.q), self.n))
                continue
            mask = np.asarray(cond.evaluate(originals), dtype=bool) & self.member
            size = int(mask.sum())
            if size == 0:
                raise ValidationError(f"condition_on {cond.text!r}: selects no rows where every node is observed")
            shift = self.covariates.means(np.flatnonzero(mask), self.source.weights) - self.mu
            out.append(_Point(cond.text, True, mask, shift, size))
        return out

    def _plan(self, estimands: tuple, points: list) -> _Plan:
        """Contrast rows of every equation: the treatment's edge of each estimand x condition x
        arm (its delta vector), and each parent's coefficient (once per fit kind used)."""
        p, J, q = self.source.p, self.layout.n_arms, self.layout.q
        iv = self.source.iv
        ratios = [_Ratio(j, c, pt.mask) for c, pt in enumerate(points) for j in range(1, J + 1)] \
            if "LATE" in estimands and q else []
        walds = self._walds(ratios, points)
        used = {_kind(e, iv) for e in estimands}
        contrasts, where, ratio_terms = [], {}, []
        column = 0
        for e, ne in enumerate(self.equations):
            size = ne.equation.size
            picks = []
            for e_i, estimand in enumerate(estimands):
                if not ne.treated or _kind(estimand, iv) != ne.kind:
                    continue
                for c, pt in enumerate(points):
                    for j in range(1, J + 1):
                        r = np.zeros(size)
                        if estimand == "LATE" and q:
                            ratio = _Ratio(j, c, pt.mask)
                            r[:p] = self.layout.effect(j, walds[ratio].theta)
                            coef = np.arange(p)[self.layout.interactions(j)]
                            ratio_terms.append(_RatioTerm(column, ratio, e, coef))
                        else:
                            r[:p] = self.layout.effect(j, pt.shift)
                        picks.append(r)
                        where[("tot" if ne.total else "a", e_i, ne.node, c, j)] = column
                        column += 1
            if ne.kind in used:
                for k, u in enumerate(ne.parents):
                    r = np.zeros(size)
                    r[size - len(ne.parents) + k] = 1.0
                    picks.append(r)
                    where[("b", ne.kind, u, ne.node)] = column
                    column += 1
            contrasts.append(np.array(picks).reshape(len(picks), size))
        return _Plan(contrasts, where, tuple(ratio_terms), walds)

    def _values(self, fits: list, plan: _Plan, walds: dict) -> np.ndarray:
        """Edge values of fitted equations; LATE columns at the complier means ``walds``
        (the plan's own, or a bootstrap replicate's)."""
        values = np.concatenate([R @ f.coef[:, 0] for R, f in zip(plan.contrasts, fits)])
        for t in plan.ratio_terms:
            values[t.column] += (walds[t.ratio].theta - plan.walds[t.ratio].theta) @ fits[t.equation].coef[t.coef, 0]
        return values

    def mediate(self, focal, conditions, estimands, alpha, replicates, seed, n_jobs) -> Mediation:
        """The :class:`Mediation` record (see :meth:`GraphEffect.mediate_effect`)."""
        points = self._points(conditions)
        plan = self._plan(estimands, points)
        values = self._values(self.fits, plan, plan.walds)
        treat_into = tuple(ne.node for ne in self.equations if ne.treated and not ne.total and ne.kind == "itt")
        paths = self.graph.paths(self.metric, treatment_into=treat_into)
        selected = [p for p in paths if _through(p, focal)]
        iv, where = self.source.iv, plan.where
        rows, terms, checks, edge_rows, edge_terms = [], [], [], [], []
        for j in range(1, self.layout.n_arms + 1):
            for c, pt in enumerate(points):
                for e_i, estimand in enumerate(estimands):
                    kind = _kind(estimand, iv)
                    base = dict(metric=self.metric, arm=self.arms[j], condition=pt.label,
                                estimand=_label(estimand, pt.conditional), n=pt.size)

                    def term(path, e_i=e_i, kind=kind, c=c, j=j):
                        return (where[("a", e_i, path[1], c, j)],
                                *(where[("b", kind, a, b)] for a, b in zip(path[1:-1], path[2:])))

                    every = [term(p) for p in paths]
                    chosen = [term(p) for p in selected]
                    rest = [t for p, t in zip(paths, every) if p not in selected]
                    for name, summands in [("direct", rest), *((" -> ".join(p), [term(p)]) for p in selected),
                                           ("total_indirect", chosen), ("total", every)]:
                        rows.append({**base, "path": name})
                        terms.append(summands)
                    checks.append((base, every, where[("tot", e_i, self.metric, c, j)]))
                    for ne in self.equations:
                        if ne.kind != kind or ne.total:
                            continue
                        if ne.treated:
                            edge_rows.append({**base, "path": f"{TREATMENT} -> {ne.node}"})
                            edge_terms.append([(where[("a", e_i, ne.node, c, j)],)])
                        for u in ne.parents:
                            edge_rows.append({**base, "path": f"{u} -> {ne.node}"})
                            edge_terms.append([(where[("b", kind, u, ne.node)],)])
        all_terms = terms + edge_terms + [every for _, every, _ in checks]
        check_columns = np.array([col for _, _, col in checks], dtype=np.intp)
        estimate, jac = sum_of_products(values, all_terms)
        m, me = len(rows), len(edge_rows)
        jac[m + me + np.arange(len(checks)), check_columns] -= 1.0  # implied - regression total
        regression = values[check_columns]
        estimate[m + me:] -= regression
        cov, dofs = self._row_cov(plan, values, estimate, jac, all_terms, check_columns)
        for r, est, d in zip(rows + edge_rows, estimate, dofs):
            r.update(estimate=float(est), dof=d)
        check_rows = tuple({**base, "implied_total": float(est + reg), "regression_total": float(reg),
                            "estimate": float(est), "dof": d}
                           for (base, _, _), est, reg, d in zip(checks, estimate[m + me:], regression, dofs[m + me:]))
        boot = [None, None, None]
        if replicates:
            draws, unit, failed = self._bootstrap(plan, all_terms, check_columns, replicates, seed, n_jobs)
            boot = [Bootstrap(replicates, failed, unit, seed, draws[:, s]) for s in
                    (slice(0, m), slice(m, m + me), slice(m + me, None))]
        restricted = bool(self.side) or not all(ne.treated for ne in self.equations)
        common = dict(alpha=alpha, inference=self.inference, graph=self.graph, metric=self.metric,
                      mediators=focal or self.nodes[:-1], treatment_edges=self.treatment_edges)
        check = TotalCheck(check_rows, _frozen(cov[m + me:, m + me:]), alpha, self.inference, restricted, boot[2])
        edges = Mediation(tuple(edge_rows), _frozen(cov[m:m + me, m:m + me]), boot=boot[1], **common)
        return Mediation(tuple(rows), _frozen(cov[:m, :m]), boot=boot[0], edges=edges, check=check, **common)

    def _row_cov(self, plan: _Plan, values, estimate, jac, terms, check_columns) -> tuple[np.ndarray, list]:
        r"""Joint covariance of the rows and each row's t degrees of freedom.

        Delta method :math:`J V J'` on the joint covariance V of the edge values
        (:meth:`contrast_cov`), except with CR3, where the rows themselves are jackknifed:
        :math:`\frac{G-1}{G}\sum_g (f(v_{(-g)}) - f(v))(f(v_{(-g)}) - f(v))'` with every
        equation (and complier mean) refitted without cluster g; for a linear contrast the
        two coincide, and the total then has exactly the CR3 standard error of
        ``infer_effect``. Degrees of freedom: the smallest of the edge values a row uses
        (G - 1 with clusters; n - P, P the regressors of the largest equation involved,
        without; CR2's Satterthwaite dof)."""
        if self.covariance.meat == "jackknife":
            with single_blas_thread():
                deviations = self._jackknife_deviations(plan.contrasts, plan.ratio_terms, plan.walds)
            seen = np.isfinite(deviations).all(axis=1)
            spread = _row_values(values[None] + deviations[seen], terms, check_columns) - estimate
            cov = self.covariance.factor(self.n, 1, self.n_clusters) * (spread.T @ spread)
            dof = self.covariance.dof(self.n, 1, self.n_clusters)
            return cov, [dof] * len(estimate)
        cov_values, dof_values = self.contrast_cov(plan.contrasts, plan.ratio_terms, plan.walds)
        return jac @ cov_values @ jac.T, [_row_dof(row, dof_values) for row in jac]

    # -- bootstrap ---------------------------------------------------------------------------
    def _bootstrap(self, plan: _Plan, terms: list, check_columns: np.ndarray, replicates: int, seed, n_jobs):
        """Draws (B x rows) of every row: clusters (or rows) resampled with replacement, every
        equation (and complier mean) refitted on the replicate, in parallel (joblib threads)."""
        from joblib import Parallel, delayed

        source = self.source
        if source.clusters is not None:
            unit_of_row, n_units, unit = source.clusters, source.n_clusters, "cluster"
            present = np.flatnonzero(np.bincount(source.clusters[self.member], minlength=n_units))
        else:
            unit_of_row, n_units, unit = np.arange(source.n), source.n, "row"
            present = np.flatnonzero(self.member)
        ratios = list(plan.walds)
        grams = ratio_sums = None
        if unit == "cluster" and n_units * self.width ** 2 <= _UNIT_GRAM_VALUES:
            with single_blas_thread():
                grams = self._cluster_sums().zwz.reshape(n_units, -1)
                ratio_sums = {r: self._cluster_ratio_sums(r) for r in ratios}
        equations = [e.equation for e in self.equations]

        def run(children):
            out = np.full((len(children), len(terms)), np.nan)
            failed = 0
            for i, child in enumerate(children):
                rng = np.random.default_rng(child)
                counts = np.zeros(n_units)
                counts[present] = np.bincount(rng.integers(0, len(present), len(present)), minlength=len(present))
                if grams is not None:
                    gram = (counts @ grams).reshape(self.width, self.width)
                    sums = {r: np.tensordot(counts, ratio_sums[r], axes=1) for r in ratios}
                else:
                    gram, sums = self._pass(counts[unit_of_row], ratios)
                try:
                    fits = solve_equations(gram, equations, self.n)
                    walds = {r: WaldRatio.from_sums(sums[r]) for r in ratios}
                except (ValidationError, np.linalg.LinAlgError):
                    failed += 1
                    continue
                out[i] = _row_values(self._values(fits, plan, walds), terms, check_columns)
            return out, failed

        children = np.random.SeedSequence(seed).spawn(replicates)
        n_chunks = min(replicates, 64)
        with single_blas_thread():
            results = Parallel(n_jobs=n_jobs, prefer="threads")(
                delayed(run)(children[i::n_chunks]) for i in range(n_chunks))
        draws = np.empty((replicates, len(terms)))
        for i, (out, _) in enumerate(results):
            draws[i::n_chunks] = out
        return draws, unit, sum(f for _, f in results)


def _row_values(values: np.ndarray, terms: list, check_columns: np.ndarray) -> np.ndarray:
    """Every row's value at edge values ``values`` ((M,) or (B, M)): the sums of products of
    ``terms``, whose last ``len(check_columns)`` rows (implied totals) have the regression
    totals subtracted."""
    out = products(values, terms)
    out[..., out.shape[-1] - len(check_columns):] -= values[..., check_columns]
    return out


def _through(path: tuple, focal) -> bool:
    """Whether a path (T, ..., metric) passes through the focal mediators (in order)."""
    inner = path[1:-1]
    if focal is None:
        return bool(inner)
    positions = [inner.index(m) if m in inner else -1 for m in focal]
    return all(i >= 0 for i in positions) and positions == sorted(positions)


def _row_dof(jac_row: np.ndarray, dof_values: np.ndarray):
    used = np.abs(jac_row) > 0
    value = float(dof_values[used].min()) if used.any() else float(dof_values.min())
    return int(value) if value.is_integer() else value


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a


# -- a simulator with known paths ----------------------------------------------------------
def simulate_chain(n: int, seed: int = 0, n_clusters: int | None = None, effects: dict | None = None,
                   compliance: float | None = None) -> pd.DataFrame:
    r"""A linear SEM of the shape T -> searches, T -> views, searches -> views -> sales, T -> sales.

    With the assignment t (0/1), a covariate x ~ N(0, 1) and independent N(0, 1) errors (plus
    N(0, 0.5^2) cluster effects in every equation with ``n_clusters``, t then randomized by
    cluster)::

        searches = a_s d + 0.5 x + e_s
        views    = a_v d + b_sv searches + 0.3 x + e_v
        sales    = c d + b_vy views + 0.2 x + e_y

    where d = t, or with ``compliance`` an encouragement design: d = t * (u < compliance) with
    u uniform (one-sided non-compliance, take-up independent of everything else), returned
    as the column ``d``. Defaults: a_s = 0.5, a_v = 0.4, b_sv = 0.5, b_vy = 0.4, c = 0.2, so
    the paths are T -> views -> sales 0.16, T -> searches -> views -> sales 0.1, direct 0.2,
    total 0.46 (per unit of d: the ATE and the LATE; the ITT is ``compliance`` times them).

    >>> simulate_chain(4, seed=0).columns.tolist()
    ['t', 'x', 'g', 'searches', 'views', 'sales']
    """
    k = {"a_s": 0.5, "a_v": 0.4, "b_sv": 0.5, "b_vy": 0.4, "c": 0.2, **(effects or {})}
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_clusters, n) if n_clusters else np.arange(n)
    t = (rng.integers(0, 2, n_clusters)[g] if n_clusters else rng.integers(0, 2, n)).astype(float)
    x = rng.normal(size=n)
    d = t if compliance is None else t * (rng.random(n) < compliance)
    shock = (lambda: rng.normal(0.0, 0.5, n_clusters)[g]) if n_clusters else (lambda: 0.0)
    searches = k["a_s"] * d + 0.5 * x + rng.normal(size=n) + shock()
    views = k["a_v"] * d + k["b_sv"] * searches + 0.3 * x + rng.normal(size=n) + shock()
    sales = k["c"] * d + k["b_vy"] * views + 0.2 * x + rng.normal(size=n) + shock()
    out = {"t": t.astype(int), "x": x, "g": g, "searches": searches, "views": views, "sales": sales}
    if compliance is not None:
        out = {"t": out["t"], "d": d.astype(int), **{c: v for c, v in out.items() if c != "t"}}
    return pd.DataFrame(out)
