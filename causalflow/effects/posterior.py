r"""Posterior records: effects, the ranking of arms, and the posterior reward of contexts.

They come from :class:`~causalflow.models.bayes.BayesianLinearRegressionResults` and render
through the one path of :class:`~causalflow.effects.render.Rendered`. The numbers that are
not the model's own (the ranking of arms from posterior draws) are functions of arrays here.

Ranking (Bayesian A/B testing; e.g. Scott 2015, "Multi-armed bandit experiments in the
online service economy", and the "risk" of Bayesian A/B tools): with S joint posterior
draws :math:`\theta^{(s)}_a` of every arm's value (the control's effect is 0),

.. math::

    p^{best}_a = \frac1S \sum_s 1[a = \arg\max_b \theta^{(s)}_b], \quad
    E[\mathrm{rank}_a] = \frac1S \sum_s \mathrm{rank}_a(\theta^{(s)}), \quad
    E[\mathrm{loss}_a] = \frac1S \sum_s \big(\max_b \theta^{(s)}_b - \theta^{(s)}_a\big),

the probability of being best, the expected rank (1 = best) and the expected shortfall
from the best arm if arm a is chosen. Their Monte Carlo standard errors are at most
:math:`\sqrt{p(1-p)/S}` for :math:`p^{best}`.

Examples
--------
>>> draws = np.array([[0.0, 1.0, 2.0], [0.0, 3.0, 1.0], [0.0, 2.0, 4.0], [0.0, -1.0, 0.5]])
>>> p_best, rank, loss = rank_arms(draws)
>>> p_best.tolist(), rank.tolist(), loss.tolist()
([0.0, 0.25, 0.75], [2.75, 2.0, 1.25], [2.375, 1.125, 0.5])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ValidationError
from ..linalg.conjugate import t_summary
from .render import Rendered, plain

__all__ = ["POSTERIOR_COLUMNS", "RANK_COLUMNS", "DrawComponent", "PosteriorEffects", "PosteriorReward", "Ranking",
           "TComponent", "rank_arms", "reward_weights"]

POSTERIOR_COLUMNS = ("metric", "arm", "condition", "estimand", "estimate", "std_error", "ci_lower", "ci_upper",
                     "prob_positive", "n", "dof")
RANK_COLUMNS = ("metric", "arm", "condition", "p_best", "expected_rank", "expected_loss")
REWARD_COLUMNS = ("context", "arm", "estimate", "std_error", "ci_lower", "ci_upper")


def rank_arms(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p_best, expected rank (1 = best) and expected loss of every arm from draws (S, A)."""
    draws = np.asarray(draws, dtype=float)
    S, A = draws.shape
    p_best = np.bincount(draws.argmax(axis=1), minlength=A) / S
    ranks = (-draws).argsort(axis=1, kind="stable").argsort(axis=1, kind="stable") + 1
    loss = draws.max(axis=1, keepdims=True) - draws
    return p_best, ranks.mean(axis=0), loss.mean(axis=0)


def reward_weights(reward, metrics: tuple) -> tuple[np.ndarray, str]:
    """Weights over the metrics (K,) and a label for a reward: None (the only metric), a metric
    name, or a mapping metric -> weight such as ``{"revenue": 1, "cost": -1}``.

    >>> reward_weights({"revenue": 1, "cost": -1}, ("cost", "revenue"))
    (array([-1.,  1.]), 'revenue - cost')
    """
    metrics = tuple(metrics)
    if reward is None:
        if len(metrics) != 1:
            raise ValidationError(f"reward: the model has metrics {list(metrics)}; name one, or give a mapping "
                                  "metric -> weight such as {'revenue': 1, 'cost': -1}")
        reward = metrics[0]
    if isinstance(reward, str):
        reward = {reward: 1.0}
    if not isinstance(reward, Mapping) or not reward:
        raise ValidationError(f"reward: expected a metric name or a mapping metric -> weight, got {reward!r}")
    weights = np.zeros(len(metrics))
    parts = []
    for name, value in reward.items():
        if name not in metrics:
            raise ValidationError(f"reward: {name!r} is not a metric of the model ({list(metrics)})")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not np.isfinite(value):
            raise ValidationError(f"reward: the weight of {name!r} must be a finite number, got {value!r}")
        weights[metrics.index(name)] += float(value)
        size = abs(float(value))
        term = name if size == 1 else f"{size:g}*{name}"
        parts.append(("- " if value < 0 else "+ ") + term)
    if not weights.any():
        raise ValidationError("reward: every weight is zero")
    label = " ".join(parts)
    label = label[2:] if label.startswith("+ ") else "-" + label[2:]
    return weights, label


