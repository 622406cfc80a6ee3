"""Monitoring with clusters (issue 19): the CR meat of a look from a Gram matrix of
per-cluster sums that is updated only at the clusters that received rows.

Reference: the core LinearModel refitted on the rows seen at every look (itself checked
against statsmodels / linearmodels in tests/test_vs_peers.py), same mixture g. The Gram
form is an exact identity (ClusterScoreGram's docstring), so the tolerance is rtol 1e-10;
both paths of the cost rule (the Gram kept and updated, and dropped for the direct sums)
are exercised and checked."""

import numpy as np
import pandas as pd
import pytest

import causalflow as cf
from causalflow.linalg.incremental import ClusterScoreGram
from causalflow.platform import monitor as monitor_module
from causalflow.platform.monitor import monitor

COLUMNS = ["estimate", "std_error", "p_value", "av_p_value", "av_ci_lower", "av_ci_upper"]


def _arrivals(n_clusters=400, seed=0, weights=False, encouragement=False):
    """Units (clusters) arrive over time and their rows arrive within a short window after."""
    rng = np.random.default_rng(seed)
    size = rng.integers(1, 12, n_clusters)
    store = np.repeat(np.arange(n_clusters), size)
    n = len(store)
    start = rng.uniform(0, 100, n_clusters)[store]
    df = pd.DataFrame({"store": store, "ts": start + rng.exponential(2.0, n), "x": rng.normal(size=n) + 3.0})
    df["t"] = rng.integers(0, 2, n_clusters)[store]
    if weights:
        df["p"] = rng.uniform(0.3, 0.7, n_clusters)[store]
        df["t"] = (rng.random(n_clusters)[store] < df.p).astype(int)
    shock = rng.normal(size=n_clusters)[store]
    df["y"] = 10.0 + 0.2 * df.t + df.x + shock + rng.normal(size=n)
    df["z"] = 1.0 - 0.1 * df.t * df.x + 0.5 * shock + rng.normal(size=n)
    df.loc[rng.random(n) < 0.05, "z"] = np.nan  # a second missingness group
    if encouragement:
        df["d"] = (df.t * (rng.random(n) < 0.7)).astype(int)
    return df


def _check_every_look(df, roles, looks=12, conditions=None, estimands=None, cov_type="CR1"):
    data = cf.ExperimentData(df, **roles)
    mon = monitor(data, y=["y", "z"], exogenous_covariates=["x"], arrival="ts", looks=looks,
                  estimator=cf.LinearModel(cov_type=cov_type), condition_on=conditions, estimands=estimands)
    order = np.argsort(df.ts.to_numpy(), kind="stable")
    for look, n_rows in enumerate(mon.n_rows):
        sub = df.iloc[order[:n_rows]]
        if sub.store.nunique() < 10:
            continue
        ref = cf.ExperimentData(sub, **roles).add_metric(y=["y", "z"], exogenous_covariates=["x"]).fit(
            cf.LinearModel(cov_type=cov_type, av_g=mon.g)).infer_effect(condition_on=conditions, estimands=estimands)
        got = mon.looks[look]
        a, b = got.to_frame(), ref.to_frame()
        for col in COLUMNS:
            np.testing.assert_allclose(a[col], b[col], rtol=1e-10, err_msg=f"look {look} {col}")
        same = np.isfinite(got.cov)
        np.testing.assert_allclose(got.cov[same], ref.cov[same], rtol=1e-10, atol=1e-12 * np.abs(ref.cov).max())
    return mon


def _with_hold(hold):
    """ClusterScoreGram with a fixed ``hold`` (looks a cluster stays active after rows)."""
    original = ClusterScoreGram.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.hold = hold
    return init


def test_looks_equal_the_refit_at_rtol_1e10_as_clusters_retire(monkeypatch):
    df = _arrivals()
    states = []
    original = ClusterScoreGram.add_block

    def spy(self, *args):
        original(self, *args)
        states.append((len(self.active), self.n_clusters))

    monkeypatch.setattr(ClusterScoreGram, "add_block", spy)
    _check_every_look(df, dict(intent_to_treat="t", cluster_by="store"), looks=15, conditions=["x > 3"])
    # units arrive over time: at the last looks most clusters have retired into S
    assert states[-1][0] < states[-1][1] / 2


@pytest.mark.parametrize("hold", [1, 10 ** 6])
def test_churn_and_no_retirement_give_the_same_numbers(monkeypatch, hold):
    """hold=1: clusters retire after every look and come back (S loses and regains them);
    a huge hold: every cluster stays active (one product over the clusters per look)."""
    df = _arrivals(seed=1)
    monkeypatch.setattr(ClusterScoreGram, "__init__", _with_hold(hold))
    _check_every_look(df, dict(intent_to_treat="t", cluster_by="store"), looks=8)


