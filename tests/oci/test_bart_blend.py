"""A posterior-mean outcome learner (BART in the ACIC research) averaged with the cross-fitted
model; the X-learner recombination, its extrapolation check and the bracket.

The BART regressor itself (stochtree) is research code: its tests are in
``benchmarks/acic/test_bart_learners.py``.

References are computed here independently of the code under test: a least-squares fit
per fold and arm with numpy for the cross-fitted part, a least-squares fit on all of an
arm's rows for the posterior part, the equal-weight average of the two, and the propensity
by a per-fold scikit-learn logistic regression (``oci_sims.oof_propensity``).
"""

import numpy as np
import pytest
from oci_sims import good_overlap, oof_propensity
from sklearn.linear_model import LinearRegression, LogisticRegression

from causalflow.errors import ValidationError
from causalflow.oci import Plan, Spec, prepare_data, run_spec
from causalflow.oci.estimators import cross_fit, make_folds
from causalflow.oci.learners import register_learner


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    e = 1 / (1 + np.exp(-(X[:, 0] - 0.5 * X[:, 1])))
    t = (rng.random(n) < e).astype(float)
    mu0 = X[:, 0] + np.sin(2 * X[:, 1])
    y = mu0 + t * (1 + X[:, 2]) + rng.normal(scale=0.5, size=n)
    return X, t, y, mu0


def _lstsq(X, y, Xnew):
    A = np.column_stack([np.ones(len(X)), X])
    beta = np.linalg.lstsq(A, y, rcond=None)[0]
    return np.column_stack([np.ones(len(Xnew)), Xnew]) @ beta


def test_posterior_member_is_fitted_on_all_arm_rows_and_averaged():
    X, t, y, _ = _data()
    folds = make_folds(t, 4, 0)
    clf = lambda s: LogisticRegression(random_state=s)  # noqa: E731
    base = cross_fit(X, t, {"y": y}, folds, clf, lambda s: LinearRegression(), 0)
    blend = cross_fit(X, t, {"y": y}, folds, clf, lambda s: LinearRegression(), 0,
                      posterior_factory=lambda s: LinearRegression())
    np.testing.assert_array_equal(blend.e, base.e)       # the propensity is untouched
    for arm, m_base, m_blend in ((1.0, base.m1["y"], blend.m1["y"]), (0.0, base.m0["y"], blend.m0["y"])):
        # cross-fitted reference: per fold, least squares on the other folds' rows of the arm
        ref_cf = np.empty(len(y))
        for k in range(4):
            test = folds == k
            rows = (~test) & (t == arm)
            ref_cf[test] = _lstsq(X[rows], y[rows], X[test])
        # 1e-8: two least-squares solvers (sklearn vs numpy lstsq) on well-conditioned data
        np.testing.assert_allclose(m_base, ref_cf, rtol=1e-8, atol=1e-10)
        full = _lstsq(X[t == arm], y[t == arm], X)
        np.testing.assert_allclose(m_blend, (ref_cf + full) / 2, rtol=1e-8, atol=1e-10)


def test_registry_and_runner_route_the_posterior_member():
    # (the research learner "gbm_bart" is checked in benchmarks/acic/test_bart_learners.py)
    with pytest.raises(ValidationError, match="posterior_regressor"):
        register_learner("bad_post", lambda s: None, lambda s: None, posterior_regressor=3, replace=True)
    # a learner whose posterior member is least squares: the runner's ATE equals the AIPW
    # formula written here on the averaged least-squares predictions
    register_learner("lin_blend_test", lambda s: LogisticRegression(random_state=s),
                     lambda s: LinearRegression(), posterior_regressor=lambda s: LinearRegression(),
                     replace=True)
    df, _ = good_overlap(n=600, seed=2)
    covs = ("x1", "x2", "x3")
    data = prepare_data(Plan(data=df, treatment="t", outcome="y", confounders=list(covs)))
    spec = Spec(estimands=("ATE",), covariates=covs, priorities=tuple((c, "high") for c in covs),
                propensity_learner="lin_blend_test", outcome_learner="lin_blend_test", n_folds=3)
    res = run_spec(data, spec)
    X, t, y = df[list(covs)].to_numpy(float), df["t"].to_numpy(float), df["y"].to_numpy(float)
    folds = make_folds(t, 3, spec.seed)
    m = {}
    for arm in (0.0, 1.0):
        cf = np.empty(len(y))
        for k in range(3):
            test = folds == k
            rows = (~test) & (t == arm)
            cf[test] = _lstsq(X[rows], y[rows], X[test])
        m[arm] = (cf + _lstsq(X[t == arm], y[t == arm], X)) / 2
    e = oof_propensity(X, t, folds, spec.seed, spec.propensity_clip)
    np.testing.assert_allclose(res.propensity, e, rtol=1e-10)   # same solver, same rows
    psi = m[1.0] - m[0.0] + t * (y - m[1.0]) / e - (1 - t) * (y - m[0.0]) / (1 - e)
    # 1e-8: the same formula on predictions from two least-squares solvers
    np.testing.assert_allclose(res.estimate("ATE").estimate, psi.mean(), rtol=1e-8)
    np.testing.assert_allclose(res.estimate("ATE").std_error, psi.std() / np.sqrt(len(y)), rtol=1e-8)


