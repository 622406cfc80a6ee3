r"""``BayesianLinearRegression``: posterior effects, rewards and decisions from the same design.

The fit uses the design of :class:`~causalflow.models.linear.LinearModel` (Lin 2013: the arms,
the centred covariates and their interactions; the same ExperimentData, covariate handling,
weights and missingness groups; many metrics in one pass) and the same moments
(:func:`causalflow.backends.memory.accumulate`), plus Y'WY. With normal priors the posterior
is conjugate and exact (:mod:`causalflow.linalg.conjugate`): no sampler, core install only.
Student-t and hierarchical priors are sampled with pymc (the ``[bayes]`` extra) from the same
moments: the Gaussian likelihood depends on the data only through X'WX, X'WY, Y'WY and n.

Prior scales are in units of the metric's residual sd sigma (the conjugate form
:math:`\beta \mid \sigma^2 \sim N(m, \sigma^2 s^2)`), and for the coefficients of a covariate
column (and its interactions with the arms) per standard deviation of that column
(the autoscaling of Gelman et al. 2008 and rstanarm); prior means are in the metric's
units (per unit of the covariate).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from .._optional import require
from ..backends.memory import accumulate
from ..design import Covariates, DesignSource, _formula_frame, _materialise
from ..effects.posterior import DrawComponent, PosteriorEffects, PosteriorReward, TComponent, reward_weights
from ..effects.render import plain
from ..errors import DesignWarning, ValidationError
from ..linalg.conjugate import NIGPosterior, PosteriorDraws, draw_t, nig_prior, nig_update, t_contrast, t_summary
from ..linalg.layout import CoefLayout
from ..linalg.twosls import Moments
from ..validate import check_alpha, check_choice, to_pandas
from .linear import _missing_groups, parse_conditions

__all__ = ["PRIOR_GROUPS", "SCHEMA", "SCHEMA_VERSION", "BayesianLinearRegression", "BayesianLinearRegressionResults",
           "ContextEncoding", "HierarchicalPrior", "NoisePrior", "NormalPrior", "StudentTPrior", "design_rows",
           "resolve_priors"]

#: the coefficient groups a prior can be given for, besides "noise"
PRIOR_GROUPS = ("intercept", "effects", "covariates", "interactions")
SCHEMA = "causalflow.BayesianLinearRegression"
SCHEMA_VERSION = 1


def _number(value, argument: str, low: float = -math.inf, allow_inf: bool = False, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValidationError(f"{argument}: expected a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0)):
        raise ValidationError(f"{argument}: must be finite, got {value!r}")
    if value < low or (strict and value == low):
        raise ValidationError(f"{argument}: must be {'>' if strict else '>='} {low:g}, got {value!r}")
    return value


# -- priors ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NormalPrior:
    r"""Normal prior of a group of coefficients: :math:`\beta_j \mid \sigma^2 \sim N(m, (s\,\sigma / sd_j)^2)`.

    Parameters
    ----------
    mean : float
        m, in the metric's units (per unit of the covariate for covariate and interaction
        coefficients).
    scale : float
        s > 0 in units of the metric's residual sd sigma, per sd of the covariate column
        (sd_j = 1 for the intercept and the arm effects); ``math.inf`` is a flat prior.

    Notes
    -----
    Scaling by sigma makes the prior conjugate (Raiffa and Schlaifer 1961): the posterior is
    Normal-Inverse-Gamma in closed form. Defaults of :class:`BayesianLinearRegression`
    (weakly informative): intercept flat; arm effects N(0, 1 sigma), which says an effect of
    one residual sd is plausible and one of several sd is not; covariates N(0, 2.5 sigma per
    sd of the covariate) (Gelman et al. 2008; rstanarm's default); interactions
    N(0, 1 sigma per sd). A single prior passed as ``prior=`` is the prior of the arm effects.

    Examples
    --------
    >>> import causalflow as cf
    >>> cf.NormalPrior(mean=0.0, scale=0.5)
    NormalPrior(mean=0.0, scale=0.5)
    >>> cf.NormalPrior(scale=-1)
    Traceback (most recent call last):
    ...
    causalflow.errors.ValidationError: NormalPrior scale: must be > 0, got -1.0
    """

    mean: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "mean", _number(self.mean, "NormalPrior mean"))
        object.__setattr__(self, "scale", _number(self.scale, "NormalPrior scale", 0.0, allow_inf=True, strict=True))

    def describe(self) -> str:
        return "flat" if math.isinf(self.scale) else f"Normal({self.mean:g}, {self.scale:g} sigma)"


@dataclass(frozen=True, slots=True)
class StudentTPrior:
    r"""Student-t prior of a group of coefficients: :math:`\beta_j = m + (s\,\sigma/sd_j)\,t_j`,
    :math:`t_j \sim t_\nu` (heavier tails than normal: a large effect is not shrunk away;
    Gelman et al. 2008). Not conjugate: fitted with pymc (``pip install "causalflow[bayes]"``).

    Parameters
    ----------
    mean, scale : as :class:`NormalPrior` (scale finite)
    df : float, degrees of freedom nu > 0 (default 3)

    Examples
    --------
    >>> from causalflow.models.bayes import StudentTPrior
    >>> StudentTPrior(scale=1.0, df=3).df
    3.0
    """

    mean: float = 0.0
    scale: float = 1.0
    df: float = 3.0

    def __post_init__(self):
        object.__setattr__(self, "mean", _number(self.mean, "StudentTPrior mean"))
        object.__setattr__(self, "scale", _number(self.scale, "StudentTPrior scale", 0.0, strict=True))
        object.__setattr__(self, "df", _number(self.df, "StudentTPrior df", 0.0, strict=True))

    def describe(self) -> str:
        return f"StudentT({self.df:g}, {self.mean:g}, {self.scale:g} sigma)"


@dataclass(frozen=True, slots=True)
class HierarchicalPrior:
    r"""Hierarchical prior that pools the arm effects of many arms (partial pooling).

    .. math::

        \tau_j = \sigma(\mu + \omega z_j) + m, \quad z_j \sim N(0, 1), \quad
        \mu \sim N(0, s^2), \quad \omega \sim \mathrm{HalfNormal}(v)

    (non-centred; Gelman et al. 2013, BDA3 ch. 5): the effects share a common mean and are
    shrunk towards it as much as their spread omega (in sigma units) allows. Only for the
    ``"effects"`` group; fitted with pymc.

    Parameters
    ----------
    mean : float, m (metric units)
    scale : float, s: prior sd of the common mean, in sigma units
    spread : float, v: scale of the half-normal prior of the between-arm sd, in sigma units

    Examples
    --------
    >>> from causalflow.models.bayes import HierarchicalPrior
    >>> HierarchicalPrior(spread=0.2).spread
    0.2
    """

    mean: float = 0.0
    scale: float = 1.0
    spread: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "mean", _number(self.mean, "HierarchicalPrior mean"))
        object.__setattr__(self, "scale", _number(self.scale, "HierarchicalPrior scale", 0.0, strict=True))
        object.__setattr__(self, "spread", _number(self.spread, "HierarchicalPrior spread", 0.0, strict=True))

    def describe(self) -> str:
        return f"Hierarchical(mean {self.mean:g}, scale {self.scale:g} sigma, spread {self.spread:g} sigma)"


@dataclass(frozen=True, slots=True)
class NoisePrior:
    r"""Prior of each metric's noise variance: :math:`\sigma^2 \sim IG(a_0, b_0)`.

    The default a0 = b0 = 0 is :math:`p(\sigma^2) \propto 1/\sigma^2` (Jeffreys; improper,
    the posterior is proper with more rows than flat coefficients). With several metrics the
    conjugate fit's joint prior is inverse Wishart with 2 a0 + K - 1 degrees of freedom and
    scale diag(2 b0) (Rossi et al. 2005, 2.8), whose margins are these.

    Examples
    --------
    >>> from causalflow.models.bayes import NoisePrior
    >>> NoisePrior(shape=2.0, rate=1.0)
    NoisePrior(shape=2.0, rate=1.0)
    """

    shape: float = 0.0
    rate: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "shape", _number(self.shape, "NoisePrior shape", 0.0))
        object.__setattr__(self, "rate", _number(self.rate, "NoisePrior rate", 0.0))

    def describe(self) -> str:
        return "1/sigma^2" if self.shape == self.rate == 0 else f"InvGamma({self.shape:g}, {self.rate:g})"


_COEF_PRIORS = (NormalPrior, StudentTPrior, HierarchicalPrior)
DEFAULT_PRIORS = {"intercept": NormalPrior(0.0, math.inf), "effects": NormalPrior(0.0, 1.0),
                  "covariates": NormalPrior(0.0, 2.5), "interactions": NormalPrior(0.0, 1.0),
                  "noise": NoisePrior()}


def resolve_priors(prior) -> dict:
    """The prior of every group: None (defaults), one coefficient prior (the arm effects'), or a
    mapping group -> prior over ``PRIOR_GROUPS`` and ``"noise"``."""
    out = dict(DEFAULT_PRIORS)
    if prior is None:
        return out
    if isinstance(prior, _COEF_PRIORS):
        prior = {"effects": prior}
    if not isinstance(prior, Mapping):
        raise ValidationError(f"prior: expected a NormalPrior (StudentTPrior, HierarchicalPrior) or a mapping "
                              f"group -> prior over {list(PRIOR_GROUPS) + ['noise']}, got {prior!r}")
    for group, value in prior.items():
        if group == "noise":
            if not isinstance(value, NoisePrior):
                raise ValidationError(f"prior['noise']: expected a NoisePrior, got {value!r}")
        elif group not in PRIOR_GROUPS:
            raise ValidationError(f"prior: unknown group {group!r}; groups: {list(PRIOR_GROUPS) + ['noise']}")
        elif not isinstance(value, _COEF_PRIORS):
            raise ValidationError(f"prior[{group!r}]: expected a NormalPrior, StudentTPrior or HierarchicalPrior, "
                                  f"got {value!r}")
        elif isinstance(value, HierarchicalPrior) and group != "effects":
            raise ValidationError(f"prior[{group!r}]: a HierarchicalPrior pools arm effects; give it for 'effects'")
        out[group] = value
    return out


def _conjugate(priors: dict) -> bool:
    return all(isinstance(priors[g], NormalPrior) for g in PRIOR_GROUPS)


def _coefficient_priors(priors: dict, layout: CoefLayout, sd: np.ndarray) -> list:
    """Per coefficient: (group, prior, sd factor 1/sd_j) in the layout's order."""
    out = [("intercept", priors["intercept"], 1.0)]
    out += [("effects", priors["effects"], 1.0)] * layout.n_arms
    out += [("covariates", priors["covariates"], 1.0 / s) for s in sd]
    for _ in range(layout.n_arms):
        out += [("interactions", priors["interactions"], 1.0 / s) for s in sd]
    return out


def _normal_arrays(coefficients: list) -> tuple[np.ndarray, np.ndarray]:
    """Prior means (p,) and precisions (p,; 0 for flat) of all-normal coefficient priors."""
    mean = np.array([prior.mean for _, prior, _ in coefficients])
    precision = np.array([0.0 if math.isinf(prior.scale) else 1.0 / (prior.scale * f) ** 2
                          for _, prior, f in coefficients])
    return mean, precision


# -- contexts --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ContextEncoding:
    """How a context (covariate values of one unit) becomes the q design columns of the fit.

    Attributes
    ----------
    numeric : tuple of numeric covariate names
    categorical : tuple of (name, levels tuple); levels[0] is the reference
    names : tuple of the q design column names
    covariates : the fit's :class:`~causalflow.design.Covariates` when they are a formula
        (encoded by formulaic; not serialisable), else None
    """

    numeric: tuple
    categorical: tuple
    names: tuple
    covariates: object = None

    @classmethod
    def from_covariates(cls, cov: Covariates) -> ContextEncoding:
        if cov.formula is not None:
            return cls((), (), tuple(cov.names), cov)
        return cls(tuple(name for name, _ in cov.numeric), tuple((name, tuple(lv)) for name, _, lv in cov.categorical),
                   tuple(cov.names))

    @property
    def q(self) -> int:
        return len(self.names)

    @property
    def sources(self) -> tuple:
        if self.covariates is not None:
            return tuple(self.covariates.sources)
        return self.numeric + tuple(name for name, _ in self.categorical)

    def encode_one(self, context: Mapping) -> np.ndarray:
        """(q,) design columns of one context (a mapping covariate -> value)."""
        if self.covariates is not None:
            return self.encode(pd.DataFrame({k: [context[k]] for k in self.sources if k in context}))[0]
        out = np.zeros(self.q)
        for col, name in enumerate(self.numeric):
            if name not in context:
                raise ValidationError(f"context: covariate {name!r} is missing")
            value = context[name]
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(value):
                raise ValidationError(f"context: covariate {name!r} must be a finite number, got {value!r}")
            out[col] = value
        col = len(self.numeric)
        for name, levels in self.categorical:
            if name not in context:
                raise ValidationError(f"context: covariate {name!r} is missing")
            value = context[name]
            code = next((i for i, level in enumerate(levels) if _same_level(level, value)), None)
            if code is None:
                raise ValidationError(f"context: covariate {name!r} has the unknown category {value!r} "
                                      f"(known: {list(levels)})")
            if code:
                out[col + code - 1] = 1.0
            col += len(levels) - 1
        return out

    def encode(self, table: pd.DataFrame) -> np.ndarray:
        """(m, q) design columns of a table of contexts (other columns are ignored)."""
        for name in self.sources:
            if name not in table.columns:
                raise ValidationError(f"context: covariate column {name!r} is missing")
            if table[name].isna().any():
                raise ValidationError(f"context: covariate {name!r} has {int(table[name].isna().sum())} "
                                      "missing values")
        if self.covariates is not None:
            return self._encode_formula(table)
        out = np.zeros((len(table), self.q))
        for col, name in enumerate(self.numeric):
            series = table[name]
            if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                raise ValidationError(f"context: covariate {name!r} must be numeric (dtype {series.dtype})")
            values = series.to_numpy(dtype=float)
            if not np.isfinite(values).all():
                raise ValidationError(f"context: covariate {name!r} has infinite values")
            out[:, col] = values
        col = len(self.numeric)
        for name, levels in self.categorical:
            codes = _level_codes(table[name], levels)
            bad = codes < 0
            if bad.any():
                unknown = sorted({str(v) for v in table[name][bad].unique()})
                raise ValidationError(f"context: covariate {name!r} has unknown categories {unknown} "
                                      f"(known: {list(levels)})")
            for level in range(1, len(levels)):
                out[:, col + level - 1] = codes == level
            col += len(levels) - 1
        return out

    def _encode_formula(self, table: pd.DataFrame) -> np.ndarray:
        cov = self.covariates
        levels = dict(cov.levels)
        for name in cov.sources:
            if name in levels:
                codes = _level_codes(table[name], levels[name])
                if (codes < 0).any():
                    unknown = sorted({str(v) for v in table[name][codes < 0].unique()})
                    raise ValidationError(f"context: covariate {name!r} has unknown categories {unknown} "
                                          f"(known: {list(levels[name])})")
        matrix, _ = _materialise(cov.model_spec, _formula_frame(table, cov.sources), "context", cov.formula)
        if not np.isfinite(matrix).all():
            raise ValidationError("context: the formula gives non-finite design values for some contexts")
        return matrix

    def to_dict(self) -> dict:
        if self.covariates is not None:
            raise ValidationError("to_json: covariates given as a formula cannot be serialised without pickle; "
                                  "fit with a list of covariate columns to serve the model")
        categorical = []
        for name, levels in self.categorical:
            plain_levels = [plain(v) for v in levels]
            if not all(isinstance(v, (str, int, float, bool)) for v in plain_levels):
                raise ValidationError(f"to_json: the categories of {name!r} are not text, numbers or booleans")
            categorical.append({"name": name, "levels": plain_levels})
        return {"numeric": list(self.numeric), "categorical": categorical, "names": list(self.names)}

    @classmethod
    def from_dict(cls, d) -> ContextEncoding:
        numeric = _field(d, "numeric", list, "covariates")
        categorical = _field(d, "categorical", list, "covariates")
        names = _field(d, "names", list, "covariates")
        cats = []
        for i, c in enumerate(categorical):
            name = _field(c, "name", str, f"covariates.categorical[{i}]")
            levels = _field(c, "levels", list, f"covariates.categorical[{i}]")
            if len(levels) < 2:
                raise ValidationError(f"json: covariates.categorical[{i}].levels needs two or more levels")
            cats.append((name, tuple(levels)))
        if not all(isinstance(n, str) for n in numeric + names):
            raise ValidationError("json: covariates.numeric and covariates.names must hold names (text)")
        q = len(numeric) + sum(len(lv) - 1 for _, lv in cats)
        if len(names) != q:
            raise ValidationError(f"json: covariates.names has {len(names)} names for {q} design columns")
        return cls(tuple(numeric), tuple(cats), tuple(names))


def _same_level(level, value) -> bool:
    if isinstance(level, (bool, np.bool_)) != isinstance(value, (bool, np.bool_)):
        return False
    try:
        return bool(level == value)
    except (TypeError, ValueError):
        return False


def _level_codes(series: pd.Series, levels: tuple) -> np.ndarray:
    codes, uniques = pd.factorize(series)
    lookup = np.array([next((i for i, lv in enumerate(levels) if _same_level(lv, u)), -1)
                       for u in uniques.tolist()], dtype=np.int64)
    return lookup[codes] if len(lookup) else np.full(len(series), -1)


def _contexts(context) -> tuple[pd.DataFrame | Mapping, bool]:
    """(a table or a mapping, whether it is one context)."""
    if isinstance(context, Mapping):
        return context, True
    if isinstance(context, pd.Series):
        return context.to_dict(), True
    try:
        return to_pandas(context), False
    except ValidationError:
        raise ValidationError(f"context: expected a ContextVector (a mapping covariate -> value) or a table of "
                              f"contexts, got {type(context).__name__}") from None


def design_rows(xc: np.ndarray, layout: CoefLayout) -> np.ndarray:
    """(m, A, p): the design row of every arm a = 0..J at centred covariates xc (m, q):
    :math:`[1, e_a, x_c, e_a \\otimes x_c]`."""
    m, J = len(xc), layout.n_arms
    rows = np.zeros((m, J + 1, layout.p))
    rows[:, :, 0] = 1.0
    rows[:, :, layout.covariates] = xc[:, None, :]
    for j in range(1, J + 1):
        rows[:, j, layout.arm(j)] = 1.0
        rows[:, j, layout.interactions(j)] = xc
    return rows


# -- the estimator ---------------------------------------------------------------------------
class BayesianLinearRegression:
    r"""Bayesian linear regression of the experiment's design: posterior effects and rewards.

    The model of every metric k is the regression of :class:`~causalflow.LinearModel` with
    Gaussian noise, :math:`y_{ik} = x_i'\beta_k + e_{ik}`, :math:`e_i \sim N(0, \Sigma/w_i)`,
    on the design :math:`x_i = [1, A_i, X_{c,i}, A_i \otimes X_{c,i}]` (Lin 2013; covariates
    centred at their weighted mean, so each arm coefficient is the arm's average effect).
    With normal priors (the default) the posterior is the conjugate Normal-Inverse-Gamma
    (matrix-normal inverse-Wishart over the metrics) in closed form, computed from the
    moments X'WX, X'WY, Y'WY (:mod:`causalflow.linalg.conjugate`): exact, one pass, no
    sampler. With a :class:`~causalflow.models.bayes.StudentTPrior` or a
    :class:`~causalflow.models.bayes.HierarchicalPrior` the same model is sampled with pymc
    (NUTS, Hoffman and Gelman 2014) from the same moments; ``method="pymc"`` samples a
    normal-prior model too.

    Parameters
    ----------
    prior : NormalPrior, StudentTPrior, HierarchicalPrior or mapping, optional
        One prior: the prior of the arm effects. A mapping: priors of the groups
        ``"intercept"``, ``"effects"``, ``"covariates"``, ``"interactions"`` and ``"noise"``
        (a :class:`~causalflow.models.bayes.NoisePrior`); groups not named keep the
        defaults (see :class:`NormalPrior`): intercept flat, effects N(0, 1 sigma),
        covariates N(0, 2.5 sigma / sd(x)), interactions N(0, 1 sigma / sd(x)), noise
        p(sigma^2) ~ 1/sigma^2.
    weights : {"design", "none"}
        ``"design"``: the fit's weights (inverse propensities of an adaptive design),
        normalised to mean 1 so that they reweight rows without adding information;
        ``"none"``: unweighted. By the likelihood principle a posterior needs no
        propensities when assignment depends only on observed data (a bandit's log);
        weights matter when the linear model is misspecified.
    method : {"auto", "conjugate", "pymc"}
        ``"auto"``: conjugate with normal priors, pymc otherwise.
    draws, tune, chains : int
        pymc sampling: kept draws and tuning steps per chain, number of chains.
    seed : int
        Seed of the sampler (pymc only; the conjugate fit is deterministic).
    progress : bool
        Show pymc's progress bar.

    Notes
    -----
    **Estimand.** In an A/B or multi-arm test the arm coefficient's posterior is that of
    the average effect (``posterior ATE``; ``posterior CATE`` in a subgroup). In an
    encouragement design the fit regresses on the *assignment* (the reduced form), so its
    effects are the posterior of the intent-to-treat effect (``posterior ITT``); no
    Bayesian instrumental-variable (LATE) posterior is computed. **Clusters**: rows are
    independent given the coefficients; with ``cluster_by`` the posterior ignores the
    within-cluster correlation (too narrow when it is present), and a DesignWarning says so.

    References
    ----------
    Lin, W. (2013). Annals of Applied Statistics 7(1), 295-318.
    Gelman, A., Jakulin, A., Pittau, M. G. and Su, Y.-S. (2008). A weakly informative default
    prior distribution for logistic and other regression models. Annals of Applied
    Statistics 2(4), 1360-1383.
    Gelman, A. et al. (2013). *Bayesian Data Analysis*, 3rd ed., ch. 14.

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 1000), "x": rng.normal(size=1000)})
    >>> df["y"] = 1 + 0.5 * df.t + df.x + rng.normal(size=1000)
    >>> bmodel = cf.ExperimentData(df, intent_to_treat="t").add_metric(
    ...     y="y", exogenous_covariates=["x"]).fit(
    ...     cf.BayesianLinearRegression, prior=cf.NormalPrior(mean=0.0, scale=1.0))
    >>> row = bmodel.infer_effect().to_frame().iloc[0]
    >>> row.estimand, round(float(row.estimate), 2), round(float(row.std_error), 3), float(row.prob_positive)
    ('posterior ATE', 0.59, 0.064, 1.0)
    """

    def __init__(self, prior=None, *, weights: Literal["design", "none"] = "design",
                 method: Literal["auto", "conjugate", "pymc"] = "auto", draws: int = 1000, tune: int = 1000,
                 chains: int = 2, seed: int = 0, progress: bool = False):
        self.priors = resolve_priors(prior)
        self.prior = prior
        check_choice("weights", weights, ("design", "none"))
        check_choice("method", method, ("auto", "conjugate", "pymc"))
        if method == "conjugate" and not _conjugate(self.priors):
            raise ValidationError("method: 'conjugate' needs normal priors; Student-t and hierarchical priors "
                                  "are sampled (method='auto' or 'pymc')")
        for name, value, low in (("draws", draws, 10), ("tune", tune, 0), ("chains", chains, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValidationError(f"{name}: must be an integer >= {low}, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValidationError(f"seed: must be a non-negative integer, got {seed!r}")
        if not isinstance(progress, bool):
            raise ValidationError(f"progress: must be True or False, got {progress!r}")
        self.weights = weights
        self.method = method
        self.draws, self.tune, self.chains = int(draws), int(tune), int(chains)
        self.seed, self.progress = int(seed), progress

    @property
    def sampled(self) -> bool:
        """Whether the fit samples with pymc (non-normal priors, or ``method="pymc"``)."""
        return self.method == "pymc" or (self.method == "auto" and not _conjugate(self.priors))

    def __repr__(self) -> str:
        extra = "" if self.weights == "design" else f", weights={self.weights!r}"
        extra += "" if self.method == "auto" else f", method={self.method!r}"
        return f"BayesianLinearRegression(prior={self.prior!r}{extra})"

    def describe_priors(self) -> dict:
        return {g: p.describe() for g, p in self.priors.items()}

    def fit_spec(self, spec) -> BayesianLinearRegressionResults:
        data = spec.data
        if data.cluster_by:
            warnings.warn(f"BayesianLinearRegression: rows are modelled as independent; with cluster_by "
                          f"{data.cluster_by} the posterior ignores within-cluster correlation and is too narrow "
                          "when it is present", DesignWarning, stacklevel=3)
        source = spec.source()
        if self.weights == "none":
            source = replace(source, weights=None)
        cov = spec.covariates
        layout = CoefLayout(source.n_arms, cov.q)
        # the reduced form regresses on the randomised assignment: the instrument column if one is named
        arm_column = data.instrument if data.is_iv and data.instrument not in (None, data.intent_to_treat) \
            else data.intent_to_treat
        names = layout.names([f"{arm_column}[{a}]" for a in data.arms[1:]], cov.names)
        groups = []
        for rows, metrics in _missing_groups(source.outcomes):
            mu = cov.means(rows, source.weights)
            moments = _normalised(accumulate(source, rows, mu, metrics, outcome_gram=True).reduced_form())
            sd = np.sqrt(np.diag(moments.zwz)[layout.covariates] / moments.zwz[0, 0])
            coefficients = _coefficient_priors(self.priors, layout, sd)
            if self.sampled:
                posterior = _pymc_posterior(moments, coefficients, self.priors["noise"], layout, self)
            else:
                mean, precision = _normal_arrays(coefficients)
                noise = self.priors["noise"]
                prior = nig_prior(np.repeat(mean[:, None], len(metrics), axis=1), precision, noise.shape,
                                  np.full(len(metrics), noise.rate))
                posterior = nig_update(prior, moments, names)
            member = None
            if rows is not None:
                member = np.zeros(source.n, dtype=bool)
                member[rows] = True
            groups.append(_Group(metrics, mu, moments.n, posterior, rows, member))
        return BayesianLinearRegressionResults(
            metrics=spec.metrics, arms=data.arms, arm_column=arm_column,
            encoding=ContextEncoding.from_covariates(cov), layout=layout, groups=tuple(groups),
            estimator=self, iv=source.iv, spec=spec, weights=source.weights)

    @classmethod
    def from_json(cls, text) -> BayesianLinearRegressionResults:
        """A fitted model from :meth:`BayesianLinearRegressionResults.to_json` (a str or the parsed
        dict): what decisions need, checked (schema and version, fields, shapes, numbers).

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 200), "x": rng.normal(size=200)})
        >>> df["y"] = df.t * df.x + rng.normal(size=200)
        >>> bmodel = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression)
        >>> served = cf.BayesianLinearRegression.from_json(bmodel.to_json())
        >>> ctx = cf.ContextVector(x=1.5)
        >>> (cf.Policy(served.infer_reward(ctx)).decide(np.random.default_rng(3))
        ...  == cf.Policy(bmodel.infer_reward(ctx)).decide(np.random.default_rng(3)))
        True
        >>> cf.BayesianLinearRegression.from_json('{"schema": "causalflow.BayesianLinearRegression", '
        ...                                       '"schema_version": 99}')
        Traceback (most recent call last):
        ...
        causalflow.errors.ValidationError: json: schema_version 99 is not supported; this causalflow reads version 1
        """
        return BayesianLinearRegressionResults._from_json(text)


def _normalised(m: Moments) -> Moments:
    """Moments with the weights rescaled to mean 1 (sum of weights = n)."""
    total = m.zwz[0, 0]
    if total == m.n:
        return m
    f = m.n / total
    return Moments(m.zwz * f, None, m.zwy * f, m.n, m.ywy * f)


@dataclass(frozen=True, slots=True)
class _Group:
    """Metrics that share their rows, and their posterior."""

    metrics: tuple  # indices into the model's metrics
    mu: np.ndarray  # covariate centring (q,)
    n: int
    posterior: NIGPosterior | PosteriorDraws
    rows: np.ndarray | None = None  # fitted rows (None: all); only with the data
    member: np.ndarray | None = None


# -- sampling with pymc ----------------------------------------------------------------------
def _pymc_posterior(m: Moments, coefficients: list, noise: NoisePrior, layout: CoefLayout,
                    options: BayesianLinearRegression) -> PosteriorDraws:
    r"""Sample the model from its moments with pymc: the Gaussian log-likelihood of K metrics is
    :math:`-\frac n2 \log|\Sigma| - \frac12 \mathrm{tr}\,\Sigma^{-1}(Y'WY - B'X'WY - Y'WXB + B'X'WXB)`
    (up to a constant), a function of the moments only. With K > 1 the noise covariance is
    :math:`\Sigma = \mathrm{diag}(\sigma) R\,\mathrm{diag}(\sigma)` with an LKJ(1) prior on R
    (Lewandowski et al. 2009) and each sigma's own prior (not the conjugate inverse Wishart)."""
    pm = require("pymc", "bayes")
    pt = require("pytensor.tensor", "bayes")
    p, K = m.zwy.shape
    zwz, zwy, ywy = (pt.as_tensor_variable(np.asarray(a, dtype=float)) for a in (m.zwz, m.zwy, m.ywy))
    with pm.Model():
        if noise.shape == 0 and noise.rate == 0:
            log_sigma = pm.Flat("log_sigma", shape=K)  # p(sigma) ~ 1/sigma, i.e. p(sigma^2) ~ 1/sigma^2
            sigma = pm.Deterministic("sigma", pt.exp(log_sigma))
        else:
            sigma2 = pm.InverseGamma("sigma2", alpha=max(noise.shape, 1e-12), beta=max(noise.rate, 1e-12), shape=K)
            sigma = pm.Deterministic("sigma", pt.sqrt(sigma2))
        # one vector variable per kind of prior (a small graph: fast gradients), then B in layout order
        parts, order = [], []
        kinds: dict = {}
        for j, (_, prior, _) in enumerate(coefficients):
            if isinstance(prior, NormalPrior) and math.isinf(prior.scale):
                key = ("flat",)
            elif isinstance(prior, NormalPrior):
                key = ("normal",)
            elif isinstance(prior, StudentTPrior):
                key = ("t", prior.df)
            else:
                key = ("pooled",)
            kinds.setdefault(key, []).append(j)
        for key, members in kinds.items():
            size = len(members)
            mean = np.array([coefficients[j][1].mean for j in members])[:, None]
            if key[0] == "flat":
                parts.append(pm.Flat("flat", shape=(size, K)))
            elif key[0] == "pooled":
                prior = coefficients[members[0]][1]
                common = pm.Normal("effects_mean", 0.0, prior.scale, shape=K)
                spread = pm.HalfNormal("effects_spread", prior.spread, shape=K)
                z = pm.Normal("effects_z", 0.0, 1.0, shape=(size, K))
                parts.append(mean + sigma * (common + spread * z))
            else:
                scale = np.array([coefficients[j][1].scale * coefficients[j][2] for j in members])[:, None]
                if key[0] == "normal":
                    z = pm.Normal("normal_z", 0.0, 1.0, shape=(size, K))
                else:
                    z = pm.StudentT(f"t{len(parts)}_z", nu=key[1], mu=0.0, sigma=1.0, shape=(size, K))
                parts.append(mean + sigma * scale * z)
            order += members
        B = pm.Deterministic("coef", pt.concatenate(parts, axis=0)[np.argsort(order)])  # (p, K)
        cross = B.T @ zwy
        resid = ywy - cross - cross.T + B.T @ zwz @ B  # E'WE (K, K)
        if K == 1:
            loglik = -m.n * pt.log(sigma[0]) - 0.5 * resid[0, 0] / sigma[0] ** 2
        else:
            corr = pm.LKJCorr("corr", n=K, eta=1.0, return_matrix=True)
            cov = corr * pt.outer(sigma, sigma)
            loglik = (-0.5 * m.n * pt.log(pt.nlinalg.det(cov))
                      - 0.5 * pt.nlinalg.trace(pt.nlinalg.matrix_inverse(cov) @ resid))
        pm.Potential("likelihood", loglik)
        idata = pm.sample(draws=options.draws, tune=options.tune, chains=options.chains, cores=1,
                          random_seed=options.seed, progressbar=options.progress, compute_convergence_checks=False)
    coef = idata.posterior["coef"].values  # (chains, draws, p, K)
    az = require("arviz", "bayes")
    summary = az.summary(idata, var_names=["coef"], kind="diagnostics")
    return PosteriorDraws(coef.reshape(-1, p, K), float(summary["ess_bulk"].min()), float(summary["r_hat"].max()))


# -- results ---------------------------------------------------------------------------------
class BayesianLinearRegressionResults:
    r"""A fitted :class:`BayesianLinearRegression`: posterior effects, rewards, decisions, JSON.

    Attributes
    ----------
    metrics : tuple of metric names
    arms : tuple of arm labels (control first)
    arm_column : name of the assignment column
    encoding : ContextEncoding, how a context becomes design columns
    layout : CoefLayout, where each coefficient sits
    names : list of the p coefficient names
    estimator : the BayesianLinearRegression (None when loaded from JSON)
    spec : the MetricSpec (None when loaded from JSON or updated with new rows)

    Notes
    -----
    Each group of metrics that share their rows holds its posterior: conjugate
    (:class:`~causalflow.linalg.conjugate.NIGPosterior`: M, Lambda, a, S; every contrast
    :math:`DBc` is exactly :math:`t_{2a}(DMc, (c'Sc/a) D\Lambda^{-1}D')`), or pymc's draws.

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 500)})
    >>> df["y"] = 1 + 0.5 * df.t + rng.normal(size=500)
    >>> bmodel = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y").fit(cf.BayesianLinearRegression)
    >>> bmodel.params().round(2).y.tolist(), bmodel.names
    ([1.06, 0.33], ['Intercept', 't[1]'])
    """

    def __init__(self, *, metrics, arms, arm_column, encoding: ContextEncoding, layout: CoefLayout, groups: tuple,
                 estimator=None, iv: bool = False, spec=None, weights=None, method: str | None = None,
                 priors: dict | None = None):
        self.metrics = tuple(metrics)
        self.arms = tuple(arms)
        self.arm_column = arm_column
        self.encoding = encoding
        self.layout = layout
        self.estimator = estimator
        self.spec = spec
        self._groups = groups
        self._iv = iv
        self._weights = weights
        self.method = method or ("pymc" if estimator is not None and estimator.sampled else "conjugate")
        self.priors = priors if priors is not None else (estimator.describe_priors() if estimator else {})
        self.names = layout.names([f"{arm_column}[{a}]" for a in self.arms[1:]], encoding.names)
        self._reward_cache: dict = {}  # memo of the reward posteriors' parameters; never changes results

    def __repr__(self) -> str:
        return (f"BayesianLinearRegressionResults({len(self.metrics)} metric(s), {self.layout.p} parameters, "
                f"method={self.method!r})")

    @property
    def design(self):
        """The :class:`~causalflow.data.Design` record of the experiment (None when loaded)."""
        return None if self.spec is None else self.spec.data.design

    @property
    def covariates(self):
        return None if self.spec is None else self.spec.covariates

    @property
    def estimand(self) -> str:
        """``"ITT"`` in an encouragement design (the reduced form), else ``"ATE"``."""
        return "ITT" if self._iv else "ATE"

    # -- coefficients --------------------------------------------------------------------
    def _per_metric(self, fn) -> pd.DataFrame:
        out = np.empty((self.layout.p, len(self.metrics)))
        for g in self._groups:
            for pos, k in enumerate(g.metrics):
                out[:, k] = fn(g.posterior, pos)
        return pd.DataFrame(out, index=self.names, columns=list(self.metrics))

    def params(self) -> pd.DataFrame:
        """Posterior means of the coefficients (p x K frame)."""
        return self._per_metric(lambda post, pos: post.mean[:, pos] if isinstance(post, NIGPosterior)
                                else post.coef[:, :, pos].mean(axis=0))

    def posterior_sd(self) -> pd.DataFrame:
        """Posterior sds of the coefficients (p x K frame)."""
        def sd(post, pos):
            if isinstance(post, PosteriorDraws):
                return post.coef[:, :, pos].std(axis=0, ddof=1)
            _, scale, dof = t_contrast(post, np.eye(self.layout.p), np.eye(post.mean.shape[1])[pos])
            return t_summary(np.zeros(self.layout.p), np.sqrt(np.diag(scale)), dof, 0.05)["std_error"]
        return self._per_metric(sd)

    # -- effects -------------------------------------------------------------------------
    def infer_effect(self, condition_on=None, alpha: float = 0.05) -> PosteriorEffects:
        r"""Posterior of every arm's effect on every metric, overall or in subgroups.

        The effect of arm j at the covariate shift :math:`\bar x_S` of a condition S is the
        contrast :math:`d'\beta_k` with :math:`d = e_{A_j} + \sum_l \bar x_{S,l} e_{A_j X_l}`
        (:class:`~causalflow.linalg.layout.CoefLayout`, as for ``LinearModel``). Conjugate
        fit: its posterior is exactly :math:`t_{2a}(d'M_k, (b_k/a) d'\Lambda^{-1}d)`
        (:mod:`causalflow.linalg.conjugate`); ``estimate`` is the posterior mean,
        ``std_error`` the posterior sd, ``ci_*`` the equal-tailed credible interval and
        ``prob_positive`` :math:`P(d'\beta_k > 0 \mid data)`. Sampled fit: the same from the
        draws.

        Parameters
        ----------
        condition_on : str or list of str, optional
            Subgroups in the language of :mod:`causalflow.expr`; needs the data (not
            available on a model loaded from JSON or updated with new rows).
        alpha : float
            1 - level of the credible intervals.

        Returns
        -------
        PosteriorEffects (``.infer_rank()`` ranks the arms)

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 2000), "x": rng.normal(size=2000)})
        >>> df["y"] = (0.5 + 0.5 * df.x) * df.t + rng.normal(size=2000)
        >>> eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression).infer_effect(
        ...     condition_on=["x > 1", "x < -1"])
        >>> eff.to_frame()[["condition", "estimand"]].values.tolist()
        [['x > 1', 'posterior CATE'], ['x < -1', 'posterior CATE']]
        """
        alpha = check_alpha(alpha)
        if condition_on is not None and self.spec is None:
            raise ValidationError("condition_on: this model has no data (loaded from JSON or updated with new "
                                  "rows); fit on an ExperimentData to condition on subgroups")
        conditions = [None] if self.spec is None else parse_conditions(condition_on, self.spec.covariates.sources)
        originals = self.spec.covariates.original() if conditions[0] is not None else None
        points = []
        for cond in conditions:
            shifts = {gi: self._shift(cond, g, originals) for gi, g in enumerate(self._groups)}
            points.append(("all" if cond is None else cond.text, shifts))
        J = self.layout.n_arms
        records = []
        for k, metric in enumerate(self.metrics):
            gi, pos = self._locate(k)
            g = self._groups[gi]
            for j in range(1, J + 1):
                for (label, shifts), cond in zip(points, conditions):
                    xbar, size = shifts[gi]
                    d = self.layout.effect(j, xbar)[None, :]
                    summary, dof = self._contrast_summary(g.posterior, d, pos, alpha)
                    records.append(dict(metric=metric, arm=self.arms[j], condition=label,
                                        estimand="posterior " + self._estimand(cond is not None),
                                        **{key: float(v[0]) for key, v in summary.items()}, n=int(size), dof=dof))
        points = tuple((label, {gi: s[0] for gi, s in shifts.items()}) for label, shifts in points)
        return PosteriorEffects(tuple(records), alpha, self, points, self.method)

    infer_effects = infer_effect

    def _estimand(self, conditional: bool) -> str:
        if self._iv:
            return "ITT"
        return "CATE" if conditional else "ATE"

    def _locate(self, k: int) -> tuple[int, int]:
        for gi, g in enumerate(self._groups):
            if k in g.metrics:
                return gi, g.metrics.index(k)
        raise KeyError(k)

    def _shift(self, cond, g: _Group, originals) -> tuple[np.ndarray, int]:
        if cond is None:  # a model loaded from JSON has no data: the average needs none
            return np.zeros(self.layout.q), g.n
        return self.spec.covariates.condition_shift(cond, originals, g.member, g.n, g.mu, self._weights)

    @staticmethod
    def _contrast_summary(post, D: np.ndarray, pos: int, alpha: float) -> tuple[dict, object]:
        if isinstance(post, NIGPosterior):
            c = np.zeros(post.mean.shape[1])
            c[pos] = 1.0
            loc, scale, dof = t_contrast(post, D, c)
            return t_summary(loc, np.sqrt(np.diag(scale)), dof, alpha), plain(dof)
        c = np.zeros(post.coef.shape[2])
        c[pos] = 1.0
        draws = post.contrast(D, c)
        lower, upper = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
        return {"estimate": draws.mean(axis=0), "std_error": draws.std(axis=0, ddof=1), "ci_lower": lower,
                "ci_upper": upper, "prob_positive": (draws > 0).mean(axis=0)}, None

    def effect_draws(self, shifts: dict, weights: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        """(n_draws, A) joint posterior draws of every arm's effect (control: 0) on the reward
        with metric ``weights`` (K,), at the covariate shift of each metric group."""
        J = self.layout.n_arms
        total = np.zeros((n_draws, J))
        for gi, g in enumerate(self._groups):
            c = weights[list(g.metrics)]
            if not c.any():
                continue
            D = self.layout.effects(shifts[gi])
            total += self._draws(g.posterior, D, c, n_draws, rng)
        return np.column_stack([np.zeros(n_draws), total])

    @staticmethod
    def _draws(post, D: np.ndarray, c: np.ndarray, n_draws: int, rng) -> np.ndarray:
        if isinstance(post, NIGPosterior):
            loc, scale, dof = t_contrast(post, D, c)
            return draw_t(loc, np.linalg.cholesky(scale), dof, n_draws, rng)
        draws = post.contrast(D, c)
        return draws[rng.integers(len(draws), size=n_draws)]

    # -- rewards -------------------------------------------------------------------------
    def infer_reward(self, context, reward=None, alpha: float = 0.05) -> PosteriorReward:
        r"""Posterior of every arm's expected reward for one context or a table of contexts.

        The reward of arm a at context x is :math:`r_a(x) = x_a'Bc`, the design row
        :math:`x_a = [1, e_a, x - \mu, e_a \otimes (x - \mu)]` times the coefficients of the
        metrics, weighted by c. Conjugate fit: the arms' rewards of one context are jointly
        multivariate t, :math:`t_{2a}(X_x M c, (c'Sc/a) X_x \Lambda^{-1} X_x')`
        (:mod:`causalflow.linalg.conjugate`); the joint posterior of the metrics enters
        through :math:`c'Sc`. :class:`causalflow.Policy` decides from it (Thompson 1933).

        Parameters
        ----------
        context : ContextVector (a mapping covariate -> value) or a table of contexts
            Every covariate of the fit; other keys or columns are ignored. A missing
            covariate, a category the experiment did not have or a non-number where a
            number is expected is a ValidationError.
        reward : None, str or mapping
            None: the only metric; a metric name; or metric -> weight
            (``{"revenue": 1, "cost": -1}``).
        alpha : float
            1 - level of the credible intervals of the record.

        Returns
        -------
        PosteriorReward

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"arm": rng.choice(["a", "b"], 1000), "device": rng.choice(["app", "web"], 1000)})
        >>> df["revenue"] = 2 + ((df.arm == "b") & (df.device == "web")) + rng.normal(size=1000)
        >>> df["cost"] = 1 + 0.2 * (df.arm == "b") + rng.normal(size=1000)
        >>> bmodel = cf.ExperimentData(df, intent_to_treat="arm").add_metric(
        ...     y=["revenue", "cost"], exogenous_covariates=["device"]).fit(cf.BayesianLinearRegression)
        >>> reward = bmodel.infer_reward(cf.ContextVector(device="web"), reward={"revenue": 1, "cost": -1})
        >>> reward.label, reward.mean.round(1).tolist()
        ('revenue - cost', [[0.9, 1.8]])
        >>> bmodel.infer_reward(cf.ContextVector(device="tv"), reward="revenue")
        Traceback (most recent call last):
        ...
        causalflow.errors.ValidationError: context: covariate 'device' has the unknown category 'tv' (known: ...)
        """
        alpha = check_alpha(alpha)
        table, single = _contexts(context)
        if single:
            raw = self.encoding.encode_one(table)[None, :]
            index = ()
        else:
            if len(table) == 0:
                raise ValidationError("context: the table of contexts is empty")
            raw = self.encoding.encode(table)
            index = tuple(table.index.tolist())
        weights, label = reward_weights(reward, self.metrics)
        return self._reward_at(raw, weights, label, single, alpha, index)

    def _reward_at(self, raw: np.ndarray, weights: np.ndarray, label: str, single: bool, alpha: float,
                   index: tuple = ()) -> PosteriorReward:
        """:meth:`infer_reward` at encoded contexts raw (m, q) and metric weights (K,)."""
        components = []
        for gi, g in enumerate(self._groups):
            c = weights[list(g.metrics)]
            if not c.any():
                continue
            rows = design_rows(raw - g.mu, self.layout)
            beta, root, dof = self._reward_parameters(gi, c)
            if root is not None:
                U = rows @ root
                components.append(TComponent(rows @ beta, np.linalg.cholesky(U @ np.swapaxes(U, 1, 2)), dof))
            else:
                components.append(DrawComponent(rows, beta))
        return PosteriorReward(self.arms, label, tuple(components), weights, single, self, alpha, index)

    def _reward_parameters(self, gi: int, c: np.ndarray) -> tuple:
        """Per metric group and metric weights c: the reward coefficients' posterior, (M c, root R
        with R R' = (c'Sc / a) Lambda^-1, dof) for a conjugate posterior, (draws B c (S, p), None,
        None) for a sampled one. Memoised: the posterior never changes."""
        key = (gi, c.tobytes())
        if key not in self._reward_cache:
            post = self._groups[gi].posterior
            if isinstance(post, NIGPosterior):
                factor = float(c @ post.scale @ c) / post.shape
                self._reward_cache[key] = (post.mean @ c, post.covariance_root() * math.sqrt(factor), post.dof)
            else:
                self._reward_cache[key] = (np.einsum("spk,k->sp", post.coef, c), None, None)
        return self._reward_cache[key]

    # -- new rows ------------------------------------------------------------------------
    def update(self, table) -> BayesianLinearRegressionResults:
        r"""The posterior after more rows (sequential Bayes; the fitted posterior is the prior).

        ``table`` holds the assignment column, the metric columns and the covariates. Each
        metric group's moments over the new rows (at the fit's covariate centring, one pass
        of :func:`causalflow.backends.memory.accumulate`) update its conjugate posterior
        exactly (:func:`causalflow.linalg.conjugate.nig_update`): the same posterior as a fit
        on all rows at that centring. Rows are unweighted: a model fitted with design weights
        (an adaptive design with ``weights="design"``) cannot be updated. A row enters a group
        when all of the group's metrics are observed. Returns a new model without data (its
        conditions need a refit).

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 400), "x": rng.normal(size=400)})
        >>> df["y"] = 0.3 * df.t + df.x + rng.normal(size=400)
        >>> bmodel = cf.ExperimentData(df[:200], intent_to_treat="t").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression)
        >>> bmodel.update(df[200:])._groups[0].posterior.n
        400.0
        """
        if self.method != "conjugate":
            raise ValidationError("update: only a conjugate posterior updates in closed form; refit a sampled model")
        if self._weights is not None:
            raise ValidationError("update: this model was fitted with design weights; fit with "
                                  "BayesianLinearRegression(weights='none') to add unweighted rows")
        table = to_pandas(table)
        if len(table) == 0:
            return self
        for name in (self.arm_column, *self.metrics):
            if name not in table.columns:
                raise ValidationError(f"update: column {name!r} is not in the table")
        codes = _level_codes(table[self.arm_column], self.arms)
        if (codes < 0).any():
            unknown = sorted({str(v) for v in table[self.arm_column][codes < 0].unique()})
            raise ValidationError(f"update: column {self.arm_column!r} has values {unknown} that are not arms "
                                  f"({list(self.arms)})")
        raw = self.encoding.encode(table)
        outcomes = []
        for name in self.metrics:
            series = table[name]
            if not pd.api.types.is_numeric_dtype(series):
                raise ValidationError(f"update: metric {name!r} is not numeric")
            values = series.to_numpy(dtype=float, na_value=np.nan)
            if np.isinf(values).any():
                raise ValidationError(f"update: metric {name!r} has infinite values")
            outcomes.append(values)
        groups = [self._update_group(g, codes, raw, outcomes) for g in self._groups]
        return self._replaced(tuple(groups))

    def update_moments(self, codes: np.ndarray, raw: np.ndarray, outcomes: list) -> BayesianLinearRegressionResults:
        """:meth:`update` from arrays: arm codes (n,), encoded covariates (n, q) and the metrics'
        values (one (n,) array per metric); no checks (the bandit loop's inner step)."""
        return self._replaced(tuple(self._update_group(g, codes, raw, outcomes) for g in self._groups))

    def _replaced(self, groups: tuple) -> BayesianLinearRegressionResults:
        return BayesianLinearRegressionResults(
            metrics=self.metrics, arms=self.arms, arm_column=self.arm_column, encoding=self.encoding,
            layout=self.layout, groups=groups, estimator=self.estimator, iv=self._iv, spec=None, weights=None,
            method=self.method, priors=self.priors)

    def _update_group(self, g: _Group, codes, raw, outcomes) -> _Group:
        ys = [outcomes[k] for k in g.metrics]
        complete = np.logical_and.reduce([np.isfinite(y) for y in ys])
        rows = None if complete.all() else np.flatnonzero(complete)
        n = len(codes) if rows is None else len(rows)
        if n == 0:
            return replace(g, rows=None, member=None)
        covariates = Covariates(self.encoding.names, self.encoding.names,
                                tuple((name, raw[:, i]) for i, name in enumerate(self.encoding.names)), ())
        source = DesignSource(assign=np.asarray(codes, dtype=np.int64), dose=None, treated=None,
                              n_arms=self.layout.n_arms, covariates=covariates, weights=None, clusters=None,
                              n_clusters=None, outcomes=tuple(ys))
        moments = accumulate(source, rows, g.mu, tuple(range(len(ys))), outcome_gram=True)
        return _Group(g.metrics, g.mu, g.n + n, nig_update(g.posterior, moments, self.names), None, None)

    # -- serving -------------------------------------------------------------------------
    def to_json(self) -> str:
        """JSON with what decisions need: arms, metrics, the covariate encoding (numeric columns,
        categories and their levels), each metric group's centring and posterior parameters
        (conjugate: mean, precision, shape, scale; sampled: the coefficient draws), and the
        schema name and version. No pickle; floats are written exactly (shortest repr), so a
        loaded model decides identically for the same seed (see :meth:`BayesianLinearRegression.from_json`).

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf, json
        >>> df = pd.DataFrame({"t": [0, 1] * 50, "y": np.arange(100.0) % 7})
        >>> text = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y").fit(
        ...     cf.BayesianLinearRegression).to_json()
        >>> sorted(json.loads(text))[:4]
        ['arm_column', 'arms', 'covariates', 'estimand']
        """
        arms = [plain(a) for a in self.arms]
        if not all(isinstance(a, (str, int, float, bool)) for a in arms):
            raise ValidationError("to_json: arm labels must be text, numbers or booleans")
        groups = []
        for g in self._groups:
            post = g.posterior
            if isinstance(post, NIGPosterior):
                posterior = {"kind": "nig", "mean": post.mean.tolist(), "precision": post.precision.tolist(),
                             "shape": float(post.shape), "scale": post.scale.tolist(), "n": float(post.n)}
            else:
                posterior = {"kind": "draws", "coef": post.coef.tolist()}
            groups.append({"metrics": [int(k) for k in g.metrics], "mu": g.mu.tolist(), "n": int(g.n),
                           "posterior": posterior})
        out = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "arm_column": self.arm_column, "arms": arms,
               "metrics": list(self.metrics), "estimand": self.estimand, "method": self.method,
               "priors": dict(self.priors), "covariates": self.encoding.to_dict(), "groups": groups}
        return json.dumps(out, allow_nan=False)

    @classmethod
    def _from_json(cls, text) -> BayesianLinearRegressionResults:
        if isinstance(text, (str, bytes)):
            try:
                d = json.loads(text)
            except ValueError as exc:
                raise ValidationError(f"json: not valid JSON ({exc})") from None
        else:
            d = text
        if not isinstance(d, dict):
            raise ValidationError("json: expected an object at the top level")
        if d.get("schema") != SCHEMA:
            raise ValidationError(f"json: schema {d.get('schema')!r} is not {SCHEMA!r}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise ValidationError(f"json: schema_version {version!r} is not supported; this causalflow reads "
                                  f"version {SCHEMA_VERSION}")
        arm_column = _field(d, "arm_column", str)
        arms = _field(d, "arms", list)
        metrics = _field(d, "metrics", list)
        estimand = _field(d, "estimand", str)
        method = _field(d, "method", str)
        priors = d.get("priors", {})
        if not isinstance(priors, dict):
            raise ValidationError("json: field priors has the wrong type (a description object)")
        encoding = ContextEncoding.from_dict(_field(d, "covariates", dict))
        if len(arms) < 2 or len({json.dumps(a) for a in arms}) != len(arms):
            raise ValidationError("json: arms must list two or more distinct labels")
        if not metrics or not all(isinstance(m, str) for m in metrics):
            raise ValidationError("json: metrics must list metric names")
        if estimand not in ("ATE", "ITT") or method not in ("conjugate", "pymc"):
            raise ValidationError("json: estimand must be 'ATE' or 'ITT' and method 'conjugate' or 'pymc'")
        layout = CoefLayout(len(arms) - 1, encoding.q)
        p = layout.p
        groups, seen = [], []
        for i, gd in enumerate(_field(d, "groups", list)):
            where = f"groups[{i}]"
            members = _field(gd, "metrics", list, where)
            if not members or not all(isinstance(k, int) and 0 <= k < len(metrics) for k in members):
                raise ValidationError(f"json: {where}.metrics must hold metric indices")
            seen += members
            K = len(members)
            mu = _array(_field(gd, "mu", list, where), (encoding.q,), f"{where}.mu")
            n = _field(gd, "n", int, where)
            pd_ = _field(gd, "posterior", dict, where)
            kind = _field(pd_, "kind", str, f"{where}.posterior")
            if kind == "nig":
                mean = _array(_field(pd_, "mean", list, f"{where}.posterior"), (p, K), f"{where}.posterior.mean")
                precision = _array(_field(pd_, "precision", list, f"{where}.posterior"), (p, p),
                                   f"{where}.posterior.precision")
                scale = _array(_field(pd_, "scale", list, f"{where}.posterior"), (K, K), f"{where}.posterior.scale")
                shape = _field(pd_, "shape", (int, float), f"{where}.posterior")
                seen_n = _field(pd_, "n", (int, float), f"{where}.posterior")
                if not (np.allclose(precision, precision.T) and np.allclose(scale, scale.T)) or shape <= 0:
                    raise ValidationError(f"json: {where}.posterior: precision and scale must be symmetric and "
                                          "shape positive")
                try:
                    np.linalg.cholesky(precision)
                    np.linalg.cholesky(scale)
                except np.linalg.LinAlgError:
                    raise ValidationError(f"json: {where}.posterior: precision and scale must be positive "
                                          "definite") from None
                posterior = NIGPosterior(mean, precision, float(shape), scale, float(seen_n))
            elif kind == "draws":
                coef = np.asarray(_field(pd_, "coef", list, f"{where}.posterior"), dtype=float)
                if coef.ndim != 3 or coef.shape[1:] != (p, K) or not np.isfinite(coef).all():
                    raise ValidationError(f"json: {where}.posterior.coef must be finite draws of shape (S, {p}, {K})")
                posterior = PosteriorDraws(coef)
            else:
                raise ValidationError(f"json: {where}.posterior.kind must be 'nig' or 'draws', got {kind!r}")
            groups.append(_Group(tuple(members), mu, n, posterior))
        if sorted(seen) != list(range(len(metrics))):
            raise ValidationError("json: groups must cover every metric exactly once")
        return cls(metrics=metrics, arms=arms, arm_column=arm_column, encoding=encoding, layout=layout,
                   groups=tuple(groups), estimator=None, iv=estimand == "ITT", spec=None, weights=None,
                   method=method, priors=priors)


def _field(d, name: str, kind, where: str | None = None):
    if not isinstance(d, dict):
        raise ValidationError(f"json: {where or 'the model'} must be an object")
    if name not in d:
        raise ValidationError(f"json: missing field {(where + '.') if where else ''}{name!r}")
    value = d[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise ValidationError(f"json: field {(where + '.') if where else ''}{name} has the wrong type "
                              f"({type(value).__name__})")
    return value


def _array(value, shape: tuple, where: str) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValidationError(f"json: {where} must hold numbers") from None
    if out.shape != shape or not np.isfinite(out).all():
        raise ValidationError(f"json: {where} must be finite numbers of shape {shape}, got shape {out.shape}")
    return out

