"""Plans: loading, field-named validation errors, and failing before any fitting."""

import json

import numpy as np
import pandas as pd
import pytest
from oci_sims import good_overlap

from causalflow.errors import ValidationError
from causalflow.oci import (
    Plan,
    RuleActor,
    Spec,
    apply_change,
    estimators,
    prepare_data,
    run,
)


@pytest.fixture
def no_fitting(monkeypatch):
    """Any attempt to fit a nuisance model fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("a model was fitted before validation finished")

    monkeypatch.setattr(estimators, "cross_fit", boom)


def _plan(df, **changes):
    fields = dict(data=df, treatment="t", outcome="y", confounders={"high": ["x1"], "medium": ["x2", "x3"]},
                  placebo_outcomes=["z"], estimands=["ATE"])
    fields.update(changes)
    return Plan(**fields)


def test_missing_column_fails_before_fitting(no_fitting):
    df, _ = good_overlap(n=200)
    with pytest.raises(ValidationError, match=r"Plan.confounders: column 'x9' is not in the data"):
        run(_plan(df, confounders={"high": ["x1", "x9"]}))
    with pytest.raises(ValidationError, match=r"Plan.placebo_outcomes: column 'nope'"):
        run(_plan(df, placebo_outcomes=["nope"]))
    with pytest.raises(ValidationError, match=r"Plan.outcome: column 'yy'"):
        run(_plan(df, outcome="yy"))


def test_non_binary_treatment_fails_before_fitting(no_fitting):
    df, _ = good_overlap(n=200)
    df = df.assign(t=df["t"] * 2)
    with pytest.raises(ValidationError, match=r"Plan.treatment: column 't' must be binary"):
        run(_plan(df))
    df2 = df.assign(t=np.where(df["t"] > 0, "yes", "no"))
    with pytest.raises(ValidationError, match="must be binary"):
        run(_plan(df2))


def test_other_data_problems_are_named(no_fitting):
    df, _ = good_overlap(n=200)
    with pytest.raises(ValidationError, match="Plan.outcome: column 'y' has 1 missing"):
        run(_plan(df.assign(y=df["y"].where(df.index != 3))))
    with pytest.raises(ValidationError, match="Plan.treatment: column 't' has only treated"):
        run(_plan(df.assign(t=1)))
    with pytest.raises(ValidationError, match="Plan.population: .*unknown column 'age'"):
        run(_plan(df, population="age > 3"))
    with pytest.raises(ValidationError, match="Plan.population: no rows"):
        run(_plan(df, population="x1 > 100"))
    with pytest.raises(ValidationError, match="Plan.population: .*Call is not allowed"):
        _plan(df, population="__import__('os').system('true')")


@pytest.mark.parametrize("changes, message", [
    (dict(treatment=""), "Plan.treatment"),
    (dict(estimands=["ATE", "CATE"]), "Plan.estimands: unknown estimand 'CATE'"),
    (dict(confounders={"urgent": ["x1"]}), "Plan.confounders: unknown priority 'urgent'"),
    (dict(confounders={"high": ["x1"], "low": ["x1"]}), "more than one priority"),
    (dict(confounders={"high": ["y"]}), "'y' is the outcome"),
    (dict(seed=-1), "Plan.seed"),
    (dict(data=3.5), "Plan.data"),
    (dict(placebo_outcomes=["x1"]), "Plan.placebo_outcomes: 'x1' is also a confounder"),
])
def test_plan_field_errors(changes, message):
    df, _ = good_overlap(n=50)
    with pytest.raises(ValidationError, match=message):
        _plan(df, **changes)


def test_population_filter_selects_rows():
    df, _ = good_overlap(n=300)
    data = prepare_data(_plan(df, population="x1 > 0 and x2 < 1"))
    assert data.n == int(((df.x1 > 0) & (df.x2 < 1)).sum())
    assert len(df) == 300 and "x1" in df  # the user's frame is untouched


def test_yaml_and_json_plans(tmp_path):
    df, _ = good_overlap(n=300)
    df.to_csv(tmp_path / "study.csv", index=False)
    (tmp_path / "plan.yaml").write_text(
        "data: study.csv\ntreatment: t\noutcome: y\n"
        "confounders:\n  high: [x1, x2]\n  low: [x3]\nplacebo_outcomes: [z]\nestimands: [ATE, ATO]\nseed: 4\n")
    plan = Plan.from_file(tmp_path / "plan.yaml")
    assert plan.data == str(tmp_path / "study.csv")  # relative to the plan file
    assert plan.confounders["low"] == ("x3",) and plan.seed == 4
    (tmp_path / "plan.json").write_text(json.dumps({**plan.to_dict(), "data": "study.csv"}))
    again = Plan.from_file(tmp_path / "plan.json")
    assert again.to_dict() == plan.to_dict()
    (tmp_path / "bad.yaml").write_text("data: study.csv\ntreatment: t\noutcome: y\nconfounder: [x1]\n")
    with pytest.raises(ValidationError, match="Plan.confounder: unknown field"):
        Plan.from_file(tmp_path / "bad.yaml")
    (tmp_path / "evil.yaml").write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValidationError, match="invalid YAML"):
        Plan.from_file(tmp_path / "evil.yaml")
    result = run(tmp_path / "plan.yaml", actor=RuleActor(n_folds=2), max_iterations=1)
    assert result.final.spec.seed == 4


def test_parquet_and_polars_tables(tmp_path):
    df, _ = good_overlap(n=200)
    df.to_parquet(tmp_path / "d.parquet")
    a = prepare_data(_plan(str(tmp_path / "d.parquet")))
    with pytest.raises(ValidationError, match="Plan.confounders: column 'w' is not in the data"):
        prepare_data(_plan(str(tmp_path / "d.parquet"), confounders=["x1", "w"]))
    pl = pytest.importorskip("polars")
    b = prepare_data(_plan(pl.from_pandas(df)))
    np.testing.assert_array_equal(a.outcome, b.outcome)


def test_spec_validation_and_changes():
    plan = _plan(pd.DataFrame(), confounders={"high": ["x1"], "low": ["x3"]})
    spec = RuleActor().propose(plan, None, None).spec
    assert spec.covariates == ("x1",) and spec.placebo_outcomes == ("z",)
    with pytest.raises(ValidationError, match="Spec.covariates: 'y' is not a confounder"):
        apply_change(spec, {"add_covariates": ["y"]}, plan)
    with pytest.raises(ValidationError, match="change.run: unknown key"):
        apply_change(spec, {"run": "rm -rf /"}, plan)
    with pytest.raises(ValidationError, match="Spec.trimming"):
        apply_change(spec, {"trimming": 0.7}, plan)
    with pytest.raises(ValidationError, match="Spec.propensity_learner: learner: unknown name"):
        Spec.from_dict({**spec.to_dict(), "propensity_learner": "os.system"}, plan)
    assert Spec.from_dict(spec.to_dict(), plan) == spec
    assert apply_change(spec, {"notes": ["n"]}).key() == spec.key()


def test_thresholds_are_validated_and_used():
    from causalflow.oci import Thresholds

    with pytest.raises(ValidationError, match="Thresholds.overlap_bounds"):
        Thresholds(overlap_bounds=(0.9, 0.1))
    with pytest.raises(ValidationError, match="warning threshold"):
        Thresholds(smd_warn=0.3)
    df, _ = good_overlap(n=400)
    plan = _plan(df, estimands=["ATE"])
    strict = run(plan, actor=RuleActor(n_folds=2), max_iterations=1,
                 thresholds=Thresholds(overlap_bounds=(0.45, 0.55), overlap_warn=0.01, overlap_fail=0.02))
    assert strict.final.verdicts["ATE"] == "not_satisfactory"  # almost every unit is "outside"
