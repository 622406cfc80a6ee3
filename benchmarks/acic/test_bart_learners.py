"""The BART regressor of the ACIC research (stochtree: ``pip install -e ".[bench]"``) and the
research learners registered from it. Run: ``python -m pytest benchmarks/acic``.

Moved from ``tests/oci/test_bart_blend.py`` when BART left the package; the posterior-blend
mechanism of ``cross_fit`` it plugs into is still tested there.
"""

import doctest

import numpy as np
import pytest

pytest.importorskip("stochtree")

from benchmarks.acic import bart_learners
from benchmarks.acic.bart_learners import BartRegressor, bart_regressor
from benchmarks.acic.research_learners import RESEARCH_LEARNERS
from causalflow.oci.learners import get_learner, learner_names


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


def test_bart_regressor_is_reproducible_and_fits_a_nonlinear_surface():
    X, t, y, mu0 = _data(n=600)
    c = t == 0
    a = BartRegressor(n_trees=100, n_burnin=40, n_draws=40, seed=3).fit(X[c], y[c]).predict(X)
    b = BartRegressor(n_trees=100, n_burnin=40, n_draws=40, seed=3).fit(X[c], y[c]).predict(X)
    np.testing.assert_array_equal(a, b)                  # one thread, fixed seed: the same draws
    other = BartRegressor(n_trees=100, n_burnin=40, n_draws=40, seed=4).fit(X[c], y[c]).predict(X)
    assert not np.array_equal(a, other)
    # it learns the sine: mean squared error to the true mu0 well below the linear fit's
    # (noise sd 0.5; a linear fit cannot follow sin(2 x); threshold half of the linear error)
    lin = _lstsq(X[c], y[c], X)
    assert np.mean((a - mu0) ** 2) < 0.5 * np.mean((lin - mu0) ** 2)


def test_bart_regressor_refuses_bad_shapes():
    with pytest.raises(ValueError, match="BartRegressor.fit"):
        BartRegressor().fit(np.zeros((3, 2)), np.zeros(4))


def test_cached_bart_fit_is_served_again():
    X, t, y, _ = _data(n=200)
    first = bart_regressor(0).fit(X, y)
    second = bart_regressor(0).fit(X, y)
    assert first.estimator_ is second.estimator_


def test_research_learners_are_registered_with_the_posterior_member():
    assert set(RESEARCH_LEARNERS) <= set(learner_names())
    entry = get_learner("gbm_bart")
    assert entry.posterior_regressor is not None and entry.flexible
    x_entry = get_learner("gbm_bart_x")
    assert x_entry.posterior_regressor is not None and len(x_entry.effect_candidates) == 1


def test_docstring_examples():
    failures, _ = doctest.testmod(bart_learners, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
