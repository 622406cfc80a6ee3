"""Follow-ups: the sensitivity sweep and the same spec across partitions."""

import numpy as np
from oci_sims import good_overlap, omitted_confounder

from causalflow.oci import Plan, RuleActor, Spec, prepare_data, run, run_spec
from causalflow.oci.followups import (
    by_partition,
    plot_partitions,
    plot_sweep,
    sensitivity_sweep,
    write_followup,
)
from causalflow.oci.plan import AnalysisData


def test_sweep_over_trimming_and_confounder_sets(tmp_path):
    df, _ = omitted_confounder(n=600)
    plan = Plan(data=df, treatment="t", outcome="y", confounders={"high": ["x"], "low": ["u"]},
                placebo_outcomes=["z"], estimands=["ATE", "ATO"])
    spec = run(plan, actor=RuleActor(n_folds=2), max_iterations=1).final.spec
    sweep = sensitivity_sweep(plan, spec, trimming=("none", 0.1))
    # sets: spec (x) and all (x, u); "high" equals the spec's set and is not run twice
    assert sorted(set(sweep["covariate_set"])) == ["all", "spec"]
    assert len(sweep) == 2 * 2 * 2
    by = sweep.set_index(["covariate_set", "trimming", "estimand"])["estimate"]
    # adjusting for u removes the bias (truth 2): the sweep shows the estimate move
    assert abs(by[("all", "none", "ATE")] - 2) < abs(by[("spec", "none", "ATE")] - 2)
    # the trimmed rows equal a direct run of the trimmed spec
    direct = run_spec(prepare_data(plan), Spec.from_dict({**spec.to_dict(), "trimming": 0.1}, plan))
    assert by[("spec", "0.1", "ATE")] == direct.estimate("ATE").estimate
    files = write_followup(sweep, plot_sweep(sweep), tmp_path, "sweep")
    assert open(files["plot"], "rb").read(4) == b"\x89PNG"


def test_partitions_equal_separate_runs(tmp_path):
    df, _ = good_overlap(n=900)
    df["month"] = np.repeat(["2024-01", "2024-02", "2024-03"], 300)
    df.loc[df["month"] == "2024-03", "t"] = 1  # one partition without controls
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["x1", "x2"], estimands=["ATE"])
    spec = Spec(estimands=("ATE",), covariates=("x1", "x2"), priorities=(("x1", "high"), ("x2", "high")),
                n_folds=2)
    table = by_partition(plan, spec, "month")
    assert table["partition"].tolist() == ["2024-01", "2024-02", "2024-03"]
    assert "no control units" in table.loc[2, "error"]
    full = prepare_data(plan.replace(partition="month"))
    mask = full.frame["month"].to_numpy() == "2024-02"
    sub = AnalysisData(full.frame[mask].reset_index(drop=True), full.treatment[mask], full.outcome[mask],
                       {}, full.plan)
    assert table.loc[1, "estimate"] == run_spec(sub, spec).estimates[0].estimate
    files = write_followup(table, plot_partitions(table), tmp_path, "by_month")
    assert open(files["table"]).readline().startswith("partition,")
