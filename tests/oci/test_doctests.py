"""The docstring examples of the OCI modules run, and every module has at least one (a module
without examples would pass without testing anything)."""

import doctest
import importlib
import pkgutil

import pytest

import causalflow.oci

# Modules that need no example, and why.
NO_EXAMPLE = {
    "cli": "argparse dispatch only; run end to end by tests/oci/test_artifacts.py and test_acic.py",
}

MODULES = sorted(m.name.rpartition(".")[2] for m in pkgutil.walk_packages(causalflow.oci.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"causalflow.oci.{name}")
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
    if name not in NO_EXAMPLE:
        assert tried > 0, f"causalflow.oci.{name} has no docstring example: add one, or list it in NO_EXAMPLE"


def test_exemptions_are_current():
    for name in NO_EXAMPLE:
        assert name in MODULES, name
        assert doctest.testmod(importlib.import_module(f"causalflow.oci.{name}")).attempted == 0, name
