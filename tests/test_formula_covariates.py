"""Covariates given as a formulaic right-hand side: ``exogenous_covariates="x1 + C(g)"``.

The references are built here, independently of causalflow's design code: formulaic's own
``model_matrix`` (the expansion the docs promise: with an intercept, reduced-rank coding,
then the intercept dropped), centred at the mean over the fit's rows and interacted with the
arm indicators by hand (Lin 2013: X = [1, D, Xc, D x Xc]), fitted by statsmodels (OLS) and
linearmodels (2SLS).

Tolerances. A formula that expands to the same columns as a list of names must give the
same numbers up to rounding: rtol 1e-12. Against statsmodels / linearmodels rtol 1e-8: they
solve by QR / pinv of the design, we from its cross-products (normal equations); B-spline
columns are correlated (condition number of the design ~1.3e2 here), so the two agree to
O(cond^2 eps) ~ 1e-12, far inside 1e-8 (measured: coefficients 2.5e-13 against statsmodels,
1.1e-12 against linearmodels; standard errors 4e-14). Delta-vector checks built from our own
coefficients and covariance: rtol 1e-10 (measured 2e-15).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from formulaic import model_matrix
from linearmodels.iv import IV2SLS

import causalflow as cf

SPLINE = "np.log1p(x1) + bs(x2, df=4)"


def simulate(seed: int = 0, n: int = 900) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cl = rng.integers(0, 60, n)
    a = rng.integers(0, 2, 60)[cl]  # clusters are the units of randomisation
    df = pd.DataFrame({"a": a, "x1": rng.exponential(size=n), "x2": rng.normal(size=n),
                       "g": rng.choice(["a", "b", "c"], n), "cl": cl,
                       "e": rng.uniform(0.3, 0.7, n)})
    df["d"] = np.where(rng.random(n) < 0.75, a, 0)  # one-sided non-compliance
    effect = 0.5 + 0.4 * np.sin(df.x2) + 0.3 * (df.g == "b")
    df["y"] = 1 + effect * df.d + np.log1p(df.x1) + df.x2 ** 2 + rng.normal(size=n)
    df["z"] = df.x1 + 0.2 * df.a + rng.normal(size=n)
    return df


def experiment(df: pd.DataFrame, design: str) -> cf.ExperimentData:
    kwargs = {"ab": {}, "encouragement": {"treated": "d"},
              "adaptive_cluster": {"propensity": "e", "cluster_by": "cl"}}[design]
    return cf.ExperimentData(df, intent_to_treat="a", **kwargs)


def lin_design(df: pd.DataFrame, formula: str, arm: np.ndarray) -> tuple[pd.DataFrame, pd.Series]:
    """[1, arm, Xc, arm x Xc] from formulaic's matrix of ``formula`` (intercept dropped), and mu."""
    X = model_matrix(formula, df).drop(columns="Intercept").astype(float)
    mu = X.mean()
    xc = X - mu
    inter = xc.mul(arm, axis=0).add_prefix("arm:")
    return pd.concat([pd.Series(1.0, index=df.index, name="Intercept"), pd.Series(arm, index=df.index, name="arm"),
                      xc, inter], axis=1), mu


