r"""Conjugate posteriors of the linear model from its moments: numbers only.

K metrics that share their rows (one missingness group) follow the multivariate linear
model :math:`Y = XB + E` with rows :math:`e_i \sim N(0, \Sigma / w_i)` (design X of
DESIGN.md, n x p; weights w). The conjugate prior is matrix-normal inverse-Wishart,

.. math::

    \Sigma \sim IW(\Psi_0, \nu_0), \qquad B \mid \Sigma \sim MN(M_0, \Lambda_0^{-1}, \Sigma)
    \quad (\mathrm{vec}\,B \mid \Sigma \sim N(\mathrm{vec}\,M_0, \Sigma \otimes \Lambda_0^{-1})),

and the posterior is of the same family, a function of the moments X'WX, X'WY, Y'WY and n
only (:class:`~causalflow.linalg.twosls.Moments`):

.. math::

    \Lambda_n = \Lambda_0 + X'WX, \quad M_n = \Lambda_n^{-1}(\Lambda_0 M_0 + X'WY), \quad
    \Psi_n = \Psi_0 + Y'WY + M_0'\Lambda_0 M_0 - M_n'\Lambda_n M_n, \quad \nu_n = \nu_0 + n.

Per metric k this is the Normal-Inverse-Gamma posterior
:math:`\sigma_k^2 \sim IG(a, b_k)`, :math:`\beta_k \mid \sigma_k^2 \sim N(M_{n,k}, \sigma_k^2
\Lambda_n^{-1})` with :math:`a = (\nu_n - K + 1)/2` and :math:`b_k = \Psi_{n,kk}/2`; its
marginal is the multivariate t :math:`\beta_k \sim t_{2a}(M_{n,k}, (b_k/a)\Lambda_n^{-1})`.
Any contrast of coefficients D (m x p) and of metrics c (K,) is exactly t as well,

.. math::

    \theta = D B c \sim t_{2a}\big(D M_n c,\ (c'S c / a)\, D \Lambda_n^{-1} D'\big), \qquad S = \Psi_n / 2,

because :math:`DBc \mid \Sigma \sim N(DM_nc, (c'\Sigma c) D\Lambda_n^{-1}D')` and
:math:`c'\Sigma c \sim IG(a, c'Sc)` (a margin of the inverse Wishart). So a reward that
combines metrics (revenue - cost) uses their joint posterior, residual correlation included.

A state is stored as :class:`NIGPosterior` (M, Lambda, a, S); the prior is a state too, and
:func:`nig_update` is the one update, so a posterior updated batch by batch equals the
posterior of all the rows at once (sequential Bayes). A coefficient with zero prior
precision has a flat (improper) prior; with :math:`a_0 = b_0 = 0` the noise prior is
:math:`p(\Sigma) \propto |\Sigma|^{-K}`, i.e. :math:`p(\sigma^2) \propto 1/\sigma^2` for one
metric. Integrating the flat coordinates out leaves :math:`a = a_0 + (n - p_{flat})/2`
(the classical t with n - p degrees of freedom when every coefficient is flat), which the
prior state carries as the shape :math:`a_0 - p_{flat}/2`.

References
----------
Raiffa, H. and Schlaifer, R. (1961). *Applied Statistical Decision Theory*, ch. 13.
Gelman, A. et al. (2013). *Bayesian Data Analysis*, 3rd ed., sections 14.2 and 14.8.
Rossi, P., Allenby, G. and McCulloch, R. (2005). *Bayesian Statistics and Marketing*, 2.8.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> X = np.column_stack([np.ones(100), rng.normal(size=100)])
>>> Y = X @ np.array([[1.0], [2.0]]) + rng.normal(size=(100, 1))
>>> from causalflow.linalg.twosls import Moments
>>> prior = nig_prior(np.zeros((2, 1)), np.zeros(2), shape=0.0, scale=np.zeros(1))
>>> post = nig_update(prior, Moments(X.T @ X, None, X.T @ Y, 100, Y.T @ Y))
>>> bool(np.allclose(post.mean, np.linalg.lstsq(X, Y, rcond=None)[0])), post.dof
(True, 98.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy import stats

from ..errors import ValidationError
from .twosls import Moments, check_full_rank

__all__ = ["NIGPosterior", "PosteriorDraws", "draw_t", "nig_prior", "nig_update", "t_contrast", "t_summary"]


@dataclass(frozen=True, slots=True)
class NIGPosterior:
    """A matrix-normal inverse-Wishart state (prior or posterior) of K metrics.

    Attributes
    ----------
    mean : (p, K) M, the coefficient means
    precision : (p, p) Lambda; the coefficients of metric k have covariance sigma_k^2 Lambda^-1
    shape : float a, the inverse-gamma shape of every metric's sigma^2 (2a degrees of freedom)
    scale : (K, K) S = Psi / 2; its diagonal holds each metric's inverse-gamma scale b_k
    n : float, rows seen
    """

    mean: np.ndarray
    precision: np.ndarray
    shape: float
    scale: np.ndarray
    n: float = 0.0

    @property
    def dof(self) -> float:
        """2a, the degrees of freedom of the marginal t of every contrast."""
        return 2.0 * self.shape

    def covariance_root(self) -> np.ndarray:
        """Lower Cholesky factor R of Lambda^-1 (R R' = Lambda^-1)."""
        return np.linalg.cholesky(_inverse_spd(self.precision))


@dataclass(frozen=True, slots=True)
class PosteriorDraws:
    """Posterior draws of the coefficients of K metrics (from a sampler).

    Attributes
    ----------
    coef : (S, p, K) draws of B
    ess : float, the smallest effective sample size over the coefficients (NaN if unknown)
    rhat : float, the largest split R-hat over the coefficients (NaN if unknown)
    """

    coef: np.ndarray
    ess: float = float("nan")
    rhat: float = float("nan")

    def contrast(self, D: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(S, m) draws of D B c."""
        return np.einsum("mp,spk,k->sm", D, self.coef, c, optimize=True)


def _inverse_spd(a: np.ndarray) -> np.ndarray:
    inv = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a, lower=True), np.eye(len(a)))
    return 0.5 * (inv + inv.T)


def nig_prior(mean: np.ndarray, precision: np.ndarray, shape: float, scale: np.ndarray) -> NIGPosterior:
    """The prior as a state: coefficient means (p, K), a diagonal precision (p,) (0: flat),
    and the inverse-gamma shape a0 and scales b0 (K,) of the noise variances.

    The flat coordinates' integral is booked in the shape (module notes): a0 - p_flat / 2.
    """
    precision = np.asarray(precision, dtype=float)
    flat = int(np.count_nonzero(precision == 0.0))
    return NIGPosterior(np.asarray(mean, dtype=float), np.diag(precision), float(shape) - flat / 2.0,
                        np.diag(np.asarray(scale, dtype=float)), 0.0)


def nig_update(state: NIGPosterior, m: Moments, names: list[str] | None = None) -> NIGPosterior:
    """The posterior after the rows whose moments are ``m`` (X'WX = ``m.zwz``, X'WY = ``m.zwy``,
    Y'WY = ``m.ywy``): the formulas of the module notes, with the state as the prior."""
    if m.ywy is None:
        raise ValueError("nig_update: the moments need Y'WY (accumulate with outcome_gram=True)")
    precision = state.precision + m.zwz
    precision = 0.5 * (precision + precision.T)
    p = len(precision)
    try:
        factor = scipy.linalg.cho_factor(precision, lower=True)
    except np.linalg.LinAlgError:
        factor = None
    if factor is None or not np.all(np.abs(np.diag(factor[0])) > 1e-7 * np.sqrt(np.abs(np.diag(precision)))):
        check_full_rank(precision, names or [f"x{i}" for i in range(p)], "posterior precision")  # names the columns
        factor = scipy.linalg.cho_factor(precision, lower=True)
    mean = scipy.linalg.cho_solve(factor, state.precision @ state.mean + m.zwy)
    scale = state.scale + 0.5 * (m.ywy + state.mean.T @ state.precision @ state.mean - mean.T @ precision @ mean)
    scale = 0.5 * (scale + scale.T)
    shape = state.shape + m.n / 2.0
    if shape <= 0:
        raise ValidationError(f"y: {m.n + state.n:g} rows do not identify the {p} coefficients with flat "
                              "priors; give proper priors or more rows")
    if np.any(np.diag(scale) <= 0):
        raise ValidationError("y: a metric is fitted exactly (zero residual variance); its noise "
                              "variance has no proper posterior")
    return NIGPosterior(mean, precision, shape, scale, state.n + m.n)


def t_contrast(state: NIGPosterior, D: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Location (m,), scale matrix (m, m) and degrees of freedom of the t posterior of D B c."""
    D = np.atleast_2d(D)
    loc = D @ state.mean @ c
    root = scipy.linalg.solve_triangular(np.linalg.cholesky(state.precision), D.T, lower=True)  # L^-1 D'
    factor = float(c @ state.scale @ c) / state.shape
    return loc, factor * (root.T @ root), state.dof


def t_summary(loc: np.ndarray, scale: np.ndarray, dof: float, alpha: float) -> dict:
    """Posterior mean, sd, equal-tailed 1 - alpha credible interval and P(> 0) of independent
    t margins with locations ``loc`` and scales ``scale`` (standard deviations of the t's
    normal part, not its sd: the sd is scale sqrt(dof / (dof - 2)), infinite for dof <= 2)."""
    loc, scale = np.asarray(loc, dtype=float), np.asarray(scale, dtype=float)
    crit = stats.t.isf(alpha / 2, dof)
    sd = scale * np.sqrt(dof / (dof - 2)) if dof > 2 else np.full_like(scale, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = stats.t.cdf(loc / scale, dof)
    return {"estimate": loc, "std_error": sd, "ci_lower": loc - crit * scale, "ci_upper": loc + crit * scale,
            "prob_positive": positive}


def draw_t(loc: np.ndarray, root: np.ndarray, dof: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, m) draws of the multivariate t with location (m,), scale root R (m, m; the scale
    matrix is R R') and ``dof``: loc + R z / sqrt(g / dof), z ~ N(0, I), g ~ chi2(dof)."""
    z = rng.standard_normal((size, len(loc)))
    g = rng.chisquare(dof, size)
    return loc + (z @ root.T) / np.sqrt(g / dof)[:, None]
