"""Hypothesis properties of the core engine (issue 3; STYLE.md item 11).

Each property compares two fits that must agree mathematically. The tolerance is
rtol = 1e-9 (atol 1e-12) throughout: both sides are the same closed-form solution computed
with sums in a different order (row order, blocks, a different set of columns), so they
differ only by floating-point rounding, about 1e-14 relative for these small well-conditioned
designs; 1e-9 leaves five orders of margin for that, yet any genuine error (a wrong factor,
a misplaced row, a wrong centring) moves the results by far more than 1e-9.

The data are small simulated experiments (tests/conftest.py): hypothesis draws the design,
the seed, permutations, scale factors and missing-value patterns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import causalflow as cf

RTOL, ATOL = 1e-9, 1e-12
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
DESIGNS = ["ab", "encouragement", "cluster", "adaptive", "multi_arm", "mixed"]
CLUSTERED = {"cluster", "mixed"}
CONDITIONS = ["seg == 'b'", "x > 0 and seg != 'c'"]
KEY = ["metric", "arm", "condition", "estimand"]

seeds = st.integers(0, 2**31 - 1)


def table(effects) -> pd.DataFrame:
    """Effects as a frame indexed by (metric, arm, condition, estimand)."""
    frame = effects.to_frame()
    frame["arm"] = frame["arm"].astype(str)
    return frame.set_index(KEY).sort_index()


def assert_same(left: pd.DataFrame, right: pd.DataFrame, scale=1.0, se_scale=None):
    """Same effects: estimate(left) = scale * estimate(right), SE likewise with |scale|."""
    se_scale = abs(scale) if se_scale is None else se_scale
    assert list(left.index) == list(right.index)
    np.testing.assert_allclose(left.estimate, scale * right.estimate, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(left.std_error, se_scale * right.std_error, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(left.n, right.n)


def cov_types(design: str) -> list[str]:
    return ["HC0", "HC1", "CR0", "CR1"] if design in CLUSTERED else ["HC0", "HC1"]


# every (design, covariance) pair; hypothesis draws one per example
design_cov = st.sampled_from([(d, c) for d in DESIGNS for c in cov_types(d)])


# -- row order -------------------------------------------------------------------------------
@SETTINGS
@given(design=st.sampled_from(DESIGNS), seed=seeds, perm_seed=seeds, cov_type=st.sampled_from(["HC", "CR"]),
       with_nan=st.booleans())
def test_invariant_to_row_order(simulate, design, seed, perm_seed, cov_type, with_nan):
    sim = simulate(design, seed)
    if with_nan:
        sim.df.loc[sim.df.index[3::5], "y2"] = np.nan
    cov_type = cov_type + "1" if design in CLUSTERED else "HC1"
    order = np.random.default_rng(perm_seed).permutation(len(sim.df))
    shuffled = sim.df.iloc[order]
    if perm_seed % 2:
        shuffled = shuffled.reset_index(drop=True)
    model_a, model_b = sim.fit(cov_type), sim.fit(cov_type, df=shuffled)
    a = model_a.infer_effect(condition_on=CONDITIONS)
    b = model_b.infer_effect(condition_on=CONDITIONS)
    assert_same(table(b), table(a))
    np.testing.assert_allclose(b.cov, a.cov, rtol=RTOL, atol=ATOL)
    # all coefficients at once (p effects per metric: the score pass may take the cluster-sorted path)
    pd.testing.assert_frame_equal(model_b.params(), model_a.params(), rtol=RTOL, atol=ATOL)
    pd.testing.assert_frame_equal(model_b.std_errors(), model_a.std_errors(), rtol=RTOL, atol=ATOL)


# -- relabelling arms ----------------------------------------------------------------------------
RELABELS = [
    {"ctl": "base", "blue": "zeta", "green": "alpha"},  # control stays first, the others swap order
    {"ctl": 5, "blue": 9, "green": 2},                   # numbers, control not the smallest
    {"ctl": "ctl", "blue": "green", "green": "blue"},   # swap the two treatment labels
]


@SETTINGS
@given(seed=seeds, relabel=st.sampled_from(RELABELS), cov_type=st.sampled_from(["HC0", "HC1", "CR1"]))
def test_relabelling_arms_permutes_effects(simulate, seed, relabel, cov_type):
    sim = simulate("multi_arm", seed)
    if cov_type.startswith("CR"):
        sim.df["cell"] = np.arange(len(sim.df))  # one row per cluster: never mixed
        sim.design = {**sim.design, "cluster_by": "cell"}
    renamed = sim.df.assign(variant=sim.df.variant.map(relabel))
    original = sim.fit(cov_type).infer_effect(condition_on=CONDITIONS)
    relabelled = sim.fit(cov_type, df=renamed, control=relabel["ctl"]).infer_effect(condition_on=CONDITIONS)
    old, new = original.to_frame(), relabelled.to_frame()
    assert set(new.arm) == {relabel["blue"], relabel["green"]}
    # position in the old table of each row of the new table
    back = {v: k for k, v in relabel.items()}
    old_keys = {(r.metric, r.arm, r.condition, r.estimand): i for i, r in enumerate(old.itertuples())}
    where = np.array([old_keys[(r.metric, back[r.arm], r.condition, r.estimand)] for r in new.itertuples()])
    np.testing.assert_allclose(new.estimate, old.estimate.to_numpy()[where], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(new.std_error, old.std_error.to_numpy()[where], rtol=RTOL, atol=ATOL)
    # the joint covariance is permuted the same way
    np.testing.assert_allclose(relabelled.cov, original.cov[np.ix_(where, where)], rtol=RTOL, atol=ATOL)


@SETTINGS
@given(seed=seeds, cov_type=st.sampled_from(["HC0", "HC1"]), covariates=st.sampled_from([[], ["x", "seg"]]))
def test_changing_the_control_arm_is_a_linear_reparametrisation(simulate, seed, cov_type, covariates):
    """With arm-specific intercepts and slopes, green vs blue = (green - ctl) - (blue - ctl),
    for average and conditional effects, and its variance comes from the joint covariance."""
    sim = simulate("multi_arm", seed)
    conditions = CONDITIONS if covariates else None
    old = sim.fit(cov_type, covariates=covariates).infer_effect(condition_on=conditions)
    new = sim.fit(cov_type, covariates=covariates, control="blue").infer_effect(condition_on=conditions)
    old_frame, new_frame = old.to_frame(), new.to_frame()
    index = {(r.metric, r.arm, r.condition): i for i, r in enumerate(old_frame.itertuples())}
    for r in new_frame.itertuples():
        d = np.zeros(len(old_frame))
        d[index[(r.metric, "blue", r.condition)]] = -1.0
        if r.arm == "green":
            d[index[(r.metric, "green", r.condition)]] = 1.0
        else:
            assert r.arm == "ctl"
        np.testing.assert_allclose(r.estimate, d @ old_frame.estimate.to_numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(r.std_error, np.sqrt(d @ old.cov @ d), rtol=RTOL, atol=ATOL)


# -- units of y --------------------------------------------------------------------------------
@SETTINGS
@given(case=design_cov, seed=seeds,
       c=st.sampled_from([-1.0, 2.5, -0.01, 1e3, -7.25]), shift=st.sampled_from([0.0, 100.0, -3.5]))
def test_scaling_y_scales_effects_and_standard_errors(simulate, case, seed, c, shift):
    design, cov_type = case
    sim = simulate(design, seed)
    base = table(sim.fit(cov_type).infer_effect(condition_on=CONDITIONS))
    scaled = sim.df.assign(y1=c * sim.df.y1 + shift, y2=c * sim.df.y2)
    other = table(sim.fit(cov_type, df=scaled).infer_effect(condition_on=CONDITIONS))
    # a shift of y moves the intercept only; atol scales with the size of the numbers
    np.testing.assert_allclose(other.estimate, c * base.estimate, rtol=RTOL, atol=ATOL * 1e3 * abs(c))
    np.testing.assert_allclose(other.std_error, abs(c) * base.std_error, rtol=RTOL, atol=ATOL * 1e3 * abs(c))


@SETTINGS
@given(design=st.sampled_from(DESIGNS), seed=seeds, a=st.sampled_from([0.1, -4.0, 30.0]),
       b=st.sampled_from([0.0, 1e3]), order=st.booleans())
def test_affine_covariate_changes_and_covariate_order_change_nothing(simulate, design, seed, a, b, order):
    """Covariates are centred and interacted: x -> a x + b spans the same columns, and the
    conditions below are rewritten so that they select the same rows."""
    sim = simulate(design, seed)
    covariates = ["seg", "x"] if order else ["x", "seg"]
    base_model = sim.fit()
    base = table(base_model.infer_effect(condition_on=["x > 0.25"]))
    moved = sim.df.assign(x=a * sim.df.x + b)
    model = sim.fit(df=moved, covariates=covariates)
    # (x' - b) / a is the original x again, so this condition selects the same rows
    other = model.infer_effect(condition_on=[f"(x - {b}) / {a} > 0.25"]).to_frame()
    other["condition"] = "x > 0.25"
    other["arm"] = other["arm"].astype(str)
    assert_same(other.set_index(KEY).sort_index(), base)
    # coefficients are labelled by name whatever the order of the covariate list
    p0, p1 = base_model.params(), model.params()
    assert sorted(p0.index) == sorted(p1.index)
    # centred x becomes a (x - mean): slopes on x scale by 1/a, every other coefficient is unchanged
    slopes = [name for name in p0.index if name == "x" or name.endswith(":x")]
    others = [name for name in p0.index if name not in slopes]
    np.testing.assert_allclose(p1.loc[others], p0.loc[others], rtol=RTOL, atol=ATOL * 1e3)
    np.testing.assert_allclose(p1.loc[slopes] * a, p0.loc[slopes], rtol=RTOL, atol=ATOL)


# -- one row per cluster ---------------------------------------------------------------------------
@SETTINGS
@given(design=st.sampled_from(DESIGNS), seed=seeds, with_nan=st.booleans(), small_sample=st.booleans())
def test_clusters_of_one_row_equal_heteroskedasticity_robust(simulate, design, seed, with_nan, small_sample):
    sim = simulate(design, seed)
    df = sim.df.assign(row_id=np.arange(len(sim.df)) * 7 + 3)
    if with_nan:
        df.loc[df.index[::6], "y2"] = np.nan
    design_kw = {**sim.design, "cluster_by": "row_id"}
    spec = cf.ExperimentData(df, **design_kw).add_metric(y=sim.y, exogenous_covariates=sim.covariates)
    k = "1" if small_sample else "0"
    hc_model, cr_model = (spec.fit(cf.LinearModel(cov_type=kind + k)) for kind in ("HC", "CR"))
    hc = table(hc_model.infer_effect(condition_on=CONDITIONS))
    cr = table(cr_model.infer_effect(condition_on=CONDITIONS))
    if not small_sample:
        assert_same(cr, hc)
        # every coefficient too (a wider score pass, which may take the cluster-sorted path)
        pd.testing.assert_frame_equal(cr_model.std_errors(), hc_model.std_errors(), rtol=RTOL, atol=ATOL)
        return
    # the stated small-sample factors, written out here independently: CR1 G/(G-1) (n-1)/(n-p),
    # HC1 n/(n-p); with G = n clusters they coincide (n/(n-1) (n-1)/(n-p) = n/(n-p))
    n_arms = len(set(df[sim.design["intent_to_treat"]]))
    p = n_arms * (1 + 1 + 2)  # per arm: intercept, x, seg[b], seg[c]
    for metric in sim.y:
        n = int(df[metric].notna().sum())
        G = n
        ratio = np.sqrt((G / (G - 1) * (n - 1) / (n - p)) / (n / (n - p)))
        assert_same(cr.loc[[metric]], hc.loc[[metric]], se_scale=ratio)


# -- metrics do not interact ---------------------------------------------------------------------
@SETTINGS
@given(case=design_cov, seed=seeds, nan_step=st.sampled_from([0, 3, 7]), extra_nan=st.booleans())
def test_adding_a_metric_does_not_change_the_others(simulate, case, seed, nan_step, extra_nan):
    design, cov_type = case
    sim = simulate(design, seed)
    df = sim.df.assign(y3=sim.df.y1 * 0.3 + sim.df.y2)
    if nan_step:
        df.loc[df.index[::nan_step], "y1"] = np.nan
    if extra_nan:
        df.loc[df.index[1::4], "y3"] = np.nan
    alone = table(sim.fit(cov_type, y=["y1"], df=df).infer_effect(condition_on=CONDITIONS))
    together = table(sim.fit(cov_type, y=["y2", "y1", "y3"], df=df).infer_effect(condition_on=CONDITIONS))
    assert_same(together.loc[["y1"]], alone)


@SETTINGS
@given(case=design_cov, seed=seeds, nan_seed=seeds, share=st.sampled_from([0.05, 0.2, 0.4]))
def test_metric_with_missing_values_equals_fit_on_its_complete_rows(simulate, case, seed, nan_seed, share):
    design, cov_type = case
    sim = simulate(design, seed)
    df = sim.df.copy()
    missing = np.random.default_rng(nan_seed).random(len(df)) < share
    missing[:3] = False  # keep the rows that guarantee every arm
    df.loc[missing, "y1"] = np.nan
    complete = df.loc[~missing].reset_index(drop=True)
    try:
        expected = table(sim.fit(cov_type, y=["y1"], df=complete).infer_effect(condition_on=CONDITIONS))
    except cf.ValidationError:
        # the complete rows alone are not a valid experiment (e.g. a level missing in an arm):
        # the fit with missing values must refuse too
        with pytest.raises(cf.ValidationError):
            sim.fit(cov_type, df=df).infer_effect(condition_on=CONDITIONS)
        assume(False)
    got = table(sim.fit(cov_type, df=df).infer_effect(condition_on=CONDITIONS))
    assert_same(got.loc[["y1"]], expected)


# -- multi-arm vs two-arm fits -----------------------------------------------------------------------
@SETTINGS
@given(seed=seeds, weighted=st.booleans(), clustered=st.booleans(), small_sample=st.booleans())
def test_multi_arm_effect_equals_two_arm_fit_without_covariates(simulate, seed, weighted, clustered,
                                                                 small_sample):
    """Without covariates each arm's effect is a (weighted) difference in means, and the rows of
    the other arms have no influence on it: the HC0 / CR0 meat is the same as in a fit on control
    + that arm only. HC1 / CR1 differ by the stated factors (n, p, G of each fit)."""
    sim = simulate("multi_arm", seed)
    df = sim.df.copy()
    rng = np.random.default_rng(seed)
    design = dict(sim.design)
    if weighted:
        # each row's own-arm probability; the other two arms share the rest
        own = rng.uniform(0.2, 0.6, len(df))
        for a in ("ctl", "blue", "green"):
            df[f"p_{a}"] = np.where(df.variant == a, own, (1 - own) / 2)
        design["propensity"] = {a: f"p_{a}" for a in ("ctl", "blue", "green")}
    if clustered:
        # clusters nested in arms: groups of about 4 rows of the same arm
        df["cell"] = df.variant + "-" + (rng.integers(0, len(df) // 8, len(df))).astype(str)
        design["cluster_by"] = "cell"
    cov_type = ("CR" if clustered else "HC") + ("1" if small_sample else "0")

    def fit(frame, cov_type, **overrides):
        return table(cf.ExperimentData(frame, **{**design, **overrides}).add_metric(y=sim.y)
                     .fit(cf.LinearModel(cov_type=cov_type)).infer_effect())

    def factor(cov_type, frame, p):
        n = len(frame)
        if cov_type.endswith("0"):
            return 1.0
        if cov_type == "HC1":
            return n / (n - p)
        G = frame["cell"].nunique()
        return G / (G - 1) * (n - 1) / (n - p)

    full = fit(df, cov_type)
    for arm in ("blue", "green"):
        pair = df[df.variant.isin(["ctl", arm])]
        overrides = {}
        if weighted:
            # two arms: the propensity score of `arm` whose weights are the same 1 / own-arm
            # probability (control rows: 1 / (1 - (1 - p_ctl)))
            pair = pair.assign(p_pair=np.where(pair.variant == arm, pair[f"p_{arm}"], 1 - pair.p_ctl))
            overrides = {"propensity": "p_pair"}
        two = fit(pair, cov_type, **overrides)
        mine = full.xs(arm, level="arm", drop_level=False)
        np.testing.assert_allclose(mine.estimate.to_numpy(), two.estimate.to_numpy(), rtol=RTOL, atol=ATOL)
        ratio = np.sqrt(factor(cov_type, df, 3) / factor(cov_type, pair, 2))
        np.testing.assert_allclose(mine.std_error.to_numpy(), ratio * two.std_error.to_numpy(),
                                   rtol=RTOL, atol=ATOL)


# -- equivalent declarations of an encouragement design ---------------------------------------------
@SETTINGS
@given(design=st.sampled_from(["encouragement", "mixed"]), seed=seeds)
def test_instrument_column_equals_assignment_with_treated(simulate, design, seed):
    """``intent_to_treat=Z, treated=D`` and ``intent_to_treat=D, instrument=Z`` are one 2SLS fit:
    the same LATE (and the same reduced form), and the compliance rate is the first stage
    P(D | Z = 1) - P(D | Z = 0) computed here with pandas (weights do not enter it)."""
    sim = simulate(design, seed)
    z, d = sim.design["intent_to_treat"], sim.design["treated"]
    other = {k: v for k, v in sim.design.items() if k not in ("intent_to_treat", "treated")}
    declared = {**other, "intent_to_treat": d, "instrument": z}
    if "cluster_by" in other:
        # the received treatment varies within clusters: the mixed-cluster warning is expected
        with pytest.warns(cf.DesignWarning):
            swapped = cf.ExperimentData(sim.df, **declared)
    else:
        swapped = cf.ExperimentData(sim.df, **declared)
    first_stage = sim.df.groupby(z)[d].mean()
    expected_rate = first_stage[1] - first_stage[0]
    for data in (sim.experiment(), swapped):
        assert data.design.encouragement
        np.testing.assert_allclose(data.design.compliance_rate, expected_rate, rtol=1e-12)
    a = table(sim.experiment().add_metric(y=sim.y, exogenous_covariates=sim.covariates)
              .fit(cf.LinearModel).infer_effect(condition_on=CONDITIONS))
    b = table(swapped.add_metric(y=sim.y, exogenous_covariates=sim.covariates)
              .fit(cf.LinearModel).infer_effect(condition_on=CONDITIONS))
    assert set(a.index.get_level_values("estimand")) == {"ITT", "LATE"}
    assert_same(b, a)


# -- weights ---------------------------------------------------------------------------------------
def with_own_probability(frame: pd.DataFrame, design: dict, own: np.ndarray):
    """``frame`` with propensity columns under which each row's own-arm probability is ``own``,
    and the ``propensity`` argument: two arms, the propensity score of the treatment arm;
    several arms, one column per arm (the other arms share ``1 - own`` equally)."""
    arm = frame[design["intent_to_treat"]].to_numpy()
    control = design.get("control", 0)
    arms = sorted(set(arm.tolist()), key=str)
    if len(arms) == 2:
        return frame.assign(p_treat=np.where(arm != control, own, 1 - own)), "p_treat"
    columns = {a: f"p_{a}" for a in arms}
    rest = (1 - own) / (len(arms) - 1)
    return frame.assign(**{c: np.where(arm == a, own, rest) for a, c in columns.items()}), columns


@SETTINGS
@given(seed=seeds, factor=st.sampled_from([0.5, 0.9, 0.25]), cov_type=st.sampled_from(["HC0", "HC1"]))
def test_propensities_scaled_by_a_constant_change_nothing(simulate, seed, factor, cov_type):
    """Weights w and w / c differ by a constant: WLS and its sandwich are invariant to it.

    With the propensity score p the weights are 1/p (treated) and 1/(1 - p) (control); the
    score p' = c p (treated), 1 - c (1 - p) (control) divides both by c."""
    sim = simulate("adaptive", seed)
    base = table(sim.fit(cov_type).infer_effect(condition_on=CONDITIONS))
    p, t = sim.df.p_treat, sim.df.assigned
    scaled = sim.df.assign(p_treat=np.where(t == 1, p * factor, 1 - (1 - p) * factor))
    other = table(sim.fit(cov_type, df=scaled).infer_effect(condition_on=CONDITIONS))
    assert_same(other, base)


