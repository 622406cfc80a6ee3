"""The discrete super learner for the X-learner's effect models (``select_out_of_fold``).

References are computed here with numpy least squares and plain means, independently of
``arm_out_of_fold``: per fold, a fit on the arm's rows outside the fold predicts the fold.
"""

import numpy as np
import pytest
from oci_sims import oof_propensity
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from causalflow.errors import ValidationError
from causalflow.oci.estimators import (
    cross_fit,
    make_folds,
    select_out_of_fold,
)
from causalflow.oci.learners import get_learner, register_learner

MEAN = lambda s: DummyRegressor()
OLS = lambda s: LinearRegression()


def _oof_ref(X, y, arm, folds, kind):
    out = np.empty(len(y))
    for k in np.unique(folds):
        train, test = (folds != k) & arm, folds == k
        if kind == "mean":
            out[test] = y[train].mean()
        else:
            A = np.column_stack([np.ones(train.sum()), X[train]])
            beta = np.linalg.lstsq(A, y[train], rcond=None)[0]
            out[test] = np.column_stack([np.ones(test.sum()), X[test]]) @ beta
    return out


def _data(n=300, seed=0, slope=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    t = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    y = X[:, 0] + t * (1 + slope * X[:, 1]) + rng.normal(scale=0.5, size=n)
    return X, t, y


def test_risks_are_the_out_of_fold_squared_errors_on_the_arm_only():
    X, t, y = _data()
    arm = t == 1
    folds = make_folds(t, 4, 0)
    pred, chosen, risks = select_out_of_fold(X, y, arm, folds, [MEAN, OLS], 0)
    refs = [_oof_ref(X, y, arm, folds, kind) for kind in ("mean", "ols")]
    # 1e-10: least squares by two solvers; the means are exact up to rounding
    np.testing.assert_allclose(risks, [np.mean((r[arm] - y[arm]) ** 2) for r in refs], rtol=1e-10)
    assert chosen == int(np.argmin(risks)) == 1          # y depends on X: the linear model wins
    np.testing.assert_allclose(pred, refs[1], rtol=1e-10, atol=1e-12)


def test_the_arm_decides_not_the_other_rows():
    # linear on the arm, pure noise around a constant elsewhere: only the arm's rows may count
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 1))
    arm = np.arange(200) < 100
    y = np.where(arm, 3 * X[:, 0], 50 * rng.normal(size=200))
    folds = np.arange(200) % 5
    assert select_out_of_fold(X, y, arm, folds, [MEAN, OLS], 0)[1] == 1
    assert select_out_of_fold(X, y, ~arm, folds, [OLS, MEAN], 0)[1] == 1  # noise: the mean has the lower risk


@pytest.mark.parametrize("slope", [0.0, 2.0])
def test_cross_fit_uses_each_arms_chosen_effect_model(slope):
    X, t, y = _data(slope=slope, seed=2)
    folds = make_folds(t, 3, 0)
    clf = lambda s: LogisticRegression(random_state=s)
    fit = cross_fit(X, t, {"y": y}, folds, clf, OLS, 0, effect_factory=(MEAN, OLS))
    tr = t == 1
    # the arms' own regressions and the propensity, fitted here
    m0, m1 = _oof_ref(X, y, ~tr, folds, "ols"), _oof_ref(X, y, tr, folds, "ols")
    np.testing.assert_allclose(fit.m0_arms["y"], m0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.m1_arms["y"], m1, rtol=1e-10, atol=1e-12)
    taus = []
    for D, arm in ((y - m0, tr), (m1 - y, ~tr)):
        refs = [_oof_ref(X, D, arm, folds, kind) for kind in ("mean", "ols")]
        risks = [np.mean((r[arm] - D[arm]) ** 2) for r in refs]
        taus.append(refs[int(np.argmin(risks))])
    e = oof_propensity(X, t, folds, 0)
    np.testing.assert_allclose(fit.e, e, rtol=1e-10)
    tau1, tau0 = taus
    # the X-learner recombination written out (Kunzel et al. 2019)
    m0x, m1x = (1 - e) * m0 + e * (m1 - tau0), e * m1 + (1 - e) * (m0 + tau1)
    np.testing.assert_allclose(fit.m0["y"], m0x, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(fit.m1["y"], m1x, rtol=1e-9, atol=1e-10)
    single = cross_fit(X, t, {"y": y}, folds, clf, OLS, 0, effect_factory=(OLS,))
    plain = cross_fit(X, t, {"y": y}, folds, clf, OLS, 0, effect_factory=OLS)
    np.testing.assert_array_equal(single.m1["y"], plain.m1["y"])   # one candidate = the callable


def test_registry_checks_and_the_select_learner():
    entry = get_learner("gbm_x_select")
    assert isinstance(entry.effect_regressor, tuple) and len(entry.effect_regressor) == 2
    assert register_learner("test_sel", lambda s: None, OLS, effect_regressor=[MEAN, OLS],
                            replace=True).effect_regressor == (MEAN, OLS)
    for bad in ((), (MEAN, 3), "ols"):
        with pytest.raises(ValidationError, match="effect_regressor"):
            register_learner("test_sel_bad", lambda s: None, OLS, effect_regressor=bad, replace=True)


def test_the_fit_cache_reserves_room_for_every_candidate(monkeypatch):
    from causalflow.oci import gbm_learners
    from causalflow.oci.runner import _reserve_fit_cache
    from causalflow.oci.spec import Spec

    monkeypatch.setattr(gbm_learners, "FIT_CACHE", gbm_learners.FitCache(maxsize=1))
    spec = Spec(estimands=("ATT",), covariates=("x1",), priorities=(("x1", "high"),), n_folds=5, n_repeats=2,
                propensity_learner="gbm_x_select", outcome_learner="gbm_x_select")
    _reserve_fit_cache(spec, 1, get_learner("gbm_x_select"))
    # per split: 5 propensity fits; per arm 5 outcome fits and 5 fits of each of the 2 effect candidates
    assert gbm_learners.FIT_CACHE.maxsize == 2 * (5 + 2 * 5 * 3)
