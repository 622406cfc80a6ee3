"""Issue 18: serial mediation over a causal graph (``effects.with_graph(...).mediate_effect(...)``).

Checks of the issue: recovery of known path coefficients, coverage of the delta-method
intervals (slow), direct + indirect = total and the total of ``infer_effect``, the joint
covariance against a stacked sandwich built here by hand (and each equation against
linearmodels), clear errors; plus conditional mediation, estimands, CR3 / CR2, the
bootstrap, rendering and the drawing.

The hand-built references below construct every node equation's design matrix from the
DataFrame with numpy (covariates centred at their weighted mean, Lin 2013 interactions),
solve each just-identified equation as (Z'WX)^-1 Z'Wy, and stack the row scores
psi_ie = (Z_e'WX_e)^-1 z_ie w_i e_ie; the joint covariance is
sqrt(c_e c_f) sum_g Psi_ge Psi_gf' with each equation's own small-sample factor c_e.
"""

from __future__ import annotations

import json
import sys

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from linearmodels.iv import IV2SLS

import causalflow as cf
from causalflow.effects.mediation import GraphEffect, Mediation, simulate_chain

GRAPH = "T -> searches; T -> views; searches -> views -> sales"
COMPLETE = "T -> searches; T -> views; searches -> views -> sales; searches -> sales"
TRUTH = {"direct": 0.2, "T -> views -> sales": 0.16, "T -> searches -> views -> sales": 0.1,
         "total_indirect": 0.26, "total": 0.46}
EDGES = {"T -> searches": 0.5, "T -> views": 0.4, "searches -> views": 0.5, "T -> sales": 0.2,
         "views -> sales": 0.4}


def effects_of(df, cov_type=None, condition_on=None, estimands=None, covariates=("x",), y="sales", **design):
    data = cf.ExperimentData(df, intent_to_treat="t", **design)
    model = data.add_metric(y=y, exogenous_covariates=list(covariates)).fit(cf.LinearModel(cov_type=cov_type))
    return model.infer_effect(condition_on=condition_on, estimands=estimands)


def frame(med: Mediation) -> pd.DataFrame:
    return med.to_frame()


# -- recovery of known paths --------------------------------------------------------------
@pytest.mark.parametrize("design", ["ab", "cluster", "encouragement"])
def test_paths_recover_the_truth(design):
    kwargs = {"ab": {}, "cluster": {"n_clusters": 2000}, "encouragement": {"compliance": 0.6}}[design]
    df = simulate_chain(200_000, seed=11, **kwargs)
    extra = {"cluster": {"cluster_by": "g"}, "encouragement": {"treated": "d"}}.get(design, {})
    estimand = "LATE" if design == "encouragement" else None
    med = effects_of(df, **extra).with_graph(GRAPH).mediate_effect(estimands=estimand)
    for table, truth in ((frame(med), TRUTH), (med.edges.to_frame(), EDGES)):
        table = table.set_index("path")
        assert set(table.index) == set(truth)
        for path, value in truth.items():
            est, se = table.estimate[path], table.std_error[path]
            assert abs(est - value) < 4 * se, (path, est, value, se)
            assert se < 0.04, (path, se)


# -- coverage (the 500 replications) ---------------------------------------------------
def _coverage_rep(seed: int, design: str) -> dict:
    if design == "rows":
        df, extra, estimand = simulate_chain(2000, seed=seed), {}, None
    elif design == "clusters":
        df, extra, estimand = simulate_chain(4000, seed=seed, n_clusters=200), {"cluster_by": "g"}, None
    else:
        df, extra, estimand = simulate_chain(4000, seed=seed, compliance=0.6), {"treated": "d"}, "LATE"
    table = frame(effects_of(df, **extra).with_graph(GRAPH).mediate_effect(estimands=estimand)).set_index("path")
    return {path: bool(table.ci_lower[path] <= value <= table.ci_upper[path]) for path, value in TRUTH.items()}