def test_cached_fit_memoises_predictions_without_sharing_them():
    from causalflow.oci.gbm_learners import CachedFit, FitCache

    class Counting(LinearRegression):
        calls = 0

        def predict(self, X):
            Counting.calls += 1
            return super().predict(X)

    X, t, y, _ = _data(n=100)
    model = CachedFit(Counting(), FitCache()).fit(X, y)
    a = model.predict(X)
    a[:] = 0.0                                   # the caller's copy, not the cache's
    b = model.predict(X)
    np.testing.assert_allclose(b, _lstsq(X, y, X), rtol=1e-8)   # 1e-8: two least-squares solvers
    assert Counting.calls == 1                   # the same rows are predicted once
    c = model.predict(X[:10] + 1.0)
    assert Counting.calls == 2 and c.shape == (10,)


def _ref_x_learner(X, t, y, folds, e, m0, m1):
    """The X-learner recombination written out with per-fold least squares for tau0 / tau1."""
    tau1, tau0 = np.empty(len(y)), np.empty(len(y))
    for k in np.unique(folds):
        test = folds == k
        rows1, rows0 = (~test) & (t == 1), (~test) & (t == 0)
        tau1[test] = _lstsq(X[rows1], (y - m0)[rows1], X[test])
        tau0[test] = _lstsq(X[rows0], (m1 - y)[rows0], X[test])
    return (1 - e) * m0 + e * (m1 - tau0), e * m1 + (1 - e) * (m0 + tau1)


def _ref_arms(X, t, y, folds, arm):
    """Each arm's own cross-fitted least-squares prediction, per fold."""
    out = np.empty(len(y))
    for k in np.unique(folds):
        test = folds == k
        rows = (~test) & (t == arm)
        out[test] = _lstsq(X[rows], y[rows], X[test])
    return out


