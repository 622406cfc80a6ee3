"""The propensity score as an outcome-model feature (outcome_features="covariates+propensity").

The option must change only the outcome models' input: the same folds, the same
out-of-fold propensity, and the outcome models of fold k see the covariates plus
logit(clip(e_oof, 1e-3, 1 - 1e-3)) of exactly the rows they are fitted on / predict.
The references (logit, row sets, a per-fold least-squares fit) are written here, not
taken from the code under test.
"""

import numpy as np
import pytest
from oci_sims import good_overlap, oof_propensity
from sklearn.linear_model import LinearRegression, LogisticRegression

from causalflow.errors import ValidationError
from causalflow.oci import Plan, Spec, prepare_data, run_spec
from causalflow.oci.estimators import cross_fit, make_folds
from causalflow.oci.learners import register_learner


class _Recorder(LinearRegression):
    """Least squares that remembers every matrix it was fitted on / predicted from."""

    log: list = []

    def fit(self, X, y):
        _Recorder.log.append(("fit", np.array(X, copy=True)))
        return super().fit(X, y)

    def predict(self, X):
        _Recorder.log.append(("predict", np.array(X, copy=True)))
        return super().predict(X)


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    e = 1 / (1 + np.exp(-(X[:, 0] + X[:, 1] ** 2 - 1)))
    t = (rng.random(n) < e).astype(float)
    y = X[:, 0] + np.sin(2 * X[:, 1]) + t + rng.normal(size=n)
    return X, t, y


def _logit_clip(e):
    e = np.minimum(np.maximum(e, 0.001), 0.999)
    return np.log(e) - np.log1p(-e)


def test_only_the_outcome_inputs_change():
    X, t, y = _data()
    folds = make_folds(t, 3, 0)
    clf = lambda s: LogisticRegression(random_state=s)  # noqa: E731
    _Recorder.log = []
    base = cross_fit(X, t, {"y": y}, folds, clf, lambda s: _Recorder(), 0)
    log_base = _Recorder.log
    _Recorder.log = []
    ps = cross_fit(X, t, {"y": y}, folds, clf, lambda s: _Recorder(), 0,
                   outcome_features="covariates+propensity")
    log_ps = _Recorder.log
    # the propensity and the folds are untouched (exact: same fits on the same rows)
    np.testing.assert_array_equal(ps.e, base.e)
    np.testing.assert_array_equal(ps.folds, base.folds)
    # default: outcome models see X only (3 columns); with the option X plus one column
    assert all(m.shape[1] == 3 for _, m in log_base)
    assert len(log_ps) == len(log_base) == 3 * 2 * 2  # folds x arms x (fit, predict)
    np.testing.assert_allclose(base.e, oof_propensity(X, t, folds, 0), rtol=1e-10)  # the tests' own fit
    z = _logit_clip(oof_propensity(X, t, folds, 0))
    # walk the calls in the documented order: fold k, arm 1 then arm 0, fit then predict
    i = 0
    for k in range(3):
        test = folds == k
        for arm in (1.0, 0.0):
            rows = (~test) & (t == arm)
            for kind, sel in (("fit", rows), ("predict", test)):
                name, M = log_ps[i]
                i += 1
                assert name == kind
                np.testing.assert_array_equal(M[:, :3], X[sel])
                # logit of the out-of-fold propensity of the same rows; 1e-12: log vs log1p
                np.testing.assert_allclose(M[:, 3], z[sel], rtol=0, atol=1e-12)
    # the outcome predictions are an independent per-fold least-squares fit on [1, X, z]
    for arm, pred in ((1.0, ps.m1["y"]), (0.0, ps.m0["y"])):
        for k in range(3):
            test = folds == k
            rows = (~test) & (t == arm)
            A = np.column_stack([np.ones(rows.sum()), X[rows], z[rows]])
            beta = np.linalg.lstsq(A, y[rows], rcond=None)[0]
            ref = np.column_stack([np.ones(test.sum()), X[test], z[test]]) @ beta
            # 1e-8: two least-squares solvers (LAPACK gelsd vs scipy lstsq) on a well-posed problem
            np.testing.assert_allclose(pred[test], ref, rtol=1e-8, atol=1e-8)
    assert not np.allclose(ps.m1["y"], base.m1["y"])  # the option does change the outcome fits


def test_runner_routes_the_learner_option():
    clf = lambda s: LogisticRegression(random_state=s)  # noqa: E731
    register_learner("test_rec", clf, lambda s: _Recorder(), replace=True)
    register_learner("test_rec_ps", clf, lambda s: _Recorder(), replace=True,
                     outcome_features="covariates+propensity")
    df, _ = good_overlap(n=400)
    covs = ("x1", "x2", "x3")
    plan = Plan(data=df, treatment="t", outcome="y", confounders=list(covs))
    data = prepare_data(plan)
    out = {}
    for name in ("test_rec", "test_rec_ps"):
        _Recorder.log = []
        spec = Spec(estimands=("ATE", "ATT"), covariates=covs, priorities=tuple((c, "high") for c in covs),
                    propensity_learner=name, outcome_learner=name, n_folds=2)
        out[name] = (run_spec(data, spec), [m.shape[1] for _, m in _Recorder.log])
    (r0, widths0), (r1, widths1) = out["test_rec"], out["test_rec_ps"]
    assert set(widths0) == {3} and set(widths1) == {4}
    np.testing.assert_array_equal(r0.propensity, r1.propensity)
    assert r0.estimate("ATE").estimate != r1.estimate("ATE").estimate


def test_bad_option_is_refused():
    X, t, y = _data(n=60)
    with pytest.raises(ValueError, match="outcome_features"):
        cross_fit(X, t, {"y": y}, make_folds(t, 2, 0), lambda s: LogisticRegression(),
                  lambda s: LinearRegression(), 0, outcome_features="propensity")
    with pytest.raises(ValidationError, match="outcome_features"):
        register_learner("test_bad_of", lambda s: LogisticRegression(), lambda s: LinearRegression(),
                         replace=True, outcome_features="pscore")
