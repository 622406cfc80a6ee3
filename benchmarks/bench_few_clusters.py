"""Few clusters: coverage of 95% intervals by covariance (issue: valid inference with few clusters).

G in {10, 20, 40} clusters of 5..200 rows (geometric spread), exactly G/2 treated, a cluster
effect with sd 1 in control and 2 in treatment, a covariate x, a constant effect 0.5; an A/B
design (ATE) and an encouragement design with 70% / 10% take-up (LATE = ATE = 0.5, ITT = 0.3).
The process lives in ``tests/few_clusters_dgp.py`` (one copy, shared with the slow test).
Each replication is fitted with the default covariance, CR1 with normal and with t(G - 1)
quantiles, CR2 (t, Satterthwaite dof) and CR3 (t(G - 1)); the table gives the share of 95%
intervals that cover the truth and their mean length, and is written into the section
"Few clusters: coverage of 95% intervals" of benchmarks/README.md.

    python benchmarks/bench_few_clusters.py                    # R = 2000, 2 processes
    python benchmarks/bench_few_clusters.py --reps 200 --no-readme
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

# one BLAS thread per process: the fits are tiny and the processes share 2 cores
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import few_clusters_dgp as dgp  # noqa: E402
from _common import machine_info  # noqa: E402

import causalflow as cf  # noqa: E402

SECTION = "## Few clusters: coverage of 95% intervals"
README = os.path.join(HERE, "README.md")
ROWS = [("ab", "ATE"), ("encouragement", "LATE"), ("encouragement", "ATE"), ("encouragement", "ITT")]
DESIGN_LABEL = {"ab": "A/B", "encouragement": "encouragement"}


def probe() -> tuple[dict, set, list[str]]:
    """What the installed causalflow can fit: the methods of :data:`dgp.METHODS` (CR2
    raised NotImplementedError while it was being wired in), the (method, estimand) pairs
    it refuses with a ValidationError (CR2 and the LATE with covariates), and why."""
    methods, skip, notes = {}, set(), []
    for name, kwargs in dgp.METHODS.items():
        try:
            for design in dgp.DESIGNS:
                df = dgp.simulate(np.random.default_rng(0), 10, design)
                fit = dgp.experiment(df, design).add_metric(y="y", exogenous_covariates=["x"]).fit(
                    cf.LinearModel(**kwargs))
                for estimand in dgp.ESTIMANDS[design]:
                    try:
                        fit.infer_effect(estimands=[estimand]).to_frame()
                    except cf.ValidationError as exc:
                        skip.add((name, estimand))
                        why = re.split(r" \(|: ", str(exc).split(": ", 1)[-1])[0]
                        notes.append(f"{name} gives no {estimand} in the {DESIGN_LABEL[design]} design "
                                     f"(ValidationError: {why}).")
        except NotImplementedError:
            notes.append(f"{name} is not in the table: it raised NotImplementedError at the time of the run.")
            continue
        methods[name] = kwargs
    return methods, skip, notes


def machine() -> dict:
    """:func:`_common.machine_info` with the fields the section prints."""
    info = machine_info()
    dirty = "+uncommitted" if info["uncommitted_causalflow_files"] else ""
    return {**info, "commit": info["commit"] + dirty, "numpy": info["versions"]["numpy"],
            "pandas": info["versions"]["pandas"]}


def table(summary: pd.DataFrame, methods: list[str]) -> str:
    """One row per (G, design, estimand): coverage % (mean interval length) per method."""
    head = ["G", "design", "estimand (truth)", "default is"]
    head += [f"{m} cov. % (length)" for m in methods]
    has_cr2 = "CR2" in methods
    if has_cr2:
        head.append("CR2 dof (mean)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in sorted(summary.n_clusters.unique()):
        for design, estimand in ROWS:
            cell = summary[(summary.n_clusters == g) & (summary.design == design) & (summary.estimand == estimand)]
            if cell.empty:
                continue
            by = cell.set_index("method")
            default = by.loc["default"] if "default" in by.index else None
            row = [str(g), DESIGN_LABEL[design], f"{estimand} ({dgp.TRUTH[estimand]:g})",
                   "n/a" if default is None else f"{default.cov_type}, dof {default.dof:.3g}"]
            row += [f"{100 * by.loc[m].coverage:.1f} ({by.loc[m].length:.2f})" if m in by.index else "n/a"
                    for m in methods]
            if has_cr2:
                row.append(f"{by.loc['CR2'].dof:.1f}" if "CR2" in by.index else "n/a")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def variant_table(summary: pd.DataFrame) -> str:
    """Default coverage % (length) and mean dof per (process, G, design, estimand)."""
    lines = ["| process | G | design | estimand | default cov. % (length) | dof (mean) |", "|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lo, hi, sd0, sd1 = dgp.PROCESSES[r.process]
        lines.append(f"| {r.process} ({lo}-{hi} rows, sd {sd0:g}/{sd1:g}) | {r.n_clusters} | "
                     f"{DESIGN_LABEL[r.design]} | {r.estimand} | {100 * r.coverage:.1f} ({r.length:.2f}) | "
                     f"{r.dof:.1f} |")
    return "\n".join(lines)


def section(md_table: str, reading: str, info: dict, args, seconds: dict, notes: list[str],
            variants: str = "") -> str:
    reps = args.reps
    se = 100 * np.sqrt(dgp.LEVEL * (1 - dgp.LEVEL) / reps)
    timing = ", ".join((f"G = {g}" if isinstance(g, int) else g) + f": {s:.0f} s" for g, s in seconds.items())
    notes = "".join(f"\n{note}\n" for note in notes)
    return f"""{SECTION}

