"""Engine tables through PySpark (local mode) equal the in-memory fit (issue 19).

Reference: the in-memory engine (checked against linearmodels / statsmodels at rtol 1e-8 in
tests/test_vs_peers.py). Spark adds its partial sums in its own order, so the tolerance is
rtol 1e-9 (the issue's). One local session serves the whole module.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import causalflow as cf

pyspark = pytest.importorskip("pyspark")
ibis = pytest.importorskip("ibis")

pytestmark = pytest.mark.spark

RTOL = 1e-9
COLUMNS = ["estimate", "std_error", "ci_lower", "ci_upper", "p_value", "av_p_value", "av_ci_lower",
           "av_ci_upper", "n", "dof"]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("causalflow-tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.memory", "1g").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(41)
    n = 2000
    cluster = rng.integers(0, 60, n)
    z = (rng.random(60) < 0.5).astype(int)[cluster]
    x = rng.normal(size=n)
    device = rng.choice(["desktop", "mobile"], n)
    d = z * (rng.random(n) < 1 / (1 + np.exp(-x)))
    y = 1 + 0.2 * d * (1 + 0.5 * x) + 0.5 * x + 0.3 * rng.normal(size=60)[cluster] + 2 * rng.normal(size=n)
    return pd.DataFrame({"z": z, "d": d, "x": x, "device": device, "cl": cluster, "y": y,
                         "orders": 0.3 * y + rng.normal(size=n), "p": rng.uniform(0.3, 0.7, n)})


DESIGNS = {
    "ab": (dict(intent_to_treat="z"), "HC1"),
    "encouragement": (dict(intent_to_treat="z", treated="d"), "HC1"),
    "cluster_cr1": (dict(intent_to_treat="z", treated="d", cluster_by="cl"), "CR1"),
    "cluster_cr3": (dict(intent_to_treat="z", treated="d", cluster_by="cl"), "CR3"),
    "weighted": (dict(intent_to_treat="z", propensity="p"), "HC1"),
}


def fit(data, design):
    roles, cov_type = DESIGNS[design]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cf.DesignWarning)
        exp = cf.ExperimentData(data, **roles)
    return exp.add_metric(y=["y", "orders"], exogenous_covariates=["x", "device"]).fit(
        cf.LinearModel(cov_type=cov_type))


def assert_same(memory, engine) -> None:
    for kind in memory.fit_kinds:
        np.testing.assert_allclose(engine.params(kind), memory.params(kind), rtol=RTOL, atol=1e-12)
        np.testing.assert_allclose(engine.std_errors(kind), memory.std_errors(kind), rtol=RTOL)
    estimands = ["ITT", "LATE"] if memory.fit_kinds == ("itt", "iv") else None
    for conditions in (None, ["device == 'mobile'", "x > 0.5"]):
        a = memory.infer_effect(condition_on=conditions, estimands=estimands).to_frame()
        b = engine.infer_effect(condition_on=conditions, estimands=estimands).to_frame()
        assert a.estimand.tolist() == b.estimand.tolist()
        np.testing.assert_allclose(b[COLUMNS].to_numpy(float), a[COLUMNS].to_numpy(float), rtol=RTOL)


@pytest.mark.parametrize("design", list(DESIGNS))
def test_spark_dataframe_equals_memory(spark, frame, design):
    assert_same(fit(frame, design), fit(spark.createDataFrame(frame), design))


def test_ibis_pyspark_table(spark, frame):
    con = ibis.pyspark.connect(spark)
    spark.createDataFrame(frame).createOrReplaceTempView("causalflow_test_frame")
    assert_same(fit(frame, "cluster_cr1"), fit(con.table("causalflow_test_frame"), "cluster_cr1"))


def test_analyze_many_on_spark(spark, frame):
    from causalflow.models.warehouse import analyze_many_engine

    df = pd.concat([frame.assign(exp=e) for e in range(4)], ignore_index=True)
    df.loc[df.exp == 2, "z"] = 0  # a single arm
    out = analyze_many_engine(spark.createDataFrame(df), "exp", y="y", exogenous_covariates=["x"],
                              intent_to_treat="z", treated="d")
    assert out[out.error.notna()].exp.tolist() == [2]
    ref = cf.ExperimentData(frame, intent_to_treat="z", treated="d").add_metric(
        y="y", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect().to_frame()
    for e in (0, 1, 3):
        np.testing.assert_allclose(out[out.exp == e][COLUMNS].to_numpy(float), ref[COLUMNS].to_numpy(float),
                                   rtol=RTOL)


def test_temporary_views_are_dropped_with_the_last_table(spark, frame):
    # the views an engine table registers (the DataFrame's and a lookup's) live as long as a
    # table that queries them, and leave the session's catalog after the last one is gone
    import gc

    from causalflow.backends.engine import EngineTable

    def views():
        return {t.name for t in spark.catalog.listTables() if t.name.startswith("__causalflow")}

    gc.collect()  # the earlier tests' tables go first
    before = views()
    base = EngineTable.of(spark.createDataFrame(frame))
    lookup = pd.DataFrame({"cl": np.arange(60), "w": np.linspace(0.0, 1.0, 60)})
    joined = base.joined(lookup, base.table["cl"], "cl")
    look = joined.where(joined.table["x"] > 0)
    made = views() - before
    assert len(made) == 2  # the DataFrame's view and the lookup's
    del base, joined
    gc.collect()
    assert made <= views()  # a derived table still queries them
    n = look.run(look.table.aggregate(n=look.table.count()))["n"].iloc[0]
    assert n == int((frame.x > 0).sum())
    del look
    gc.collect()
    assert not made & views()  # (other tests' views may go at the same collection)