@pytest.mark.slow
@pytest.mark.parametrize("design", ["rows", "clusters", "encouragement"])
def test_delta_method_intervals_cover(design):
    """500 replications, seeds 0..499: HC1 with 2,000 rows; CR1 (t, G - 1 dof) with 200 clusters of
    ~20 rows (treatment randomized by cluster, cluster effects in every equation); 2SLS LATE
    with 60% one-sided compliance and 4,000 rows. Measured (seeds 0..499), direct / T->views->sales /
    T->searches->views->sales / total_indirect / total: rows 0.938 0.958 0.968 0.954 0.938;
    clusters 0.936 0.962 0.954 0.964 0.938; encouragement 0.956 0.950 0.952 0.938 0.948."""
    reps = 500
    hits = [_coverage_rep(seed, design) for seed in range(reps)]
    mc_se = np.sqrt(0.95 * 0.05 / reps)  # 0.0097
    for path in TRUTH:
        coverage = np.mean([h[path] for h in hits])
        # the band 93-97%; +-2.5 MC SE around 0.95 is [0.926, 0.974], a little wider
        assert 0.93 <= coverage <= 0.97, (design, path, coverage)
        assert abs(coverage - 0.95) <= 2.5 * mc_se, (design, path, coverage)


# -- totals --------------------------------------------------------------------------------
DESIGNS = {   # simulate_chain options, ExperimentData options
    "ab": ({}, {}),
    "adaptive": ({}, {"propensity": "p"}),
    "cluster": ({"n_clusters": 60}, {"cluster_by": "g"}),
    "encouragement": ({"compliance": 0.7}, {"treated": "d"}),
    "encouragement_cluster": ({"compliance": 0.7, "n_clusters": 60}, {"treated": "d", "cluster_by": "g"}),
}


def _design(name: str, n: int = 3000, seed: int = 0):
    sim, extra = DESIGNS[name]
    df = simulate_chain(n, seed=seed, **sim)
    if name == "adaptive":
        df["p"] = np.random.default_rng(seed).uniform(0.3, 0.7, n)
    return df, extra


@pytest.mark.parametrize("name", list(DESIGNS))
@pytest.mark.parametrize("graph", [GRAPH, COMPLETE, "T -> searches -> views -> sales"])
def test_direct_plus_indirect_is_the_total_of_infer_effect(name, graph):
    df, extra = _design(name)
    conditions = ["x > 0", "x <= 0.5"]
    eff = effects_of(df, condition_on=conditions, **extra)
    med = eff.with_graph(graph).mediate_effect()
    table = frame(med)
    for (_, cond, estimand), rows in table.groupby(["arm", "condition", "estimand"], sort=False):
        rows = rows.set_index("path")
        indirect = rows.estimate.drop(["direct", "total_indirect", "total"])
        assert abs(indirect.sum() - rows.estimate["total_indirect"]) < 1e-10
        assert abs(rows.estimate["direct"] + indirect.sum() - rows.estimate["total"]) < 1e-10
        ref = eff.to_frame().set_index(["condition", "estimand"])
        # with the treatment in every node equation the implied total is the regression total
        # for every acyclic graph, complete or not (see GraphEffect.mediate_effect, Notes)
        assert abs(rows.estimate["total"] - ref.estimate[(cond, estimand)]) < 1e-10
    check = med.check.to_frame()
    assert not check.restricted.any() and (check.verdict == "exact").all()
    assert np.abs(check.estimate).max() < 1e-10


@pytest.mark.parametrize("cov_type", ["HC0", "CR0", "CR3"])
def test_total_has_the_standard_error_of_infer_effect(cov_type):
    """The implied total is identically the regression total, so its influence is the same:
    HC0 / CR0 (no per-equation factor) and the CR3 jackknife of the rows agree exactly."""
    df, extra = _design("encouragement" if cov_type == "HC0" else "encouragement_cluster")
    eff = effects_of(df, cov_type=cov_type, condition_on=["x > 0.3"], **extra)
    table = frame(eff.with_graph(GRAPH).mediate_effect())
    total = table[table.path == "total"]
    np.testing.assert_allclose(total.estimate.to_numpy(), eff.estimate, rtol=0, atol=1e-10)
    np.testing.assert_allclose(total.std_error.to_numpy(), eff.std_error, rtol=1e-10)


