"""Core engine benchmark (issue 3): causalflow vs linearmodels, statsmodels, pyfixest and a
plain-numpy floor on a cluster-randomised experiment with many metrics.

Data: N rows in G clusters (cluster sizes ~ Poisson(N/G), rows in random order), the
assignment ``a`` randomised by cluster (50/50), q continuous covariates (correlated, with
a cluster component, non-zero means), treatment received ``d = a * complier`` with 70%
compliers (one-sided non-compliance), K metrics with heterogeneous effects and cluster
random effects.

Every implementation fits the same Lin (2013) design, X = [1, T, Xc, T x Xc] with the
covariates centred at their mean over all rows (T = a for tasks avg/segments; 2SLS with
Z = [1, a, Xc, a x Xc] for task iv) and CR1 covariances G/(G-1) (n-1)/(n-p), then
reports per metric:

* ``avg``: the average effect d'b with d = e_T,
* ``segments``: the effect in 8 subgroups (sign patterns of x0, x1, x2), d = e_T +
  sum_l xbar_{S,l} e_{T x X_l} with xbar_S the subgroup mean of the centred covariates;
  causalflow receives them as ``condition_on`` strings, the others as delta vectors,
* ``iv``: the 2SLS effect (LATE) of d instrumented by a. causalflow and the numpy floor
  also report the ITT of the same call (causalflow always returns both for an
  encouragement design); the peers compute the LATE only.

Each (implementation, task) runs in its own subprocess, capped with RLIMIT_AS; the data
are generated there from the same seed; time and peak extra RSS are measured around the
call only (see ``_common.py``). The slow peers can be measured on fewer metrics
(``--peer-k``) and their loop time extrapolated linearly to K metrics (labelled).
The parent checks that all implementations agree on every estimate and SE.

    python benchmarks/bench_core.py                      # full size (N=1M, K=20, G=50k)
    python benchmarks/bench_core.py --n 100000 --k 5     # quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Measure, emit, limit_memory, machine_info, run_worker, thread_env

TASKS = ("avg", "segments", "iv")
IMPLS = ("numpy", "causalflow", "linearmodels", "statsmodels", "pyfixest")
PEERS = ("linearmodels", "statsmodels", "pyfixest")
SEGMENT_COVARIATES = ("x0", "x1", "x2")
RTOL = 1e-6
_NARROW = 64  # floor: score columns up to which bincount beats sorting the rows by cluster
_NARROW_BLOCK = 1 << 16  # floor: rows per block of the bincount path (fewer O(G) bincounts)


# -- data --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Names:
    y: list
    x: list


def make_data(n: int, k: int, n_clusters: int, q: int = 10, seed: int = 20260101):
    """The simulated experiment as a pandas DataFrame (float64 y*, x*; int64 a, d, g)."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_clusters, n)
    a = (rng.random(n_clusters) < 0.5).astype(np.int64)[g]
    complier = rng.random(n) < 0.7
    d = a * complier
    X = rng.standard_normal((n, q))
    X += 0.5 * rng.standard_normal((n_clusters, q))[g]
    X[:, 1] += 0.5 * X[:, 0]
    X[:, 3:] += np.linspace(0.5, 3.0, q - 3)  # non-zero means (x0..x2 stay centred on 0)
    cols = {}
    for j in range(k):
        beta = rng.normal(size=q) * 0.5
        gamma = rng.normal(size=q) * 0.2
        tau = 0.1 * (j % 4)
        u = rng.standard_normal(n_clusters)[g] * 0.7
        y = 1.0 + X @ beta + d * (tau + (X - X.mean(0)) @ gamma) + u + rng.standard_normal(n)
        cols[f"y{j:02d}"] = y
    for j in range(q):
        cols[f"x{j}"] = X[:, j].copy()
    cols["a"], cols["d"], cols["g"] = a, d.astype(np.int64), g
    df = pd.DataFrame(cols)
    return df, Names([f"y{j:02d}" for j in range(k)], [f"x{j}" for j in range(q)])


def segment_conditions() -> list[str]:
    """The 8 sign patterns of (x0, x1, x2) as condition_on strings."""
    out = []
    for code in range(8):
        parts = [f"{c} {'>=' if (code >> (2 - i)) & 1 else '<'} 0"
                 for i, c in enumerate(SEGMENT_COVARIATES)]
        out.append(" and ".join(parts))
    return out


