"""Diagnostics as values: balance, overlap, placebo outcomes, sensitivity, and the checks.

Every check is a :class:`Check` with its number, its thresholds and its status
(``pass`` / ``warn`` / ``fail`` / ``skipped`` with the reason). The Critic reads
these values, never text. Thresholds live in :class:`Thresholds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from .formatting import fmt_number

__all__ = ["BalanceRow", "Check", "EstimandDiagnostics", "OverlapSummary", "PlaceboResult",
           "Sensitivity", "Thresholds", "e_value", "effective_sample_size", "evaluate_checks",
           "linear_sensitivity", "overlap_summary", "robustness_value", "standardized_mean_differences"]

Status = Literal["pass", "warn", "fail", "skipped"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The numbers the checks compare against (defaults documented in docs/oci.md).

    >>> Thresholds(smd_fail=0.25).smd_fail
    0.25

    Attributes
    ----------
    smd_fail : float
        A high-priority confounder with weighted |SMD| >= this fails balance (0.2).
    smd_warn : float
        A high-priority confounder with weighted |SMD| >= this is a caveat (0.1); any
        other confounder >= ``smd_fail`` is a caveat.
    overlap_bounds : (float, float)
        Propensities outside this open interval count as poor overlap ((0.1, 0.9)).
    overlap_fail, overlap_warn : float
        Share of units outside the bounds that fails (0.10) / is a caveat (0.02).
    ess_fail, ess_warn : float
        Smallest per-arm effective-sample-size ratio (Kish) under the weights that
        fails (0.1) / is a caveat (0.3): extreme weights.
    placebo_alpha : float
        A placebo effect with p < this is a warning (0.05).
    e_value_warn : float
        A significant estimate whose confidence-limit E-value is below this is fragile (1.25).
    min_arm : int
        Fewer treated or control units than this in the analysed population fails (20).
    dependence_warn, dependence_fail : float
        The estimate moves by this many standard errors or more between two ways of
        extrapolating the outcome models (an X-learner and the arms' own regressions):
        a caveat (0.5) / a failure (1.0).
    """

    smd_fail: float = 0.2
    smd_warn: float = 0.1
    overlap_bounds: tuple = (0.1, 0.9)
    overlap_fail: float = 0.10
    overlap_warn: float = 0.02
    ess_fail: float = 0.1
    ess_warn: float = 0.3
    placebo_alpha: float = 0.05
    e_value_warn: float = 1.25
    min_arm: int = 20
    dependence_warn: float = 0.5
    dependence_fail: float = 1.0

    def __post_init__(self) -> None:
        from ..errors import ValidationError

        lo, hi = self.overlap_bounds
        if not 0 < lo < hi < 1:
            raise ValidationError(f"Thresholds.overlap_bounds: need 0 < low < high < 1, got {self.overlap_bounds}")
        for name in ("smd_warn", "smd_fail", "overlap_warn", "overlap_fail", "ess_fail", "ess_warn",
                     "placebo_alpha", "dependence_warn", "dependence_fail"):
            if not getattr(self, name) > 0:
                raise ValidationError(f"Thresholds.{name}: must be positive")
        if (self.smd_warn > self.smd_fail or self.overlap_warn > self.overlap_fail
                or self.ess_fail > self.ess_warn or self.dependence_warn > self.dependence_fail):
            raise ValidationError("Thresholds: a warning threshold lies beyond its failure threshold")


