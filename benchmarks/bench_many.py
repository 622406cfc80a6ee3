"""Warehouse-scale benchmarks (issue 19): compression, and many experiments at once.

* ``compress``: N rows (default 1,000,000), K metrics (default 20), three discrete
  covariates (3 x 4 x 5 levels) and optionally G clusters. Uncompressed:
  ``ExperimentData(...).add_metric(...).fit(LinearModel(cov_type)).infer_effect()``;
  compressed: ``causalflow.backends.compress.compress(...).fit(cov_type).infer_effect()``,
  in memory (pandas group-by) and in DuckDB (one Ibis aggregation over a DuckDB table).
  Reports times, the compression ratio (rows / cells) and the largest relative difference
  of estimates and standard errors (must be <= 1e-10).
* ``many``: ``cf.analyze_many`` over E experiments (default 1,000) x K metrics (default 20),
  R rows each (default 1,000), one covariate; time per experiment-metric, serial and with
  ``--jobs`` processes (identical tables checked).

    python benchmarks/bench_many.py                    # both, full size
    python benchmarks/bench_many.py --task compress --n 100000 --k 5   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

_threads = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import machine_info  # noqa: E402

import causalflow as cf  # noqa: E402
from causalflow.backends.compress import compress  # noqa: E402

COVARIATES = ["device", "tier", "country"]


def make_compressible(n: int, k: int, clusters: int | None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {"t": rng.integers(0, 2, n), "device": rng.choice(["ios", "android", "web"], n),
            "tier": rng.integers(0, 4, n), "country": rng.choice(list("ABCDE"), n)}
    if clusters:
        cols["c"] = rng.integers(0, clusters, n)
        cols["t"] = (rng.random(clusters) < 0.5).astype(int)[cols["c"]]
    df = pd.DataFrame(cols)
    base = 0.5 * df.tier.to_numpy() + (df.device == "web").to_numpy()
    noise = rng.exponential(1.0, size=(n, k))
    for j in range(k):
        df[f"y{j}"] = 2.0 + 0.05 * (1 + j) / k * df.t.to_numpy() + base + noise[:, j]
    return df


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def bench_compress(args) -> dict:
    df = make_compressible(args.n, args.k, args.clusters)
    metrics = [f"y{j}" for j in range(args.k)]
    roles = {"intent_to_treat": "t", **({"cluster_by": "c"} if args.clusters else {})}
    cov_type = "CR1" if args.clusters else "HC1"

    def rows():
        return cf.ExperimentData(df, **roles).add_metric(y=metrics, exogenous_covariates=COVARIATES).fit(
            cf.LinearModel(cov_type=cov_type)).infer_effect().to_frame()

    def cells(table):
        small = compress(table, y=metrics, exogenous_covariates=COVARIATES, **roles)
        return small, small.fit(cov_type).infer_effect().to_frame()

    ref, t_rows, c_rows = _timed(rows)
    (small, mine), t_mem, c_mem = _timed(lambda: cells(df))
    out = {"n": args.n, "k": args.k, "clusters": args.clusters, "cov_type": cov_type,
           "cells": small.n_cells, "ratio": round(small.ratio, 1),
           "rows_wall_s": round(t_rows, 3), "rows_cpu_s": round(c_rows, 3),
           "compressed_memory_wall_s": round(t_mem, 3), "compressed_memory_cpu_s": round(c_mem, 3),
           "max_rel_diff_estimate": _rel(mine.estimate, ref.estimate),
           "max_rel_diff_std_error": _rel(mine.std_error, ref.std_error)}
    try:
        import duckdb
        import ibis
    except ImportError:
        return out
    raw = duckdb.connect()
    raw.register("frame", df)
    raw.execute("CREATE TABLE exposures AS SELECT * FROM frame")
    table = ibis.duckdb.from_connection(raw).table("exposures")
    (small_db, mine_db), t_db, c_db = _timed(lambda: cells(table))
    out.update({"compressed_duckdb_wall_s": round(t_db, 3), "compressed_duckdb_cpu_s": round(c_db, 3),
                "duckdb_max_rel_diff_std_error": _rel(mine_db.std_error, ref.std_error)})
    return out


def make_many(experiments: int, rows: int, k: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = experiments * rows
    df = pd.DataFrame({"experiment_id": np.repeat(np.arange(experiments), rows),
                       "t": rng.integers(0, 2, n), "x": rng.normal(size=n)})
    noise = rng.normal(size=(n, k))
    for j in range(k):
        df[f"y{j}"] = 0.1 * df.t.to_numpy() + df.x.to_numpy() + noise[:, j]
    return df


def bench_many(args) -> dict:
    df = make_many(args.experiments, args.rows, args.k)
    metrics = [f"y{j}" for j in range(args.k)]
    kwargs = dict(experiment="experiment_id", intent_to_treat="t", y=metrics, exogenous_covariates=["x"])
    serial, t1, c1 = _timed(lambda: cf.analyze_many(df, n_jobs=1, **kwargs))
    parallel, tj, cj = _timed(lambda: cf.analyze_many(df, n_jobs=args.jobs, **kwargs))
    pd.testing.assert_frame_equal(serial, parallel)
    units = args.experiments * args.k
    return {"experiments": args.experiments, "rows_per_experiment": args.rows, "k": args.k,
            "serial_wall_s": round(t1, 3), "serial_cpu_s": round(c1, 3),
            "serial_ms_per_experiment_metric": round(1e3 * t1 / units, 3),
            "jobs": args.jobs, "parallel_wall_s": round(tj, 3),
            "parallel_ms_per_experiment_metric": round(1e3 * tj / units, 3),
            "failures": int(serial.error.notna().sum()), "rows_out": len(serial)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["compress", "many", "all"], default="all")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--clusters", type=int, default=None)
    ap.add_argument("--experiments", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", default="1", help="BLAS threads (give as --threads=N)")
    ap.add_argument("--json", default=None, help="also write the results here (atomically)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    result = {"machine": machine_info()}
    if args.task in ("compress", "all"):
        result["compress"] = bench_compress(args)
    if args.task in ("many", "all"):
        result["many"] = bench_many(args)
    print(json.dumps(result, indent=2, default=str))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(result, fh, indent=2, default=str)
        os.replace(tmp, args.json)
    return result


if __name__ == "__main__":
    main()
