"""Warehouse backends (issue 19): a clustered CR1 fit of 20 metrics through DuckDB and PySpark.

Data: ``--rows`` rows of parquet written in chunks to ``--dir`` (local disk; deleted at the
end unless ``--keep``), 20 metrics, 10 numeric covariates, ``--clusters`` clusters
randomised to two arms. The fit is the "full CR1 fit" of the grammar:

    cf.ExperimentData(<parquet glob>, intent_to_treat="z", cluster_by="cluster")
      .add_metric(y=[y0..y19], exogenous_covariates=[x0..x9])
      .fit(cf.LinearModel(cov_type="CR1")).infer_effect()

(construction with its validation queries, pass 1 and the score pass of the average
effects of every metric). Each engine runs in its own worker process, whose peak RSS
(VmHWM: the whole process, DuckDB's buffers included) is reported. The in-memory engine
runs the same fit on the first ``--compare-rows`` rows read into pandas (the read is not
timed); DuckDB and PySpark (local mode) fit the same rows, and their effects are
compared with the in-memory ones.

    nice -n 10 python benchmarks/bench_warehouse.py --rows 100000000
    python benchmarks/bench_warehouse.py --rows 2000000 --compare-rows 1000000 --skip-spark
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import Measure, emit, machine_info, peak_rss_bytes, run_worker  # noqa: E402

METRICS = [f"y{k}" for k in range(20)]
COVARIATES = [f"x{j}" for j in range(10)]


def generate(directory: str, rows: int, chunk: int, clusters: int, seed: int = 19) -> None:
    """Parquet parts of ``chunk`` rows each; part i depends on (seed, i) only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    effect = np.random.default_rng([seed, 0]).normal(scale=0.3, size=clusters)
    arm = np.random.default_rng([seed, 1]).integers(0, 2, clusters)
    for part, start in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - start)
        path = os.path.join(directory, f"part-{part:05d}.parquet")
        if os.path.exists(path) and pq.ParquetFile(path).metadata.num_rows == n:
            continue  # a kept part of an earlier run (--keep): the same rows
        rng = np.random.default_rng([seed, 2, part])
        cluster = rng.integers(0, clusters, n)
        z = arm[cluster]
        columns = {"cluster": cluster, "z": z}
        x = rng.standard_normal((10, n))
        for j in range(10):
            columns[f"x{j}"] = x[j]
        base = effect[cluster] + 0.05 * z
        for k in range(20):
            columns[f"y{k}"] = 1.0 + base + 0.3 * x[k % 10] + 0.02 * k * z * x[0] + rng.standard_normal(n)
        pq.write_table(pa.table(columns), path + ".tmp", row_group_size=1 << 20)
        os.replace(path + ".tmp", path)  # atomic: a part is complete or absent


def _fit(source):
    import causalflow as cf

    model = (cf.ExperimentData(source, intent_to_treat="z", cluster_by="cluster")
             .add_metric(y=METRICS, exogenous_covariates=COVARIATES).fit(cf.LinearModel(cov_type="CR1")))
    return model.infer_effect().to_frame()


def worker(args) -> None:
    files = sorted(glob.glob(os.path.join(args.dir, "part-*.parquet")))[:args.parts]
    if args.engine == "memory":
        import pandas as pd
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        source = df
    elif args.engine == "duckdb":
        source = os.path.join(args.dir, "part-*.parquet") if args.parts is None else _subset(args.dir, files)
    else:
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master("local[2]").appName("cf-bench").config("spark.ui.enabled", "false")
                 .config("spark.driver.memory", "3g").config("spark.sql.shuffle.partitions", "8").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        source = spark.read.parquet(*files)
    rows = None
    with Measure() as m:
        frame = _fit(source)
    if args.engine == "memory":
        rows = len(source)
    emit({"status": "ok", "engine": args.engine, "seconds": m.seconds, "cpu": m.cpu,
          "peak_rss_gb": peak_rss_bytes() / 2 ** 30, "rows": rows,
          "estimate": frame.estimate.tolist(), "std_error": frame.std_error.tolist(),
          "av_p_value": frame.av_p_value.tolist(), "n": frame.n.tolist()})


