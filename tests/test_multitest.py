"""Multiple-testing kernels against statsmodels and closed forms; max-t coverage simulation."""

import numpy as np
import pytest
from scipy import integrate, stats
from statsmodels.stats.multitest import multipletests

from causalflow.errors import ValidationError
from causalflow.linalg.multitest import (
    adjust_pvalues,
    maxt_adjusted_pvalues,
    maxt_critical_value,
)

SM_NAME = {"holm": "holm", "bonferroni": "bonferroni", "bh": "fdr_bh", "by": "fdr_by"}


@pytest.mark.parametrize("method", list(SM_NAME))
@pytest.mark.parametrize("m", [1, 2, 7, 50])
def test_adjusted_pvalues_equal_statsmodels(method, m):
    # same arithmetic, different code: agreement to rounding (rtol 1e-12)
    rng = np.random.default_rng(m)
    p = rng.uniform(0, 1, m) ** 3
    if m > 5:
        p[3] = p[1]            # ties
        p[4] = 1.0
    ours = adjust_pvalues(p, method)
    ref = multipletests(p, method=SM_NAME[method])[1]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", list(SM_NAME))
def test_adjusted_pvalues_skip_nan(method):
    p = np.array([0.01, np.nan, 0.03, 0.2, np.nan])
    ours = adjust_pvalues(p, method)
    assert np.isnan(ours[[1, 4]]).all()
    ref = multipletests(p[[0, 2, 3]], method=SM_NAME[method])[1]
    np.testing.assert_allclose(ours[[0, 2, 3]], ref, rtol=1e-12)


def test_adjust_bad_input():
    with pytest.raises(ValidationError, match="method"):
        adjust_pvalues([0.1], "sidak")
    with pytest.raises(ValidationError, match="p_values"):
        adjust_pvalues([0.1, 1.5], "holm")


def _equicorrelated_prob(c, rho, m):
    """P(max_i |Z_i| <= c), Z_i = sqrt(rho) W + sqrt(1 - rho) e_i: one-dimensional integral."""
    s = np.sqrt(1 - rho)

    def f(w):
        inner = stats.norm.cdf((c - np.sqrt(rho) * w) / s) - stats.norm.cdf((-c - np.sqrt(rho) * w) / s)
        return stats.norm.pdf(w) * inner ** m

    return integrate.quad(f, -12, 12, epsabs=1e-12)[0]


@pytest.mark.parametrize("rho,m,method,tol", [
    (0.5, 3, "cdf", 1e-5), (0.8, 5, "cdf", 1e-5), (0.5, 12, "simulate", 1e-3),
])
def test_maxt_critical_value_equicorrelated_closed_form(rho, m, method, tol):
    # the exact probability (a 1-D integral, written here independently) at the kernel's c
    # must be 1 - alpha. Tolerances are the error sources: "cdf", Genz's absolute error
    # 1e-5 (the root is solved to xtol 1e-7 in c, 1e-8 in probability; observed 7e-7 and
    # 9e-7); "simulate", the 0.95 quantile of 200,000 draws, whose probability has MC SE
    # sqrt(.95 .05 / 200000) = 4.9e-4: 1e-3 is about 2 SE (observed -9.0e-4 at seed 1).
    r = np.full((m, m), rho) + (1 - rho) * np.eye(m)
    cov = r * np.outer([1, 2, 3] * 4, [1, 2, 3] * 4)[:m, :m]   # scale must not matter
    res = maxt_critical_value(cov, 0.05, method=method, seed=1)
    assert res.method == method
    assert abs(_equicorrelated_prob(res.critical_value, rho, m) - 0.95) < tol
    bonferroni = stats.norm.isf(0.05 / (2 * m))
    assert stats.norm.isf(0.025) < res.critical_value < bonferroni


