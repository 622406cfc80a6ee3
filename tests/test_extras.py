"""The core install works without the optional extras, and a feature used without its extra
says which one to install (API.md section 10).

The subprocess tests hide the optional packages behind a ``sys.meta_path`` finder that
raises ModuleNotFoundError for them, which is what a core-only install looks like to Python.
``.ci/core_install_check.sh`` checks the same on a real core install in a fresh venv.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from causalflow._optional import MissingDependency, require

#: top-level modules of the optional extras (oci, plot, bayes, warehouse, spark, mcp, llm, bench)
OPTIONAL = ("sklearn", "lightgbm", "matplotlib", "nbformat", "nbclient", "ipykernel", "pyarrow", "pymc",
            "pytensor", "duckdb", "ibis", "pyspark", "mcp", "anthropic", "openai", "stochtree")

_BLOCKER = f"""
import sys
BLOCKED = {OPTIONAL!r}


class _Missing:
    # a core-only install: every optional package is absent
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Missing())
"""


def _run(code: str, *, block: bool) -> subprocess.CompletedProcess:
    script = (_BLOCKER if block else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def _check(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_import_causalflow_loads_no_optional_package():
    # modules that numpy / scipy / pandas import on their own (pandas imports pyarrow when it is
    # installed) are loaded first, so that only what causalflow itself imports is compared
    out = _check(_run("""
        import sys
        import numpy, pandas, scipy.stats, scipy.linalg, scipy.optimize, scipy.special  # noqa: F401
        before = set(sys.modules)
        import causalflow as cf
        cf.oci.Plan, cf.oci.run, cf.oci.learner_names()
        new = {name.partition(".")[0] for name in set(sys.modules) - before}
        print(sorted(new))
    """, block=False))
    loaded = set(eval(out.strip().splitlines()[-1]))  # noqa: S307 (our own printed list)
    assert not loaded & set(OPTIONAL), sorted(loaded & set(OPTIONAL))
    assert "yaml" not in loaded  # read only when a YAML plan is


def test_core_features_run_without_the_extras():
    out = _check(_run("""
        import numpy as np
        import causalflow as cf
        from causalflow.demo import main, simulate_store

        df = simulate_store(n=4000, n_regions=80, seed=1)
        model = (cf.ExperimentData(df, intent_to_treat="assigned", treated="uses_widget", cluster_by="region")
                 .add_metric(y=["sales", "orders"], exogenous_covariates=["pre_sales", "device"])
                 .fit(cf.LinearModel))
        table = model.infer_effect(condition_on=["device == 'desktop'"]).to_frame()
        assert len(table) > 0 and np.isfinite(table["estimate"]).all() and np.isfinite(table["std_error"]).all()
        assert main(["--n", "3000"]) == 0
        from causalflow.cli import main as cli_main
        assert cli_main(["demo", "--n", "2000"]) == 0
        print("CORE OK", cf.oci.Plan.__name__)
    """, block=True))
    assert "CORE OK Plan" in out
    assert "Average effects" in out


def test_oci_features_without_the_extra_name_it():
    out = _check(_run("""
        import numpy as np
        import pandas as pd
        import causalflow as cf

        def message(call):
            try:
                call()
            except ImportError as exc:
                assert isinstance(exc.__cause__, ModuleNotFoundError), repr(exc.__cause__)
                return str(exc)
            raise AssertionError("no ImportError")

        rng = np.random.default_rng(0)
        x = rng.normal(size=300)
        t = (rng.random(300) < 0.5).astype(int)
        df = pd.DataFrame({"x": x, "t": t, "y": t + x + rng.normal(size=300)})
        plan = cf.oci.Plan(data=df, treatment="t", outcome="y", confounders=["x"], estimands=["ATE"])
        for name in ("linear", "lightgbm", "gbm_x_select"):
            learner = cf.oci.get_learner(name)
            print(message(lambda: learner.classifier(0).fit(x[:, None], t)))
        print(message(lambda: cf.oci.run(plan, max_iterations=1)))
        from causalflow.oci.artifacts import ArtifactWriter
        from causalflow.oci.plan import prepare_data
        print(message(lambda: ArtifactWriter("unused_dir", "standard", prepare_data(plan))))
    """, block=True))
    lines = out.strip().splitlines()
    assert len(lines) == 5
    for line in lines:
        assert 'pip install "causalflow[oci]"' in line, line


def test_oci_command_without_the_extra_exits_with_the_install_command(tmp_path):
    out = _check(_run(f"""
        import contextlib, io, pathlib
        import numpy as np, pandas as pd
        from causalflow.cli import main

        folder = pathlib.Path({str(tmp_path)!r})
        rng = np.random.default_rng(0)
        x = rng.normal(size=200)
        pd.DataFrame({{"x": x, "t": (x + rng.normal(size=200) > 0).astype(int), "y": x}}).to_csv(
            folder / "study.csv", index=False)
        (folder / "plan.yaml").write_text("data: study.csv\\ntreatment: t\\noutcome: y\\nconfounders: [x]\\n")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["oci", "run", str(folder / "plan.yaml"), "--out", str(folder / "run"), "--no-progress"])
        print(code)
        print(err.getvalue().strip().splitlines()[-1])
    """, block=True))
    code, message = out.strip().splitlines()[-2:]
    assert code == "2"
    assert message.startswith("error: ") and 'pip install "causalflow[oci]"' in message


def test_require_returns_the_module_or_names_the_extra():
    import json

    assert require("json", "oci") is json
    with pytest.raises(ImportError, match=r'pip install "causalflow\[warehouse\]"') as info:
        require("causalflow_no_such_module", "warehouse")
    assert isinstance(info.value, MissingDependency) and info.value.name == "causalflow_no_such_module"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    with pytest.raises(ValueError, match="extra"):
        require("json", "no_such_extra")
