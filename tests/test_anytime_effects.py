"""The av_* columns of every effects table (Lindon et al., arXiv:2210.08589)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import causalflow as cf
from causalflow.errors import ValidationError
from causalflow.linalg.anytime import optimal_g
from causalflow.models.linear import LinearModel

try:  # the closed forms written out in the phase-1 tests
    from tests.test_anytime import ref_p, ref_radius
except ImportError:  # tests/ itself on sys.path (pytest rootdir insertion)
    from test_anytime import ref_p, ref_radius


def _frame(seed=3, n=1_500, clusters=None):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"t": rng.integers(0, 2, n), "x": rng.normal(size=n)})
    df["y"] = 1.0 + 0.15 * df.t + df.x + rng.normal(size=n)
    df["z"] = 0.5 * df.x + rng.normal(size=n)
    if clusters:
        df["store"] = rng.integers(0, clusters, n)
        df["t"] = (df.store % 2).astype(int)
    return df


def test_av_columns_hc_match_closed_form():
    # n = rows, nu = n - p with p = 4 (1, t, x, t*x); g optimal at n; closed forms from the
    # phase-1 test module (written with the math module), rtol 1e-9.
    df = _frame()
    model = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        y=["y", "z"], exogenous_covariates=["x"]).fit(LinearModel)
    tab = model.infer_effect(condition_on=["x > 0"]).to_frame()
    n, p, alpha = len(df), 4, 0.05
    g = float(optimal_g(n, n - p, alpha))
    for _, row in tab.iterrows():
        t = row.estimate / row.std_error
        assert row.av_p_value == pytest.approx(ref_p(t, n, n - p, g), rel=1e-9)
        half = ref_radius(n, n - p, g, alpha) * row.std_error
        assert row.av_ci_lower == pytest.approx(row.estimate - half, rel=1e-9)
        assert row.av_ci_upper == pytest.approx(row.estimate + half, rel=1e-9)
        # the confidence sequence is wider than the fixed-n interval
        assert row.av_ci_lower < row.ci_lower and row.av_ci_upper > row.ci_upper


def test_av_columns_cr_use_clusters_and_options():
    df = _frame(clusters=40)
    data = cf.ExperimentData(df, intent_to_treat="t", cluster_by="store")
    tab = data.add_metric(y="y").fit(LinearModel(av_g=2.5)).infer_effect().to_frame()
    G = 40
    row = tab.iloc[0]
    t = row.estimate / row.std_error
    assert row.av_p_value == pytest.approx(ref_p(t, G, G - 1, 2.5), rel=1e-9)
    tab2 = data.add_metric(y="y").fit(LinearModel(av_planned_n=400)).infer_effect().to_frame()
    g = float(optimal_g(400, 399, 0.05))
    assert tab2.iloc[0].av_p_value == pytest.approx(ref_p(t, G, G - 1, g), rel=1e-9)
    assert tab2.iloc[0].av_ci_upper == pytest.approx(row.estimate + ref_radius(G, G - 1, g, 0.05)
                                                     * row.std_error, rel=1e-9)


def test_av_columns_in_every_serialisation():
    df = _frame()
    eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y").fit(LinearModel).infer_effect()
    d = eff.to_dict()["effects"][0]
    assert all(k in d and d[k] is not None and math.isfinite(d[k])
               for k in ("av_p_value", "av_ci_lower", "av_ci_upper"))
    assert "av_p_value" in eff.to_markdown()


@pytest.mark.parametrize("opts", [{"av_g": 0.0}, {"av_g": -1}, {"av_planned_n": float("nan")},
                                  {"av_g": 1.0, "av_planned_n": 100}, {"av_g": "big"}])
def test_bad_av_options(opts):
    with pytest.raises(ValidationError):
        LinearModel(**opts)