# ---------------------------------------------------------------------------- kernels
def standardized_mean_differences(X, t, w=None) -> np.ndarray:
    """Standardized mean difference (k,) of each column of X between arms.

    ``SMD_j = (mean_w(X_j | T=1) - mean_w(X_j | T=0)) / sqrt((s1^2 + s0^2) / 2)``
    with weighted means and the unweighted within-arm variances, so weighted and
    unweighted SMDs share one scale (Austin & Stuart 2015, Stat. Med.). A constant
    column has SMD 0.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); t = np.array([0, 0, 1, 1])
    >>> standardized_mean_differences(X, t).round(4)
    array([2.8284])
    """
    X = np.asarray(X, float)
    t = np.asarray(t) == 1
    w = np.ones(len(t)) if w is None else np.asarray(w, float)
    w1, w0 = w[t], w[~t]
    mean1 = w1 @ X[t] / w1.sum()
    mean0 = w0 @ X[~t] / w0.sum()
    var1 = X[t].var(axis=0, ddof=1) if t.sum() > 1 else np.zeros(X.shape[1])
    var0 = X[~t].var(axis=0, ddof=1) if (~t).sum() > 1 else np.zeros(X.shape[1])
    scale = np.sqrt((var1 + var0) / 2)
    diff = mean1 - mean0
    with np.errstate(divide="ignore", invalid="ignore"):
        smd = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)
    return smd


