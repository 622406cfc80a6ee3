"""Compression (Wong, Lewis and Wardrop 2021, arXiv:2102.11297): the fit of the cells equals
the fit of the rows.

Reference: cf.LinearModel on the uncompressed rows (itself checked against linearmodels and
statsmodels in tests/test_vs_peers.py). Every formula of the compressed fit is an identity
in the cell sums, so the only differences are the rounding of sums taken in another order:
rtol 1e-10 (the issue's bound) on coefficients, standard errors, effects (estimates, SEs,
intervals, p-values, anytime-valid columns) and the joint covariance, in memory and in
DuckDB (through Ibis)."""

import numpy as np
import pandas as pd
import pytest

import causalflow as cf
from causalflow.backends.compress import compress

RTOL = 1e-10
NUMERIC = ["estimate", "std_error", "ci_lower", "ci_upper", "p_value", "av_p_value", "av_ci_lower",
           "av_ci_upper", "n", "dof"]


def _table(n=6000, seed=0, arms=2, clusters=None, weights=False):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "arm": rng.integers(0, arms, n),
        "device": rng.choice(["ios", "android", "web"], n),
        "tier": rng.integers(0, 4, n).astype(float),
        "new user": rng.random(n) < 0.3,  # a name with a space, a boolean covariate
    })
    if clusters:
        df["store"] = rng.integers(0, clusters, n)
        df["arm"] = (df.store * 7919 % arms).astype(int)  # randomised by store
        shock = rng.normal(size=clusters)[df.store]
    else:
        shock = 0.0
    df["sales"] = 5.0 + 0.4 * df.arm + 0.3 * df.tier + (df.device == "web") + shock + rng.exponential(2.0, n)
    df["visits"] = 100.0 + 2.0 * df.arm * df.tier + rng.normal(scale=3.0, size=n)
    if weights:
        df["p"] = np.where(df.device == "web", 0.3, 0.6) + 0.1 * (df.tier == 3)
    return df


COVARIATES = ["device", "tier", "new user"]


def _duckdb_table(df):
    """An Ibis table of a DuckDB connection ([warehouse] is in [test])."""
    import duckdb
    import ibis

    raw = duckdb.connect()
    raw.register("frame", df)
    raw.execute('CREATE TABLE "exposures" AS SELECT * FROM frame')
    return ibis.duckdb.from_connection(raw).table("exposures")


def _pair(df, cov_type, conditions=None, backend="memory", **roles):
    roles.setdefault("intent_to_treat", "arm")
    rows = cf.ExperimentData(df, **roles).add_metric(y=["sales", "visits"], exogenous_covariates=COVARIATES)
    full = rows.fit(cf.LinearModel(cov_type=cov_type))
    table = df
    if backend == "duckdb":
        table = _duckdb_table(df)
    small = compress(table, y=["sales", "visits"], exogenous_covariates=COVARIATES, **roles)
    return full, small, small.fit(cov_type)


def _close(actual, desired):
    """rtol 1e-10, and an absolute floor of 1e-10 x the column's largest value: a coefficient
    near 0 (|b| ~ 1e-6 beside 1e2) carries the rounding of its column's scale, ~1e-15."""
    desired = np.asarray(desired, dtype=float)
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=RTOL * np.nanmax(np.abs(desired)))


def _assert_same(full, fit, conditions=None):
    _close(fit.params().values, full.params().values)
    assert list(fit.params().index) == list(full.params().index)
    np.testing.assert_allclose(fit.std_errors().values, full.std_errors().values, rtol=RTOL)
    for metric, frame in fit.cov_params().items():
        _close(frame.values, full.cov_params()[metric].values)
    a, b = fit.infer_effect(condition_on=conditions), full.infer_effect(condition_on=conditions)
    fa, fb = a.to_frame(), b.to_frame()
    assert fa[["metric", "arm", "condition", "estimand", "cov_type"]].equals(
        fb[["metric", "arm", "condition", "estimand", "cov_type"]])
    for column in NUMERIC:
        _close(fa[column].to_numpy(float), fb[column].to_numpy(float))
    _close(a.cov, b.cov)


