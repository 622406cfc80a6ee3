"""Anytime-valid kernels (causalflow.linalg.anytime) against independent closed forms.

References: Lindon, Ham, Tingley, Bojinov, arXiv:2210.08589; R package avlm
(log_G_t, p_G_t, t_radius, optimal_g, log_G_f). The formulas below are written out again
with the math module (no expm1/log1p tricks), so a slip in the vectorised kernels shows.
"""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import causalflow.linalg.anytime as av_mod
from causalflow.errors import ValidationError
from causalflow.linalg.anytime import (
    anytime_valid,
    av_log_e_value,
    av_p_value,
    av_sample_size,
    cs_multiplier,
    optimal_g,
    running_anytime_valid,
    wald_av_p_value,
    wald_log_e_value,
)


# --- independent closed forms (paper / avlm), scalar math --------------------------------
def ref_log_bf(t, n, nu, g):
    r = g / (g + n)
    # math.log1p only for accuracy (the paper writes log(1 + x)); same formula
    return 0.5 * math.log(r) + 0.5 * (nu + 1) * (math.log1p(t * t / nu) - math.log1p(r * t * t / nu))


def ref_p(t, n, nu, g):
    return min(1.0, math.exp(-ref_log_bf(t, n, nu, g)))


def ref_radius(n, nu, g, alpha):
    r = g / (g + n)
    if r ** nu >= alpha ** 2:          # BF <= r^(-nu/2) <= 1/alpha: never rejects
        return math.inf
    big_p = (r * alpha * alpha) ** (1.0 / (nu + 1))
    return math.sqrt(nu * (1 - big_p) / (big_p - r))


def ref_log_bf_f(q, d, n, nu, g):
    r = g / (g + n)
    return 0.5 * d * math.log(r) + 0.5 * (nu + d) * (math.log(1 + q / nu) - math.log(1 + r * q / nu))


T_GRID = [0.0, 0.3, 1.0, 1.96, 3.0, 6.0, 15.0]
N_GRID = [12, 40, 300, 5_000, 40_000]
P_GRID = [1, 2, 6]
G_GRID = [0.05, 1.0, 25.0, 1_000.0]
ALPHAS = [0.01, 0.05, 0.2]


@pytest.mark.parametrize("n,p,g", list(itertools.product(N_GRID, P_GRID, G_GRID)))
def test_e_value_and_p_value_match_closed_form(n, p, g):
    # rtol 1e-10 on the e-value and p-value; on log BF an absolute 1e-10 too (log BF can be
    # ~0 by cancellation of two O(1) terms, where a relative tolerance is meaningless).
    nu = n - p
    t = np.array(T_GRID)
    got = av_log_e_value(t, n, nu, g)
    want = np.array([ref_log_bf(x, n, nu, g) for x in T_GRID])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.exp(got), np.exp(want), rtol=1e-10)       # the e-value
    np.testing.assert_allclose(av_p_value(-t, n, nu, g), [ref_p(x, n, nu, g) for x in T_GRID],
                               rtol=1e-10)


@pytest.mark.parametrize("n,p,g,alpha", list(itertools.product(N_GRID, P_GRID, G_GRID, ALPHAS)))
def test_radius_matches_closed_form_and_end_points_have_p_alpha(n, p, g, alpha):
    nu = n - p
    got = float(cs_multiplier(n, nu, g, alpha))
    want = ref_radius(n, nu, g, alpha)
    if math.isinf(want):
        assert math.isinf(got)
        # and indeed no t reaches the level: sup_t BF = r^(-nu/2) <= 1/alpha
        assert ref_p(1e8, n, nu, g) >= alpha * (1 - 1e-9)
        return
    # rtol 1e-10: 1 - P has relative rounding ~1e-16 / (1 - P) <= 1e-12 on this grid.
    assert got == pytest.approx(want, rel=1e-10)
    # the end points of estimate +- c*se have p-value alpha
    est, se = 0.7, 0.3
    res = anytime_valid(est, se, n, nu, g, alpha, null=est - got * se)
    assert float(res.p_value) == pytest.approx(alpha, rel=1e-9)
    assert float(res.ci_lower) == pytest.approx(est - got * se, rel=1e-12)
    assert ref_p(got, n, nu, g) == pytest.approx(alpha, rel=1e-9)
    assert ref_p(got * (1 - 1e-6), n, nu, g) > alpha > ref_p(got * (1 + 1e-6), n, nu, g)


@pytest.mark.parametrize("n,p,g", [(20, 2, 1.0), (200, 5, 10.0), (50, 1, 0.1)])
def test_e_value_has_mean_one_under_the_null(n, p, g):
    # Independent check of the normalisation: under H0 the t-statistic has a t_nu law and
    # the Bayes factor is a likelihood ratio, so E0[BF] = 1 (quadrature rtol 1e-7).
    nu = n - p

    def integrand(t):
        return math.exp(ref_log_bf(t, n, nu, g)) * scipy.stats.t.pdf(t, nu)

    mean, _ = scipy.integrate.quad(integrand, -np.inf, np.inf, epsabs=0, epsrel=1e-10, limit=400)
    assert mean == pytest.approx(1.0, rel=1e-7)
    assert float(np.exp(av_log_e_value(1.3, n, nu, g))) == pytest.approx(
        math.exp(ref_log_bf(1.3, n, nu, g)), rel=1e-12)


