"""The few-cluster coverage simulation: its data-generating process, the fits it compares
and the coverage of their 95% intervals over replications.

One copy, used by ``tests/test_few_clusters.py`` and ``benchmarks/bench_few_clusters.py``
(which puts ``tests/`` on ``sys.path``; tests never import benchmarks).

The process (issue: valid inference with few clusters). G clusters with sizes spread
geometrically from 5 to 200 rows (fixed for a given G), exactly G/2 clusters assigned to
treatment at random, and

.. math:: y_{ig} = 1 + \\tau d_{ig} + x_{ig} + \\sigma_{z_g} u_g + \\varepsilon_{ig},
          \\quad u_g, x_{ig}, \\varepsilon_{ig} \\sim N(0, 1),
          \\quad \\sigma_0 = 1, \\ \\sigma_1 = 2,

so the cluster effect's variance differs by arm and the largest clusters dominate the
score sums: the setting where CR1 with normal quantiles under-covers (MacKinnon, Nielsen
and Webb 2023, *J. Econometrics* 232, sec. 4; Imbens and Kolesar 2016, *REStat* 98).
A/B: d = z. Encouragement: d = z B(0.7) + (1 - z) B(0.1) within clusters, so the
first stage is 0.6; the effect tau is constant, hence LATE = tau and ITT = 0.6 tau, and the
encouragement design's "ATE" (the 2SLS effect at the population's covariate means, an
extrapolation from the compliers that is exact here) is tau too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import causalflow as cf

EFFECT = 0.5
TAKE_UP = {1: 0.7, 0: 0.1}                    # P(d = 1 | z): the encouragement design
FIRST_STAGE = TAKE_UP[1] - TAKE_UP[0]
CLUSTER_SD = {0: 1.0, 1: 2.0}                 # sd of the cluster effect, by assigned arm
MIN_SIZE, MAX_SIZE = 5, 200
#: the process of the issue ("main") and variants that check the default is not tuned to
#: it: (smallest, largest cluster, cluster-effect sd in control, in treatment)
PROCESSES = {
    "main": (MIN_SIZE, MAX_SIZE, CLUSTER_SD[0], CLUSTER_SD[1]),
    "mild": (20, 80, 1.0, 1.5),                # sizes within 4x, milder heteroskedasticity
    "equal": (50, 50, 1.0, 2.0),               # equal clusters
    "same-sd": (5, 200, 1.0, 1.0),             # cluster variance equal in both arms
    "wide": (2, 500, 1.0, 2.0),                # sizes spread 250x
}
LEVEL = 0.95
SEED = 20261126                               # of the benchmark and the slow test
DESIGNS = ("ab", "encouragement")
ESTIMANDS = {"ab": ("ATE",), "encouragement": ("LATE", "ATE", "ITT")}
TRUTH = {"ATE": EFFECT, "LATE": EFFECT, "ITT": EFFECT * FIRST_STAGE}

#: the fits compared: ``LinearModel`` keyword arguments ("default": none, i.e. the
#: small-cluster default below 50 clusters)
METHODS = {
    "default": {},
    "CR1-normal": {"cov_type": "CR1", "inference": "normal"},
    "CR1-t": {"cov_type": "CR1", "inference": "t"},
    "CR2": {"cov_type": "CR2", "inference": "t"},
    "CR3": {"cov_type": "CR3", "inference": "t"},
}


def cluster_sizes(n_clusters: int, process: str = "main") -> np.ndarray:
    """Sizes in geometric progression between the process's smallest and largest cluster
    (5, 7, 11, ... 200 for G = 10 in the main process)."""
    lo, hi = PROCESSES[process][:2]
    return np.rint(np.geomspace(lo, hi, n_clusters)).astype(int)


def simulate(rng: np.random.Generator, n_clusters: int, design: str, process: str = "main") -> pd.DataFrame:
    """One experiment: columns store, assigned, took (encouragement only), x, y."""
    if design not in DESIGNS:
        raise ValueError(f"design: expected one of {DESIGNS}, got {design!r}")
    sizes = cluster_sizes(n_clusters, process)
    sd = {0: PROCESSES[process][2], 1: PROCESSES[process][3]}
    store = np.repeat(np.arange(n_clusters), sizes)
    n = len(store)
    arm = np.zeros(n_clusters, dtype=int)
    arm[rng.permutation(n_clusters)[: n_clusters // 2]] = 1
    z = arm[store]
    cluster_effect = rng.normal(size=n_clusters) * np.where(arm == 1, sd[1], sd[0])
    x = rng.normal(size=n)
    cols = {"store": store, "assigned": z}
    if design == "ab":
        d = z
    else:
        d = (rng.random(n) < np.where(z == 1, TAKE_UP[1], TAKE_UP[0])).astype(int)
        cols["took"] = d
    y = 1.0 + EFFECT * d + x + cluster_effect[store] + rng.normal(size=n)
    return pd.DataFrame({**cols, "x": x, "y": y})


def experiment(df: pd.DataFrame, design: str) -> cf.ExperimentData:
    treated = {"treated": "took"} if design == "encouragement" else {}
    return cf.ExperimentData(df, intent_to_treat="assigned", cluster_by="store", **treated)


def replicate(n_clusters: int, design: str, rep: int, seed: int, methods=None, skip=(),
              process: str = "main") -> list[dict]:
    """Fit one simulated experiment with every method; one record per (method, estimand)
    of :data:`ESTIMANDS`, except the (method, estimand) pairs in ``skip`` (CR2 does not
    cover the LATE with covariates).

    The rng of replication ``rep`` depends on (seed, G, design, rep) only, so the results do
    not depend on how replications are split between processes.
    """
    methods = METHODS if methods is None else methods
    rng = np.random.default_rng([seed, n_clusters, DESIGNS.index(design), rep])
    metric = experiment(simulate(rng, n_clusters, design, process), design).add_metric(
        y="y", exogenous_covariates=["x"])
    out = []
    for name, kwargs in methods.items():
        estimands = [e for e in ESTIMANDS[design] if (name, e) not in skip]
        if not estimands:
            continue
        frame = metric.fit(cf.LinearModel(**kwargs)).infer_effect(estimands=estimands).to_frame()
        for row in frame.itertuples(index=False):
            truth = TRUTH[row.estimand]
            out.append({"process": process, "n_clusters": n_clusters, "design": design, "rep": rep, "method": name,
                        "estimand": row.estimand, "cov_type": row.cov_type, "dof": float(row.dof),
                        "covered": bool(row.ci_lower <= truth <= row.ci_upper),
                        "length": float(row.ci_upper - row.ci_lower)})
    return out


def _chunk(n_clusters: int, design: str, lo: int, hi: int, seed: int, methods, skip, process) -> list[dict]:
    return [r for rep in range(lo, hi) for r in replicate(n_clusters, design, rep, seed, methods, skip, process)]


def run(n_clusters: int, design: str, reps: int, seed: int, methods=None, n_jobs: int = 1,
        skip=(), process: str = "main") -> pd.DataFrame:
    """Records of ``reps`` replications (joblib processes when ``n_jobs`` > 1)."""
    if n_jobs == 1:
        return pd.DataFrame(_chunk(n_clusters, design, 0, reps, seed, methods, skip, process))
    from joblib import Parallel, delayed

    edges = np.linspace(0, reps, 4 * n_jobs + 1).astype(int)
    parts = Parallel(n_jobs=n_jobs)(delayed(_chunk)(n_clusters, design, lo, hi, seed, methods, skip, process)
                                    for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo)
    return pd.DataFrame([r for part in parts for r in part])


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Coverage, its Monte Carlo SE sqrt(c (1 - c) / R) and the mean interval length, per
    (G, design, estimand, method); ``cov_type`` and ``dof`` as reported by the fits (the
    mean dof for CR2's per-contrast Satterthwaite dof)."""
    keys = ["process", "n_clusters", "design", "estimand", "method"]
    out = records.groupby(keys, sort=False).agg(
        reps=("covered", "size"), coverage=("covered", "mean"), length=("length", "mean"),
        cov_type=("cov_type", lambda s: "/".join(sorted(set(s)))), dof=("dof", "mean")).reset_index()
    out["mc_se"] = np.sqrt(out.coverage * (1 - out.coverage) / out.reps)
    return out
