"""Optional dependencies: import one where it is used, or say which extra installs it.

The core install (``pip install causalflow``) has no learners, plots, notebooks or
warehouse engines; a feature that needs one imports it through :func:`require`, so that a
missing package raises an ImportError naming the ``pip install "causalflow[extra]"`` to run
(pandas does the same in ``pandas.compat._optional.import_optional_dependency``).

Examples
--------
>>> require("json", "oci").__name__
'json'
>>> try:
...     require("not_a_module_xyz.sub", "oci")
... except ImportError as exc:
...     print(exc)
this feature of causalflow needs the optional dependency 'not_a_module_xyz': pip install "causalflow[oci]"
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingDependency", "require"]

#: the extras of pyproject.toml that a feature can name
EXTRAS = ("oci", "plot", "bayes", "warehouse", "spark", "mcp", "llm", "docs", "bench")


class MissingDependency(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` (a dotted name) and return it; when it (or a package it needs) is
    missing, raise a :class:`MissingDependency` (an ImportError) naming the extra
    ``causalflow[extra]`` that installs it.

    The original ImportError is kept as ``__cause__``.
    """
    if extra not in EXTRAS:
        raise ValueError(f"extra: expected one of {EXTRAS}, got {extra!r}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.partition(".")[0]
        raise MissingDependency(f"this feature of causalflow needs the optional dependency {package!r}: "
                                f'pip install "causalflow[{extra}]"', name=package) from exc
