"""The OCI loop scored on the ACIC 2016 competition data (``causalflow oci eval-acic``).

Data: the plain export of the competition's simulation in ``../shared/data/acic2016``
(77 settings x 3 replications, 4,802 units, 58 covariates; Dorie, Hill, Shalit, Scott and
Cervone 2019, "Automated versus do-it-yourself methods for causal inference: lessons
learned from a data analysis competition", Statistical Science 34(1), 43-68).

For every data set the plan is the same and generic: treatment ``z``, outcome ``y``, all
58 covariates as (high-priority) confounders, estimands ATT and ATE, seed 0. The full
loop runs (rule Actor -> runner -> rule Critic, up to ``max_iterations``). The loop's
Critic may trim (Crump et al. 2009) or add the ATO; a trimmed ATT / ATE is an effect on
another population, so each plan estimand is scored with the estimate of the **last
iteration that still targets the whole sample** (the ATT against the SATT, the ATE against
the SATE); the Critic's verdict of that iteration is the verdict scored. A one-shot
baseline (the treatment coefficient of one linear regression ``y ~ 1 + z + X``, classical
standard error) is computed for each data set as well.

Metrics of an estimand over data sets ``d`` with estimate ``t_d``, interval
``[l_d, u_d]`` and truth ``s_d``: bias ``mean(t - s)``, RMSE ``sqrt(mean((t - s)^2))``,
MAE ``mean|t - s|``, coverage ``mean(l <= s <= u)``, interval length ``mean(u - l)``
(the competition's definitions, Dorie et al. 2019, section 4).

Example (two small data sets; the real call uses every data set)::

    from causalflow.oci.acic import evaluate
    table = evaluate("../shared/data/acic2016", "acic_out", settings=[1], replications=[1, 2])
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._optional import require
from ..errors import ValidationError
from .artifacts import atomic_write, render_html, render_markdown

__all__ = ["AcicData", "EstimandMetrics", "cli_main", "estimand_metrics", "evaluate",
           "evaluate_dataset", "list_datasets", "load_dataset", "population_truth", "populations_frame",
           "resolve_data_dir", "summarise"]

ESTIMAND_TRUTH = {"ATT": "satt", "ATE": "sate"}
SETTING_COLUMNS = ("model.trt", "root.trt", "overlap.trt", "model.rsp", "alignment", "te.hetero")
#: linear-leaf LightGBM outcome models recombined as an X-learner (benchmarks/acic/NOTES.md, round 6)
#: whose effect model per arm is trees or ridge, whichever has the lower out-of-fold error (round 15)
DEFAULT_LEARNER = "gbm_x_select"
#: ACIC scores sample estimands (SATT, SATE): Hajek AIPW with the sample-ATT variance
#: (causalflow.oci.sample_estimands), bracketed over the two extrapolations by the X-learner.
#: Alone it under-covered (nuisance bias, NOTES.md round 2); bracketed it covers (round 7).
#: The runner's "aipw" (influence-function SEs) is recorded alongside.
DEFAULT_FINAL_STAGE = "aipw_sample"
#: cross-fitting splits aggregated per estimate (Spec.n_repeats): two splits remove half of
#: the split-to-split variance (SATT RMSE 0.0771 -> 0.0739, coverage 0.957 -> 0.970 on the 231
#: data sets, benchmarks/acic/NOTES.md round 11) at twice the CPU time
DEFAULT_REPEATS = 2


# ------------------------------------------------------------------------------- data
@dataclass(frozen=True, slots=True)
class AcicData:
    """One ACIC 2016 data set.

    Attributes
    ----------
    setting, replication : int
    frame : DataFrame (4802 rows)
        ``x_1`` .. ``x_58`` as in ``x.csv`` (three letter-coded categoricals), ``z`` (0/1),
        ``y = z y1 + (1 - z) y0``.
    truth : dict
        ``satt``, ``sate`` (sample effects of the noisy potential outcomes), ``mu_att``,
        ``mu_ate`` (noise-free), ``n_treated``.
    unit_effect : ndarray (4802,)
        ``y1 - y0`` of every unit (never shown to the loop): the truth of any sub- or
        reweighted population, e.g. the trimmed and overlap-weighted estimands.
    """

    setting: int
    replication: int
    frame: pd.DataFrame
    truth: dict
    unit_effect: np.ndarray

    @property
    def key(self) -> str:
        return f"s{self.setting:02d}_r{self.replication}"

    @property
    def covariates(self) -> list[str]:
        return [c for c in self.frame.columns if c.startswith("x_")]


def resolve_data_dir(data: str | os.PathLike | None = None) -> Path:
    """The export folder: ``data``, or ``../shared/data/acic2016`` next to the repository.

    Raises :class:`ValidationError` naming ``data`` when ``x.csv`` / ``truth.csv`` are missing.
    """
    if data is None:
        data = Path(__file__).resolve().parents[3] / "shared" / "data" / "acic2016"
    path = Path(data)
    for name in ("x.csv", "truth.csv", "settings.csv"):
        if not (path / name).is_file():
            raise ValidationError(f"data: {os.fspath(path)!r} is not the ACIC 2016 export ({name} missing)")
    return path


def list_datasets(data: str | os.PathLike | None = None) -> list[tuple[int, int]]:
    """Every (setting, replication) of ``truth.csv``, sorted."""
    t = pd.read_csv(resolve_data_dir(data) / "truth.csv")
    return sorted((int(s), int(k)) for s, k in zip(t["setting"], t["seed"]))


def load_dataset(data: str | os.PathLike | None, setting: int, replication: int) -> AcicData:
    """Read one data set (the export is never modified or copied).

    Examples
    --------
    >>> d = load_dataset(None, 1, 1)                                  # doctest: +SKIP
    >>> d.frame.shape, round(d.truth["satt"], 3)                     # doctest: +SKIP
    ((4802, 60), 2.755)
    """
    root = resolve_data_dir(data)
    path = root / str(int(setting)) / f"zymu_{int(replication)}.csv.gz"
    if not path.is_file():
        raise ValidationError(f"setting/replication: no file {os.fspath(path)!r}")
    x = pd.read_csv(root / "x.csv")
    zymu = pd.read_csv(path)
    if len(zymu) != len(x):
        raise ValidationError(f"data: {path.name} has {len(zymu)} rows, x.csv has {len(x)}")
    z = zymu["z"].to_numpy().astype(int)
    y = np.where(z == 1, zymu["y1"].to_numpy(float), zymu["y0"].to_numpy(float))
    truth_tab = pd.read_csv(root / "truth.csv")
    row = truth_tab[(truth_tab["setting"] == setting) & (truth_tab["seed"] == replication)]
    if len(row) != 1:
        raise ValidationError(f"setting/replication: truth.csv has no row for ({setting}, {replication})")
    r = row.iloc[0]
    truth = {k: float(r[k]) for k in ("satt", "sate", "mu_att", "mu_ate")} | {"n_treated": int(r["n_treated"])}
    effect = zymu["y1"].to_numpy(float) - zymu["y0"].to_numpy(float)
    return AcicData(int(setting), int(replication), x.assign(z=z, y=y), truth, effect)


# ---------------------------------------------------------------------------- metrics
@dataclass(frozen=True, slots=True)
class EstimandMetrics:
    """Accuracy of one estimator over data sets (module docstring for the formulas)."""

    n: int
    bias: float
    rmse: float
    mae: float
    coverage: float
    interval_length: float


def estimand_metrics(estimate, lower, upper, truth) -> EstimandMetrics:
    """Bias, RMSE, MAE, interval coverage and mean length; data sets with a NaN estimate are left out.

    Examples
    --------
    >>> m = estimand_metrics([1.0, 2.0], [0.0, 2.5], [2.0, 3.0], [1.5, 1.5])
    >>> m.bias, m.rmse, m.coverage, m.interval_length
    (0.0, 0.5, 0.5, 1.25)
    """
    est, lo, hi, tr = (np.asarray(a, dtype=float) for a in (estimate, lower, upper, truth))
    ok = np.isfinite(est) & np.isfinite(tr)
    if not ok.any():
        return EstimandMetrics(0, *(float("nan"),) * 5)
    err = est[ok] - tr[ok]
    cover = (lo[ok] <= tr[ok]) & (tr[ok] <= hi[ok])
    return EstimandMetrics(int(ok.sum()), float(err.mean()), float(np.sqrt(np.mean(err**2))),
                           float(np.mean(np.abs(err))), float(cover.mean()), float(np.mean(hi[ok] - lo[ok])))


# ------------------------------------------------------------------------- one data set
def _linear_baseline(frame: pd.DataFrame, covariates: list[str]) -> dict:
    """One-shot regression adjustment: coefficient of z in ``y ~ 1 + z + X`` (classical SE)."""
    from .diagnostics import linear_sensitivity
    from .runner import encode_covariates

    X, _, _ = encode_covariates(frame, covariates)
    b, tstat, _ = linear_sensitivity(frame["y"].to_numpy(float), frame["z"].to_numpy(float), X)
    se = abs(b / tstat) if np.isfinite(tstat) and tstat != 0 else float("nan")
    return {"estimate": b, "std_error": se, "ci_lower": b - 1.959964 * se, "ci_upper": b + 1.959964 * se}


def _options(propensity_learner, outcome_learner, n_folds, seed, final_stage, n_repeats, max_iterations) -> dict:
    """The evaluation options a record stores, and a resumed evaluation must match."""
    return {"learners": [propensity_learner, outcome_learner], "n_folds": n_folds, "seed": seed,
            "final_stage": final_stage, "n_repeats": n_repeats, "max_iterations": max_iterations}


def population_truth(estimand: str, unit_effect, t, e, kept) -> float:
    """The sample effect of the population an estimate describes: the mean ``y1 - y0`` over
    the units kept by trimming (ATE) or the kept treated units (ATT), and for the ATO the
    overlap-weighted mean ``sum h (y1 - y0) / sum h`` with ``h = e (1 - e)`` from the same
    (estimated, clipped) propensity the estimate used (Li, Morgan and Zaslavsky 2018, JASA
    113(521)). ``kept`` is all True without trimming. With several cross-fitting splits the
    runner trims with the mean propensity over the splits (so the kept units here are exactly
    its), while its ATO averages per-split estimates, each with its split's weights; the truth
    uses the mean propensity's weights, a second-order difference.

    Examples
    --------
    >>> import numpy as np
    >>> eff, t, e = np.array([1.0, 2.0, 3.0]), np.array([1, 0, 1]), np.array([0.5, 0.5, 0.9])
    >>> population_truth("ATT", eff, t, e, np.array([True, True, False]))
    1.0
    >>> round(population_truth("ATO", eff, t, e, np.ones(3, bool)), 4)   # weights 0.25, 0.25, 0.09
    1.7288
    """
    unit_effect, e, kept = np.asarray(unit_effect, float), np.asarray(e, float), np.asarray(kept, bool)
    if estimand == "ATO":
        h = e * (1 - e)
        return float(h @ unit_effect / h.sum())
    rows = kept & (np.asarray(t) == 1) if estimand == "ATT" else kept
    return float(unit_effect[rows].mean())


def _result_path(out: Path, setting: int, replication: int) -> Path:
    return out / "datasets" / f"s{setting:02d}_r{replication}.json"


def evaluate_dataset(data: str | os.PathLike | None, setting: int, replication: int,
                     out: str | os.PathLike, *, max_iterations: int = 3,
                     propensity_learner: str = DEFAULT_LEARNER, outcome_learner: str = DEFAULT_LEARNER,
                     n_folds: int = 5, seed: int = 0, final_stage: str = DEFAULT_FINAL_STAGE,
                     n_repeats: int = DEFAULT_REPEATS, artifact_level: str | None = None,
                     overwrite: bool = False, learner_modules: Sequence[str] = ()) -> dict:
    """Run the OCI loop on one data set and write ``out/datasets/sXX_rK.json`` (atomically).

    When that file exists (and not ``overwrite``) it is read back instead: this is what
    makes :func:`evaluate` resumable. ``artifact_level`` None writes no loop artifacts;
    otherwise the loop's own artifacts go to ``out/runs/sXX_rK/``. ``learner_modules`` are
    imported first: modules that register learners (:func:`causalflow.oci.register_learner`)
    which the worker processes of :func:`evaluate` would not know otherwise.
    Returns the record: per plan estimand the scored iteration's estimate, interval,
    verdict and population, every iteration's table, the baseline, the truths, CPU seconds.
    """
    from .actor import RuleActor
    from .loop import run
    from .plan import Plan

    for module in learner_modules:
        importlib.import_module(module)
    out = Path(out)
    path = _result_path(out, setting, replication)
    if path.exists() and not overwrite:
        return json.loads(path.read_text())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ds = load_dataset(data, setting, replication)
    cols = ds.covariates
    plan = Plan(data=ds.frame, treatment="z", outcome="y", confounders={"high": cols},
                estimands=["ATT", "ATE"], seed=seed, name=f"ACIC 2016 {ds.key}")
    actor = RuleActor(propensity_learner=propensity_learner, outcome_learner=outcome_learner,
                      n_folds=n_folds, final_stage=final_stage, n_repeats=n_repeats)
    artifacts = None if artifact_level is None else out / "runs" / ds.key
    result = run(plan, max_iterations=max_iterations, artifacts=artifacts,
                 artifact_level=artifact_level or "minimal", actor=actor)
    iterations = []
    for it in result.iterations:
        table = json.loads(it.to_frame().to_json(orient="records", double_precision=15))
        for row in table:  # the truth of the population each estimate describes
            row["truth"] = population_truth(row["estimand"], ds.unit_effect, it.result.treatment,
                                            it.result.propensity, it.result.kept)
        iterations.append({"index": it.index, "trimming": it.spec.trimming,
                           "alpha": it.result.alpha, "outcome_learner": it.spec.outcome_learner,
                           "proposals": [p.kind for p in it.critique.proposals], "table": table})
    scored = {}
    for estimand in ("ATT", "ATE"):
        chosen = None
        for it in result.iterations:
            r = next((e for e in it.estimates if e.estimand == estimand), None)
            if r is not None and not r.population.startswith("trimmed"):
                chosen = (it, r)
        it, r = chosen  # iteration 1 always targets the whole sample
        final = next(e for e in result.final.estimates if e.estimand == estimand)
        scored[estimand] = {"iteration": it.index, "estimate": r.estimate, "std_error": r.std_error,
                            "ci_lower": r.ci_lower, "ci_upper": r.ci_upper,
                            "verdict": it.verdicts[estimand], "population": r.population,
                            "final_estimate": final.estimate, "final_population": final.population}
    # the same scored specs with another final stage ("aipw" <-> "aipw_sample" <- "tmle"), for
    # comparison (the nuisance fits come from the learners' fit cache when they are cached)
    alternative = {}
    other = {"aipw": "aipw_sample", "aipw_sample": "aipw", "tmle": "aipw_sample"}.get(final_stage)
    if other is not None:
        from dataclasses import replace

        from .plan import prepare_data
        from .runner import run_spec

        analysis = prepare_data(plan)
        reruns = {}  # one run per scored iteration: it estimates all of that spec's estimands
        for estimand, s in scored.items():
            if s["iteration"] not in reruns:
                spec = replace(result.iterations[s["iteration"] - 1].spec, final_stage=other)
                reruns[s["iteration"]] = run_spec(analysis, spec)
            r = reruns[s["iteration"]].estimate(estimand)
            alternative[estimand] = {"estimate": r.estimate, "std_error": r.std_error,
                                     "ci_lower": r.ci_lower, "ci_upper": r.ci_upper}
    record = {"setting": setting, "replication": replication, "truth": ds.truth,
              "n_treated": int(ds.frame["z"].sum()), "stop_reason": result.stop_reason,
              "n_iterations": len(result.iterations), "scored": scored,
              "baseline": _linear_baseline(ds.frame, cols), "alternative_stage": other,
              "alternative": alternative,
              "iterations": iterations,
              "cpu_seconds": time.process_time() - cpu0, "wall_seconds": time.perf_counter() - wall0,
              **_options(propensity_learner, outcome_learner, n_folds, seed, final_stage, n_repeats,
                         max_iterations)}
    atomic_write(path, json.dumps(record, indent=1, default=float))
    return record


# ----------------------------------------------------------------------------- tables
def results_frame(records: list[dict]) -> pd.DataFrame:
    """One row per data set and estimand (OCI and baseline), from the per-data-set records."""
    rows = []
    for rec in records:
        for estimand, truth_key in ESTIMAND_TRUTH.items():
            s = rec["scored"][estimand]
            b = rec["baseline"]
            rows.append({"setting": rec["setting"], "replication": rec["replication"], "estimand": estimand,
                         "truth": rec["truth"][truth_key], "estimate": s["estimate"],
                         "ci_lower": s["ci_lower"], "ci_upper": s["ci_upper"], "verdict": s["verdict"],
                         "iteration": s["iteration"], "n_iterations": rec["n_iterations"],
                         "stop_reason": rec["stop_reason"], "baseline_estimate": b["estimate"],
                         "baseline_lower": b["ci_lower"], "baseline_upper": b["ci_upper"],
                         **_alternative(rec, estimand),
                         "cpu_seconds": rec["cpu_seconds"], "wall_seconds": rec["wall_seconds"]})
    return pd.DataFrame(rows)


def populations_frame(records: list[dict]) -> pd.DataFrame:
    """Every estimand the loop estimated, on the population it describes ("whole sample",
    "trimmed", "overlap-weighted"), scored against that population's own sample truth
    (:func:`population_truth`); per data set the last iteration that estimated it. Records
    written before the truths were kept contribute nothing."""
    rows = []
    for rec in records:
        last = {}
        for it in rec["iterations"]:
            for r in it["table"]:
                if "truth" not in r:
                    continue
                kind = ("overlap-weighted" if r["estimand"] == "ATO"
                        else "trimmed" if str(r["population"]).startswith("trimmed") else "whole sample")
                last[(r["estimand"], kind)] = {"setting": rec["setting"], "replication": rec["replication"],
                                               "estimand": r["estimand"], "population": kind,
                                               "iteration": it["index"], "truth": r["truth"],
                                               "estimate": r["estimate"], "ci_lower": r["ci_lower"],
                                               "ci_upper": r["ci_upper"], "n": r["n"]}
        rows += last.values()
    return pd.DataFrame(rows)


def _alternative(rec: dict, estimand: str) -> dict:
    alt = (rec.get("alternative") or rec.get("aipw_if") or {}).get(estimand)
    if alt is None:
        return {"alt_estimate": np.nan, "alt_lower": np.nan, "alt_upper": np.nan}
    return {"alt_estimate": alt["estimate"], "alt_lower": alt["ci_lower"], "alt_upper": alt["ci_upper"]}


def _metrics_row(df: pd.DataFrame, prefix: str = "") -> dict:
    est, lo, hi = ((df[f"{prefix}estimate"], df[f"{prefix}lower"], df[f"{prefix}upper"]) if prefix
                   else (df["estimate"], df["ci_lower"], df["ci_upper"]))
    return asdict(estimand_metrics(est, lo, hi, df["truth"]))


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def _table(df: pd.DataFrame) -> tuple:
    return ("table", [str(c) for c in df.columns], [[_fmt(v) for v in row] for row in df.itertuples(index=False)])


def _plots(res: pd.DataFrame, by_setting: pd.DataFrame) -> dict:
    require("matplotlib", "oci").use("Agg")
    plt = require("matplotlib.pyplot", "oci")

    images = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, estimand in zip(axes, ESTIMAND_TRUTH):
        d = res[res.estimand == estimand]
        for verdict, colour in (("fully_satisfactory", "tab:green"), ("satisfactory_with_caveats", "tab:orange"),
                                ("not_satisfactory", "tab:red")):
            v = d[d.verdict == verdict]
            ax.errorbar(v.truth, v.estimate, yerr=[v.estimate - v.ci_lower, v.ci_upper - v.estimate],
                        fmt="o", ms=3, lw=0.6, color=colour, label=verdict, alpha=0.8)
        lims = [min(d.truth.min(), d.estimate.min()), max(d.truth.max(), d.estimate.max())]
        ax.plot(lims, lims, "k--", lw=0.8)
        ax.set_xlabel(f"truth ({ESTIMAND_TRUTH[estimand].upper()})")
        ax.set_ylabel("OCI estimate (95% interval)")
        ax.set_title(estimand)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    images["estimate_vs_truth"] = _png(fig)
    fig, axes = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    for ax, estimand in zip(axes, ESTIMAND_TRUTH):
        d = by_setting[by_setting.estimand == estimand]
        ax.bar(d.setting.astype(int), d.coverage, color="tab:blue")
        ax.axhline(0.95, color="k", ls="--", lw=0.8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{estimand} coverage")
    axes[-1].set_xlabel("setting (3 replications each)")
    fig.tight_layout()
    images["coverage_by_setting"] = _png(fig)
    plt.close("all")
    return images


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def summarise(out: str | os.PathLike, data: str | os.PathLike | None = None, *,
              wall_seconds: float | None = None) -> dict:
    """Read every record under ``out/datasets`` and write ``report.md``, ``report.html``,
    ``results.csv``, ``summary.json`` and ``plots/*.png`` to ``out``. Returns the summary."""
    out = Path(out)
    root = resolve_data_dir(data)
    records = [json.loads(p.read_text()) for p in sorted((out / "datasets").glob("s*_r*.json"))]
    if not records:
        raise ValidationError(f"out: no data-set results under {os.fspath(out / 'datasets')!r}")
    res = results_frame(records)
    stage = records[0].get("final_stage", "aipw")
    other_stage = records[0].get("alternative_stage", "aipw" if "aipw_if" in records[0] else None)
    settings = pd.read_csv(root / "settings.csv")
    res = res.merge(settings, on="setting", how="left")
    atomic_write(out / "results.csv", res.to_csv(index=False))

    overall = []
    for estimand in ESTIMAND_TRUTH:
        d = res[res.estimand == estimand]
        overall.append({"estimand": estimand, "method": "OCI loop", **_metrics_row(d)})
        if d["alt_estimate"].notna().any():
            overall.append({"estimand": estimand, "method": f"same specs, final stage {other_stage}",
                            **_metrics_row(d, "alt_")})
        overall.append({"estimand": estimand, "method": "one-shot linear regression",
                        **_metrics_row(d, "baseline_")})
    overall = pd.DataFrame(overall)
    by_char = []
    for col in SETTING_COLUMNS:
        for (estimand, level), d in res.groupby(["estimand", col], sort=True):
            by_char.append({"estimand": estimand, "characteristic": col, "level": level, **_metrics_row(d)})
    by_char = pd.DataFrame(by_char)
    by_setting = pd.DataFrame([{"estimand": e, "setting": s, **_metrics_row(d)}
                               for (e, s), d in res.groupby(["estimand", "setting"])])
    verdicts = []
    for estimand in ESTIMAND_TRUTH:
        d = res[res.estimand == estimand]
        for verdict in ("fully_satisfactory", "satisfactory_with_caveats", "not_satisfactory"):
            v = d[d.verdict == verdict]
            verdicts.append({"estimand": estimand, "group": verdict, **_metrics_row(v)})
        rest = d[d.verdict != "not_satisfactory"]
        verdicts.append({"estimand": estimand, "group": "all but not_satisfactory", **_metrics_row(rest)})
    verdicts = pd.DataFrame(verdicts)
    pops = populations_frame(records)
    populations = pd.DataFrame([{"estimand": e, "population": k, **_metrics_row(d)}
                                for (e, k), d in pops.groupby(["estimand", "population"])] if len(pops) else [])
    comp = pd.read_csv(root / "competition_results.csv")
    ours = overall[overall.estimand == "ATT"].copy()
    ours["method"] = ours["method"].str.replace("OCI loop", f"OCI loop ({stage})")
    comparison = pd.concat([
        pd.DataFrame({"method": [f"{m} (ours, 3 reps)" for m in ours.method], "rmse": ours.rmse,
                      "bias": ours.bias, "mean_abs_error": ours.mae, "coverage": ours.coverage,
                      "interval_length": ours.interval_length, "data sets": ours.n}),
        comp.assign(**{"data sets": comp.n_sims - comp.n_missing})[
            ["method", "rmse", "bias", "mean_abs_error", "coverage", "interval_length", "data sets"]]],
        ignore_index=True).sort_values("rmse", kind="stable")
    n_it = res[res.estimand == "ATT"].n_iterations.value_counts().sort_index()
    cpu = res[res.estimand == "ATT"].cpu_seconds
    summary = {"n_datasets": len(records),
               "overall": json.loads(overall.to_json(orient="records", double_precision=15)),
               "verdicts": json.loads(verdicts.to_json(orient="records", double_precision=15)),
               "populations": json.loads(populations.to_json(orient="records", double_precision=15)),
               "iterations": {int(k): int(v) for k, v in n_it.items()},
               "cpu_seconds_per_dataset": float(cpu.mean()), "cpu_seconds_total": float(cpu.sum()),
               "wall_seconds": wall_seconds}
    atomic_write(out / "summary.json", json.dumps(summary, indent=1))

    images = _plots(res, by_setting)
    for name, png in images.items():
        atomic_write(out / "plots" / f"{name}.png", png)
    n_it_text = ", ".join(f"{k} iteration(s): {v}" for k, v in n_it.items())
    timing = (f"CPU {cpu.mean():.1f} s per data set, {cpu.sum() / 60:.1f} CPU-minutes in all"
              + (f"; wall time of this run {wall_seconds / 60:.1f} min" if wall_seconds else ""))
    blocks = [
        ("h1", "OCI loop on ACIC 2016"),
        ("p", f"{len(records)} data sets (of 231: 77 settings x 3 replications). Plan for every data set: "
              "treatment z, outcome y, all 58 covariates as high-priority confounders, estimands ATT and "
              f"ATE, learners {records[0]['learners']}, final stage {records[0].get('final_stage', 'aipw')}, "
              f"{records[0]['n_folds']} cross-fitting folds x {records[0].get('n_repeats', 1)} split(s), seed "
              f"{records[0]['seed']}; the loop runs up to 3 iterations ({n_it_text}). Each estimand is "
              "scored with the last iteration that still targets the whole sample (a trimmed ATT / ATE "
              "is an effect on another population): ATT against SATT, ATE against SATE. " + timing + "."),
        ("h2", "Accuracy per estimand"), _table(overall),
        ("img", "estimate_vs_truth"),
        ("h2", "SATT: comparison with the competition entries"),
        ("p", ("Competition numbers are over 7,700 data sets (77 settings x 100 replications); ours over "
               f"{len(records)} (3 replications per setting): the comparison is indicative, and "
               "replications 1-3 are a subset of theirs.")),
        _table(comparison),
        ("h2", "Critic verdicts (does the Critic flag the bad ones?)"), _table(verdicts),
        *([("h2", "Every estimand on its own population (the Critic's overlap remedies)"),
           ("p", ("Trimmed ATE / ATT (Crump et al. 2009) and the overlap-weighted ATO target other "
                  "populations than SATE / SATT; each is scored here against the sample truth of the units "
                  "it describes (mean y1 - y0 over the kept units, or weighted by e (1 - e) with the "
                  "propensity the estimate used), from the last iteration that estimated it.")),
           _table(populations)] if len(populations) else []),
        ("h2", "By setting characteristics"), _table(by_char),
        ("h2", "Coverage by setting"), ("img", "coverage_by_setting"),
        _table(by_setting.pivot(index="setting", columns="estimand", values=["rmse", "coverage"])
               .pipe(lambda t: t.set_axis([f"{a} {b}" for a, b in t.columns], axis=1)).reset_index()),
    ]
    atomic_write(out / "report.md", render_markdown(blocks, images))
    atomic_write(out / "report.html", render_html(blocks, images).replace("<title>OCI report</title>",
                                                                          "<title>OCI on ACIC 2016</title>"))
    return summary


# ------------------------------------------------------------------------------ driver
def _check_resumed(out: Path, done, options: dict) -> None:
    """Refuse to resume ``out`` when a kept record was made with other options: a summary
    over records of different learners, folds, seeds, final stages, splits or iteration caps
    would describe no single method. Records without a field (written by older versions) are
    not checked on it."""
    for s, k in done:
        path = _result_path(out, s, k)
        record = json.loads(path.read_text())
        for name, value in options.items():
            if name in record and record[name] != value:
                raise ValidationError(f"out: {path} was made with {name}={record[name]!r}, not {value!r}; "
                                      "evaluate into another folder, or remove it to start again")


def evaluate(data: str | os.PathLike | None, out: str | os.PathLike, *, n_jobs: int = 2,
             max_iterations: int = 3, settings=None, replications=None,
             propensity_learner: str = DEFAULT_LEARNER, outcome_learner: str = DEFAULT_LEARNER,
             n_folds: int = 5, seed: int = 0, final_stage: str = DEFAULT_FINAL_STAGE,
             n_repeats: int = DEFAULT_REPEATS, artifact_level: str | None = None,
             progress: bool = True, learner_modules: Sequence[str] = ()) -> dict:
    """Evaluate the loop on every data set (joblib, ``n_jobs`` processes, tqdm bar), then
    :func:`summarise`. Data sets whose result file exists are skipped (resumable); a kept
    result made with other options (learners, folds, seed, final stage, splits, iteration cap)
    raises a :class:`ValidationError` before any work. ``learner_modules``: see
    :func:`evaluate_dataset` (for example ``["benchmarks.acic.research_learners"]``)."""
    from joblib import delayed

    learner_modules = tuple(learner_modules)
    for module in learner_modules:  # here too, to fail before any work when one cannot be imported
        importlib.import_module(module)
    root = resolve_data_dir(data)
    out = Path(out)
    keys = [(s, k) for s, k in list_datasets(root)
            if (settings is None or s in settings) and (replications is None or k in replications)]
    if not keys:
        raise ValidationError("settings/replications: no data set selected")
    todo = [(s, k) for s, k in keys if not _result_path(out, s, k).exists()]
    _check_resumed(out, [key for key in keys if key not in todo],
                   _options(propensity_learner, outcome_learner, n_folds, seed, final_stage, n_repeats,
                            max_iterations))
    t0 = time.perf_counter()
    jobs = (delayed(evaluate_dataset)(os.fspath(root), s, k, out, max_iterations=max_iterations,
                                      propensity_learner=propensity_learner,
                                      outcome_learner=outcome_learner, n_folds=n_folds, seed=seed,
                                      final_stage=final_stage, n_repeats=n_repeats,
                                      artifact_level=artifact_level, learner_modules=learner_modules)
            for s, k in todo)
    run_with_progress(jobs, len(keys), len(keys) - len(todo), "ACIC data sets", n_jobs, progress)
    wall = time.perf_counter() - t0
    return summarise(out, root, wall_seconds=wall if todo else None)


def run_with_progress(jobs, total: int, done: int, desc: str, n_jobs: int, progress: bool) -> None:
    """Run joblib ``jobs`` (results are written by the jobs themselves) on ``n_jobs``
    processes, in any order, with a progress bar on stderr of ``total`` data sets of which
    ``done`` were already there (a resumed evaluation)."""
    from joblib import Parallel
    from tqdm import tqdm

    bar = tqdm(total=total, initial=done, desc=desc, unit="set", disable=not progress, file=sys.stderr)
    try:
        for _ in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
            bar.update(1)
    finally:
        bar.close()


def cli_main(argv: list[str] | None = None) -> int:
    """``causalflow oci eval-acic --data DIR --out DIR [--n-jobs 2] [--max-iterations 3] ...``."""
    p = argparse.ArgumentParser(prog="causalflow oci eval-acic",
                                description="run the OCI loop on every ACIC 2016 data set and score it")
    p.add_argument("--data", default=None, help="the acic2016 export (default ../shared/data/acic2016)")
    p.add_argument("--out", required=True, help="folder for results, report.md / report.html, plots")
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--max-iterations", type=int, default=3)
    p.add_argument("--settings", type=int, nargs="*", default=None)
    p.add_argument("--replications", type=int, nargs="*", default=None)
    p.add_argument("--learner", default=DEFAULT_LEARNER, help="propensity and outcome learner name")
    p.add_argument("--learner-module", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (in every worker) to register more learners; repeatable")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--final-stage", choices=["aipw", "aipw_sample", "tmle", "weighted_linear"],
                   default=DEFAULT_FINAL_STAGE)
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help="cross-fitting splits aggregated per estimate (Spec.n_repeats)")
    p.add_argument("--artifacts", choices=["none", "minimal", "standard"], default="none",
                   help="loop artifacts per data set under OUT/runs (default none: light)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    summary = evaluate(a.data, a.out, n_jobs=a.n_jobs, max_iterations=a.max_iterations,
                       settings=a.settings, replications=a.replications, propensity_learner=a.learner,
                       outcome_learner=a.learner, n_folds=a.folds, seed=a.seed,
                       final_stage=a.final_stage, n_repeats=a.repeats,
                       artifact_level=None if a.artifacts == "none" else a.artifacts,
                       progress=not a.no_progress, learner_modules=a.learner_module)
    print(pd.DataFrame(summary["overall"]).round(4).to_string(index=False))
    print(f"report: {os.path.join(a.out, 'report.md')}")
    return 0
