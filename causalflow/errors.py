"""Errors and warnings raised by causalflow."""

from __future__ import annotations

__all__ = ["DesignWarning", "ValidationError"]


class ValidationError(ValueError):
    """Invalid input, detected before any work is done.

    The message names the column or argument and the problem.

    Examples
    --------
    >>> import causalflow as cf
    >>> isinstance(cf.ValidationError("column 'y': not numeric"), ValueError)
    True
    """


class DesignWarning(UserWarning):
    """The data look inconsistent with the declared design, but can still be analysed."""
