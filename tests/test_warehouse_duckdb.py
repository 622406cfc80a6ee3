"""Engine tables through DuckDB equal the in-memory fit (issue 19).

Reference: the in-memory engine, itself checked against linearmodels / statsmodels at rtol
1e-8 (tests/test_vs_peers.py) and clubSandwich / brute-force refits for CR3
(tests/test_small_sample.py). The engine computes the same sums in another order, so the
results agree to rounding: rtol 1e-10 on coefficients, standard errors, conditional
effects, ITT and LATE, p-values and anytime-valid p-values and sequences. The data are
drawn with moderate t statistics, so that p-values are not in the far tail where a
relative difference of 1e-13 in t becomes 1e-10 in p.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import causalflow as cf

duckdb = pytest.importorskip("duckdb")
ibis = pytest.importorskip("ibis")

RTOL = 1e-10
COLUMNS = ["estimate", "std_error", "ci_lower", "ci_upper", "p_value", "av_p_value", "av_ci_lower",
           "av_ci_upper", "n", "dof"]


def make_frame(n: int = 3000, seed: int = 19) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 60, n)
    z = (rng.random(60) < 0.5).astype(int)[cluster]          # cluster-randomised encouragement
    x = rng.normal(size=n) + 0.3 * rng.normal(size=60)[cluster]
    device = rng.choice(["desktop", "mobile", "tablet"], n, p=[0.5, 0.3, 0.2])
    complier = rng.random(n) < 1 / (1 + np.exp(-x))
    d = z * complier
    shock = 0.4 * rng.normal(size=60)[cluster]
    y = 1 + 0.15 * d * (1 + 0.5 * x) + 0.5 * x + (device == "mobile") * 0.2 + shock + rng.normal(size=n) * 2
    orders = 0.3 * y + rng.normal(size=n)
    orders[rng.random(n) < 0.1] = np.nan                        # a metric with its own rows
    return pd.DataFrame({"z": z, "d": d, "x": x, "device": device, "cl": cluster, "y": y, "orders": orders,
                         "p": rng.uniform(0.3, 0.7, n)})


DESIGNS = {
    "ab": (dict(intent_to_treat="z"), "HC1"),
    "encouragement": (dict(intent_to_treat="z", treated="d"), "HC1"),
    "cluster_cr1": (dict(intent_to_treat="z", cluster_by="cl"), "CR1"),
    "cluster_cr3": (dict(intent_to_treat="z", cluster_by="cl"), "CR3"),
    "encouragement_cluster_cr1": (dict(intent_to_treat="z", treated="d", cluster_by="cl"), "CR1"),
    "encouragement_cluster_cr3": (dict(intent_to_treat="z", treated="d", cluster_by="cl"), "CR3"),
    "weighted": (dict(intent_to_treat="z", propensity="p"), "HC1"),
    "weighted_encouragement_cluster": (dict(intent_to_treat="z", treated="d", propensity="p", cluster_by="cl"),
                                       "CR1"),
}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def sources(frame, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("warehouse") / "events.parquet"
    frame.to_parquet(path)
    return {"parquet": str(path), "relation": duckdb.read_parquet(str(path)),
            "ibis": ibis.duckdb.connect().read_parquet(str(path))}


def fit(data, design: str, covariates=("x", "device")):
    roles, cov_type = DESIGNS[design]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cf.DesignWarning)  # the weighted design's clusters mix arms
        exp = cf.ExperimentData(data, **roles)
    return exp.add_metric(y=["y", "orders"], exogenous_covariates=list(covariates)).fit(
        cf.LinearModel(cov_type=cov_type))


def assert_same_effects(a: cf.Effects, b: cf.Effects) -> None:
    fa, fb = a.to_frame(), b.to_frame()
    assert fa[["metric", "arm", "condition", "estimand"]].equals(fb[["metric", "arm", "condition", "estimand"]])
    np.testing.assert_allclose(fb[COLUMNS].to_numpy(float), fa[COLUMNS].to_numpy(float), rtol=RTOL, atol=0)
    np.testing.assert_allclose(b.cov, a.cov, rtol=RTOL, atol=1e-14 * np.abs(a.cov).max())


@pytest.mark.parametrize("design", list(DESIGNS))
def test_engine_equals_memory(frame, sources, design):
    memory = fit(frame, design)
    engine = fit(sources["relation"], design)
    assert type(engine).__name__ == "EngineModelResults" and isinstance(engine, cf.LinearModelResults)
    assert str(engine.design) == str(memory.design)
    for kind in memory.fit_kinds:
        np.testing.assert_allclose(engine.params(kind), memory.params(kind), rtol=RTOL, atol=1e-13)
        np.testing.assert_allclose(engine.std_errors(kind), memory.std_errors(kind), rtol=RTOL)
    estimands = ["ITT", "LATE", "ATE"] if memory.fit_kinds == ("itt", "iv") else None
    conditions = ["device == 'mobile'", "x > 0.5 and device != 'tablet'"]
    assert_same_effects(memory.infer_effect(estimands=estimands), engine.infer_effect(estimands=estimands))
    assert_same_effects(memory.infer_effect(condition_on=conditions, estimands=estimands),
                        engine.infer_effect(condition_on=conditions, estimands=estimands))
    # records derived from the effects work unchanged on the engine's model
    mine, theirs = memory.infer_effect(estimands=estimands), engine.infer_effect(estimands=estimands)
    np.testing.assert_allclose(theirs.relative().to_frame()[["estimate", "std_error"]],
                               mine.relative().to_frame()[["estimate", "std_error"]], rtol=RTOL)
    np.testing.assert_allclose(theirs.adjust("holm").to_frame().p_value_adjusted,
                               mine.adjust("holm").to_frame().p_value_adjusted, rtol=RTOL)
    if memory.fit_kinds == ("itt", "iv"):
        pd.testing.assert_frame_equal(engine.compliers(), memory.compliers(), rtol=RTOL)


@pytest.mark.parametrize("kind", ["parquet", "ibis"])
def test_every_source_kind(frame, sources, kind):
    """A parquet path, an Ibis table (and, above, a DuckDB relation) give the same fit."""
    memory, engine = fit(frame, "encouragement_cluster_cr1"), fit(sources[kind], "encouragement_cluster_cr1")
    conditions = ["device == 'mobile'"]
    assert_same_effects(memory.infer_effect(condition_on=conditions), engine.infer_effect(condition_on=conditions))


def test_ibis_memtable(frame):
    """An in-memory Ibis table (memtable) runs on Ibis' default backend: still an engine table."""
    memory, engine = fit(frame, "ab"), fit(ibis.memtable(frame), "ab")
    assert_same_effects(memory.infer_effect(), engine.infer_effect())