# -- effects -------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class PosteriorEffects(Rendered):
    r"""Posterior summaries of every metric x arm x condition effect of one ``infer_effect`` call.

    The columns of :class:`~causalflow.effects.Effects` where they apply: ``estimate`` is the
    posterior mean, ``std_error`` the posterior sd, ``ci_lower`` / ``ci_upper`` the
    equal-tailed credible interval of level 1 - alpha, and ``prob_positive`` the posterior
    probability that the effect is above 0; ``estimand`` says it is a posterior
    (``"posterior ATE"``, ``"posterior CATE"``, ``"posterior ITT"``); ``dof`` is the degrees of
    freedom of the exact t posterior of the conjugate fit (None for a sampled one).

    Attributes
    ----------
    records : tuple of dict, one per effect, with every column
    alpha : float
    model : the fitted model (it draws the effects jointly for :meth:`infer_rank`)
    points : tuple of (condition label, {group index: centred covariate shift})
    method : "conjugate" or "pymc"

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 400)})
    >>> df["y"] = 0.5 * df.t + rng.normal(size=400)
    >>> eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y").fit(
    ...     cf.BayesianLinearRegression).infer_effect()
    >>> eff.to_frame()[["estimand", "prob_positive"]].round(4).values.tolist()
    [['posterior ATE', 1.0]]
    """

    records: tuple
    alpha: float
    model: object
    points: tuple
    method: str = "conjugate"

    _rows_key = "effects"

    @property
    def estimate(self) -> np.ndarray:
        return np.array([r["estimate"] for r in self.records])

    @property
    def std_error(self) -> np.ndarray:
        return np.array([r["std_error"] for r in self.records])

    def __len__(self) -> int:
        return len(self.records)

    def infer_rank(self, reward=None, *, n_draws: int = 10_000, seed=0) -> Ranking:
        r"""Rank the arms (control included) per metric x condition from joint posterior draws.

        Parameters
        ----------
        reward : None, str or mapping, optional
            None: every metric on its own; a metric name; or a mapping metric -> weight
            (``{"revenue": 1, "cost": -1}``) ranked on the joint posterior of the metrics.
        n_draws : int
            Joint posterior draws per condition (exact t draws for the conjugate fit, the
            sampler's draws resampled otherwise); the Monte Carlo sd of ``p_best`` is at
            most :math:`\sqrt{p(1-p)/S}`.
        seed : int or numpy Generator

        Returns
        -------
        Ranking, with ``p_best``, ``expected_rank`` (1 = best) and ``expected_loss`` (expected
        shortfall from the best arm, in the metric's units); see :func:`rank_arms`.

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(1)
        >>> df = pd.DataFrame({"arm": rng.choice(["a", "b", "c"], 3000)})
        >>> df["y"] = (df.arm == "c") * 0.3 + rng.normal(size=3000)
        >>> ranks = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
        ...     y="y").fit(cf.BayesianLinearRegression).infer_effect().infer_rank(seed=0)
        >>> ranks.to_frame().set_index("arm").p_best.round(2).to_dict()
        {'a': 0.0, 'b': 0.0, 'c': 1.0}
        """
        if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 10:
            raise ValidationError(f"n_draws: must be an integer >= 10, got {n_draws!r}")
        rng = np.random.default_rng(seed)
        metrics = tuple(self.model.metrics)
        targets = ([reward_weights(m, metrics) for m in metrics] if reward is None
                   else [reward_weights(reward, metrics)])
        arms = tuple(self.model.arms)
        rows = []
        for weights, label in targets:
            for condition, shifts in self.points:
                draws = self.model.effect_draws(shifts, weights, int(n_draws), rng)
                p_best, rank, loss = rank_arms(draws)
                rows += [dict(metric=label, arm=plain(arm), condition=condition, p_best=float(p_best[a]),
                              expected_rank=float(rank[a]), expected_loss=float(loss[a]))
                         for a, arm in enumerate(arms)]
        return Ranking(tuple(rows), int(n_draws))

    # -- rendering ---------------------------------------------------------------------
    def columns(self) -> tuple:
        return POSTERIOR_COLUMNS

    def to_dicts(self) -> list[dict]:
        return [{c: r[c] for c in POSTERIOR_COLUMNS} for r in self.records]

    def _meta(self) -> dict:
        return {"alpha": self.alpha, "method": self.method, "posterior": True}

    def _display(self) -> tuple[list[str], list[list[str]]]:
        header = ["metric", "arm", "condition", "estimand", "mean", "sd", f"{1 - self.alpha:.0%} CrI",
                  "P(> 0)", "n"]
        body = [[str(r["metric"]), str(plain(r["arm"])), str(r["condition"]), r["estimand"],
                 f"{r['estimate']:.4g}", f"{r['std_error']:.3g}", f"[{r['ci_lower']:.4g}, {r['ci_upper']:.4g}]",
                 f"{r['prob_positive']:.3f}", f"{r['n']:,}"] for r in self.records]
        return header, body

    def _footer(self) -> list[str]:
        how = ("exact t posterior (conjugate Normal-Inverse-Gamma)" if self.method == "conjugate"
               else "posterior draws (pymc NUTS)")
        return [f"posterior mean, sd and equal-tailed credible interval: {how}"]


