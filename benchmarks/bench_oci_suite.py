"""The OCI validation suite for several candidate defaults of the loop (issue 16, item 4).

Runs ``causalflow.oci.suite.evaluate_suite`` once per candidate configuration (learner,
folds, final stage, cross-fitting splits) on the chosen families, the baselines once (with
the first candidate: they do not depend on the loop's configuration), and prints one
markdown table: per candidate, family and estimand the loop's RMSE (reported and whole
sample), coverage, interval length, and the ratio to the best baseline's RMSE.

    nice -n 10 python benchmarks/bench_oci_suite.py --out /tmp/oci_suite \
        --suite nie_wager --replications 10 --candidates linear gbm_x_select

Each candidate's records go to ``OUT/<candidate>/`` (resumable). Candidates are named
``[PROPENSITY/]LEARNER[:FINAL_STAGE[:REPEATS[:FOLDS]]]``, e.g. ``gbm_x_select:aipw_sample:2`` or
``auto/gbm_x_select:aipw:1`` (propensity chosen by ``auto``, outcome by ``gbm_x_select``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from causalflow.oci.suite import BASELINES, NW_SIZES, SuiteConfig, evaluate_suite, metrics_table, results_frame


def parse_candidate(text: str) -> SuiteConfig:
    """``[PROPENSITY/]LEARNER[:FINAL_STAGE[:REPEATS[:FOLDS]]]`` -> SuiteConfig (the others at their
    defaults; without ``PROPENSITY/`` the learner makes both nuisances)."""
    parts = text.split(":")
    d = SuiteConfig.defaults()
    propensity, _, learner = parts[0].rpartition("/")
    return SuiteConfig(learner, int(parts[3]) if len(parts) > 3 else d.n_folds,
                       parts[1] if len(parts) > 1 else d.final_stage, int(parts[2]) if len(parts) > 2 else d.n_repeats,
                       propensity_learner=propensity or learner)


def _dirname(candidate: str) -> str:
    return candidate.replace(":", "_").replace("/", "+")


def candidate_table(out: Path, candidates, families) -> pd.DataFrame:
    """Per candidate, family and estimand: the loop's figures and the best baseline's RMSE."""
    base = None
    rows = []
    paths = {name: {(f, p.stem): p for f in families
                    for p in sorted((out / _dirname(name) / f / "datasets").glob("*.json"))}
             for name in candidates}
    present = [set(v) for v in paths.values() if v]
    common = set.intersection(*present) if present else set()  # every candidate on the same data sets
    for name in candidates:
        records = [json.loads(paths[name][k].read_text()) for k in sorted(common) if k in paths[name]]
        if not records:
            continue
        res = results_frame(records)
        m = metrics_table(res)
        if base is None and (m.method.isin(["AIPW linear", "AIPW LightGBM", "DRLearner"])).any():
            base = m[m.method.isin(["AIPW linear", "AIPW LightGBM", "DRLearner"])]
        for (family, estimand), d in m.groupby(["family", "estimand"]):
            rep = d[d.method == "OCI (reported)"].iloc[0]
            whole = d[d.method == "OCI (whole sample)"].iloc[0]
            b = None if base is None else base[(base.family == family) & (base.estimand == estimand)]
            best = None if b is None or not len(b) else b.loc[b.rmse.idxmin()]
            rows.append({"candidate": name, "family": family, "estimand": estimand, "data sets": rep.n,
                         "RMSE reported": rep.rmse, "coverage reported": rep.coverage,
                         "length reported": rep.interval_length, "RMSE whole": whole.rmse,
                         "coverage whole": whole.coverage,
                         "best baseline": None if best is None else f"{best.method} {best.rmse:.4g}",
                         "ratio (whole / best)": None if best is None else whole.rmse / best.rmse})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--suite", default="all")
    p.add_argument("--candidates", nargs="+", default=["linear", "gbm_x_select:aipw_sample:2"])
    p.add_argument("--replications", type=int, default=50)
    p.add_argument("--sizes", type=int, nargs="*", default=list(NW_SIZES))
    p.add_argument("--acic-replications", type=int, nargs="*", default=None)
    p.add_argument("--acic-settings", type=int, nargs="*", default=None)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--table-only", action="store_true", help="only print the table of the kept records")
    a = p.parse_args(argv)
    out = Path(a.out)
    from causalflow.oci.suite import SUITES

    families = SUITES[a.suite]
    if not a.table_only:
        for i, name in enumerate(a.candidates):
            evaluate_suite(a.suite, out / _dirname(name), parse_candidate(name), n_jobs=a.n_jobs,
                           baselines=BASELINES if i == 0 else (), nw_replications=a.replications,
                           nw_sizes=tuple(a.sizes), acic_replications=a.acic_replications,
                           acic_settings=a.acic_settings)
    table = candidate_table(out, a.candidates, families)
    from causalflow.oci.artifacts import render_markdown
    from causalflow.oci.formatting import fmt_number

    rows = [[fmt_number(v) if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    print(render_markdown([("table", list(table.columns), rows)], {}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
