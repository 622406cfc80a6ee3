r"""Closing the loop: decide -> observe -> update rounds of a simulated contextual bandit.

:func:`simulate_bandit` runs a :class:`~causalflow.Policy` on simulated units. Each round it
draws a batch of contexts, decides with the current posterior (logging every arm's
probability at decision time), observes the outcomes, and updates the conjugate posterior
with the batch's moments (:meth:`BayesianLinearRegressionResults.update_moments`: sequential
Bayes on cumulative moments, never a refit). Its log is an adaptive-design
:class:`~causalflow.ExperimentData` (one propensity column per arm), ready for
``LinearModel`` (inverse-propensity weights), ``BayesianLinearRegression`` or
:meth:`Policy.evaluate`.

The expected regret of a decision at context x is :math:`\max_b \mu(x, b) - \mu(x, a)` with
the true mean outcomes :math:`\mu` (Lattimore and Szepesvári 2020, ch. 4 and 19); the
cumulative regret sums it over units (warm-up included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data import ExperimentData
from ..effects.render import Rendered, plain
from ..errors import ValidationError
from ..models.bayes import BayesianLinearRegression
from ..policy import Policy, Strategy
from ..validate import column_names, to_pandas

__all__ = ["BanditSimulation", "simulate_bandit"]


@dataclass(frozen=True, repr=False)
class BanditSimulation(Rendered):
    """The log and outcome of :func:`simulate_bandit`.

    Attributes
    ----------
    data : ExperimentData, the log as an adaptive design (columns ``round``, the arm column
        ``arm``, the contexts, the metric, and ``propensity[<arm>]`` for every arm)
    model : the final posterior (BayesianLinearRegressionResults, without data)
    regret : (n,) expected regret of every logged decision, in log order
    strategy : str
    rounds, batch_size, warmup : int
    metric : str, the outcome column

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> sim = cf.simulate_bandit(lambda n, rng: pd.DataFrame({"x": rng.normal(size=n)}),
    ...                          lambda ctx, arm: arm * ctx.x.to_numpy(), [0, 1], rounds=50, seed=0)
    >>> sim.to_frame().columns.tolist(), bool(np.isclose(sim.cumulative_regret[-1], sim.total_regret))
    (['arm', 'pulls', 'share', 'mean_outcome', 'regret'], True)
    """

    data: ExperimentData
    model: object
    regret: np.ndarray
    strategy: str
    rounds: int
    batch_size: int
    warmup: int
    metric: str = "y"

    _rows_key = "arms"
    _text_columns = 1

    @property
    def cumulative_regret(self) -> np.ndarray:
        """(n,) cumulative expected regret after each logged unit."""
        return np.cumsum(self.regret)

    @property
    def total_regret(self) -> float:
        return float(self.regret.sum())

    def columns(self) -> tuple:
        return ("arm", "pulls", "share", "mean_outcome", "regret")

    def to_dicts(self) -> list[dict]:
        df, metric = self.data.data, self.metric
        out = []
        for a in self.data.arms:
            played = (df["arm"] == a).to_numpy()
            out.append({"arm": plain(a), "pulls": int(played.sum()), "share": float(played.mean()),
                        "mean_outcome": float(df[metric][played].mean()) if played.any() else float("nan"),
                        "regret": float(self.regret[played].sum())})
        return out

    def _meta(self) -> dict:
        return {"strategy": self.strategy, "rounds": self.rounds, "batch_size": self.batch_size,
                "warmup": self.warmup, "total_regret": self.total_regret}

    def _display(self) -> tuple[list[str], list[list[str]]]:
        body = [[str(r["arm"]), f"{r['pulls']:,}", f"{r['share']:.3f}", f"{r['mean_outcome']:.4g}",
                 f"{r['regret']:.4g}"] for r in self.to_dicts()]
        return ["arm", "pulls", "share", "mean outcome", "regret"], body

    def _footer(self) -> list[str]:
        return [f"{self.strategy}: {len(self.regret):,} units ({self.warmup} warm-up, {self.rounds} rounds of "
                f"{self.batch_size}), cumulative expected regret {self.total_regret:.4g}"]


def simulate_bandit(contexts: Callable, mean_outcome: Callable, arms: Sequence, *, rounds: int = 1000,
                    batch_size: int = 1, noise_sd: float = 1.0, strategy: Strategy | str = Strategy.THOMPSON,
                    covariates=None, metric: str = "y", prior=None, warmup: int | None = None,
                    min_propensity: float = 1e-3, n_draws: int = 1000, top_two_beta: float = 0.5,
                    seed=0) -> BanditSimulation:
    r"""Simulate a contextual bandit run by a :class:`~causalflow.Policy`: decide -> observe -> update.

    Rounds: draw ``batch_size`` contexts; decide with the current posterior by
    :meth:`Policy.sample` (Thompson 1933 / Russo 2016 / greedy / uniform, with the propensity
    floor ``min_propensity``), logging each arm's probability at decision time; observe
    :math:`y = \mu(x, a) + \sigma\varepsilon`, :math:`\varepsilon \sim N(0, 1)`; update the
    conjugate posterior from the batch's moments (exact sequential Bayes: the posterior of all
    rows so far at the warm-up's covariate centring). The model is
    :class:`~causalflow.BayesianLinearRegression` (unweighted: by the likelihood principle
    the adaptive assignment needs no correction in the posterior) of the metric on the arms,
    the covariates and their interactions, first fitted on a uniformly randomised warm-up.

    Parameters
    ----------
    contexts : callable ``(n, rng) -> table``
        n contexts (a pandas / polars / pyarrow table of covariate columns).
    mean_outcome : callable ``(table, arm) -> array (n,)``
        The true expected outcome of an arm at each context (also gives the regret).
    arms : sequence of arm labels; the first is the control (the model's reference arm).
    rounds, batch_size : int
        Rounds after the warm-up, and units per round.
    noise_sd : float
        sigma of the Gaussian noise of the outcomes.
    strategy : Strategy or str
        ``"thompson"``, ``"top_two_thompson"``, ``"greedy"`` or ``"uniform"``.
    covariates : list of str, optional
        The model's covariates (default: every column of the contexts; ``[]``: a
        non-contextual model of the arms only).
    metric : str
        Name of the outcome column.
    prior : as :class:`~causalflow.BayesianLinearRegression` (normal priors).
    warmup : int, optional
        Units assigned uniformly (balanced) before the first fit; default 20 per arm. It must
        show every category of categorical covariates.
    min_propensity : float
        Floor on every arm's probability, > 0 so that the log is a valid adaptive design.
    n_draws : int
        Posterior draws that estimate the Thompson probabilities of each decision.
    seed : int or numpy Generator

    Returns
    -------
    BanditSimulation (``.data``: the adaptive ExperimentData; ``.regret``, ``.model``)

    References
    ----------
    Russo, D., Van Roy, B., Kazerouni, A., Osband, I. and Wen, Z. (2018). A tutorial on
    Thompson sampling. Foundations and Trends in Machine Learning 11(1), 1-96.

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> contexts = lambda n, rng: pd.DataFrame({"x": rng.normal(size=n)})
    >>> mean = lambda ctx, arm: {"a": 0.0 * ctx.x, "b": ctx.x, "c": -ctx.x}[arm].to_numpy()
    >>> sim = cf.simulate_bandit(contexts, mean, ["a", "b", "c"], rounds=300, seed=1)
    >>> sim.data.design.adaptive, len(sim.data.data)
    (True, 360)
    >>> uniform = cf.simulate_bandit(contexts, mean, ["a", "b", "c"], rounds=300, strategy="uniform", seed=1)
    >>> bool(sim.total_regret < uniform.total_regret)
    True
    """
    if not callable(contexts) or not callable(mean_outcome):
        raise ValidationError("contexts and mean_outcome: expected functions (n, rng) -> table and "
                              "(table, arm) -> array")
    arms = list(arms)
    if len(arms) < 2 or len(set(map(repr, arms))) != len(arms):
        raise ValidationError(f"arms: expected two or more distinct labels, got {arms!r}")
    for name, value, low in (("rounds", rounds, 0), ("batch_size", batch_size, 1), ("n_draws", n_draws, 10)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValidationError(f"{name}: must be an integer >= {low}, got {value!r}")
    if isinstance(noise_sd, bool) or not isinstance(noise_sd, (int, float)) or not noise_sd >= 0:
        raise ValidationError(f"noise_sd: must be a number >= 0, got {noise_sd!r}")
    try:
        strategy = Strategy(strategy)
    except ValueError:
        raise ValidationError(f"strategy: must be one of {[s.value for s in Strategy]}, got {strategy!r}") from None
    if not isinstance(min_propensity, (int, float)) or not 0 < min_propensity < 1 / len(arms):
        raise ValidationError(f"min_propensity: must be in (0, 1/{len(arms)}) so that every arm keeps a positive "
                              f"probability in the log, got {min_propensity!r}")
    A = len(arms)
    warmup = 20 * A if warmup is None else warmup
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 2 * A:
        raise ValidationError(f"warmup: must be an integer >= {2 * A} (two units per arm), got {warmup!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def observe(n):
        ctx = to_pandas(contexts(n, rng))
        if len(ctx) != n:
            raise ValidationError(f"contexts: returned {len(ctx)} rows for n = {n}")
        if not isinstance(ctx.index, pd.RangeIndex) or ctx.index.start != 0:
            ctx = ctx.reset_index(drop=True)
        means = np.column_stack([np.asarray(mean_outcome(ctx, a), dtype=float).reshape(n) for a in arms])
        return ctx, means

    ctx, means = observe(int(warmup))
    names = list(ctx.columns) if covariates is None else column_names(covariates, "covariates")
    for reserved in ("round", "arm", metric):
        if reserved in ctx.columns:
            raise ValidationError(f"contexts: the column name {reserved!r} is used by the log")
    chosen = rng.permutation(np.arange(warmup) % A)
    probs = np.full((warmup, A), 1.0 / A)
    y = means[np.arange(warmup), chosen] + noise_sd * rng.standard_normal(warmup)
    log = _Log(list(ctx.columns))
    log.add(0, ctx, chosen, y, probs)
    regret = [means.max(axis=1) - means[np.arange(warmup), chosen]]
    estimator = BayesianLinearRegression(prior, weights="none", method="conjugate")
    model = ExperimentData(log.frame(arms, metric), intent_to_treat="arm", control=arms[0]).add_metric(
        y=metric, exogenous_covariates=names or None).fit(estimator)
    order = np.array([arms.index(a) for a in model.arms])  # model's arm order -> position in ``arms``
    weights = np.ones(1)
    for r in range(1, int(rounds) + 1):
        ctx, means = observe(int(batch_size))
        raw = model.encoding.encode(ctx)
        reward = model._reward_at(raw, weights, metric, False, 0.05)
        policy = Policy(reward, strategy, top_two_beta=top_two_beta, min_propensity=min_propensity)
        index, p_model = policy.sample(rng, n_draws)  # in the model's arm order
        chosen = order[index]
        probs = np.empty_like(p_model)
        probs[:, order] = p_model
        rows = np.arange(len(chosen))
        y = means[rows, chosen] + noise_sd * rng.standard_normal(len(chosen))
        model = model.update_moments(index, raw, [y])
        log.add(r, ctx, chosen, y, probs)
        regret.append(means.max(axis=1) - means[rows, chosen])
    data = ExperimentData(log.frame(arms, metric), intent_to_treat="arm", control=arms[0],
                          propensity={a: f"propensity[{plain(a)}]" for a in arms})
    return BanditSimulation(data, model, np.concatenate(regret), strategy.value, int(rounds), int(batch_size),
                            int(warmup), metric)


class _Log:
    """Columns of the log, collected per round and joined once."""

    def __init__(self, context_columns: list):
        self.context_columns = context_columns
        self.parts: dict = {"round": [], "arm": [], "y": [], "p": [], **{c: [] for c in context_columns}}

    def add(self, r, ctx, chosen, y, probs) -> None:
        self.parts["round"].append(np.full(len(chosen), r))
        self.parts["arm"].append(chosen)
        self.parts["y"].append(y)
        self.parts["p"].append(probs)
        for c in self.context_columns:
            self.parts[c].append(ctx[c].to_numpy())

    def frame(self, arms, metric) -> pd.DataFrame:
        join = {k: np.concatenate(v) for k, v in self.parts.items()}
        out = {"round": join["round"], "arm": np.asarray(arms, dtype=object)[join["arm"]]}
        out.update({c: join[c] for c in self.context_columns})
        out[metric] = join["y"]
        out.update({f"propensity[{plain(a)}]": join["p"][:, i] for i, a in enumerate(arms)})
        return pd.DataFrame(out)


