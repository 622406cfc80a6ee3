"""Every docstring example of the causalflow modules outside causalflow.oci runs and prints
what it says (the OCI modules have their own tests/oci/test_doctests.py), and every module
has at least one: a module without examples would pass here without testing anything."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import causalflow

# Modules that need no example, and why. A package whose __init__ defines nothing of its own
# (it only re-exports) is also exempt: its names are exemplified where they are defined.
NO_EXAMPLE = {
    "causalflow.cli": "argparse dispatch only; run end to end by tests/test_demo.py, "
                      "tests/test_extras.py and tests/oci/test_artifacts.py",
}

MODULES = sorted(m.name for m in pkgutil.walk_packages(causalflow.__path__, "causalflow.")
                 if not m.name.startswith("causalflow.oci"))


def _defines_nothing(module) -> bool:
    """A package __init__ with no function or class of its own."""
    own = [v for v in vars(module).values()
           if (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == module.__name__]
    return hasattr(module, "__path__") and not own


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
    if name in NO_EXAMPLE or _defines_nothing(module):
        return
    assert tried > 0, f"{name} has no docstring example: add one, or list it in NO_EXAMPLE with a reason"


def test_exemptions_are_current():
    # an exempt module that gains examples, or disappears, is taken off the list
    for name in NO_EXAMPLE:
        assert name in MODULES, name
        assert doctest.testmod(importlib.import_module(name)).attempted == 0, name
