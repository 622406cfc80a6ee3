"""Shared fixtures: small simulated experiments of every design, as functions of an rng.

Each simulator returns a :class:`Sim`: the table, the ``ExperimentData`` keyword
arguments of its design, its metric names and its covariates (one numeric, one
categorical). They are deliberately small (a few hundred rows) so that property tests
can call them many times.

Use the ``simulators`` fixture (a dict name -> function) or ``simulate`` (a function of
the design name and an rng); both are session-scoped, so hypothesis tests may use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings

import causalflow as cf

# Every run draws the same hypothesis examples (seeded from each test's name, not the clock,
# and no replay database), so a failure replays in any process or on any machine. To
# explore new examples locally: pytest --hypothesis-profile=explore.
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("reproducible")
# Hypothesis (>= 6.131) also draws literals found in every local module imported so far, so
# the examples would depend on which tests ran earlier in the same worker; without that pool
# they depend only on the test (tests/test_reproducible.py checks). Private API, hence guarded.
try:
    from hypothesis.internal.conjecture import providers as _providers

    _providers.is_local_module_file = lambda path: False
except (ImportError, AttributeError):  # pragma: no cover
    pass


@dataclass
class Sim:
    """A simulated experiment.

    Attributes
    ----------
    df : pandas.DataFrame
    design : dict of ``ExperimentData`` keyword arguments (intent_to_treat, treated, ...)
    y : list of metric columns
    covariates : list of covariate columns (a numeric ``x`` and a categorical ``seg``)
    """

    df: pd.DataFrame
    design: dict
    y: list = field(default_factory=lambda: ["y1", "y2"])
    covariates: list = field(default_factory=lambda: ["x", "seg"])

    def experiment(self, df=None, **overrides) -> cf.ExperimentData:
        return cf.ExperimentData(self.df if df is None else df, **{**self.design, **overrides})

    def fit(self, cov_type=None, y=None, covariates=None, df=None, **overrides):
        """Fit ``cf.LinearModel`` on the simulated data (all metrics and covariates by default)."""
        return (self.experiment(df, **overrides)
                .add_metric(y=self.y if y is None else y,
                            exogenous_covariates=self.covariates if covariates is None else covariates)
                .fit(cf.LinearModel(cov_type=cov_type)))


def _covariates(rng: np.random.Generator, n: int) -> dict:
    return {"x": rng.normal(size=n), "seg": rng.choice(np.array(["a", "b", "c"]), size=n)}


def _outcomes(rng, treated: np.ndarray, x: np.ndarray, seg: np.ndarray, noise_scale=1.0) -> dict:
    """Two metrics with heterogeneous effects (in x and seg) and heteroskedastic noise."""
    n = len(x)
    bump = (seg == "b") * 0.7 - (seg == "c") * 0.4
    e1 = rng.normal(size=n) * noise_scale * (1 + 0.5 * np.abs(x))
    e2 = rng.standard_t(5, size=n) * noise_scale
    return {"y1": 1.0 + 0.5 * treated + 0.8 * x + 0.3 * treated * x + bump + e1,
            "y2": -2.0 + 1.5 * treated - 0.4 * x + 0.5 * treated * bump + e2}


def simulate_ab(rng: np.random.Generator, n: int = 200) -> Sim:
    """A/B test: Bernoulli(0.5) assignment, full compliance."""
    cov = _covariates(rng, n)
    t = rng.integers(0, 2, n)
    t[:2] = [0, 1]  # both arms present whatever the seed
    df = pd.DataFrame({"assigned": t, **cov, **_outcomes(rng, t, cov["x"], cov["seg"])})
    return Sim(df, {"intent_to_treat": "assigned"})


def simulate_encouragement(rng: np.random.Generator, n: int = 300) -> Sim:
    """Encouragement design: two-sided non-compliance (70% compliers, 15% always-takers)."""
    cov = _covariates(rng, n)
    z = rng.integers(0, 2, n)
    z[:2] = [0, 1]
    kind = rng.choice(np.array(["complier", "always", "never"]), p=[0.7, 0.15, 0.15], size=n)
    d = np.where(kind == "complier", z, (kind == "always").astype(int))
    df = pd.DataFrame({"encouraged": z, "took": d, **cov, **_outcomes(rng, d, cov["x"], cov["seg"])})
    return Sim(df, {"intent_to_treat": "encouraged", "treated": "took"})


def simulate_cluster(rng: np.random.Generator, n_clusters: int = 30) -> Sim:
    """Cluster-randomised A/B test: 30 stores of 2 to 12 rows, a store random effect."""
    sizes = rng.integers(2, 13, n_clusters)
    store = np.repeat(np.arange(n_clusters), sizes)
    arm = rng.integers(0, 2, n_clusters)
    arm[:2] = [0, 1]
    t = arm[store]
    cov = _covariates(rng, len(store))
    out = _outcomes(rng, t, cov["x"], cov["seg"])
    shock = rng.normal(size=n_clusters)[store]
    df = pd.DataFrame({"store": store, "assigned": t, **cov,
                       **{k: v + shock for k, v in out.items()}})
    return Sim(df, {"intent_to_treat": "assigned", "cluster_by": "store"})


def simulate_adaptive(rng: np.random.Generator, n: int = 250) -> Sim:
    """Adaptive design: P(treatment) varies by unit; ``propensity`` is that propensity score."""
    cov = _covariates(rng, n)
    p_treat = np.clip(0.5 + 0.3 * np.tanh(cov["x"]), 0.1, 0.9)
    t = (rng.random(n) < p_treat).astype(int)
    t[:2] = [0, 1]
    df = pd.DataFrame({"assigned": t, "p_treat": p_treat, **cov,
                       **_outcomes(rng, t, cov["x"], cov["seg"])})
    return Sim(df, {"intent_to_treat": "assigned", "propensity": "p_treat"})


def simulate_multi_arm(rng: np.random.Generator, n: int = 300) -> Sim:
    """Three arms as one text column, control named ``"ctl"`` (not a default label)."""
    arms = np.array(["ctl", "blue", "green"])
    cov = _covariates(rng, n)
    a = rng.choice(arms, size=n)
    a[:3] = arms
    effect = {"ctl": 0.0, "blue": 0.4, "green": -0.3}
    dose = np.array([effect[v] for v in a])
    out = _outcomes(rng, dose, cov["x"], cov["seg"])
    df = pd.DataFrame({"variant": a, **cov, **out})
    return Sim(df, {"intent_to_treat": "variant", "control": "ctl"})


def simulate_mixed(rng: np.random.Generator, n_clusters: int = 40) -> Sim:
    """Every design at once: cluster-randomised encouragement with cluster-level propensities."""
    sizes = rng.integers(2, 10, n_clusters)
    store = np.repeat(np.arange(n_clusters), sizes)
    p_treat = rng.uniform(0.3, 0.7, n_clusters)
    arm = (rng.random(n_clusters) < p_treat).astype(int)
    arm[:2] = [0, 1]
    z = arm[store]
    n = len(store)
    d = np.where(rng.random(n) < 0.75, z, rng.integers(0, 2, n))
    cov = _covariates(rng, n)
    out = _outcomes(rng, d, cov["x"], cov["seg"])
    shock = rng.normal(size=n_clusters)[store]
    df = pd.DataFrame({"store": store, "encouraged": z, "took": d, "p_treat": p_treat[store], **cov,
                       **{k: v + shock for k, v in out.items()}})
    return Sim(df, {"intent_to_treat": "encouraged", "treated": "took", "propensity": "p_treat",
                    "cluster_by": "store"})


SIMULATORS = {
    "ab": simulate_ab,
    "encouragement": simulate_encouragement,
    "cluster": simulate_cluster,
    "adaptive": simulate_adaptive,
    "multi_arm": simulate_multi_arm,
    "mixed": simulate_mixed,
}


@pytest.fixture(scope="session")
def simulators() -> dict:
    """Design name -> simulator function ``f(rng, ...) -> Sim``."""
    return dict(SIMULATORS)


@pytest.fixture(scope="session")
def simulate():
    """``simulate(name, rng_or_seed, **size)`` -> :class:`Sim`."""
    def make(name: str, rng=0, **kwargs) -> Sim:
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        return SIMULATORS[name](rng, **kwargs)
    return make
