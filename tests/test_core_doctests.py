"""Every docstring example of the causalflow modules outside causalflow.oci runs and prints
what it says (the OCI modules have their own tests/oci/test_doctests.py)."""

import doctest
import importlib
import pkgutil

import pytest

import causalflow

MODULES = sorted(m.name for m in pkgutil.walk_packages(causalflow.__path__, "causalflow.")
                 if not m.name.startswith("causalflow.oci"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