def test_maxt_independent_is_sidak_and_singular_ok():
    c = maxt_critical_value(np.eye(4), 0.05).critical_value
    assert c == pytest.approx(stats.norm.isf((1 - 0.95 ** 0.25) / 2), rel=1e-12)
    # perfectly correlated: one test
    c1 = maxt_critical_value(np.ones((3, 3)), 0.05).critical_value
    # Genz's 1e-5 in probability is 1e-5 / (2 phi(1.96)) ~ 1e-4 in c
    assert c1 == pytest.approx(stats.norm.isf(0.025), abs=1e-4)


def test_maxt_adjusted_pvalues_closed_form():
    rho, m = 0.6, 4
    r = np.full((m, m), rho) + (1 - rho) * np.eye(m)
    t = np.array([2.7, -1.0, 0.2, 2.2])
    ours = maxt_adjusted_pvalues(t, r)
    ref = [1 - _equicorrelated_prob(abs(x), rho, m) for x in t]
    np.testing.assert_allclose(ours, ref, atol=1e-5)   # Genz's absolute error (observed <= 4.7e-6)
    # t at the critical value has adjusted p = alpha: the same deterministic integrand at the
    # root, solved to xtol 1e-7 in c (1e-8 in probability)
    c = maxt_critical_value(r, 0.05).critical_value
    assert maxt_adjusted_pvalues([c, 0, 0, 0], r)[0] == pytest.approx(0.05, abs=1e-6)


def test_maxt_requires_valid_cov():
    with pytest.raises(ValidationError, match="cov"):
        maxt_critical_value(np.array([[1.0, 0.5]]))
    with pytest.raises(ValidationError, match="cov"):
        maxt_critical_value(np.array([[0.0, 0.0], [0.0, 1.0]]))


@pytest.mark.slow
def test_maxt_simultaneous_coverage_correlated_metrics():
    """Simulation: 3 correlated metrics x 2 treatment arms (6 effects sharing one control),
    differences in means with the estimated joint covariance; the max-t intervals must cover
    all 6 true effects jointly in 0.95 +- 2.5 MC SE of 1,500 replications (SE =
    sqrt(.95 .05 / 1500) = 0.56 pp: [0.936, 0.964]; observed 0.945)."""
    rng = np.random.default_rng(20240601)
    n_per, reps = 150, 1500
    corr = np.array([[1.0, 0.7, 0.4], [0.7, 1.0, 0.5], [0.4, 0.5, 1.0]])
    sd = np.array([1.0, 3.0, 0.5])
    cov_y = corr * np.outer(sd, sd)
    chol = np.linalg.cholesky(cov_y)
    truth = np.array([[0.2, 0.0, 0.1], [0.0, -0.5, 0.05]])   # arm x metric
    covered = covered_bonf = 0
    crit = []
    for _ in range(reps):
        groups = [rng.standard_normal((n_per, 3)) @ chol.T for _ in range(3)]
        groups[1] += truth[0]
        groups[2] += truth[1]
        means = [g.mean(0) for g in groups]
        s = [np.cov(g, rowvar=False) / n_per for g in groups]
        est = np.concatenate([means[1] - means[0], means[2] - means[0]])
        v = np.block([[s[1] + s[0], s[0]], [s[0], s[2] + s[0]]])
        se = np.sqrt(np.diag(v))
        c = maxt_critical_value(v, 0.05, seed=rng, n_draws=20_000).critical_value
        crit.append(c)
        dev = np.abs(est - truth.ravel()) / se
        covered += bool(np.all(dev <= c))
        covered_bonf += bool(np.all(dev <= stats.norm.isf(0.05 / 12)))
    coverage = covered / reps
    assert abs(coverage - 0.95) <= 2.5 * np.sqrt(0.95 * 0.05 / reps), coverage
    # tighter than Bonferroni when correlated, so Bonferroni over-covers more
    assert np.mean(crit) < stats.norm.isf(0.05 / 12)
    assert covered_bonf / reps >= coverage