@pytest.mark.parametrize("cov_type", ["CR0", "CR1"])
def test_weights_and_two_fits(cov_type):
    """Propensity weights and an encouragement design (ITT on Z, 2SLS on X: both fits share
    the per-cluster Z'W(y - c) and keep their own Z'WZ, Z'WX); without covariates the LATE
    has no complier-mean terms, so the Gram path serves it."""
    df = _arrivals(seed=2, weights=True, encouragement=True)
    roles = dict(intent_to_treat="t", treated="d", propensity="p", cluster_by="store")
    data = cf.ExperimentData(df, **roles)
    mon = monitor(data, y=["y", "z"], arrival="ts", looks=6, estimator=cf.LinearModel(cov_type=cov_type))
    order = np.argsort(df.ts.to_numpy(), kind="stable")
    for look in (2, 5):
        sub = df.iloc[order[:mon.n_rows[look]]]
        ref = cf.ExperimentData(sub, **roles).add_metric(y=["y", "z"]).fit(
            cf.LinearModel(cov_type=cov_type, av_g=mon.g)).infer_effect()
        a, b = mon.looks[look].to_frame(), ref.to_frame()
        assert list(a.estimand) == list(b.estimand) == ["ITT", "LATE"] * 2
        for col in COLUMNS:
            np.testing.assert_allclose(a[col], b[col], rtol=1e-10, err_msg=f"look {look} {col}")


def test_a_look_touches_only_the_clusters_that_received_rows():
    rng = np.random.default_rng(3)
    G, p, K = 1000, 3, 2
    gram = ClusterScoreGram(G, p, K, ("itt",), width=2)
    gram.hold = 2
    Z = np.c_[np.ones(60), rng.normal(size=(60, 2))]
    Y = rng.normal(size=(60, K))
    gram.add_block(Z[:50], None, Y[:50], None, rng.integers(0, G, 50))
    gram.add_block(Z[50:52], None, Y[50:52], None, np.array([3, 3]))
    before = gram.V.copy()
    gram.add_block(Z[52:55], None, Y[52:55], None, np.array([3, 3, 7]))
    assert set(np.flatnonzero((gram.V != before).any(axis=1))) <= {3, 7}
    # the first look's clusters (idle for 2 looks) retired into S, 3 and 7 are active
    assert set(gram.active) == {3, 7}
    retired = np.setdiff1d(np.flatnonzero(gram.seen), gram.active)
    V = gram.V[retired]
    np.testing.assert_allclose(np.triu(gram.S), np.triu(V.T @ V), rtol=1e-12, atol=1e-12)
    gram.add_block(Z[55:], None, Y[55:], None, retired[:5])  # back from S
    assert set(retired[:5]) <= set(gram.active)
    rest = np.setdiff1d(np.flatnonzero(gram.seen), gram.active)
    np.testing.assert_allclose(np.triu(gram.S), np.triu(gram.V[rest].T @ gram.V[rest]), rtol=1e-10, atol=1e-10)


def test_the_monitor_uses_the_gram_only_without_complier_terms():
    df = _arrivals(seed=4, encouragement=True)
    data = cf.ExperimentData(df, intent_to_treat="t", treated="d", cluster_by="store")
    spec = data.add_metric(y="y", exogenous_covariates=["x"])
    source = spec.source()
    plain = monitor_module._GroupState((0,), np.ones(len(df), bool), np.zeros(1), 1, 1, 4, source.n_clusters,
                                       ("itt", "iv"))
    late = monitor_module._GroupState((0,), np.ones(len(df), bool), np.zeros(1), 1, 1, 4, source.n_clusters,
                                      ("itt", "iv"), late_arms=1)
    assert plain.gram is not None and plain.clusters is None
    assert late.gram is None and late.clusters is not None


def test_the_frame_of_all_looks_stacks_each_looks_own_frame():
    """``Monitoring.to_frame`` evaluates the intervals and p-values of every look at once;
    each look's rows are that look's ``Effects.to_frame``, exactly."""
    df = _arrivals(seed=5)
    mon = monitor(cf.ExperimentData(df, intent_to_treat="t", cluster_by="store"), y=["y", "z"],
                  exogenous_covariates=["x"], arrival="ts", looks=[300, 900, len(df)], condition_on=["x > 3"])
    frame = mon.to_frame()
    assert list(frame.n_rows.unique()) == list(mon.n_rows)
    for look, eff in enumerate(mon.looks):
        rows = frame[frame.look == look].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows[list(eff.columns())], eff.to_frame(), check_exact=True)