def _subset(directory: str, files: list) -> str:
    """A directory of links to the first parts, so that a glob reads exactly them."""
    sub = os.path.join(directory, f"first-{len(files)}")
    os.makedirs(sub, exist_ok=True)
    for f in files:
        link = os.path.join(sub, os.path.basename(f))
        if not os.path.exists(link):
            os.symlink(f, link)
    return os.path.join(sub, "part-*.parquet")


def _relative(a: dict, b: dict) -> float:
    worst = 0.0
    for key in ("estimate", "std_error", "av_p_value"):
        x, y = np.asarray(a[key]), np.asarray(b[key])
        worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--compare-rows", type=int, default=10_000_000,
                        help="rows of the in-memory / DuckDB / PySpark comparison (a multiple of --chunk)")
    parser.add_argument("--chunk", type=int, default=5_000_000)
    parser.add_argument("--clusters", type=int, default=50_000)
    parser.add_argument("--dir", default="/tmp/causalflow_bench_warehouse")
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument("--skip-full", action="store_true", help="only the comparison at --compare-rows")
    parser.add_argument("--keep", action="store_true", help="keep the parquet files")
    parser.add_argument("--timeout", type=float, default=3 * 3600)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parts", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    chunk = min(args.chunk, args.compare_rows, args.rows)
    t0 = time.perf_counter()
    generate(args.dir, args.rows, chunk, args.clusters)
    generation = time.perf_counter() - t0
    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(args.dir, "part-*.parquet")))
    print(f"generated {args.rows:,} rows ({size / 2 ** 30:.1f} GiB parquet) in {generation:.0f} s", flush=True)
    parts = args.compare_rows // chunk
    me = [os.path.abspath(__file__), "--worker", "--dir", args.dir]
    results = {"machine": machine_info(), "rows": args.rows,
               "compare_rows": parts * chunk, "clusters": args.clusters, "generation_s": generation,
               "parquet_gib": size / 2 ** 30}
    try:
        for engine in ("memory", "duckdb") + (() if args.skip_spark else ("pyspark",)):
            results[f"{engine}_compare"] = run_worker(me + ["--engine", engine, "--parts", str(parts)], args.timeout)
            print(engine, "at", f"{parts * chunk:,}", "rows:", _brief(results[f"{engine}_compare"]), flush=True)
        reference = results["memory_compare"]
        for engine in ("duckdb",) + (() if args.skip_spark else ("pyspark",)):
            other = results[f"{engine}_compare"]
            if reference.get("status") == "ok" and other.get("status") == "ok":
                results[f"{engine}_max_rel_diff"] = _relative(other, reference)
                print(f"{engine} vs memory: max relative difference {results[f'{engine}_max_rel_diff']:.2e}")
        if not args.skip_full and args.rows > parts * chunk:
            results["duckdb_full"] = run_worker(me + ["--engine", "duckdb"], args.timeout)
            print("duckdb at", f"{args.rows:,}", "rows:", _brief(results["duckdb_full"]), flush=True)
        full = results.get("duckdb_full", results["duckdb_compare"])
        if reference.get("status") == "ok" and full.get("status") == "ok":
            rows_full = args.rows if "duckdb_full" in results else parts * chunk
            ratio = (full["seconds"] / rows_full) / (reference["seconds"] / (parts * chunk))
            results["duckdb_per_row_vs_memory"] = ratio
            print(f"per-row cost, DuckDB at {rows_full:,} rows / in memory at {parts * chunk:,}: {ratio:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    for value in results.values():
        if isinstance(value, dict):
            for key in ("estimate", "std_error", "av_p_value", "n"):
                value.pop(key, None)
    print(json.dumps(results, indent=1, default=str))


def _brief(result: dict) -> str:
    if result.get("status") != "ok":
        return f"{result.get('status')}: {result.get('detail')} {result.get('stderr', '')[-600:]}"
    return f"{result['seconds']:.1f} s wall, {result['cpu']:.1f} s CPU, peak RSS {result['peak_rss_gb']:.2f} GiB"


if __name__ == "__main__":
    main()
