"""The runner's estimators against independent hand-written references."""

import math

import numpy as np
import pandas as pd
import pytest
from oci_sims import expit, good_overlap, poor_overlap
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from causalflow.oci.diagnostics import (
    e_value,
    linear_sensitivity,
    robustness_value,
    standardized_mean_differences,
)
from causalflow.oci.estimators import crump_alpha
from causalflow.oci.plan import Plan, prepare_data
from causalflow.oci.runner import run_spec
from causalflow.oci.spec import Spec


def _reference_nuisances(X, t, y, n_folds, seed, clip):
    """Cross-fitting written out directly: same folds (StratifiedKFold, shuffled with
    the seed) and the same learners (standardized L2 logistic, C=1; OLS per arm)."""
    n = len(t)
    e, m0, m1 = np.empty(n), np.empty(n), np.empty(n)
    for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(X, t):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
        clf.fit(X[train], t[train])
        e[test] = clf.predict_proba(X[test])[:, 1]
        tr1, tr0 = train[t[train] == 1], train[t[train] == 0]
        m1[test] = LinearRegression().fit(X[tr1], y[tr1]).predict(X[test])
        m0[test] = LinearRegression().fit(X[tr0], y[tr0]).predict(X[test])
    return np.clip(e, clip, 1 - clip), m0, m1


def _reference_estimates(y, t, e, m0, m1):
    """Textbook forms, written independently of the package (loops over units for ATE)."""
    n = len(y)
    out = {}
    # ATE: Robins, Rotnitzky & Zhao (1994) AIPW score, SE = sd(score) / sqrt(n) with 1/n variance
    scores = [m1[i] - m0[i] + t[i] * (y[i] - m1[i]) / e[i] - (1 - t[i]) * (y[i] - m0[i]) / (1 - e[i])
              for i in range(n)]
    scores = np.array(scores)
    tau = scores.mean()
    out["ATE"] = (tau, np.sqrt(np.mean((scores - tau) ** 2) / n))
    # ATT: Chernozhukov et al. (2018) score psi = [t (y - m0) - e (1-t)(y - m0)/(1-e)]/p - theta t/p
    p = t.mean()
    a = t * (y - m0) - e * (1 - t) * (y - m0) / (1 - e)
    theta = a.sum() / t.sum()
    psi = (a - theta * t) / p
    out["ATT"] = (theta, np.sqrt(np.mean(psi**2) / n))
    # ATO: augmented overlap weights, h = e (1 - e); weights 1 - e (treated), e (control)
    h = e * (1 - e)
    num = np.sum(h * (m1 - m0)) + np.sum(t * (1 - e) * (y - m1)) - np.sum((1 - t) * e * (y - m0))
    tau_o = num / h.sum()
    phi = h * (m1 - m0) + t * (1 - e) * (y - m1) - (1 - t) * e * (y - m0)
    infl = (phi - h * tau_o) / h.mean()
    out["ATO"] = (tau_o, np.sqrt(np.mean(infl**2) / n))
    return out


@pytest.mark.parametrize("study", [good_overlap, poor_overlap])
def test_aipw_matches_hand_written_reference(study):
    # rtol 1e-8: same folds, same learners, same clipping -> only floating-point order differs
    df, _ = study(n=600, seed=3)
    covariates = [c for c in df.columns if c.startswith("x")]
    plan = Plan(data=df, treatment="t", outcome="y", confounders=covariates, estimands=["ATE", "ATT", "ATO"],
                seed=11)
    spec = Spec(estimands=("ATE", "ATT", "ATO"), covariates=tuple(covariates),
                priorities=tuple((c, "high") for c in covariates), n_folds=3, seed=11)
    result = run_spec(prepare_data(plan), spec)
    X = df[covariates].to_numpy(float)
    t = df["t"].to_numpy(float)
    y = df["y"].to_numpy(float)
    e, m0, m1 = _reference_nuisances(X, t.astype(int), y, 3, 11, spec.propensity_clip)
    np.testing.assert_allclose(result.propensity, e, rtol=1e-8)
    ref = _reference_estimates(y, t, e, m0, m1)
    for r in result.estimates:
        np.testing.assert_allclose([r.estimate, r.std_error], ref[r.estimand], rtol=1e-8, err_msg=r.estimand)
        z = r.estimate / r.std_error
        np.testing.assert_allclose([r.ci_lower, r.ci_upper],
                                   [r.estimate - 1.959963984540054 * r.std_error,
                                    r.estimate + 1.959963984540054 * r.std_error], rtol=1e-12)
        assert r.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-8)


