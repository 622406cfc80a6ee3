"""The package layout and the shared pieces of the foundations issue: no import cycle, one
coefficient layout, one covariance object, the t reference of every record."""

import ast
import pathlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import causalflow as cf
from causalflow.linalg.sandwich import FEW_CLUSTERS, Covariance, default_cov_type

PACKAGE = pathlib.Path(cf.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, name: str, modules: set) -> set:
    """Every causalflow module that ``path`` imports, at top level or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # importing a.b.c also runs a and a.b: count the deepest module that exists
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # a package's own ancestors are initialised before it in any case: not an edge
            if target and target != name and not name.startswith(target + ".") \
                    and target.startswith("causalflow"):
                out.add(target)
    return out


def _import_graph() -> dict:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, name, modules) for name, path in files.items()}


def _cycle(graph: dict) -> list | None:
    """One import cycle of the graph (a list of modules), or None (iterative DFS)."""
    state = {}
    for root in graph:
        if root in state:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = "done"
                stack.pop()
                path.pop()
            elif state.get(child) == "open":
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = "open"
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def test_no_import_cycle_anywhere_in_the_package():
    """Arrows point down only, lazy imports inside functions included."""
    graph = _import_graph()
    assert len(graph) > 30  # the walker found the package
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_layout_builds_the_delta_vectors_of_the_fit():
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({"t": rng.choice(["c", "a", "b"], n), "x": rng.normal(size=n), "z": rng.normal(size=n)})
    df["y"] = (df.t == "a") * (1 + df.x) + (df.t == "b") * (2 - df.z) + rng.normal(size=n)
    model = cf.ExperimentData(df, intent_to_treat="t", control="c").add_metric(
        y="y", exogenous_covariates=["x", "z"]).fit(cf.LinearModel)
    layout = model.layout
    assert (layout.n_arms, layout.q, layout.p) == (2, 2, 9)
    names = model.names
    assert names[layout.arm(2)] == "t[b]" and names[layout.covariates] == ["x", "z"]
    assert names[layout.interactions(1)] == ["t[a]:x", "t[a]:z"]
    effect = model.infer_effect(condition_on="x > 0").to_frame()
    sub = df.x > 0
    shift = df[["x", "z"]][sub].mean().to_numpy() - df[["x", "z"]].mean().to_numpy()
    coef = model.params()["y"].to_numpy()
    expected = [layout.effect(j, shift) @ coef for j in (1, 2)]
    np.testing.assert_allclose(effect.estimate, expected, rtol=1e-12)


def test_default_covariance_follows_the_number_of_clusters():
    assert default_cov_type(None) == "HC1"
    assert default_cov_type(FEW_CLUSTERS) == "CR1"
    assert default_cov_type(FEW_CLUSTERS - 1) in ("CR2", "CR3")
    with pytest.raises(cf.ValidationError, match="cov_type: expected one of"):
        cf.LinearModel(cov_type="HC3")
    with pytest.raises(cf.ValidationError, match="inference"):
        cf.LinearModel(inference="z")
    cov = Covariance.of("CR3")
    assert (cov.clustered, cov.meat, cov.dof(100, 4, 12), cov.factor(100, 4, 12)) == (True, "jackknife", 11, 11 / 12)


def _cluster_table(n_clusters: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 30, n_clusters)
    store = np.repeat(np.arange(n_clusters), sizes)
    arm = rng.permutation(np.arange(n_clusters) % 2)[store]
    y = 0.3 * arm + rng.normal(size=n_clusters)[store] + rng.normal(size=len(store))
    return pd.DataFrame({"store": store, "t": arm, "y": y})


def test_records_say_which_covariance_and_dof_and_use_t_quantiles():
    df = _cluster_table(20)
    data = cf.ExperimentData(df, intent_to_treat="t", cluster_by="store")
    assert data.design.cov_type == default_cov_type(20)
    assert f"default covariance: {data.design.cov_type}" in str(data.design)
    for cov_type in ("CR1", "CR3"):
        model = data.add_metric(y="y").fit(cf.LinearModel(cov_type=cov_type))
        row = model.infer_effect().to_frame().iloc[0]
        dof = row.dof
        assert row.cov_type == cov_type
        if cov_type == "CR1":
            assert dof == 19
        else:  # the Bell-McCaffrey dof: unequal clusters (3 to 29 rows) have fewer than G - 1
            assert 5 < dof < 18.5
        half = stats.t.isf(0.025, dof) * row.std_error
        assert row.ci_upper - row.estimate == pytest.approx(half, rel=1e-12)
        assert row.p_value == pytest.approx(2 * stats.t.sf(abs(row.estimate / row.std_error), dof), rel=1e-12)
        normal = data.add_metric(y="y").fit(cf.LinearModel(cov_type=cov_type, inference="normal"))
        row_n = normal.infer_effect().to_frame().iloc[0]
        assert row_n.ci_upper - row_n.estimate == pytest.approx(stats.norm.isf(0.025) * row.std_error, rel=1e-12)
        assert f"t quantiles, dof {dof:.4g}" in model.infer_effect().summary()
    default = data.add_metric(y="y").fit(cf.LinearModel)
    assert default.cov_type == data.design.cov_type


@pytest.mark.parametrize("n_clusters", [20, 60])
def test_planning_uses_the_fit_reference_with_clusters(n_clusters):
    """The power of a cluster design uses the fitted model's t reference: below 50 clusters
    the CR3 default's Bell-McCaffrey dof, which for G/2 + G/2 equal clusters is the dof a fit
    of such a design reports (G - 2); from 50 clusters on CR1's G - 1."""
    common = dict(sd=1.0, icc=0.1, cluster_size=20.0, alpha=0.05)
    plan = cf.power(0.3, 20 * n_clusters, **common)
    units = np.repeat(np.arange(n_clusters), 20)
    table = pd.DataFrame({"store": units, "t": units % 2, "y": np.sin(np.arange(len(units)))})
    fitted = cf.ExperimentData(table, intent_to_treat="t", cluster_by="store").add_metric(y="y").fit(
        cf.LinearModel).infer_effect().to_frame().dof.iloc[0]
    assert fitted == pytest.approx(n_clusters - 2 if n_clusters < 50 else n_clusters - 1, rel=1e-9)
    crit = stats.t.isf(0.025, fitted)
    lam = 0.3 / plan.std_error
    expected = stats.nct.sf(crit, fitted, lam) + stats.nct.cdf(-crit, fitted, lam)
    assert plan.power == pytest.approx(expected, rel=1e-6)


