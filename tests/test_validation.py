"""Invalid input fails early with ``cf.ValidationError`` naming the column / argument.

API.md section 1 and issue 3 item 2. Every test asserts the error class (a ValueError)
and that the message names the offending column or argument and the problem. The last
part checks that the user's table is never modified and that polars / pyarrow tables
give the same results as pandas.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest

import causalflow as cf

N = 60


def expect_error(call, *fragments, error=cf.ValidationError):
    """Run ``call``; assert it raises ``error`` whose message contains every fragment."""
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture
def df() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    t = np.tile([0, 1], N // 2)
    return pd.DataFrame({
        "assigned": t,
        "took": np.where(rng.random(N) < 0.8, t, 1 - t),
        "p_arm": rng.uniform(0.2, 0.8, N),
        "store": np.repeat(np.arange(N // 6), 6),
        "x": rng.normal(size=N),
        "z": rng.normal(size=N),
        "seg": rng.choice(np.array(["a", "b", "c"]), N),
        "y": rng.normal(size=N),
        "y2": rng.normal(size=N),
    })


def E(df, **kw):
    kw.setdefault("intent_to_treat", "assigned")
    return cf.ExperimentData(df, **kw)


def with_nan(df, column, row=5):
    return df.assign(**{column: df[column].where(df.index != row)})


# -- missing columns, every role ------------------------------------------------------
@pytest.mark.parametrize("role, kwargs", [
    ("intent_to_treat", {"intent_to_treat": "nope"}),
    ("treated", {"treated": "nope"}),
    ("propensity", {"propensity": "nope"}),
    ("instrument", {"instrument": "nope"}),
    ("cluster_by", {"cluster_by": "nope"}),
    ("cluster_by", {"cluster_by": ["store", "nope"]}),
])
def test_missing_column_of_each_design_role(df, role, kwargs):
    expect_error(lambda: E(df, **kwargs), role, "'nope'", "not in the data")


def test_missing_metric_column(df):
    expect_error(lambda: E(df).add_metric(y=["y", "nope"]), "y:", "'nope'", "not in the data")


@pytest.mark.parametrize("alias", ["exogenous_covariates", "exogeneous_covariates"])
def test_missing_covariate_column(df, alias):
    expect_error(lambda: E(df).add_metric(y="y", **{alias: ["x", "nope"]}),
                 "exogenous_covariates", "'nope'", "not in the data")


@pytest.mark.parametrize("argument, call", [
    ("y", lambda df: E(df).add_metric(y=3)),
    ("exogenous_covariates", lambda df: E(df).add_metric(y="y", exogenous_covariates=3)),
    ("exogenous_covariates", lambda df: E(df).add_metric(y="y", exogenous_covariates={"x": 1})),
    ("cluster_by", lambda df: E(df, cluster_by=3)),
    ("intent_to_treat", lambda df: E(df, intent_to_treat=None)),
    ("treated", lambda df: E(df, treated=3)),
])
def test_arguments_of_the_wrong_type(df, argument, call):
    expect_error(lambda: call(df), argument)


def test_both_covariate_spellings_is_an_error(df):
    expect_error(lambda: E(df).add_metric(y="y", exogenous_covariates=["x"],
                                          exogeneous_covariates=["z"]),
                 "exogenous_covariates", "exogeneous_covariates")


# -- missing values in the design columns -------------------------------------------
@pytest.mark.parametrize("column, kwargs", [
    ("assigned", {}),
    ("took", {"treated": "took"}),
    ("store", {"cluster_by": "store"}),
    ("p_arm", {"propensity": "p_arm"}),
])
def test_nan_in_design_column(df, column, kwargs):
    role = {"assigned": "intent_to_treat", "took": "treated", "store": "cluster_by",
            "p_arm": "propensity"}[column]
    expect_error(lambda: E(with_nan(df, column), **kwargs), role, repr(column), "missing")


def test_missing_text_label_in_assignment(df):
    bad = df.assign(arm=np.where(df.assigned == 1, "treat", "control").astype(object))
    bad.loc[3, "arm"] = None
    expect_error(lambda: E(bad, intent_to_treat="arm"), "intent_to_treat", "'arm'", "missing")


def test_nullable_integer_assignment_with_na(df):
    bad = df.assign(assigned=pd.array(df.assigned, dtype="Int64"))
    bad.loc[0, "assigned"] = pd.NA
    expect_error(lambda: E(bad), "intent_to_treat", "'assigned'", "missing")


@pytest.mark.parametrize("column", ["x", "seg"])
def test_nan_in_covariate(df, column):
    expect_error(lambda: E(with_nan(df, column)).add_metric(y="y", exogenous_covariates=["z", column]),
                 "exogenous_covariates", repr(column), "missing")


def test_covariate_or_metric_so_large_that_squares_overflow(df):
    data = df.assign(x=df.x.where(df.index != 2, 1e200), y=df.y.where(df.index != 3, -1e160))
    expect_error(lambda: E(data).add_metric(y="y2", exogenous_covariates=["x"]),
                 "exogenous_covariates", "'x'", "overflow")
    expect_error(lambda: E(data).add_metric(y="y"), "y:", "'y'", "overflow")


def test_infinite_covariate(df):
    bad = df.assign(x=df.x.where(df.index != 2, np.inf))
    expect_error(lambda: E(bad).add_metric(y="y", exogenous_covariates=["x"]),
                 "exogenous_covariates", "'x'", "infinite")


# -- propensity --------------------------------------------------------------------
@pytest.mark.parametrize("value", [0.0, 1.0, 1.2, -0.3])
def test_propensity_column_outside_open_unit_interval(df, value):
    bad = df.assign(p_arm=df.p_arm.where(df.index != 4, value))
    expect_error(lambda: E(bad, propensity="p_arm"), "propensity", "'p_arm'", "outside (0, 1)")


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1, 0])
def test_propensity_number_outside_open_unit_interval(df, value):
    expect_error(lambda: E(df, propensity=value), "propensity", "outside (0, 1)")


def test_propensity_so_small_that_weights_overflow(df):
    # row 5 is treated: its weight is 1 / P(treatment) (a control row's would be 1 / (1 - p))
    bad = df.assign(p_arm=df.p_arm.where(df.index != 5, 5e-324))
    expect_error(lambda: E(bad, propensity="p_arm"), "propensity", "'p_arm'", "overflow")


def test_propensity_column_not_numeric(df):
    expect_error(lambda: E(df, propensity="seg"), "propensity", "'seg'", "not numeric")


@pytest.mark.parametrize("value", [True, [0.5, 0.5], object()])
def test_propensity_of_wrong_type(df, value):
    expect_error(lambda: E(df, propensity=value), "propensity")


def test_propensity_mapping_must_cover_arms_and_sum_to_one(df):
    expect_error(lambda: E(df, propensity={0: 0.5}), "propensity", "every arm")
    expect_error(lambda: E(df, propensity={0: 0.5, 1: 0.6}), "propensity", "sum to 1")


# -- arms, treatment, control ----------------------------------------------------------
def test_single_arm(df):
    expect_error(lambda: E(df.assign(assigned=1)), "intent_to_treat", "'assigned'", "single arm")


def test_treated_without_variation(df):
    expect_error(lambda: E(df.assign(took=1), treated="took"), "treated", "'took'", "no variation")


@pytest.mark.parametrize("values", [[0.0, 2.0], [-1.0, 1.0]])
def test_treated_outside_unit_interval_for_binary_design(df, values):
    bad = df.assign(took=np.resize(values, N))
    expect_error(lambda: E(bad, treated="took"), "treated", "'took'", "outside [0, 1]")


def test_treated_text_for_binary_design(df):
    expect_error(lambda: E(df, treated="seg"), "treated", "'seg'", "numeric")


def test_multi_arm_treated_labels_not_among_arms(df):
    arms = np.resize(np.array(["ctl", "blue", "green"]), N)
    bad = df.assign(arm=arms, got=np.where(arms == "green", "purple", arms))
    expect_error(lambda: E(bad, intent_to_treat="arm", treated="got", control="ctl"),
                 "treated", "'got'", "not arms")


def test_multi_arm_instrument_labels_not_among_arms(df):
    arms = np.resize(np.array(["ctl", "blue", "green"]), N)
    bad = df.assign(arm=arms, inst=np.where(arms == "blue", "cyan", arms))
    expect_error(lambda: E(bad, intent_to_treat="arm", instrument="inst", control="ctl"),
                 "instrument", "'inst'", "not arms")


def test_instrument_without_variation(df):
    expect_error(lambda: E(df.assign(inst=1), treated="took", instrument="inst"),
                 "instrument", "'inst'", "no variation")


def test_unknown_control_label(df):
    expect_error(lambda: E(df, control=2), "control", "2", "not an arm")
    arms = df.assign(arm=np.resize(np.array(["ctl", "blue", "green"]), N))
    expect_error(lambda: E(arms, intent_to_treat="arm", control="red"), "control", "'red'")


def test_multi_arm_without_control(df):
    arms = df.assign(arm=np.resize(np.array(["red", "blue", "green"]), N))
    expect_error(lambda: E(arms, intent_to_treat="arm"), "control", "'arm'", "control=")


def test_multi_arm_default_control_labels_are_accepted(df):
    arms = df.assign(arm=np.resize(np.array(["control", "blue", "green"]), N))
    assert E(arms, intent_to_treat="arm").design.control == "control"
    assert E(df.assign(arm=np.resize([0, 1, 2], N)), intent_to_treat="arm").design.arms == (0, 1, 2)


# -- the table ---------------------------------------------------------------------
def test_duplicated_column_names(df):
    bad = pd.concat([df, df[["x"]]], axis=1)
    expect_error(lambda: E(bad), "duplicated column", "'x'")


def _not_tables():
    import polars as pl
    import pyarrow as pa
    return [{"assigned": [0, 1]}, pd.Series([0, 1], name="assigned"), pl.Series("assigned", [0, 1]),
            pa.chunked_array([[0, 1]]), pl.DataFrame({"assigned": [0, 1]}).lazy(), np.array([[0], [1]])]


@pytest.mark.parametrize("index", range(6))
def test_not_a_table(index):
    table = _not_tables()[index]
    expect_error(lambda: cf.ExperimentData(table, intent_to_treat="assigned"), "data:", "table",
                 type(table).__name__)


def test_too_few_rows(df):
    expect_error(lambda: E(df.iloc[:1]), "data:", "2 rows")


def test_non_numeric_metric(df):
    expect_error(lambda: E(df).add_metric(y=["y", "seg"]), "y:", "'seg'", "not numeric")


def test_infinite_metric(df):
    bad = df.assign(y=df.y.where(df.index != 1, -np.inf))
    expect_error(lambda: E(bad).add_metric(y="y"), "y:", "'y'", "infinite")


@pytest.mark.parametrize("y", [[], None, ()])
def test_empty_y(df, y):
    expect_error(lambda: E(df).add_metric(y=y), "y:", "metric")


def test_metric_entirely_missing(df):
    expect_error(lambda: E(df.assign(y=np.nan)).add_metric(y="y"), "y:", "'y'", "no non-missing")


def test_metric_with_too_few_complete_rows(df):
    bad = df.assign(y=df.y.where(df.index < 2))  # 2 complete rows for 2 parameters
    expect_error(lambda: E(bad).add_metric(y="y").fit(cf.LinearModel), "y:", "'y'", "complete rows")


def test_metric_that_is_a_design_column(df):
    expect_error(lambda: E(df, treated="took").add_metric(y="took"), "y:", "'took'", "treated")


def test_covariate_that_is_a_design_column_or_metric(df):
    expect_error(lambda: E(df).add_metric(y="y", exogenous_covariates=["assigned"]),
                 "exogenous_covariates", "'assigned'", "intent_to_treat")
    expect_error(lambda: E(df).add_metric(y=["y", "y2"], exogenous_covariates=["y2"]),
                 "exogenous_covariates", "'y2'", "metric")


# -- clusters --------------------------------------------------------------------------
def test_cluster_that_mixes_assignment_warns(df):
    # store s holds rows 6s..6s+5 with assigned alternating 0/1: every store is mixed
    with pytest.warns(cf.DesignWarning, match=r"cluster_by \['store'\].*10 of 10 clusters"):
        E(df, cluster_by="store")


def test_cluster_randomised_data_do_not_warn(df):
    clean = df.assign(assigned=(df.store % 2).astype(int))
    data = E(clean, cluster_by="store")  # DesignWarning is an error under pytest config
    assert data.design.cluster and data.design.n_clusters == N // 6


def test_single_cluster(df):
    expect_error(lambda: E(df.assign(store=1), cluster_by="store"), "cluster_by", "single cluster")


# -- covariates ------------------------------------------------------------------------
@pytest.mark.parametrize("column, value", [("k", 3.5), ("label", "same")])
def test_constant_covariate(df, column, value):
    expect_error(lambda: E(df.assign(**{column: value})).add_metric(
        y="y", exogenous_covariates=["x", column]), "exogenous_covariates", repr(column), "constant")


def test_collinear_numeric_covariates_name_every_column_involved(df):
    data = df.assign(x2=2 * df.x - 1.0)
    message = expect_error(lambda: E(data).add_metric(y="y", exogenous_covariates=["x", "z", "x2"]),
                           "exogenous_covariates", "collinear", "'x'", "'x2'")
    assert "'z'" not in message


def test_collinear_categorical_covariates(df):
    data = df.assign(group=df.seg.map({"a": "u", "b": "v", "c": "u"}))
    message = expect_error(lambda: E(data).add_metric(y="y", exogenous_covariates=["seg", "x", "group"]),
                           "exogenous_covariates", "collinear", "seg[b]", "group[v]")
    assert "'x'" not in message


@pytest.mark.parametrize("make", [
    lambda n: pd.date_range("2024-01-01", periods=n, freq="h"),
    lambda n: pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC"),
    lambda n: pd.to_timedelta(np.arange(n), unit="m"),
])
def test_date_covariate_is_rejected_not_expanded_into_levels(df, make):
    data = df.assign(when=make(len(df)))
    expect_error(lambda: E(data).add_metric(y="y", exogenous_covariates=["x", "when"]),
                 "exogenous_covariates", "'when'", "dates")


def test_covariate_constant_within_an_arm_is_named(df):
    # found when the fit meets a singular design (a per-arm pass is too costly to run always)
    # a copy of the assignment: it varies overall but not within either arm
    data = df.assign(copy_of_t=df.assigned * 2.0 + 1)
    expect_error(lambda: E(data).add_metric(y="y", exogenous_covariates=["x", "copy_of_t"]).fit(cf.LinearModel),
                 "exogenous_covariates", "'copy_of_t'", "constant among the rows of arm 0", "'assigned'")
    # a level seen only in the treatment arm: its indicator is constant (0) in control
    data = df.assign(tier=np.where((df.assigned == 1) & (df.seg == "c"), "gold", "basic"))
    expect_error(lambda: E(data).add_metric(y="y", exogenous_covariates=["x", "tier"]).fit(cf.LinearModel),
                 "exogenous_covariates", "tier[gold]", "arm 0")


def test_covariates_collinear_within_one_arm_are_named(df):
    data = df.assign(x2=np.where(df.assigned == 1, 3 * df.x - 2, df.y2))  # y2: unrelated noise
    spec = E(data).add_metric(y="y", exogenous_covariates=["x", "z", "x2"])  # fine overall
    message = expect_error(lambda: spec.fit(cf.LinearModel(cov_type="HC0")),
                           "exogenous_covariates", "'x'", "'x2'", "collinear among the rows of arm 1")
    assert "'z'" not in message


def test_multi_arm_instrument_that_misses_an_arm(df):
    arms = np.resize(np.array(["ctl", "blue", "green"]), N)
    bad = df.assign(arm=arms, got=np.where(arms == "ctl", "ctl", "blue"),
                    inst=np.where(arms == "green", "blue", arms))
    expect_error(lambda: E(bad, intent_to_treat="arm", treated="got", instrument="inst", control="ctl"),
                 "instrument", "'inst'", "'green'")


def test_identifier_as_covariate_is_refused_before_any_allocation(df):
    # one level per row: (1 + J)(1 + q) parameters exceed the rows; refused before forming q x q
    data = df.assign(user=[f"u{i}" for i in range(N)])
    expect_error(lambda: E(data).add_metric(y="y", exogenous_covariates=["x", "user"]),
                 "exogenous_covariates", "parameters", "'user'", str(N))


def test_covariate_listed_twice(df):
    expect_error(lambda: E(df).add_metric(y="y", exogenous_covariates=["x", "x"]),
                 "exogenous_covariates", "'x'", "twice")


# -- models ------------------------------------------------------------------------------
@pytest.mark.parametrize("cov_type", ["CR0", "CR1"])
def test_clustered_covariance_without_clusters(df, cov_type):
    spec = E(df).add_metric(y="y")
    expect_error(lambda: spec.fit(cf.LinearModel(cov_type=cov_type)), "cov_type", cov_type, "cluster_by")


@pytest.mark.parametrize("cov_type", ["HC3", "hc1", "cluster", ""])
def test_bad_cov_type(df, cov_type):
    expect_error(lambda: cf.LinearModel(cov_type=cov_type), "cov_type", repr(cov_type))
    spec = E(df).add_metric(y="y")
    expect_error(lambda: spec.fit(cf.LinearModel, cov_type=cov_type), "cov_type")


def test_fit_with_something_that_is_not_an_estimator(df):
    expect_error(lambda: E(df).add_metric(y="y").fit(object()), "fit")


# -- condition_on -------------------------------------------------------------------------
@pytest.fixture
def model(df):
    return E(df).add_metric(y=["y", "y2"], exogenous_covariates=["x", "seg"]).fit(cf.LinearModel)


def test_unknown_condition_column_names_it_and_its_position(model):
    expect_error(lambda: model.infer_effect(condition_on=["x > 0 and device == 'web'"]),
                 "'device'", "position 10", "x > 0 and device == 'web'")


def test_unknown_condition_column_position_is_that_of_the_name(model):
    expect_error(lambda: model.infer_effect(condition_on=["x > 0 or seg == 'z' or z > 1"]),
                 "'z'", "position 23")  # 0-based, as every position in these messages


def test_condition_on_a_column_that_is_not_a_covariate(model):
    # z is in the table but not a covariate of the model
    expect_error(lambda: model.infer_effect(condition_on="z > 0"), "'z'", "covariate")


@pytest.mark.parametrize("text, position", [
    ("x > > 1", 4),
    ("x > 1 and", 9),
    ("x > 1 and  ", 9),
    ("x >", 3),
    ("seg == 'a", 7),
    ("(x > 1", 0),
    ("x = 1", 0),
])
def test_condition_syntax_error_says_where(model, text, position):
    message = expect_error(lambda: model.infer_effect(condition_on=[text]), repr(text), "syntax error")
    found = int(re.search(r"position (\d+)", message).group(1))
    # Python's parser reports where it noticed the problem: at or after the start of the
    # faulty token and never past the end of the text
    assert position <= found <= len(text)


@pytest.mark.parametrize("text, construct, position", [
    ("x > 0 and len(seg) > 1", "Call", 10),
    ("x.real > 0", "Attribute", 0),
    ("(lambda: 1)() > 0", "Call", 0),
    ("(lambda v: v)(x) > 0", "Call", 0),
    ("seg[0] == 'a'", "Subscript", 0),
    ("x > 0 and [v for v in [1]] == [1]", "ListComp", 10),
    ("x > 0 or {v for v in x} == 1", "SetComp", 9),
    ("x if x > 0 else x", "IfExp", 0),
    ("x > 0 and f'{x}' == '1'", "JoinedStr", 10),
    ("(y := 1) > 0", "NamedExpr", 1),
    ("x > 0 and ... == 1", "Constant", 10),
    ("x > 0 and None == x", "None", 10),
    ("x is None", "Is", 5),
    ("{'a': 1} == x", "Dict", 0),
    ("x > 0 and seg in seg", "'in' must be followed by a list", 17),
    ("seg in [x]", "only numbers, strings and booleans", 8),
])
def test_forbidden_constructs_say_what_and_where(model, text, construct, position):
    expect_error(lambda: model.infer_effect(condition_on=[text]), repr(text),
                 f"position {position}", construct)


@pytest.mark.parametrize("text", ["__import__ > 0", "x > 0 and __class__ == 1", "__builtins__ == 1"])
def test_dunder_names_are_unknown_columns(model, text):
    name = re.search(r"__\w+__", text).group(0)
    expect_error(lambda: model.infer_effect(condition_on=[text]), repr(name), f"position {text.find(name)}")


def test_condition_selecting_no_rows(model):
    expect_error(lambda: model.infer_effect(condition_on=["x > 0", "x > 100 and seg == 'a'"]),
                 "x > 100 and seg == 'a'", "selects no rows")


@pytest.mark.parametrize("text, problem", [
    ("x", "true/false"),
    ("x + 1", "true/false"),
    ("seg", "true/false"),
    ("x > 0 and x", "true/false"),
    ("not seg", "true/false"),
    ("", "non-empty"),
    ("   ", "non-empty"),
])
def test_condition_that_is_not_a_boolean(model, text, problem):
    expect_error(lambda: model.infer_effect(condition_on=[text]), "condition_on", problem)


def test_condition_list_errors(model):
    expect_error(lambda: model.infer_effect(condition_on=[]), "condition_on", "empty")
    expect_error(lambda: model.infer_effect(condition_on=["x > 0", "x > 0"]), "condition_on", "twice")
    expect_error(lambda: model.infer_effect(condition_on=[3]), "condition_on", "3")
    expect_error(lambda: model.infer_effect(condition_on=["x" * 2001 + " > 0"]), "condition_on", "longer")


def test_bad_alpha(model):
    for alpha in (0, 1, 1.5, -0.1):
        expect_error(lambda alpha=alpha: model.infer_effect(alpha=alpha), "alpha")


# -- the user's data are never modified; polars / pyarrow tables ---------------------------
def _full_pipeline(table, sim):
    data = cf.ExperimentData(table, **sim.design)
    model = data.add_metric(y=sim.y, exogenous_covariates=sim.covariates).fit(cf.LinearModel)
    return model.infer_effect(condition_on=["seg == 'b'", "x > 0 and seg in ['a', 'c']"]).to_frame()


@pytest.mark.parametrize("design", ["ab", "encouragement", "cluster", "adaptive", "multi_arm", "mixed"])
def test_user_table_is_never_modified(simulate, design):
    sim = simulate(design, 3)
    table = sim.df.copy()
    # a metric with missing values and a nullable integer metric exercise the conversions
    table.loc[table.index[::7], "y2"] = np.nan
    table["y1"] = table["y1"].round().astype("Int64")
    table.loc[table.index[1], "y1"] = pd.NA
    before = copy.deepcopy(table)
    dtypes, columns, index = table.dtypes.copy(), table.columns.copy(), table.index.copy()
    _full_pipeline(table, sim)
    pd.testing.assert_frame_equal(table, before, check_exact=True)
    pd.testing.assert_series_equal(table.dtypes, dtypes)
    assert table.columns.equals(columns) and table.index.equals(index)
    assert table.flags.allows_duplicate_labels == before.flags.allows_duplicate_labels


@pytest.mark.parametrize("design", ["ab", "multi_arm", "mixed"])
@pytest.mark.parametrize("backend", ["polars", "pyarrow"])
def test_polars_and_pyarrow_give_the_pandas_results(simulate, design, backend):
    sim = simulate(design, 11)
    table = sim.df.copy()
    table.loc[table.index[::5], "y2"] = np.nan
    if backend == "polars":
        pl = pytest.importorskip("polars")
        other = pl.from_pandas(table)
        snapshot = other.clone()
    else:
        pa = pytest.importorskip("pyarrow")
        other = pa.Table.from_pandas(table, preserve_index=False)
        snapshot = other
    expected = _full_pipeline(table, sim)
    got = _full_pipeline(other, sim)
    # the same numbers go through the same code after conversion: equal to the last bits up to
    # summation order, so a tight tolerance
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, atol=0)
    if backend == "polars":
        assert other.equals(snapshot)
    else:
        assert other.equals(pa.Table.from_pandas(table, preserve_index=False))


# -- the design record, read off the data (checked against pandas) -----------------------------
FLAGS = {"ab": ("ab",), "encouragement": ("encouragement",), "cluster": ("cluster",),
         "adaptive": ("adaptive",), "multi_arm": ("ab",), "mixed": ("encouragement", "cluster", "adaptive")}


@pytest.mark.parametrize("design", list(FLAGS))
def test_design_record_matches_the_data(simulate, design):
    sim = simulate(design, 21)
    record = sim.experiment().design
    on = {k for k in ("ab", "encouragement", "cluster", "adaptive") if getattr(record, k)}
    assert on == set(FLAGS[design])
    assign = sim.df[sim.design["intent_to_treat"]]
    control = sim.design.get("control", 0)
    assert record.control == control and record.arms[0] == control
    assert sorted(map(str, record.arms)) == sorted(map(str, assign.unique()))
    assert record.n_units == len(sim.df)
    shares = assign.value_counts(normalize=True)
    assert record.allocation.keys() == set(record.arms)
    for arm, share in record.allocation.items():
        assert share == pytest.approx(shares[arm], rel=1e-12)
    if "cluster_by" in sim.design:
        assert record.n_clusters == sim.df[sim.design["cluster_by"]].nunique()
    else:
        assert record.n_clusters is None
    if "treated" in sim.design:
        rates = sim.df.groupby(assign)[sim.design["treated"]].mean()
        assert record.compliance_rate == pytest.approx(rates[1] - rates[0], rel=1e-12)
    else:
        assert record.compliance_rate is None
    text = str(record)
    assert all(kind in text for kind in FLAGS[design]) and f"{len(sim.df):,}" in text
    assert record._repr_html_().startswith("<pre>")


# -- fuzz: any table and any roles either work or raise ValidationError ---------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALUES = {
    "int01": st.integers(0, 1),
    "int012": st.integers(0, 2),
    "float": st.floats(-5, 5, allow_nan=False),
    "float_nan": st.one_of(st.floats(-5, 5, allow_nan=False), st.just(float("nan"))),
    "float_inf": st.sampled_from([0.0, 1.0, 2.5, float("inf")]),
    "extreme": st.sampled_from([0.0, 5e-324, -1e-310, 3.0, 1e149, -1e300]),
    "prob": st.floats(0.0, 1.0),
    "text": st.sampled_from(["a", "b", "control"]),
    "text_none": st.sampled_from(["a", "b", None]),
    "bool": st.booleans(),
    "const": st.just(1.0),
}


@st.composite
def random_experiment(draw):
    """Mostly plausible experiments (so that many reach the fit) with random flaws."""
    n = draw(st.integers(4, 30))
    kinds = draw(st.lists(st.sampled_from(sorted(_VALUES)), min_size=2, max_size=5))
    columns = {f"c{i}_{kind}": draw(st.lists(_VALUES[kind], min_size=n, max_size=n))
               for i, kind in enumerate(kinds)}
    arm_kind = draw(st.sampled_from(["int01", "int012", "text", "bool"]))
    arms = {"int01": [0, 1], "int012": [0, 1, 2], "text": ["control", "a", "b"], "bool": [False, True]}[arm_kind]
    assign = [arms[i % len(arms)] for i in range(n)]
    if draw(st.booleans()):
        assign = draw(st.permutations(assign))
    columns["arm"] = assign
    columns["y"] = draw(st.lists(_VALUES["float_nan"] if draw(st.booleans()) else _VALUES["float"],
                                 min_size=n, max_size=n))
    names = list(columns)
    pick = st.sampled_from(names)
    rarely = st.one_of(st.none(), st.none(), st.none(), pick)
    roles = {"intent_to_treat": "arm" if draw(st.integers(0, 9)) else draw(pick),
             "treated": draw(rarely), "propensity": draw(rarely), "instrument": draw(rarely),
             "cluster_by": draw(rarely), "control": draw(st.sampled_from([None, None, None, 0, "control"]))}
    y = ["y"] + draw(st.lists(pick, max_size=1))
    covariates = draw(st.lists(pick, max_size=2, unique=True))
    cov_type = draw(st.sampled_from([None, "HC0", "CR1"]))
    condition = draw(st.sampled_from([None, f"{names[0]} > 0", f"{names[0]} in ['a', 1]"]))
    return pd.DataFrame(columns), roles, list(dict.fromkeys(y)), covariates, cov_type, condition


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=random_experiment())
def test_any_input_works_or_raises_validation_error(case):
    import warnings

    df, roles, y, covariates, cov_type, condition = case
    before = df.copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cf.DesignWarning)
            data = cf.ExperimentData(df, **roles)
            model = data.add_metric(y=y, exogenous_covariates=covariates).fit(cf.LinearModel(cov_type=cov_type))
            frame = model.infer_effect(condition_on=condition).to_frame()
        assert len(frame) > 0
    except cf.ValidationError as exc:
        assert str(exc)
    pd.testing.assert_frame_equal(df, before)