def test_crump_alpha_minimises_the_variance_bound():
    # Crump et al. (2009): alpha minimises E[g | A] / P(A), A = {alpha <= e <= 1-alpha},
    # g = 1/(e(1-e)) (homoskedastic bound). A brute-force grid over the sample must agree
    # to within the grid step.
    rng = np.random.default_rng(0)
    e = expit(2.5 * rng.normal(size=5000))
    alpha = crump_alpha(e)
    g = 1 / (e * (1 - e))
    grid = np.linspace(0.0, 0.3, 3001)
    objective = [g[(e >= a) & (e <= 1 - a)].mean() / np.mean((e >= a) & (e <= 1 - a)) for a in grid]
    best = grid[int(np.argmin(objective))]
    assert 0.02 < alpha < 0.3
    assert abs(alpha - best) < 2e-3
    # no trimming is optimal when max g <= 2 E[g] (Crump et al. 2009, Theorem 1)
    assert crump_alpha(np.linspace(0.3, 0.7, 100)) == 0.0


def test_crump_alpha_is_the_global_minimiser_when_most_units_lack_overlap():
    # 60% of the units near e = 0.001 (as ACIC 2016 setting 19 replication 3): max g <= 2 E[g],
    # so the first-order condition of Crump et al.'s Theorem 1 also holds for "keep all", but
    # the variance bound E[g | A] / P(A) is far smaller on the units with overlap. The sample
    # objective, evaluated at every candidate threshold by brute force, decides.
    rng = np.random.default_rng(3)
    e = np.r_[rng.uniform(0.001, 0.0012, 600), rng.uniform(0.2, 0.8, 400)]
    g = 1 / (e * (1 - e))
    assert g.max() <= 2 * g.mean()
    objective = lambda a: g[(e >= a) & (e <= 1 - a)].sum() / ((e >= a) & (e <= 1 - a)).sum() ** 2
    candidates = np.r_[0.0, np.unique(np.minimum(e, 1 - e))]
    best = min(objective(a) for a in candidates)
    alpha = crump_alpha(e)
    assert objective(alpha) == pytest.approx(best, rel=1e-12)
    assert ((e >= alpha) & (e <= 1 - alpha)).sum() < 400 + 1 and objective(alpha) < objective(0.0) / 10


def test_smd_by_hand():
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    t = (rng.random(50) < 0.5).astype(int)
    w = rng.uniform(0.5, 2.0, size=50)
    x1, x0, w1, w0 = x[t == 1], x[t == 0], w[t == 1], w[t == 0]
    pooled = np.sqrt((np.var(x1, ddof=1) + np.var(x0, ddof=1)) / 2)
    want_u = (x1.mean() - x0.mean()) / pooled
    want_w = (np.sum(w1 * x1) / w1.sum() - np.sum(w0 * x0) / w0.sum()) / pooled
    got = standardized_mean_differences(x[:, None], t), standardized_mean_differences(x[:, None], t, w)
    np.testing.assert_allclose([got[0][0], got[1][0]], [want_u, want_w], rtol=1e-12)


def test_e_value_closed_form():
    # VanderWeele & Ding (2017): RR = exp(0.91 d); E = RR + sqrt(RR (RR - 1)).
    rr = np.exp(0.91 * 0.5)
    point, limit = e_value(1.0, 0.4, 1.6, 2.0)
    assert point == pytest.approx(rr + np.sqrt(rr * (rr - 1)), rel=1e-12)
    rr_lo = np.exp(0.91 * 0.2)
    assert limit == pytest.approx(rr_lo + np.sqrt(rr_lo * (rr_lo - 1)), rel=1e-12)
    # negative effects use 1/RR; an interval through 0 has limit E-value 1
    assert e_value(-1.0, -1.6, -0.4, 2.0) == pytest.approx((point, limit), rel=1e-12)
    assert e_value(1.0, -0.1, 2.1, 2.0)[1] == 1.0


def test_robustness_value_solves_the_bias_bound():
    # Cinelli & Hazlett (2020): with R2_{Y~Z|D,X} = R2_{D~Z|X} = RV the bias bound
    # se * sqrt(dof) * RV / sqrt(1 - RV) equals |estimate| = |t| se, i.e. RV^2/(1-RV) = t^2/dof.
    for t_stat, dof in [(4.0, 100), (2.5, 30), (10.0, 5000)]:
        rv = robustness_value(t_stat, dof)
        assert rv**2 / (1 - rv) == pytest.approx(t_stat**2 / dof, rel=1e-10)
    # with alpha, f is reduced by the critical value; an insignificant t gives 0
    assert robustness_value(1.5, 100, alpha=0.05) == 0.0
    assert 0 < robustness_value(5.0, 100, alpha=0.05) < robustness_value(5.0, 100)


def test_linear_sensitivity_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 2))
    t = (rng.random(200) < 0.5).astype(float)
    y = 1 + 0.7 * t + X @ [1.0, -0.5] + rng.normal(size=200)
    w = rng.uniform(0.5, 2, size=200)
    for weights in (None, w):
        b, tstat, dof = linear_sensitivity(y, t, X, weights)
        Z = sm.add_constant(np.column_stack([t, X]))
        fit = sm.WLS(y, Z, weights=np.ones(200) if weights is None else weights).fit()
        # rtol 1e-8: the same classical OLS / WLS coefficient and t statistic
        np.testing.assert_allclose([b, tstat, dof], [fit.params[1], fit.tvalues[1], fit.df_resid], rtol=1e-8)


