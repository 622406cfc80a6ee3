"""The learner registry of the OCI runner: name -> factory(seed) for propensity and outcome models.

A learner entry has two factories, one making a probabilistic classifier (the
propensity model ``P(T = 1 | X)``) and one making a regressor (the outcome model
``E[Y | X, T = t]``, fitted separately per arm). Every factory takes the seed and
returns a fresh, unfitted scikit-learn compatible estimator, so the same seed gives
the same fit. Add a learner with :func:`register_learner`.

Built in:

- ``"linear"``: logistic regression (L2, C = 1 on standardized X) / ordinary least squares.
- ``"regularised_linear"``: cross-validated L2 logistic (log-loss) / ridge (3 folds, 10 penalties).
- ``"lightgbm"``: gradient-boosted trees (LightGBM, deterministic, 1 thread).
- ``"hist_gbm"``: scikit-learn's histogram gradient boosting.
- ``"gbm_linear_tree"``: LightGBM propensity and linear-leaf LightGBM outcome models with a
  fit cache shared by loop iterations (:mod:`causalflow.oci.gbm_learners`).
- ``"gbm_linear_tree_ps"``: the same, the outcome models also given the logit of the
  out-of-fold propensity as a feature (``outcome_features="covariates+propensity"``).
- ``"gbm_x"``: ``"gbm_linear_tree"`` recombined as an X-learner whose effect models are
  constant-leaf LightGBM (flat, not linear, outside the data).
- ``"gbm_x_select"``: ``"gbm_x"`` whose effect model per arm is chosen between the
  constant-leaf LightGBM and a ridge regression by out-of-fold error (the discrete super
  learner, :func:`causalflow.oci.estimators.select_out_of_fold`); the learner of the
  ACIC 2016 evaluation (``causalflow oci eval-acic``).
- ``"auto"``: every nuisance a convex combination of ``"linear"`` and ``"gbm_x_select"``
  with weights that minimise the out-of-fold risk (log-loss for the propensity, squared
  error per outcome and arm; the super learner, :func:`causalflow.oci.estimators.cross_fit_select`):
  logistic regression wins on small or nearly linear studies, the trees on the ACIC 2016
  surfaces, and their combination keeps the propensities away from the extremes either
  reaches alone.
- ``"auto_calibrated"``: ``"auto"`` with each candidate's out-of-fold propensity calibrated
  by isotonic regression before the weights are chosen
  (:func:`causalflow.oci.estimators.calibrate_propensity`). The default propensity learner
  of :class:`~causalflow.oci.actor.RuleActor` (its outcome learner is ``"gbm_x_select"``),
  chosen on the validation suite of issue 16 (benchmarks/README.md, "Candidate defaults",
  round 3): against ``"auto"`` it lowered the RMSE on every simulated family (ACIC 2016
  SATT 0.091 to 0.069, Nie-Wager ATE 0.118 to 0.104) at the same coverage.

The factories import scikit-learn and LightGBM when called (the ``oci`` extra:
``pip install "causalflow[oci]"``). Research learners of the ACIC 2016 study (BART
averages, tuned boosting rounds) live in ``benchmarks/acic/research_learners.py`` and
register themselves when that module is imported.

Examples
--------
>>> from causalflow.oci.learners import get_learner, learner_names
>>> "lightgbm" in learner_names()
True
>>> get_learner("linear").regressor(0).__class__.__name__
'LinearRegression'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._optional import require
from ..errors import ValidationError
from .estimators import CALIBRATIONS

__all__ = ["FLEXIBLE_LEARNERS", "Learner", "get_learner", "learner_names", "register_learner"]


@dataclass(frozen=True, slots=True)
class Learner:
    """One registry entry.

    Attributes
    ----------
    name : str
    classifier : callable(seed) -> estimator with ``fit`` and ``predict_proba``
    regressor : callable(seed) -> estimator with ``fit`` and ``predict``
    flexible : bool
        True for learners that fit non-linear response surfaces; the Critic proposes
        one of these when a linear learner leaves imbalance behind.
    outcome_features : "covariates" or "covariates+propensity"
        What the outcome models see when this learner is the spec's outcome learner:
        the covariates, or the covariates plus the logit of the out-of-fold propensity
        of the same fold split (:func:`causalflow.oci.estimators.cross_fit`).
    posterior_regressor : callable(seed) -> estimator, or None
        A Bayesian regressor (posterior-mean prediction) fitted once per arm on all of the
        arm's rows and averaged with the cross-fitted outcome model (``cross_fit``'s
        ``posterior_factory``).
    candidates : tuple of str
        Registered learner names combined, per nuisance, with weights chosen by
        cross-validated risk (:func:`causalflow.oci.estimators.cross_fit_select`); empty
        for a single learner.
        ``classifier`` and ``regressor`` are then the first candidate's (what a caller that
        does not select gets).
    effect_regressor : callable(seed) -> estimator, tuple of them, or None
        Makes the effect models of an X-learner recombination: each arm's outcome prediction
        is rebuilt from the other arm's plus a cross-fitted effect model where the arm has
        few units (``cross_fit``'s ``effect_factory``). A tuple lists candidates, one chosen
        per arm by out-of-fold error.
    propensity_calibration : "none" or "isotonic"
        ``"isotonic"``: the out-of-fold propensity (each candidate's, when the entry combines
        candidates) is calibrated by isotonic regression before it is used
        (:func:`causalflow.oci.estimators.calibrate_propensity`).
    """

    name: str
    classifier: Callable[[int], object]
    regressor: Callable[[int], object]
    flexible: bool = False
    outcome_features: str = "covariates"
    posterior_regressor: Callable[[int], object] | None = None
    effect_regressor: Callable[[int], object] | tuple[Callable[[int], object], ...] | None = None
    candidates: tuple[str, ...] = ()
    propensity_calibration: str = "none"

    @property
    def members(self) -> tuple[Learner, ...]:
        """The learners this entry fits: its candidates, or itself.

        >>> [m.name for m in get_learner("auto").members], [m.name for m in get_learner("linear").members]
        (['linear', 'gbm_x_select'], ['linear'])
        """
        return tuple(get_learner(c) for c in self.candidates) if self.candidates else (self,)

    @property
    def effect_candidates(self) -> tuple[Callable[[int], object], ...]:
        """The effect-model factories as a tuple: empty without an X-learner, one entry for a
        single factory, else the candidates chosen between by out-of-fold error.

        Examples
        --------
        >>> len(get_learner("gbm_x_select").effect_candidates), len(get_learner("gbm_x").effect_candidates)
        (2, 1)
        >>> get_learner("linear").effect_candidates
        ()
        """
        e = self.effect_regressor
        return () if e is None else (e,) if callable(e) else tuple(e)


def _sklearn(module: str):
    return require(f"sklearn.{module}", "oci")


def _standardized(model):
    return _sklearn("pipeline").make_pipeline(_sklearn("preprocessing").StandardScaler(), model)


def _linear_classifier(seed: int):
    return _standardized(_sklearn("linear_model").LogisticRegression(C=1.0, max_iter=2000, random_state=seed))


def _linear_regressor(seed: int):
    return _sklearn("linear_model").LinearRegression()


def _ridge_classifier(seed: int):
    return _standardized(_sklearn("linear_model").LogisticRegressionCV(Cs=10, cv=3, max_iter=2000,
                                                                       scoring="neg_log_loss",
                                                                       random_state=seed))


def _ridge_regressor(seed: int):
    return _standardized(_sklearn("linear_model").RidgeCV(alphas=np.logspace(-3, 3, 10)))


_LGBM_OPTIONS = dict(n_estimators=100, learning_rate=0.1, num_leaves=15, min_child_samples=20,
                     subsample=1.0, colsample_bytree=1.0, n_jobs=1, deterministic=True,
                     force_col_wise=True, verbose=-1)


def _lgbm_classifier(seed: int):
    return require("lightgbm", "oci").LGBMClassifier(random_state=seed, **_LGBM_OPTIONS)


def _lgbm_regressor(seed: int):
    return require("lightgbm", "oci").LGBMRegressor(random_state=seed, **_LGBM_OPTIONS)


def _hgb_classifier(seed: int):
    return _sklearn("ensemble").HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                                              early_stopping=False, random_state=seed)


def _hgb_regressor(seed: int):
    return _sklearn("ensemble").HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05,
                                                             early_stopping=False, random_state=seed)


_REGISTRY: dict[str, Learner] = {}


def register_learner(name: str, classifier: Callable[[int], object], regressor: Callable[[int], object],
                     *, flexible: bool = False, replace: bool = False,
                     outcome_features: str = "covariates",
                     posterior_regressor: Callable[[int], object] | None = None,
                     effect_regressor: Callable[[int], object] | tuple | None = None,
                     candidates: tuple[str, ...] = (), propensity_calibration: str = "none") -> Learner:
    """Add a learner under ``name``; both factories take the seed (int) and return a new estimator.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression, Lasso
    >>> entry = register_learner("lasso_doc", lambda s: LogisticRegression(random_state=s),
    ...                          lambda s: Lasso(alpha=0.01), replace=True)
    >>> entry.name
    'lasso_doc'
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValidationError(f"learner name: must be an identifier-like string, got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValidationError(f"learner name: {name!r} is already registered (pass replace=True)")
    if not callable(classifier) or not callable(regressor):
        raise ValidationError(f"learner {name!r}: classifier and regressor must be callables of the seed")
    if outcome_features not in ("covariates", "covariates+propensity"):
        raise ValidationError(f"learner {name!r}: outcome_features must be 'covariates' or "
                              f"'covariates+propensity', got {outcome_features!r}")
    if posterior_regressor is not None and not callable(posterior_regressor):
        raise ValidationError(f"learner {name!r}: posterior_regressor must be a callable of the seed or None")
    if isinstance(effect_regressor, list):
        effect_regressor = tuple(effect_regressor)
    if effect_regressor is not None and not callable(effect_regressor) and not (
            isinstance(effect_regressor, tuple) and effect_regressor and all(map(callable, effect_regressor))):
        raise ValidationError(f"learner {name!r}: effect_regressor must be a callable of the seed, "
                              f"a non-empty tuple of them, or None")
    if propensity_calibration not in CALIBRATIONS:
        raise ValidationError(f"learner {name!r}: propensity_calibration must be one of {CALIBRATIONS}, "
                              f"got {propensity_calibration!r}")
    candidates = tuple(candidates)
    for c in candidates:
        if get_learner(c).candidates:
            raise ValidationError(f"learner {name!r}: candidate {c!r} itself chooses among candidates")
    entry = Learner(name, classifier, regressor, flexible, outcome_features, posterior_regressor,
                    effect_regressor, candidates, propensity_calibration)
    _REGISTRY[name] = entry
    return entry


def get_learner(name: str) -> Learner:
    """The registry entry called ``name``; a :class:`ValidationError` lists the known names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValidationError(f"learner: unknown name {name!r}; known: {learner_names()}") from None


def learner_names() -> list[str]:
    """The registered learner names, sorted."""
    return sorted(_REGISTRY)


register_learner("linear", _linear_classifier, _linear_regressor)
register_learner("regularised_linear", _ridge_classifier, _ridge_regressor)
register_learner("lightgbm", _lgbm_classifier, _lgbm_regressor, flexible=True)
register_learner("hist_gbm", _hgb_classifier, _hgb_regressor, flexible=True)


def _register_gbm_linear_tree() -> None:
    # LightGBM propensity + linear-leaf LightGBM outcome, fits cached across loop iterations
    # (causalflow.oci.gbm_learners; chosen on ACIC 2016, benchmarks/acic/NOTES.md)
    from .gbm_learners import (
        gbm_classifier,
        gbm_linear_tree_regressor,
        gbm_tree_regressor,
    )

    register_learner("gbm_linear_tree", gbm_classifier, gbm_linear_tree_regressor, flexible=True)
    # the same models, the outcome models also given the out-of-fold propensity logit
    register_learner("gbm_linear_tree_ps", gbm_classifier, gbm_linear_tree_regressor, flexible=True,
                     outcome_features="covariates+propensity")
    # the gbm_linear_tree models recombined as an X-learner with flat-extrapolating effect
    # models (chosen on ACIC 2016, round 6)
    register_learner("gbm_x", gbm_classifier, gbm_linear_tree_regressor, flexible=True,
                     effect_regressor=gbm_tree_regressor)
    # gbm_x with each arm's effect model chosen between trees and ridge by out-of-fold error (round 15)
    register_learner("gbm_x_select", gbm_classifier, gbm_linear_tree_regressor, flexible=True,
                     effect_regressor=(gbm_tree_regressor, _ridge_regressor))


_register_gbm_linear_tree()
# each nuisance a convex combination of linear models and gbm_x_select by out-of-fold risk (issue 16)
register_learner("auto", _linear_classifier, _linear_regressor, flexible=True,
                 candidates=("linear", "gbm_x_select"))
# the same, every candidate's propensity calibrated by isotonic regression first
register_learner("auto_calibrated", _linear_classifier, _linear_regressor, flexible=True,
                 candidates=("linear", "gbm_x_select"), propensity_calibration="isotonic")

#: the learner the rule Critic proposes when a linear learner leaves imbalance behind
FLEXIBLE_LEARNERS = ("gbm_x_select",)
