"""Artifacts: the files of every iteration, atomic writes, the executed notebook, the CLI."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from oci_sims import omitted_confounder

from causalflow import cli as top_cli
from causalflow.oci import Plan, RuleActor, run
from causalflow.oci import artifacts as art
from causalflow.oci.cli import main as oci_main

JSON_FILES = ["plan.json", "spec.json", "results.json", "diagnostics.json", "critique.json"]


def _plan(n=500):
    df, _ = omitted_confounder(n=n)
    return Plan(data=df, treatment="t", outcome="y", confounders={"high": ["x"], "low": ["u"]},
                placebo_outcomes=["z"], estimands=["ATE"], seed=2)


def _no_temp_files(root: Path):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_full_artifacts_and_the_notebook_reproduces_results(tmp_path, capfd):
    result = run(_plan(), actor=RuleActor(n_folds=2), max_iterations=1, artifacts=tmp_path / "run")
    # executing the notebook prints nothing on the terminal (the kernel inherits fd 2: capfd
    # sees its writes; with the TCP transport it warned "running over TCP without encryption")
    printed = capfd.readouterr()
    assert printed.err == "" and printed.out == "", printed
    root = tmp_path / "run"
    folder = root / "iteration_01"
    for name in JSON_FILES + ["report.md", "report.html", "notebook.ipynb"]:
        assert (folder / name).is_file(), name
    for plot in ("overlap", "love", "estimates", "placebo", "sensitivity"):
        assert (folder / "plots" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = json.loads((root / "run.json").read_text())
    assert index["stop_reason"] == result.stop_reason
    assert index["iterations"][0]["files"]["results.json"] == "iteration_01/results.json"
    assert index["final"]["table"][0]["estimand"] == "ATE"
    saved = json.loads((folder / "results.json").read_text())
    assert saved["estimates"][0]["estimate"] == result.final.result.estimates[0].estimate
    # the HTML report is self-contained: images inline, no external references
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "src=\"http" not in page and "<link" not in page
    # the executed notebook re-ran the spec from the saved files and printed its results
    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "REPRODUCED results.json" in printed
    reproduced = json.loads(printed.splitlines()[0])
    assert reproduced == saved
    assert not _no_temp_files(root)


def test_minimal_level_and_no_artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(_plan(300), actor=RuleActor(n_folds=2), max_iterations=2, artifacts=None)
    assert list(tmp_path.iterdir()) == []
    result = run(_plan(300), actor=RuleActor(n_folds=2), max_iterations=2, artifacts="out",
                 artifact_level="minimal")
    names = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    expected = {"run.json", "report.md"} | {f"iteration_0{i}/{f}" for i in (1, 2)
                                            for f in JSON_FILES + ["report.md"]}
    assert names == expected
    assert len(result.iterations) == 2


def test_a_killed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x" / "results.json"
    art.atomic_write(target, "old")

    def killed(fd):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(art.os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        art.atomic_write(target, '{"half": ')
    assert target.read_text() == "old"  # the previous complete file survives
    assert os.listdir(target.parent) == ["results.json"]


def test_a_run_killed_mid_iteration_leaves_only_complete_files(tmp_path, monkeypatch):
    # the 9th file (iteration 2's third; minimal level writes 6 per iteration) is killed
    # after its temp file was fully written but before os.replace: the real cleanup runs
    calls = {"n": 0}
    real_replace = os.replace

    def killed_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 9:
            assert Path(src).exists() and Path(src).name.endswith(".tmp")
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(art.os, "replace", killed_replace)
    with pytest.raises(KeyboardInterrupt):
        run(_plan(300), actor=RuleActor(n_folds=2), max_iterations=3, artifacts=tmp_path / "run",
            artifact_level="minimal")
    monkeypatch.undo()
    root = tmp_path / "run"
    assert calls["n"] == 9
    assert not _no_temp_files(root)
    assert sorted(p.name for p in (root / "iteration_02").iterdir()) == ["plan.json", "spec.json"]
    for path in root.rglob("*.json"):
        json.loads(path.read_text())  # every file that exists is complete
    assert not (root / "run.json").exists()  # the index is written last


def _write_study(tmp_path):
    """A study CSV and its plan file in tmp_path (the CLI tests' input): a seed whose second
    iteration is clean, so the CLI's whole story is shown (the stop rules themselves are
    tested in test_studies.py and test_final_selection.py)."""
    df, _ = omitted_confounder(n=300, seed=1)
    df.to_csv(tmp_path / "study.csv", index=False)
    (tmp_path / "plan.yaml").write_text(
        "data: study.csv\ntreatment: t\noutcome: y\nconfounders: {high: [x], low: [u]}\n"
        "placebo_outcomes: [z]\nestimands: [ATE]\n")


def test_cli_run_and_show(tmp_path, capsys):
    _write_study(tmp_path)
    out = tmp_path / "out"
    code = top_cli.main(["oci", "run", str(tmp_path / "plan.yaml"), "--out", str(out),
                         "--artifact-level", "minimal"])
    text = capsys.readouterr()
    assert code == 0
    assert "stopped: all_fully_satisfactory after 2 iteration(s)" in text.out
    assert "OCI iterations" in text.err  # the tqdm progress bar
    assert oci_main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "iteration 1 (rules): ATE: satisfactory_with_caveats; 1 proposal(s)" in shown
    assert "fully_satisfactory" in shown
    (tmp_path / "bad.yaml").write_text("data: study.csv\ntreatment: t\noutcome: y\nconfounders: [nope]\n")
    assert oci_main(["run", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o2")]) == 2
    assert "Plan.confounders: column 'nope'" in capsys.readouterr().err
    assert oci_main(["frobnicate"]) == 2
    assert oci_main(["show", str(tmp_path / "nowhere")]) == 2


def test_no_notebook_skips_only_the_notebook(tmp_path, capfd):
    _write_study(tmp_path)
    out = tmp_path / "out"
    assert oci_main(["run", str(tmp_path / "plan.yaml"), "--out", str(out), "--no-notebook",
                     "--no-progress"]) == 0
    printed = capfd.readouterr()
    assert printed.err == ""  # no progress bar asked for, and nothing else
    # the run report is printed: the reported iteration and why, then every iteration
    assert "**Reported: iteration 2** of 2. Why: iteration 2 has the best verdict" in printed.out
    for folder in ("iteration_01", "iteration_02"):
        assert (out / folder / "report.html").is_file() and (out / folder / "plots" / "love.png").is_file()
        assert not (out / folder / "notebook.ipynb").exists()
    assert not (out / "data.parquet").exists()
    assert (out / "report.md").read_text().splitlines()[2].startswith("**Reported: iteration 2**")
    result = run(_plan(300), actor=RuleActor(n_folds=2), max_iterations=1, artifacts=tmp_path / "py",
                 notebook=False)
    assert result.final.files and "notebook.ipynb" not in result.final.files
