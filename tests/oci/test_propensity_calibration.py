"""Isotonic calibration of cross-fitted propensities (``calibrate_propensity``, the learner
``"auto_calibrated"``).

References: a pool-adjacent-violators fit written here with plain Python (the least-squares
non-decreasing fit, Barlow et al. 1972), independent of scikit-learn's implementation; the
closed-form balance of the ATT weights within each pooled block; ``cross_fit`` /
``cross_fit_select`` without calibration followed by the calibration.
"""

import numpy as np
import pytest

from causalflow.errors import ValidationError
from causalflow.oci.estimators import calibrate_propensity, cross_fit, cross_fit_select, make_folds
from causalflow.oci.learners import get_learner, register_learner


def _pav(e, t):
    # least-squares non-decreasing function of e fitted to t: units with equal scores form one
    # starting block (a function of the score), then adjacent blocks pool while their means decrease
    scores, inverse = np.unique(e, return_inverse=True)
    sums, counts = np.bincount(inverse, weights=t), np.bincount(inverse)
    blocks = []  # [sum, count, number of distinct scores]
    for s, c in zip(sums, counts):
        blocks.append([float(s), int(c), 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s2, c2, k2 = blocks.pop()
            blocks[-1][0] += s2
            blocks[-1][1] += c2
            blocks[-1][2] += k2
    per_score = np.concatenate([np.full(k, s / c) for s, c, k in blocks])
    return per_score[inverse]


def _scores(n=500, seed=0):
    rng = np.random.default_rng(seed)
    e_true = 1 / (1 + np.exp(-rng.normal(size=n)))
    t = (rng.random(n) < e_true).astype(float)
    # an over-confident, noisy ranking, with ties where it is clipped (as trees tie)
    e_hat = np.clip(e_true ** 0.4 + 0.05 * rng.normal(size=n), 0.2, 0.999)
    return e_hat, t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_is_the_pool_adjacent_violators_fit(seed):
    e, t = _scores(seed=seed)
    # 1e-12: the same block means, summed in another order
    np.testing.assert_allclose(calibrate_propensity(e, t), _pav(e, t), rtol=1e-12, atol=1e-15)


def test_calibrated_att_weights_balance_every_block():
    # within a pooled block the calibrated score is the treated share p = n1 / (n1 + n0), so
    # the controls' ATT weights p / (1 - p) sum to the block's treated count n1
    e, t = _scores(n=2000, seed=4)
    c = calibrate_propensity(e, t)
    inner = (c > 0) & (c < 1)
    for v in np.unique(c[inner]):
        block = c == v
        odds = v / (1 - v)
        assert odds * np.sum(block & (t == 0)) == pytest.approx(np.sum(block & (t == 1)), rel=1e-12)
    assert np.all(np.diff(c[np.argsort(e)]) >= 0)  # monotone in the score
    assert c.mean() == pytest.approx(t.mean(), rel=1e-12)  # the treated share is kept


def _study(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    t = (rng.random(n) < 1 / (1 + np.exp(-3.0 * np.sign(X[:, 0]) * (np.abs(X[:, 1]) > 0.7)))).astype(float)
    y = 4.0 * (X[:, 0] > 0) * (X[:, 1] > 0) + t + 0.3 * rng.normal(size=n)
    return X, t, y


def test_cross_fit_calibrates_the_weights_and_keeps_the_smooth_score_for_the_outcome_models():
    X, t, y = _study()
    folds = make_folds(t, 3, 0)
    gx = get_learner("gbm_x_select")
    raw = cross_fit(X, t, {"y": y}, folds, gx.classifier, gx.regressor, 0, effect_factory=gx.effect_regressor)
    cal = cross_fit(X, t, {"y": y}, folds, gx.classifier, gx.regressor, 0, effect_factory=gx.effect_regressor,
                    calibration="isotonic")
    np.testing.assert_array_equal(cal.e, calibrate_propensity(raw.e, t))
    np.testing.assert_array_equal(cal.score, raw.e)
    assert raw.score is None
    # the X-learner mixes the arms with the uncalibrated score: the outcome predictions are unchanged
    for attr in ("m0", "m1", "m0_arms", "m1_arms"):
        np.testing.assert_array_equal(getattr(cal, attr)["y"], getattr(raw, attr)["y"])


def test_selection_weighs_the_calibrated_candidates():
    X, t, y = _study(seed=2)
    folds = make_folds(t, 3, 0)
    lin, gbm = get_learner("linear"), get_learner("lightgbm")
    fit = cross_fit_select(X, t, {"y": y}, folds, [lin, gbm], [lin], 0, calibration="isotonic")
    cands = [calibrate_propensity(cross_fit(X, t, {"y": y}, folds, c.classifier, lin.regressor, 0).e, t)
             for c in (lin, gbm)]
    w = fit.chosen["propensity"]
    np.testing.assert_allclose(fit.e, w["linear"] * cands[0] + w["lightgbm"] * cands[1], rtol=1e-12)
    uncalibrated = [cross_fit(X, t, {"y": y}, folds, c.classifier, lin.regressor, 0).e for c in (lin, gbm)]
    np.testing.assert_allclose(fit.score, w["linear"] * uncalibrated[0] + w["lightgbm"] * uncalibrated[1],
                               rtol=1e-12)
    # the reference: the best weight on a grid of 2,001 (log-loss, clipped as propensity_risk)
    grid = np.linspace(0, 1, 2001)

    def loss(e):
        e = np.clip(e, 1e-3, 1 - 1e-3)
        return -np.mean(np.where(t == 1, np.log(e), np.log(1 - e)))

    risks = [loss(g * cands[0] + (1 - g) * cands[1]) for g in grid]
    assert abs(w["linear"] - grid[int(np.argmin(risks))]) < 0.01
    assert loss(fit.e) <= min(risks) + 1e-9


def test_bad_calibration_names_are_refused():
    X, t, y = _study(n=60)
    lin = get_learner("linear")
    with pytest.raises(ValueError, match="calibration"):
        cross_fit(X, t, {"y": y}, make_folds(t, 2, 0), lin.classifier, lin.regressor, 0, calibration="platt")
    with pytest.raises(ValidationError, match="propensity_calibration"):
        register_learner("calibration_doc", lin.classifier, lin.regressor, propensity_calibration="platt")
    assert get_learner("auto_calibrated").propensity_calibration == "isotonic"
    assert get_learner("auto").propensity_calibration == "none"


def test_the_runner_weights_with_the_calibrated_propensity_and_trims_on_the_score():
    import pandas as pd

    from causalflow.oci import Plan, Spec, prepare_data, run_spec
    from causalflow.oci.estimators import crump_alpha

    X, t, y = _study(n=800, seed=6)
    frame = pd.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "t": t, "y": y})
    plan = Plan(data=frame, treatment="t", outcome="y", confounders=["x0", "x1", "x2"], estimands=["ATE", "ATT"])
    data = prepare_data(plan)
    base = dict(estimands=("ATE", "ATT"), covariates=("x0", "x1", "x2"), outcome_learner="linear", n_folds=3,
                priorities=tuple((c, "high") for c in ("x0", "x1", "x2")),
                trimming="crump")
    cal = run_spec(data, Spec(propensity_learner="auto_calibrated", **base))
    plain = run_spec(data, Spec(propensity_learner="auto", **base))
    # the same candidates and folds: the score is the uncalibrated combination (weights chosen on
    # the calibrated candidates, so the combination itself may differ from "auto"'s)
    assert plain.score is None and plain.overlap_score is plain.propensity
    s = cal.score
    assert s.min() >= 1e-3 and s.max() <= 1 - 1e-3  # clipped as the propensity is
    assert cal.alpha == pytest.approx(crump_alpha(s), rel=1e-12)
    np.testing.assert_array_equal(cal.kept, (s >= cal.alpha) & (s <= 1 - cal.alpha))
    # each calibrated candidate keeps the treated share (an isotonic least-squares fit keeps the
    # mean), so their convex combination does too, up to the clip at 1e-3
    assert cal.propensity.mean() == pytest.approx(t.mean(), abs=2e-3)
    overlap = cal.diagnostic("ATE").overlap
    rows = cal.kept
    assert overlap.share_outside == pytest.approx(np.mean((s[rows] <= 0.1) | (s[rows] >= 0.9)), abs=1e-12)