def test_gaussian_limit():
    # nu -> inf: log BF = log(r)/2 + (1 - r) t^2 / 2; c^2 = (log(1/r) + 2 log(1/alpha)) / (1 - r)
    n, g, t, alpha = 1_000.0, 30.0, 2.5, 0.05
    r = g / (g + n)
    assert float(av_log_e_value(t, n, np.inf, g)) == pytest.approx(
        0.5 * math.log(r) + 0.5 * (1 - r) * t * t, rel=1e-12)
    assert float(cs_multiplier(n, np.inf, g, alpha)) == pytest.approx(
        math.sqrt((math.log(1 / r) + 2 * math.log(1 / alpha)) / (1 - r)), rel=1e-12)
    # finite nu converges to the limit
    assert float(cs_multiplier(n, 1e9, g, alpha)) == pytest.approx(
        float(cs_multiplier(n, np.inf, g, alpha)), rel=1e-7)


@pytest.mark.parametrize("d,n,nu,g", [(1, 100, 97, 1.0), (3, 500, 490, 20.0), (5, 60, 50, 0.5)])
def test_wald_e_value_matches_closed_form(d, n, nu, g):
    for q in [0.0, 2.0, 11.0, 40.0]:
        assert float(wald_log_e_value(q, d, n, nu, g)) == pytest.approx(
            ref_log_bf_f(q, d, n, nu, g), rel=1e-10, abs=1e-13)
        assert float(wald_av_p_value(q, d, n, nu, g)) == pytest.approx(
            min(1.0, math.exp(-ref_log_bf_f(q, d, n, nu, g))), rel=1e-10)


@pytest.mark.parametrize("n,nu,alpha", [(10_000, 9_995, 0.05), (50, 49, 0.05), (1e6, 1e6 - 10, 0.01),
                                         (25, 3, 0.1), (400, np.inf, 0.05)])
def test_optimal_g_minimises_the_radius(n, nu, alpha):
    # Reference: scipy's bounded Brent search over log g (as avlm::optimal_g uses optimize).
    g_star = float(optimal_g(n, nu, alpha))
    ub = n * alpha ** (2 / nu) / (1 - alpha ** (2 / nu)) if np.isfinite(nu) else 1e9 * n
    res = scipy.optimize.minimize_scalar(lambda lg: float(cs_multiplier(n, nu, math.exp(lg), alpha)),
                                         bounds=(math.log(1e-9 * n), math.log(ub)), method="bounded",
                                         options={"xatol": 1e-12})
    assert float(cs_multiplier(n, nu, g_star, alpha)) <= res.fun * (1 + 1e-12)
    # the minimum is flat; g itself agrees to ~1e-6 relative
    assert g_star == pytest.approx(math.exp(res.x), rel=1e-5)


def test_optimal_g_is_vectorised():
    n = np.array([100.0, 1_000.0, 10_000.0])
    g = optimal_g(n, n - 2, 0.05)
    assert g.shape == (3,)
    for i in range(3):
        assert g[i] == pytest.approx(float(optimal_g(n[i], n[i] - 2, 0.05)), rel=1e-12)


def test_sample_size_choice():
    hc = av_sample_size("HC1", n_obs=[1_000, 800], n_params=4)
    assert hc.n.tolist() == [1_000, 800] and hc.nu.tolist() == [996, 796] and hc.unit == "rows"
    cr = av_sample_size("CR1", n_obs=1_000, n_params=4, n_clusters=50)
    assert (float(cr.n), float(cr.nu), cr.unit) == (50.0, 49.0, "clusters")


@pytest.mark.parametrize("call", [
    lambda: av_p_value(1.0, 100, 98, 0.0),            # g must be positive
    lambda: av_p_value(1.0, 100, -1, 1.0),            # nu must be positive
    lambda: cs_multiplier(100, 98, 1.0, 1.5),         # alpha in (0, 1)
    lambda: optimal_g(-5, 3, 0.05),
    lambda: av_sample_size("CR1", 100, 3),            # clusters required
    lambda: av_sample_size("HC1", 3, 3),              # no residual degrees of freedom
    lambda: av_sample_size("HC9", 100, 3),
    lambda: running_anytime_valid([0.1], [0], [1], alpha=0),
])
def test_bad_input_raises_validation_error(call):
    with pytest.raises(ValidationError):
        call()


def test_nan_standard_errors_propagate():
    res = anytime_valid([1.0, 2.0], [np.nan, 0.0], 100, 98, 1.0)
    assert np.isnan(res.p_value).all() and np.isnan(res.ci_lower).all()


def test_running_quantities_before_the_first_estimate_are_nan():
    run = running_anytime_valid([np.nan, 0.2, 0.5], [np.nan, -np.inf, -1.0], [np.nan, np.inf, 2.0])
    assert np.isnan(run.p_value[0]) and np.isnan(run.ci_lower[0]) and np.isnan(run.ci_upper[0])
    assert run.ci_lower.tolist()[1:] == [-np.inf, -1.0] and run.p_value.tolist()[1:] == [0.2, 0.2]


