"""Truths of the populations the loop's estimates describe (no ACIC data needed)."""

import numpy as np
import pytest

from causalflow.oci.acic import population_truth, populations_frame


def test_population_truth_by_explicit_loops():
    rng = np.random.default_rng(0)
    n = 500
    eff, t, e = rng.normal(size=n), rng.integers(0, 2, n), rng.uniform(0.01, 0.99, n)
    kept = (e >= 0.1) & (e <= 0.9)
    ate = sum(eff[i] for i in range(n) if kept[i]) / sum(kept)
    att = sum(eff[i] for i in range(n) if kept[i] and t[i] == 1) / sum(kept & (t == 1))
    h = [e[i] * (1 - e[i]) for i in range(n)]
    ato = sum(h[i] * eff[i] for i in range(n)) / sum(h)
    # 1e-12: the same sums in another order
    assert population_truth("ATE", eff, t, e, kept) == pytest.approx(ate, rel=1e-12)
    assert population_truth("ATT", eff, t, e, kept) == pytest.approx(att, rel=1e-12)
    assert population_truth("ATO", eff, t, e, kept) == pytest.approx(ato, rel=1e-12)  # trimming not used
    assert population_truth("ATE", eff, t, e, np.ones(n, bool)) == pytest.approx(eff.mean(), rel=1e-12)


def _row(estimand, population, estimate, truth):
    return {"estimand": estimand, "population": population, "estimate": estimate, "truth": truth,
            "ci_lower": estimate - 1, "ci_upper": estimate + 1, "n": 10}


def test_populations_frame_keeps_the_last_iteration_per_population():
    rec = {"setting": 1, "replication": 2, "iterations": [
        {"index": 1, "table": [_row("ATT", "treated units", 1.0, 1.1), _row("ATE", "study population", 2.0, 2.5)]},
        {"index": 2, "table": [_row("ATT", "treated units", 1.5, 1.1),
                               _row("ATE", "trimmed: 0.1 <= e <= 0.9", 3.0, 3.2),
                               _row("ATO", "overlap-weighted study population", 4.0, 4.1)]}]}
    old = {"setting": 2, "replication": 1, "iterations": [
        {"index": 1, "table": [{k: v for k, v in _row("ATT", "treated units", 1.0, 0).items() if k != "truth"}]}]}
    f = populations_frame([rec, old]).set_index(["estimand", "population"])
    assert sorted(f.index) == [("ATE", "trimmed"), ("ATE", "whole sample"), ("ATO", "overlap-weighted"),
                               ("ATT", "whole sample")]
    assert f.loc[("ATT", "whole sample"), "estimate"] == 1.5 and f.loc[("ATT", "whole sample"), "iteration"] == 2
    assert f.loc[("ATE", "whole sample"), "iteration"] == 1
    assert f.loc[("ATE", "trimmed"), "truth"] == 3.2