@pytest.mark.parametrize("cov_type", ["HC0", "HC1"])
def test_ab_test_equals_the_rows(cov_type):
    df = _table()
    full, small, fit = _pair(df, cov_type)
    assert small.n_rows == 6000 and small.n_cells <= 2 * 3 * 4 * 2 and small.ratio == 6000 / small.n_cells
    _assert_same(full, fit, ["device == 'web'", "tier >= 2 and device != 'ios'"])


@pytest.mark.parametrize("cov_type", ["CR0", "CR1", "CR3"])
def test_cluster_design_equals_the_rows(cov_type):
    df = _table(clusters=60)
    full, small, fit = _pair(df, cov_type, cluster_by="store")
    assert fit.n_clusters == 60 and small.ratio > 4
    _assert_same(full, fit, ["device != 'ios'"])


@pytest.mark.parametrize("cov_type, roles", [("HC1", {}), ("CR1", {"cluster_by": "store"}),
                                             ("CR3", {"cluster_by": "store"})])
def test_propensity_weights_equal_the_rows(cov_type, roles):
    """Weighted cells keep sum w, sum w y, sum w^2, sum w^2 y, sum w^2 y y' (the HC meat)."""
    df = _table(clusters=80, weights=True)
    rng = np.random.default_rng(3)
    if roles:  # stores assigned with probability p_store
        p_store = 0.2 + 0.6 * rng.random(80)
        df["p"] = p_store[df.store]
        df["arm"] = (rng.random(80) < p_store)[df.store]
    else:
        df["arm"] = rng.random(len(df)) < df.p  # assigned with probability p
    full, small, fit = _pair(df, cov_type, propensity="p", **roles)
    assert small.weighted
    _assert_same(full, fit, ["tier < 2"])


def test_several_arms_equal_the_rows():
    df = _table(arms=3)
    full, _, fit = _pair(df, "HC1")
    _assert_same(full, fit)


@pytest.mark.parametrize("cov_type, roles", [("HC1", {}), ("CR1", {"cluster_by": "store"}),
                                             ("CR3", {"cluster_by": "store"})])
def test_duckdb_equals_the_rows(cov_type, roles):
    """One Ibis aggregation in DuckDB, the cells back as pandas, the same numbers."""
    df = _table(clusters=40)
    full, small, fit = _pair(df, cov_type, backend="duckdb", **roles)
    memory = compress(df, intent_to_treat="arm", y=["sales", "visits"], exogenous_covariates=COVARIATES, **roles)
    assert small.n_cells == memory.n_cells and small.n_rows == len(df)
    _assert_same(full, fit, ["device == 'web'"])


def test_duckdb_propensity_weights():
    df = _table(weights=True)
    df["arm"] = (np.random.default_rng(4).random(len(df)) < df.p).astype(int)
    full, _, fit = _pair(df, "HC1", backend="duckdb", propensity="p")
    _assert_same(full, fit)


def test_large_outcome_levels_keep_their_digits():
    """Outcomes are centred before the sums of squares: a level of 1e6 with unit noise keeps
    the HC meat at rtol 1e-10 (without centring, sum y^2 - 2 f sum y + f^2 n cancels 12
    digits). The reference is the fit of the rows at level 0 (the fit of the rows at level
    1e6 itself carries ~1e-9 of rounding in Z'Y); only the intercept moves by 1e6."""
    df = _table()
    full = cf.ExperimentData(df, intent_to_treat="arm").add_metric(
        y=["sales", "visits"], exogenous_covariates=COVARIATES).fit(cf.LinearModel(cov_type="HC1"))
    shifted = df.assign(sales=df.sales + 1e6)
    fit = compress(shifted, intent_to_treat="arm", y=["sales", "visits"], exogenous_covariates=COVARIATES).fit("HC1")
    np.testing.assert_allclose(fit.std_errors().values, full.std_errors().values, rtol=RTOL)
    moved = full.params().values.copy()
    moved[0, 0] += 1e6
    _close(fit.params().values, moved)
    np.testing.assert_allclose(fit.infer_effect().std_error, full.infer_effect().std_error, rtol=RTOL)


