"""Bayesian additive regression trees (BART) as a posterior-mean outcome learner of the OCI runner
(ACIC 2016 research, rounds 4-5; needs ``stochtree``, the ``bench`` extra).

BART (Chipman, George and McCulloch 2010, "BART: Bayesian additive regression trees",
Ann. Appl. Stat. 4(1)) models ``E[Y | X] = sum_{j=1}^m g(X; T_j, M_j)``, a sum of ``m``
small trees whose depth is held back by the prior ``P(split at depth d) = 0.95 (1 + d)^-2``
and whose leaf values are shrunk so that every tree explains a small part of the
signal. Its posterior is sampled by Bayesian backfitting MCMC; the prediction used here
is the posterior mean of ``f(x)`` over the retained draws. Hill (2011, "Bayesian
nonparametric modeling for causal inference", JCGS 20(1)) brought it to causal
inference; BART entries took the first six places of the ACIC 2016 competition
(Dorie et al. 2019, Stat. Sci. 34(1)).

The sampler is ``stochtree.BARTModel`` (Herren, Hahn, Murray, Carvalho et al.), run with
one thread, a fixed seed (so the same data and seed give the same fit) and no
grow-from-root warm start: on the ACIC 2016 data the warm-started chains fitted the
response surfaces visibly worse than plain MCMC at the same cost
(``benchmarks/acic/NOTES.md``, round 4).

How the runner uses it: a learner whose ``posterior_regressor`` is set (``"gbm_bart"``,
registered by :mod:`benchmarks.acic.research_learners`) fits this model once per arm on
*all* of the arm's rows and averages its posterior mean with the cross-fitted outcome
predictions (:func:`causalflow.oci.estimators.cross_fit`).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(300, 2)); y = np.sin(2 * X[:, 0]) + rng.normal(scale=0.1, size=300)
>>> m = BartRegressor(n_trees=50, n_burnin=30, n_draws=30, seed=1).fit(X, y)
>>> float(np.corrcoef(m.predict(X), np.sin(2 * X[:, 0]))[0, 1]) > 0.95
True
"""

from __future__ import annotations

import numpy as np

from causalflow.oci.gbm_learners import CachedFit, FitCache

__all__ = ["BartRegressor", "bart_regressor"]


class BartRegressor:
    """BART regression by MCMC; ``predict`` returns the posterior mean of ``E[Y | X]``.

    Parameters
    ----------
    n_trees : int
        Trees in the sum (``m``; Chipman et al. recommend 200).
    n_burnin, n_draws : int
        MCMC sweeps discarded, then kept; the prediction averages the kept draws.
    seed : int
        Seed of the sampler (one thread: the same seed and data give the same fit).
    """

    def __init__(self, n_trees: int = 200, n_burnin: int = 50, n_draws: int = 50, seed: int = 0) -> None:
        self.n_trees = n_trees
        self.n_burnin = n_burnin
        self.n_draws = n_draws
        self.seed = seed

    def get_params(self, deep: bool = False) -> dict:
        return {"n_trees": self.n_trees, "n_burnin": self.n_burnin, "n_draws": self.n_draws, "seed": self.seed}

    def fit(self, X, y) -> BartRegressor:
        from stochtree import BARTModel

        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        if X.ndim != 2 or len(X) != len(y) or len(y) < 2:
            raise ValueError(f"BartRegressor.fit: X must be (n, p) and y (n,) with n >= 2, got {X.shape}, {y.shape}")
        model = BARTModel()
        model.sample(X_train=X, y_train=y, num_gfr=0, num_burnin=int(self.n_burnin),
                     num_mcmc=int(self.n_draws),
                     general_params={"random_seed": int(self.seed), "num_threads": 1},
                     mean_forest_params={"num_trees": int(self.n_trees)})
        self.model_ = model
        return self

    def predict(self, X) -> np.ndarray:
        draws = self.model_.predict(X=np.asarray(X, dtype=float), terms="y_hat")
        return np.asarray(draws, dtype=float).reshape(len(X), -1).mean(axis=1)


def bart_regressor(seed: int, cache: FitCache | None = None) -> CachedFit:
    """BART (200 trees, 50 burn-in and 50 kept sweeps) with the sampler seeded by ``seed``, cached."""
    return CachedFit(BartRegressor(n_trees=200, n_burnin=50, n_draws=50, seed=seed), cache)
