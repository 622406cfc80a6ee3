"""CR2 / CR3 small-cluster covariances against R clubSandwich, pyfixest and brute force.

Reference values: tests/reference/clubsandwich.json, made by
tests/reference/make_clubsandwich.R (R clubSandwich 0.5.8, AER 1.2-10) from the CSVs next
to it; CI needs no R.

Tolerances. Both sides compute the same closed forms in double precision on small,
well-conditioned designs, so they agree to ~1e-13; the JSON stores 13 significant digits.
We compare covariances and standard errors at rtol 1e-8 (the convention of pyfixest's
tests against fixest) and Satterthwaite dof at rtol 1e-6 (both would expose a wrong
formula by orders of magnitude). Covariance matrices also get atol = 1e-10 * max|ref|,
because some cross-covariances are close to 0, where a relative error says nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from causalflow.errors import ValidationError
from causalflow.linalg import small_sample
from causalflow.linalg.small_sample import (
    ClusterCrossProducts,
    cluster_cross_products,
    cr2,
    cr3_cov,
    jackknife_coefs,
)
from causalflow.linalg.twosls import solve_2sls

REF = Path(__file__).parent / "reference"
CASES = json.loads((REF / "clubsandwich.json").read_text())["cases"]
RTOL, RTOL_DOF = 1e-8, 1e-6


def assert_cov_close(got, ref, rtol=RTOL):
    ref = np.asarray(ref, dtype=float)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-10 * np.abs(ref).max())


def read_csv(name: str) -> dict[str, np.ndarray]:
    table = np.genfromtxt(REF / name, delimiter=",", names=True)
    return {k: np.asarray(table[k], dtype=float) for k in table.dtype.names}


def lin_design(arms: np.ndarray, covs: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """[1, A, Xc, A (x) Xc] (arm-major products), covariates centred at their (weighted) mean."""
    xc = covs - np.average(covs, axis=0, weights=w)
    inter = (arms[:, :, None] * xc[:, None, :]).reshape(len(arms), -1)
    return np.column_stack([np.ones(len(arms)), arms, xc, inter])


def build(case: dict):
    """Z, X (None for OLS), Y, w, codes, G of a reference case, from its CSV."""
    d = read_csv(case["data"])
    w = d[case["weights"]] if case["weights"] else None
    Y = np.column_stack([d[y] for y in case["outcomes"]])
    X = None
    if case["data"] == "cs_two_arm.csv":
        Z = lin_design(d["a"][:, None], np.c_[d["x1"], d["x2"]], w)
    elif case["data"] == "cs_three_arm.csv":
        Z = lin_design(np.c_[d["arm"] == 1, d["arm"] == 2].astype(float), d["x"][:, None], w)
    else:
        Z = lin_design(d["a"][:, None], d["x"][:, None], w)
        X = lin_design(d["d"][:, None], d["x"][:, None], w)
    codes = d["cluster"].astype(np.int64)
    return Z, X, Y, w, codes, int(codes.max()) + 1


def fit_case(case: dict):
    Z, X, Y, w, codes, G = build(case)
    cp = cluster_cross_products(Z, X, Y, w, codes, G)
    fit = solve_2sls(cp.total())
    E = Y - (Z if X is None else X) @ fit.coef
    return Z, X, Y, w, codes, G, cp, fit, E


@pytest.mark.parametrize("name", list(CASES))
def test_design_reproduces_r_coefficients(name):
    case = CASES[name]
    *_, fit, _ = fit_case(case)
    np.testing.assert_allclose(fit.coef, case["coef"], rtol=RTOL)


@pytest.mark.parametrize("name", list(CASES))
def test_cr2_matches_clubsandwich(name):
    """vcovCR(type = "CR2") joint over both metrics, coef_test SEs and Satterthwaite dof."""
    case = CASES[name]
    Z, X, Y, w, codes, G, cp, fit, E = fit_case(case)
    out = cr2(Z, w, E, codes, G, None if X is None else fit.pi, fit.bread)
    p, K = fit.coef.shape
    assert out.cov.shape == (p * K, p * K) and out.n_clusters == case["n_clusters"]
    assert_cov_close(out.cov, case["cr2"])
    se = np.sqrt(np.diag(out.cov)).reshape(p, K)
    np.testing.assert_allclose(se, case["coef_se"], rtol=RTOL)
    np.testing.assert_allclose(out.dof, case["coef_df"], rtol=RTOL_DOF)


@pytest.mark.parametrize("name", list(CASES))
def test_cr2_contrasts_match_clubsandwich(name):
    """SEs of D b and their Satterthwaite dof (Wald_test HTZ, one constraint)."""
    case = CASES[name]
    Z, X, Y, w, codes, G, cp, fit, E = fit_case(case)
    D = np.asarray(case["contrasts"], dtype=float)
    m, K = D.shape[0], Y.shape[1]
    out = cr2(Z, w, E, codes, G, None if X is None else fit.pi, fit.bread, D)
    np.testing.assert_allclose(np.sqrt(np.diag(out.cov)).reshape(m, K), case["contrast_cr2_se"], rtol=RTOL)
    np.testing.assert_allclose(out.dof, case["contrast_cr2_df"], rtol=RTOL_DOF)
    # the joint covariance of the contrasts is (D (x) I_K) V (D (x) I_K)'
    full = cr2(Z, w, E, codes, G, None if X is None else fit.pi, fit.bread)
    L = np.kron(D, np.eye(K))
    assert_cov_close(out.cov, L @ full.cov @ L.T)
    # the cluster sums of two calls give their joint covariance
    both = np.concatenate([out.sums, full.sums], axis=1)
    assert_cov_close((both.T @ both)[:m * K, m * K:], L @ full.cov)


OLS_CASES = [k for k, c in CASES.items() if c["model"] == "ols"]
IV_CASES = [k for k, c in CASES.items() if c["model"] == "iv"]


@pytest.mark.parametrize("name", OLS_CASES)
def test_cr3_matches_clubsandwich_times_g_minus_1_over_g(name):
    """clubSandwich's CR3 for lm / weighted lm is sum_g (b_(-g) - b)(b_(-g) - b)'."""
    case = CASES[name]
    Z, X, Y, w, codes, G, cp, fit, E = fit_case(case)
    jack = jackknife_coefs(cp, cp.total())
    assert_cov_close(cr3_cov(jack, fit.coef, factor=1.0), case["cr3"])
    assert_cov_close(cr3_cov(jack, fit.coef), (G - 1) / G * np.asarray(case["cr3"]))
    D = np.asarray(case["contrasts"], dtype=float)
    se = np.sqrt(np.diag(cr3_cov(jack, fit.coef, D, factor=1.0))).reshape(D.shape[0], -1)
    np.testing.assert_allclose(se, case["contrast_cr3_se"], rtol=RTOL)


def brute_jackknife(Z, X, Y, w, codes):
    """Refit (2SLS or OLS / WLS) with numpy lstsq on the data without each cluster."""
    out = []
    for g in np.unique(codes):
        keep = codes != g
        sw = np.ones(keep.sum()) if w is None else np.sqrt(w[keep])
        z = Z[keep] * sw[:, None]
        xh = z if X is None else z @ np.linalg.lstsq(z, X[keep] * sw[:, None], rcond=None)[0]
        out.append(np.linalg.lstsq(xh, Y[keep] * sw[:, None], rcond=None)[0])
    return np.array(out)


@pytest.mark.parametrize("name", list(CASES))
def test_cr3_matches_brute_force_refits(name):
    """Exact jackknife, including the re-estimated first stage for 2SLS."""
    case = CASES[name]
    Z, X, Y, w, codes, G, cp, fit, E = fit_case(case)
    jack = jackknife_coefs(cp)
    brute = brute_jackknife(Z, X, Y, w, codes)
    np.testing.assert_allclose(jack, brute, rtol=RTOL, atol=1e-12)
    diff = (brute - fit.coef).reshape(G, -1)
    D = np.asarray(case["contrasts"], dtype=float)
    L = np.kron(D, np.eye(Y.shape[1]))                  # index r * K + k
    expected = (G - 1) / G * L @ diff.T @ diff @ L.T
    assert_cov_close(cr3_cov(jack, fit.coef, D), expected)


@pytest.mark.parametrize("weighted", [False, True])
def test_cr3_matches_pyfixest_crv3(weighted):
    """pyfixest's CRV3 is sum_g (b_(-g) - b)(..)' times its ssc factor: with ssc(k_adj=False,
    G_adj=False) the plain sum, by default G/(G-1) (n-1)/(n-p) times it; ours is (G-1)/G
    times the plain sum (MacKinnon, Nielsen and Webb 2023)."""
    pf = pytest.importorskip("pyfixest")
    pd = pytest.importorskip("pandas")
    case = CASES["two_arm_wls" if weighted else "two_arm_ols"]
    Z, X, Y, w, codes, G, cp, fit, E = fit_case(case)
    ours = cr3_cov(jackknife_coefs(cp)[:, :, :1], fit.coef[:, :1])
    df = pd.DataFrame({"y1": Y[:, 0], "a": Z[:, 1], "x1c": Z[:, 2], "x2c": Z[:, 3], "cl": codes,
                       "w": np.ones(len(codes)) if w is None else w})
    kw = {"weights": "w"} if weighted else {}
    fml = "y1 ~ a + x1c + x2c + a:x1c + a:x2c"
    plain = pf.feols(fml, df, vcov={"CRV3": "cl"}, ssc=pf.ssc(k_adj=False, G_adj=False), **kw)
    assert list(plain.coef().index) == ["Intercept", "a", "x1c", "x2c", "a:x1c", "a:x2c"]
    np.testing.assert_allclose(plain.coef().to_numpy(), fit.coef[:, 0], rtol=RTOL)
    assert_cov_close(ours, (G - 1) / G * np.asarray(plain._vcov))
    n, p = Z.shape
    default = pf.feols(fml, df, vcov={"CRV3": "cl"}, **kw)
    assert_cov_close(ours, (G - 1) / G * (n - p) / (n - 1) * (G - 1) / G * np.asarray(default._vcov))


def test_cr3_refuses_a_cluster_that_holds_an_arm():
    rng = np.random.default_rng(1)
    codes = np.repeat(np.arange(6), 8)
    arm = rng.integers(0, 2, len(codes))
    arm[codes == 3] = 2                                    # cluster 3 holds all of arm 2
    x = rng.normal(size=len(codes))
    Z = lin_design(np.c_[arm == 1, arm == 2].astype(float), x[:, None], None)
    cp = cluster_cross_products(Z, None, rng.normal(size=(len(codes), 2)), None, codes, 6)
    with pytest.raises(ValidationError, match=r"deleting cluster 3 .*CR1"):
        jackknife_coefs(cp, names=["1", "arm1", "arm2", "x", "arm1:x", "arm2:x"])
    # for 2SLS the instruments are checked first, then the first stage
    X = Z.copy()
    with pytest.raises(ValidationError, match=r"deleting cluster 3 .*'arm2'"):
        jackknife_coefs(cluster_cross_products(Z, X, Z[:, :1], None, codes, 6),
                        names=["1", "arm1", "arm2", "x", "arm1:x", "arm2:x"])


def test_cr3_skips_codes_without_rows():
    rng = np.random.default_rng(2)
    codes = np.repeat([0, 1, 3, 4, 6], 7)                  # codes 2 and 5 have no rows
    Z = np.c_[np.ones(len(codes)), rng.normal(size=len(codes))]
    Y = rng.normal(size=(len(codes), 1))
    cp = cluster_cross_products(Z, None, Y, None, codes, 7)
    jack = jackknife_coefs(cp)
    assert np.isnan(jack[[2, 5]]).all() and np.isfinite(jack[[0, 1, 3, 4, 6]]).all()
    assert cp.n_clusters == 5
    coef = solve_2sls(cp.total()).coef
    diff = (jack[[0, 1, 3, 4, 6]] - coef).reshape(5, -1)
    np.testing.assert_allclose(cr3_cov(jack, coef), 4 / 5 * diff.T @ diff, rtol=1e-12)


def test_cluster_cross_products_add_up_and_match_direct_sums(monkeypatch):
    monkeypatch.setattr(small_sample, "_BLOCK_VALUES", 16 * 3 * 8)   # several reduceat blocks
    rng = np.random.default_rng(3)
    n, G = 300, 11
    codes = rng.integers(0, G, n)
    Z, X, Y, w = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), rng.uniform(1, 2, n)
    whole = cluster_cross_products(Z, X, Y, w, codes, G)
    half = n // 2
    parts = (cluster_cross_products(Z[:half], X[:half], Y[:half], w[:half], codes[:half], G)
             + cluster_cross_products(Z[half:], X[half:], Y[half:], w[half:], codes[half:], G))
    assert isinstance(parts, ClusterCrossProducts)
    for g in (0, 5, 10):
        s = codes == g
        zw = Z[s] * w[s, None]
        np.testing.assert_allclose(whole.zwz[g], zw.T @ Z[s], rtol=1e-12)
        np.testing.assert_allclose(whole.zwx[g], zw.T @ X[s], rtol=1e-12)
        np.testing.assert_allclose(whole.zwy[g], zw.T @ Y[s], rtol=1e-12)
    for a, b in [(whole.zwz, parts.zwz), (whole.zwx, parts.zwx), (whole.zwy, parts.zwy)]:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(whole.n, np.bincount(codes, minlength=G))


def brute_cr2(Z, X, w, E, codes, pi, bread, D):
    """The direct n x n formula of clubSandwich (working model I), for small n only."""
    n = len(codes)
    w = np.ones(n) if w is None else w
    xh = Z if pi is None else Z @ pi
    ih = np.eye(n) - xh @ bread @ xh.T * w[None, :]
    big = ih @ ih.T
    sums, ps = [], []
    for g in np.unique(codes):
        s = codes == g
        ev, vec = np.linalg.eigh(big[np.ix_(s, s)])
        adj = vec @ np.diag(np.where(ev > 1e-12, 1 / np.sqrt(np.clip(ev, 1e-300, None)), 0)) @ vec.T
        u = adj @ (xh[s] * w[s, None]) @ bread @ D.T
        sums.append((u.T @ E[s]).ravel())
        ps.append(ih[s].T @ u)
    sums = np.array(sums)
    P = np.einsum("gim,him->mgh", np.array(ps), np.array(ps))
    dof = np.array([np.trace(q) ** 2 / np.sum(q ** 2) for q in P])
    return sums.T @ sums, dof


@pytest.mark.parametrize("weights", ["none", "rows", "clusters"])
@pytest.mark.parametrize("iv", [False, True])
def test_cr2_matches_direct_formula_with_padding_and_blocks(monkeypatch, weights, iv):
    """Uneven clusters (1 to 40 rows, one of them larger than a block), several padded
    chunks, clusters smaller than 2p, cluster-constant weights (rank-deficient [Xh, W Xh])."""
    monkeypatch.setattr(small_sample, "_BLOCK_ROWS", 32)
    monkeypatch.setattr(small_sample, "_QR_ROWS", 8)               # tall-skinny QR recursion
    rng = np.random.default_rng(4)
    sizes = np.r_[1, 1, 2, 3, 5, 8, 13, 21, 40, rng.integers(1, 12, 8)]
    G = len(sizes)
    codes = rng.permutation(np.repeat(np.arange(G), sizes))
    n = len(codes)
    a = rng.integers(0, 2, n).astype(float)
    x = rng.normal(size=n)
    d = a * (rng.uniform(size=n) < 0.7)
    Z = np.c_[np.ones(n), a, x, a * x]
    X = np.c_[np.ones(n), d, x, d * x] if iv else None
    w = {"none": None, "rows": rng.uniform(0.3, 3, n), "clusters": rng.uniform(0.3, 3, G)[codes]}[weights]
    Y = rng.normal(size=(n, 3)) + a[:, None]
    cp = cluster_cross_products(Z, X, Y, w, codes, G)
    fit = solve_2sls(cp.total())
    E = Y - (Z if X is None else X) @ fit.coef
    D = np.array([[0, 1, 0, 0], [0, 1, 0, 0.5], [1, 0, 0, 0]])
    out = cr2(Z, w, E, codes, G, fit.pi if iv else None, fit.bread, D)
    cov, dof = brute_cr2(Z, X, w, E, codes, fit.pi if iv else None, fit.bread, D)
    assert_cov_close(out.cov, cov, rtol=1e-9)
    np.testing.assert_allclose(out.dof, dof, rtol=1e-9)


def test_cr2_invariances():
    """Row order, cluster labels, the scale of the weights, unit weights vs none, and rows
    of weight 0 (dropped, as in clubSandwich) do not change CR2."""
    case = CASES["two_arm_wls"]
    Z, X, Y, w, codes, G, cp, fit, E = fit_case(case)
    ref = cr2(Z, w, E, codes, G, None, fit.bread)
    perm = np.random.default_rng(5).permutation(len(codes))
    relabel = np.random.default_rng(6).permutation(G)
    moved = cr2(Z[perm], w[perm], E[perm], relabel[codes[perm]], G, None, fit.bread)
    assert_cov_close(moved.cov, ref.cov, rtol=1e-10)
    np.testing.assert_allclose(moved.dof, ref.dof, rtol=1e-10)
    gaps = cr2(Z, w, E, 2 * codes + 1, 2 * G + 1, None, fit.bread)      # even codes have no rows
    assert_cov_close(gaps.cov, ref.cov, rtol=1e-10)
    assert gaps.n_clusters == G and not gaps.sums[::2].any()
    scaled = cr2(Z, 7.5 * w, E, codes, G, None, fit.bread / 7.5)
    assert_cov_close(scaled.cov, ref.cov, rtol=1e-10)
    np.testing.assert_allclose(scaled.dof, ref.dof, rtol=1e-10)
    padded = cr2(np.r_[Z, Z[:3]], np.r_[w, np.zeros(3)], np.r_[E, 100 + E[:3]], np.r_[codes, codes[:3]],
                 G, None, fit.bread)
    assert_cov_close(padded.cov, ref.cov, rtol=1e-10)
    bread = np.linalg.inv(Z.T @ Z)
    unit = cr2(Z, None, E, codes, G, None, bread)                # the unweighted shortcut ...
    general = cr2(Z, np.ones(len(w)), E, codes, G, None, bread)  # ... and the general path
    assert_cov_close(unit.cov, general.cov, rtol=1e-10)
    np.testing.assert_allclose(unit.dof, general.dof, rtol=1e-10)


def test_cr2_single_row_clusters_is_hc2():
    rng = np.random.default_rng(7)
    n = 40
    X = np.c_[np.ones(n), rng.integers(0, 2, n), rng.normal(size=n)]
    Y = rng.normal(size=(n, 2))
    A = np.linalg.inv(X.T @ X)
    E = Y - X @ A @ X.T @ Y
    h = np.einsum("ij,jk,ik->i", X, A, X)
    out = cr2(X, None, E, np.arange(n), n, None, A)
    for k in range(2):
        hc2 = A @ (X.T * (E[:, k] ** 2 / (1 - h))) @ X @ A
        assert_cov_close(out.cov[k::2, k::2], hc2, rtol=1e-10)


def test_cr2_validates_inputs():
    Z = np.ones((4, 1))
    with pytest.raises(ValidationError, match="codes"):
        cr2(Z, None, np.ones(4), np.array([0, 1, 2, 3]), 3, None, np.eye(1))
    with pytest.raises(ValidationError, match="non-negative"):
        cr2(Z, -np.ones(4), np.ones(4), np.array([0, 1, 1, 0]), 2, None, np.eye(1))
    with pytest.raises(ValidationError, match="columns"):
        cr2(Z, None, np.ones(4), np.array([0, 1, 1, 0]), 2, None, np.eye(1), np.ones((1, 2)))


# -- design_dof: the Bell-McCaffrey dof of the CR3 default ------------------------------------

def _explicit_bm_dof(Xt: np.ndarray, codes: np.ndarray, A: np.ndarray, D: np.ndarray) -> np.ndarray:
    """The textbook route, rows and G x G matrix explicit: Gamma_g = I - H_gg for the
    regressors Xt (already scaled by W^1/2), its inverse square root by eigh, p_g =
    (I - H)_{g.}' Gamma_g^-1/2 Xt_g A d and nu = tr(P)^2 / ||P||_F^2."""
    n = len(Xt)
    H = Xt @ A @ Xt.T
    out = []
    for d in D:
        ps = []
        for g in np.unique(codes):
            idx = np.flatnonzero(codes == g)
            lam, vec = np.linalg.eigh(np.eye(len(idx)) - H[np.ix_(idx, idx)])
            root = (vec / np.sqrt(np.clip(lam, 1e-300, None))) @ vec.T
            ps.append((np.eye(n) - H)[idx].T @ (root @ Xt[idx] @ A @ d))
        P = np.array([[a @ b for b in ps] for a in ps])
        out.append(np.trace(P) ** 2 / (P ** 2).sum())
    return np.array(out)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("iv", [False, True])