def test_what_is_not_served_is_a_clear_error():
    df = _table(clusters=30)
    small = compress(df, intent_to_treat="arm", y="sales", exogenous_covariates=["device"], cluster_by="store")
    with pytest.raises(cf.ValidationError, match="CR2.*cell sums"):
        small.fit("CR2")
    with pytest.raises(cf.ValidationError, match="cov_type"):
        small.fit("HC3")
    with pytest.raises(cf.ValidationError, match="compress without cluster_by for HC0"):
        small.fit("HC1")
    plain = compress(df, intent_to_treat="arm", y="sales", exogenous_covariates=["device"])
    with pytest.raises(cf.ValidationError, match="needs cluster_by"):
        plain.fit("CR1")
    df.loc[3, "visits"] = np.nan
    with pytest.raises(cf.ValidationError, match="metric 'visits' has 1 missing"):
        compress(df, intent_to_treat="arm", y=["sales", "visits"])
    with pytest.raises(cf.ValidationError, match="exogenous_covariates: column 'nope'"):
        compress(df, intent_to_treat="arm", y="sales", exogenous_covariates=["nope"])
    one_arm = df.assign(arm=1)
    with pytest.raises(cf.ValidationError, match="single arm"):
        compress(one_arm, intent_to_treat="arm", y="sales")
    with pytest.raises(cf.ValidationError, match="y: column 'arm' is already"):
        compress(df, intent_to_treat="arm", y="arm")


def test_duckdb_validation_runs_in_the_engine():
    df = _table()
    df["arm"] = df.arm.astype(float)
    df.loc[5, "arm"] = None
    t = _duckdb_table(df)
    with pytest.raises(cf.ValidationError, match="intent_to_treat: column 'arm' has 1 missing"):
        compress(t, intent_to_treat="arm", y="sales")
    with pytest.raises(cf.ValidationError, match="y: column 'nope' is not in the table"):
        compress(t, intent_to_treat="arm", y="nope")
    with pytest.raises(cf.ValidationError, match="expected a pandas"):
        compress(42, intent_to_treat="arm", y="sales")


def test_the_users_table_is_not_modified():
    df = _table(weights=True)
    before = df.copy()
    compress(df, intent_to_treat="arm", y=["sales"], exogenous_covariates=COVARIATES, propensity="p").fit()
    pd.testing.assert_frame_equal(df, before)


@pytest.mark.parametrize("cov_type, roles", [("HC1", {}), ("CR1", {"cluster_by": "store"})])
def test_many_small_cells_equal_the_rows(cov_type, roles):
    """A continuous covariate makes every row its own cell (ratio 1, beyond the per-cell loop:
    the sparse block sums); the numbers are still those of the rows."""
    df = _table(n=5000, clusters=300, weights=True)
    df["tier"] = df.tier + np.random.default_rng(9).normal(size=len(df))
    full, small, fit = _pair(df, cov_type, **roles)
    assert small.n_cells > 4096 and small.ratio < 1.25
    _assert_same(full, fit, ["tier > 1"])


def test_parquet_path_is_grouped_by_ibis(tmp_path):
    """A parquet path is read by Ibis's default backend (DuckDB) and grouped there."""
    df = _table(clusters=50)
    path = tmp_path / "exposures.parquet"
    df.to_parquet(path)
    full, _, _ = _pair(df, "CR1", cluster_by="store")
    small = compress(str(path), intent_to_treat="arm", y=["sales", "visits"], exogenous_covariates=COVARIATES,
                     cluster_by="store")
    assert small.n_rows == len(df)
    _assert_same(full, small.fit("CR1"))
