"""Monitoring benchmark (issue 4): one incremental pass over 100 looks vs refitting at each look.

Data: N rows (default 1,000,000) in arrival order, a 50/50 assignment, q = 2 covariates,
K metrics (default 20) with heteroskedastic noise; optionally G clusters (``--clusters``).

* incremental: ``causalflow.platform.monitor.monitor(..., looks=100)``: each row is read once; each
  look adds the new rows' cross-products and meat moments and solves (HC: fourth-order
  moments; CR: per-cluster cross-products), then forms the effects with av columns.
* refit: at each look, ``ExperimentData(rows so far).add_metric(...).fit(LinearModel)
  .infer_effect()`` from scratch (two passes over all rows seen so far).

Wall time and process CPU time are both reported: on a shared, loaded machine the CPU
time (BLAS single-threaded) is the steadier measure of the work done. Both produce the
same effects table at every look (checked at the last look, rtol 1e-8).
``--refit-every m`` times the refit only at every m-th look and scales the sum by the
exact ratio of rows processed (labelled as extrapolated).

    python benchmarks/bench_monitoring.py                        # N=1M, K=20, 100 looks, HC
    python benchmarks/bench_monitoring.py --clusters 50000        # CR1, rows in random order
    python benchmarks/bench_monitoring.py --clusters 50000 --arrival units   # units arrive over time
    python benchmarks/bench_monitoring.py --n 100000 --k 5        # quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

# BLAS threads: 1 by default for both contenders (``--threads``), set before numpy loads;
# on a shared, loaded machine multi-threaded GEMMs of this size mostly wait for cores.
_threads = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads)

import numpy as np  # noqa: E402 (after the BLAS thread variables)
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import machine_info  # noqa: E402

import causalflow as cf  # noqa: E402
from causalflow.models.linear import LinearModel  # noqa: E402
from causalflow.platform.monitor import monitor  # noqa: E402


def make_data(n: int, k: int, clusters: int | None, seed: int = 0, arrival: str = "rows") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {"t": rng.integers(0, 2, n), "x0": rng.normal(size=n) + 1.0, "x1": rng.gamma(2.0, size=n)}
    if clusters:
        cols["c"] = rng.integers(0, clusters, n)
        if arrival == "units":
            # units (clusters) arrive over the experiment and their rows within a short
            # window after (1% of its length): sessions of users who joined at some time
            cols["ts"] = rng.uniform(0, 1, clusters)[cols["c"]] + rng.exponential(0.01, n)
    df = pd.DataFrame(cols)
    if "ts" in df:
        df = df.sort_values("ts", kind="stable").reset_index(drop=True)
    noise = rng.normal(size=(n, k)) * (1.0 + 0.3 * np.abs(df.x0.to_numpy()))[:, None]
    y = 0.05 * df.t.to_numpy()[:, None] * (1 + np.arange(k)) / k + 0.5 * df.x0.to_numpy()[:, None] + noise
    for j in range(k):
        df[f"y{j}"] = y[:, j]
    return df


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--looks", type=int, default=100)
    ap.add_argument("--clusters", type=int, default=None)
    ap.add_argument("--refit-every", type=int, default=1)
    ap.add_argument("--arrival", choices=["rows", "units"], default="rows",
                    help="with clusters: rows of every cluster spread over the whole run (rows), or "
                         "clusters arriving over time, their rows within a short window (units)")
    ap.add_argument("--threads", default="1", help="BLAS threads (give as --threads=N)")
    ap.add_argument("--json", default=None, help="also write the results here (atomically)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    machine = machine_info()
    df = make_data(args.n, args.k, args.clusters, arrival=args.arrival)
    metrics = [f"y{j}" for j in range(args.k)]
    covs = ["x0", "x1"]
    cluster = "c" if args.clusters else None
    cuts = np.round(np.arange(1, args.looks + 1) * args.n / args.looks).astype(int)

    t0, c0 = time.perf_counter(), time.process_time()
    data = cf.ExperimentData(df, intent_to_treat="t", cluster_by=cluster)
    mon = monitor(data, y=metrics, exogenous_covariates=covs, looks=args.looks)
    frame = mon.to_frame()
    t_incremental, c_incremental = time.perf_counter() - t0, time.process_time() - c0

    timed = list(range(args.refit_every - 1, args.looks, args.refit_every))
    if timed[-1] != args.looks - 1:
        timed.append(args.looks - 1)
    t_refit_timed, c_refit_timed, last = 0.0, 0.0, None
    for look in timed:
        t0, c0 = time.perf_counter(), time.process_time()
        sub = df.iloc[:cuts[look]]
        eff = cf.ExperimentData(sub, intent_to_treat="t", cluster_by=cluster).add_metric(
            y=metrics, exogenous_covariates=covs).fit(LinearModel(av_g=mon.g)).infer_effect()
        last = eff.to_frame()
        t_refit_timed += time.perf_counter() - t0
        c_refit_timed += time.process_time() - c0
    scale = cuts.sum() / cuts[timed].sum()
    t_refit, c_refit = t_refit_timed * scale, c_refit_timed * scale
    mine = mon.looks[-1].to_frame()
    for col in ("estimate", "std_error", "av_p_value", "av_ci_lower", "av_ci_upper"):
        np.testing.assert_allclose(mine[col], last[col], rtol=1e-8, err_msg=col)
    result = {"machine": machine, "n": args.n, "k": args.k, "looks": args.looks,
              "clusters": args.clusters, "arrival": args.arrival, "cov_type": "CR1" if cluster else "HC1",
              "incremental_wall_s": round(t_incremental, 3), "refit_wall_s": round(t_refit, 3),
              "incremental_cpu_s": round(c_incremental, 3), "refit_cpu_s": round(c_refit, 3),
              "refit_looks_timed": len(timed), "refit_extrapolated": len(timed) < args.looks,
              "speedup_wall": round(t_refit / t_incremental, 1),
              "speedup_cpu": round(c_refit / c_incremental, 1), "rows_in_table": len(frame),
              "uptime_after": machine_info()["uptime"]}
    print(json.dumps(result, indent=2))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(result, fh, indent=2)
        os.replace(tmp, args.json)
    return result


if __name__ == "__main__":
    main()