`python benchmarks/bench_few_clusters.py` (options `--reps --seed --jobs --clusters --no-readme --readme`);
the process is `tests/few_clusters_dgp.py`, shared with the slow test
`tests/test_few_clusters.py`. G clusters of 5 to 200 rows (sizes in geometric progression,
fixed for a given G: 5, 7, 11, ..., 200 for G = 10), exactly G/2 clusters treated at random,
and y = 1 + 0.5 d + x + s_z u_g + e with u_g, x, e ~ N(0, 1) and a cluster effect sd s_z of
1 in control and 2 in treatment. A/B: d = z (ATE 0.5). Encouragement: d ~ Bernoulli(0.7) if
assigned, Bernoulli(0.1) if not (first stage 0.6): LATE 0.5 (the Lin-interacted 2SLS effect
at the compliers' covariate means, the default), ATE 0.5 (`estimands=["ATE"]`: the same
2SLS fit at the population's covariate means, exact here since the effect is constant) and
ITT 0.3, all from one fit per covariance. Every fit is `ExperimentData(...,
cluster_by="store").add_metric(y="y", exogenous_covariates=["x"]).fit(LinearModel(...))`:
*default* no options (below 50 clusters the small-cluster covariance, column "default
is"), *CR1-normal* `cov_type="CR1", inference="normal"`, *CR1-t* `cov_type="CR1"`
(t(G - 1)), *CR2* `cov_type="CR2"` (t with the Satterthwaite dof of the contrast), *CR3*
`cov_type="CR3"` (t with the Bell-McCaffrey dof of the contrast, `design_dof`; the
default below 50 clusters). Cells: share of replications whose 95% interval covers the
truth, in %, and the mean interval length.

**R = {reps} replications per G and design, seed {args.seed}. Monte Carlo SE of a coverage
near 95%: sqrt(0.95 x 0.05 / R) = {se:.2f} percentage points** (so 93-97% is about
+-{2 / se:.1f} SE). Machine: {info['nproc']} cores ({info['cpu']}), {info['date']}, causalflow
at {info['commit']}, Python {info['python']}, numpy {info['numpy']}, pandas {info['pandas']};
{args.jobs} process{'es' if args.jobs > 1 else ''}, one BLAS thread each. Run time {sum(seconds.values()):.0f} s wall
({timing}); the machine was shared (load average {info['load']}).
{notes}
{md_table}

{reading}

**Other processes** (default only, R = {args.variant_reps}, seed {args.seed}; `PROCESSES` in
`tests/few_clusters_dgp.py`: smallest / largest cluster, cluster sd in control / treatment),
to check that the default is not tuned to the process above:

{variants}
"""


def verdict(summary: pd.DataFrame) -> str:
    """Where the default's coverage leaves the issue's 93-97% band, from the numbers."""
    lo, hi = 93.0, 97.0
    rows = summary[summary.method == "default"]
    out = [f"G = {r.n_clusters} {DESIGN_LABEL[r.design]} {r.estimand} {100 * r.coverage:.1f}%"
           for r in rows.itertuples() if not lo <= round(100 * r.coverage, 1) <= hi]
    if not out:
        return f"The default's coverage is within {lo:g}-{hi:g}% in every cell."
    return f"The default's coverage is outside {lo:g}-{hi:g}% in: " + "; ".join(out) + "."


def write_section(text: str, path: str = README) -> None:
    """Replace the section (up to the next level-2 heading) or append it; the rest stays."""
    with open(path) as fh:
        lines = fh.read().split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    new = text.rstrip("\n").split("\n")
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += [""] + new + [""]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = lines[end:]
        lines = lines[:start] + new + ([""] + tail if tail else [""])
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(lines))
    os.replace(tmp, path)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=dgp.SEED)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--clusters", default="10,20,40")
    ap.add_argument("--processes", default="mild,equal,same-sd,wide",
                    help="other processes of few_clusters_dgp.PROCESSES, default fit only ('' for none)")
    ap.add_argument("--variant-reps", type=int, default=1000)
    ap.add_argument("--no-readme", action="store_true", help="print the table only")
    ap.add_argument("--readme", default=README, help="the file whose section is replaced")
    args = ap.parse_args(argv)
    methods, skip, notes = probe()
    for note in notes:
        print(note, flush=True)
    info = machine()
    parts, seconds = [], {}
    for g in (int(v) for v in args.clusters.split(",")):
        t0 = time.perf_counter()
        for design in dgp.DESIGNS:
            parts.append(dgp.run(g, design, args.reps, args.seed, methods, n_jobs=args.jobs, skip=skip))
        seconds[g] = time.perf_counter() - t0
        print(f"G = {g}: {seconds[g]:.0f} s", flush=True)
    variant_parts = []
    for process in filter(None, args.processes.split(",")):
        t0 = time.perf_counter()
        for g in (int(v) for v in args.clusters.split(",")):
            for design in dgp.DESIGNS:
                variant_parts.append(dgp.run(g, design, args.variant_reps, args.seed, {"default": {}},
                                             n_jobs=args.jobs, process=process))
        seconds[process] = time.perf_counter() - t0
        print(f"{process}: {seconds[process]:.0f} s", flush=True)
    info["load"] = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    summary = dgp.summarise(pd.concat(parts, ignore_index=True))
    md = table(summary, list(methods))
    variants = variant_table(dgp.summarise(pd.concat(variant_parts, ignore_index=True))) if variant_parts else ""
    print(md)
    print(verdict(summary))
    print(variants)
    if not args.no_readme:
        write_section(section(md, verdict(summary), info, args, seconds, notes, variants), args.readme)
        print(f"written to {args.readme}")
    return summary


if __name__ == "__main__":
    main()
