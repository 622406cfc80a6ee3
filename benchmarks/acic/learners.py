"""Learners for the cross-fitted estimators: ``(X_train, y_train, X_test, seed) -> predictions``.

Single-threaded (``n_jobs=1``) so that data sets run in parallel and CPU time is honest.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.preprocessing import SplineTransformer

Learner = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def _standardise(Xtr: np.ndarray, Xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = Xtr.mean(0)
    s = Xtr.std(0)
    s[s == 0] = 1.0
    return (Xtr - m) / s, (Xte - m) / s


def lgbm_regressor(n_estimators: int = 500, learning_rate: float = 0.05, num_leaves: int = 15,
                   min_child_samples: int = 20, subsample: float = 0.8,
                   colsample_bytree: float = 0.8, reg_lambda: float = 1.0,
                   linear_tree: bool = False) -> Learner:
    """Gradient-boosted trees (LightGBM, Ke et al. 2017) with fixed settings."""

    def fit_predict(Xtr, ytr, Xte, seed):
        model = lgb.LGBMRegressor(
            n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
            min_child_samples=min_child_samples, subsample=subsample, subsample_freq=1,
            colsample_bytree=colsample_bytree, reg_lambda=reg_lambda, linear_tree=linear_tree,
            random_state=seed, n_jobs=1, verbose=-1)
        model.fit(Xtr, ytr)
        return model.predict(Xte)

    return fit_predict


def lgbm_early_stop(max_estimators: int = 2000, learning_rate: float = 0.05, num_leaves: int = 15,
                    min_child_samples: int = 20, subsample: float = 0.8,
                    colsample_bytree: float = 0.8, reg_lambda: float = 1.0,
                    valid_share: float = 0.15, patience: int = 50) -> Learner:
    """LightGBM whose number of trees is chosen on a held-out share of the training rows."""

    def fit_predict(Xtr, ytr, Xte, seed):
        rng = np.random.default_rng(seed)
        n = Xtr.shape[0]
        val = np.zeros(n, dtype=bool)
        val[rng.choice(n, max(1, int(valid_share * n)), replace=False)] = True
        params = dict(learning_rate=learning_rate, num_leaves=num_leaves,
                      min_child_samples=min_child_samples, subsample=subsample, subsample_freq=1,
                      colsample_bytree=colsample_bytree, reg_lambda=reg_lambda,
                      random_state=seed, n_jobs=1, verbose=-1)
        m = lgb.LGBMRegressor(n_estimators=max_estimators, **params)
        m.fit(Xtr[~val], ytr[~val], eval_set=[(Xtr[val], ytr[val])],
              callbacks=[lgb.early_stopping(patience, verbose=False)])
        best = max(int(m.best_iteration_ or max_estimators), 10)
        # refit on all training rows with the chosen number of trees (scaled for the size)
        full = lgb.LGBMRegressor(n_estimators=int(best / (1 - valid_share)), **params)
        full.fit(Xtr, ytr)
        return full.predict(Xte)

    return fit_predict


def ridge_regressor(alphas: tuple[float, ...] = tuple(np.logspace(-3, 4, 15))) -> Learner:
    """Ridge regression on standardised features, penalty by efficient leave-one-out (GCV)."""

    def fit_predict(Xtr, ytr, Xte, seed):
        a, b = _standardise(Xtr, Xte)
        return RidgeCV(alphas=alphas).fit(a, ytr).predict(b)

    return fit_predict


def spline_ridge(n_knots: int = 5, degree: int = 3,
                 alphas: tuple[float, ...] = tuple(np.logspace(-2, 5, 15))) -> Learner:
    """Additive cubic splines of the non-binary features plus the binary ones, ridge-penalised."""

    def fit_predict(Xtr, ytr, Xte, seed):
        nonbin = np.array([np.unique(Xtr[:, j]).size > 2 for j in range(Xtr.shape[1])])
        st = SplineTransformer(n_knots=n_knots, degree=degree, knots="quantile",
                               extrapolation="linear", include_bias=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Str = st.fit_transform(Xtr[:, nonbin])
        Ste = st.transform(Xte[:, nonbin])
        a = np.hstack([Xtr, Str])
        b = np.hstack([Xte, Ste])
        a, b = _standardise(a, b)
        return RidgeCV(alphas=alphas).fit(a, ytr).predict(b)

    return fit_predict


def lgbm_classifier(n_estimators: int = 300, learning_rate: float = 0.05, num_leaves: int = 15,
                    min_child_samples: int = 20) -> Learner:
    """LightGBM probability of the positive class."""

    def fit_predict(Xtr, ytr, Xte, seed):
        m = lgb.LGBMClassifier(n_estimators=n_estimators, learning_rate=learning_rate,
                               num_leaves=num_leaves, min_child_samples=min_child_samples,
                               subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
                               random_state=seed, n_jobs=1, verbose=-1)
        m.fit(Xtr, ytr.astype(int))
        return m.predict_proba(Xte)[:, 1]

    return fit_predict


def logistic_classifier(C: float = 1.0) -> Learner:
    """L2-penalised logistic regression on standardised features."""

    def fit_predict(Xtr, ytr, Xte, seed):
        a, b = _standardise(Xtr, Xte)
        m = LogisticRegression(C=C, max_iter=2000).fit(a, ytr.astype(int))
        return m.predict_proba(b)[:, 1]

    return fit_predict
