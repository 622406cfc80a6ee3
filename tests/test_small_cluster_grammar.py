"""CR2 and CR3 through the grammar (ExperimentData -> LinearModel -> infer_effect) against
R clubSandwich (stored values: tests/reference/make_clubsandwich.R wrote them).

The kernels have their own tests (tests/test_small_sample.py); these check the wiring: the
design, weights from propensities, 2SLS, the joint covariance across metrics, the dof that
the effects records carry. rtol 1e-8: both sides compute the same closed forms in double
precision (measured agreement ~1e-13); dof at rtol 1e-6 (a ratio of sums of squares)."""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

import causalflow as cf

REF = pathlib.Path(__file__).parent / "reference"
CASES = json.loads((REF / "clubsandwich.json").read_text())["cases"]


def _fit(case_name: str, cov_type: str):
    case = CASES[case_name]
    df = pd.read_csv(REF / case["data"])
    if case_name.startswith("two_arm"):
        data = cf.ExperimentData(df, intent_to_treat="a", cluster_by="cluster")
        covariates, condition = ["x1", "x2"], "x2 == 1"
    elif case_name.startswith("three_arm"):
        propensity = None
        if case["weights"]:  # the rows' weights are 1 / P(arm): P = (1/2, 1/4, 1/4)
            df = df.assign(p0=0.5, p1=0.25, p2=0.25)
            propensity = {0: "p0", 1: "p1", 2: "p2"}
        with pytest.warns(cf.DesignWarning, match="more than one assigned arm"):  # rows are randomised
            data = cf.ExperimentData(df, intent_to_treat="arm", cluster_by="cluster", propensity=propensity)
        covariates, condition = ["x"], "x > 0"
    else:
        data = cf.ExperimentData(df, intent_to_treat="a", treated="d", cluster_by="cluster")
        covariates, condition = ["x"], f"x > {float(np.median(df.x))!r}"
    model = data.add_metric(y=case["outcomes"], exogenous_covariates=covariates).fit(
        cf.LinearModel(cov_type=cov_type))
    return case, model, condition


