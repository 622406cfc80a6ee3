"""The runner: execute one spec on the study population (estimates + diagnostics as values).

:func:`run_spec` is the single entry point the loop, the notebooks, the follow-ups
and outside evaluations call: encode covariates, cross-fit the nuisance models,
trim when asked, estimate each estimand (AIPW / ATT-AIPW / augmented overlap
weights, or the grammar's weighted LinearModel), and compute every diagnostic.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ValidationError
from . import estimators as est
from .diagnostics import (
    BalanceRow,
    EstimandDiagnostics,
    PlaceboResult,
    Sensitivity,
    Thresholds,
    e_value,
    evaluate_checks,
    linear_sensitivity,
    overlap_summary,
    robustness_value,
    standardized_mean_differences,
)
from .learners import get_learner
from .plan import AnalysisData
from .spec import Spec, check_against_plan

__all__ = ["EstimandResult", "SpecResult", "encode_covariates", "run_spec"]


@dataclass(frozen=True, slots=True)
class EstimandResult:
    """The estimate of one estimand.

    Attributes
    ----------
    estimand : "ATE" / "ATT" / "ATO"
    population : str
        Who the effect is about; trimming relabels it (``"trimmed: 0.08 <= e <= 0.92"``).
    estimate, std_error, ci_lower, ci_upper, p_value : float
        Normal 95% interval and two-sided p-value.
    n, n_treated, n_control : int
        Units analysed.
    mu1, mu0 : float
        Potential-outcome means in the estimand's population.
    final_stage : str
    untrimmed_estimate, untrimmed_ci_lower, untrimmed_ci_upper : float or None
        When trimming changed the population (a trimmed ATE / ATT), the same estimand on the
        whole (untrimmed) study population from the same nuisance fits, reported beside the
        trimmed one; None otherwise.
    """

    estimand: str
    population: str
    estimate: float
    std_error: float
    ci_lower: float
    ci_upper: float
    p_value: float
    n: int
    n_treated: int
    n_control: int
    mu1: float
    mu0: float
    final_stage: str
    untrimmed_estimate: float | None = None
    untrimmed_ci_lower: float | None = None
    untrimmed_ci_upper: float | None = None

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


@dataclass(frozen=True, slots=True)
class SpecResult:
    """Everything one spec produced.

    Attributes
    ----------
    spec : Spec
    estimates : tuple of EstimandResult
    diagnostics : tuple of EstimandDiagnostics (same order)
    alpha : float
        Trimming threshold used for ATE / ATT (0 without trimming).
    propensity : ndarray (n,)
        Cross-fitted, clipped propensity of every unit of the study population: the one the
        estimators weight with (calibrated, when the propensity learner calibrates).
    treatment : ndarray (n,)
    kept : ndarray (n,) of bool
        Units kept by trimming.
    learners : tuple of dict
        Per cross-fitting split, when the spec's learner combines candidates (``"auto"``):
        the candidates' weights in every nuisance (``"propensity"``, ``"<outcome>:treated"``,
        ``"<outcome>:control"``; the analysed outcome is ``"__outcome__"``) and their own
        cross-validated risks. Empty otherwise.
    score : ndarray (n,) or None
        With a calibrated propensity learner: the clipped propensity before calibration, on
        which trimming and the overlap diagnostics are judged (``propensity`` otherwise).
    """

    spec: Spec
    estimates: tuple
    diagnostics: tuple
    alpha: float
    propensity: np.ndarray
    treatment: np.ndarray
    kept: np.ndarray
    learners: tuple = ()
    score: np.ndarray | None = None

    @property
    def overlap_score(self) -> np.ndarray:
        """The propensity that trimming and the overlap diagnostics use: ``score`` if the
        propensity was calibrated, else ``propensity``."""
        return self.propensity if self.score is None else self.score

    def results_dict(self) -> dict:
        """The JSON of ``results.json``."""
        out = {"spec_key": self.spec.key(), "trimming_alpha": self.alpha,
               "n_trimmed": int((~self.kept).sum()),
               "estimates": [r.to_dict() for r in self.estimates]}
        if self.learners:
            out["nuisance_learners"] = list(self.learners)
        return out

    def diagnostics_dict(self) -> dict:
        """The JSON of ``diagnostics.json``."""
        from dataclasses import asdict

        return {"diagnostics": [asdict(d) for d in self.diagnostics]}

    def diagnostic(self, estimand: str) -> EstimandDiagnostics:
        return next(d for d in self.diagnostics if d.estimand == estimand)

    def estimate(self, estimand: str) -> EstimandResult:
        return next(r for r in self.estimates if r.estimand == estimand)


def encode_covariates(frame: pd.DataFrame, columns) -> tuple[np.ndarray, list[str], list[str]]:
    """Numeric design of the covariates: numbers as they are, every other column one-hot.

    Returns ``(X, names, owners)``: the (n, k) float matrix, the encoded column names
    (``"col=level"`` for indicators, every level kept, levels sorted) and, per encoded
    column, the plan column it came from.

    Examples
    --------
    >>> import pandas as pd
    >>> X, names, owners = encode_covariates(pd.DataFrame({"a": [1, 2], "b": ["u", "v"]}), ["a", "b"])
    >>> names, X.tolist()
    (['a', 'b=u', 'b=v'], [[1.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    """
    blocks, names, owners = [], [], []
    for c in columns:
        s = frame[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            blocks.append(s.to_numpy(dtype=float)[:, None])
            names.append(c)
            owners.append(c)
        else:
            values = s.astype(str).to_numpy()
            levels = sorted(set(values.tolist()))
            blocks.append(np.column_stack([(values == lv).astype(float) for lv in levels]))
            names += [f"{c}={lv}" for lv in levels]
            owners += [c] * len(levels)
    return np.hstack(blocks), names, owners


def _population_label(estimand: str, alpha: float, trimmed: bool) -> str:
    if estimand == "ATO":
        return "overlap-weighted study population"
    if trimmed:
        return f"trimmed: {alpha:.4g} <= e <= {1 - alpha:.4g}"
    return "treated units of the study population" if estimand == "ATT" else "study population"


def _balance(X_all, names, owners, t, w, spec: Spec, plan) -> tuple:
    """Unweighted and weighted SMD of every encoded plan confounder."""
    priority = dict(spec.priorities)
    smd_u = standardized_mean_differences(X_all, t)
    smd_w = standardized_mean_differences(X_all, t, w)
    return tuple(BalanceRow(owner, name, priority.get(owner, plan.priority_of(owner)),
                            owner in spec.covariates, float(su), float(sw))
                 for owner, name, su, sw in zip(owners, names, smd_u, smd_w))


def _sensitivity(kern, interval, sd_y: float, linear_fit) -> Sensitivity | None:
    """E-values of the estimate and the Cinelli-Hazlett values of the linear stage
    (None when the linear stage has fewer than 2 residual degrees of freedom)."""
    b, tstat, dof = linear_fit
    if dof < 2 or not np.isfinite(tstat):
        return None
    ev, ev_ci = e_value(kern.estimate, *interval, sd_y)
    return Sensitivity(ev, ev_ci, b, tstat, dof, float(tstat**2 / (tstat**2 + dof)),
                       robustness_value(tstat, dof), robustness_value(tstat, dof, alpha=0.05))


def _check_final_stage(spec: Spec) -> None:
    if spec.final_stage == "weighted_linear":
        from . import final_stage

        final_stage.require()


def run_spec(data: AnalysisData, spec: Spec, thresholds: Thresholds | None = None, *,
             blas_threads: int | None = 1) -> SpecResult:
    """Execute one spec: cross-fitted nuisances, estimates of every estimand, diagnostics.

    Steps: (1) encode the spec's covariates and every plan confounder; (2) folds
    stratified by treatment (``spec.seed``; with ``spec.n_repeats > 1``, one split per seed
    ``seed, seed + 1, ...``, each estimate aggregated over the splits by
    :func:`~causalflow.oci.estimators.aggregate`, and the mean propensity used for trimming
    and the diagnostics); (3) cross-fit the propensity and the
    per-arm outcome models of the outcome and every placebo outcome; (4) clip the
    propensity to ``[clip, 1 - clip]``; (5) trimming for ATE / ATT (fixed alpha or
    Crump et al. 2009); (6) the estimates (:mod:`causalflow.oci.estimators`, or the
    weighted LinearModel when ``spec.final_stage == "weighted_linear"``; with an
    X-learner outcome learner, the :func:`~causalflow.oci.estimators.bracket` of the
    estimates from the arms' own regressions and from the X-learner); (7) balance
    (weighted / unweighted SMD of every plan confounder), overlap, placebo effects,
    sensitivity (E-value; Cinelli-Hazlett RV of the linear outcome regression), and
    the graded checks.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from causalflow.oci.plan import Plan, prepare_data
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=400); t = (rng.random(400) < 1 / (1 + np.exp(-x))).astype(int)
    >>> df = pd.DataFrame({"x": x, "t": t, "y": 1 + 2 * t + x + rng.normal(size=400)})
    >>> plan = Plan(data=df, treatment="t", outcome="y", confounders=["x"], estimands=["ATE"])
    >>> spec = Spec(estimands=("ATE",), covariates=("x",), priorities=(("x", "high"),), n_folds=2)
    >>> r = run_spec(prepare_data(plan), spec).estimates[0]
    >>> abs(r.estimate - 2) < 3 * r.std_error
    True

    ``blas_threads`` caps the BLAS / OpenMP threads while it runs (threadpoolctl):
    at these sizes one thread is fastest, and parallel evaluations (one process per
    core) must not oversubscribe; None leaves the process default.
    """
    if blas_threads is None:
        return _run_spec(data, spec, thresholds)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads):
        return _run_spec(data, spec, thresholds)


def _kernel(estimand, stage: str, y, t, e, rows, m0, m1):
    """The final-stage estimate of ``estimand`` on ``rows`` from outcome predictions m0, m1.

    ``stage``: ``"aipw"`` (influence-function AIPW), ``"aipw_sample"`` (Hajek AIPW with the
    sample standard errors) or ``"tmle"`` (the same after targeting m0, m1)."""
    m0, m1 = m0[rows], m1[rows]
    if stage == "aipw":
        return est.estimate(estimand, y, t, e, m0, m1)
    from .sample_estimands import sample_estimate

    if stage == "tmle":
        from .targeting import target

        m0, m1 = target(estimand, y, t, e, m0, m1)
    return sample_estimate(estimand, y, t, e, m0, m1)


def _split_estimates(estimand, stage: str, y, t, e, rows, fit):
    """The estimate from one cross-fitting split, and for an X-learner the influence-function
    AIPW estimates from the arms' own regressions and from the X-learner (else None).

    With an X-learner the estimate is the bracket of the two extrapolations (est.bracket);
    the pair measures their distance in standard errors (the extrapolation check)."""
    kernel = functools.partial(_kernel, estimand, stage, y, t, e, rows)
    if fit.m0_arms is None:
        return kernel(fit.m0["__outcome__"], fit.m1["__outcome__"]), None
    own_m = (fit.m0_arms["__outcome__"], fit.m1_arms["__outcome__"])
    x_m = (fit.m0["__outcome__"], fit.m1["__outcome__"])
    kern = est.bracket(kernel(*own_m), kernel(*x_m))
    if stage == "aipw":
        return kern, kern.components
    return kern, tuple(_kernel(estimand, "aipw", y, t, e, rows, *m) for m in (own_m, x_m))


def _whole_population_estimate(estimand, stage, weighted, frame, spec, y, t, e, fits):
    """The estimand on every unit of the study population (no trimming), for the report."""
    rows = np.ones(len(t), bool)
    if weighted:
        from . import final_stage

        w = est.balancing_weights(estimand, t, e)
        return final_stage.weighted_linear_effect(frame[list(spec.covariates)], y, t, w)
    return est.aggregate(_split_estimates(estimand, stage, y, t, e_r, rows, fit)[0] for e_r, fit in fits)


def _reserve_fit_cache(spec: Spec, n_outcomes: int, learner, propensity_learner=None) -> None:
    """Make the learners' fit cache hold every fit of this spec (one propensity model per
    fold and propensity candidate; per outcome and arm, for every outcome candidate, an
    outcome model per fold, an effect model per fold with an X-learner, a posterior fit), so
    that the next loop iteration is served from it."""
    from .gbm_learners import FIT_CACHE

    per_arm = sum(spec.n_folds * (1 + len(m.effect_candidates)) + (m.posterior_regressor is not None)
                  for m in learner.members)
    n_propensity = len(propensity_learner.members) if propensity_learner is not None else 1
    FIT_CACHE.reserve(spec.n_repeats * (n_propensity * spec.n_folds + 2 * n_outcomes * per_arm))


def _run_spec(data: AnalysisData, spec: Spec, thresholds: Thresholds | None) -> SpecResult:
    th = thresholds or Thresholds()
    plan = data.plan
    check_against_plan(spec, plan)
    for c in spec.placebo_outcomes:
        if c not in data.placebos:
            raise ValidationError(f"Spec.placebo_outcomes: {c!r} is not in the prepared data")
    _check_final_stage(spec)
    frame = data.frame
    X, _, _ = encode_covariates(frame, spec.covariates)
    X_all, names_all, owners_all = encode_covariates(frame, plan.all_confounders)
    t, y = data.treatment, data.outcome
    n_treated, n_control = int(t.sum()), int(len(t) - t.sum())
    if min(n_treated, n_control) == 0:
        raise ValidationError(f"Plan.treatment: no {'control' if n_control == 0 else 'treated'} units "
                              "in this population")
    if min(n_treated, n_control) < spec.n_folds:
        raise ValidationError(f"Spec.n_folds: {spec.n_folds} folds need at least as many treated and "
                              f"control units (have {n_treated} / {n_control})")
    outcomes = {"__outcome__": y, **{c: data.placebos[c] for c in spec.placebo_outcomes}}
    outcome_learner, propensity_learner = get_learner(spec.outcome_learner), get_learner(spec.propensity_learner)
    _reserve_fit_cache(spec, len(outcomes), outcome_learner, propensity_learner)
    select = len(outcome_learner.members) > 1 or len(propensity_learner.members) > 1
    fits = []  # (clipped propensity, CrossFit) per fold split (spec.n_repeats)
    for r in range(spec.n_repeats):
        folds = est.make_folds(t, spec.n_folds, spec.seed + r)
        if select:
            fit = est.cross_fit_select(X, t, outcomes, folds, propensity_learner.members,
                                       outcome_learner.members, spec.seed + r,
                                       calibration=propensity_learner.propensity_calibration)
        else:
            fit = est.cross_fit(X, t, outcomes, folds, propensity_learner.classifier, outcome_learner.regressor,
                                spec.seed + r, outcome_features=outcome_learner.outcome_features,
                                posterior_factory=outcome_learner.posterior_regressor,
                                effect_factory=outcome_learner.effect_regressor,
                                calibration=propensity_learner.propensity_calibration)
        fits.append((np.clip(fit.e, spec.propensity_clip, 1 - spec.propensity_clip), fit))
    # trimming, weights and diagnostics use the mean propensity over the splits; trimming and
    # overlap are judged on the uncalibrated score when the propensity is calibrated
    e = np.mean([f[0] for f in fits], axis=0)
    score = None
    if fits[0][1].score is not None:
        score = np.mean([np.clip(f.score, spec.propensity_clip, 1 - spec.propensity_clip) for _, f in fits], axis=0)
    s = e if score is None else score

    if spec.trimming == "none":
        alpha = 0.0
    elif spec.trimming == "crump":
        alpha = est.crump_alpha(s)
    else:
        alpha = float(spec.trimming)
    kept = (s >= alpha) & (s <= 1 - alpha) if alpha > 0 else np.ones(len(t), bool)
    sd_y = float(np.std(y, ddof=1))
    linear_fits: dict = {}  # the linear outcome regression depends only on the rows (and weights)
    weighted = spec.final_stage == "weighted_linear"
    estimates, diagnostics = [], []
    for estimand in spec.estimands:
        trimmed = alpha > 0 and estimand != "ATO"
        rows = kept if trimmed else np.ones(len(t), bool)
        tt, ee = t[rows], e[rows]
        n1, n0 = int(tt.sum()), int(len(tt) - tt.sum())
        if min(n1, n0) == 0:
            raise ValidationError(f"Spec.trimming: trimming at alpha = {alpha:.4g} leaves no "
                                  f"{'treated' if n1 == 0 else 'control'} units for {estimand}")
        w = est.balancing_weights(estimand, tt, ee)
        stage = "aipw" if estimand == "ATO" or weighted else spec.final_stage
        dependence = None
        if weighted:
            from . import final_stage

            kern = final_stage.weighted_linear_effect(frame.loc[rows, list(spec.covariates)], y[rows], tt, w)
        else:
            per_split = [_split_estimates(estimand, stage, y[rows], tt, e_r[rows], rows, fit) for e_r, fit in fits]
            kern = est.aggregate(k for k, _ in per_split)
            if any(pair is not None for _, pair in per_split):  # X-learner: the extrapolation check
                own, ref = (est.aggregate(k if pair is None else pair[i] for k, pair in per_split) for i in range(2))
                dependence = abs(ref.estimate - own.estimate) / ref.std_error if ref.std_error > 0 else None
        lo, hi = kern.interval()
        untrimmed = (None, None, None)
        if trimmed:  # the untrimmed estimand beside the trimmed one (same nuisance fits)
            whole = _whole_population_estimate(estimand, stage, weighted, frame, spec, y, t, e, fits)
            untrimmed = (whole.estimate, *(float(v) for v in whole.interval()))
        estimates.append(EstimandResult(
            estimand, _population_label(estimand, alpha, trimmed), kern.estimate, kern.std_error,
            float(lo), float(hi), kern.p_value, int(rows.sum()), n1, n0, kern.mu1, kern.mu0,
            spec.final_stage, *untrimmed))
        key = (trimmed, estimand if weighted else None)
        if key not in linear_fits:
            linear_fits[key] = linear_sensitivity(y[rows], tt, X[rows], w if weighted else None)
        placebo = []
        for c in spec.placebo_outcomes:
            pk = est.aggregate(est.estimate(estimand, data.placebos[c][rows], tt, e_r[rows], fit.m0[c][rows],
                                            fit.m1[c][rows]) for e_r, fit in fits)
            placebo.append(PlaceboResult(c, pk.estimate, pk.std_error, pk.p_value))
        placebo = tuple(placebo)
        balance = _balance(X_all[rows], names_all, owners_all, tt, w, spec, plan)
        overlap = overlap_summary(estimand, tt, s[rows], w, th.overlap_bounds,
                                  n_trimmed=int((~rows).sum()), alpha=alpha if trimmed else 0.0)
        sens = _sensitivity(kern, (lo, hi), sd_y, linear_fits[key])
        checks = evaluate_checks(estimand, balance, overlap, placebo, sens, kern.p_value, trimmed, th, n1, n0,
                                 dependence=dependence)
        diagnostics.append(EstimandDiagnostics(estimand, balance, overlap, placebo, sens, checks))
    learners = tuple({"chosen": f.chosen, "risks": f.risks} for _, f in fits if f.chosen is not None)
    return SpecResult(spec, tuple(estimates), tuple(diagnostics), float(alpha), e, t.copy(), kept, learners, score)