@dataclass(frozen=True, repr=False)
class Ranking(Rendered):
    """Ranking of arms per metric x condition: ``p_best``, ``expected_rank``, ``expected_loss``.

    Made by :meth:`PosteriorEffects.infer_rank` (see :func:`rank_arms` for the formulas).

    Examples
    --------
    >>> r = Ranking(({"metric": "y", "arm": 0, "condition": "all", "p_best": 0.2, "expected_rank": 1.8,
    ...               "expected_loss": 0.1},), 1000)
    >>> r.to_frame().p_best.tolist()
    [0.2]
    """

    records: tuple
    n_draws: int

    _rows_key = "ranks"

    def columns(self) -> tuple:
        return RANK_COLUMNS

    def to_dicts(self) -> list[dict]:
        return [dict(r) for r in self.records]

    def _meta(self) -> dict:
        return {"n_draws": self.n_draws}

    def _display(self) -> tuple[list[str], list[list[str]]]:
        header = ["metric", "arm", "condition", "P(best)", "E[rank]", "E[loss]"]
        body = [[str(r["metric"]), str(r["arm"]), str(r["condition"]), f"{r['p_best']:.3f}",
                 f"{r['expected_rank']:.2f}", f"{r['expected_loss']:.4g}"] for r in self.records]
        return header, body

    def _footer(self) -> list[str]:
        return [f"from {self.n_draws:,} joint posterior draws per condition; E[loss] is the expected "
                "shortfall from the best arm"]

    _text_columns = 3