# -- the same columns as a list: the same numbers --------------------------------------------------
@pytest.mark.parametrize("design", ["ab", "encouragement", "adaptive_cluster"])
@pytest.mark.parametrize("formula", ["x1 + C(g)", "~ x1 + g", "0 + g + x1"])
def test_formula_equals_list_of_columns(design, formula):
    df = simulate(1)
    data = experiment(df, design)
    listed = data.add_metric(y=["y", "z"], exogenous_covariates=["x1", "g"]).fit(cf.LinearModel)
    formed = data.add_metric(y=["y", "z"], exogenous_covariates=formula).fit(cf.LinearModel)
    level = "C(g)[T.{}]" if "C(g)" in formula else "g[T.{}]"
    for kind in listed.fit_kinds:
        names = list(listed.params(kind).index)
        for v in "bc":  # the list names a level g[b]; formulaic names it C(g)[T.b] or g[T.b]
            names = [name.replace(f"g[{v}]", level.format(v)) for name in names]
        assert sorted(formed.params(kind).index) == sorted(names)
        np.testing.assert_allclose(formed.params(kind).loc[names].to_numpy(), listed.params(kind).to_numpy(),
                                   rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(formed.std_errors(kind).loc[names].to_numpy(),
                                   listed.std_errors(kind).to_numpy(), rtol=1e-12)
    conditions = ["g == 'b'", "x1 > 1 and g != 'c'"]
    a = listed.infer_effect(condition_on=conditions).to_frame()
    b = formed.infer_effect(condition_on=conditions).to_frame()
    for column in ["estimate", "std_error", "n"]:
        np.testing.assert_allclose(b[column].to_numpy(dtype=float), a[column].to_numpy(dtype=float), rtol=1e-12)


def test_a_column_name_is_a_column_not_a_formula():
    """The rule: one string that names a column is that column; any other string is a formula."""
    df = simulate(2).assign(**{"x1+x2": lambda d: d.x1 + d.x2})
    data = cf.ExperimentData(df, intent_to_treat="a")
    assert data.add_metric(y="y", exogenous_covariates="x1").fit(cf.LinearModel).names == \
        data.add_metric(y="y", exogenous_covariates=["x1"]).fit(cf.LinearModel).names
    column = data.add_metric(y="y", exogenous_covariates="x1+x2").fit(cf.LinearModel)
    assert column.names == ["Intercept", "a[1]", "x1+x2", "a[1]:x1+x2"]
    formula = data.add_metric(y="y", exogenous_covariates="x1 + x2").fit(cf.LinearModel)
    assert formula.names == ["Intercept", "a[1]", "x1", "x2", "a[1]:x1", "a[1]:x2"]
    # a list holds names only: a formula inside a list is an unknown column
    with pytest.raises(cf.ValidationError, match="not in the data"):
        data.add_metric(y="y", exogenous_covariates=["x1", "np.log1p(x2)"])


# -- transforms against statsmodels and linearmodels -----------------------------------------------
def test_transformed_formula_against_statsmodels():
    df = simulate(3)
    model = cf.ExperimentData(df, intent_to_treat="a").add_metric(
        y="y", exogenous_covariates=SPLINE).fit(cf.LinearModel(cov_type="HC1"))
    X, _ = lin_design(df, SPLINE, df.a.to_numpy(dtype=float))
    res = sm.OLS(df.y, X).fit(cov_type="HC1")
    assert model.names == ["Intercept", "a[1]", *X.columns[2:].str.replace("arm:", "a[1]:").tolist()]
    np.testing.assert_allclose(model.params()["y"].to_numpy(), res.params.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(model.std_errors()["y"].to_numpy(), res.bse.to_numpy(), rtol=1e-8)


def test_transformed_formula_2sls_against_linearmodels():
    df = simulate(4)
    model = cf.ExperimentData(df, intent_to_treat="a", treated="d").add_metric(
        y="y", exogenous_covariates=SPLINE).fit(cf.LinearModel(cov_type="HC1"))
    X, _ = lin_design(df, SPLINE, df.d.to_numpy(dtype=float))
    Z, _ = lin_design(df, SPLINE, df.a.to_numpy(dtype=float))
    exog = X.drop(columns=[c for c in X.columns if c.startswith("arm")])
    endog = X[[c for c in X.columns if c.startswith("arm")]]
    instruments = Z[[c for c in Z.columns if c.startswith("arm")]]
    res = IV2SLS(df.y, exog, endog, instruments).fit(cov_type="robust", debiased=True)
    order = ["Intercept", "arm", *exog.columns[1:], *endog.columns[1:]]
    np.testing.assert_allclose(model.params("iv")["y"].to_numpy(), res.params[order].to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(model.std_errors("iv")["y"].to_numpy(), res.std_errors[order].to_numpy(), rtol=1e-8)


# -- conditions over the original columns ----------------------------------------------------------
def hand_effect(model, metric: str, xbar_minus_mu: np.ndarray, arm: str = "a[1]") -> tuple[float, float]:
    names = model.names
    d = np.zeros(len(names))
    d[names.index(arm)] = 1.0
    start = names.index(f"{arm}:{model.spec.covariates.names[0]}")
    d[start:start + len(xbar_minus_mu)] = xbar_minus_mu
    b, V = model.params()[metric].to_numpy(), model.cov_params()[metric].to_numpy()
    return float(d @ b), float(np.sqrt(d @ V @ d))


def test_condition_on_original_columns_of_a_formula():
    df = simulate(5)
    formula = SPLINE + " + C(g)"
    model = cf.ExperimentData(df, intent_to_treat="a").add_metric(
        y="y", exogenous_covariates=formula).fit(cf.LinearModel)
    assert set(model.spec.covariates.sources) == {"x1", "x2", "g"}
    X = model_matrix(formula, df).drop(columns="Intercept").astype(float)
    assert list(X.columns) == list(model.spec.covariates.names)
    mu = X.mean().to_numpy()
    frame = model.infer_effect(condition_on=["x2 > 0", "g == 'b'"]).to_frame().set_index("condition")
    for condition, mask in (("x2 > 0", df.x2 > 0), ("g == 'b'", df.g == "b")):
        estimate, se = hand_effect(model, "y", X[mask].mean().to_numpy() - mu)
        assert frame.loc[condition, "n"] == mask.sum()
        assert frame.loc[condition, "estimate"] == pytest.approx(estimate, rel=1e-10)
        assert frame.loc[condition, "std_error"] == pytest.approx(se, rel=1e-10)
    # the spline's own columns are not condition columns
    with pytest.raises(cf.ValidationError, match="unknown column"):
        model.infer_effect(condition_on=["bs > 0"])


# -- projection onto a target table: the fitted knots and levels -----------------------------------
def test_project_formula_onto_target_table():
    df = simulate(6)
    formula = SPLINE + " + C(g)"
    model = cf.ExperimentData(df, intent_to_treat="a").add_metric(
        y="y", exogenous_covariates=formula).fit(cf.LinearModel)
    rng = np.random.default_rng(60)
    target = df[df.x2 > -0.5].sample(300, replace=True, random_state=rng)[["x1", "x2", "g"]]
    target = target.assign(g=rng.choice(["a", "b"], len(target), p=[0.2, 0.8]))
    fitted = model_matrix(formula, df)
    X = pd.DataFrame(fitted).drop(columns="Intercept").astype(float)
    # the fit's knots and levels, applied to the target (formulaic's stored state)
    XT = pd.DataFrame(fitted.model_spec.get_model_matrix(target)).drop(columns="Intercept").astype(float)
    estimate, se = hand_effect(model, "y", (XT.mean() - X.mean()).to_numpy())
    proj = model.infer_effect().project(target).to_frame()
    assert proj.estimate[0] == pytest.approx(estimate, rel=1e-10)
    assert proj.std_error[0] == pytest.approx(se, rel=1e-10)
    # knots re-estimated on the target would give another answer: the test can tell them apart
    refit = XT.copy()
    spline = [c for c in XT.columns if c.startswith("bs(")]
    refit[spline] = model_matrix("bs(x2, df=4)", target).drop(columns="Intercept").astype(float).to_numpy()
    assert abs(hand_effect(model, "y", (refit.mean() - X.mean()).to_numpy())[0] - estimate) > 1e-3
    # the experiment's own table gives back the average effect
    own = model.infer_effect().project(df).to_frame()
    np.testing.assert_allclose(own.estimate, model.infer_effect().to_frame().estimate, rtol=1e-10)


@pytest.mark.parametrize("change, words", [
    (lambda t: t.assign(g="d"), ["'g'", "'d'", "not seen"]),
    (lambda t: t.drop(columns="x1"), ["'x1'", "not in the table"]),
    (lambda t: t.assign(x2=np.nan), ["'x2'", "missing"]),
    (lambda t: t.assign(x2=50.0), ["bs(x2, df=4)"]),          # beyond the fitted boundary knots
    (lambda t: t.assign(x1="high"), ["'x1'", "numeric"]),
])
def test_project_formula_refuses_bad_target(change, words):
    df = simulate(7)
    model = cf.ExperimentData(df, intent_to_treat="a").add_metric(
        y="y", exogenous_covariates=SPLINE + " + C(g)").fit(cf.LinearModel)
    with pytest.raises(cf.ValidationError) as info:
        model.infer_effect().project(change(df[["x1", "x2", "g"]].head(20)))
    for word in words:
        assert word in str(info.value)


# -- validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("formula, words", [
    ("x1 + nope", ["'nope'", "not in the data"]),
    ("x1 + np.log1p(nope)", ["'nope'", "not in the data"]),
    ("x1 + y", ["'y'", "metric"]),
    ("np.log1p(x1) + a", ["'a'", "intent_to_treat"]),
    ("x1 + C(cl)", ["'cl'", "cluster_by"]),
    ("x1 + bs(w, df=4)", ["'w'", "missing"]),
    ("x1 + I(0 * x1)", ["'I(0 * x1)'", "constant"]),
    ("x1 + I(2 * x1 + 1)", ["collinear", "'x1'", "'I(2 * x1 + 1)'"]),
    ("np.log(x1 - 10)", ["np.log(x1 - 10)"]),
    ("I(g * 2)", ["'g'", "C()"]),
    ("y ~ x1", ["outcome"]),
    ("x1 | x2", ["several parts"]),
    ("x1 +", ["does not parse"]),
    ("0", ["no column"]),
])
def test_formula_errors_name_the_column_or_term(formula, words):
    df = simulate(8)
    df["w"] = df.x2.where(df.index % 50 != 0)
    data = cf.ExperimentData(df, intent_to_treat="a", cluster_by="cl")
    with pytest.raises(cf.ValidationError) as info:
        data.add_metric(y="y", exogenous_covariates=formula)
    for word in words:
        assert word in str(info.value)


# -- nothing in a formula runs as code -------------------------------------------------------------
def payloads(marker) -> list[str]:
    path = repr(str(marker))
    return [
        f"{{__import__('pathlib').Path({path}).touch()}}",                   # a Python block
        f"x1 + I(x1 + __import__('pathlib').Path({path}).touch())",          # inside I()
        f"x1 + np.lib.npyio.os.system('touch {marker}')",                    # an attribute chain
        f"x1 + {{open({path}, 'w')}}",                                       # a builtin
        f"x1 + {{(lambda: __import__('os').system('touch {marker}'))()}}",   # a lambda
        f"bs(x2, knots=__import__('os').system('touch {marker}'))",          # a keyword value
        f"C(g, contr.treatment(__import__('os').system('touch {marker}')))",
        "x1 + {[c for c in ().__class__.__base__.__subclasses__()]}",       # dunder walk
        "x1 + {x1.__class__}",
        "x1 + lag(x1)",                                                      # not on the list
        "I(9 ** 9 ** 9 + x1)",                                               # would never finish
        "I('a' * 10 ** 10 == g)",
    ]


def test_formulaic_alone_would_run_the_payloads(tmp_path):
    """Why the whitelist exists: formulaic evaluates terms with eval()."""
    marker = tmp_path / "ran_by_formulaic"
    try:
        model_matrix(payloads(marker)[0], pd.DataFrame({"x1": [1.0, 2.0]}))
    except Exception:  # noqa: BLE001, S110 (the file is what matters, not formulaic's complaint)
        pass
    assert marker.exists()


def test_unsafe_formulas_are_refused_and_never_run(tmp_path):
    df = simulate(9)
    data = cf.ExperimentData(df, intent_to_treat="a")
    marker = tmp_path / "ran"
    for formula in payloads(marker):
        try:
            data.add_metric(y="y", exogenous_covariates=formula)
            refusal = "accepted"
        except cf.ValidationError as exc:
            refusal = str(exc)
        except Exception as exc:  # noqa: BLE001 (reported below: only a ValidationError is right)
            refusal = repr(exc)
        assert not marker.exists(), formula  # first: did it run?
        assert re.search("not allowed|is not a literal|arithmetic needs|takes", refusal), (formula, refusal)


# -- 2SLS coefficients are named by the treatment received -----------------------------------------
def test_coefficient_names_follow_the_fit():
    rng = np.random.default_rng(10)
    n = 500
    assigned = rng.integers(0, 2, n)
    df = pd.DataFrame({"assigned": assigned, "uses_widget": np.where(rng.random(n) < 0.7, assigned, 0),
                       "x": rng.normal(size=n)})
    df["y"] = 1 + df.uses_widget + df.x + rng.normal(size=n)
    itt = ["Intercept", "assigned[1]", "x", "assigned[1]:x"]
    iv = ["Intercept", "uses_widget[1]", "x", "uses_widget[1]:x"]
    for declared in ({"intent_to_treat": "assigned", "treated": "uses_widget"},
                     {"intent_to_treat": "uses_widget", "instrument": "assigned"}):
        model = cf.ExperimentData(df, **declared).add_metric(y="y", exogenous_covariates=["x"]).fit(cf.LinearModel)
        assert model.fit_kinds == ("itt", "iv")
        assert model.names == iv
        assert list(model.params().index) == iv
        assert list(model.params("iv").index) == iv
        assert list(model.params("itt").index) == itt
        assert list(model.std_errors("itt").index) == itt
        assert list(model.cov_params("itt")["y"].columns) == itt
        assert list(model.cov_params("iv")["y"].index) == iv
    # an A/B test: the assignment is the treatment
    ab = cf.ExperimentData(df, intent_to_treat="assigned").add_metric(y="y", exogenous_covariates=["x"])
    assert ab.fit(cf.LinearModel).names == itt


def test_formula_reads_every_table_source_alike():
    """pandas (object, category, arrow-backed text, nullable ints) and polars: one answer."""
    pl = pytest.importorskip("polars")
    df = simulate(11).assign(k=lambda d: d.cl % 3, flag=lambda d: d.x2 > 0.5)
    formula = "x1 + g + flag + C(k) + bs(x2, df=3)"
    frames = [df, pl.from_pandas(df), df.astype({"g": "category"}),
              df.astype({"g": "string[pyarrow]", "k": "Int64", "x1": "float64[pyarrow]", "flag": "boolean"})]
    results = []
    for frame in frames:
        model = cf.ExperimentData(frame, intent_to_treat="a").add_metric(
            y="y", exogenous_covariates=formula).fit(cf.LinearModel)
        effects = model.infer_effect(condition_on=["flag and g == 'b'", "k == 2"])
        results.append((model.names, effects.to_frame().estimate.to_numpy(),
                        effects.project(frame).to_frame().estimate.to_numpy()))
    for names, estimates, projected in results[1:]:
        assert names == results[0][0]
        np.testing.assert_allclose(estimates, results[0][1], rtol=1e-12)
        np.testing.assert_allclose(projected, results[0][2], rtol=1e-12)


def test_a_formula_that_does_not_parse_is_a_validation_error():
    """formulaic raises SyntaxError on some texts; the user sees a ValidationError naming the formula."""
    df = pd.DataFrame({"t": [0, 1] * 20, "y": np.arange(40.0), "x": np.arange(40.0)})
    data = cf.ExperimentData(df, intent_to_treat="t")
    with pytest.raises(cf.ValidationError, match="does not parse"):
        data.add_metric(y="y", exogenous_covariates="__import__('os').system('x')")