def test_design_dof_equals_the_explicit_satterthwaite_formula(weighted, iv):
    """design_dof works from per-cluster cross-products (p x p matrices); the reference forms
    every n_g x n_g adjustment and the G x G matrix P. Same closed form in double precision:
    rtol 1e-10. With weights the working model is Var(e) = W^-1, i.e. the unweighted formula
    on W^1/2 Xh."""
    rng = np.random.default_rng(3)
    G = 9
    codes = np.repeat(np.arange(G), rng.integers(1, 12, G))
    n = len(codes)
    a = rng.integers(0, 2, n).astype(float)
    x = rng.normal(size=n)
    Z = np.c_[np.ones(n), a, x, a * x]
    d = (rng.random(n) < 0.2 + 0.5 * a).astype(float)
    X = np.c_[np.ones(n), d, x, d * x] if iv else None
    w = rng.uniform(0.5, 3.0, n) if weighted else None
    ww = np.ones(n) if w is None else w
    pi = None if X is None else np.linalg.solve((Z.T * ww) @ Z, (Z.T * ww) @ X)
    Xh = Z if pi is None else Z @ pi
    A = np.linalg.inv((Xh.T * ww) @ Xh)
    D = rng.normal(size=(3, 4))
    cp = cluster_cross_products(Z, X, rng.normal(size=(n, 2)), w, codes, G)
    got = small_sample.design_dof(cp, pi, A, D)
    np.testing.assert_allclose(got, _explicit_bm_dof(Xh * np.sqrt(ww)[:, None], codes, A, D), rtol=1e-10)
    if not weighted:  # and then they are cr2's (clubSandwich's) Satterthwaite dof
        np.testing.assert_allclose(got, cr2(Z, None, np.zeros((n, 1)), codes, G, pi, A, D).dof, rtol=1e-10)


@pytest.mark.parametrize("treated,control", [(5, 5), (3, 7), (10, 30)])
def test_design_dof_of_a_difference_in_means_is_welch_in_cluster_counts(treated, control):
    """Equal clusters, the treatment assigned by cluster: the Bell-McCaffrey dof of the
    difference in means is Welch's formula with cluster counts (closed form; what planning
    uses). rtol 1e-10."""
    G = treated + control
    codes = np.repeat(np.arange(G), 6)
    Z = np.c_[np.ones(len(codes)), codes < treated]
    cp = cluster_cross_products(Z, None, np.zeros((len(codes), 1)), None, codes, G)
    got = small_sample.design_dof(cp, None, np.linalg.inv(Z.T @ Z), [[0.0, 1.0]])[0]
    welch = (1 / treated + 1 / control) ** 2 / (1 / (treated ** 2 * (treated - 1)) + 1 / (control ** 2 * (control - 1)))
    assert got == pytest.approx(welch, rel=1e-10)