def _per_metric(joint: np.ndarray, k: int, K: int) -> np.ndarray:
    """Metric k's (p x p) block of a coefficient-major (pK x pK) joint matrix."""
    idx = np.arange(joint.shape[0] // K) * K + k
    return joint[np.ix_(idx, idx)]


@pytest.mark.parametrize("case_name", ["two_arm_ols", "three_arm_ols", "three_arm_wls", "iv"])
def test_cr2_equals_clubsandwich(case_name):
    case, model, condition = _fit(case_name, "CR2")
    K = len(case["outcomes"])
    joint = np.asarray(case["cr2"])
    for k, metric in enumerate(case["outcomes"]):
        np.testing.assert_allclose(model.params()[metric], np.asarray(case["coef"])[:, k], rtol=1e-10)
        np.testing.assert_allclose(model.cov_params()[metric].to_numpy(), _per_metric(joint, k, K),
                                   rtol=1e-8, atol=1e-12 * np.abs(joint).max())
    # the 2SLS contrasts at the units' covariate means are the ATE / CATE rows (the LATE sits at
    # the compliers' covariate means, which CR2 does not cover: tests/test_late_compliers.py)
    asked = ["ITT", "ATE"] if case["model"] == "iv" else None
    avg = model.infer_effect(estimands=asked).to_frame()
    avg = avg[avg.estimand == "ATE"]
    assert avg.dof.iloc[0] == pytest.approx(case["coef_df"][1], rel=1e-6)
    if case["weights"]:
        return  # R's contrast uses unweighted subgroup means; ours the weighted ones
    effects = model.infer_effect(condition_on=[condition], estimands=asked).to_frame()
    estimand = "CATE"
    contrasts = np.asarray(case["contrasts"])
    # the conditional effect of arm 1 is the contrast R labels e_arm1 + mean_S(xc) e_arm1:x
    row = next(i for i, c in enumerate(contrasts) if c[1] == 1 and np.any(c[model.layout.interactions(1)]))
    first = effects[(effects.arm == model.spec.data.arms[1]) & (effects.estimand == estimand)].iloc[0]
    assert first.std_error == pytest.approx(case["contrast_cr2_se"][row][0], rel=1e-8)
    assert first.dof == pytest.approx(case["contrast_cr2_df"][row], rel=1e-6)


@pytest.mark.parametrize("case_name", ["two_arm_ols", "three_arm_ols", "three_arm_wls"])
def test_cr3_equals_clubsandwich_times_g_minus_1_over_g(case_name):
    """clubSandwich's CR3 for OLS / WLS is the exact jackknife sum; ours is MacKinnon, Nielsen
    and Webb's CV3, the same sum times (G - 1) / G."""
    case, model, _ = _fit(case_name, "CR3")
    G, K = case["n_clusters"], len(case["outcomes"])
    joint = (G - 1) / G * np.asarray(case["cr3"])
    for k, metric in enumerate(case["outcomes"]):
        np.testing.assert_allclose(model.cov_params()[metric].to_numpy(), _per_metric(joint, k, K),
                                   rtol=1e-8, atol=1e-12 * np.abs(joint).max())
    # CR3's t reference: the Bell-McCaffrey dof of the contrast, which without weights is
    # clubSandwich's Satterthwaite dof of CR2 (with weights, design_dof uses the working
    # model W^-1: tests/test_small_sample.py checks it against the explicit G x G matrix)
    avg = model.infer_effect().to_frame()
    assert (avg.dof < G - 1).all()
    if not case["weights"]:
        assert avg.dof.iloc[0] == pytest.approx(case["coef_df"][1], rel=1e-6)


def test_cr3_of_2sls_is_the_exact_jackknife_of_the_itt_and_late():
    """Leave one cluster out, refit with linearmodels' IV2SLS (an independent 2SLS), and
    form (G - 1)/G sum (b_-g - b)^2 for the LATE and the ITT of both metrics jointly. The
    design is held fixed (covariates centred at the full-sample mean), as the jackknife of
    MacKinnon, Nielsen and Webb deletes rows of one fixed design. The LATE is the 2SLS
    effect at the compliers' covariate mean (issue 22), a Wald ratio recomputed without the
    cluster too."""
    from linearmodels.iv import IV2SLS

    case, model, _ = _fit("iv", "CR3")
    df = pd.read_csv(REF / case["data"])
    eff = model.infer_effect()
    frame = eff.to_frame()

    df["xc"] = df.x - df.x.mean()

    def late_and_itt(d):
        out = []
        xc = d.xc
        exog = pd.DataFrame({"const": 1.0, "xc": xc})
        for y in case["outcomes"]:
            iv = IV2SLS(d[y], exog, pd.DataFrame({"d": d.d, "dxc": d.d * xc}),
                        pd.DataFrame({"a": d.a, "axc": d.a * xc})).fit(cov_type="unadjusted")
            itt = IV2SLS(d[y], exog.assign(a=d.a, axc=d.a * xc), None, None).fit(cov_type="unadjusted")
            on, off = d[d.a == 1], d[d.a == 0]
            complier_xc = (((on.xc * on.d).mean() - (off.xc * off.d).mean())
                           / (on.d.mean() - off.d.mean()))
            out += [itt.params["a"], iv.params["d"] + complier_xc * iv.params["dxc"]]
        return np.array(out)

    full = late_and_itt(df)
    np.testing.assert_allclose(frame.estimate.to_numpy(), full, rtol=1e-9)
    reps = np.array([late_and_itt(df[df.cluster != g]) for g in np.unique(df.cluster)])
    G = len(reps)
    expected = (G - 1) / G * (reps - full).T @ (reps - full)
    np.testing.assert_allclose(eff.cov, expected, rtol=1e-8)


def test_cr2_runs_on_many_clusters_and_large_ones():
    """No n_g x n_g matrix is formed: 20 clusters of 5,000 rows and 5,000 clusters fit."""
    rng = np.random.default_rng(1)
    for sizes in (np.full(20, 5_000), rng.integers(1, 30, 5_000)):
        store = np.repeat(np.arange(len(sizes)), sizes)
        arm = rng.permutation(np.arange(len(sizes)) % 2)[store]
        df = pd.DataFrame({"s": store, "t": arm, "x": rng.normal(size=len(store))})
        df["y"] = 0.2 * df.t + df.x + rng.normal(size=len(sizes))[store] + rng.normal(size=len(store))
        row = cf.ExperimentData(df, intent_to_treat="t", cluster_by="s").add_metric(
            y="y", exogenous_covariates=["x"]).fit(cf.LinearModel(cov_type="CR2")).infer_effect().to_frame()
        assert np.isfinite(row.std_error[0]) and 1 < row.dof[0] < len(sizes)