# -- the posterior reward of contexts --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TComponent:
    """A multivariate t posterior of the arms' rewards of m contexts.

    Attributes
    ----------
    loc : (m, A) locations; root : (m, A, A) lower Cholesky roots of the scale matrices;
    dof : degrees of freedom
    """

    loc: np.ndarray
    root: np.ndarray
    dof: float

    def draw(self, rng: np.random.Generator, rows: np.ndarray | None = None) -> np.ndarray:
        loc, root = (self.loc, self.root) if rows is None else (self.loc[rows], self.root[rows])
        m, A = loc.shape
        z = rng.standard_normal((m, A))
        g = rng.chisquare(self.dof, m)
        return loc + np.einsum("mab,mb->ma", root, z) / np.sqrt(g / self.dof)[:, None]

    def draws(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """(size, m, A) independent draws."""
        m, A = self.loc.shape
        z = rng.standard_normal((size, m, A))
        g = rng.chisquare(self.dof, (size, m))
        return self.loc + np.einsum("mab,smb->sma", self.root, z) / np.sqrt(g / self.dof)[..., None]


@dataclass(frozen=True, slots=True)
class DrawComponent:
    """Posterior draws of the arms' rewards: rows (m, A, p) of the design at each context and
    arm, and coefficient draws beta (S, p) of the reward (B c)."""

    rows: np.ndarray
    beta: np.ndarray

    @property
    def loc(self) -> np.ndarray:
        return self.rows @ self.beta.mean(axis=0)

    def draw(self, rng: np.random.Generator, rows: np.ndarray | None = None) -> np.ndarray:
        design = self.rows if rows is None else self.rows[rows]
        pick = rng.integers(len(self.beta), size=design.shape[0])
        return np.einsum("map,mp->ma", design, self.beta[pick])

    def draws(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """(size, m, A) independent draws (resampled)."""
        pick = rng.integers(len(self.beta), size=(size, self.rows.shape[0]))
        return np.einsum("map,smp->sma", self.rows, self.beta[pick])


@dataclass(frozen=True, repr=False)
class PosteriorReward(Rendered):
    r"""The posterior of every arm's expected reward at one or more contexts.

    For a context x the reward of arm a is :math:`r_a(x) = x_a' B c`, with :math:`x_a =
    [1, e_a, x - \mu, e_a \otimes (x - \mu)]` the design row of the arm (Lin 2013 layout)
    and c the weights of the metrics in the reward. With a conjugate fit the arms' rewards
    of one context are jointly multivariate t (:mod:`causalflow.linalg.conjugate`); metrics
    fitted on different rows (missingness groups) add independent components.

    :meth:`draw` gives one joint posterior draw per context: the draw a Thompson sampler
    maximises (Thompson 1933; Russo et al. 2018). :class:`causalflow.Policy` decides with it.

    Attributes
    ----------
    arms : tuple of arm labels (control first)
    label : str, the reward (a metric, or e.g. ``"revenue - cost"``)
    components : tuple of TComponent / DrawComponent
    weights : (K,) weights of the model's metrics
    single : bool, one context (a ContextVector) rather than a table
    model : the fitted model
    alpha : float, 1 - level of the credible intervals
    index : tuple of the contexts' labels (a table's index)

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 500), "x": rng.normal(size=500)})
    >>> df["y"] = df.t * df.x + rng.normal(size=500)
    >>> model = cf.ExperimentData(df, intent_to_treat="t").add_metric(
    ...     y="y", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression)
    >>> reward = model.infer_reward(cf.ContextVector(x=2.0))
    >>> reward.mean.round(1).tolist()      # arms 0 and 1 at x = 2 (true: 0 and 2)
    [[-0.1, 1.9]]
    """

    arms: tuple
    label: str
    components: tuple
    weights: np.ndarray
    single: bool
    model: object
    alpha: float = 0.05
    index: tuple = ()

    _rows_key = "rewards"

    @property
    def n_contexts(self) -> int:
        return self.components[0].loc.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """(m, A) posterior mean reward of every arm at every context."""
        return sum(c.loc for c in self.components)

    def draw(self, rng: np.random.Generator, rows: np.ndarray | None = None) -> np.ndarray:
        """(m, A): one joint posterior draw of the arms' rewards per context (independent across
        contexts); with ``rows``, of those contexts only."""
        out = self.components[0].draw(rng, rows)
        for c in self.components[1:]:
            out = out + c.draw(rng, rows)
        return out

    def draws(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """(size, m, A): ``size`` independent joint draws per context."""
        out = self.components[0].draws(rng, size)
        for c in self.components[1:]:
            out = out + c.draws(rng, size)
        return out

    def summary_arrays(self, n_draws: int = 4000, seed=0) -> dict:
        """Posterior mean, sd and credible interval (m, A) of every reward: exact for one t
        component, else from ``n_draws`` joint draws (seeded)."""
        if len(self.components) == 1 and isinstance(self.components[0], TComponent):
            c = self.components[0]
            scale = np.sqrt(np.einsum("mab,mab->ma", c.root, c.root))
            out = t_summary(c.loc, scale, c.dof, self.alpha)
            out["estimate"] = c.loc
            return out
        m, A = self.mean.shape
        n_draws = int(min(n_draws, max(200, 20_000_000 // (m * A))))  # bounded memory for large tables
        draws = self.draws(np.random.default_rng(seed), n_draws)
        lower, upper = np.quantile(draws, [self.alpha / 2, 1 - self.alpha / 2], axis=0)
        return {"estimate": self.mean, "std_error": draws.std(axis=0, ddof=1), "ci_lower": lower, "ci_upper": upper}

    def columns(self) -> tuple:
        return REWARD_COLUMNS

    def to_dicts(self) -> list[dict]:
        s = self.summary_arrays()
        index = self.index or tuple(range(self.n_contexts))
        return [{"context": plain(index[i]), "arm": plain(arm), "estimate": float(s["estimate"][i, a]),
                 "std_error": float(s["std_error"][i, a]), "ci_lower": float(s["ci_lower"][i, a]),
                 "ci_upper": float(s["ci_upper"][i, a])}
                for i in range(self.n_contexts) for a, arm in enumerate(self.arms)]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.to_dicts(), columns=list(self.columns()))

    def _meta(self) -> dict:
        return {"reward": self.label, "alpha": self.alpha}

    def _display(self) -> tuple[list[str], list[list[str]]]:
        header = ["context", "arm", "mean", "sd", f"{1 - self.alpha:.0%} CrI"]
        body = [[str(r["context"]), str(r["arm"]), f"{r['estimate']:.4g}", f"{r['std_error']:.3g}",
                 f"[{r['ci_lower']:.4g}, {r['ci_upper']:.4g}]"] for r in self.to_dicts()[:200]]
        return header, body

    def _footer(self) -> list[str]:
        rows = self.n_contexts * len(self.arms)
        more = f" (first 200 of {rows} rows)" if rows > 200 else ""
        return [f"posterior reward {self.label!r} of every arm{more}"]

    _text_columns = 2
