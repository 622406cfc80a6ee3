"""The 'tmle' final stage: the score equations it must solve, the bound it must keep, the
closed form of a constant fluctuation, double robustness in a fixed-seed simulation, and
the runner wiring."""

from __future__ import annotations

import numpy as np
import pytest
from oci_sims import run_final_stages
from scipy.special import expit, logit

from causalflow.errors import ValidationError
from causalflow.oci.sample_estimands import ate_hajek, att_sample
from causalflow.oci.targeting import fluctuate, target


def _data(rng, n):
    x = rng.normal(size=n)
    e = 1 / (1 + np.exp(-(0.2 + 0.8 * x)))
    t = (rng.random(n) < e).astype(float)
    mu0 = 1 + x + 0.5 * x**2
    mu1 = mu0 + 1 + x
    y = np.where(t == 1, mu1, mu0) + rng.normal(size=n)
    return x, e, t, mu0, mu1, y


def test_fluctuation_closed_form():
    # a constant offset p: the solution is expit(eps) shifting p to the weighted mean of y
    rng = np.random.default_rng(1)
    y01, w = rng.random(50), rng.random(50) + 0.1
    eps = fluctuate(y01, np.full(50, 0.3), w)
    # Brent's method to xtol 1e-14 on the logit scale: 1e-12 on the probability scale
    assert expit(logit(0.3) + eps) == pytest.approx(float(w @ y01 / w.sum()), abs=1e-12)


def test_fluctuation_without_finite_root_is_capped():
    # every outcome at the bottom of the range: the score is negative for every eps
    eps = fluctuate(np.zeros(5), np.full(5, 0.5), np.ones(5))
    assert eps == -64.0


@pytest.mark.parametrize("estimand", ["ATE", "ATT"])
def test_score_equations_and_range(estimand):
    rng = np.random.default_rng(7)
    _, e, t, mu0, mu1, y = _data(rng, 2000)
    m0 = mu0 + 0.8 * rng.normal(size=2000)  # imperfect outcome models
    m1 = mu1 - 0.5
    args = [a.copy() for a in (y, t, e, m0, m1)]
    m0_t, m1_t = target(estimand, y, t, e, m0, m1)
    for a, b in zip(args, (y, t, e, m0, m1)):
        np.testing.assert_array_equal(a, b)  # inputs untouched
    h0 = e / (1 - e) if estimand == "ATT" else 1 / (1 - e)
    scale = y.max() - y.min()
    # score equations of the fluctuation, solved to Brent's xtol on the logit scale
    assert abs(float(h0[t == 0] @ (y - m0_t)[t == 0])) / h0[t == 0].sum() < 1e-10 * scale
    if estimand == "ATE":
        h1 = 1 / e
        assert abs(float(h1[t == 1] @ (y - m1_t)[t == 1])) / h1[t == 1].sum() < 1e-10 * scale
        # so the Hajek AIPW is the plug-in mean(m1 - m0)
        assert ate_hajek(y, t, e, m0_t, m1_t).estimate == pytest.approx(np.mean(m1_t - m0_t), abs=1e-9)
    else:
        np.testing.assert_array_equal(m1_t, m1)  # the ATT plug-in does not use m1
        assert att_sample(y, t, e, m0_t).estimate == pytest.approx(np.mean((y - m0_t)[t == 1]), abs=1e-9)
    for m in (m0_t, m1_t):
        assert y.min() <= m.min() and m.max() <= y.max()


def test_double_robustness_simulation():
    # outcome models wrong (zero), propensity right: the targeted plug-in recovers the ATE
    # and the ATT; 200 replications, the mean error must be within 2.5 Monte Carlo SE of 0
    # (SE = sd / sqrt(200), about 0.009; observed 2.0 and 1.9 SE)
    rng = np.random.default_rng(20261126)
    errs = {"ATE": [], "ATT": []}
    for _ in range(200):
        _, e, t, mu0, mu1, y = _data(rng, 1500)
        zero = np.zeros_like(y)
        for estimand in errs:
            m0_t, m1_t = target(estimand, y, t, e, zero, zero)
            if estimand == "ATE":
                errs[estimand].append(np.mean(m1_t - m0_t) - np.mean(mu1 - mu0))
            else:
                errs[estimand].append(np.mean((y - m0_t)[t == 1]) - np.mean((mu1 - mu0)[t == 1]))
    for estimand, v in errs.items():
        v = np.asarray(v)
        assert abs(v.mean()) <= 2.5 * v.std(ddof=1) / np.sqrt(len(v)), estimand


def test_rejects_ato():
    with pytest.raises(ValidationError, match="estimand"):
        target("ATO", np.arange(4.0), np.array([0, 1, 0, 1.0]), np.full(4, 0.5), np.zeros(4), np.zeros(4))


def test_runner_tmle_stage():
    rng = np.random.default_rng(5)
    x, _, t, mu0, mu1, y = _data(rng, 800)
    runs = run_final_stages(x, t, y, ("tmle", "aipw_sample"))
    a, b = runs["tmle"], runs["aipw_sample"]
    assert a.estimate("ATE").final_stage == "tmle"
    for estimand, truth in (("ATE", np.mean(mu1 - mu0)), ("ATT", np.mean((mu1 - mu0)[t == 1]))):
        r = a.estimate(estimand)
        assert abs(r.estimate - truth) < 4 * r.std_error
        # same nuisances; targeting moves the estimate by much less than its standard error
        assert abs(r.estimate - b.estimate(estimand).estimate) < 0.5 * r.std_error
    assert a.estimate("ATO").estimate == b.estimate("ATO").estimate  # ATO not targeted
