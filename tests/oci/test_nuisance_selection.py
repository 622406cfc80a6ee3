"""Every nuisance a convex combination of candidate learners with the smallest out-of-fold
risk (``cross_fit_select``, the ``"auto"`` learner; ``"auto_calibrated"``, the RuleActor's
default propensity, calibrates the candidates first: test_propensity_calibration.py).

References: ``cross_fit`` with each candidate alone (the combination must be the weighted
sum of their predictions), and the best weight on a fine grid computed here with plain
numpy (log-loss, squared error on the arm's rows), independently of the SLSQP solver.
"""

import numpy as np
import pytest

from causalflow.oci import Plan, prepare_data, run_spec
from causalflow.oci.actor import RuleActor
from causalflow.oci.estimators import (
    convex_weights,
    cross_fit,
    cross_fit_select,
    make_folds,
    propensity_risk,
)
from causalflow.oci.learners import get_learner

LINEAR, GBM = get_learner("linear"), get_learner("lightgbm")


def _study(n=600, seed=0, kind="linear"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    if kind == "linear":
        logit, base = 0.8 * X[:, 0], 2.0 * X[:, 0] - X[:, 1]
    else:  # steps: trees fit them, a line does not
        logit, base = 3.0 * np.sign(X[:, 0]) * (np.abs(X[:, 1]) > 0.7), 4.0 * (X[:, 0] > 0) * (X[:, 1] > 0)
    t = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    y = base + t + 0.3 * rng.normal(size=n)
    return X, t, y


def _alone(X, t, y, folds, learner):
    return cross_fit(X, t, {"y": y}, folds, learner.classifier, learner.regressor, 0,
                     outcome_features=learner.outcome_features, effect_factory=learner.effect_regressor)


def _grid_best(preds, target, risk):
    # the reference: the best of 2,001 weights on a grid (independent of SLSQP)
    grid = np.linspace(0, 1, 2001)
    risks = [risk(target, w * preds[0] + (1 - w) * preds[1]) for w in grid]
    return grid[int(np.argmin(risks))], min(risks)


def _log_loss(t, e):
    e = np.clip(e, 1e-3, 1 - 1e-3)
    return -np.mean(np.where(t == 1, np.log(e), np.log(1 - e)))


def _squared(y, p):
    return np.mean((p - y) ** 2)


@pytest.mark.parametrize("kind, favoured", [("linear", "linear"), ("steps", "lightgbm")])
def test_each_nuisance_is_the_convex_combination_with_the_smallest_risk(kind, favoured):
    X, t, y = _study(kind=kind)
    folds = make_folds(t, 3, 0)
    fit = cross_fit_select(X, t, {"y": y}, folds, [LINEAR, GBM], [LINEAR, GBM], 0)
    alone = {c.name: _alone(X, t, y, folds, c) for c in (LINEAR, GBM)}
    # the propensity: weights within the grid's step of the grid optimum, risk no worse
    w_grid, best = _grid_best([alone["linear"].e, alone["lightgbm"].e], t, _log_loss)
    w = fit.chosen["propensity"]
    assert w["linear"] + w["lightgbm"] == pytest.approx(1.0, abs=1e-12)
    assert abs(w["linear"] - w_grid) < 0.01 and _log_loss(t, fit.e) <= best + 1e-9
    np.testing.assert_allclose(fit.e, w["linear"] * alone["linear"].e + w["lightgbm"] * alone["lightgbm"].e,
                               rtol=1e-12)
    # the candidates' own risks are recorded (1e-12: the same sums in another order)
    np.testing.assert_allclose(fit.risks["propensity"], [_log_loss(t, alone[c].e) for c in ("linear", "lightgbm")],
                               rtol=1e-12)
    assert max(w, key=w.get) == favoured
    # outcomes: per arm, the combination with the smallest squared error on that arm's units
    # (the candidates' outcome models do not depend on the propensity: no X-learner here)
    for arm, label, attr in ((1, "treated", "m1"), (0, "control", "m0")):
        rows = t == arm
        preds = [getattr(alone[c], attr)["y"] for c in ("linear", "lightgbm")]
        w_grid, best = _grid_best([p[rows] for p in preds], y[rows], _squared)
        w = fit.chosen[f"y:{label}"]
        assert abs(w["linear"] - w_grid) < 0.01 and _squared(y[rows], getattr(fit, attr)["y"][rows]) <= best + 1e-9
        np.testing.assert_allclose(getattr(fit, attr)["y"], w["linear"] * preds[0] + w["lightgbm"] * preds[1],
                                   rtol=1e-12)
        assert max(w, key=w.get) == favoured
    assert fit.m0_arms is None  # neither candidate recombines


def test_convex_weights_reach_the_corners_and_the_middle():
    y = np.linspace(-1, 1, 50)
    np.testing.assert_allclose(convex_weights([y + 0.3, y], y), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(convex_weights([y + 0.3, y - 0.1, 2 * y], y), [0.25, 0.75, 0.0], atol=1e-6)
    t = np.array([1, 0, 1, 0]) * 1.0
    np.testing.assert_allclose(convex_weights([np.full(4, 0.5), np.array([0.9, 0.1, 0.9, 0.1])], t, "log"),
                               [0.0, 1.0], atol=1e-6)


def test_one_candidate_is_cross_fit():
    X, t, y = _study()
    folds = make_folds(t, 2, 1)
    a, b = cross_fit_select(X, t, {"y": y}, folds, [LINEAR], [LINEAR], 0), _alone(X, t, y, folds, LINEAR)
    for attr in ("e", "m0", "m1"):
        va, vb = getattr(a, attr), getattr(b, attr)
        np.testing.assert_array_equal(va["y"] if attr != "e" else va, vb["y"] if attr != "e" else vb)


def test_an_x_learner_candidate_keeps_its_own_arms_for_the_extrapolation_check():
    X, t, y = _study(kind="steps", seed=3)
    folds = make_folds(t, 2, 0)
    gx = get_learner("gbm_x_select")
    fit = cross_fit_select(X, t, {"y": y}, folds, [gx], [gx], 0)
    ref = _alone(X, t, y, folds, gx)
    np.testing.assert_array_equal(fit.m1["y"], ref.m1["y"])
    np.testing.assert_array_equal(fit.m1_arms["y"], ref.m1_arms["y"])


def test_propensity_risk_is_the_log_loss():
    t, e = np.array([1, 0, 1]), np.array([0.8, 0.3, 0.0])
    expected = -(np.log(0.8) + np.log(0.7) + np.log(1e-3)) / 3   # 0 clipped to 1e-3
    assert propensity_risk(t, e) == pytest.approx(expected, rel=1e-12)


def test_the_default_actor_selects_and_records_the_choice():
    X, t, y = _study(n=400, seed=5)
    import pandas as pd

    frame = pd.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "t": t, "y": y})
    plan = Plan(data=frame, treatment="t", outcome="y", confounders={"high": ["x0", "x1", "x2"]},
                estimands=["ATE"])
    spec = RuleActor().propose(plan, None, None).spec
    assert (spec.propensity_learner, spec.outcome_learner) == ("auto_calibrated", "gbm_x_select")
    result = run_spec(prepare_data(plan), spec)
    choices = result.results_dict()["nuisance_learners"]
    assert len(choices) == spec.n_repeats
    assert set(choices[0]["chosen"]) == {"propensity", "__outcome__:treated", "__outcome__:control"}
    assert set(choices[0]["chosen"]["propensity"]) == {"linear", "gbm_x_select"}
    assert sum(choices[0]["chosen"]["propensity"].values()) == pytest.approx(1.0, abs=1e-12)
    assert choices[0]["chosen"]["__outcome__:treated"] == {"gbm_x_select": 1.0}  # one outcome candidate