def test_multi_arm_with_received_arms():
    rng = np.random.default_rng(3)
    n = 2400
    arm = rng.choice(["control", "b", "c"], n)
    took = np.where(rng.random(n) < 0.8, arm, "control")
    x = rng.normal(size=n)
    df = pd.DataFrame({"arm": arm, "took": took, "x": x,
                       "y": 0.1 * (took == "b") + 0.2 * (took == "c") + x + rng.normal(size=n) * 2})
    kw = dict(intent_to_treat="arm", treated="took", control="control")
    memory = cf.ExperimentData(df, **kw).add_metric(y="y", exogenous_covariates=["x"]).fit(cf.LinearModel)
    engine = cf.ExperimentData(duckdb.from_df(df), **kw).add_metric(y="y", exogenous_covariates=["x"]).fit(
        cf.LinearModel)
    np.testing.assert_allclose(engine.params(), memory.params(), rtol=RTOL)
    assert_same_effects(memory.infer_effect(condition_on=["x > 0"]), engine.infer_effect(condition_on=["x > 0"]))


@pytest.mark.parametrize("cov_type", ["CR1", "CR0"])
def test_multi_arm_received_arms_clustered(cov_type):
    """Three arms, received arms, clusters: the score pass grouped by cluster and by the
    assigned and received arm codes (its sums of a cluster added up in memory) equals the
    in-memory CR1 / CR0 fit, with LATE (complier-mean terms) and a subgroup."""
    rng = np.random.default_rng(5)
    n, G = 3000, 90
    cl = rng.integers(0, G, n)
    arm = rng.choice(["control", "b", "c"], G)[cl]
    took = np.where(rng.random(n) < 0.8, arm, "control")
    x = rng.normal(size=n) + 0.3 * rng.normal(size=G)[cl]
    df = pd.DataFrame({"arm": arm, "took": took, "x": x, "cl": cl, "dev": rng.choice(["a", "b"], n),
                       "y": 0.1 * (took == "b") + 0.2 * (took == "c") + x + rng.normal(size=G)[cl]
                       + rng.normal(size=n) * 2})
    df["y2"] = df.y + rng.normal(size=n)
    kw = dict(intent_to_treat="arm", treated="took", control="control", cluster_by="cl")
    spec = dict(y=["y", "y2"], exogenous_covariates=["x", "dev"])
    memory = cf.ExperimentData(df, **kw).add_metric(**spec).fit(cf.LinearModel(cov_type=cov_type))
    engine = cf.ExperimentData(duckdb.from_df(df), **kw).add_metric(**spec).fit(cf.LinearModel(cov_type=cov_type))
    for estimands in (None, ["ITT", "LATE"]):
        assert_same_effects(memory.infer_effect(estimands=estimands), engine.infer_effect(estimands=estimands))
    assert_same_effects(memory.infer_effect(condition_on=["x > 0"]), engine.infer_effect(condition_on=["x > 0"]))


