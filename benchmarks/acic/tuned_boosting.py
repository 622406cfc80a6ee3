"""LightGBM with the number of boosting rounds chosen by inner cross-validation (ACIC 2016
research, round 10: not adopted, see ``NOTES.md``). The learners ``gbm_x_tuned`` and
``gbm_x_tuned_ps`` are registered from these by :mod:`benchmarks.acic.research_learners`.
"""

from __future__ import annotations

import numpy as np

from causalflow.oci.gbm_learners import Boosting, CachedFit, FitCache

__all__ = ["TunedBoosting", "tuned_gbm_classifier", "tuned_gbm_linear_tree_regressor", "tuned_gbm_tree_regressor"]


class TunedBoosting(Boosting):
    """LightGBM whose number of boosting rounds is chosen by inner cross-validation.

    ``fit(X, y)`` runs ``n_folds``-fold cross-validation of the booster on the training rows
    (:func:`lightgbm.cv`, stratified for a classifier), stops when the mean validation loss
    (log-loss / squared error) has not improved for ``patience`` rounds, and refits on all
    the training rows with the best number of rounds (at most ``max_rounds``). The other
    parameters are those of :class:`Boosting`. Early stopping on held-out loss is the
    standard regulariser of boosting (Zhang and Yu 2005, "Boosting with early stopping:
    convergence and consistency", Ann. Statist. 33(4)); on the ACIC 2016 data the fixed
    200-round propensity model is well past its best round (benchmarks/acic/NOTES.md,
    round 10), which inflates the inverse-propensity weights.

    Parameters
    ----------
    kind : "classifier" or "regressor"
    linear_tree : bool
        Linear models in the leaves (regressor only).
    seed : int
    n_folds, max_rounds, patience : int

    Attributes
    ----------
    n_rounds_ : int
        The chosen number of rounds.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3)); t = (rng.random(400) < 1 / (1 + np.exp(-X[:, 0]))).astype(int)
    >>> m = TunedBoosting("classifier", seed=0).fit(X, t)
    >>> m.n_rounds_ < 200, m.predict_proba(X[:2]).shape
    (True, (2, 2))
    """

    def __init__(self, kind: str, *, linear_tree: bool = False, seed: int = 0, n_folds: int = 3,
                 max_rounds: int = 1000, patience: int = 30) -> None:
        super().__init__(kind, max_rounds, linear_tree=linear_tree, seed=seed)
        self.n_folds = n_folds
        self.patience = patience

    @property
    def max_rounds(self) -> int:
        """The cap of the search: :class:`Boosting`'s ``n_rounds``."""
        return self.n_rounds

    def get_params(self, deep: bool = False) -> dict:
        return {k: getattr(self, k) for k in ("kind", "linear_tree", "seed", "n_folds", "max_rounds",
                                              "patience")}

    def fit(self, X, y):
        import lightgbm as lgb

        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        history = lgb.cv(self._params(), lgb.Dataset(X, y, free_raw_data=False),
                         num_boost_round=self.max_rounds, nfold=self.n_folds,
                         stratified=self.kind == "classifier", seed=self.seed,
                         callbacks=[lgb.early_stopping(self.patience, verbose=False)])
        self.n_rounds_ = len(next(iter(history.values())))  # truncated at the best round
        return self._train(X, y, self.n_rounds_)


def tuned_gbm_classifier(seed: int, cache: FitCache | None = None) -> CachedFit:
    """The propensity model of :func:`causalflow.oci.gbm_learners.gbm_classifier`, the rounds
    chosen by inner CV, cached."""
    return CachedFit(TunedBoosting("classifier", seed=seed), cache)


def tuned_gbm_linear_tree_regressor(seed: int, cache: FitCache | None = None) -> CachedFit:
    """:func:`causalflow.oci.gbm_learners.gbm_linear_tree_regressor`, the rounds chosen by inner
    CV, cached."""
    return CachedFit(TunedBoosting("regressor", linear_tree=True, seed=seed), cache)


def tuned_gbm_tree_regressor(seed: int, cache: FitCache | None = None) -> CachedFit:
    """:func:`causalflow.oci.gbm_learners.gbm_tree_regressor` with the rounds chosen by inner CV, cached."""
    return CachedFit(TunedBoosting("regressor", seed=seed), cache)
