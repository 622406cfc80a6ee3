"""The ``causalflow`` command line: ``--help`` everywhere, exit codes 0 / 1 (error) / 2 (usage),
and ``analyze`` / ``plan`` give the Python API's numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import causalflow as cf
from causalflow.cli import main
from causalflow.demo import simulate_store

pytestmark = pytest.mark.filterwarnings("ignore::causalflow.errors.DesignWarning")

SPEC = """
intent_to_treat: assigned
treated: uses_widget
cluster_by: region
y: [sales, orders]
exogenous_covariates: [pre_sales, device]
condition_on: ["device == 'desktop'", "device != 'desktop'"]
adjust: holm
relative: true
"""


@pytest.fixture()
def files(tmp_path):
    df = simulate_store(n=3000, n_regions=60, seed=2)
    df.to_csv(tmp_path / "store.csv", index=False)
    (tmp_path / "spec.yaml").write_text(SPEC)
    return tmp_path, df


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["analyze", "--help"], ["plan", "--help"],
                                  ["mcp", "--help"], ["oci", "--help"], ["oci", "run", "--help"],
                                  ["oci", "show", "--help"], ["oci", "eval-acic", "--help"]])
def test_help_everywhere(argv, capsys):
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "usage" in (captured.out + captured.err).lower()


def test_usage_errors_exit_2(files, capsys):
    tmp_path, _ = files
    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert main(["analyze", str(tmp_path / "store.csv")]) == 2             # --spec is required
    assert main(["analyze", "x.csv", "--spec", "s.yaml", "--format", "xml"]) == 2
    assert main(["plan", "sample_sizes", "--effect", "1"]) == 2
    assert main(["plan", "power", "--effect", "big"]) == 2
    assert main(["mcp"]) == 2                                              # --root is required
    assert main(["mcp", "--root", str(tmp_path), "--http", "70000"]) == 2


def _analysis(df):
    model = cf.ExperimentData(df, intent_to_treat="assigned", treated="uses_widget", cluster_by="region").add_metric(
        y=["sales", "orders"], exogenous_covariates=["pre_sales", "device"]).fit(cf.LinearModel)
    return model.infer_effect(condition_on=["device == 'desktop'", "device != 'desktop'"]).adjust("holm")


def test_analyze_json_gives_the_python_api_numbers(files, capsys):
    tmp_path, df = files
    assert main(["analyze", str(tmp_path / "store.csv"), "--spec", str(tmp_path / "spec.yaml"),
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    effects = _analysis(pd.read_csv(tmp_path / "store.csv"))
    assert out["effects"]["effects"] == effects.to_dict()["effects"]
    assert out["relative"]["effects"] == effects.relative().to_dict()["effects"]
    assert out["design"]["kinds"] == ["encouragement", "cluster"]


def test_analyze_markdown_and_csv(files, capsys):
    tmp_path, _ = files
    args = [str(tmp_path / "store.csv"), "--spec", str(tmp_path / "spec.yaml")]
    assert main(["analyze", *args]) == 0
    text = capsys.readouterr().out
    assert "Design: encouragement + cluster" in text and "p_adj (holm)" in text and "relative (%)" in text
    assert main(["analyze", *args, "--format", "csv", "--output", str(tmp_path / "effects.csv")]) == 0
    table = pd.read_csv(tmp_path / "effects.csv")
    assert len(table) == 8 and {"p_value_adjusted", "relative_estimate", "relative_ci_lower"} <= set(table.columns)
    effects = _analysis(pd.read_csv(tmp_path / "store.csv"))
    assert table["estimate"].tolist() == pytest.approx(effects.estimate.tolist(), rel=1e-12)
    (tmp_path / "spec.json").write_text(json.dumps({"intent_to_treat": "assigned", "y": "sales"}))
    assert main(["analyze", str(tmp_path / "store.csv"), "--spec", str(tmp_path / "spec.json")]) == 0


def test_analyze_errors_exit_1_with_an_actionable_message(files, capsys):
    tmp_path, _ = files
    data = str(tmp_path / "store.csv")
    (tmp_path / "typo.yaml").write_text("intent_to_treat: asigned\ny: sales\n")
    assert main(["analyze", data, "--spec", str(tmp_path / "typo.yaml")]) == 1
    err = capsys.readouterr().err
    assert "did you mean 'assigned'" in err and "allowed:" in err
    (tmp_path / "unknown.yaml").write_text("intent_to_treat: assigned\ny: sales\nmetrics: [sales]\n")
    assert main(["analyze", data, "--spec", str(tmp_path / "unknown.yaml")]) == 1
    assert "metrics" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("intent_to_treat: assigned\ny: sales\ncondition_on: ['device = 1']\n")
    assert main(["analyze", data, "--spec", str(tmp_path / "bad.yaml")]) == 1
    assert "condition_on" in capsys.readouterr().err
    (tmp_path / "broken.yaml").write_text("intent_to_treat: [\n")
    assert main(["analyze", data, "--spec", str(tmp_path / "broken.yaml")]) == 1
    assert main(["analyze", str(tmp_path / "missing.csv"), "--spec", str(tmp_path / "typo.yaml")]) == 1
    assert main(["analyze", data, "--spec", str(tmp_path / "missing.yaml")]) == 1


def test_plan(capsys, tmp_path):
    assert main(["plan", "sample_size", "--effect", "0.5", "--sd", "2"]) == 0
    assert "n = 506 units" in capsys.readouterr().out
    assert main(["plan", "power", "--effect", "0.2", "--n", "800", "--sd", "1", "--icc", "0.02",
                 "--cluster-size", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["power"] == cf.power(effect=0.2, n=800, sd=1.0, icc=0.02, cluster_size=20).power
    df = simulate_store(n=2000, n_regions=40)
    df.to_csv(tmp_path / "pilot.csv", index=False)
    assert main(["plan", "mde", "--n", "10000", "--pilot", str(tmp_path / "pilot.csv"), "--metric", "sales",
                 "--covariates", "pre_sales", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["effect"] == cf.mde(10000, pilot=df, metric="sales", covariates=["pre_sales"]).effect
    assert main(["plan", "power", "--effect", "0.2", "--sd", "1"]) == 1       # n is needed
    assert "n: required" in capsys.readouterr().err
    assert main(["plan", "mde", "--n", "100", "--pilot", str(tmp_path / "nope.csv"), "--metric", "y"]) == 1


def test_mcp_with_a_missing_root_exits_1(tmp_path, capsys):
    assert main(["mcp", "--root", str(tmp_path / "nowhere")]) == 1
    assert "not an existing folder" in capsys.readouterr().err


def test_the_installed_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "causalflow.cli", "plan", "sample_size", "--effect", "0.5",
                             "--sd", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 506
    result = subprocess.run([sys.executable, "-m", "causalflow.cli", "analyze", "nowhere.csv", "--spec", "x.yaml"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1 and "error: data" in result.stderr


def test_mcp_without_the_sdk_names_the_extra(tmp_path):
    """Without the mcp SDK the tools still work (pydantic only) and `causalflow mcp` says what to install."""
    code = f"""
import sys
class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "mcp":
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Missing())
import causalflow as cf
assert len(cf.tools.schemas("mcp")) > 10
from causalflow.cli import main
sys.exit(main(["mcp", "--root", {str(tmp_path)!r}]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert 'pip install "causalflow[mcp]"' in result.stderr
