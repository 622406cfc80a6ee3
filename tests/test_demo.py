"""The demo runs end to end and recovers the simulated truth."""

import numpy as np

import causalflow as cf
from causalflow.cli import main
from causalflow.demo import simulate_store


def test_demo_command_prints_effects(capsys):
    assert main(["demo", "--n", "5000"]) == 0
    out = capsys.readouterr().out
    assert "LATE" in out and "ITT" in out and "device == 'desktop'" in out


def test_demo_recovers_truth():
    """The simulated LATE on sales is 3.0 on desktop and 1.2 elsewhere: 95% CIs cover them."""
    df = simulate_store(n=40_000, seed=3)
    data = cf.ExperimentData(df, intent_to_treat="assigned", treated="uses_widget", cluster_by="region")
    frame = data.add_metric(y="sales", exogenous_covariates=["pre_sales", "device"]).fit(
        cf.LinearModel).infer_effect(condition_on=["device == 'desktop'", "device != 'desktop'"]).to_frame()
    late = frame[frame.estimand == "LATE"].set_index("condition")
    for condition, truth in [("device == 'desktop'", 3.0), ("device != 'desktop'", 1.2)]:
        row = late.loc[condition]
        assert row.ci_lower < truth < row.ci_upper, (condition, row.estimate)
    assert np.isclose(data.design.compliance_rate, 0.6, atol=0.02)