def segment_masks(df) -> np.ndarray:
    """(8, n) bool: the rows of each segment, in the order of :func:`segment_conditions`."""
    signs = [df[c].to_numpy() >= 0 for c in SEGMENT_COVARIATES]
    masks = np.empty((8, len(df)), dtype=bool)
    for code in range(8):
        m = None
        for i, s in enumerate(signs):
            part = s if (code >> (2 - i)) & 1 else ~s
            m = part if m is None else m & part
        masks[code] = m
    return masks


def effect_labels(task: str) -> list[str]:
    return {"avg": ["avg"], "segments": [f"seg{i}" for i in range(8)], "iv": ["LATE"]}[task]


def _deltas(task, df, names, mu, coef_names, treat: str, inter) -> np.ndarray:
    """Delta vectors (m x p) over ``coef_names`` for a peer: e_T (+ xbar_S on T x X)."""
    p = len(coef_names)
    index = {c: i for i, c in enumerate(coef_names)}
    if task != "segments":
        d = np.zeros((1, p))
        d[0, index[treat]] = 1.0
        return d
    masks = segment_masks(df)
    X = df[names.x].to_numpy()
    D = np.zeros((8, p))
    for s in range(8):
        xbar = X[masks[s]].mean(axis=0) - mu
        D[s, index[treat]] = 1.0
        for j, x in enumerate(names.x):
            D[s, index[inter(x)]] = xbar[j]
    return D


def _contrast(D, coef, cov):
    est = D @ coef
    se = np.sqrt(np.einsum("mp,pq,mq->m", D, cov, D))
    return est, se


# -- implementations ----------------------------------------------------------------------
# Each returns ({label: (estimates (K,), std errors (K,))}, timing breakdown dict).

def run_causalflow(df, names, task):
    import causalflow as cf
    iv = task == "iv"
    data = cf.ExperimentData(df, intent_to_treat="a", treated="d" if iv else None, cluster_by="g")
    model = data.add_metric(y=names.y, exogenous_covariates=names.x).fit(cf.LinearModel)
    conds = segment_conditions() if task == "segments" else None
    frame = model.infer_effect(condition_on=conds).to_frame()
    out = {}
    labels = {c: f"seg{i}" for i, c in enumerate(conds or [])}
    labels["all"] = "avg"
    for (cond, estimand), part in frame.groupby(["condition", "estimand"], sort=False):
        label = estimand if iv else labels[cond]
        part = part.set_index("metric").loc[names.y]
        out[label] = (part["estimate"].to_numpy(), part["std_error"].to_numpy())
    return out, {}