def test_x_learner_recombination_matches_the_formula():
    X, t, y, _ = _data()
    folds = make_folds(t, 3, 0)
    clf = lambda s: LogisticRegression(random_state=s)  # noqa: E731
    plain = cross_fit(X, t, {"y": y}, folds, clf, lambda s: LinearRegression(), 0)
    xfit = cross_fit(X, t, {"y": y}, folds, clf, lambda s: LinearRegression(), 0,
                     effect_factory=lambda s: LinearRegression())
    assert plain.m0_arms is None
    e = oof_propensity(X, t, folds, 0)
    np.testing.assert_allclose(plain.e, e, rtol=1e-10)
    np.testing.assert_array_equal(xfit.m0_arms["y"], plain.m0["y"])   # the arms' own regressions kept
    np.testing.assert_array_equal(xfit.m1_arms["y"], plain.m1["y"])
    m0x, m1x = _ref_x_learner(X, t, y, folds, e, _ref_arms(X, t, y, folds, 0.0), _ref_arms(X, t, y, folds, 1.0))
    # 1e-8: least squares by two solvers
    np.testing.assert_allclose(xfit.m0["y"], m0x, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(xfit.m1["y"], m1x, rtol=1e-8, atol=1e-10)
    assert not np.allclose(xfit.m1["y"], plain.m1["y"])


def test_extrapolation_check_and_the_critics_proposal():
    from causalflow.oci.critic import RuleCritic
    from causalflow.oci.diagnostics import Thresholds

    register_learner("lin_x_test", lambda s: LogisticRegression(random_state=s),
                     lambda s: LinearRegression(), effect_regressor=lambda s: LinearRegression(),
                     replace=True)
    df, _ = good_overlap(n=600, seed=3)
    covs = ("x1", "x2", "x3")
    plan = Plan(data=df, treatment="t", outcome="y", confounders=list(covs))
    data = prepare_data(plan)
    spec = Spec(estimands=("ATE", "ATT"), covariates=covs, priorities=tuple((c, "high") for c in covs),
                propensity_learner="lin_x_test", outcome_learner="lin_x_test", n_folds=3)
    res = run_spec(data, spec)
    X, t, y = df[list(covs)].to_numpy(float), df["t"].to_numpy(float), df["y"].to_numpy(float)
    folds = make_folds(t, 3, spec.seed)
    own = {arm: np.empty(len(y)) for arm in (0.0, 1.0)}
    for arm in (0.0, 1.0):
        for k in range(3):
            test = folds == k
            rows = (~test) & (t == arm)
            own[arm][test] = _lstsq(X[rows], y[rows], X[test])
    # clipped; the recombination weights use the unclipped e, which equals it here (no unit
    # near the clip)
    e = oof_propensity(X, t, folds, spec.seed, spec.propensity_clip)
    np.testing.assert_allclose(res.propensity, e, rtol=1e-10)
    assert e.min() > 0.05 and e.max() < 0.95
    m0x, m1x = _ref_x_learner(X, t, y, folds, e, own[0.0], own[1.0])
    for estimand in ("ATE", "ATT"):
        if estimand == "ATE":
            psi_x = m1x - m0x + t * (y - m1x) / e - (1 - t) * (y - m0x) / (1 - e)
            psi_o = own[1.0] - own[0.0] + t * (y - own[1.0]) / e - (1 - t) * (y - own[0.0]) / (1 - e)
            tau_x, se_x, tau_o = psi_x.mean(), psi_x.std() / np.sqrt(len(y)), psi_o.mean()
        else:
            p = t.mean()
            a_x = t * (y - m0x) - (1 - t) * e / (1 - e) * (y - m0x)
            a_o = t * (y - own[0.0]) - (1 - t) * e / (1 - e) * (y - own[0.0])
            tau_x, tau_o = a_x.mean() / p, a_o.mean() / p
            se_x = ((a_x - t * tau_x) / p).std() / np.sqrt(len(y))
        check = next(c for c in res.diagnostics[("ATE", "ATT").index(estimand)].checks if c.name == "extrapolation")
        # 1e-6: the ratio of differences of nearly equal AIPW estimates from two solvers
        if estimand == "ATE":
            se_o = psi_o.std() / np.sqrt(len(y))
        else:
            se_o = ((a_o - t * tau_o) / p).std() / np.sqrt(len(y))
        r = res.estimate(estimand)
        # the bracket: midpoint, and the hull of the two normal intervals (1e-8: two solvers)
        np.testing.assert_allclose(r.estimate, (tau_x + tau_o) / 2, rtol=1e-8)
        q = 1.959963984540054
        np.testing.assert_allclose([r.ci_lower, r.ci_upper],
                                   [min(tau_x - q * se_x, tau_o - q * se_o), max(tau_x + q * se_x, tau_o + q * se_o)],
                                   rtol=1e-8)
        np.testing.assert_allclose(check.value, abs(tau_x - tau_o) / se_x, rtol=1e-6, atol=1e-9)
    # a threshold the value exceeds makes the check fail and the Critic propose ATO + trimming
    value = max(c.value for d in res.diagnostics for c in d.checks if c.name == "extrapolation")
    strict = Thresholds(dependence_warn=value / 4, dependence_fail=value / 2)
    critique = RuleCritic(strict).review(plan, run_spec(data, spec, strict))
    assert "not_satisfactory" in {v.verdict for v in critique.verdicts}
    changes = [p.change for p in critique.proposals]
    assert {"add_estimands": ["ATO"]} in changes and {"trimming": "crump"} in changes
    with pytest.raises(ValidationError, match="Thresholds"):
        Thresholds(dependence_warn=2.0, dependence_fail=1.0)



def test_bracket_interval_and_p_value():
    from causalflow.oci.estimators import EstimateKernel, bracket

    z = np.zeros(5)
    a, b = EstimateKernel(1.0, 0.2, z, 2.0, 1.0, 5), EstimateKernel(2.0, 0.5, z, 3.0, 1.0, 5)
    k = bracket(a, b)
    q90 = 1.6448536269514722
    assert k.estimate == 1.5 and k.components == (a, b)
    np.testing.assert_allclose(k.interval(0.90), (1.0 - q90 * 0.2, 2.0 + q90 * 0.5), rtol=1e-12)
    np.testing.assert_allclose(k.std_error, (2.0 + 1.959963984540054 * 0.5 - (1.0 - 1.959963984540054 * 0.2))
                               / (2 * 1.959963984540054), rtol=1e-12)
    assert k.p_value == max(a.p_value, b.p_value)        # same sign: both must exclude 0
    c = EstimateKernel(-1.0, 0.2, z, 0.0, 1.0, 5)
    assert bracket(a, c).p_value == 1.0                  # opposite signs: the hull always holds 0
    with pytest.raises(ValueError, match="bracket"):
        bracket(a, EstimateKernel(1.0, 0.2, np.zeros(3), 2.0, 1.0, 3))