def effective_sample_size(w) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``.

    >>> effective_sample_size([1.0, 1.0, 1.0, 1.0])
    4.0
    """
    w = np.asarray(w, float)
    return float(w.sum() ** 2 / np.sum(w**2)) if len(w) else 0.0


@dataclass(frozen=True, slots=True)
class OverlapSummary:
    """Overlap of the propensity distributions in the analysed population.

    Attributes
    ----------
    share_outside : float
        Share of units with e outside ``bounds`` (for ATT: share of treated units with
        e above the upper bound, the ones without comparable controls).
    bounds : (float, float)
    ess_ratio_treated, ess_ratio_control : float
        Kish effective sample size / arm size under the estimand's weights.
    max_weight_share : float
        Largest single weight as a share of its arm's total weight.
    n : int
        Units analysed.
    n_trimmed : int
        Units removed by trimming.
    alpha : float
        Trimming threshold (0 when none).
    """

    share_outside: float
    bounds: tuple
    ess_ratio_treated: float
    ess_ratio_control: float
    max_weight_share: float
    n: int
    n_trimmed: int
    alpha: float

    @property
    def ess_ratio(self) -> float:
        return min(self.ess_ratio_treated, self.ess_ratio_control)


def overlap_summary(estimand: str, t, e, w, bounds=(0.1, 0.9), n_trimmed: int = 0,
                    alpha: float = 0.0) -> OverlapSummary:
    """Overlap numbers for one estimand (see :class:`OverlapSummary`).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([1.0, 1.0, 0.0, 0.0]); e = np.array([0.95, 0.5, 0.5, 0.05])
    >>> overlap_summary("ATE", t, e, np.ones(4)).share_outside
    0.5
    """
    t = np.asarray(t) == 1
    lo, hi = bounds
    if estimand == "ATT":
        share = float(np.mean(e[t] >= hi)) if t.any() else 0.0
    else:
        share = float(np.mean((e <= lo) | (e >= hi)))
    w1, w0 = w[t], w[~t]
    ess1 = effective_sample_size(w1) / max(len(w1), 1)
    ess0 = effective_sample_size(w0) / max(len(w0), 1)
    max_share = max(float(w1.max() / w1.sum()) if len(w1) else 0.0,
                    float(w0.max() / w0.sum()) if len(w0) else 0.0)
    return OverlapSummary(share, tuple(bounds), ess1, ess0, max_share, int(len(t)), int(n_trimmed),
                          float(alpha))


def e_value(estimate: float, ci_lower: float, ci_upper: float, sd: float) -> tuple[float, float]:
    """E-values of an effect on a continuous outcome and of its confidence limit nearest the null.

    The mean difference is put on the standardized scale ``d = estimate / sd`` and
    converted to an approximate risk ratio ``RR = exp(0.91 d)``; then
    ``E = RR + sqrt(RR (RR - 1))`` for ``RR >= 1`` (use ``1 / RR`` below 1).
    The limit's E-value is 1 when the interval contains 0. VanderWeele & Ding (2017),
    "Sensitivity analysis in observational research: introducing the E-value",
    Ann. Intern. Med., Table (continuous outcomes).

    Examples
    --------
    >>> round(e_value(0.5, 0.2, 0.8, 1.0)[0], 4)
    2.5291
    >>> e_value(0.5, -0.1, 1.1, 1.0)[1]
    1.0
    """

    def from_d(d: float) -> float:
        rr = float(np.exp(0.91 * abs(d)))
        return rr + np.sqrt(rr * (rr - 1.0))

    if not sd > 0:
        return float("nan"), float("nan")
    point = from_d(estimate / sd)
    if ci_lower <= 0 <= ci_upper:
        limit = 1.0
    else:
        limit = from_d((ci_lower if estimate > 0 else ci_upper) / sd)
    return float(point), float(limit)


def robustness_value(t_stat: float, dof: int, q: float = 1.0, alpha: float | None = None) -> float:
    """Cinelli & Hazlett (2020) robustness value of a linear-regression coefficient.

    With the partial Cohen's ``f = t / sqrt(dof)`` and ``f_q = q |f|``:
    ``RV_q = (sqrt(f_q^4 + 4 f_q^2) - f_q^2) / 2``, the share of residual variance of
    both treatment and outcome a hidden confounder must explain to bring the estimate
    to ``(1 - q)`` times itself. With ``alpha``, ``f_q`` is replaced by
    ``f_q - |t*_{alpha, dof - 1}| / sqrt(dof - 1)`` (0 when negative), the strength
    that makes the interval include ``(1 - q)`` times the estimate. Cinelli & Hazlett
    (2020), "Making sense of sensitivity: extending omitted variable bias", JRSS-B,
    equations (18)-(19).

    Examples
    --------
    >>> round(robustness_value(4.0, 100), 4)
    0.3279
    """
    f = q * abs(t_stat) / np.sqrt(dof)
    if alpha is not None:
        f = f - abs(stats.t.ppf(alpha / 2, dof - 1)) / np.sqrt(dof - 1)
        if f <= 0:
            return 0.0
    return float((np.sqrt(f**4 + 4 * f**2) - f**2) / 2)


@dataclass(frozen=True, slots=True)
class Sensitivity:
    """Sensitivity to a hidden confounder.

    Attributes
    ----------
    e_value, e_value_ci : float
        VanderWeele & Ding (2017) for the estimate and its confidence limit.
    linear_estimate, linear_t : float
        Treatment coefficient and t statistic of the linear outcome regression
        ``y ~ 1 + t + covariates`` (weighted when the final stage is weighted).
    dof : int
    partial_r2 : float
        Partial R^2 of the treatment with the outcome, ``t^2 / (t^2 + dof)``.
    robustness_value, robustness_value_alpha : float
        Cinelli & Hazlett (2020) ``RV_{q=1}`` and ``RV_{q=1, alpha=0.05}``.
    """

    e_value: float
    e_value_ci: float
    linear_estimate: float
    linear_t: float
    dof: int
    partial_r2: float
    robustness_value: float
    robustness_value_alpha: float


def linear_sensitivity(y, t, X, w=None) -> tuple[float, float, int]:
    """Treatment coefficient, its classical t statistic and residual dof in ``y ~ 1 + t + X``.

    With weights ``w`` this is weighted least squares. Rank-deficient X is handled by
    least squares with the pseudo-inverse; dof = n - rank (t is NaN when dof < 1).
    """
    n = len(y)
    Z = np.column_stack([np.ones(n), t, X])
    sw = np.ones(n) if w is None else np.sqrt(np.asarray(w, float))
    Zw, yw = Z * sw[:, None], y * sw
    beta, _, rank, _ = np.linalg.lstsq(Zw, yw, rcond=None)
    resid = yw - Zw @ beta
    dof = int(n - rank)
    if dof < 1:
        return float(beta[1]), float("nan"), dof
    sigma2 = resid @ resid / dof
    cov = sigma2 * np.linalg.pinv(Zw.T @ Zw)
    se = float(np.sqrt(cov[1, 1]))
    return float(beta[1]), float(beta[1] / se) if se > 0 else float("inf"), dof


@dataclass(frozen=True, slots=True)
class BalanceRow:
    """Balance of one encoded covariate column.

    ``confounder`` is the plan column; ``column`` the encoded column (a categorical
    level is ``"name=level"``).
    """

    confounder: str
    column: str
    priority: str
    in_model: bool
    smd_unweighted: float
    smd_weighted: float


@dataclass(frozen=True, slots=True)
class PlaceboResult:
    """The estimator applied to a negative-control outcome (the truth is 0)."""

    outcome: str
    estimate: float
    std_error: float
    p_value: float


@dataclass(frozen=True, slots=True)
class Check:
    """One diagnostic value against its thresholds.

    Attributes
    ----------
    name : str
        ``balance_high``, ``balance_other``, ``overlap``, ``extreme_weights``,
        ``extrapolation``, ``placebo``, ``sensitivity``, ``sample_size``, ``population``,
        ``estimation``.
    value : float or None
    warn_at, fail_at : float or None
    status : "pass" / "warn" / "fail" / "skipped"
    detail : str
        What the value means here, or why the check was skipped.
    subject : str or None
        The column the check is about (the worst confounder, the placebo outcome).
    """

    name: str
    value: float | None
    warn_at: float | None
    fail_at: float | None
    status: Status
    detail: str
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class EstimandDiagnostics:
    """Every diagnostic of one estimand.

    Attributes
    ----------
    estimand : str
    balance : tuple of BalanceRow
        Every plan confounder (encoded), whether in the model or not.
    overlap : OverlapSummary
    placebo : tuple of PlaceboResult
    sensitivity : Sensitivity or None
    checks : tuple of Check
    """

    estimand: str
    balance: tuple
    overlap: OverlapSummary
    placebo: tuple
    sensitivity: Sensitivity | None
    checks: tuple


def _graded(name, value, warn_at, fail_at, detail, subject=None, higher_is_worse=True) -> Check:
    if value is None or not np.isfinite(value):
        return Check(name, None, warn_at, fail_at, "skipped", detail + " (not computable)", subject)
    worse = (lambda v, c: v >= c) if higher_is_worse else (lambda v, c: v < c)
    status: Status = "pass"
    if fail_at is not None and worse(value, fail_at):
        status = "fail"
    elif warn_at is not None and worse(value, warn_at):
        status = "warn"
    return Check(name, float(value), warn_at, fail_at, status, detail, subject)


def evaluate_checks(estimand: str, balance, overlap: OverlapSummary, placebo, sensitivity,
                    estimate_p: float, trimmed: bool, th: Thresholds, n_treated: int,
                    n_control: int, dependence: float | None = None) -> tuple[Check, ...]:
    """Compare the diagnostic values of one estimand with the thresholds.

    Rules (defaults of :class:`Thresholds`):

    - ``balance_high``: max weighted |SMD| over high-priority confounders; warn >= 0.1,
      fail >= 0.2.
    - ``balance_other``: max weighted |SMD| over medium / low confounders; warn >= 0.2.
    - ``overlap``: share outside (0.1, 0.9); warn > 0.02, fail > 0.10. Not graded for
      ATO (overlap weights are bounded) nor after trimming (the population was
      redefined; the ``population`` check says so).
    - ``extreme_weights``: smallest per-arm ESS ratio; warn < 0.3, fail < 0.1 (ATE, ATT).
    - ``extrapolation`` (when ``dependence`` is given): how far the estimate moves, in
      standard errors, when the outcome predictions of the X-learner recombination are
      replaced by the arms' own regressions; warn >= 0.5, fail >= 1.0. Two reasonable
      extrapolations into regions where an arm has no units disagreeing by more than the
      sampling error means the data do not determine the estimate (model dependence,
      King & Zeng 2006, "The dangers of extreme counterfactuals", Political Analysis 14).
    - ``placebo``: each placebo effect with p < 0.05 is a warning.
    - ``sensitivity``: a significant estimate whose confidence-limit E-value < 1.25 is a warning.
    - ``sample_size``: fewer than 20 treated or control units fails.
    - ``population``: trimming changed the estimand's population (a caveat).
    """
    checks = []
    high = [r for r in balance if r.priority == "high"]
    other = [r for r in balance if r.priority != "high"]
    for name, rows, warn_at, fail_at, what in (
            ("balance_high", high, th.smd_warn, th.smd_fail, "high-priority"),
            ("balance_other", other, th.smd_fail, None, "medium / low priority")):
        if not rows:
            checks.append(Check(name, None, warn_at, fail_at, "skipped", f"no {what} confounders"))
            continue
        worst = max(rows, key=lambda r: abs(r.smd_weighted))
        checks.append(_graded(name, abs(worst.smd_weighted), warn_at, fail_at,
                              f"largest weighted |SMD| of {what} confounders ({worst.column})",
                              worst.confounder))
    if estimand == "ATO":
        checks.append(Check("overlap", overlap.share_outside, None, None, "pass",
                            "overlap weights are bounded; the share outside the bounds is reported only"))
    elif trimmed:
        checks.append(Check("overlap", overlap.share_outside, None, None, "pass",
                            f"trimmed to alpha = {overlap.alpha:.4g} <= e <= {1 - overlap.alpha:.4g}"))
    else:
        detail = (f"share of treated units with e >= {overlap.bounds[1]:g}" if estimand == "ATT"
                  else f"share of units with e outside ({overlap.bounds[0]:g}, {overlap.bounds[1]:g})")
        value = overlap.share_outside
        status: Status = "fail" if value > th.overlap_fail else "warn" if value > th.overlap_warn else "pass"
        checks.append(Check("overlap", value, th.overlap_warn, th.overlap_fail, status, detail))
    if estimand == "ATO":
        checks.append(Check("extreme_weights", overlap.ess_ratio, None, None, "pass",
                            "overlap weights are bounded by 1"))
    else:
        checks.append(_graded("extreme_weights", overlap.ess_ratio, th.ess_warn, th.ess_fail,
                              "smallest per-arm effective sample size ratio", higher_is_worse=False))
    if dependence is not None:
        checks.append(_graded("extrapolation", dependence, th.dependence_warn, th.dependence_fail,
                              "|estimate (X-learner outcome predictions) - estimate (the arms' own "
                              "regressions)| / standard error"))
    for result in placebo:
        checks.append(_graded("placebo", result.p_value, th.placebo_alpha, None,
                              f"placebo outcome {result.outcome}: estimate {fmt_number(result.estimate)} "
                              f"(p = {result.p_value:.3g})", result.outcome, higher_is_worse=False))
    if sensitivity is None:
        checks.append(Check("sensitivity", None, th.e_value_warn, None, "skipped", "not computed"))
    elif estimate_p >= 0.05:
        checks.append(Check("sensitivity", sensitivity.e_value_ci, th.e_value_warn, None, "pass",
                            "no significant effect to explain away"))
    else:
        checks.append(_graded("sensitivity", sensitivity.e_value_ci, th.e_value_warn, None,
                              "E-value of the confidence limit", higher_is_worse=False))
    smallest = min(n_treated, n_control)
    checks.append(_graded("sample_size", smallest, None, th.min_arm,
                          "units in the smaller arm of the analysed population", higher_is_worse=False))
    if trimmed and estimand != "ATO":
        checks.append(Check("population", float(overlap.n_trimmed), None, None, "warn",
                            f"trimming removed {overlap.n_trimmed:,} units: the estimand is the "
                            f"{estimand} of units with {overlap.alpha:.4g} <= e <= {1 - overlap.alpha:.4g}"))
    return tuple(checks)
