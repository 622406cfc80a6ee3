"""Coverage of the default 95% intervals with few clusters (issue: valid inference with few
clusters), on the process of ``few_clusters_dgp`` (also run by
benchmarks/bench_few_clusters.py, whose table in benchmarks/README.md compares CR1, CR2 and
CR3 on more replications).
"""

from __future__ import annotations

import math

import pytest

try:
    from tests import few_clusters_dgp as dgp
except ImportError:  # tests/ itself on sys.path (pytest rootdir insertion)
    import few_clusters_dgp as dgp

# R = 750 replications per cell: the Monte Carlo SE of a coverage near 0.92 is
# sqrt(0.92 * 0.08 / 750) = 0.0099, so each band is the benchmark's coverage (R = 2000,
# benchmarks/README.md, "Few clusters") +- 2.5 SE = +-0.025. These are the measured claims,
# not the 93-97% target: on this process (sizes 5..200, cluster sd 1 vs 2) the
# default CR3 with t(G - 1) covers 90.5-94.2%, below 93% at G = 10, for G = 20 A/B and
# G = 40 encouragement (CR2 is no better); the target is open (see the issue note).
REPS = 750
MEASURED = {(10, "ab"): 0.918, (10, "encouragement"): 0.905, (20, "ab"): 0.922,
            (20, "encouragement"): 0.935, (40, "ab"): 0.942, (40, "encouragement"): 0.925}
HALF_WIDTH = 0.025


def _coverage(records, method: str, estimand: str) -> float:
    rows = records[(records.method == method) & (records.estimand == estimand)]
    assert len(rows) > 0
    return float(rows.covered.mean())


@pytest.mark.slow
@pytest.mark.parametrize("design,estimand", [("ab", "ATE"), ("encouragement", "LATE")])
@pytest.mark.parametrize("n_clusters", [10, 20, 40])
def test_default_intervals_cover_as_measured(n_clusters, design, estimand):
    records = dgp.run(n_clusters, design, REPS, dgp.SEED, {"default": {}}, n_jobs=2)
    assert len(records.rep.unique()) == REPS
    coverage = _coverage(records, "default", estimand)
    se = math.sqrt(coverage * (1 - coverage) / REPS)
    print(f"G = {n_clusters}, {design} {estimand}: default ({records.cov_type.iloc[0]}) covers "
          f"{coverage:.3f} (MC SE {se:.3f}) of {REPS}")
    expected = MEASURED[(n_clusters, design)]
    assert expected - HALF_WIDTH <= coverage <= min(expected + HALF_WIDTH, 0.97)


def test_cr1_normal_under_covers_with_ten_clusters():
    # the simulation tells the covariances apart: CR1 with normal quantiles covers about
    # 0.75 here (benchmarks/README.md); with R = 300 its MC SE is 0.025, so 0.92 is 6 SE away
    reps = 300
    records = dgp.run(10, "ab", reps, dgp.SEED, {"CR1-normal": {"cov_type": "CR1", "inference": "normal"}})
    assert _coverage(records, "CR1-normal", "ATE") < 0.92
