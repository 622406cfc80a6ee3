"""The OCI validation suite: several families of data with known answers, the loop and three
baselines side by side (``causalflow oci eval SUITE``).

Families (each data set: a frame, a plan, and the truth of any population of its units):

- ``acic``: the 231 ACIC 2016 data sets (77 settings x 3 replications; Dorie, Hill, Shalit,
  Scott and Cervone 2019, Statistical Science 34(1)); estimands ATT and ATE; unit truth
  ``y1 - y0`` (:mod:`causalflow.oci.acic`).
- ``nie_wager``: setups A-D of Nie and Wager (2021, Biometrika 108(2), section 6;
  :mod:`causalflow.oci.nie_wager`) at n = 500 and 2,000, 50 replications each (400 data
  sets); estimands ATE and ATT; unit truth ``tau(X_i)``.
- ``real``: two observational studies with an external answer, from the ``causaldata``
  package (MIT licence; read at run time, never copied):

  * ``lalonde_cps``: the NSW treated men of Dehejia and Wahba's sample (185) against the
    CPS comparison group (15,992; ``nsw_mixtape`` and ``cps_mixtape``); estimand ATT of the
    programme on 1978 earnings; benchmark **$1,794**, the experimental difference in means
    of the same treated against the randomised NSW controls (Dehejia and Wahba 1999, JASA
    94(448), 1053-1062; LaLonde 1986, AER 76(4)); computed from ``nsw_mixtape`` here
    (1,794.34).
  * ``nhefs``: smoking cessation (``qsmk``) and weight gain 1971-1982 (``wt82_71``, kg) in
    NHEFS, the 1,566 complete cases (``nhefs_complete``); estimand ATE; textbook answer
    **3.4 kg** (IP weighting, 95% CI 2.4 to 4.5; Hernan and Robins 2020, "Causal
    Inference: What If", section 12.2), with their confounders (sex, race, age, education,
    smoking intensity and years, exercise, activity, baseline weight).

The loop runs each data set's plan with one configuration for every family (the
:class:`~causalflow.oci.actor.RuleActor` defaults unless told otherwise: no per-data-set
switches). Scored per estimand of the plan:

- ``OCI (reported)``: ``run.final``'s estimate against the truth of the population it
  describes (a trimmed ATT against the mean effect of the kept treated units; real data:
  against the benchmark);
- ``OCI (whole sample)``: the reported iteration's estimate of the untrimmed population
  (the untrimmed estimate beside a trimmed one) against the sample truth;
- the baselines, against the sample truth: ``AIPW linear`` and ``AIPW LightGBM``
  (cross-fitted AIPW, 5 folds, propensities clipped to [0.01, 0.99], influence-function
  intervals; Robins, Rotnitzky and Zhao 1994; Chernozhukov et al. 2018) and ``DRLearner``
  (EconML 0.17's doubly robust learner with LightGBM nuisances of the same options, 5 folds,
  ``min_propensity`` 0.01, linear final stage; the mean effect over all / the treated units
  with its interval; Kennedy 2023, Electronic Journal of Statistics 17(2)). EconML's default
  nuisances (LassoCV / LogisticRegressionCV) took 10 s per n = 2,000 data set and 250 s per
  ACIC data set on this machine, beyond the suite's time budget.

Metrics over data sets: bias, RMSE, coverage of the 95% interval, mean interval length
(:func:`causalflow.oci.acic.estimand_metrics`), and per family the ratio of the loop's
RMSE to the best baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._optional import require
from ..errors import ValidationError
from .artifacts import atomic_write, render_html, render_markdown

__all__ = ["BASELINES", "FAMILIES", "SUITES", "DataSet", "SuiteConfig", "cli_main", "evaluate_dataset",
           "evaluate_suite", "list_datasets", "load", "summarise"]

FAMILIES = ("acic", "nie_wager", "real")
SUITES = {"acic": ("acic",), "nie_wager": ("nie_wager",), "real": ("real",), "all": FAMILIES}
BASELINES = ("aipw_linear", "aipw_lightgbm", "drlearner")
BASELINE_LABELS = {"aipw_linear": "AIPW linear", "aipw_lightgbm": "AIPW LightGBM", "drlearner": "DRLearner"}
#: propensity clip of the baselines (the usual 0.01; Spec's 0.001 lets LightGBM's propensities explode)
BASELINE_CLIP = 0.01
NW_SIZES = (500, 2000)
NW_REPLICATIONS = 50
LALONDE_BENCHMARK = 1794.34   # Dehejia and Wahba (1999); nsw_mixtape difference in means
NHEFS_BENCHMARK = 3.4         # Hernan and Robins (2020), section 12.2


@dataclass(frozen=True, slots=True)
class DataSet:
    """One data set of a family: ``frame``, the plan's fields, and the truth.

    ``unit_effect`` (simulations) is the effect of every unit, which gives the truth of any
    population; real data have ``benchmark`` (per estimand) instead.
    """

    family: str
    key: str
    frame: pd.DataFrame
    treatment: str
    outcome: str
    confounders: dict
    estimands: tuple
    unit_effect: np.ndarray | None = None
    benchmark: dict | None = None


@dataclass(frozen=True, slots=True)
class SuiteConfig:
    """The loop's configuration for every data set of every family (RuleActor fields).

    ``learner`` is the outcome learner, and the propensity learner too unless
    ``propensity_learner`` is given."""

    learner: str = "linear"
    n_folds: int = 5
    final_stage: str = "aipw"
    n_repeats: int = 1
    max_iterations: int = 3
    seed: int = 0
    propensity_learner: str | None = None

    @classmethod
    def defaults(cls) -> SuiteConfig:
        """The :class:`~causalflow.oci.actor.RuleActor` defaults (what ``cf.oci.run`` uses)."""
        from .actor import RuleActor

        a = RuleActor()
        return cls(a.outcome_learner, a.n_folds, a.final_stage, a.n_repeats,
                   propensity_learner=None if a.propensity_learner == a.outcome_learner else a.propensity_learner)

    def to_dict(self) -> dict:
        out = {f: getattr(self, f) for f in self.__slots__}
        if self.propensity_learner in (None, self.learner):  # one learner for both nuisances
            del out["propensity_learner"]
        return out


# ------------------------------------------------------------------------------ families
def list_datasets(family: str, *, acic_data=None, nw_replications: int = NW_REPLICATIONS,
                  nw_sizes=NW_SIZES, acic_replications=None, acic_settings=None) -> list[str]:
    """The keys of a family's data sets.

    >>> list_datasets("nie_wager", nw_replications=2, nw_sizes=(500,))[:3]
    ['A_n500_r1', 'A_n500_r2', 'B_n500_r1']
    >>> list_datasets("real")
    ['lalonde_cps', 'nhefs']
    """
    if family == "nie_wager":
        from .nie_wager import SETUPS

        return [f"{s}_n{n}_r{r}" for s in SETUPS for n in nw_sizes for r in range(1, nw_replications + 1)]
    if family == "real":
        return ["lalonde_cps", "nhefs"]
    if family == "acic":
        from .acic import list_datasets as acic_list

        return [f"s{s:02d}_r{k}" for s, k in acic_list(acic_data)
                if (acic_replications is None or k in acic_replications)
                and (acic_settings is None or s in acic_settings)]
    raise ValidationError(f"family: must be one of {FAMILIES}, got {family!r}")


def _causaldata(name: str) -> pd.DataFrame:
    return require(f"causaldata.{name}", "bench").load_pandas().data


def load(family: str, key: str, *, acic_data=None) -> DataSet:
    """One data set of a family (see the module docstring).

    >>> d = load("nie_wager", "C_n500_r3")
    >>> d.frame.shape, d.estimands, float(d.unit_effect.mean())
    ((500, 8), ('ATE', 'ATT'), 1.0)
    """
    if family == "nie_wager":
        from .nie_wager import simulate

        setup, n, r = key.split("_")
        seed = zlib.crc32(f"nie_wager/{key}".encode())
        frame, tau = simulate(setup, int(n[1:]), seed=seed)
        cols = [c for c in frame.columns if c.startswith("x")]
        return DataSet(family, key, frame, "w", "y", {"high": cols}, ("ATE", "ATT"), unit_effect=tau)
    if family == "acic":
        from .acic import load_dataset

        s, k = key[1:].split("_r")
        ds = load_dataset(acic_data, int(s), int(k))
        return DataSet(family, key, ds.frame, "z", "y", {"high": ds.covariates}, ("ATT", "ATE"),
                       unit_effect=ds.unit_effect)
    if family == "real" and key == "lalonde_cps":
        nsw, cps = _causaldata("nsw_mixtape"), _causaldata("cps_mixtape")
        frame = pd.concat([nsw[nsw.treat == 1], cps], ignore_index=True).drop(columns="data_id")
        return DataSet(family, key, frame, "treat", "re78",
                       {"high": ["re74", "re75"], "medium": ["age", "educ", "black", "hisp", "marr", "nodegree"]},
                       ("ATT",), benchmark={"ATT": LALONDE_BENCHMARK})
    if family == "real" and key == "nhefs":
        h = _causaldata("nhefs_complete")
        cols = ["sex", "race", "age", "education", "smokeintensity", "smokeyrs", "exercise", "active", "wt71"]
        frame = h[["qsmk", "wt82_71", *cols]].copy()
        for c in ("sex", "race", "education", "exercise", "active"):
            frame[c] = frame[c].astype(str)
        return DataSet(family, key, frame, "qsmk", "wt82_71",
                       {"high": ["smokeintensity", "smokeyrs", "wt71", "age"],
                        "medium": ["sex", "race", "education", "exercise", "active"]},
                       ("ATE",), benchmark={"ATE": NHEFS_BENCHMARK})
    raise ValidationError(f"key: {key!r} is not a data set of family {family!r}")


# ------------------------------------------------------------------------------ baselines
def _baseline_aipw(analysis, plan, learner: str, seed: int) -> dict:
    from .runner import run_spec
    from .spec import Spec

    spec = Spec(estimands=plan.estimands, covariates=plan.all_confounders,
                priorities=tuple((c, plan.priority_of(c)) for c in plan.all_confounders),
                propensity_learner=learner, outcome_learner=learner, n_folds=5, final_stage="aipw", seed=seed,
                propensity_clip=BASELINE_CLIP)
    result = run_spec(analysis, spec)
    return {r.estimand: {"estimate": r.estimate, "ci_lower": r.ci_lower, "ci_upper": r.ci_upper}
            for r in result.estimates}


def _baseline_drlearner(analysis, plan, seed: int) -> dict:
    from .runner import encode_covariates

    DRLearner = require("econml.dr", "bench").DRLearner
    from lightgbm import LGBMClassifier, LGBMRegressor

    X, _, _ = encode_covariates(analysis.frame, plan.all_confounders)
    t, y = analysis.treatment, analysis.outcome
    opts = {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 20,
            "num_threads": 1, "verbose": -1, "random_state": seed}  # the "lightgbm" learner's options
    est = DRLearner(model_propensity=LGBMClassifier(**opts), model_regression=LGBMRegressor(**opts),
                    cv=5, random_state=seed, min_propensity=BASELINE_CLIP)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(y, t, X=X)
        out = {}
        for estimand in plan.estimands:
            rows = t == 1 if estimand == "ATT" else np.ones(len(t), bool)
            summary = est.effect_inference(X[rows]).population_summary()
            lo, hi = summary.conf_int_mean()
            out[estimand] = {"estimate": float(summary.mean_point), "ci_lower": float(np.ravel(lo)[0]),
                             "ci_upper": float(np.ravel(hi)[0])}
    return out


# ------------------------------------------------------------------------------ one data set
def _truth(ds: DataSet, estimand: str, t, e=None, kept=None) -> float:
    """The truth of ``estimand`` on the population an estimate describes (real data: the benchmark)."""
    if ds.benchmark is not None:
        return float(ds.benchmark[estimand])
    from .acic import population_truth

    kept = np.ones(len(t), bool) if kept is None else kept
    e = np.full(len(t), 0.5) if e is None else e
    return population_truth(estimand, ds.unit_effect, t, e, kept)


def _record_path(out: Path, family: str, key: str) -> Path:
    return out / family / "datasets" / f"{key}.json"


def evaluate_dataset(family: str, key: str, out, config: SuiteConfig | None = None, *,
                     baselines=BASELINES, acic_data=None, overwrite: bool = False) -> dict:
    """Run the loop and the baselines on one data set; write ``out/FAMILY/datasets/KEY.json``
    (atomically; read back instead when it exists and not ``overwrite``: resumable)."""
    from threadpoolctl import threadpool_limits

    from .actor import RuleActor
    from .loop import run
    from .plan import Plan, prepare_data

    config = config or SuiteConfig.defaults()
    out = Path(out)
    path = _record_path(out, family, key)
    if path.exists() and not overwrite:
        return json.loads(path.read_text())
    ds = load(family, key, acic_data=acic_data)
    plan = Plan(data=ds.frame, treatment=ds.treatment, outcome=ds.outcome, confounders=ds.confounders,
                estimands=list(ds.estimands), seed=config.seed, name=f"{family} {key}")
    actor = RuleActor(propensity_learner=config.propensity_learner or config.learner,
                      outcome_learner=config.learner, n_folds=config.n_folds,
                      final_stage=config.final_stage, n_repeats=config.n_repeats)
    seconds = {}
    t0 = time.process_time()
    result = run(plan, max_iterations=config.max_iterations, actor=actor)
    seconds["oci"] = time.process_time() - t0
    final = result.final
    t = final.result.treatment
    estimands = {}
    for r in final.result.estimates:
        if r.estimand not in ds.estimands:
            continue
        whole = (r if r.untrimmed_estimate is None else
                 {"estimate": r.untrimmed_estimate, "ci_lower": r.untrimmed_ci_lower, "ci_upper": r.untrimmed_ci_upper})
        whole = whole if isinstance(whole, dict) else {"estimate": r.estimate, "ci_lower": r.ci_lower,
                                                       "ci_upper": r.ci_upper}
        estimands[r.estimand] = {
            "sample_truth": _truth(ds, r.estimand, t),
            "reported": {"estimate": r.estimate, "ci_lower": r.ci_lower, "ci_upper": r.ci_upper,
                         "population": r.population, "n": r.n, "verdict": final.verdicts.get(r.estimand),
                         "truth": _truth(ds, r.estimand, t, final.result.propensity, final.result.kept)},
            "whole_sample": whole, "baselines": {}}
    analysis = prepare_data(plan)
    with threadpool_limits(limits=1):
        for name in baselines:
            t0 = time.process_time()
            if name == "drlearner":
                values = _baseline_drlearner(analysis, plan, config.seed)
            else:
                values = _baseline_aipw(analysis, plan, name.split("_", 1)[1], config.seed)
            seconds[name] = time.process_time() - t0
            for estimand, v in values.items():
                estimands[estimand]["baselines"][name] = v
    record = {"family": family, "key": key, "config": config.to_dict(), "stop_reason": result.stop_reason,
              "n_iterations": len(result.iterations), "final_iteration": final.index,
              "iterations": [{"index": it.index, "verdicts": it.verdicts, "base": it.base,
                              "applied": [p.kind for p in it.applied]} for it in result.iterations],
              "rejected": [p.kind for p in result.rejected], "estimands": estimands, "cpu_seconds": seconds}
    atomic_write(path, json.dumps(record, indent=1, default=float))
    return record


# ------------------------------------------------------------------------------ summary
def results_frame(records: list[dict]) -> pd.DataFrame:
    """One row per data set, estimand and method: estimate, interval, truth."""
    rows = []
    for rec in records:
        for estimand, e in rec["estimands"].items():
            base = {"family": rec["family"], "key": rec["key"], "estimand": estimand}
            rep = e["reported"]
            rows.append({**base, "method": "OCI (reported)", "truth": rep["truth"], "estimate": rep["estimate"],
                         "ci_lower": rep["ci_lower"], "ci_upper": rep["ci_upper"], "verdict": rep["verdict"],
                         "trimmed": str(rep["population"]).startswith("trimmed")})
            w = e["whole_sample"]
            rows.append({**base, "method": "OCI (whole sample)", "truth": e["sample_truth"], **w})
            for name, v in e["baselines"].items():
                rows.append({**base, "method": BASELINE_LABELS[name], "truth": e["sample_truth"], **v})
    return pd.DataFrame(rows)


def _subfamily(row) -> str:
    if row["family"] == "nie_wager":
        setup, n, _ = row["key"].split("_")
        return f"{setup} {n}"
    return row["key"] if row["family"] == "real" else "all"


def metrics_table(res: pd.DataFrame, by=("family", "estimand", "method")) -> pd.DataFrame:
    """Bias, RMSE, coverage, interval length per group of :func:`results_frame` rows."""
    from dataclasses import asdict

    from .acic import estimand_metrics

    rows = []
    for keys, d in res.groupby(list(by), sort=True):
        m = asdict(estimand_metrics(d.estimate, d.ci_lower, d.ci_upper, d.truth))
        rows.append({**dict(zip(by, keys)), **{k: m[k] for k in ("n", "bias", "rmse", "coverage",
                                                                 "interval_length")}})
    return pd.DataFrame(rows)


def summarise(out, families=FAMILIES, *, wall_seconds: float | None = None) -> dict:
    """Read the records under ``out`` and write ``summary.json``, ``results.csv``,
    ``report.md`` and ``report.html``. Returns the summary."""
    from .formatting import fmt_number

    out = Path(out)
    records = [json.loads(p.read_text()) for f in families for p in sorted((out / f / "datasets").glob("*.json"))]
    if not records:
        raise ValidationError(f"out: no data-set records under {os.fspath(out)!r}")
    res = results_frame(records)
    atomic_write(out / "results.csv", res.to_csv(index=False))
    overall = metrics_table(res)
    ratios = []
    for (family, estimand), d in overall.groupby(["family", "estimand"]):
        ours = d[d.method == "OCI (whole sample)"].rmse.iloc[0]
        base = d[d.method.isin(BASELINE_LABELS.values())]
        best = base.loc[base.rmse.idxmin()] if len(base) else None
        rep = d[d.method == "OCI (reported)"].iloc[0]
        ratios.append({"family": family, "estimand": estimand, "OCI whole-sample RMSE": ours,
                       "best baseline": None if best is None else best.method,
                       "best baseline RMSE": None if best is None else best.rmse,
                       "ratio": None if best is None else ours / best.rmse,
                       "OCI reported coverage": rep.coverage})
    ratios = pd.DataFrame(ratios)
    res["subfamily"] = res.apply(_subfamily, axis=1)
    detail = metrics_table(res, by=("family", "subfamily", "estimand", "method"))
    cpu = pd.DataFrame([{"family": r["family"], **r["cpu_seconds"]} for r in records]).groupby("family").sum()
    verdicts = (res[res.method == "OCI (reported)"].groupby(["family", "estimand", "verdict"]).size()
                .rename("data sets").reset_index())
    stops = pd.DataFrame([{"family": r["family"], "stop": r["stop_reason"], "final": r["final_iteration"],
                           "iterations": r["n_iterations"], "rejected": len(r["rejected"])} for r in records])
    summary = {"n_datasets": len(records), "config": records[0]["config"],
               "overall": json.loads(overall.to_json(orient="records")),
               "ratios": json.loads(ratios.to_json(orient="records")),
               "cpu_seconds": json.loads(cpu.reset_index().to_json(orient="records")),
               "wall_seconds": wall_seconds}
    atomic_write(out / "summary.json", json.dumps(summary, indent=1))

    def table(df):
        return ("table", [str(c) for c in df.columns],
                [[fmt_number(v) if isinstance(v, (float, int, np.floating, np.integer)) else str(v) for v in row]
                 for row in df.itertuples(index=False)])

    cfg = records[0]["config"]
    blocks = [
        ("h1", "OCI validation suite"),
        ("p", f"{len(records)} data sets; the loop's configuration for every family: propensity learner "
              f"{cfg.get('propensity_learner') or cfg['learner']}, outcome learner {cfg['learner']}, "
              f"{cfg['n_folds']} folds x {cfg['n_repeats']} split(s), final stage {cfg['final_stage']}, up to "
              f"{cfg['max_iterations']} iterations, seed {cfg['seed']}"
              + (f"; wall time {wall_seconds / 60:.1f} min" if wall_seconds else "") + ". "
              "OCI (reported) is run.final's estimate against the truth of the population it describes; "
              "OCI (whole sample) and the baselines are against the sample truth (SATE / SATT; real data: "
              "the benchmark)."),
        ("h2", "Accuracy per family, estimand and method"), table(overall),
        ("h2", "The loop against the best baseline (RMSE ratio, whole sample)"), table(ratios),
        ("h2", "Verdicts of the reported iteration"), table(verdicts),
        ("h2", "Stops, reported iteration, rejected proposals"),
        table(stops.groupby(["family", "stop", "final", "iterations", "rejected"]).size()
              .rename("data sets").reset_index()),
        ("h2", "CPU seconds per family and method"), table(cpu.reset_index()),
        ("h2", "By setup and size / data set"), table(detail),
    ]
    atomic_write(out / "report.md", render_markdown(blocks, {}))
    atomic_write(out / "report.html", render_html(blocks, {}))
    return summary


# ------------------------------------------------------------------------------ driver
def evaluate_suite(suite: str, out, config: SuiteConfig | None = None, *, n_jobs: int = 2,
                   baselines=BASELINES, acic_data=None, nw_replications: int = NW_REPLICATIONS,
                   nw_sizes=NW_SIZES, acic_replications=None, acic_settings=None, progress: bool = True) -> dict:
    """Evaluate every data set of the suite's families (joblib, ``n_jobs`` processes; resumable:
    kept records are read back and must have the same configuration), then :func:`summarise`."""
    from joblib import delayed

    if suite not in SUITES:
        raise ValidationError(f"suite: must be one of {sorted(SUITES)}, got {suite!r}")
    for name in baselines:
        if name not in BASELINES:
            raise ValidationError(f"baselines: {name!r} is not one of {BASELINES}")
    config = config or SuiteConfig.defaults()
    out = Path(out)
    families = SUITES[suite]
    keys = [(f, k) for f in families for k in list_datasets(f, acic_data=acic_data, nw_replications=nw_replications,
                                                            nw_sizes=nw_sizes, acic_replications=acic_replications,
                                                            acic_settings=acic_settings)]
    for f, k in keys:
        path = _record_path(out, f, k)
        if path.exists() and json.loads(path.read_text()).get("config") != config.to_dict():
            raise ValidationError(f"out: {path} was made with another configuration; evaluate into another "
                                  "folder, or remove it to start again")
    todo = [(f, k) for f, k in keys if not _record_path(out, f, k).exists()]
    t0 = time.perf_counter()
    jobs = (delayed(evaluate_dataset)(f, k, out, config, baselines=tuple(baselines), acic_data=acic_data)
            for f, k in todo)
    from .acic import run_with_progress

    run_with_progress(jobs, len(keys), len(keys) - len(todo), f"suite {suite}", n_jobs, progress)
    wall = time.perf_counter() - t0
    return summarise(out, families, wall_seconds=wall if todo else None)


def cli_main(argv: list[str] | None = None) -> int:
    """``causalflow oci eval SUITE --out DIR [--n-jobs 2] [--learner NAME] ...``."""
    d = SuiteConfig.defaults()
    p = argparse.ArgumentParser(prog="causalflow oci eval",
                                description="score the OCI loop and three baselines on a validation suite")
    p.add_argument("suite", choices=sorted(SUITES))
    p.add_argument("--out", required=True, help="folder for the records, report.md / report.html, summary.json")
    p.add_argument("--data", default=None, help="the acic2016 export (default ../shared/data/acic2016)")
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--learner", default=d.learner, help="outcome learner of the loop (and propensity learner "
                   "unless --propensity-learner is given)")
    p.add_argument("--propensity-learner", default=None,
                   help=f"propensity learner of the loop (default: {d.propensity_learner or d.learner} "
                        "with the default --learner, else --learner)")
    p.add_argument("--folds", type=int, default=d.n_folds)
    p.add_argument("--final-stage", choices=["aipw", "aipw_sample", "tmle", "weighted_linear"],
                   default=d.final_stage)
    p.add_argument("--repeats", type=int, default=d.n_repeats)
    p.add_argument("--max-iterations", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replications", type=int, default=NW_REPLICATIONS,
                   help="Nie-Wager replications per setup and size (default 50)")
    p.add_argument("--sizes", type=int, nargs="*", default=list(NW_SIZES), help="Nie-Wager sample sizes")
    p.add_argument("--acic-replications", type=int, nargs="*", default=None,
                   help="ACIC replications (1-3; default all)")
    p.add_argument("--acic-settings", type=int, nargs="*", default=None, help="ACIC settings (1-77; default all)")
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES))
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    propensity = a.propensity_learner or (d.propensity_learner if a.learner == d.learner else None)
    config = SuiteConfig(a.learner, a.folds, a.final_stage, a.repeats, a.max_iterations, a.seed, propensity)
    summary = evaluate_suite(a.suite, a.out, config, n_jobs=a.n_jobs, baselines=a.baselines, acic_data=a.data,
                             nw_replications=a.replications, nw_sizes=tuple(a.sizes),
                             acic_replications=a.acic_replications, acic_settings=a.acic_settings,
                             progress=not a.no_progress)
    print(pd.DataFrame(summary["ratios"]).round(4).to_string(index=False))
    print(f"report: {os.path.join(a.out, 'report.md')}")
    return 0
