"""Repeated cross-fitting (Spec.n_repeats): the aggregate of the per-split estimates,
checked against separate one-split runs and the closed form of estimators.aggregate."""

from __future__ import annotations

import numpy as np
import pytest
from oci_sims import good_overlap

from causalflow.errors import ValidationError
from causalflow.oci import Plan, Spec, prepare_data, run_spec
from causalflow.oci.estimators import EstimateKernel, aggregate, bracket


def _k(est, se, n=3):
    return EstimateKernel(est, se, np.zeros(n), est + 1, 1.0, n)


def test_aggregate_closed_form_and_brackets():
    ks = [_k(1.0, 0.2), _k(1.3, 0.1), _k(0.8, 0.3)]
    k = aggregate(ks)
    theta = np.array([1.0, 1.3, 0.8])
    assert k.estimate == pytest.approx(theta.mean(), rel=1e-15)
    # mean of se^2 + squared deviations (Chernozhukov et al. 2018, section 3.4)
    v = np.mean(np.array([0.04, 0.01, 0.09]) + (theta - theta.mean()) ** 2)
    assert k.std_error == pytest.approx(np.sqrt(v), rel=1e-14)
    assert aggregate([ks[0]]) is ks[0]
    # brackets aggregate component-wise, then bracket again
    b = aggregate([bracket(_k(1.0, 0.1), _k(1.4, 0.2)), bracket(_k(1.2, 0.1), _k(1.6, 0.2))])
    ref = bracket(aggregate([_k(1.0, 0.1), _k(1.2, 0.1)]), aggregate([_k(1.4, 0.2), _k(1.6, 0.2)]))
    assert b.estimate == pytest.approx(1.3, rel=1e-14)
    assert b.interval() == pytest.approx(ref.interval(), rel=1e-14)
    # a plain estimate among brackets (the X-learner chosen in one split only) is both components
    mixed = aggregate([ks[0], bracket(_k(1.0, 0.1), _k(1.4, 0.2))])
    ref = bracket(aggregate([ks[0], _k(1.0, 0.1)]), aggregate([ks[0], _k(1.4, 0.2)]))
    assert mixed.interval() == pytest.approx(ref.interval(), rel=1e-14)
    with pytest.raises(ValueError, match="aggregate"):
        aggregate([_k(1.0, 0.1, n=3), _k(1.0, 0.1, n=4)])


@pytest.mark.parametrize("learner", ["linear", "gbm_x"])
def test_two_splits_equal_the_mean_of_two_one_split_runs(learner):
    df, _ = good_overlap(n=600, seed=3)
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["x1", "x2", "x3"], estimands=["ATE", "ATT"])
    data = prepare_data(plan)
    base = dict(estimands=("ATE", "ATT"), covariates=("x1", "x2", "x3"),
                priorities=(("x1", "high"), ("x2", "high"), ("x3", "high")), n_folds=3,
                propensity_learner=learner, outcome_learner=learner, final_stage="aipw_sample")
    both = run_spec(data, Spec(**base, seed=7, n_repeats=2))
    singles = [run_spec(data, Spec(**base, seed=s)) for s in (7, 8)]
    for estimand in ("ATE", "ATT"):
        theta = np.array([r.estimate(estimand).estimate for r in singles])
        # the same fits (same seeds), so equal up to summation order
        assert both.estimate(estimand).estimate == pytest.approx(theta.mean(), rel=1e-12)
        if learner == "linear":
            se = np.array([r.estimate(estimand).std_error for r in singles])
            assert both.estimate(estimand).std_error == pytest.approx(
                np.sqrt(np.mean(se**2 + (theta - theta.mean()) ** 2)), rel=1e-12)
    np.testing.assert_allclose(both.propensity, np.mean([r.propensity for r in singles], axis=0), rtol=1e-14)


def test_n_repeats_is_validated_and_serialised():
    s = Spec.from_dict({"estimands": ["ATE"], "covariates": ["x"], "priorities": {"x": "high"}, "n_repeats": 3})
    assert s.n_repeats == 3 and s.to_dict()["n_repeats"] == 3
    assert Spec.from_dict(s.to_dict()) == s
    for bad in (0, 21, 2.0, True):
        with pytest.raises(ValidationError, match="n_repeats"):
            Spec(estimands=("ATE",), covariates=("x",), priorities=(("x", "high"),), n_repeats=bad)


def test_fit_cache_holds_every_fit_of_a_spec():
    """With 3 splits x 2 folds the gbm_x spec makes 3 * (2 + 2 * 2 * 2) = 30 fits; the runner
    grows a smaller cache to that, so a second run (the loop's next iteration) refits nothing.
    Without the reservation the least-recently-used store evicts each fit before its reuse."""
    from causalflow.oci.gbm_learners import FIT_CACHE

    df, _ = good_overlap(n=300, seed=4)
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["x1", "x2", "x3"], estimands=["ATE"])
    data = prepare_data(plan)
    spec = Spec(estimands=("ATE",), covariates=("x1", "x2", "x3"),
                priorities=(("x1", "high"), ("x2", "high"), ("x3", "high")), n_folds=2, n_repeats=3,
                propensity_learner="gbm_x", outcome_learner="gbm_x", seed=11)
    saved = FIT_CACHE.maxsize
    try:
        FIT_CACHE.clear()
        FIT_CACHE.maxsize = 8
        first = run_spec(data, spec)
        assert FIT_CACHE.maxsize == 30
        misses = FIT_CACHE.misses
        second = run_spec(data, spec)
        assert FIT_CACHE.misses == misses
        assert second.estimate("ATE").estimate == first.estimate("ATE").estimate
        FIT_CACHE.reserve(10**6)
        assert FIT_CACHE.maxsize == 256  # bounded: each LightGBM fit keeps its training structures
    finally:
        FIT_CACHE.maxsize = saved
        FIT_CACHE.clear()