def test_a_restricted_graph_reports_its_difference():
    """Where the graph claims T does not reach a node (treatment_edges="graph" without T ->
    views and T -> sales; a side parent u that T does not reach), the implied total differs
    from the regression total; the check reports the difference and tests it."""
    df = simulate_chain(5000, seed=3)
    df["u"] = np.random.default_rng(0).normal(size=len(df)) + 0.3 * df.sales
    eff = effects_of(df)
    restricted = eff.with_graph("T -> searches -> views -> sales").mediate_effect(treatment_edges="graph")
    rows = frame(restricted).set_index("path")
    assert rows.estimate["direct"] == 0.0 and rows.std_error["direct"] == 0.0
    check = restricted.check.to_frame().iloc[0]
    assert check.restricted and check.verdict == "rejected"     # T -> views and T -> sales exist
    assert abs(check.implied_total - rows.estimate["total"]) < 1e-12
    assert abs(check.regression_total - eff.estimate[0]) < 1e-10
    assert abs(check.estimate - (check.implied_total - check.regression_total)) < 1e-12
    side = eff.with_graph("T -> searches -> views -> sales; u -> views").mediate_effect()
    check = side.check.to_frame().iloc[0]
    assert check.restricted and check.std_error > 0 and 0 <= check.p_value <= 1
    assert "u -> views" in set(side.edges.to_frame().path)
    assert "graph check" in side.summary()


# -- joint covariance: the stacked sandwich by hand ----------------------------------------------
def _lin(df, treat, xc):
    return np.column_stack([np.ones(len(df)), treat, xc, treat * xc])


def _hand_stacked(df, graph_parents, kinds, w, clusters, cov_type):
    """(coefficients, joint covariance) of every equation: per kind, the nodes in causal order
    with their parents, then the total regression of sales; ordered like cov_params()."""
    n = len(df)
    ww = np.ones(n) if w is None else w
    xc = df.x.to_numpy() - np.average(df.x, weights=ww)
    Z_lin = _lin(df, df.t.to_numpy(float), xc)
    equations = []
    for kind in kinds:
        X_lin = _lin(df, df.d.to_numpy(float), xc) if kind == "iv" else Z_lin
        for node, parents in [*graph_parents, ("sales", ())]:
            extra = df[list(parents)].to_numpy() if parents else np.empty((n, 0))
            equations.append((np.c_[Z_lin, extra], np.c_[X_lin, extra], df[node].to_numpy()))
    coefs, psis, factors = [], [], []
    G = None if clusters is None else len(np.unique(clusters))
    for Z, X, y in equations:
        zwx = (Z * ww[:, None]).T @ X
        theta = np.linalg.solve(zwx, (Z * ww[:, None]).T @ y)
        e = y - X @ theta
        psi = (Z * (ww * e)[:, None]) @ np.linalg.inv(zwx).T          # rows: (Z'WX)^-1 z_i w_i e_i
        P = Z.shape[1]
        factors.append(np.full(P, n / (n - P) if cov_type == "HC1" else G / (G - 1) * (n - 1) / (n - P)))
        coefs.append(theta)
        psis.append(psi)
    Psi = np.hstack(psis)
    if clusters is not None:
        Psi = pd.DataFrame(Psi).groupby(clusters).sum().to_numpy()
    root = np.sqrt(np.concatenate(factors))
    return np.concatenate(coefs), (Psi.T @ Psi) * np.outer(root, root)


@pytest.mark.parametrize("name,cov_type", [("ab", "HC1"), ("adaptive", "HC1"), ("cluster", "CR1"),
                                           ("encouragement", "HC1"), ("encouragement_cluster", "CR1")])