def test_awkward_identifiers_and_sql_looking_values(tmp_path):
    """Columns named like SQL keywords or holding quotes and spaces work; a condition value
    that looks like SQL is a string literal: it selects nothing (the in-memory error) and
    the compiled query holds it escaped."""
    rng = np.random.default_rng(5)
    n = 1500
    df = pd.DataFrame({"select": rng.integers(0, 2, n), 'my "col"': rng.normal(size=n),
                       "it's": rng.choice(["x", "x' OR 1=1 --"], n), "cat": rng.choice(["a", "b"], n),
                       "group by": rng.integers(0, 60, n)})
    df["from where"] = 0.1 * df["select"] + df['my "col"'] + rng.normal(size=n)
    path = tmp_path / "odd.parquet"
    df.to_parquet(path)
    kw = dict(intent_to_treat="select", cluster_by="group by")
    covariates = ['my "col"', "it's", "cat"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cf.DesignWarning)
        memory = cf.ExperimentData(df, **kw).add_metric(y="from where", exogenous_covariates=covariates).fit(
            cf.LinearModel)
        engine = cf.ExperimentData(str(path), **kw).add_metric(y="from where", exogenous_covariates=covariates).fit(
            cf.LinearModel)
    assert engine.names == memory.names
    condition = ["cat == 'b'"]
    assert_same_effects(memory.infer_effect(condition_on=condition), engine.infer_effect(condition_on=condition))
    injection = "cat == \"x' OR 1=1 --\""
    with pytest.raises(cf.ValidationError) as in_memory:
        memory.infer_effect(condition_on=[injection])
    with pytest.raises(cf.ValidationError) as in_engine:
        engine.infer_effect(condition_on=[injection])
    assert str(in_engine.value) == str(in_memory.value) and "selects no rows" in str(in_memory.value)
    # the value travels as an escaped literal of the compiled query, never as SQL text
    from causalflow.backends.engine import compile_condition
    from causalflow.expr import parse_condition
    table = engine.spec.data.engine.table.table
    sql = ibis.to_sql(table.filter(compile_condition(parse_condition(injection), {"cat": table["cat"]})),
                      dialect="duckdb")
    assert "'x'' OR 1=1 --'" in sql and sql.count("OR 1=1") == 1


