"""TunedBoosting (research, ``benchmarks/acic/tuned_boosting.py``; it needs only LightGBM, so
its tests stay here): the number of rounds is the early-stopping point of the full inner
cross-validation curve, and the fit is the plain LightGBM fit with that many rounds. And
the package's :class:`Boosting` against LightGBM's scikit-learn wrapper."""

from __future__ import annotations

import doctest

import lightgbm as lgb
import numpy as np
import pytest

from benchmarks.acic import tuned_boosting
from benchmarks.acic.tuned_boosting import TunedBoosting, tuned_gbm_classifier
from causalflow.oci.gbm_learners import FitCache

# Boosting's model written out here, not read from the code (its ``_params()``): the
# scikit-learn wrapper's names, and LightGBM's own names for lgb.cv
SKLEARN = dict(learning_rate=0.08, num_leaves=15, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
               min_child_samples=20, n_jobs=1, deterministic=True, force_row_wise=True, verbose=-1)


def _native(kind: str, seed: int) -> dict:
    return dict(objective="binary" if kind == "classifier" else "regression", learning_rate=0.08, num_leaves=15,
                bagging_fraction=0.8, bagging_freq=1, feature_fraction=0.8, min_child_samples=20,
                num_threads=1, deterministic=True, force_row_wise=True, verbose=-1, seed=seed)


def _stopping_round(curve, patience):
    # the first best round after which `patience` rounds bring no strict improvement
    best, best_k = np.inf, 0
    for k, v in enumerate(curve):
        if v < best:
            best, best_k = v, k
        elif k - best_k >= patience:
            break
    return best_k + 1


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_rounds_are_the_stopping_point_of_the_cv_curve(kind):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(600, 4))
    if kind == "classifier":
        y = (rng.random(600) < 1 / (1 + np.exp(-X[:, 0] - X[:, 1] ** 2 / 2))).astype(float)
    else:
        y = X[:, 0] + np.sin(2 * X[:, 1]) + rng.normal(size=600)
    m = TunedBoosting(kind, seed=4, max_rounds=400, patience=20).fit(X, y)
    # the whole curve without early stopping, from the same folds (same seed)
    full = lgb.cv(_native(kind, 4), lgb.Dataset(X, y, free_raw_data=False), num_boost_round=400, nfold=3,
                  stratified=kind == "classifier", seed=4)
    curve = next(v for k, v in full.items() if k.endswith("-mean"))
    assert m.n_rounds_ == _stopping_round(curve, 20)
    assert m.n_rounds_ < 400  # a noisy target: boosting stops well before the cap
    # the final model is the plain fit with that many rounds (deterministic, one thread),
    # through LightGBM's scikit-learn wrapper
    from lightgbm import LGBMClassifier, LGBMRegressor

    if kind == "classifier":
        ref = LGBMClassifier(n_estimators=m.n_rounds_, random_state=4, **SKLEARN).fit(X, y).predict_proba(X)[:, 1]
    else:
        ref = LGBMRegressor(n_estimators=m.n_rounds_, random_state=4, **SKLEARN).fit(X, y).predict(X)
    np.testing.assert_array_equal(m.predict(X), ref)


def test_classifier_probabilities_and_cache():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 2))
    t = (rng.random(300) < 1 / (1 + np.exp(-X[:, 0]))).astype(int)
    cache = FitCache()
    a = tuned_gbm_classifier(1, cache).fit(X, t)
    b = tuned_gbm_classifier(1, cache).fit(X, t)
    assert a.estimator_ is b.estimator_  # identical fit served from the cache
    p = a.predict_proba(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    # tuned propensities are less extreme than the fixed 200-round fit on this weak signal
    from lightgbm import LGBMClassifier

    fixed = LGBMClassifier(n_estimators=200, random_state=1, **SKLEARN).fit(X, t).predict_proba(X)[:, 1]
    assert np.std(np.log(p[:, 1] / p[:, 0])) < np.std(np.log(fixed / (1 - fixed)))


@pytest.mark.parametrize("kind,linear_tree", [("classifier", False), ("regressor", True), ("regressor", False)])
def test_boosting_matches_the_scikit_learn_wrapper_bit_for_bit(kind, linear_tree):
    # the same LightGBM model through its scikit-learn wrapper (independent parameter names)
    from lightgbm import LGBMClassifier, LGBMRegressor

    from causalflow.oci.gbm_learners import Boosting

    rng = np.random.default_rng(8)
    X = rng.normal(size=(500, 5))
    y = X[:, 0] + np.abs(X[:, 1]) + rng.normal(size=500)
    common = dict(n_estimators=60, random_state=4, **SKLEARN)
    if kind == "classifier":
        t = (y > np.median(y)).astype(int)
        ref = LGBMClassifier(**common).fit(X, t).predict_proba(X)
        got = Boosting("classifier", 60, seed=4).fit(X, t).predict_proba(X)
    else:
        ref = LGBMRegressor(linear_tree=linear_tree, **common).fit(X, y).predict(X)
        got = Boosting("regressor", 60, linear_tree=linear_tree, seed=4).fit(X, y).predict(X)
    np.testing.assert_array_equal(got, ref)


def test_tuned_boosting_docstring_examples():
    failures, tried = doctest.testmod(tuned_boosting, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0 and tried > 0


def test_research_learners_of_tuned_boosting_are_registered_on_import():
    from benchmarks.acic import research_learners as research  # imports stochtree only when BART fits
    from causalflow.oci.learners import get_learner

    assert "gbm_x_tuned" in research.RESEARCH_LEARNERS
    assert get_learner("gbm_x_tuned").classifier is tuned_gbm_classifier
    assert get_learner("gbm_x_tuned_ps").classifier is tuned_gbm_classifier
