r"""Power, sample size and minimum detectable effect for the designs causalflow analyses.

``cf.power``, ``cf.sample_size`` and ``cf.mde`` share one variance model. Each treatment
arm j is compared with the control arm c; with N units in all, allocation shares
:math:`\pi_c, \pi_j` (so :math:`n_j = \pi_j N`), outcome standard deviation
:math:`\sigma`, covariate :math:`R^2` of the regression adjustment, intra-cluster
correlation :math:`\rho`, mean cluster size :math:`\bar m` with coefficient of variation
:math:`\kappa`, and compliance rate :math:`\gamma` (first-stage difference
P(treated | assigned) - P(treated | control) of an encouragement design):

.. math::

    \mathrm{DE} = 1 + \big(\bar m (1 + \kappa^2) - 1\big)\rho
    \quad\text{(design effect; Eldridge, Ashby \& Kerry 2006)},

    \sigma_e^2 = \sigma^2 (1 - R^2)\,\mathrm{DE}
    \quad\text{(regression adjustment: Lin 2013; the ICC is that of the residual)},

    \operatorname{Var}(\hat\tau) = \frac{\sigma_e^2}{\gamma^2}
        \Big(\frac{1}{n_j} + \frac{1}{n_c}\Big).

The LATE of an encouragement design is the ITT divided by :math:`\gamma`, so its
standard error is that of the ITT over :math:`\gamma` (Angrist, Imbens & Rubin 1996): a
50% compliance rate needs four times the sample. With ``compliance=1`` the effect is the
ITT / ATE.

**Relative effects** (``relative=True``): the effect is a lift :math:`L = \tau/\mu_c`
over the control mean :math:`\mu_c` (``baseline_mean``). The estimate
:math:`\hat\tau/\hat\mu_c` has the delta-method variance (the same one
``effects.relative()`` reports; :math:`\operatorname{Cov}(\hat\tau, \hat\mu_c) =
-\sigma_e^2/(\gamma n_c)`):

.. math::

    \operatorname{Var}(\hat L) = \frac{\sigma_e^2}{\mu_c^2}\Big[
        \frac{1}{\gamma^2}\Big(\frac{1}{n_j} + \frac{1}{n_c}\Big)
        + \frac{2L}{\gamma n_c} + \frac{L^2}{n_c}\Big].

**Tests.** With :math:`\lambda = \text{effect}/\mathrm{SE}` the power of the two-sided
level-:math:`\alpha` test is :math:`P(T > c) + P(T < -c)` with T noncentral t
(``test="t"``, the reference of the fitted model: df = units of all arms minus the number
of arms; in a cluster design G - 1 (CR1) from 50 clusters on, and below the CR3 default's
Bell-McCaffrey dof for equal clusters, which for :math:`G_t` treated and :math:`G_c`
control clusters is Welch's
:math:`(1/G_t + 1/G_c)^2 / (1/(G_t^2(G_t - 1)) + 1/(G_c^2(G_c - 1)))` (G - 2 when
balanced; the smallest arm's with several arms); for two arms without clusters this is
the classical two-sample t-test, identical to statsmodels' ``TTestIndPower``) or normal
(``test="z"``, statsmodels' ``NormalIndPower``).
``test="anytime"`` uses the anytime-valid confidence-sequence multiplier
:math:`c(g^*; n, \nu, \alpha)` of Lindon et al. (arXiv:2210.08589) with g tuned to the
planned horizon (:func:`causalflow.linalg.anytime.optimal_g`; n = units, or clusters in a
cluster design, as the fitted model uses), i.e. the power to have rejected by the
horizon when looking only at the horizon (a lower bound under continuous monitoring).
``correction="bonferroni"`` tests each of the ``arms - 1`` comparisons at
:math:`\alpha/(\text{arms} - 1)`.

Nuisance parameters come from the keywords, or from a ``pilot`` (historical) table via
:func:`planning_inputs`.

Examples
--------
>>> res = sample_size(effect=0.5, sd=2.0, power=0.8)
>>> res.n_per_arm
(253, 253)
>>> round(power(effect=0.5, n=506, sd=2.0).power, 4)
0.8014
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import optimize, special, stats

from ..errors import ValidationError
from ..linalg.sandwich import default_cov_type
from ..validate import to_pandas

__all__ = [
    "PlanningInputs",
    "PowerAnalysis",
    "design_effect",
    "mde",
    "planning_inputs",
    "power",
    "sample_size",
]

Alternative = Literal["two-sided", "larger", "smaller"]
TestKind = Literal["t", "z", "anytime"]
Correction = Literal["none", "bonferroni"]


# ---------------------------------------------------------------------------------------
# nuisance parameters
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PlanningInputs:
    """The nuisance parameters of a design (what a pilot or history tells).

    Attributes
    ----------
    sd : float
        Standard deviation of the metric (per unit).
    r2 : float
        Share of its variance explained by the pre-treatment covariates (adjusted R^2).
    icc : float
        Intra-cluster correlation (of the covariate-adjusted metric); 0 without clusters.
    cluster_size : float
        Mean number of units per cluster; 1 without clusters.
    cluster_size_cv : float
        Coefficient of variation of the cluster sizes.
    baseline_mean : float or None
        Mean of the metric (the control mean of a relative effect).
    """

    sd: float
    r2: float = 0.0
    icc: float = 0.0
    cluster_size: float = 1.0
    cluster_size_cv: float = 0.0
    baseline_mean: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _anova_icc(y: np.ndarray, groups: np.ndarray) -> tuple[float, float, float]:
    """One-way ANOVA ICC for unequal group sizes, with the mean size and its CV.

    rho = (MSB - MSW) / (MSB + (m0 - 1) MSW), m0 = (N - sum m_g^2 / N) / (G - 1)
    (Donner & Koval 1980), truncated at 0.
    """
    codes, inverse = np.unique(groups, return_inverse=True)
    g = codes.size
    n = y.size
    sizes = np.bincount(inverse).astype(float)
    means = np.bincount(inverse, weights=y) / sizes
    grand = y.mean()
    ssb = float(np.sum(sizes * (means - grand) ** 2))
    ssw = float(np.sum((y - means[inverse]) ** 2))
    if g < 2 or n - g < 1:
        raise ValidationError("cluster_by: need at least two clusters and more units than "
                              "clusters to estimate the intra-cluster correlation")
    msb, msw = ssb / (g - 1), ssw / (n - g)
    m0 = (n - np.sum(sizes ** 2) / n) / (g - 1)
    icc = (msb - msw) / (msb + (m0 - 1) * msw) if msb + (m0 - 1) * msw > 0 else 0.0
    return max(0.0, float(icc)), float(sizes.mean()), float(sizes.std() / sizes.mean())


def planning_inputs(
    pilot,
    metric: str,
    *,
    covariates: Sequence[str] | None = None,
    cluster_by: str | None = None,
) -> PlanningInputs:
    r"""Estimate the nuisance parameters of a design from a pilot or historical table.

    - ``sd``: sample standard deviation (ddof 1) of ``metric``;
    - ``r2``: adjusted :math:`R^2` of the OLS regression of ``metric`` on ``covariates``
      (categorical columns one-hot encoded), clipped to [0, 1): the variance a
      regression-adjusted (Lin 2013) analysis removes;
    - ``icc``, ``cluster_size``, ``cluster_size_cv``: one-way ANOVA estimator of the
      intra-cluster correlation of the covariate-adjusted metric (Donner & Koval 1980),
      mean cluster size and its coefficient of variation;
    - ``baseline_mean``: mean of ``metric``.

    Rows with a missing metric or covariate are dropped. The table is not modified.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=2000)
    >>> pilot = pd.DataFrame({"y": 10 + x + rng.normal(size=2000), "x": x})
    >>> p = planning_inputs(pilot, "y", covariates=["x"])
    >>> round(p.r2, 1), round(p.baseline_mean)
    (0.5, 10)
    """
    import pandas as pd


    try:
        df = to_pandas(pilot)
    except ValidationError:
        raise ValidationError(f"pilot: expected a pandas, polars or pyarrow table, got "
                              f"{type(pilot).__name__}") from None
    covariates = list(covariates or [])
    columns = [metric, *covariates] + ([cluster_by] if cluster_by is not None else [])
    for name, argument in [(metric, "metric")] + [(c, "covariates") for c in covariates] + (
            [(cluster_by, "cluster_by")] if cluster_by is not None else []):
        if name not in df.columns:
            raise ValidationError(f"{argument}: column {name!r} is not in the pilot table")
    if not pd.api.types.is_numeric_dtype(df[metric]) or pd.api.types.is_bool_dtype(df[metric]):
        raise ValidationError(f"metric: column {metric!r} is not numeric")
    sub = df[columns].dropna()
    if len(sub) < 3:
        raise ValidationError(f"pilot: fewer than 3 complete rows for metric {metric!r}")
    y = sub[metric].to_numpy(dtype=float)
    resid = y - y.mean()
    r2 = 0.0
    if covariates:
        x = pd.get_dummies(sub[covariates], drop_first=True, dtype=float).to_numpy(dtype=float)
        x = np.column_stack([np.ones(len(y)), x])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        resid = y - x @ coef
        k = np.linalg.matrix_rank(x)
        if len(y) - k < 1:
            raise ValidationError("covariates: more covariate columns than pilot rows")
        tss = float(np.sum((y - y.mean()) ** 2))
        r2_adj = 1.0 - (float(resid @ resid) / (len(y) - k)) / (tss / (len(y) - 1)) if tss > 0 else 0.0
        r2 = float(np.clip(r2_adj, 0.0, 1.0 - 1e-12))
    icc, size, cv = 0.0, 1.0, 0.0
    if cluster_by is not None:
        icc, size, cv = _anova_icc(resid, sub[cluster_by].to_numpy())
    return PlanningInputs(sd=float(np.std(y, ddof=1)), r2=r2, icc=icc, cluster_size=size,
                          cluster_size_cv=cv, baseline_mean=float(y.mean()))


def design_effect(icc: float, cluster_size: float, cluster_size_cv: float = 0.0) -> float:
    r"""Variance inflation of a cluster-randomised design.

    :math:`\mathrm{DE} = 1 + (\bar m (1 + \kappa^2) - 1)\rho` (Eldridge, Ashby & Kerry
    2006; :math:`\kappa = 0` gives Kish's :math:`1 + (m - 1)\rho`).

    >>> design_effect(0.05, 21)
    2.0
    """
    return 1.0 + (cluster_size * (1.0 + cluster_size_cv ** 2) - 1.0) * icc


# ---------------------------------------------------------------------------------------
# the result record
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PowerAnalysis:
    """The outcome of ``power`` / ``sample_size`` / ``mde``: one record for all three.

    Attributes
    ----------
    solved_for : {"power", "n", "effect"}
    power : float
        Power of the weakest treatment-vs-control comparison.
    power_per_arm : tuple of float
        Power of each treatment arm vs control.
    effect : float
        Absolute effect (or relative lift when ``relative``) the power refers to.
    relative : bool
    n : int
        Total units in all arms (``sample_size``: rounded up so every arm has whole
        units, or whole clusters).
    n_exact : float
        Unrounded total units solving the power equation (= n for ``power`` / ``mde``).
    n_per_arm : tuple of int
        Units per arm, control first.
    n_clusters : int or None
        Total clusters when clustered (cluster_size > 1 or icc > 0).
    std_error : float
        Standard error of the estimate in the weakest comparison at n.
    design_effect : float
    alpha, alternative, test, correction
        The test planned (``alpha`` before any correction).
    inputs : PlanningInputs
    compliance : float
    allocation : tuple of float
    """

    solved_for: str
    power: float
    power_per_arm: tuple
    effect: float
    relative: bool
    n: int
    n_exact: float
    n_per_arm: tuple
    n_clusters: int | None
    std_error: float
    design_effect: float
    alpha: float
    alternative: str
    test: str
    correction: str
    inputs: PlanningInputs
    compliance: float
    allocation: tuple

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        out = {name: getattr(self, name) for name in self.__slots__}
        out["inputs"] = self.inputs.to_dict()
        out["power_per_arm"] = list(self.power_per_arm)
        out["n_per_arm"] = list(self.n_per_arm)
        out["allocation"] = list(self.allocation)
        return out

    def __str__(self) -> str:
        kind = "relative lift" if self.relative else "effect"
        clusters = f" ({self.n_clusters:,} clusters)" if self.n_clusters is not None else ""
        return (f"PowerAnalysis(solved for {self.solved_for}): power {self.power:.4f} to detect "
                f"{kind} {self.effect:.6g} with n = {self.n:,} units{clusters}, per arm "
                f"{list(self.n_per_arm)}; alpha {self.alpha} {self.alternative} ({self.test}-test), "
                f"SE {self.std_error:.6g}, design effect {self.design_effect:.4g}")


# ---------------------------------------------------------------------------------------
# the kernel
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Plan:
    """Validated design: everything but (effect, n)."""

    inputs: PlanningInputs
    compliance: float
    allocation: np.ndarray       # (arms,), control first
    alpha: float                 # per comparison (after correction)
    alpha_family: float
    alternative: str
    test: str
    correction: str
    relative: bool
    clustered: bool
    deff: float


def _se(plan: _Plan, effect: float, n: float) -> np.ndarray:
    """Standard error of each treatment-vs-control estimate (arms - 1,) at n total units."""
    inp = plan.inputs
    var_e = inp.sd ** 2 * (1.0 - inp.r2) * plan.deff
    n_c = n * plan.allocation[0]
    n_t = n * plan.allocation[1:]
    g = plan.compliance
    base = (1.0 / n_t + 1.0 / n_c) / g ** 2
    if not plan.relative:
        return np.sqrt(var_e * base)
    lift = effect
    return np.sqrt(var_e * (base + 2.0 * lift / (g * n_c) + lift ** 2 / n_c)) / abs(inp.baseline_mean)


def _critical(plan: _Plan, n: float) -> tuple[float, float]:
    """Critical value of |t| (or t) and the degrees of freedom (inf: normal) at n units."""
    units = n / plan.inputs.cluster_size if plan.clustered else n
    if plan.test == "anytime":
        from ..linalg.anytime import cs_multiplier, optimal_g

        # n and nu as the fitted model uses them (linalg.anytime.av_sample_size)
        nu = units - 1.0 if plan.clustered else units - plan.allocation.size
        if nu <= 0:
            return np.inf, nu
        g = optimal_g(units, nu, plan.alpha)
        return float(cs_multiplier(units, nu, g, plan.alpha)), float(nu)
    a = plan.alpha / 2 if plan.alternative == "two-sided" else plan.alpha
    if plan.test == "z":
        return float(stats.norm.isf(a)), np.inf
    # the reference of the fitted model: without clusters n - (number of arms) (n - p of a
    # fit without covariates); with clusters G - 1 (CR1, from FEW_CLUSTERS clusters on) or,
    # below, the CR3 default's Bell-McCaffrey dof of the smallest arm's difference in means
    # with equal clusters, which is Welch's formula in cluster counts (design_dof)
    if not plan.clustered:
        df = units - plan.allocation.size
    elif default_cov_type(int(round(units))) == "CR1":
        df = units - 1.0
    else:
        g_c, g_t = units * plan.allocation[0], units * plan.allocation[1:].min()
        if min(g_c, g_t) <= 1:
            return np.inf, 0.0
        df = (1 / g_t + 1 / g_c) ** 2 / (1 / (g_t ** 2 * (g_t - 1)) + 1 / (g_c ** 2 * (g_c - 1)))
    return float(stats.t.isf(a, df)), float(df)


def _power_per_arm(plan: _Plan, effect: float, n: float) -> np.ndarray:
    """Power of each treatment-vs-control test: P(T > c) + P(T < -c), T ~ t'(df, lambda)."""
    lam = effect / _se(plan, effect, n)
    crit, df = _critical(plan, n)
    out = np.zeros_like(lam)
    if not np.isfinite(crit):
        return out
    upper = plan.alternative in ("two-sided", "larger")
    lower = plan.alternative in ("two-sided", "smaller")
    if np.isinf(df):
        if upper:
            out += stats.norm.sf(crit - lam)
        if lower:
            out += stats.norm.cdf(-crit - lam)
    else:
        if upper:
            out += 1.0 - special.nctdtr(df, lam, crit)
        if lower:
            out += special.nctdtr(df, lam, -crit)
    return out


# ---------------------------------------------------------------------------------------
# validation and the public functions
# ---------------------------------------------------------------------------------------

def _positive(name: str, value, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or (value < 0 if allow_zero else value <= 0):
        raise ValidationError(f"{name}: must be a {'non-negative' if allow_zero else 'positive'} "
                              f"finite number, got {value!r}")
    return float(value)


def _make_plan(*, sd, pilot, metric, covariates, cluster_by, r2, icc, cluster_size,
               cluster_size_cv, baseline_mean, compliance, allocation, arms, alpha,
               alternative, relative, test, correction) -> _Plan:
    if pilot is not None:
        if metric is None:
            raise ValidationError("metric: required with pilot=")
        est = planning_inputs(pilot, metric, covariates=covariates, cluster_by=cluster_by)
    else:
        if sd is None:
            raise ValidationError("sd: give the metric's standard deviation, or a pilot table")
        if covariates is not None or cluster_by is not None or metric is not None:
            raise ValidationError("metric / covariates / cluster_by: only used with pilot=")
        est = PlanningInputs(sd=_positive("sd", sd))
    inputs = PlanningInputs(
        sd=_positive("sd", sd) if sd is not None else est.sd,
        r2=float(r2) if r2 is not None else est.r2,
        icc=float(icc) if icc is not None else est.icc,
        cluster_size=float(cluster_size) if cluster_size is not None else est.cluster_size,
        cluster_size_cv=float(cluster_size_cv) if cluster_size_cv is not None else est.cluster_size_cv,
        baseline_mean=float(baseline_mean) if baseline_mean is not None else est.baseline_mean,
    )
    if not 0.0 <= inputs.r2 < 1.0:
        raise ValidationError(f"r2: must lie in [0, 1), got {inputs.r2!r}")
    if not 0.0 <= inputs.icc <= 1.0:
        raise ValidationError(f"icc: must lie in [0, 1], got {inputs.icc!r}")
    _positive("cluster_size", inputs.cluster_size)
    if inputs.cluster_size < 1:
        raise ValidationError(f"cluster_size: must be >= 1, got {inputs.cluster_size!r}")
    _positive("cluster_size_cv", inputs.cluster_size_cv, allow_zero=True)
    if not (isinstance(compliance, (int, float)) and 0.0 < compliance <= 1.0):
        raise ValidationError(f"compliance: must lie in (0, 1], got {compliance!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValidationError(f"alpha: must lie in (0, 1), got {alpha!r}")
    if alternative not in ("two-sided", "larger", "smaller"):
        raise ValidationError(f"alternative: must be 'two-sided', 'larger' or 'smaller', got {alternative!r}")
    if test not in ("t", "z", "anytime"):
        raise ValidationError(f"test: must be 't', 'z' or 'anytime', got {test!r}")
    if test == "anytime" and alternative != "two-sided":
        raise ValidationError("alternative: the anytime-valid test is two-sided")
    if correction not in ("none", "bonferroni"):
        raise ValidationError(f"correction: must be 'none' or 'bonferroni', got {correction!r}")
    if not (isinstance(arms, (int, np.integer)) and not isinstance(arms, bool) and arms >= 2):
        raise ValidationError(f"arms: must be an integer >= 2 (control included), got {arms!r}")
    if allocation is None:
        alloc = np.full(arms, 1.0 / arms)
    else:
        alloc = np.asarray(allocation, dtype=float)
        if alloc.ndim != 1 or alloc.size != arms:
            raise ValidationError(f"allocation: needs one share per arm ({arms}, control first), "
                                  f"got {allocation!r}")
        if np.any(~np.isfinite(alloc)) or np.any(alloc <= 0) or abs(alloc.sum() - 1.0) > 1e-9:
            raise ValidationError(f"allocation: shares must be positive and sum to 1, got {allocation!r}")
    if relative:
        if inputs.baseline_mean is None or inputs.baseline_mean == 0:
            raise ValidationError("baseline_mean: a relative effect needs the (non-zero) control "
                                  "mean, as baseline_mean= or from a pilot table")
    clustered = inputs.cluster_size > 1 or inputs.icc > 0
    a = alpha / (arms - 1) if correction == "bonferroni" else alpha
    return _Plan(inputs=inputs, compliance=float(compliance), allocation=alloc, alpha=float(a),
                 alpha_family=float(alpha), alternative=alternative, test=test,
                 correction=correction, relative=bool(relative), clustered=clustered,
                 deff=design_effect(inputs.icc, inputs.cluster_size, inputs.cluster_size_cv))


def _check_effect(plan: _Plan, effect) -> float:
    e = float(effect) if isinstance(effect, (int, float, np.integer, np.floating)) and \
        not isinstance(effect, bool) else float("nan")
    if not math.isfinite(e) or e == 0:
        raise ValidationError(f"effect: must be a non-zero finite number, got {effect!r}")
    if (plan.alternative == "larger" and e < 0) or (plan.alternative == "smaller" and e > 0):
        raise ValidationError(f"effect: sign {e:+g} points away from alternative={plan.alternative!r}")
    if plan.relative and e <= -1:
        raise ValidationError(f"effect: a relative lift must exceed -1 (-100%), got {e!r}")
    return e


def _min_n(plan: _Plan) -> float:
    """Smallest total n with at least 2 units (clusters) per arm and positive df."""
    per = plan.inputs.cluster_size if plan.clustered else 1.0
    return max(2.0 * per / plan.allocation.min(), (plan.allocation.size + 1.5) * per)


def _record(plan: _Plan, solved_for: str, effect: float, n_exact: float,
            n_per_arm: tuple, n_clusters) -> PowerAnalysis:
    n_total = float(sum(n_per_arm))
    per = _power_per_arm(plan, effect, n_total if solved_for == "n" else n_exact)
    se = _se(plan, effect, n_total if solved_for == "n" else n_exact)
    weakest = int(np.argmin(per))
    return PowerAnalysis(
        solved_for=solved_for, power=float(per[weakest]),
        power_per_arm=tuple(float(p) for p in per), effect=float(effect),
        relative=plan.relative, n=int(round(n_total)), n_exact=float(n_exact),
        n_per_arm=n_per_arm, n_clusters=n_clusters, std_error=float(se[weakest]),
        design_effect=plan.deff, alpha=plan.alpha_family, alternative=plan.alternative,
        test=plan.test, correction=plan.correction, inputs=plan.inputs,
        compliance=plan.compliance, allocation=tuple(float(a) for a in plan.allocation))


def _split(plan: _Plan, n: float, round_up: bool) -> tuple[tuple, int | None]:
    """Units per arm (and clusters) for n total units."""
    shares = n * plan.allocation
    if plan.clustered:
        m = plan.inputs.cluster_size
        clusters = np.ceil(shares / m - 1e-9) if round_up else shares / m
        units = clusters * m
        return tuple(int(math.ceil(u - 1e-9)) if round_up else float(u) for u in units), \
            int(np.sum(np.ceil(clusters - 1e-9)))
    if round_up:
        return tuple(int(math.ceil(s - 1e-9)) for s in shares), None
    return tuple(float(s) for s in shares), None


_DOC_DESIGN = """
    sd : float, optional
        Standard deviation of the metric; or give ``pilot`` and ``metric``.
    pilot : table, optional
        Pilot / historical table (pandas, polars, pyarrow) to estimate sd, r2, icc,
        cluster sizes and the baseline mean (:func:`planning_inputs`). Explicit keywords
        override the estimates.
    metric, covariates, cluster_by : optional
        Columns of ``pilot``.
    r2 : float, optional
        Covariate R^2 of the regression adjustment (default 0, or from the pilot).
    icc : float, optional
        Intra-cluster correlation (default 0, or from the pilot).
    cluster_size, cluster_size_cv : float, optional
        Mean cluster size (units per cluster) and its coefficient of variation.
    baseline_mean : float, optional
        Control mean; needed for ``relative=True``.
    compliance : float
        Compliance rate of an encouragement design; the effect is then the LATE.
    allocation : sequence of float, optional
        Share of units per arm, control first (default equal).
    arms : int
        Number of arms including control.
    alpha : float
        Significance level (family-wise with ``correction="bonferroni"``).
    alternative : {"two-sided", "larger", "smaller"}
    relative : bool
        The effect is a relative lift over ``baseline_mean`` (0.02 = +2%).
    test : {"t", "z", "anytime"}
    correction : {"none", "bonferroni"}

"""


_DESIGN_KEYS = ("sd", "pilot", "metric", "covariates", "cluster_by", "r2", "icc", "cluster_size",
                "cluster_size_cv", "baseline_mean", "compliance", "allocation", "arms", "alpha",
                "alternative", "relative", "test", "correction")


def _plan_of(arguments: dict) -> _Plan:
    """The validated plan from the design keywords of power / sample_size / mde."""
    return _make_plan(**{key: arguments[key] for key in _DESIGN_KEYS})


def _check_n(plan: _Plan, n) -> float:
    n = _positive("n", n)
    if n < _min_n(plan):
        raise ValidationError(f"n: {n:g} units is too few for this design (at least "
                              f"{math.ceil(_min_n(plan))} needed)")
    return n


def power(effect: float, n: float, *, sd: float | None = None, pilot=None,
          metric: str | None = None, covariates: Sequence[str] | None = None,
          cluster_by: str | None = None, r2: float | None = None, icc: float | None = None,
          cluster_size: float | None = None, cluster_size_cv: float | None = None,
          baseline_mean: float | None = None, compliance: float = 1.0,
          allocation: Sequence[float] | None = None, arms: int = 2, alpha: float = 0.05,
          alternative: Alternative = "two-sided", relative: bool = False,
          test: TestKind = "t", correction: Correction = "none") -> PowerAnalysis:
    """Power to detect ``effect`` with ``n`` units in all arms (formulas: module docstring).

    Parameters
    ----------
    effect : float
        Absolute effect (the LATE when ``compliance < 1``), or relative lift.
    n : float
        Total number of units over all arms.
    {design}
    Returns
    -------
    PowerAnalysis

    Examples
    --------
    >>> round(power(effect=0.2, n=800, sd=1.0, icc=0.02, cluster_size=20).power, 3)
    0.65
    """
    plan = _plan_of(locals())
    e = _check_effect(plan, effect)
    n = _check_n(plan, n)
    per_arm, clusters = _split(plan, n, round_up=False)
    return _record(plan, "power", e, n, tuple(per_arm),
                   int(round(clusters)) if clusters is not None else
                   (int(round(n / plan.inputs.cluster_size)) if plan.clustered else None))


def _target_power(value) -> float:
    if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        raise ValidationError(f"power: must lie in (0, 1), got {value!r}")
    return float(value)


def sample_size(effect: float, *, power: float = 0.8, sd: float | None = None, pilot=None,
                metric: str | None = None, covariates: Sequence[str] | None = None,
                cluster_by: str | None = None, r2: float | None = None,
                icc: float | None = None, cluster_size: float | None = None,
                cluster_size_cv: float | None = None, baseline_mean: float | None = None,
                compliance: float = 1.0, allocation: Sequence[float] | None = None,
                arms: int = 2, alpha: float = 0.05, alternative: Alternative = "two-sided",
                relative: bool = False, test: TestKind = "t",
                correction: Correction = "none") -> PowerAnalysis:
    """Units (and clusters) needed to detect ``effect`` with the given ``power``.

    Solves power(effect, n) = power for the total n by Brent's method (the weakest
    comparison when there are several treatment arms), then rounds every arm up to whole
    units (whole clusters in a cluster design). ``n_exact`` is the unrounded root.

    Parameters
    ----------
    effect : float
        Absolute effect (the LATE when ``compliance < 1``), or relative lift.
    power : float
        Target power.
    {design}
    Returns
    -------
    PowerAnalysis

    Examples
    --------
    >>> r = sample_size(effect=0.2, sd=1.0, icc=0.02, cluster_size=20, power=0.8)
    >>> r.n_clusters, r.n
    (58, 1160)
    """
    target = _target_power(power)
    plan = _plan_of(locals())
    e = _check_effect(plan, effect)
    if target <= plan.alpha:
        raise ValidationError(f"power: must exceed the test's level alpha = {plan.alpha:g}")

    def gap(n: float) -> float:
        return float(np.min(_power_per_arm(plan, e, n))) - target

    lo = _min_n(plan)
    if gap(lo) >= 0:
        n_exact = lo
    else:
        hi = 2.0 * lo
        while gap(hi) < 0:
            hi *= 2.0
            if hi > 1e15:
                raise ValidationError("effect: too small to detect with any sample size "
                                      "below 1e15 units")
        n_exact = optimize.brentq(gap, lo, hi, xtol=1e-10, rtol=1e-12, maxiter=500)
    per_arm, clusters = _split(plan, n_exact, round_up=True)
    return _record(plan, "n", e, n_exact, per_arm, clusters)


def mde(n: float, *, power: float = 0.8, sd: float | None = None, pilot=None,
        metric: str | None = None, covariates: Sequence[str] | None = None,
        cluster_by: str | None = None, r2: float | None = None, icc: float | None = None,
        cluster_size: float | None = None, cluster_size_cv: float | None = None,
        baseline_mean: float | None = None, compliance: float = 1.0,
        allocation: Sequence[float] | None = None, arms: int = 2, alpha: float = 0.05,
        alternative: Alternative = "two-sided", relative: bool = False,
        test: TestKind = "t", correction: Correction = "none") -> PowerAnalysis:
    """Minimum detectable effect: the smallest effect detected with ``power`` at ``n`` units.

    Solved by Brent's method on the effect (negative for ``alternative="smaller"``); for a
    relative effect the lift, over ``baseline_mean``.

    Parameters
    ----------
    n : float
        Total number of units over all arms.
    power : float
        Target power.
    {design}
    Returns
    -------
    PowerAnalysis

    Examples
    --------
    >>> round(mde(n=1000, sd=1.0, r2=0.5).effect, 4)    # covariates halve the variance
    0.1254
    """
    target = _target_power(power)
    plan = _plan_of(locals())
    n = _check_n(plan, n)
    if target <= plan.alpha:
        raise ValidationError(f"power: must exceed the test's level alpha = {plan.alpha:g}")
    sign = -1.0 if alternative == "smaller" else 1.0

    def gap(size: float) -> float:
        return float(np.min(_power_per_arm(plan, sign * size, n))) - target

    scale = float(np.max(_se(plan, 0.0, n)))
    hi = 4.0 * scale
    while gap(hi) < 0:
        hi *= 2.0
        if hi > 1e12 * scale:
            raise ValidationError("power: not reachable at this n for any effect size")
    size = optimize.brentq(gap, 1e-12 * scale, hi, xtol=1e-14 * scale, rtol=1e-13, maxiter=500)
    per_arm, clusters = _split(plan, n, round_up=False)
    return _record(plan, "effect", sign * size, n, tuple(per_arm),
                   int(round(clusters)) if clusters is not None else None)


for _f in (power, sample_size, mde):
    _f.__doc__ = _f.__doc__.replace("    {design}\n", _DOC_DESIGN.lstrip("\n"))
del _f