def test_running_quantities():
    p = np.array([[0.9, 0.5], [0.04, np.nan], [0.2, 0.6]])
    lo = np.array([[-3.0, -1.0], [0.1, np.nan], [-1.0, 0.0]])
    hi = np.array([[3.0, 1.0], [2.0, np.nan], [1.5, 0.5]])
    run = running_anytime_valid(p, lo, hi, alpha=0.05)
    np.testing.assert_array_equal(run.p_value, [[0.9, 0.5], [0.04, 0.5], [0.04, 0.5]])
    np.testing.assert_array_equal(run.ci_lower, [[-3, -1], [0.1, -1], [0.1, 0.0]])
    np.testing.assert_array_equal(run.ci_upper, [[3, 1], [2, 1], [1.5, 0.5]])
    np.testing.assert_array_equal(run.first_significant, [1, -1])


def test_exact_model_monitoring_controls_type_one_error():
    # Gaussian one-sample t-test (p = 1, nu = n - 1) re-tested after every observation up to
    # n = 400 in 4,000 replications: the share ever rejected stays <= alpha + 2 MC SE, while
    # the fixed-n t-test re-used at every n rejects far more often. Fixed seed.
    rng = np.random.default_rng(20240601)
    reps, n_max, alpha = 4_000, 400, 0.05
    y = rng.standard_normal((reps, n_max))
    n = np.arange(1, n_max + 1, dtype=float)
    s1 = np.cumsum(y, axis=1)
    s2 = np.cumsum(y * y, axis=1)
    n, s1, s2 = n[2:], s1[:, 2:], s2[:, 2:]
    mean = s1 / n
    var = (s2 - n * mean ** 2) / (n - 1)
    t = mean / np.sqrt(var / n)
    g = optimal_g(n_max, n_max - 1, alpha)
    p_av = av_p_value(t, n, n - 1, g)
    ever_av = (p_av <= alpha).any(axis=1).mean()
    ever_naive = (2 * scipy.stats.t.sf(np.abs(t), n - 1) <= alpha).any(axis=1).mean()
    assert ever_av <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / reps)
    assert ever_naive > 3 * alpha


# --- properties ----------------------------------------------------------------------------
sizes = st.integers(min_value=5, max_value=100_000)
params = st.integers(min_value=1, max_value=4)
gs = st.floats(min_value=1e-3, max_value=1e4)
ts = st.floats(min_value=-50, max_value=50)
alphas = st.floats(min_value=1e-4, max_value=0.5)


@settings(max_examples=200, deadline=None)
@given(sizes, params, gs, ts, ts)
def test_p_value_decreases_in_abs_t(n, p, g, t1, t2):
    nu = n - p
    lo, hi = sorted([abs(t1), abs(t2)])
    p_lo, p_hi = av_p_value(lo, n, nu, g), av_p_value(-hi, n, nu, g)
    assert 0 <= p_hi <= p_lo * (1 + 1e-12) <= 1 + 1e-12   # 0 by underflow at huge |t|


@settings(max_examples=200, deadline=None)
@given(sizes, params, gs, ts)
def test_av_p_value_is_never_below_the_fixed_n_p_value(n, p, g, t):
    # {BF >= 1/a} = {|t| >= c} and E0[BF] = 1, so P0(|T| >= c) <= a: the classical p-value
    # is a lower bound (the avlm tests check the same on mtcars).
    nu = n - p
    classical = 2 * scipy.stats.t.sf(abs(t), nu)
    assert float(av_p_value(t, n, nu, g)) >= classical * (1 - 1e-9)


@settings(max_examples=200, deadline=None)
@given(sizes, params, gs, alphas, alphas)
def test_radius_is_wider_than_fixed_n_and_shrinks_with_alpha(n, p, g, a1, a2):
    nu = n - p
    lo_a, hi_a = sorted([a1, a2])
    c_lo, c_hi = float(cs_multiplier(n, nu, g, lo_a)), float(cs_multiplier(n, nu, g, hi_a))
    assert c_lo >= c_hi * (1 - 1e-12)
    assert c_hi >= scipy.stats.t.ppf(1 - hi_a / 2, nu) * (1 - 1e-9)


@settings(max_examples=100, deadline=None)
@given(sizes, params, gs, alphas)
def test_optimal_g_beats_any_other_g(n, p, g, alpha):
    nu = n - p
    g_star = float(optimal_g(n, nu, alpha))
    assert float(cs_multiplier(n, nu, g_star, alpha)) <= float(cs_multiplier(n, nu, g, alpha)) * (1 + 1e-10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=30))
def test_running_p_value_is_monotone(ps):
    run = running_anytime_valid(ps, np.zeros(len(ps)) - 1, np.ones(len(ps)))
    assert np.all(np.diff(run.p_value) <= 0)
    assert run.p_value[-1] == min(ps)


def test_doctests():
    res = doctest.testmod(av_mod, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 5