BAD_INPUTS = [
    ("missing column", dict(intent_to_treat="nope"), None),
    ("NaN assignment", dict(intent_to_treat="z_nan"), None),
    ("single arm", dict(intent_to_treat="one"), None),
    ("propensity outside (0, 1)", dict(intent_to_treat="z", propensity="p_bad"), None),
    ("propensity not numeric", dict(intent_to_treat="z", propensity="device"), None),
    ("treated without variation", dict(intent_to_treat="z", treated="zero"), None),
    ("treated outside [0, 1]", dict(intent_to_treat="z", treated="x"), None),
    ("single cluster", dict(intent_to_treat="z", cluster_by="one"), None),
    ("metric not numeric", dict(intent_to_treat="z"), dict(y="device")),
    ("metric is a role", dict(intent_to_treat="z"), dict(y="z")),
    ("covariate with missing values", dict(intent_to_treat="z"), dict(y="y", exogenous_covariates=["orders"])),
    ("constant covariate", dict(intent_to_treat="z"), dict(y="y", exogenous_covariates=["zero"])),
    ("collinear covariates", dict(intent_to_treat="z"), dict(y="y", exogenous_covariates=["x", "x2"])),
    ("covariate constant within an arm", dict(intent_to_treat="z"), dict(y="y", exogenous_covariates=["x_arm"])),
]


