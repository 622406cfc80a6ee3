"""The docstring examples of the OCI modules run."""

import doctest
import importlib

import pytest

MODULES = ["plan", "spec", "learners", "estimators", "diagnostics", "runner", "critic", "actor", "llm",
           "loop", "artifacts", "followups", "final_stage", "gbm_learners", "targeting"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"causalflow.oci.{name}")
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
