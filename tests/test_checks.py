"""Sample-ratio mismatch kernel against scipy.stats.chisquare."""

import numpy as np
import pytest
from scipy import stats

from causalflow.errors import ValidationError
from causalflow.platform.checks import sample_ratio_test


@pytest.mark.parametrize("counts,shares", [
    ([5000, 5200], [0.5, 0.5]),
    ([1000, 2100, 2950], [0.2, 0.3, 0.5]),
    ([10, 31], [1, 3]),                 # unnormalised shares
    ([4990, 5010], [0.5, 0.5]),
    ([49000, 51500], [0.5, 0.5]),       # a real mismatch
])
def test_srm_equals_scipy_chisquare(counts, shares):
    r = sample_ratio_test(counts, shares)
    s = np.asarray(shares, float)
    ref = stats.chisquare(counts, f_exp=np.sum(counts) * s / s.sum())
    # same statistic, same chi2 tail: rtol 1e-12
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert r.df == len(counts) - 1
    assert r.mismatch == (ref.pvalue < 0.001)


def test_srm_record_serialises():
    r = sample_ratio_test([5, 7], [0.5, 0.5], arms=["control", "B"], level="clusters")
    d = r.to_dict()
    assert d["arms"] == ["control", "B"] and d["level"] == "clusters"
    assert "clusters" in str(r)


@pytest.mark.parametrize("counts,shares,word", [
    ([5], [1.0], "observed"),
    ([5, -1], [0.5, 0.5], "observed"),
    ([5, 2.5], [0.5, 0.5], "observed"),
    ([5, 5], [0.5, 0.3, 0.2], "expected"),
    ([5, 5], [0.5, 0.0], "expected"),
])
def test_srm_bad_input(counts, shares, word):
    with pytest.raises(ValidationError, match=word):
        sample_ratio_test(counts, shares)
