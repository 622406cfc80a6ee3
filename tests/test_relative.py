"""Relative-effect kernel: delta-method SE and Fieller's interval against closed forms."""

import numpy as np
import pytest
from scipy import stats

from causalflow.effects.relative import relative_effect
from causalflow.errors import ValidationError

# (tau, mu, v_tt, v_mm, v_tm)
CASES = [
    (2.0, 40.0, 0.25, 0.04, -0.04),
    (-1.5, 10.0, 0.3, 0.5, 0.1),
    (0.3, 2.0, 0.05, 0.2, -0.02),
    (5.0, -25.0, 1.0, 2.0, 0.5),
]


def _fieller_textbook(a, b, v11, v22, v12, z):
    """Fieller (1954) in the g-notation of Finney: g = z^2 v22 / b^2,
    theta_hat = a / b; limits
    [theta - g v12/v22 -+ (z/|b|) sqrt(v11 - 2 theta v12 + theta^2 v22 - g (v11 - v12^2/v22))] / (1 - g)."""
    theta = a / b
    g = z ** 2 * v22 / b ** 2
    half = z / abs(b) * np.sqrt(v11 - 2 * theta * v12 + theta ** 2 * v22 - g * (v11 - v12 ** 2 / v22))
    centre = theta - g * v12 / v22
    return (centre - half) / (1 - g), (centre + half) / (1 - g)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("df", [None, 30.0])
def test_fieller_closed_form(case, df):
    a, b, v11, v22, v12 = case
    r = relative_effect(a, b, v11, v22, v12, method="fieller", df=df, alpha=0.1)
    z = stats.norm.isf(0.05) if df is None else stats.t.isf(0.05, df)
    lo, hi = _fieller_textbook(a, b, v11, v22, v12, z)
    # two algebraic forms of the same roots: rtol 1e-10
    np.testing.assert_allclose([r.ci_lower[0], r.ci_upper[0]], [lo, hi], rtol=1e-10)
    # the end points are where the Fieller pivot equals the critical value
    for th in (lo, hi):
        piv = (a - th * b) / np.sqrt(v11 - 2 * th * v12 + th ** 2 * v22)
        assert abs(piv) == pytest.approx(z, rel=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_delta_method_closed_form(case):
    a, b, v11, v22, v12 = case
    r = relative_effect(np.array([a, a]), np.array([b, b]), v11, v22, v12)
    grad = np.array([1 / b, -a / b ** 2])
    v = np.array([[v11, v12], [v12, v22]])
    se = np.sqrt(grad @ v @ grad)
    np.testing.assert_allclose(r.std_error, se, rtol=1e-12)
    np.testing.assert_allclose(r.estimate, a / b, rtol=1e-15)
    z = stats.norm.isf(0.025)
    np.testing.assert_allclose(r.ci_lower, a / b - z * se, rtol=1e-12)
    np.testing.assert_allclose(r.p_value, 2 * stats.norm.sf(abs(a) / np.sqrt(v11)), rtol=1e-12)


def test_fieller_unbounded_when_control_mean_not_significant():
    r = relative_effect(1.0, 0.5, 0.1, 1.0, 0.0, method="fieller")
    assert r.ci_lower[0] == -np.inf and r.ci_upper[0] == np.inf


def test_bad_input():
    with pytest.raises(ValidationError, match="method"):
        relative_effect(1.0, 2.0, 0.1, 0.1, 0.0, method="bootstrap")
    with pytest.raises(ValidationError, match="var_"):
        relative_effect(1.0, 2.0, -0.1, 0.1, 0.0)