def test_weighted_linear_final_stage_matches_statsmodels_wls():
    # The grammar's LinearModel (HC0) with balancing weights is WLS of y on
    # [1, t, x - xbar_w, t (x - xbar_w)]; statsmodels' WLS with HC0 is the peer (rtol 1e-8).
    sm = pytest.importorskip("statsmodels.api")
    df, _ = good_overlap(n=500, seed=5)
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["x1", "x2", "x3"], estimands=["ATE", "ATO"])
    spec = Spec(estimands=("ATE", "ATO"), covariates=("x1", "x2", "x3"),
                priorities=(("x1", "high"), ("x2", "high"), ("x3", "high")), n_folds=2,
                final_stage="weighted_linear")
    result = run_spec(prepare_data(plan), spec)
    t = df["t"].to_numpy(float)
    X = df[["x1", "x2", "x3"]].to_numpy(float)
    # the propensity of the weights, cross-fitted here (not the code's own)
    e, _, _ = _reference_nuisances(X, t.astype(int), df["y"].to_numpy(float), 2, spec.seed, spec.propensity_clip)
    np.testing.assert_allclose(result.propensity, e, rtol=1e-8)
    for r in result.estimates:
        w = t / e + (1 - t) / (1 - e) if r.estimand == "ATE" else t * (1 - e) + (1 - t) * e
        Xc = X - (w @ X) / w.sum()
        Z = np.column_stack([np.ones(len(t)), t, Xc, t[:, None] * Xc])
        fit = sm.WLS(df["y"].to_numpy(), Z, weights=w).fit(cov_type="HC0")
        np.testing.assert_allclose([r.estimate, r.std_error], [fit.params[1], fit.bse[1]], rtol=1e-8)
        assert r.final_stage == "weighted_linear"


def test_categorical_confounders_are_one_hot_encoded():
    rng = np.random.default_rng(4)
    n = 400
    g = rng.choice(["a", "b", "c"], size=n)
    shift = pd.Series(g).map({"a": -1.0, "b": 0.0, "c": 1.0}).to_numpy()
    t = (rng.random(n) < expit(shift)).astype(int)
    df = pd.DataFrame({"g": g, "t": t, "y": 1.5 * t + shift + rng.normal(size=n)})
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["g"])
    spec = Spec(estimands=("ATE",), covariates=("g",), priorities=(("g", "high"),), n_folds=2)
    result = run_spec(prepare_data(plan), spec)
    assert [b.column for b in result.diagnostics[0].balance] == ["g=a", "g=b", "g=c"]
    r = result.estimates[0]
    assert abs(r.estimate - 1.5) < 3 * r.std_error


def test_tiny_trimmed_population_is_graded_not_crashed():
    df, _ = poor_overlap(n=400, seed=1)
    plan = Plan(data=df, treatment="t", outcome="y", confounders=["x1", "x2"], estimands=["ATE"])
    spec = Spec(estimands=("ATE",), covariates=("x1", "x2"), priorities=(("x1", "high"), ("x2", "high")),
                n_folds=2, trimming=0.49)
    result = run_spec(prepare_data(plan), spec)
    checks = {c.name: c for c in result.diagnostics[0].checks}
    assert result.estimates[0].n < 20
    assert checks["sample_size"].status == "fail"
    assert checks["population"].status == "warn"
    b, tstat, dof = linear_sensitivity(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 1.0]),
                                       np.array([[1.0], [5.0], [2.0]]))
    assert dof == 0 and math.isnan(tstat)


def test_estimates_follow_affine_changes_of_the_outcome():
    # With linear outcome models the fitted values are affine-equivariant and the
    # propensity does not see y: y -> a y + b maps every estimate to a * estimate and
    # every SE to |a| * SE (rtol 1e-8: floating point only).
    df, _ = good_overlap(n=500, seed=9)
    spec = Spec(estimands=("ATE", "ATT", "ATO"), covariates=("x1", "x2", "x3"),
                priorities=tuple((c, "high") for c in ("x1", "x2", "x3")), n_folds=3)
    base = run_spec(prepare_data(Plan(data=df, treatment="t", outcome="y", confounders=["x1", "x2", "x3"])),
                    spec)
    moved = df.assign(y=-3.0 * df["y"] + 7.0)
    other = run_spec(prepare_data(Plan(data=moved, treatment="t", outcome="y",
                                       confounders=["x1", "x2", "x3"])), spec)
    for a, b in zip(base.estimates, other.estimates):
        np.testing.assert_allclose([b.estimate, b.std_error], [-3.0 * a.estimate, 3.0 * a.std_error], rtol=1e-8)
