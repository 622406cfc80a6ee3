"""ACIC 2016 evaluation: loader, metrics (against hand computations), resumability, CLI.

Uses the shared export in ../shared/data/acic2016 (read in place). The end-to-end runs
use the cheap "linear" learner, 2 folds and one iteration on two data sets so that the
module stays well under a minute.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from causalflow.errors import ValidationError
from causalflow.oci import acic

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "acic2016"
pytestmark = pytest.mark.skipif(not (DATA / "x.csv").is_file(), reason="ACIC 2016 export not present")

FAST = dict(propensity_learner="linear", outcome_learner="linear", n_folds=2, max_iterations=1,
            n_jobs=1, progress=False)


def test_loader_matches_raw_files():
    d = acic.load_dataset(DATA, 1, 2)
    with gzip.open(DATA / "1" / "zymu_2.csv.gz", "rt") as fh:
        raw = pd.read_csv(fh)
    z = raw["z"].to_numpy()
    # independent recomputation of the observed outcome and the two sample truths
    y = np.where(z == 1, raw["y1"], raw["y0"])
    assert d.frame.shape == (4802, 60)
    assert d.covariates == [f"x_{i}" for i in range(1, 59)]
    np.testing.assert_array_equal(d.frame["z"].to_numpy(), z)
    np.testing.assert_allclose(d.frame["y"].to_numpy(), y, rtol=0, atol=0)
    tau = (raw["y1"] - raw["y0"]).to_numpy()
    # truth.csv was computed in double precision before writing: agreement to ~1e-12 (README)
    assert d.truth["satt"] == pytest.approx(tau[z == 1].mean(), abs=1e-9)
    assert d.truth["sate"] == pytest.approx(tau.mean(), abs=1e-9)
    assert d.truth["n_treated"] == int(z.sum())
    assert set(d.frame["x_2"]) <= set("ABCDEF")  # categoricals kept as letters


def test_list_and_bad_paths(tmp_path):
    keys = acic.list_datasets(DATA)
    assert len(keys) == 231 and keys[0] == (1, 1) and keys[-1] == (77, 3)
    with pytest.raises(ValidationError, match="data"):
        acic.resolve_data_dir(tmp_path)
    with pytest.raises(ValidationError, match="setting/replication"):
        acic.load_dataset(DATA, 1, 99)


def test_metrics_hand_computed():
    est = [1.0, 2.0, 4.0, np.nan]
    lo = [0.5, 2.5, 3.0, 0.0]
    hi = [1.5, 3.5, 6.0, 1.0]
    truth = [1.2, 2.2, 3.0, 1.0]
    m = acic.estimand_metrics(est, lo, hi, truth)
    errors = [-0.2, -0.2, 1.0]  # the NaN estimate is left out
    assert m.n == 3
    assert m.bias == pytest.approx(sum(errors) / 3, rel=1e-12)
    assert m.rmse == pytest.approx(math.sqrt((0.04 + 0.04 + 1.0) / 3), rel=1e-12)
    assert m.mae == pytest.approx(1.4 / 3, rel=1e-12)
    assert m.coverage == pytest.approx(2 / 3, rel=1e-12)  # 1.2 in, 2.2 out, 3.0 on the boundary (in)
    assert m.interval_length == pytest.approx((1.0 + 1.0 + 3.0) / 3, rel=1e-12)


def test_evaluate_resumable_and_tables(tmp_path):
    out = tmp_path / "eval"
    summary = acic.evaluate(DATA, out, settings=[1], replications=[1, 2], **FAST)
    files = sorted((out / "datasets").glob("*.json"))
    assert [f.name for f in files] == ["s01_r1.json", "s01_r2.json"]
    for name in ("report.md", "report.html", "results.csv", "summary.json",
                 "plots/estimate_vs_truth.png", "plots/coverage_by_setting.png"):
        assert (out / name).is_file(), name

    # the summary's numbers equal a hand computation from the per-data-set records
    recs = [json.loads(f.read_text()) for f in files]
    for estimand, key in (("ATT", "satt"), ("ATE", "sate")):
        err = np.array([r["scored"][estimand]["estimate"] - r["truth"][key] for r in recs])
        cover = [r["scored"][estimand]["ci_lower"] <= r["truth"][key] <= r["scored"][estimand]["ci_upper"]
                 for r in recs]
        row = next(o for o in summary["overall"] if o["estimand"] == estimand and o["method"] == "OCI loop")
        assert row["rmse"] == pytest.approx(float(np.sqrt(np.mean(err**2))), rel=1e-12)
        assert row["bias"] == pytest.approx(float(err.mean()), rel=1e-12)
        assert row["coverage"] == pytest.approx(float(np.mean(cover)), rel=1e-12)
    # the one-shot baseline is the z coefficient of OLS y ~ 1 + z + X: check it with numpy
    d = acic.load_dataset(DATA, 1, 1)
    X = pd.get_dummies(d.frame[d.covariates], columns=["x_2", "x_21", "x_24"], drop_first=True, dtype=float)
    Z = np.column_stack([np.ones(len(X)), d.frame["z"], X.to_numpy()])
    beta = np.linalg.lstsq(Z, d.frame["y"].to_numpy(), rcond=None)[0]
    assert recs[0]["baseline"]["estimate"] == pytest.approx(beta[1], rel=1e-8)

    # resumable: existing results are kept as they are, a missing one is recomputed
    before = {f.name: f.stat().st_mtime_ns for f in files}
    (out / "datasets" / "s01_r2.json").unlink()
    acic.evaluate(DATA, out, settings=[1], replications=[1, 2], **FAST)
    assert (out / "datasets" / "s01_r1.json").stat().st_mtime_ns == before["s01_r1.json"]
    assert (out / "datasets" / "s01_r2.json").is_file()
    again = json.loads((out / "datasets" / "s01_r2.json").read_text())
    assert again["scored"]["ATT"]["estimate"] == recs[1]["scored"]["ATT"]["estimate"]  # same seed
    # ... but not with other options: the summary would mix two methods
    with pytest.raises(ValidationError, match="seed=0, not 1"):
        acic.evaluate(DATA, out, settings=[1], replications=[1, 2], **{**FAST, "seed": 1})
    assert (out / "datasets" / "s01_r1.json").stat().st_mtime_ns == before["s01_r1.json"]


def test_cli_sub_command(tmp_path, capsys):
    from causalflow.oci.cli import main

    out = tmp_path / "cli"
    code = main(["eval-acic", "--data", str(DATA), "--out", str(out), "--settings", "2",
                 "--replications", "1", "--learner", "linear", "--folds", "2", "--max-iterations", "1",
                 "--n-jobs", "1", "--no-progress"])
    assert code == 0
    assert (out / "datasets" / "s02_r1.json").is_file()
    assert "report.md" in capsys.readouterr().out
    assert main(["eval-acic", "--data", str(tmp_path), "--out", str(out)]) == 2  # not the export


@pytest.mark.parametrize("name", ["acic", "gbm_learners", "sample_estimands"])
def test_doctests(name):
    import doctest
    import importlib

    module = importlib.import_module(f"causalflow.oci.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_alternative_stage_is_the_other_stage_run(tmp_path):
    """The record's second final stage equals a run with that stage as the default (same
    seed, so the same fits; exact up to summation order, 1e-12)."""
    a = acic.evaluate_dataset(DATA, 1, 1, tmp_path / "a", propensity_learner="linear",
                              outcome_learner="linear", n_folds=2, max_iterations=1, final_stage="aipw_sample")
    b = acic.evaluate_dataset(DATA, 1, 1, tmp_path / "b", propensity_learner="linear",
                              outcome_learner="linear", n_folds=2, max_iterations=1, final_stage="aipw")
    assert a["alternative_stage"] == "aipw" and b["alternative_stage"] == "aipw_sample"
    for estimand in ("ATT", "ATE"):
        for field in ("estimate", "std_error", "ci_lower", "ci_upper"):
            assert a["alternative"][estimand][field] == pytest.approx(b["scored"][estimand][field], rel=1e-12)
            assert b["alternative"][estimand][field] == pytest.approx(a["scored"][estimand][field], rel=1e-12)
    assert a["scored"]["ATT"]["std_error"] != pytest.approx(b["scored"]["ATT"]["std_error"], rel=1e-3)


def test_every_estimate_carries_the_truth_of_its_population(tmp_path):
    """Whole-sample rows carry SATT / SATE; trimmed and overlap-weighted rows the truth of
    the units they describe, recomputed here from the raw potential outcomes and a rerun of
    the same (deterministic) loop."""
    from causalflow.oci import Plan
    from causalflow.oci.actor import RuleActor
    from causalflow.oci.loop import run

    opts = {"propensity_learner": "linear", "outcome_learner": "linear", "n_folds": 2}
    rec = acic.evaluate_dataset(DATA, 19, 3, tmp_path, max_iterations=2, **opts)
    raw = pd.read_csv(DATA / "19" / "zymu_3.csv.gz")
    eff = (raw["y1"] - raw["y0"]).to_numpy()
    rows = {(it["index"], r["estimand"]): r for it in rec["iterations"] for r in it["table"]}
    # truth.csv vs the raw file: ~1e-12 (the README)
    assert rows[(1, "ATT")]["truth"] == pytest.approx(rec["truth"]["satt"], abs=1e-9)
    assert rows[(1, "ATE")]["truth"] == pytest.approx(rec["truth"]["sate"], abs=1e-9)
    assert rec["n_iterations"] == 2 and rec["iterations"][1]["alpha"] > 0   # most units lack overlap: trimmed

    d = acic.load_dataset(DATA, 19, 3)
    plan = Plan(data=d.frame, treatment="z", outcome="y", confounders={"high": d.covariates},
                estimands=["ATT", "ATE"], seed=0)
    it = run(plan, max_iterations=2, actor=RuleActor(**opts, final_stage=acic.DEFAULT_FINAL_STAGE,
                                                     n_repeats=acic.DEFAULT_REPEATS)).iterations[1]
    e, kept, z = it.result.propensity, it.result.kept, raw["z"].to_numpy()
    assert rows[(2, "ATE")]["truth"] == pytest.approx(eff[kept].mean(), rel=1e-12)
    assert rows[(2, "ATT")]["truth"] == pytest.approx(eff[kept & (z == 1)].mean(), rel=1e-12)
    if (2, "ATO") in rows:
        assert rows[(2, "ATO")]["truth"] == pytest.approx(np.average(eff, weights=e * (1 - e)), rel=1e-12)
    summary = acic.summarise(tmp_path, DATA)
    trimmed = next(p for p in summary["populations"] if p["estimand"] == "ATE" and p["population"] == "trimmed")
    assert trimmed["bias"] == pytest.approx(rows[(2, "ATE")]["estimate"] - rows[(2, "ATE")]["truth"], rel=1e-12)
