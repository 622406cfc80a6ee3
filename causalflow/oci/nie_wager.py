"""The four simulation setups of Nie and Wager (2021), a family of the OCI validation suite.

Nie, X. and Wager, S. (2021), "Quasi-oracle estimation of heterogeneous treatment
effects", Biometrika 108(2), 299-319, section 6 (setups A-D). Every setup draws
covariates ``X``, a baseline main effect ``b(X)``, a propensity ``e(X)`` and an effect
``tau(X)``, and

    W ~ Bernoulli(e(X)),   Y = b(X) + (W - 0.5) tau(X) + sigma * eps,   eps ~ N(0, 1),

so that ``Y(1) - Y(0) = tau(X)``. With ``trim_eta(p) = max(eta, min(p, 1 - eta))``:

- A (difficult nuisance, simple effect): ``X ~ U(0, 1)^d``,
  ``b = sin(pi x1 x2) + 2 (x3 - 0.5)^2 + x4 + 0.5 x5``, ``e = trim_0.1(sin(pi x1 x2))``,
  ``tau = (x1 + x2) / 2``;
- B (randomised trial): ``X ~ N(0, I_d)``, ``b = max(x1 + x2, x3, 0) + max(x4 + x5, 0)``,
  ``e = 1/2``, ``tau = x1 + log(1 + exp(x2))``;
- C (easy effect, strong confounding): ``X ~ N(0, I_d)``, ``b = 2 log(1 + exp(x1 + x2 + x3))``,
  ``e = 1 / (1 + exp(x2 + x3))``, ``tau = 1``;
- D (unrelated treatment and control arms): ``X ~ N(0, I_d)``,
  ``b = (max(x1 + x2 + x3, 0) + max(x4 + x5, 0)) / 2``, ``e = 1 / (1 + exp(-x1) + exp(-x2))``,
  ``tau = max(x1 + x2 + x3, 0) - max(x4 + x5, 0)``.

The paper varies ``d`` in {6, 12} and ``sigma`` in {0.5, 1, 2, 4}; the suite uses ``d = 6``,
``sigma = 1``. The sample truths of a draw are ``SATE = mean tau(X_i)`` and
``SATT = mean of tau(X_i) over the treated``; the known ``tau`` gives the truth of any
trimmed or reweighted population as well.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ValidationError

__all__ = ["SETUPS", "simulate"]

SETUPS = ("A", "B", "C", "D")


def _trim(p, eta: float = 0.1):
    return np.clip(p, eta, 1 - eta)


def _softplus(z):
    return np.logaddexp(0.0, z)


def _setup(name: str, rng: np.random.Generator, n: int, d: int):
    if name == "A":
        X = rng.uniform(size=(n, d))
        x1, x2, x3, x4, x5 = X[:, :5].T
        b = np.sin(np.pi * x1 * x2) + 2 * (x3 - 0.5) ** 2 + x4 + 0.5 * x5
        e = _trim(np.sin(np.pi * x1 * x2))
        tau = (x1 + x2) / 2
    else:
        X = rng.normal(size=(n, d))
        x1, x2, x3, x4, x5 = X[:, :5].T
        if name == "B":
            b = np.maximum.reduce([x1 + x2, x3, np.zeros(n)]) + np.maximum(x4 + x5, 0)
            e = np.full(n, 0.5)
            tau = x1 + _softplus(x2)
        elif name == "C":
            b = 2 * _softplus(x1 + x2 + x3)
            e = 1 / (1 + np.exp(x2 + x3))
            tau = np.ones(n)
        else:
            b = (np.maximum(x1 + x2 + x3, 0) + np.maximum(x4 + x5, 0)) / 2
            e = 1 / (1 + np.exp(-x1) + np.exp(-x2))
            tau = np.maximum(x1 + x2 + x3, 0) - np.maximum(x4 + x5, 0)
    return X, b, e, tau


def simulate(setup: str, n: int, seed: int, d: int = 6, sigma: float = 1.0):
    """One draw of a Nie-Wager setup: ``(frame, tau)``.

    ``frame`` has ``x1 .. xd``, the treatment ``w`` (0/1) and the outcome ``y``; ``tau`` is
    the unit effect ``tau(X_i)`` (never shown to an estimator). The setups are in the module
    docstring.

    Examples
    --------
    >>> frame, tau = simulate("C", 1000, seed=0)
    >>> frame.shape, float(tau.mean())
    ((1000, 8), 1.0)
    >>> frame, tau = simulate("A", 500, seed=1)
    >>> bool(frame[[f"x{j}" for j in range(1, 7)]].min().min() >= 0), abs(float(tau.mean()) - 0.5) < 0.05
    (True, True)
    """
    if setup not in SETUPS:
        raise ValidationError(f"setup: must be one of {SETUPS}, got {setup!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 10:
        raise ValidationError(f"n: must be an integer >= 10, got {n!r}")
    if d < 5:
        raise ValidationError(f"d: the setups use x1 .. x5, so d must be >= 5, got {d!r}")
    rng = np.random.default_rng(seed)
    X, b, e, tau = _setup(setup, rng, int(n), int(d))
    w = (rng.random(int(n)) < e).astype(int)
    y = b + (w - 0.5) * tau + sigma * rng.normal(size=int(n))
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(1, d + 1)]).assign(w=w, y=y)
    return frame, tau
