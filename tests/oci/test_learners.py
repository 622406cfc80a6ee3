"""Conformance of every registered learner, and a user-registered one through the runner."""

import numpy as np
import pytest
from oci_sims import good_overlap
from sklearn.linear_model import Lasso, LogisticRegression
from threadpoolctl import threadpool_limits

from causalflow.errors import ValidationError
from causalflow.oci import Plan, Spec, prepare_data, run_spec
from causalflow.oci.learners import get_learner, learner_names, register_learner


@pytest.mark.parametrize("name", learner_names())
def test_every_learner_conforms(name):
    with threadpool_limits(limits=1):  # as inside run_spec; OpenMP learners crawl when oversubscribed
        _conforms(name)


def _conforms(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    t = (rng.random(300) < 1 / (1 + np.exp(-X[:, 0]))).astype(int)
    y = X @ [1.0, 0.5, 0.0] + rng.normal(size=300)
    entry = get_learner(name)
    p1 = entry.classifier(3).fit(X, t).predict_proba(X)
    p2 = entry.classifier(3).fit(X, t).predict_proba(X)
    assert p1.shape == (300, 2) and np.all((p1 > 0) & (p1 < 1))
    np.testing.assert_array_equal(p1, p2)  # same seed, same fit
    r1 = entry.regressor(3).fit(X, y).predict(X)
    np.testing.assert_array_equal(r1, entry.regressor(3).fit(X, y).predict(X))
    assert r1.shape == (300,) and np.corrcoef(r1, y)[0, 1] > 0.5


def test_registered_learner_runs_and_bad_names_fail():
    register_learner("test_lasso", lambda s: LogisticRegression(random_state=s),
                     lambda s: Lasso(alpha=0.01), replace=True)
    df, truth = good_overlap(n=400)
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["x1", "x2", "x3"])
    spec = Spec(estimands=("ATE",), covariates=("x1", "x2", "x3"),
                priorities=tuple((c, "high") for c in ("x1", "x2", "x3")), n_folds=2,
                propensity_learner="test_lasso", outcome_learner="test_lasso")
    r = run_spec(prepare_data(plan), spec).estimates[0]
    assert abs(r.estimate - truth["ATE"]) < 3 * r.std_error
    with pytest.raises(ValidationError, match="already registered"):
        register_learner("test_lasso", lambda s: None, lambda s: None)
    with pytest.raises(ValidationError, match="unknown name 'nope'"):
        get_learner("nope")
