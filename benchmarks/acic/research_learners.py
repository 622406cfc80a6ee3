"""Learners of the ACIC 2016 research that the library does not ship (NOTES.md rounds 4, 5, 10).

Importing this module registers them in the OCI learner registry:

- ``"gbm_bart"``: the ``gbm_linear_tree`` models, each outcome prediction averaged with the
  posterior mean of a BART fitted once per arm (:mod:`benchmarks.acic.bart_learners`,
  needs ``stochtree``); round 4.
- ``"gbm_bart_x"``: ``"gbm_bart"`` recombined as an X-learner, the effect models being
  linear-leaf LightGBM (``cross_fit(effect_factory=)``); round 5.
- ``"gbm_x_tuned"``: ``"gbm_x"`` with every model's number of boosting rounds chosen by inner
  cross-validation (:mod:`benchmarks.acic.tuned_boosting`); ``"gbm_x_tuned_ps"`` tunes only
  the propensity model; round 10.

Re-run an evaluation with one of them (from the repository root; the workers import this
module too)::

    python -m benchmarks.acic.research_learners --learner gbm_x_tuned --out DIR [eval-acic options]

which is ``causalflow oci eval-acic --learner-module benchmarks.acic.research_learners ...``.
"""

from __future__ import annotations

import sys

from causalflow.oci.acic import cli_main
from causalflow.oci.gbm_learners import gbm_classifier, gbm_linear_tree_regressor, gbm_tree_regressor
from causalflow.oci.learners import register_learner

from .bart_learners import bart_regressor
from .tuned_boosting import tuned_gbm_classifier, tuned_gbm_linear_tree_regressor, tuned_gbm_tree_regressor

__all__ = ["RESEARCH_LEARNERS", "main", "register"]

RESEARCH_LEARNERS = ("gbm_bart", "gbm_bart_x", "gbm_x_tuned", "gbm_x_tuned_ps")


def register() -> None:
    """Register the research learners (again: ``replace=True``, so that a second import of this
    module under another name, as pytest may do, is harmless)."""
    register_learner("gbm_bart", gbm_classifier, gbm_linear_tree_regressor, flexible=True,
                     posterior_regressor=bart_regressor, replace=True)
    register_learner("gbm_bart_x", gbm_classifier, gbm_linear_tree_regressor, flexible=True,
                     posterior_regressor=bart_regressor, effect_regressor=gbm_linear_tree_regressor,
                     replace=True)
    register_learner("gbm_x_tuned", tuned_gbm_classifier, tuned_gbm_linear_tree_regressor, flexible=True,
                     effect_regressor=tuned_gbm_tree_regressor, replace=True)
    register_learner("gbm_x_tuned_ps", tuned_gbm_classifier, gbm_linear_tree_regressor, flexible=True,
                     effect_regressor=gbm_tree_regressor, replace=True)


register()


def main(argv: list[str] | None = None) -> int:
    """``causalflow oci eval-acic`` with this module's learners known to every worker."""
    args = sys.argv[1:] if argv is None else list(argv)
    return cli_main(["--learner-module", __name__, *args])


if __name__ == "__main__":
    sys.exit(main())