def test_joint_covariance_is_the_stacked_sandwich(name, cov_type):
    df, extra = _design(name, n=1500, seed=7)
    eff = effects_of(df, cov_type=cov_type, **extra)
    graph = eff.with_graph(COMPLETE)
    system = graph.node_equations()
    parents = [("searches", ()), ("views", ("searches",)), ("sales", ("views", "searches"))]
    kinds = ("itt", "iv") if "treated" in extra else ("itt",)
    w = None
    if name == "adaptive":
        p = df.p.to_numpy()
        w = np.where(df.t == 1, 1 / p, 1 / (1 - p))
    clusters = df.g.to_numpy() if cov_type == "CR1" else None
    coef, cov = _hand_stacked(df, parents, kinds, w, clusters, cov_type)
    np.testing.assert_allclose(system.params().to_numpy(), coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(system.cov_params().to_numpy(), cov, rtol=1e-8, atol=1e-14)
    # a serial path by the delta method on the hand-built covariance: a_S * b_SV * b_VY
    index = list(system.params().index)
    kind = kinds[-1]
    at = [[i for i, key in enumerate(index) if key[:2] == (kind, "searches")][1],   # the treatment's coefficient
          index.index((kind, "views", "searches")), index.index((kind, "sales", "views"))]
    values = coef[at]
    grad = np.zeros(len(coef))
    grad[at] = [values[1] * values[2], values[0] * values[2], values[0] * values[1]]
    med = graph.mediate_effect(estimands="ATE")
    row = frame(med).set_index("path").loc["T -> searches -> views -> sales"]
    assert abs(row.estimate - np.prod(values)) < 1e-12
    np.testing.assert_allclose(row.std_error, np.sqrt(grad @ cov @ grad), rtol=1e-8)


@pytest.mark.parametrize("cov_type", ["HC1", "CR1"])
def test_each_node_equation_matches_linearmodels(cov_type):
    """The diagonal blocks of the joint covariance are the single-equation covariances:
    linearmodels IV2SLS (mediators exogenous, the treatment received instrumented)."""
    df, extra = _design("encouragement_cluster", n=2000, seed=5)
    if cov_type == "HC1":
        extra = {"treated": "d"}
    system = effects_of(df, cov_type=cov_type, **extra).with_graph(COMPLETE).node_equations()
    params, cov = system.params(), system.cov_params()
    xc = df.x - df.x.mean()
    base = pd.DataFrame({"const": 1.0, "xc": xc})
    for node, parents in [("searches", []), ("views", ["searches"]), ("sales", ["views", "searches"])]:
        exog = pd.concat([base, df[parents]], axis=1)
        endog = pd.DataFrame({"d": df.d, "d_x": df.d * xc})
        instruments = pd.DataFrame({"t": df.t, "t_x": df.t * xc})
        options = {"cov_type": "robust", "debiased": True} if cov_type == "HC1" else \
            {"cov_type": "clustered", "clusters": df.g, "debiased": True}
        ref = IV2SLS(df[node], exog, endog, instruments).fit(**options)
        order = ["const", "d", "xc", "d_x", *parents]
        ours = params.xs(("iv", node), level=["kind", "equation"])
        np.testing.assert_allclose(ours.to_numpy(), ref.params[order].to_numpy(), rtol=1e-8)
        mine = (cov.index.get_level_values("kind") == "iv") & (cov.index.get_level_values("equation") == node)
        block = cov.to_numpy()[np.ix_(mine, mine)]
        np.testing.assert_allclose(block, ref.cov.loc[order, order].to_numpy(), rtol=1e-8)


# -- conditional mediation and estimands -----------------------------------------------------
def test_conditional_mediation_uses_the_treatment_interactions():
    df = simulate_chain(6000, seed=4)
    df["searches"] += 0.4 * df.t * df.x  # the treatment's effect on searches grows with x
    conditions = ["x > 1", "x < -1"]
    eff = effects_of(df, condition_on=conditions)
    med = eff.with_graph(GRAPH).mediate_effect()
    edges = med.edges.to_frame().set_index(["condition", "path"])
    searches = effects_of(df, condition_on=conditions, y="searches").to_frame().set_index("condition")
    for cond in conditions:   # the T -> searches edge in a subgroup is the CATE of searches there
        assert abs(edges.estimate[(cond, "T -> searches")] - searches.estimate[cond]) < 1e-10
        assert abs(edges.std_error[(cond, "T -> searches")] - searches.std_error[cond]) < 1e-10
    table = frame(med).set_index(["condition", "path"])
    high = table.estimate[("x > 1", "T -> searches -> views -> sales")]
    low = table.estimate[("x < -1", "T -> searches -> views -> sales")]
    assert high > 0.15 > 0.05 > low        # paths 0.2 a_S: a_S about 1.1 and -0.1 in the two subgroups
    assert set(table.reset_index().estimand) == {"CATE"}
    # the default conditions are the effects record's; None asks for the average
    assert list(frame(eff.with_graph(GRAPH).mediate_effect(condition_on=None)).condition.unique()) == ["all"]


def test_estimands_of_an_encouragement_design():
    df = simulate_chain(8000, seed=9, compliance=0.5)
    eff = effects_of(df, treated="d", estimands=["ITT", "LATE", "ATE"])
    med = eff.with_graph(GRAPH).mediate_effect()
    table = frame(med)
    assert list(table.estimand.unique()) == ["ITT", "LATE", "ATE"]
    totals = table[table.path == "total"].set_index("estimand").estimate
    ref = eff.to_frame().set_index("estimand").estimate
    for estimand in ("ITT", "LATE", "ATE"):
        assert abs(totals[estimand] - ref[estimand]) < 1e-10
    # the ITT paths are the assignment's: take-up 1/2 halves the treatment's edges
    paths = table.set_index(["estimand", "path"]).estimate
    ratio = paths[("ITT", "T -> views -> sales")] / paths[("LATE", "T -> views -> sales")]
    assert 0.4 < ratio < 0.6
    assert list(frame(eff.with_graph(GRAPH).mediate_effect(estimands="ITT")).estimand.unique()) == ["ITT"]


def test_multi_arm_missing_values_weights_and_a_digraph():
    rng = np.random.default_rng(3)
    n = 3000
    df = pd.DataFrame({"arm": rng.choice(["c", "a", "b"], n, p=[0.5, 0.2, 0.3]), "x": rng.normal(size=n),
                       "p_c": 0.5, "p_a": 0.2, "p_b": 0.3})
    t1, t2 = (df.arm == "a").to_numpy(float), (df.arm == "b").to_numpy(float)
    df["m"] = 0.5 * t1 + 1.0 * t2 + df.x + rng.normal(size=n)
    df["y"] = 0.2 * t1 + 0.7 * df.m + rng.normal(size=n)
    df.loc[rng.random(n) < 0.05, "m"] = np.nan
    propensity = {"c": "p_c", "a": "p_a", "b": "p_b"}      # inverse-probability weights
    data = cf.ExperimentData(df, intent_to_treat="arm", control="c", propensity=propensity)
    eff = data.add_metric(y="y", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect()
    med = eff.with_graph(nx.DiGraph([("T", "m"), ("m", "y")])).mediate_effect()
    table = frame(med)
    assert list(table.arm.unique()) == ["a", "b"]
    assert (table.n == int(df.m.notna().sum())).all()
    paths = table.set_index(["arm", "path"]).estimate
    assert abs(paths[("a", "T -> m -> y")] - 0.35) < 0.1 and abs(paths[("b", "T -> m -> y")] - 0.7) < 0.1
    same = eff.with_graph("T -> m -> y").mediate_effect()
    np.testing.assert_allclose(same.cov, med.cov, rtol=1e-12)
    # over the rows where m is observed, the total is that of the metric fitted on them
    sub = df[df.m.notna()]
    ref = cf.ExperimentData(sub, intent_to_treat="arm", control="c", propensity=propensity).add_metric(
        y="y", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect()
    np.testing.assert_allclose(table[table.path == "total"].estimate.to_numpy(), ref.estimate, atol=1e-10)


def test_mediator_selects_the_paths_and_direct_is_the_rest():
    eff = effects_of(simulate_chain(3000, seed=6))
    graph = eff.with_graph(COMPLETE)
    full = frame(graph.mediate_effect()).set_index("path").estimate
    assert list(full.index) == ["direct", "T -> searches -> sales", "T -> views -> sales",
                                "T -> searches -> views -> sales", "total_indirect", "total"]
    one = frame(graph.mediate_effect(mediator="searches")).set_index("path").estimate
    assert list(one.index) == ["direct", "T -> searches -> sales", "T -> searches -> views -> sales",
                               "total_indirect", "total"]
    assert abs(one["direct"] - (full["direct"] + full["T -> views -> sales"])) < 1e-12
    chain = frame(graph.mediate_effect(mediator=["searches", "views"])).set_index("path").estimate
    assert list(chain.index) == ["direct", "T -> searches -> views -> sales", "total_indirect", "total"]
    assert abs(chain["total"] - full["total"]) < 1e-12
    assert graph.mediate_effect(mediator=["searches", "views"]).mediators == ("searches", "views")


@pytest.mark.parametrize("cov_type", ["CR2", "CR3"])
def test_small_cluster_covariances(cov_type):
    df = simulate_chain(2000, seed=8, n_clusters=30, compliance=0.7)
    estimands = ["ITT", "ATE"] if cov_type == "CR2" else None     # infer_effect refuses CR2 for a LATE too
    eff = effects_of(df, cov_type=cov_type, cluster_by="g", treated="d", estimands=estimands)
    graph = eff.with_graph(GRAPH)
    if cov_type == "CR2":
        with pytest.raises(cf.ValidationError, match="CR2"):
            graph.mediate_effect(estimands="LATE")    # a LATE with covariates: estimated complier means
        table = frame(graph.mediate_effect())
        system = graph.node_equations()
        assert np.isfinite(system.cov_params().to_numpy()).all()
        assert (table.dof.astype(float) < 29).all()   # Satterthwaite, below G - 1
    else:
        table = frame(graph.mediate_effect())
        assert set(table.dof) == {29}
    assert np.isfinite(table.std_error).all() and (table.std_error > 0).all()


# -- bootstrap -----------------------------------------------------------------------------
def test_bootstrap_is_seeded_parallel_and_close_to_the_delta_method():
    eff = effects_of(simulate_chain(2000, seed=12))
    graph = eff.with_graph(GRAPH)
    one = graph.mediate_effect(bootstrap=300, seed=5, n_jobs=1)
    two = graph.mediate_effect(bootstrap=300, seed=5, n_jobs=2)
    np.testing.assert_array_equal(one.boot.draws, two.boot.draws)
    assert one.boot.unit == "row" and one.boot.failed == 0
    table = frame(one)
    assert {"boot_std_error", "boot_ci_lower", "boot_ci_upper"} <= set(table.columns)
    np.testing.assert_allclose(table.boot_std_error, table.std_error, rtol=0.2)
    assert (table.boot_ci_lower < table.estimate).all() and (table.estimate < table.boot_ci_upper).all()
    other = graph.mediate_effect(bootstrap=300, seed=6, n_jobs=1)
    assert not np.array_equal(other.boot.draws, one.boot.draws)


def test_cluster_bootstrap_resamples_clusters():
    df = simulate_chain(3000, seed=13, n_clusters=120, compliance=0.7)
    eff = effects_of(df, cluster_by="g", treated="d")
    med = eff.with_graph(GRAPH).mediate_effect(bootstrap=200, seed=1)
    assert med.boot.unit == "cluster" and med.edges.boot.unit == "cluster"
    table = frame(med)
    np.testing.assert_allclose(table.boot_std_error, table.std_error, rtol=0.35)
    assert "bootstrap: 200 cluster resamples" in med.summary()


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("graph,message", [
    ("T -> searches -> views -> searches; views -> sales", r"cycle searches -> views -> searches"),
    ("T -> searches -> clicks -> sales", r"node 'clicks' is not a column of the data"),
    ("T -> searches; sales -> T", r"edge 'sales -> T' points into the treatment"),
    ("searches -> sales", r"no node 'T'"),
    ("T -> searches; views -> sales", r"no directed path leads from 'T' to 'sales'"),
    ("T -> searches -> views", r"holds none of the effects' metrics \['sales'\]"),
    ("T -> x -> sales", r"node 'x' is a covariate"),
    ("T -> t -> sales", r"node 't' is the intent_to_treat"),
    ("T -> searches; sales", r"statement 'sales' has no edge"),
    ("T -> -> sales", r"empty node name"),
    (42, r"expected text .* or a networkx DiGraph"),
])
def test_graph_errors_name_the_edge_or_node(graph, message):
    eff = effects_of(simulate_chain(300, seed=0))
    with pytest.raises(cf.ValidationError, match=message):
        eff.with_graph(graph)


def test_mediator_errors():
    eff = effects_of(simulate_chain(300, seed=0))
    graph = eff.with_graph(GRAPH)
    for mediator, message in [
        ("nope", r"'nope' is not a node of the graph"),
        ("sales", r"'sales' is the outcome"),
        ("T", r"'T' is the treatment"),
        (["views", "searches"], r"no directed path leads from 'views' to 'searches'"),
        (["searches", "searches"], r"listed twice"),
        (7, r"expected a node name or a list"),
    ]:
        with pytest.raises(cf.ValidationError, match=message):
            graph.mediate_effect(mediator=mediator)


def test_a_mediator_off_the_paths_is_refused():
    df = simulate_chain(300, seed=0)
    df["other"] = np.random.default_rng(0).normal(size=len(df))
    eff = effects_of(df)
    graph = eff.with_graph(GRAPH + "; T -> other")
    with pytest.raises(cf.ValidationError, match=r"'other' is not on a directed path from 'T' to 'sales'"):
        graph.mediate_effect(mediator="other")
    with pytest.raises(cf.ValidationError, match="no mediator lies between"):
        eff.with_graph("T -> sales; T -> other").mediate_effect()


def test_argument_errors():
    df = simulate_chain(300, seed=0, compliance=0.8)
    eff = effects_of(df)                                # an A/B analysis (d is just a column)
    graph = eff.with_graph(GRAPH)
    with pytest.raises(cf.ValidationError, match=r"'LATE' needs an encouragement design"):
        graph.mediate_effect(estimands="LATE")
    with pytest.raises(cf.ValidationError, match=r"'CATE' is not one of"):
        graph.mediate_effect(estimands="CATE")
    with pytest.raises(cf.ValidationError, match="bootstrap"):
        graph.mediate_effect(bootstrap=10)
    with pytest.raises(cf.ValidationError, match="seed"):
        graph.mediate_effect(bootstrap=100, seed=-1)
    with pytest.raises(cf.ValidationError, match="treatment_edges"):
        graph.mediate_effect(treatment_edges="some")
    with pytest.raises(cf.ValidationError, match="unknown column"):
        graph.mediate_effect(condition_on="zz > 1")
    with pytest.raises(cf.ValidationError, match=r"metric: 'views' is not a metric of these effects"):
        eff.with_graph(GRAPH, metric="views")
    both = effects_of(df, y=["views", "sales"])
    assert both.with_graph(GRAPH).metric == "sales"      # the metric the others lead to
    assert both.with_graph(GRAPH, metric="views").mediate_effect().metric == "views"
    projected = effects_of(df, condition_on=["x > 0", "x <= 0"]).project({"x > 0": 0.5, "x <= 0": 0.5})
    with pytest.raises(cf.ValidationError, match="pass condition_on"):
        projected.with_graph(GRAPH).mediate_effect()
    with pytest.raises(cf.ValidationError, match="needs effects from a fitted cf.LinearModel"):
        GraphEffect(cf.Effects((), np.zeros((0, 0)), 0.05, None, (), eff.inference), GRAPH)


# -- records and the drawing ----------------------------------------------------------------
def test_record_columns_and_serialisation():
    eff = effects_of(simulate_chain(1000, seed=2), cluster_by="g")
    med = eff.with_graph(GRAPH).mediate_effect()
    table = med.to_frame()
    assert list(table.columns) == ["metric", "arm", "condition", "estimand", "path", "estimate", "std_error",
                                   "ci_lower", "ci_upper", "p_value", "n", "dof", "cov_type"]
    assert table.path.tolist() == ["direct", "T -> views -> sales", "T -> searches -> views -> sales",
                                   "total_indirect", "total"]
    payload = json.loads(json.dumps(med.to_dict()))
    assert payload["graph"] == "T -> searches; T -> views; searches -> views; views -> sales"
    assert len(payload["paths"]) == 5 and np.array(payload["covariance"]).shape == (5, 5)
    assert "T -> searches -> views -> sales" in med.to_markdown()
    assert "sequential ignorability" in med.summary() and "<table>" in med._repr_html_()
    assert med.check.to_frame().verdict.tolist() == ["exact"]
    assert np.allclose(np.diag(med.cov), table.std_error ** 2)
    assert med.cov.flags.writeable is False


def test_plot_draws_the_edges(monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    med = effects_of(simulate_chain(1000, seed=2)).with_graph(GRAPH).mediate_effect()
    ax = med.plot()
    labels = [t.get_text() for t in ax.texts if "[" in t.get_text()]
    assert len(labels) == 5
    edges = med.edges.to_frame()
    assert sorted(float(t.splitlines()[0]) for t in labels) == sorted(float(f"{v:.3g}") for v in edges.estimate)
    assert "total" in ax.get_title()
    with pytest.raises(cf.ValidationError, match="no edges for arm"):
        med.plot(condition="x > 0")
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'causalflow\[plot\]'):
        med.plot()