def test_records_need_only_the_contrast_model_protocol():
    """relative() and project() reach the model through ContrastModel's public methods only:
    a wrapper that exposes just those gives the same numbers."""
    from causalflow.effects.record import ContrastModel

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"t": rng.integers(0, 2, 400), "x": rng.normal(size=400)})
    df["y"] = 10 + df.t * (1 + df.x) + rng.normal(size=400)
    model = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y", exogenous_covariates=["x"]).fit(
        cf.LinearModel)
    assert isinstance(model, ContrastModel)

    class Public:
        metrics = model.metrics
        covariates = model.covariates
        infer_effect = staticmethod(lambda **kw: model.infer_effect(**kw))
        effects_at_means = staticmethod(model.effects_at_means)
        control_means = staticmethod(model.control_means)

    effects = model.infer_effect(condition_on=["x > 0", "x <= 0"])
    wrapped = effects._derive(effects.records, effects.cov, effects.conditions)
    object.__setattr__(wrapped, "model", Public())
    pd.testing.assert_frame_equal(wrapped.relative().to_frame(), effects.relative().to_frame())
    target = pd.DataFrame({"x": [0.5, 1.5]})
    pd.testing.assert_frame_equal(wrapped.project(target).to_frame(), effects.project(target).to_frame())
    mix = {"x > 0": 0.3, "x <= 0": 0.7}
    pd.testing.assert_frame_equal(wrapped.project(mix).to_frame(), effects.project(mix).to_frame())
    look = effects._derive(effects.records, effects.cov, effects.conditions)
    object.__setattr__(look, "model", None)
    with pytest.raises(cf.ValidationError, match="needs effects of a fitted model"):
        look.relative()
