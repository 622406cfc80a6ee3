"""The suite draws the same data, and gets the same numbers, in every process.

Python salts ``hash()`` of strings per process (``PYTHONHASHSEED``), so a seed or an order
derived from it changes from run to run and a failure cannot be replayed. Here the data
generators of the suite and a few fits run in two fresh interpreters with different hash
salts and in this one; their fingerprints (SHA-256 of the bytes) must be identical.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
PATHS = [str(HERE), str(HERE / "oci"), str(HERE.parent)]


def _digest(*objects) -> str:
    h = hashlib.sha256()
    for obj in objects:
        if isinstance(obj, pd.DataFrame):
            h.update(repr(list(obj.columns)).encode())
            h.update(pd.util.hash_pandas_object(obj, index=True).to_numpy().tobytes())
        elif isinstance(obj, np.ndarray):
            h.update(np.ascontiguousarray(obj).tobytes())
        else:
            h.update(repr(obj).encode())
    return h.hexdigest()


def fingerprints() -> dict:
    """Name -> digest of the suite's simulated data and of fits on them."""
    for path in PATHS:
        if path not in sys.path:
            sys.path.insert(0, path)
    # tests/conftest.py by path (two conftest modules exist); it loads the hypothesis profile
    spec = importlib.util.spec_from_file_location("suite_conftest", HERE / "conftest.py")
    conftest = sys.modules["suite_conftest"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    import oci_sims
    import test_anytime_simulation as sim
    import test_vs_peers as peers
    from hypothesis import given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    import causalflow as cf
    from causalflow.oci import Plan, Spec, prepare_data, run_spec

    out = {}
    # the 96 cases of the peer grid (the data of the other grid tests use literal seeds)
    grid = [(d, c, m) for d in peers.DESIGNS for c in peers.COV_TYPES for m in (1, 5)]
    out["vs_peers.grid_data"] = _digest(*[peers.simulate(d, m, seed=peers.case_seed(d, c, m))
                                          for d, c, m in grid])
    for d, c, m in [("mixed", "CR1", 5), ("multiarm", "HC1", 1), ("adaptive", "HC0", 5)]:
        df = peers.simulate(d, m, seed=peers.case_seed(d, c, m))
        data = peers.experiment(df, d)
        if data.cluster_codes is None and c.startswith("CR"):
            continue
        model = data.add_metric(y=[f"y{k}" for k in range(m)], exogenous_covariates=["x1", "x2", "cat"]).fit(
            cf.LinearModel(cov_type=c))
        eff = model.infer_effect(condition_on=peers.CONDITIONS).to_frame()
        out[f"vs_peers.fit.{d}.{c}.{m}"] = _digest(eff[["estimate", "std_error", "p_value", "n"]])
    for name, make in conftest.SIMULATORS.items():
        sims = [make(np.random.default_rng(seed)) for seed in range(3)]
        out[f"conftest.{name}"] = _digest(*[s.df for s in sims])
        fit = sims[0].fit(cov_type="HC1").infer_effect(condition_on=["x > 0", "seg == 'b'"]).to_frame()
        out[f"conftest.{name}.fit"] = _digest(fit[["estimate", "std_error"]])
    for name in ("good_overlap", "poor_overlap", "omitted_confounder"):
        df, truth = getattr(oci_sims, name)(n=300, seed=4)
        out[f"oci_sims.{name}"] = _digest(df, sorted(truth.items()))
    df, _ = oci_sims.good_overlap(n=400, seed=5)
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["x1", "x2", "x3"], estimands=["ATE", "ATO"])
    spec_ = Spec(estimands=("ATE", "ATO"), covariates=("x1", "x2", "x3"),
                 priorities=tuple((c, "high") for c in ("x1", "x2", "x3")), n_folds=2,
                 propensity_learner="lightgbm", outcome_learner="lightgbm")
    out["oci.run_spec.lightgbm"] = _digest(np.array([[r.estimate, r.std_error]
                                                     for r in run_spec(prepare_data(plan), spec_).estimates]))
    out["anytime_simulation.hc"] = _digest(*sim.simulate_hc(0.1, 3, reps=2))
    out["anytime_simulation.cr"] = _digest(*sim.simulate_cr(0.1, 3, reps=2))
    # hypothesis: the examples a property test draws (derandomized by the profile)
    drawn = []

    @hsettings(max_examples=30, deadline=None)
    @given(st.floats(-1e6, 1e6), st.text(max_size=5), st.lists(st.integers(0, 9), max_size=4))
    def probe(x, s, xs):
        drawn.append((x, s, xs))

    probe()
    out["hypothesis.examples"] = _digest(drawn)
    return out


def _import_everything() -> None:
    """Import every causalflow module that imports (as a long test session ends up doing)."""
    import pkgutil

    import causalflow

    for module in pkgutil.walk_packages(causalflow.__path__, "causalflow."):
        try:
            importlib.import_module(module.name)
        except ImportError:
            pass


def _in_fresh_process(hash_seed: str, import_everything: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed,
           "PYTHONPATH": os.pathsep.join(PATHS + [os.environ.get("PYTHONPATH", "")])}
    code = ("import json, test_reproducible as t; "
            + ("t._import_everything(); " if import_everything else "")
            + "print(json.dumps(t.fingerprints()))")
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=HERE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_same_data_and_numbers_in_fresh_processes_with_different_hash_salts():
    # the second process has also imported every module first: what ran before must not matter
    procs = {seed: _in_fresh_process(seed, import_everything=seed == "2") for seed in ("1", "2")}
    runs = {}
    for seed, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        runs[seed] = json.loads(stdout.strip().splitlines()[-1])
    here = fingerprints()
    assert len(here) >= 20
    differ = sorted(k for k in here if not runs["1"].get(k) == runs["2"].get(k) == here[k])
    assert not differ and runs["1"].keys() == runs["2"].keys() == here.keys(), differ


def test_hypothesis_is_derandomized():
    from hypothesis import settings

    assert settings.default.derandomize and settings.default.database is None
