r"""Records of a mediation: path effects (:class:`Mediation`), the total-effect check
(:class:`TotalCheck`) and bootstrap draws (:class:`Bootstrap`).

Every record renders through :class:`~causalflow.effects.render.Rendered` (``to_frame``,
``to_dict``, ``to_markdown``, ``summary``, HTML). Intervals and p-values: t quantiles with
each row's degrees of freedom, or normal quantiles, as the model's inference says; the
joint covariance of the rows comes from the delta method (or the CR3 jackknife) of
:mod:`causalflow.effects.mediation`. The estimates and covariances are computed there; a
record only holds and renders them.

Examples
--------
>>> import causalflow as cf
>>> from causalflow.effects.mediation import simulate_chain
>>> med = cf.ExperimentData(simulate_chain(1000, seed=0), intent_to_treat="t").add_metric(
...     y="sales", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect().with_graph(
...     "T -> searches -> sales").mediate_effect()
>>> type(med).__name__, med.to_frame().path.tolist()
('Mediation', ['direct', 'T -> searches -> sales', 'total_indirect', 'total'])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .._optional import require
from ..errors import ValidationError
from ..graph import CausalGraph
from .render import JointRecords, Rendered, plain

__all__ = ["Bootstrap", "Mediation", "TotalCheck"]


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Bootstrap draws of a record's rows.

    Attributes
    ----------
    replicates : int, B
    failed : int, replicates whose refit was singular (left out, NaN draws)
    unit : "cluster" or "row", what was resampled
    seed : int or None
    draws : (B, m) the replicate estimates of the m rows
    """

    replicates: int
    failed: int
    unit: str
    seed: int | None
    draws: np.ndarray

    def summary(self, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Standard deviation and percentile interval (alpha/2, 1 - alpha/2) of every row."""
        d = self.draws
        if d.shape[0] - self.failed < 2:
            nan = np.full(d.shape[1], np.nan)
            return nan, nan, nan
        lower, upper = np.nanquantile(d, [alpha / 2, 1 - alpha / 2], axis=0)
        return np.nanstd(d, axis=0, ddof=1), lower, upper


def _reference(inference, dof: np.ndarray):
    if inference.distribution == "normal":
        return stats.norm
    dof = np.asarray(dof, dtype=float)
    return stats.t(np.where(np.isfinite(dof) & (dof > 0), dof, np.nan))


def _inference_columns(estimate, cov, dof, alpha, inference) -> dict:
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    ref = _reference(inference, dof)
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = ref.isf(alpha / 2) * np.ones(len(estimate))
        p = 2 * ref.sf(np.abs(estimate / se))
    p = np.where(se > 0, p, np.nan)
    return {"std_error": se, "ci_lower": estimate - crit * se, "ci_upper": estimate + crit * se, "p_value": p}


@dataclass(frozen=True, repr=False)
class Mediation(JointRecords):
    """Path effects of a mediation (from :meth:`GraphEffect.mediate_effect`), with their joint covariance.

    ``to_frame()`` has one row per metric x arm x condition x estimand x path, with
    ``path`` one of ``direct``, each indirect path ``T -> a -> b -> metric``,
    ``total_indirect`` and ``total`` (API.md section 5), and the columns ``estimate,
    std_error, ci_lower, ci_upper, p_value, n, dof, cov_type`` (plus ``boot_std_error,
    boot_ci_lower, boot_ci_upper`` with a bootstrap). ``edges`` holds the coefficient of
    every edge in the same form (``path`` = ``"T -> searches"``, ``"searches -> views"``;
    the treatment's edges at each condition), ``check`` the total-effect check, and
    :meth:`plot` draws the graph with the edge estimates.

    Attributes
    ----------
    records : tuple of dict (metric, arm, condition, estimand, path, estimate, n, dof)
    cov : (m, m) joint covariance of the rows (delta method)
    alpha : float; inference : the model's Inference (cov_type, t or normal)
    graph : CausalGraph; metric : str; mediators : tuple, the mediators whose paths are listed
    treatment_edges : "all" or "graph"
    boot : Bootstrap or None; edges : Mediation or None; check : TotalCheck or None

    Examples
    --------
    >>> import causalflow as cf
    >>> from causalflow.effects.mediation import simulate_chain
    >>> effects = cf.ExperimentData(simulate_chain(3000, seed=3), intent_to_treat="t").add_metric(
    ...     y="sales", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect()
    >>> med = effects.with_graph("T -> searches; T -> views; searches -> views -> sales").mediate_effect(
    ...     mediator="searches", condition_on=["x > 0", "x <= 0"])
    >>> med.to_frame()[["condition", "path"]].values.tolist()[:4]
    [['x > 0', 'direct'], ['x > 0', 'T -> searches -> views -> sales'], ['x > 0', 'total_indirect'], ['x > 0', 'total']]
    >>> med.edges.to_frame().path.tolist()[:4]
    ['T -> searches', 'T -> views', 'searches -> views', 'T -> sales']
    """

    records: tuple
    cov: np.ndarray
    alpha: float
    inference: object
    graph: CausalGraph
    metric: str
    mediators: tuple
    treatment_edges: str = "all"
    boot: Bootstrap | None = None
    edges: Mediation | None = None
    check: TotalCheck | None = None

    _rows_key = "paths"
    _text_columns = 5

    def columns(self) -> tuple:
        base = ("metric", "arm", "condition", "estimand", "path", "estimate", "std_error", "ci_lower", "ci_upper",
                "p_value", "n", "dof", "cov_type")
        return base + (("boot_std_error", "boot_ci_lower", "boot_ci_upper") if self.boot is not None else ())

    def to_dicts(self) -> list[dict]:
        """One dict per row with every column of :meth:`columns`."""
        est = self.estimate
        cols = _inference_columns(est, self.cov, [r["dof"] for r in self.records], self.alpha, self.inference)
        boot = self.boot.summary(self.alpha) if self.boot is not None else None
        out = []
        for i, r in enumerate(self.records):
            row = {"metric": r["metric"], "arm": plain(r["arm"]), "condition": r["condition"],
                   "estimand": r["estimand"], "path": r["path"], "estimate": est[i],
                   **{k: v[i] for k, v in cols.items()}, "n": int(r["n"]), "dof": plain(r["dof"]),
                   "cov_type": self.inference.cov_type}
            if boot is not None:
                row.update(boot_std_error=boot[0][i], boot_ci_lower=boot[1][i], boot_ci_upper=boot[2][i])
            out.append(row)
        return out

    def _meta(self) -> dict:
        out = {"alpha": self.alpha, "cov_type": self.inference.cov_type, "inference": self.inference.distribution,
               "graph": str(self.graph), "metric": self.metric, "mediators": list(self.mediators),
               "treatment_edges": self.treatment_edges,
               "covariance": [[plain(v) for v in row] for row in self.cov]}
        if self.boot is not None:
            out["bootstrap"] = {"replicates": self.boot.replicates, "failed": self.boot.failed,
                                "unit": self.boot.unit, "seed": self.boot.seed}
        return out

    def _display(self) -> tuple[list[str], list[list[str]]]:
        level = f"{1 - self.alpha:.0%}"
        header = ["path", "arm", "condition", "estimand", "metric", "estimate", "std_error", f"{level} CI", "p_value"]
        if self.boot is not None:
            header += [f"bootstrap {level} CI"]
        header += ["n"]
        body = []
        for r in self.to_dicts():
            row = [r["path"], str(r["arm"]), str(r["condition"]), r["estimand"], str(r["metric"]),
                   f"{r['estimate']:.4g}", f"{r['std_error']:.3g}", f"[{r['ci_lower']:.4g}, {r['ci_upper']:.4g}]",
                   f"{r['p_value']:.3g}"]
            if self.boot is not None:
                row.append(f"[{r['boot_ci_lower']:.4g}, {r['boot_ci_upper']:.4g}]")
            body.append(row + [f"{r['n']:,}"])
        return header, body

    def _footer(self) -> list[str]:
        lines = [f"covariance {self.inference.cov_type} of the stacked node equations, delta method"
                 + ("" if self.inference.distribution == "normal" else ", t quantiles")]
        if self.boot is not None:
            lines.append(f"bootstrap: {self.boot.replicates} {self.boot.unit} resamples, seed {self.boot.seed}"
                         + (f", {self.boot.failed} singular and left out" if self.boot.failed else ""))
        lines.append("assumes sequential ignorability and a linear model without treatment-mediator interaction "
                     "(Imai, Keele and Tingley 2010; VanderWeele 2015)")
        if self.check is not None and self.check.restricted:
            lines.append(self.check.line())
        return lines

    # -- drawing -----------------------------------------------------------------------------
    def plot(self, arm=None, condition: str | None = None, estimand: str | None = None, ax=None):
        """Draw the graph with every edge's estimate and interval (needs ``causalflow[plot]``).

        Nodes are laid out in causal layers (T on the left, the metric on the right); edges
        not in the fitted system (outside every path from T to the metric) are grey. One
        arm, condition and estimand is drawn: default the first of each.

        Examples
        --------
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import causalflow as cf
        >>> from causalflow.effects.mediation import simulate_chain
        >>> med = cf.ExperimentData(simulate_chain(500, seed=0), intent_to_treat="t").add_metric(
        ...     y="sales", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect().with_graph(
        ...     "T -> searches -> sales").mediate_effect()
        >>> ax = med.plot()
        >>> sorted(t.get_text().splitlines()[0] for t in ax.texts if "[" in t.get_text())   # the three edges
        ['0.221', '0.335', '0.483']
        """
        plt = require("matplotlib.pyplot", "plot")
        import networkx as nx
        edges = self.edges if self.edges is not None else self
        rows = edges.to_dicts()
        pick = rows[0]
        arm = pick["arm"] if arm is None else plain(arm)
        condition = pick["condition"] if condition is None else condition
        estimand = pick["estimand"] if estimand is None else estimand
        chosen = [r for r in rows if r["arm"] == arm and r["condition"] == condition and r["estimand"] == estimand]
        if not chosen:
            raise ValidationError(f"plot: no edges for arm {arm!r}, condition {condition!r}, estimand {estimand!r}")
        labels = {tuple(r["path"].split(" -> ")): f"{r['estimate']:.3g}\n[{r['ci_lower']:.3g}, {r['ci_upper']:.3g}]"
                  for r in chosen}
        g = self.graph.digraph()
        g.add_edges_from(labels)
        for layer, nodes in enumerate(nx.topological_generations(g)):
            for node in nodes:
                g.nodes[node]["layer"] = layer
        pos = nx.multipartite_layout(g, subset_key="layer")
        if ax is None:
            _, ax = plt.subplots(figsize=(2.6 * (1 + max(nx.get_node_attributes(g, "layer").values())), 4.5))
        fitted = [e for e in g.edges if e in labels]
        other = [e for e in g.edges if e not in labels]
        nx.draw_networkx_nodes(g, pos, ax=ax, node_color="#dde8f5", node_size=1800)
        nx.draw_networkx_labels(g, pos, ax=ax, font_size=9)
        nx.draw_networkx_edges(g, pos, ax=ax, edgelist=fitted, node_size=1800, arrowsize=15,
                               connectionstyle="arc3,rad=0.12")
        nx.draw_networkx_edges(g, pos, ax=ax, edgelist=other, node_size=1800, edge_color="#bbbbbb",
                               style="dashed", connectionstyle="arc3,rad=0.12")
        nx.draw_networkx_edge_labels(g, pos, ax=ax, edge_labels=labels, font_size=7,
                                     connectionstyle="arc3,rad=0.12")
        totals = {r["path"]: r for r in self.to_dicts() if r["arm"] == arm and r["condition"] == condition
                  and r["estimand"] == estimand}
        title = f"{self.metric}: {estimand}, arm {arm}" + ("" if condition == "all" else f", {condition}")
        if "total" in totals:
            title += (f"\ntotal {totals['total']['estimate']:.3g} = direct {totals['direct']['estimate']:.3g}"
                      f" + indirect {totals['total_indirect']['estimate']:.3g}")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
        return ax


@dataclass(frozen=True, repr=False)
class TotalCheck(Rendered):
    r"""Model-fit check: the total effect implied by the graph vs the regression total.

    Per arm x condition x estimand: ``implied_total`` (direct + every indirect path),
    ``regression_total`` (the metric regressed on the treatment and covariates over the same
    rows: ``infer_effect``'s total when no node has missing values), their difference
    ``estimate`` with its delta-method ``std_error`` from the joint covariance of all
    equations, and ``p_value``. The difference is zero up to rounding whenever the graph
    puts no restriction on the treatment's reach (``restricted`` False: every node equation
    holds the treatment and every parent is reachable from T; see
    :meth:`GraphEffect.mediate_effect`); otherwise it tests the restriction, and
    ``verdict`` says whether it is rejected at ``alpha``.

    Examples
    --------
    >>> import causalflow as cf
    >>> from causalflow.effects.mediation import simulate_chain
    >>> effects = cf.ExperimentData(simulate_chain(3000, seed=4), intent_to_treat="t").add_metric(
    ...     y="sales", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect()
    >>> graph = effects.with_graph("T -> searches -> views -> sales")
    >>> graph.mediate_effect().check.to_frame()[["restricted", "verdict"]].values.tolist()
    [[False, 'exact']]
    >>> graph.mediate_effect(treatment_edges="graph").check.to_frame()[["restricted", "verdict"]].values.tolist()
    [[True, 'rejected']]
    """

    records: tuple
    cov: np.ndarray
    alpha: float
    inference: object
    restricted: bool
    boot: Bootstrap | None = None

    _rows_key = "checks"

    @property
    def estimate(self) -> np.ndarray:
        return np.array([r["estimate"] for r in self.records])

    def columns(self) -> tuple:
        return ("metric", "arm", "condition", "estimand", "implied_total", "regression_total", "estimate",
                "std_error", "p_value", "restricted", "verdict")

    def to_dicts(self) -> list[dict]:
        est = self.estimate
        cols = _inference_columns(est, self.cov, [r["dof"] for r in self.records], self.alpha, self.inference)
        out = []
        for i, r in enumerate(self.records):
            p = cols["p_value"][i]
            verdict = "exact" if not self.restricted else ("rejected" if p < self.alpha else "not rejected")
            out.append({"metric": r["metric"], "arm": plain(r["arm"]), "condition": r["condition"],
                        "estimand": r["estimand"], "implied_total": r["implied_total"],
                        "regression_total": r["regression_total"], "estimate": est[i],
                        "std_error": cols["std_error"][i], "p_value": p if self.restricted else np.nan,
                        "restricted": self.restricted, "verdict": verdict})
        return out

    def _meta(self) -> dict:
        return {"alpha": self.alpha, "restricted": self.restricted}

    def _display(self):
        header = ["arm", "condition", "estimand", "implied total", "regression total", "difference", "std_error",
                  "p_value", "verdict"]
        body = [[str(r["arm"]), str(r["condition"]), r["estimand"], f"{r['implied_total']:.4g}",
                 f"{r['regression_total']:.4g}", f"{r['estimate']:.3g}", f"{r['std_error']:.3g}",
                 f"{r['p_value']:.3g}", r["verdict"]] for r in self.to_dicts()]
        return header, body

    _text_columns = 3

    def line(self) -> str:
        """One line for the mediation record's footer."""
        rows = self.to_dicts()
        worst = min(rows, key=lambda r: r["p_value"])
        return (f"graph check: implied - regression total up to {max(abs(r['estimate']) for r in rows):.3g} "
                f"(smallest p = {worst['p_value']:.3g}: {worst['verdict']})")