def run_numpy(df, names, task):
    """The floor: two sweeps over row blocks, no n x p matrix, no per-metric loop.

    Sweep 1 (rows in storage order): Z'[Z X Y] by one GEMM per block. Solve.
    Sweep 2: residuals E = Y - X B and contrast influences U = Z (L D') per block, then
    the cluster sums of the scores u_i (x) e_i: with few score columns (avg, iv) in
    storage order by one ``np.bincount`` per column; with many (segments) over rows
    gathered in cluster order by ``np.add.reduceat`` (measured: whichever is cheaper).
    Blocks are column-major so that filling them is contiguous writes.
    Var(d'b_k) = c * sum_g T_gk^2 (CR1). Only the diagonal is formed.
    """
    import scipy.linalg as sl
    iv = task == "iv"
    n = len(df)
    xcols = [df[c].to_numpy() for c in names.x]
    ycols = [df[c].to_numpy() for c in names.y]
    a = df["a"].to_numpy()
    d = df["d"].to_numpy() if iv else None
    g = df["g"].to_numpy()
    q, K = len(xcols), len(ycols)
    p = 2 + 2 * q
    mu = np.array([c.mean() for c in xcols])
    masks = segment_masks(df) if task == "segments" else None
    width = p * (2 if iv else 1) + K

    def fill(rows, out):
        """out[:, :width] = [Z | X (iv) | Y] for the rows (slice or index array)."""
        Xc = out[:, 2:2 + q]
        for j, c in enumerate(xcols):
            Xc[:, j] = c[rows]
        Xc -= mu
        for t, (off, col) in enumerate(((0, a), (p, d))):
            if t == 1 and not iv:
                break
            out[:, off] = 1.0
            out[:, off + 1] = col[rows]
            if t == 1:
                out[:, off + 2:off + 2 + q] = Xc
            np.multiply(out[:, off + 1:off + 2], Xc, out=out[:, off + 2 + q:off + 2 + 2 * q])
        y0 = width - K
        for k, c in enumerate(ycols):
            out[:, y0 + k] = c[rows]

    block = 1 << 16
    buf = np.empty((width, block)).T  # column-major: every fill below is a contiguous write
    ZW = np.zeros((p, width))
    seg_sums = np.zeros((8, q)) if masks is not None else None
    for s in range(0, n, block):
        rows = slice(s, min(s + block, n))
        W = buf[:rows.stop - rows.start]
        fill(rows, W)
        ZW += W[:, :p].T @ W
        if masks is not None:
            seg_sums += masks[:, rows].astype(float) @ W[:, 2:2 + q]
    ZZ, ZY = ZW[:, :p], ZW[:, width - K:]
    ZZ = 0.5 * (ZZ + ZZ.T)
    cf = sl.cho_factor(ZZ)
    inv_zz = sl.cho_solve(cf, np.eye(p))
    fits = []  # (label, B, L, column offset of the regressors in W, D)
    if task == "segments":
        xbar = seg_sums / masks.sum(axis=1)[:, None]  # already centred
        D = np.zeros((8, p))
        D[:, 1] = 1.0
        D[:, 2 + q:] = xbar
    else:
        D = np.zeros((1, p))
        D[0, 1] = 1.0
    fits.append(("itt", inv_zz @ ZY, inv_zz, 0, D))
    if iv:
        ZX = ZW[:, p:2 * p]
        Pi = sl.cho_solve(cf, ZX)
        A = np.linalg.inv(Pi.T @ ZX)
        A = 0.5 * (A + A.T)
        fits.insert(0, ("iv", A @ (Pi.T @ ZY), Pi @ A, p, D))
    LD = [L @ Dm.T for _, _, L, _, Dm in fits]
    m_total = sum(Dm.shape[0] for *_, Dm in fits) * K

    n_clusters = int(np.count_nonzero(np.bincount(g)))
    size = int(g.max()) + 1
    T = np.zeros((size, m_total))
    narrow = m_total <= _NARROW
    # narrow scores: storage order, one bincount per score column and block;
    # wide scores: the input rows gathered in cluster order, one reduceat per block.
    order = None if narrow else np.argsort(g, kind="stable")
    gs = None if narrow else g[order]
    block2 = _NARROW_BLOCK if narrow else max(1024, (1 << 21) // (width + m_total))
    buf = np.empty((width, block2)).T
    scores = np.empty((block2, m_total))
    for s in range(0, n, block2):
        e = min(s + block2, n)
        W = buf[:e - s]
        fill(slice(s, e) if narrow else order[s:e], W)
        Y = W[:, width - K:]
        col = 0
        for (_, B, _, off, Dm), ld in zip(fits, LD):
            E = Y - W[:, off:off + p] @ B
            U = W[:, :p] @ ld
            m = Dm.shape[0]
            np.multiply(U[:, :, None], E[:, None, :], out=scores[:e - s, col:col + m * K].reshape(e - s, m, K))
            col += m * K
        if narrow:
            codes = g[s:e]
            for c in range(m_total):
                T[:, c] += np.bincount(codes, weights=scores[:e - s, c], minlength=size)
        else:
            codes = gs[s:e]
            starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
            T[codes[starts]] += np.add.reduceat(scores[:e - s], starts, axis=0)
    factor = n_clusters / (n_clusters - 1) * (n - 1) / (n - p)
    var = factor * np.einsum("gc,gc->c", T, T)
    out, col = {}, 0
    for (kind, B, _, _, Dm) in fits:
        m = Dm.shape[0]
        est = Dm @ B
        se = np.sqrt(var[col:col + m * K]).reshape(m, K)
        for i in range(m):
            label = {"iv": "LATE", "itt": "ITT" if iv else effect_labels(task)[i]}[kind]
            out[label] = (est[i], se[i])
        col += m * K
    return out, {}


def _lin_frames(df, names, iv):
    """Centred covariates and the Lin interactions as pandas frames (peers' input)."""
    import pandas as pd
    X = df[names.x]
    mu = X.mean().to_numpy()
    Xc = X - mu
    treat = "d" if iv else "a"
    inter = {f"{treat}:{x}": df[treat] * Xc[x] for x in names.x}
    const = pd.Series(1.0, index=df.index, name="const")
    return mu, Xc, treat, const, pd.DataFrame(inter)


def _per_metric(task, df, names, mu, treat, coef_names, k_run, fit_one, t0):
    """The loop of the one-outcome peers: fit each metric, then d'b and sqrt(d'Vd).

    ``fit_one(y) -> (coef (p,), cov (p, p))`` in the order of ``coef_names``. Returns the
    effects and the timing split into setup (design, delta vectors) and the metric loop.
    """
    D = _deltas(task, df, names, mu, coef_names, treat, lambda x: f"{treat}:{x}")
    setup = time.perf_counter() - t0
    out_est, out_se = [], []
    t1 = time.perf_counter()
    for y in names.y[:k_run]:
        est, se = _contrast(D, *fit_one(y))
        out_est.append(est)
        out_se.append(se)
    loop = time.perf_counter() - t1
    return _stack_labels(task, out_est, out_se), {"setup_s": setup, "loop_s": loop}


def run_linearmodels(df, names, task, k_run):
    import pandas as pd
    from linearmodels.iv import IV2SLS
    t0 = time.perf_counter()
    iv = task == "iv"
    mu, Xc, treat, const, inter = _lin_frames(df, names, iv)
    if iv:
        exog = pd.concat([const, Xc], axis=1)
        endog = pd.concat([df[["d"]], inter], axis=1)
        instr = pd.concat([df[["a"]], pd.DataFrame({f"a:{x}": df["a"] * Xc[x] for x in names.x})], axis=1)
    else:
        exog = pd.concat([const, df[["a"]], Xc, inter], axis=1)
        endog = instr = None
    clusters = df["g"]
    coef_names = list(exog.columns) + ([] if endog is None else list(endog.columns))

    def fit_one(y):
        res = IV2SLS(df[y], exog, endog, instr).fit(cov_type="clustered", clusters=clusters, debiased=True)
        assert list(res.params.index) == coef_names
        return res.params.to_numpy(), res.cov.to_numpy()
    return _per_metric(task, df, names, mu, treat, coef_names, k_run, fit_one, t0)


def run_statsmodels(df, names, task, k_run):
    import pandas as pd
    import statsmodels.api as sm
    if task == "iv":
        raise NotImplementedError(
            "statsmodels has no 2SLS with cluster-robust covariance outside its sandbox; "
            "sandbox.regression.gmm.IV2SLS(...).get_robustcov_results('cluster') builds the "
            "scores from X instead of the projected X (SEs off by 7% in a quick run), so it is not timed")
    t0 = time.perf_counter()
    mu, Xc, treat, const, inter = _lin_frames(df, names, False)
    X = pd.concat([const, df[[treat]], Xc, inter], axis=1)
    groups = df["g"].to_numpy()

    def fit_one(y):
        res = sm.OLS(df[y], X).fit(cov_type="cluster", cov_kwds={
            "groups": groups, "use_correction": True, "df_correction": True})
        return np.asarray(res.params), np.asarray(res.cov_params())
    return _per_metric(task, df, names, mu, treat, list(X.columns), k_run, fit_one, t0)


def run_pyfixest(df, names, task, k_run):
    import pyfixest as pf
    if task == "iv":
        raise NotImplementedError(
            "pyfixest supports one endogenous variable; the Lin-interacted 2SLS has 1 + q "
            "(d and d x Xc): 'Multiple endogenous variables are currently not supported.'")
    t0 = time.perf_counter()
    X = df[names.x]
    mu = X.mean().to_numpy()
    centred = {f"c{x}": df[x] - mu[j] for j, x in enumerate(names.x)}
    data = df[names.y[:k_run] + ["a", "g"]].assign(**centred)
    rhs = " + ".join(["a"] + list(centred) + [f"a:{c}" for c in centred])
    fml = " + ".join(names.y[:k_run]) + " ~ " + rhs
    fit = pf.feols(fml, data=data, vcov={"CRV1": "g"},
                   ssc=pf.ssc(k_adj=True, k_fixef="none", G_adj=True, G_df="min"))
    models = fit.to_list() if hasattr(fit, "to_list") else [fit]
    out_est, out_se = [], []
    D = None
    by_y = {m._depvar: m for m in models}
    for y in names.y[:k_run]:
        m = by_y[y]
        coef = m.coef()
        if D is None:
            D = _deltas(task, df, names, mu, list(coef.index), "a", lambda x: f"a:c{x}")
        est, se = _contrast(D, coef.to_numpy(), np.asarray(m._vcov))
        out_est.append(est)
        out_se.append(se)
    return _stack_labels(task, out_est, out_se), {"setup_s": 0.0, "loop_s": time.perf_counter() - t0,
                                                  "one_call": True}


def _stack_labels(task, est_list, se_list):
    est, se = np.array(est_list), np.array(se_list)  # (k, m)
    return {label: (est[:, i], se[:, i]) for i, label in enumerate(effect_labels(task))}


RUNNERS = {"numpy": run_numpy, "causalflow": run_causalflow, "linearmodels": run_linearmodels,
           "statsmodels": run_statsmodels, "pyfixest": run_pyfixest}


# -- worker -----------------------------------------------------------------------------------
def worker(args) -> None:
    limit_memory(args.mem_gb)
    impl, task = args.impl, args.tasks
    peer = impl in PEERS
    k_run = min(args.peer_k, args.k) if peer else args.k
    runner = RUNNERS[impl]
    call = (lambda df, nm: runner(df, nm, task, k_run)) if peer else (lambda df, nm: runner(df, nm, task))
    base = {"impl": impl, "task": task, "k": args.k, "k_measured": k_run}
    try:
        # warm-up on a tiny data set: imports, JIT caches, first-call costs are not timed
        small, small_names = make_data(4000, min(args.k, 2), 200, seed=1)
        if peer:
            runner(small, small_names, task, min(args.k, 2))
        else:
            runner(small, small_names, task)
        del small
        df, names = make_data(args.n, args.k, args.clusters, seed=args.seed)
        times, cpus, extras, breakdown, out = [], [], [], {}, None
        for _ in range(1 if peer else args.repeat):
            out = None
            with Measure() as meas:
                out, breakdown = call(df, names)
            times.append(meas.seconds)
            cpus.append(meas.cpu)
            extras.append(meas.extra)
            baseline = meas.baseline
    except NotImplementedError as exc:
        emit({**base, "status": "unsupported", "detail": str(exc)})
        return
    except MemoryError as exc:
        emit({**base, "status": "oom", "detail": f"MemoryError under a {args.mem_gb:g} GB cap: {exc}"})
        return
    seconds, cpu = min(times), min(cpus)  # each the min over repeats (least disturbed run)
    extrapolated = extrapolated_cpu = None
    if peer and k_run < args.k:
        if breakdown.get("one_call"):
            extrapolated = seconds * args.k / k_run
        else:
            extrapolated = seconds + breakdown["loop_s"] * (args.k / k_run - 1)
        extrapolated_cpu = cpu * extrapolated / seconds
    emit({**base, "status": "ok", "seconds": seconds, "all_seconds": times, "cpu_seconds": cpu,
          "all_cpu_seconds": cpus, "extrapolated_seconds": extrapolated,
          "extrapolated_cpu_seconds": extrapolated_cpu, "breakdown": breakdown,
          "peak_extra_bytes": max(extras), "baseline_rss_bytes": baseline,
          "effects": {lab: [e.tolist(), s.tolist()] for lab, (e, s) in out.items()}})


# -- parent -----------------------------------------------------------------------------------
def compare(results: dict, task: str) -> dict:
    """Max deviations of every implementation from the numpy floor on the metrics both ran.

    Estimates: max |est - est_floor| / se_floor (scale-free, and sound for effects near 0).
    SEs: max |se / se_floor - 1|.
    """
    ref = results.get("numpy")
    out = {}
    if not ref or ref.get("status") != "ok":
        return out
    for impl, r in results.items():
        if impl == "numpy" or r.get("status") != "ok":
            continue
        dev_est, dev_se = 0.0, 0.0
        for label, (est, se) in r["effects"].items():
            if label not in ref["effects"]:
                continue
            e0, s0 = (np.asarray(v)[:len(est)] for v in ref["effects"][label])
            dev_est = max(dev_est, float(np.max(np.abs(np.asarray(est) - e0) / s0)))
            dev_se = max(dev_se, float(np.max(np.abs(np.asarray(se) / s0 - 1))))
        out[impl] = {"est_dev_in_se": dev_est, "se_rel_dev": dev_se,
                     "agree": dev_est <= RTOL and dev_se <= RTOL}
    return out


def _wall(r):
    return (r.get("extrapolated_seconds") or r["seconds"]) if r.get("status") == "ok" else None


def _cpu(r):
    return (r.get("extrapolated_cpu_seconds") or r["cpu_seconds"]) if r.get("status") == "ok" else None


def markdown(results: dict, agreement: dict, args, info: dict) -> str:
    """One table per task: times, memory, their ratios, and the agreement check."""
    p = 2 + 2 * 10
    yard = args.n * p * 8
    head = (f"N = {args.n:,}, K = {args.k}, G = {args.clusters:,}, q = 10, p = {p}; "
            f"float64 design matrix N*p*8 = {yard / 2**20:.0f} MiB. {info['date']}; "
            f"{info['nproc']} cores ({info['cpu']}), {args.threads} BLAS thread(s) per run; "
            f"load: `{info['uptime']}`; causalflow at commit {info.get('commit')}"
            + (f" (uncommitted: {', '.join(info['uncommitted_causalflow_files'])})"
               if info.get("uncommitted_causalflow_files") else "") + ".")
    lines = [head, ""]
    for task, res in results.items():
        floor = res.get("numpy", {})
        peers = {i: r for i, r in res.items() if i in PEERS and _wall(r) is not None}
        fastest = min(peers, key=lambda i: _wall(peers[i])) if peers else None
        title = (f"**Task `{task}`** (fastest peer: {fastest or 'none'}; ratios are "
                 "implementation / reference, so < 1 is better)")
        header = (f"| implementation | metrics run | wall s (K={args.k}) | CPU s | wall vs floor "
                  "| CPU vs floor | wall vs fastest peer | CPU vs fastest peer | peak extra MiB "
                  "| mem vs floor | mem vs design matrix | agrees with floor: max est dev / SE, max SE rel dev |")
        lines += [title, "", header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for impl in IMPLS:
            if impl not in res:
                continue
            r = res[impl]
            if r.get("status") != "ok":
                lines.append(f"| {impl} | - | **{r.get('status')}**: {r.get('detail', '')[:320]} "
                             "| | | | | | | | | |")
                continue
            extra = " (extrap.)" if r.get("extrapolated_seconds") else ""

            def ratio(num, den):
                return f"{num / den:.3g}" if num is not None and den else "-"
            mem = r["peak_extra_bytes"]
            ag = agreement.get(task, {}).get(impl)
            agree = "reference" if impl == "numpy" else (
                f"{'yes' if ag['agree'] else '**NO**'}: {ag['est_dev_in_se']:.1e}, {ag['se_rel_dev']:.1e}"
                if ag else "-")
            fp = peers.get(fastest, {})
            lines.append(
                f"| {impl} | {r['k_measured']} | {_wall(r):.2f}{extra} | {_cpu(r):.2f}{extra} "
                f"| {ratio(_wall(r), _wall(floor) if floor else None)} "
                f"| {ratio(_cpu(r), _cpu(floor) if floor else None)} "
                f"| {ratio(_wall(r), _wall(fp) if fp else None)} | {ratio(_cpu(r), _cpu(fp) if fp else None)} "
                f"| {mem / 2**20:.0f} | {ratio(mem, floor.get('peak_extra_bytes'))} | {mem / yard:.2f} | {agree} |")
        lines.append("")
    return "\n".join(lines)


def _worker_argv(args, impl: str, task: str, repeat: int) -> list[str]:
    return [os.path.abspath(__file__), "--worker", "--impl", impl, "--tasks", task,
            "--n", str(args.n), "--k", str(args.k), "--clusters", str(args.clusters),
            "--peer-k", str(args.peer_k), "--repeat", str(repeat),
            "--mem-gb", str(args.mem_gb), "--seed", str(args.seed)]


def paired(args, tasks, impls, info) -> int:
    """Rounds of back-to-back runs; per-round ratios vs the floor cancel slow load drifts."""
    if "numpy" not in impls:
        raise SystemExit("--paired needs numpy (the floor) among --impl")
    head = (f"Paired rounds: {args.paired}; N = {args.n:,}, K = {args.k}, G = {args.clusters:,}; "
            f"{info['date']}; load `{info['uptime']}`; causalflow at commit {info.get('commit')}.")
    header = ("| task | implementation | wall s (median) | CPU s (median) | wall / floor: median [min, max] "
              "| CPU / floor: median [min, max] | peak extra MiB (max) |")
    lines = [head, "", header, "|---|---|---|---|---|---|---|"]
    runs = {}
    for task in tasks:
        for _ in range(args.paired):
            for impl in impls:
                r = run_worker(_worker_argv(args, impl, task, 1), args.timeout, env=thread_env(args.threads))
                if r.get("status") != "ok":
                    print(f"[{task}] {impl}: {r.get('status')} {r.get('detail')}", flush=True)
                    continue
                runs.setdefault((task, impl), []).append(r)
                print(f"[{task}] {impl}: wall {r['seconds']:.3f} s, cpu {r['cpu_seconds']:.3f} s", flush=True)
        floor = runs.get((task, "numpy"), [])
        for impl in impls:
            mine = runs.get((task, impl), [])
            if not mine or len(mine) != len(floor):
                continue
            wall = np.array([r["seconds"] for r in mine])
            cpu = np.array([r["cpu_seconds"] for r in mine])
            rw = wall / np.array([r["seconds"] for r in floor])
            rc = cpu / np.array([r["cpu_seconds"] for r in floor])
            mem = max(r["peak_extra_bytes"] for r in mine) / 2**20
            lines.append(f"| {task} | {impl} | {np.median(wall):.2f} | {np.median(cpu):.2f} "
                         f"| {np.median(rw):.2f} [{rw.min():.2f}, {rw.max():.2f}] "
                         f"| {np.median(rc):.2f} [{rc.min():.2f}, {rc.max():.2f}] | {mem:.0f} |")
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--clusters", type=int, default=50_000)
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma list of " + ", ".join(TASKS))
    ap.add_argument("--impl", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    ap.add_argument("--peer-k", type=int, default=20,
                    help="metrics actually run by the slow peers (time extrapolated to K)")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of causalflow / numpy (min time)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per (implementation, task)")
    ap.add_argument("--mem-gb", type=float, default=16.0, help="RLIMIT_AS of each subprocess")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS/OpenMP/numba threads of every subprocess (1: stable on a shared machine)")
    ap.add_argument("--seed", type=int, default=20260101)
    ap.add_argument("--paired", type=int, default=0, metavar="ROUNDS",
                    help="instead of the full table: ROUNDS rounds that run each --impl once in turn "
                         "(one repeat each), and the median / range of the per-round time ratios "
                         "vs the numpy floor; steadier than separate runs on a loaded machine")
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    tasks = [t for t in args.tasks.split(",") if t]
    impls = [i for i in args.impl.split(",") if i]
    for name in tasks + impls:
        if name not in TASKS + IMPLS:
            ap.error(f"unknown task or implementation {name!r}")
    info = machine_info()
    print(json.dumps(info, indent=1), flush=True)
    if args.paired:
        return paired(args, tasks, impls, info)
    results, agreement = {}, {}
    for task in tasks:
        results[task] = {}
        for impl in IMPLS:
            if impl not in impls:
                continue
            r = run_worker(_worker_argv(args, impl, task, args.repeat), args.timeout,
                           env=thread_env(args.threads))
            results[task][impl] = r
            msg = (f"{r['seconds']:.3f} s (all {[round(s, 3) for s in r['all_seconds']]}), "
                   f"cpu {[round(s, 3) for s in r['all_cpu_seconds']]}"
                   + (f", extrapolated {r['extrapolated_seconds']:.1f} s" if r.get("extrapolated_seconds") else "")
                   + f", peak extra {r['peak_extra_bytes'] / 2**20:.0f} MiB"
                   if r.get("status") == "ok" else f"{r['status']}: {r.get('detail')} {r.get('stderr', '')[-600:]}")
            print(f"[{task}] {impl}: {msg}", flush=True)
        agreement[task] = compare(results[task], task)
        print(f"[{task}] agreement vs numpy floor: {agreement[task]}", flush=True)
    table = markdown(results, agreement, args, info)
    print(table)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"args": vars(args), "machine": info, "results": results,
                       "agreement": agreement}, fh)
        os.replace(tmp, args.json)
    bad = [(t, i) for t, a in agreement.items() for i, v in a.items() if not v["agree"]]
    if bad:
        print(f"DISAGREEMENT beyond rtol {RTOL}: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
