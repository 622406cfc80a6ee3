"""Capping and ratio-metric linearisation against independent computations."""

import numpy as np
import pytest

from causalflow.errors import ValidationError
from causalflow.transforms import cap, linearize_ratio


def test_cap_quantiles_pooled_and_input_untouched():
    rng = np.random.default_rng(0)
    y = rng.lognormal(size=1001)
    y[5] = np.nan
    before = y.copy()
    c = cap(y, lower_quantile=0.01, upper_quantile=0.99)
    np.testing.assert_array_equal(y, before)          # never modified
    finite = y[~np.isnan(y)]
    assert c.upper == np.quantile(finite, 0.99) and c.lower == np.quantile(finite, 0.01)
    ref = np.clip(y, c.lower, c.upper)
    np.testing.assert_array_equal(c.values, ref)
    assert c.n_upper == int(np.sum(finite > c.upper)) and c.n_lower == int(np.sum(finite < c.lower))
    assert np.isnan(c.values[5])


def test_cap_values_and_errors():
    c = cap([1.0, 5.0, -3.0], lower=0.0)
    np.testing.assert_array_equal(c.values, [1.0, 5.0, 0.0])
    with pytest.raises(ValidationError, match="upper"):
        cap([1.0], upper=1.0, upper_quantile=0.9)
    with pytest.raises(ValidationError, match="quantile"):
        cap([1.0], upper_quantile=1.5)
    with pytest.raises(ValidationError, match="lower"):
        cap([1.0, 2.0], lower=3.0, upper=2.0)


def _delta_ratio_var(y, n):
    """Textbook delta method for R = mean(Y)/mean(N) with 1/n moments (Deng et al. 2018)."""
    k = y.size
    my, mn = y.mean(), n.mean()
    vy, vn = y.var(), n.var()
    cyn = np.mean((y - my) * (n - mn))
    r = my / mn
    return r, (vy - 2 * r * cyn + r ** 2 * vn) / (k * mn ** 2)


def test_linearised_ratio_matches_delta_method():
    rng = np.random.default_rng(7)
    k = 3000
    arm = rng.integers(0, 3, k)
    sessions = rng.poisson(4, k) + 1.0
    orders = rng.binomial(sessions.astype(int), 0.1 + 0.02 * arm).astype(float)
    lin = linearize_ratio(orders, sessions, arm)
    for a in range(3):
        r, var = _delta_ratio_var(orders[arm == a], sessions[arm == a])
        z = lin.values[arm == a]
        # arm mean of z is the ratio of sums exactly; its 1/n variance / n is the delta variance
        assert z.mean() == pytest.approx(r, rel=1e-12)
        assert lin.ratio[a] == pytest.approx(r, rel=1e-14)
        assert z.var() / z.size == pytest.approx(var, rel=1e-10)


def test_linearise_missing_and_errors():
    lin = linearize_ratio([1.0, np.nan, 2.0, 3.0], [1.0, 1.0, 2.0, 1.0], np.array([0, 0, 1, 1]))
    assert np.isnan(lin.values[1])
    with pytest.raises(ValidationError, match="denominator"):
        linearize_ratio([1.0, 2.0], [0.0, 1.0], np.array([0, 1]))
    with pytest.raises(ValidationError, match="arm_codes"):
        linearize_ratio([1.0, 2.0], [1.0, 1.0], np.array([0.5, 1.0]))