@pytest.mark.parametrize("name, roles, metric", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_validation_errors_equal(frame, name, roles, metric):
    df = frame.assign(z_nan=np.where(np.arange(len(frame)) % 50 == 0, np.nan, frame.z), one=1, zero=0.0,
                      p_bad=np.where(np.arange(len(frame)) == 3, 1.2, frame.p), x2=2 * frame.x - 1,
                      x_arm=np.where(frame.z == 1, frame.x, 0.0))
    outcomes = []
    for table in (df, duckdb.from_df(df)):
        with pytest.raises(cf.ValidationError) as caught:
            data = cf.ExperimentData(table, **roles)
            if metric is not None:
                data.add_metric(**metric).fit(cf.LinearModel)
        outcomes.append(str(caught.value))
    assert outcomes[1] == outcomes[0]


# NaN stored in parquet (not NULL): DuckDB 2.0 answers isnan(x) and MIN / MAX from the file's
# statistics, which leave NaN out; the engine counts NaN in a form it cannot fold (engine._nan_test)
_NAN_FROM_PARQUET = ()
NAN_INPUTS = [
    pytest.param("NaN assignment", dict(intent_to_treat="z_nan"), None, marks=_NAN_FROM_PARQUET),
    pytest.param("NaN metric fits its rows", dict(intent_to_treat="z"),
                 dict(y=["y", "y_nan"], exogenous_covariates=["x"]), marks=_NAN_FROM_PARQUET),
    ("metric all NaN", dict(intent_to_treat="z"), dict(y="y_all_nan")),
    pytest.param("covariate NaN", dict(intent_to_treat="z"), dict(y="y", exogenous_covariates=["x_nan"]),
                 marks=_NAN_FROM_PARQUET),
    ("covariate NaN and inf", dict(intent_to_treat="z"), dict(y="y", exogenous_covariates=["x_inf"])),
    ("covariate inf", dict(intent_to_treat="z"), dict(y="y", exogenous_covariates=["x_only_inf"])),
    ("metric inf", dict(intent_to_treat="z"), dict(y="y_inf")),
]


@pytest.mark.parametrize("name, roles, metric", NAN_INPUTS)
def test_nan_values_in_parquet(frame, tmp_path, name, roles, metric):
    """Floating NaN (not NULL) in parquet: missing, as in memory (a column with NaN costs its
    own query for the range without them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    every = np.arange(len(frame))
    df = frame.drop(columns=["orders"]).assign(
        z_nan=np.where(every % 50 == 0, np.nan, frame.z), y_nan=np.where(every % 7 == 0, np.nan, frame.y),
        y_all_nan=np.nan, x_nan=np.where(every % 9 == 0, np.nan, frame.x),
        x_inf=np.where(every % 9 == 0, np.nan, np.where(every % 11 == 0, np.inf, frame.x)),
        x_only_inf=np.where(every % 11 == 0, -np.inf, frame.x), y_inf=np.where(every % 13 == 0, np.inf, frame.y))
    path = tmp_path / "nan.parquet"
    pq.write_table(pa.table({c: pa.array(df[c].to_numpy(), from_pandas=False) if df[c].dtype == float
                             else pa.array(df[c].tolist()) for c in df.columns}), path)
    assert duckdb.sql(f"SELECT count(y_nan) FROM read_parquet('{path}')").fetchall()[0][0] == len(df)  # NaN, not NULL
    outcomes = []
    for source in (df, str(path)):
        try:
            data = cf.ExperimentData(source, **roles)
            if metric is not None:
                outcomes.append(data.add_metric(**metric).fit(cf.LinearModel).infer_effect().to_frame())
        except cf.ValidationError as exc:
            outcomes.append(str(exc))
    assert type(outcomes[0]) is type(outcomes[1])
    if isinstance(outcomes[0], str):
        assert outcomes[1] == outcomes[0]
    else:
        np.testing.assert_allclose(outcomes[1][COLUMNS].to_numpy(float), outcomes[0][COLUMNS].to_numpy(float),
                                   rtol=RTOL)


def test_validation_reads_the_columns_once(sources, monkeypatch):
    """Construction and add_metric: the checks of every role, metric and covariate come from a
    few queries (the row count and role columns, the arm labels, the clusters; a categorical
    covariate's levels, then one scan for the metrics and covariates that also sums pass 1),
    not one per column and check; the fit of the metric observed on every row reads pass 1
    from that scan (a metric with missing rows needs its own means and pass 1)."""
    from causalflow.backends.engine import EngineTable

    calls = []
    original = EngineTable.run
    monkeypatch.setattr(EngineTable, "run", lambda self, expr: calls.append(1) or original(self, expr))
    data = cf.ExperimentData(sources["parquet"], intent_to_treat="z", cluster_by="cl")
    assert len(calls) == 3
    calls.clear()
    spec = data.add_metric(y=["y", "orders"], exogenous_covariates=["x", "device"])
    assert len(calls) == 2
    calls.clear()
    spec.fit(cf.LinearModel)
    assert len(calls) == 3  # the rows of "orders": their means, clusters and pass 1
    calls.clear()
    data.add_metric(y="y", exogenous_covariates=["x", "device"]).fit(cf.LinearModel)
    assert len(calls) == 1  # the first scan (the levels are known): the whole fit


@pytest.mark.parametrize("offset, recentred", [(50.0, True), (1e3, False)])
def test_first_scan_recentring(frame, offset, recentred):
    """Pass 1 from the first scan is summed about 0 and re-centred at the means; a covariate
    whose mean is far from 0 relative to its spread (1e3 here, sd 1) is refused that shortcut
    (RECENTRE_LIMIT) and pass 1 runs centred: both equal the in-memory fit at rtol 1e-10."""
    df = frame.assign(x=frame.x + offset)
    for design in ("cluster_cr1", "weighted_encouragement_cluster"):
        memory = fit(df, design)
        engine = fit(duckdb.from_df(df), design)
        exp = engine.spec.data.engine
        assert exp._cache["first_pass"][3] is recentred
        for kind in memory.fit_kinds:
            np.testing.assert_allclose(engine.params(kind), memory.params(kind), rtol=RTOL, atol=1e-13)
        assert_same_effects(memory.infer_effect(), engine.infer_effect())


def test_cr2_and_in_memory_only_features_are_refused(sources):
    data = cf.ExperimentData(sources["relation"], intent_to_treat="z", cluster_by="cl")
    with pytest.raises(cf.ValidationError, match="'CR2' needs the rows of every cluster.*'CR3'"):
        data.add_metric(y="y").fit(cf.LinearModel(cov_type="CR2"))
    with pytest.raises(cf.ValidationError, match="formulas are computed in memory"):
        data.add_metric(y="y", exogenous_covariates="np.log1p(x ** 2)")
    with pytest.raises(cf.ValidationError, match="estimator reads the rows in memory"):
        cf.ExperimentData(sources["relation"], intent_to_treat="z").add_metric(y="y").fit(
            cf.BayesianLinearRegression)


def test_sample_ratio_on_counts(frame, sources):
    memory = cf.ExperimentData(frame, intent_to_treat="z", cluster_by="cl").check_sample_ratio()
    engine = cf.ExperimentData(sources["relation"], intent_to_treat="z", cluster_by="cl").check_sample_ratio()
    assert engine.units.observed == memory.units.observed
    assert engine.clusters.observed == memory.clusters.observed
    assert engine.p_value == pytest.approx(memory.p_value, rel=1e-12)


MANY = {
    "ab": dict(intent_to_treat="z"),
    "encouragement_cluster": dict(intent_to_treat="z", treated="d", cluster_by="cl"),  # CR3: 30 clusters each
    "weighted": dict(intent_to_treat="z", propensity="p"),
}


@pytest.mark.parametrize("design, bad", [("ab", "single arm"), ("encouragement_cluster", "NaN assignment"),
                                         ("weighted", "singular design"), ("encouragement_cluster", "singular design")])
def test_analyze_many_engine(design, bad):
    """50 experiments, one bad: 49 results equal to per-experiment in-memory fits, 1 failure
    reported with the in-memory message; one grouped query per pass."""
    from causalflow.models.warehouse import analyze_many_engine

    rng = np.random.default_rng(50)
    E, per = 50, 300
    n = E * per
    df = pd.DataFrame({"exp": np.repeat(np.arange(E) * 10, per), "x": rng.normal(size=n),
                       "dev": rng.choice(["a", "b"], n), "cl": rng.integers(0, 30, n), "p": rng.uniform(0.3, 0.7, n)})
    df["z"] = rng.integers(0, 2, (E, 30))[df.exp // 10, df.cl]  # clusters randomised within each experiment
    df["d"] = df.z * (rng.random(n) < 0.7)
    df["y"] = 1 + 0.2 * df.d + df.x + rng.normal(size=n) * 2
    df["y2"] = df.y + rng.normal(size=n)
    bad_rows = df.exp == 130
    if bad == "single arm":
        df.loc[bad_rows, "z"] = 1
    elif bad == "NaN assignment":
        df["z"] = df.z.astype(float).where(~(bad_rows & (rng.random(n) < 0.1)))
    else:
        df.loc[bad_rows, "x"] = np.where(df.loc[bad_rows, "z"] == 1, 2.0, df.loc[bad_rows, "x"])  # constant in an arm
    roles = MANY[design]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cf.DesignWarning)  # the weighted design: clusters are not its unit
        out = analyze_many_engine(duckdb.from_df(df), "exp", y=["y", "y2"], exogenous_covariates=["x", "dev"],
                                  **roles)
    assert list(out.columns[:2]) == ["exp", "metric"] and out.columns[-1] == "error"
    failed = out[out.error.notna()]
    assert failed.exp.tolist() == [130] and failed.estimate.isna().all()
    assert out[out.error.isna()].exp.nunique() == 49
    for key, rows in df.groupby("exp"):
        got = out[out.exp == key]
        try:
            ref = cf.ExperimentData(rows, **roles).add_metric(y=["y", "y2"], exogenous_covariates=["x", "dev"]).fit(
                cf.LinearModel).infer_effect()
        except cf.ValidationError as exc:  # the bad experiment
            assert key == 130
            if bad != "singular design":  # in memory the within-arm check names the covariate
                assert got.error.iloc[0] == str(exc)
            continue
        frame = ref.to_frame()
        labels = ["metric", "arm", "estimand"]
        assert got[labels].values.tolist() == frame[labels].values.tolist()
        np.testing.assert_allclose(got[COLUMNS].to_numpy(float), frame[COLUMNS].to_numpy(float), rtol=RTOL)


def test_analyze_many_engine_queries_do_not_grow_with_experiments(monkeypatch):
    """One grouped aggregation per pass: the number of queries is the same for 5 and 40
    experiments."""
    from causalflow.backends.engine import EngineTable
    from causalflow.models.warehouse import analyze_many_engine

    calls = []
    original = EngineTable.run
    monkeypatch.setattr(EngineTable, "run", lambda self, expr: calls.append(1) or original(self, expr))
    counts = []
    for E in (5, 40):
        rng = np.random.default_rng(E)
        n = E * 200
        df = pd.DataFrame({"exp": np.repeat(np.arange(E), 200), "t": rng.integers(0, 2, n), "x": rng.normal(size=n),
                           "u": rng.random(n)})
        df["d"] = df.t * (df.u < 0.7)
        df["y"] = df.t + df.x + rng.normal(size=n)
        calls.clear()
        out = analyze_many_engine(duckdb.from_df(df), "exp", y="y", exogenous_covariates=["x"], intent_to_treat="t",
                                  treated="d")
        assert out.error.isna().all() and out.exp.nunique() == E
        counts.append(len(calls))
    assert counts[0] == counts[1]


@pytest.mark.parametrize("design,source", [("ab", "parquet"), ("encouragement_cluster_cr1", "relation"),
                                           ("cluster_cr1", "ibis")])
def test_monitor_on_an_engine_equals_monitor_in_memory(design, source, tmp_path):
    """A look on an engine is a filter on the arrival column (distinct arrival times here, so
    the looks hold the same rows as in memory): every look's effects and the running
    anytime-valid columns equal the in-memory monitor's at rtol 1e-10 (same sums, another
    summation order)."""
    frame = make_frame(n=2400, seed=7)
    frame["ts"] = np.random.default_rng(3).permutation(len(frame)) / 10.0
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    table = {"parquet": str(path), "relation": duckdb.read_parquet(str(path)),
             "ibis": ibis.duckdb.connect().read_parquet(str(path))}[source]
    roles, cov_type = DESIGNS[design]
    kwargs = dict(y=["y", "orders"], exogenous_covariates=["x", "device"], arrival="ts", looks=4,
                  estimator=cf.LinearModel(cov_type=cov_type), condition_on=["device == 'mobile'"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cf.DesignWarning)
        memory = cf.monitor(cf.ExperimentData(frame, **roles), **kwargs)
        engine = cf.monitor(cf.ExperimentData(table, **roles), **kwargs)
    assert engine.n_rows == memory.n_rows and engine.g == pytest.approx(memory.g, rel=1e-12)
    a, b = memory.to_frame(), engine.to_frame()
    assert len(a) == len(b) == 4 * len(memory.looks[0].to_frame())
    for column in ["estimate", "std_error", "p_value", "av_p_value", "av_p_value_running", "av_cs_lower",
                   "av_cs_upper"]:
        np.testing.assert_allclose(b[column], a[column], rtol=RTOL, atol=1e-12, err_msg=column)


def test_monitor_on_an_engine_needs_the_arrival_column(sources):
    data = cf.ExperimentData(sources["relation"], intent_to_treat="z")
    with pytest.raises(cf.ValidationError, match="arrival: an engine table has no row order"):
        cf.monitor(data, y="y", looks=3)
    with pytest.raises(cf.ValidationError, match="arrival: column 'when' is not in the data"):
        cf.monitor(data, y="y", arrival="when", looks=3)