@SETTINGS
@given(seed=seeds, design=st.sampled_from(["adaptive", "ab", "multi_arm"]))
def test_a_row_of_weight_w_equals_two_rows_of_weight_w_over_2_clustered_together(simulate, seed, design):
    """Inverse-propensity weights are frequency weights: doubling every row and doubling the
    probability of its own arm gives the same estimates; clustering the two copies gives CR0 =
    the original HC0 (each cluster's score is 2 (w/2) e x = w e x)."""
    sim = simulate(design, seed)
    # own-arm probabilities below 1/2 so that doubling them stays inside (0, 1)
    if "p_treat" in sim.df:
        own = 0.5 * np.where(sim.df.assigned == 1, sim.df.p_treat, 1 - sim.df.p_treat)
    else:
        own = np.full(len(sim.df), 0.3)
    df, propensity = with_own_probability(sim.df.assign(origin=np.arange(len(sim.df))), sim.design, own)
    design_kw = {**sim.design, "propensity": propensity}
    doubled, _ = with_own_probability(pd.concat([df, df], ignore_index=True), sim.design, np.r_[own, own] * 2)

    def effects(frame, cov_type, **extra):
        return table(cf.ExperimentData(frame, **design_kw, **extra)
                     .add_metric(y=sim.y, exogenous_covariates=sim.covariates)
                     .fit(cf.LinearModel(cov_type=cov_type)).infer_effect(condition_on=CONDITIONS))

    original = effects(df, "HC0")
    copies = effects(doubled, "CR0", cluster_by="origin")
    np.testing.assert_allclose(copies.estimate, original.estimate, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(copies.std_error, original.std_error, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(copies.n, 2 * original.n)


@SETTINGS
@given(seed=seeds, labels=st.sampled_from([("control", "treatment"), (1, 2), (False, True), ("a", "b")]))
def test_treated_given_as_arm_labels_equals_0_1_coding(simulate, seed, labels):
    """A two-arm encouragement design whose assignment and received treatment are both written
    as the arm labels is the same fit as with 0/1 coding."""
    sim = simulate("encouragement", seed)
    mapping = dict(zip((0, 1), labels))
    relabelled = sim.df.assign(encouraged=sim.df.encouraged.map(mapping), took=sim.df.took.map(mapping))
    base = table(sim.fit().infer_effect(condition_on=CONDITIONS)).rename(index={"1": str(labels[1])}, level="arm")
    other = table(sim.fit(df=relabelled, control=labels[0]).infer_effect(condition_on=CONDITIONS))
    assert_same(other, base)
