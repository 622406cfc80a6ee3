"""Bayesian policies benchmark (issue 17): decisions per second, a batch of contexts, sequential
posterior updates vs refitting, and pymc vs the conjugate posterior.

* ``single``: a fitted model (3 arms, a numeric and a categorical covariate, 1 metric);
  ``Policy(reward).decide(rng)`` for one context, repeated (the posterior reward of that
  context computed once: a server that caches it), and the whole request
  ``Policy(model.infer_reward(ContextVector(...))).decide(rng)`` for a new context each time.
  Target: >= 50,000 decisions per second.
* ``batch``: ``Policy(model.infer_reward(table)).decide(rng)`` for 100,000 contexts (Thompson
  draws, one per row). Target: < 1 s.
* ``update``: N = 1,000,000 rows arriving in 100 equal parts; *incremental*: fit on the first
  1%, then ``model.update(next 1%)`` 99 times (conjugate sequential Bayes from the parts'
  moments); *refit*: ``ExperimentData(rows so far).add_metric(...).fit(...)`` at every 1%
  (timed every ``--refit-every`` parts and scaled by the exact ratio of rows). Both give the
  same posterior reward at the end with flat priors (checked, rtol 1e-8).
* ``pymc``: the same model (normal priors, 10,000 rows) by the conjugate closed form and by
  pymc NUTS (2 chains x 1,000 draws after 1,000 tuning steps, one core, compile included).

Wall and process CPU times are reported; on a loaded shared machine CPU time is the steadier.

    python benchmarks/bench_policy.py                  # everything
    python benchmarks/bench_policy.py --tasks single,batch
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import machine_info  # noqa: E402

import causalflow as cf  # noqa: E402

ARMS = np.array(["a", "b", "c"], dtype=object)
FLAT = {g: cf.NormalPrior(0.0, math.inf) for g in ("intercept", "effects", "covariates", "interactions")}


def make_data(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 3, n)
    x = rng.normal(size=n)
    dev = rng.choice(np.array(["app", "web", "tv"], dtype=object), n)
    y = (np.where(arm == 1, 0.5 * x, 0.0) + np.where(arm == 2, -0.5 * x + 0.1, 0.0) + 0.3 * (dev == "web")
         + rng.normal(size=n))
    return pd.DataFrame({"arm": ARMS[arm], "x": x, "dev": dev, "y": y})


def fit(df: pd.DataFrame, estimator=None):
    return cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        y="y", exogenous_covariates=["x", "dev"]).fit(estimator or cf.BayesianLinearRegression())


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def bench_single(repeat: int) -> dict:
    model = fit(make_data(20_000))
    rng = np.random.default_rng(0)
    policy = cf.Policy(model.infer_reward(cf.ContextVector(x=0.3, dev="web")))
    policy.decide(rng)
    with Timer() as t:
        for _ in range(repeat):
            policy.decide(rng)
    contexts = [cf.ContextVector(x=float(v), dev=d) for v, d in zip(rng.normal(size=repeat // 10),
                                                                    rng.choice(["app", "web", "tv"], repeat // 10))]
    with Timer() as t2:
        for ctx in contexts:
            cf.Policy(model.infer_reward(ctx)).decide(rng)
    return {"decide_per_s_wall": repeat / t.wall, "decide_per_s_cpu": repeat / t.cpu,
            "request_per_s_wall": len(contexts) / t2.wall, "request_per_s_cpu": len(contexts) / t2.cpu}


def bench_batch(n: int) -> dict:
    model = fit(make_data(20_000))
    table = make_data(n, seed=1)[["x", "dev"]]
    rng = np.random.default_rng(0)
    out = {}
    for strategy in ("thompson", "greedy", "top_two_thompson"):
        cf.Policy(model.infer_reward(table[:100]), strategy).decide(rng)
        with Timer() as t:
            arms = cf.Policy(model.infer_reward(table), strategy).decide(rng)
        assert len(arms) == n
        out[strategy] = {"wall_s": t.wall, "cpu_s": t.cpu}
    return out


def bench_update(n: int, parts: int, refit_every: int) -> dict:
    df = make_data(n, seed=2)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    estimator = cf.BayesianLinearRegression(FLAT, weights="none")
    with Timer() as inc:
        model = fit(df[: bounds[1]], estimator)
        for k in range(1, parts):
            model = model.update(df[bounds[k]: bounds[k + 1]])
    refit_wall = refit_cpu = 0.0
    timed_rows = 0
    for k in range(1, parts + 1):
        if k % refit_every and k != parts:
            continue
        with Timer() as t:
            full = fit(df[: bounds[k]], estimator)
        refit_wall, refit_cpu, timed_rows = refit_wall + t.wall, refit_cpu + t.cpu, timed_rows + bounds[k]
    scale = bounds[1:].sum() / timed_rows  # every refit reads all rows so far
    ctx = pd.DataFrame({"x": [-1.0, 0.5, 2.0], "dev": ["app", "web", "tv"]})
    a, b = model.infer_reward(ctx).components[0], full.infer_reward(ctx).components[0]
    np.testing.assert_allclose(a.loc, b.loc, rtol=1e-8)
    return {"incremental_wall_s": inc.wall, "incremental_cpu_s": inc.cpu, "refit_wall_s": refit_wall * scale,
            "refit_cpu_s": refit_cpu * scale, "refit_extrapolated": refit_every > 1}


def bench_pymc(n: int) -> dict:
    df = make_data(n, seed=3)
    with Timer() as conj:
        exact = fit(df)
    with Timer() as nuts:
        sampled = fit(df, cf.BayesianLinearRegression(method="pymc", draws=1000, tune=1000, chains=2, seed=0))
    post = sampled._groups[0].posterior
    gap = np.max(np.abs(sampled.params().y - exact.params().y) / exact.posterior_sd().y)
    return {"conjugate_wall_s": conj.wall, "conjugate_cpu_s": conj.cpu, "pymc_wall_s": nuts.wall,
            "pymc_cpu_s": nuts.cpu, "pymc_min_ess": post.ess, "pymc_max_rhat": post.rhat,
            "max_mean_gap_in_posterior_sd": float(gap)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="single,batch,update,pymc")
    parser.add_argument("--repeat", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=100)
    parser.add_argument("--refit-every", type=int, default=10)
    parser.add_argument("--pymc-n", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = {"machine": machine_info()}
    tasks = args.tasks.split(",")
    if "single" in tasks:
        out["single"] = bench_single(args.repeat)
    if "batch" in tasks:
        out["batch"] = bench_batch(args.batch)
    if "update" in tasks:
        out["update"] = bench_update(args.n, args.parts, args.refit_every)
    if "pymc" in tasks:
        out["pymc"] = bench_pymc(args.pymc_n)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
