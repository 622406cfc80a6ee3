r"""Decisions from posterior rewards, and the value of a policy before it ships.

A contextual bandit (Li, Chu, Langford and Schapire 2010) sees a unit's context x, picks an
arm a and observes a reward. :class:`Policy` decides from the posterior of every arm's
expected reward :math:`r_a(x)` (:meth:`BayesianLinearRegressionResults.infer_reward`):

* **Thompson sampling** (Thompson 1933; Russo, Van Roy, Kazerouni, Osband and Wen 2018):
  draw :math:`\tilde r \sim p(r(x) \mid data)` and play :math:`\arg\max_a \tilde r_a`, so arm a
  is played with its posterior probability of being best, :math:`\pi_a(x) = P(a = \arg\max_b
  r_b(x) \mid data)`.
* **top-two Thompson sampling** (Russo 2016): draw a leader :math:`I` as above; with
  probability :math:`\beta` play it, else redraw until the argmax :math:`J \ne I` and play the
  challenger J. Arm a is played with :math:`\beta\pi_a + (1-\beta)\pi_a \sum_{i \ne a}
  \pi_i/(1-\pi_i)`; it spends more on the arms that could still be best (best-arm
  identification).
* **greedy**: the arm of the highest posterior mean (no exploration).
* **uniform**: every arm with probability 1/A (an A/B test's allocation).

A propensity floor ``min_propensity`` = f mixes in uniform exploration,
:math:`\pi \leftarrow f + (1 - Af)\pi`, so that every arm keeps a positive probability: logs
stay valid adaptive designs and off-policy estimates keep their overlap.

:meth:`Policy.evaluate` estimates the policy's value from logged data with inverse
propensity (IPS) and doubly robust (DR) estimates (Dudík, Langford and Li 2011;
:mod:`causalflow.linalg.ope`), beside always playing each arm and the logging policy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
import pandas as pd
from scipy import stats

from .effects.posterior import PosteriorReward, TComponent
from .effects.render import Rendered, plain
from .errors import DesignWarning, ValidationError
from .linalg.ope import mean_se, policy_terms
from .validate import check_alpha

__all__ = ["ContextVector", "Policy", "PolicyValue", "Strategy"]


class Strategy(str, Enum):
    """How a :class:`Policy` turns posterior rewards into decisions (see the module notes).

    Examples
    --------
    >>> Strategy("top_two_thompson") is Strategy.TOP_TWO_THOMPSON
    True
    >>> [s.value for s in Strategy]
    ['thompson', 'top_two_thompson', 'greedy', 'uniform']
    """

    THOMPSON = "thompson"
    TOP_TWO_THOMPSON = "top_two_thompson"
    GREEDY = "greedy"
    UNIFORM = "uniform"


class ContextVector(Mapping):
    r"""The context x of one unit: covariate name -> value, for a decision.

    A contextual policy maps x to an arm (Li et al. 2010; Russo et al. 2018, section 7.2);
    the model turns x into its design row :math:`[1, e_a, x - \mu, e_a \otimes (x - \mu)]` per
    arm a (:meth:`BayesianLinearRegressionResults.infer_reward`). Values are numbers, text
    or booleans; a value that is missing (None, NaN) is a ValidationError here, a missing
    or unknown covariate when the model reads it.

    Examples
    --------
    >>> import causalflow as cf
    >>> ctx = cf.ContextVector(device="desktop", pre_sales=12.0)
    >>> dict(ctx), len(ctx)
    ({'device': 'desktop', 'pre_sales': 12.0}, 2)
    >>> cf.ContextVector(pre_sales=float("nan"))
    Traceback (most recent call last):
    ...
    causalflow.errors.ValidationError: ContextVector: 'pre_sales' is missing (nan)
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping | None = None, /, **kwargs):
        merged = dict(values or {}, **kwargs)
        for name, value in merged.items():
            if not isinstance(name, str):
                raise ValidationError(f"ContextVector: covariate names must be text, got {name!r}")
            if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
                raise ValidationError(f"ContextVector: {name!r} is missing ({value!r})")
            if not isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_, np.str_)):
                raise ValidationError(f"ContextVector: {name!r} must be a number, text or a boolean, "
                                      f"got {type(value).__name__}")
        self._values = merged

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "ContextVector(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


def _check_rng(rng) -> np.random.Generator:
    if type(rng) is not np.random.Generator and not isinstance(rng, np.random.Generator):
        raise ValidationError(f"rng: expected a numpy Generator (np.random.default_rng(seed)), got {rng!r}")
    return rng


def _check_draws(n_draws) -> int:
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 10:
        raise ValidationError(f"n_draws: must be an integer >= 10, got {n_draws!r}")
    return int(n_draws)


class Policy:
    r"""A decision rule over the arms from a posterior reward: Thompson sampling and friends.

    Parameters
    ----------
    reward : PosteriorReward
        From :meth:`BayesianLinearRegressionResults.infer_reward`, for one context (a
        ContextVector) or a table of contexts.
    strategy : Strategy or str
        ``"thompson"`` (default; Thompson 1933, Russo et al. 2018), ``"top_two_thompson"``
        (Russo 2016), ``"greedy"`` or ``"uniform"``; see :mod:`causalflow.policy`.
    top_two_beta : float
        beta of top-two Thompson sampling: the probability of playing the leader.
    min_propensity : float
        A floor f on every arm's probability (uniform exploration mixed in), 0 <= f < 1/A.

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"arm": rng.choice(["a", "b", "c"], 3000), "x": rng.normal(size=3000)})
    >>> df["y"] = np.where(df.arm == "b", df.x, 0.0) + np.where(df.arm == "c", -df.x, 0.0) + rng.normal(size=3000)
    >>> bmodel = cf.ExperimentData(df, intent_to_treat="arm", control="a").add_metric(
    ...     y="y", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression)
    >>> policy = cf.Policy(bmodel.infer_reward(cf.ContextVector(x=2.0)))
    >>> policy.decide(rng=np.random.default_rng(0))
    'b'
    >>> table = pd.DataFrame({"x": [-2.0, 0.01, 2.0]})
    >>> cf.Policy(bmodel.infer_reward(table), "greedy").decide(np.random.default_rng(0)).tolist()
    ['c', 'b', 'b']
    """

    def __init__(self, reward: PosteriorReward, strategy: Strategy | str = Strategy.THOMPSON, *,
                 top_two_beta: float = 0.5, min_propensity: float = 0.0):
        if not isinstance(reward, PosteriorReward):
            raise ValidationError(f"reward: expected a PosteriorReward (model.infer_reward(...)), got "
                                  f"{type(reward).__name__}")
        try:
            strategy = Strategy(strategy)
        except ValueError:
            raise ValidationError(f"strategy: must be one of {[s.value for s in Strategy]}, got {strategy!r}") from None
        if isinstance(top_two_beta, bool) or not isinstance(top_two_beta, (int, float, np.floating)) \
                or not 0 < top_two_beta < 1:
            raise ValidationError(f"top_two_beta: must be a number in (0, 1), got {top_two_beta!r}")
        A = len(reward.arms)
        if isinstance(min_propensity, bool) or not isinstance(min_propensity, (int, float, np.floating)) \
                or not 0 <= min_propensity < 1 / A:
            raise ValidationError(f"min_propensity: must be a number in [0, 1/{A}), got {min_propensity!r}")
        self.reward = reward
        self.strategy = strategy
        self.top_two_beta = float(top_two_beta)
        self.min_propensity = float(min_propensity)
        self._arms = np.asarray(reward.arms, dtype=object)
        self._fast = None
        c = reward.components
        if (reward.single and len(c) == 1 and isinstance(c[0], TComponent) and strategy is Strategy.THOMPSON
                and not min_propensity):
            self._fast = (c[0].loc[0].copy(), c[0].root[0].copy(), float(c[0].dof))

    def __repr__(self) -> str:
        return (f"Policy({self.strategy.value}, {self.reward.n_contexts} context(s), reward {self.reward.label!r}"
                + (f", min_propensity={self.min_propensity:g}" if self.min_propensity else "") + ")")

    @property
    def arms(self) -> tuple:
        return self.reward.arms

    def at(self, contexts) -> Policy:
        """The same policy (model, reward, strategy) at other contexts (a ContextVector or a table)."""
        model = self.reward.model
        mapping = {m: float(w) for m, w in zip(model.metrics, self.reward.weights) if w}
        reward = model.infer_reward(contexts, reward=mapping, alpha=self.reward.alpha)
        return Policy(reward, self.strategy, top_two_beta=self.top_two_beta, min_propensity=self.min_propensity)

    # -- decisions -----------------------------------------------------------------------
    def decide(self, rng: np.random.Generator):
        """One decision per context: an arm label for a ContextVector, an array of labels for a
        table (one per row). Randomness comes only from ``rng``."""
        if self._fast is not None:
            return self.reward.arms[self._thompson_one(_check_rng(rng))]
        index = self.decide_index(rng)
        return self._arms[index[0]] if self.reward.single else self._arms[index]

    def _thompson_one(self, rng: np.random.Generator) -> int:
        """Thompson sampling at one context with one t posterior: one draw, no bookkeeping."""
        loc, root, dof = self._fast
        theta = loc + root @ rng.standard_normal(len(loc)) * math.sqrt(dof / rng.chisquare(dof))
        return int(theta.argmax())

    def decide_index(self, rng: np.random.Generator) -> np.ndarray:
        """(m,) indices into :attr:`arms` of one decision per context."""
        _check_rng(rng)
        if self._fast is not None:
            return np.array([self._thompson_one(rng)])
        m, A = self.reward.n_contexts, len(self.arms)
        if self.strategy is Strategy.GREEDY:
            out = self.reward.mean.argmax(axis=1)
        elif self.strategy is Strategy.UNIFORM:
            out = rng.integers(A, size=m)
        else:
            leader = self.reward.draw(rng).argmax(axis=1)
            out = leader
            if self.strategy is Strategy.TOP_TWO_THOMPSON:
                out = leader.copy()
                todo = np.flatnonzero(rng.random(m) >= self.top_two_beta)
                last = None
                for _ in range(100):  # redraw until the argmax differs from the leader
                    if not len(todo):
                        break
                    theta = self.reward.draw(rng, todo)
                    best = theta.argmax(axis=1)
                    found = best != leader[todo]
                    out[todo[found]] = best[found]
                    todo, last = todo[~found], theta[~found]
                if len(todo):  # the leader is (almost) surely best: the runner-up of the last draw
                    last[np.arange(len(todo)), leader[todo]] = -np.inf
                    out[todo] = last.argmax(axis=1)
        if self.min_propensity:
            explore = rng.random(m) < A * self.min_propensity
            out = np.where(explore, rng.integers(A, size=m), out)
        return np.asarray(out)

    def probabilities(self, rng: np.random.Generator | None = None, n_draws: int = 2000) -> np.ndarray:
        r"""(m, A): the probability that the policy plays each arm at each context.

        Thompson: :math:`\pi_a(x)` estimated from ``n_draws`` joint posterior draws (Monte
        Carlo sd at most :math:`\sqrt{\pi(1-\pi)/n_{draws}}`); top-two: the formula of the
        module notes on those estimates (a leader with :math:`\pi = 1` passes its challenger
        share uniformly to the other arms); greedy: 1 on the arm of the highest posterior
        mean (the first on ties); uniform: 1/A; then the propensity floor.

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 400)})
        >>> df["y"] = 0.05 * df.t + rng.normal(size=400)
        >>> reward = cf.ExperimentData(df, intent_to_treat="t").add_metric(y="y").fit(
        ...     cf.BayesianLinearRegression).infer_reward(cf.ContextVector())
        >>> cf.Policy(reward).probabilities(np.random.default_rng(1)).round(2).tolist()
        [[0.06, 0.94]]
        >>> cf.Policy(reward, "greedy", min_propensity=0.1).probabilities().tolist()
        [[0.1, 0.9]]
        """
        m, A = self.reward.n_contexts, len(self.arms)
        if self.strategy is Strategy.GREEDY:
            probs = np.zeros((m, A))
            probs[np.arange(m), self.reward.mean.argmax(axis=1)] = 1.0
        elif self.strategy is Strategy.UNIFORM:
            probs = np.full((m, A), 1.0 / A)
        else:
            rng = np.random.default_rng(0) if rng is None else _check_rng(rng)
            n_draws = _check_draws(n_draws)
            counts = np.zeros((m, A))
            chunk = max(1, min(n_draws, 4_000_000 // max(1, m * A)))
            done = 0
            while done < n_draws:
                size = min(chunk, n_draws - done)
                best = self.reward.draws(rng, size).argmax(axis=2)  # (size, m)
                for a in range(A):
                    counts[:, a] += (best == a).sum(axis=0)
                done += size
            probs = counts / n_draws
            if self.strategy is Strategy.TOP_TWO_THOMPSON:
                probs = _top_two(probs, self.top_two_beta)
        if self.min_propensity:
            probs = self.min_propensity + (1 - A * self.min_propensity) * probs
        return probs

    def sample(self, rng: np.random.Generator, n_draws: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Decisions drawn from :meth:`probabilities` (estimated with ``n_draws``), with those
        probabilities: (indices (m,), probabilities (m, A)). The logged probability of every
        decision is then exactly the one it was drawn with (what off-policy evaluation and an
        adaptive-design fit need), at the cost of Monte Carlo error in the Thompson
        probabilities themselves."""
        _check_rng(rng)
        probs = self.probabilities(rng, n_draws)
        u = rng.random(len(probs))
        index = (np.cumsum(probs, axis=1) < u[:, None]).sum(axis=1)
        return np.minimum(index, probs.shape[1] - 1), probs

    # -- off-policy value ------------------------------------------------------------------
    def evaluate(self, data, *, alpha: float = 0.05, n_draws: int = 2000, seed=0, reward_model=None) -> PolicyValue:
        r"""Value of this policy from logged data, before it ships (off-policy evaluation).

        From an experiment's or a bandit's log (an ExperimentData with the model's arms,
        metrics and covariates): the IPS and DR estimates of the mean reward had this
        policy decided every logged unit (Dudík, Langford and Li 2011;
        :mod:`causalflow.linalg.ope`), beside always playing each arm and the logging
        policy's observed mean, with standard errors, normal intervals and the difference
        to the logging policy (paired over rows).

        Propensities: an adaptive design's (1 / the row's weight); otherwise the planned
        allocation (``propensity=`` numbers) or, lacking it, the observed arm shares (a
        completely randomised experiment). The policy's own probabilities are those of
        :meth:`probabilities` at every logged context (``n_draws``, ``seed``). The DR reward
        model :math:`\hat q` is the posterior mean reward of a conjugate
        :class:`BayesianLinearRegression` (unweighted, default priors) of the same metrics
        and covariates fitted on ``data``, or ``reward_model`` (a fitted Bayesian model).
        Standard errors are cluster-robust when the data have ``cluster_by``. The rows of an
        adaptive log are not independent; the standard errors treat them as such.

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> def log(n):
        ...     d = pd.DataFrame({"arm": rng.choice(["a", "b"], n), "x": rng.normal(size=n)})
        ...     return d.assign(y=np.where(d.arm == "b", d.x, 0.0) + rng.normal(size=n))
        >>> bmodel = cf.ExperimentData(log(2000), intent_to_treat="arm").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.BayesianLinearRegression)
        >>> policy = cf.Policy(bmodel.infer_reward(cf.ContextVector(x=0.0)), "greedy")
        >>> value = policy.evaluate(cf.ExperimentData(log(4000), intent_to_treat="arm"))
        >>> frame = value.to_frame()       # true values: policy E[max(x, 0)] = 0.40, each arm and logging 0
        >>> frame[frame.policy == "policy"].value.round(1).tolist()
        [0.4, 0.4]
        >>> frame.policy.unique().tolist()
        ['policy', 'always a', 'always b', 'logging']
        """
        alpha = check_alpha(alpha)
        model = self.reward.model
        arms = tuple(self.arms)
        if set(map(_key, data.arms)) != set(map(_key, arms)):
            raise ValidationError(f"data: its arms {list(data.arms)} are not the policy's {list(arms)}")
        position = {_key(a): i for i, a in enumerate(arms)}
        to_model = np.array([position[_key(a)] for a in data.arms])
        logged = to_model[data.instrument_codes]
        df = data.data
        for name in model.metrics:
            if self.reward.weights[model.metrics.index(name)] and name not in df.columns:
                raise ValidationError(f"data: metric column {name!r} is not in the data")
        used = [m for m, w in zip(model.metrics, self.reward.weights) if w]
        values = np.column_stack([df[m].to_numpy(dtype=float, na_value=np.nan) for m in used])
        if not np.isfinite(values).all():
            raise ValidationError(f"data: the reward's metrics {used} have missing or infinite values")
        weights = np.array([w for w in self.reward.weights if w])
        y = values @ weights
        if data.weights is not None:
            propensity = 1.0 / data.weights
        else:
            shares = data.expected_allocation or data.design.allocation
            propensity = np.array([shares[a] for a in data.arms])[data.instrument_codes]
        target = self.at(df).probabilities(np.random.default_rng(seed), n_draws)
        if reward_model is None:
            from .models.bayes import BayesianLinearRegression
            cov = getattr(model, "covariates", None)
            covariates = cov.formula if (cov is not None and cov.formula is not None) else list(model.encoding.sources)
            with warnings.catch_warnings():  # only q's posterior mean is used: clusters do not matter
                warnings.simplefilter("ignore", DesignWarning)
                reward_model = data.add_metric(y=used, exogenous_covariates=covariates or None).fit(
                    BayesianLinearRegression(weights="none"))
        mapping = {m: float(w) for m, w in zip(used, weights)}
        q_all = reward_model.infer_reward(df, reward=mapping).mean
        q_pos = {_key(a): i for i, a in enumerate(reward_model.arms)}
        q = q_all[:, [q_pos[_key(a)] for a in arms]]
        clusters = data.cluster_codes
        n, A = len(y), len(arms)
        crit = stats.norm.isf(alpha / 2)
        rows = []

        def add(name, estimator, terms):
            value, se = mean_se(terms, clusters)
            diff, diff_se = mean_se(terms - y, clusters)
            rows.append(dict(policy=name, estimator=estimator, value=value, std_error=se,
                             ci_lower=value - crit * se, ci_upper=value + crit * se, vs_logging=diff,
                             vs_logging_std_error=diff_se, n=n))

        ips, dr = policy_terms(y, logged, propensity, target, q)
        add("policy", "IPS", ips)
        add("policy", "DR", dr)
        for a, arm in enumerate(arms):
            one = np.zeros((n, A))
            one[:, a] = 1.0
            ips_a, dr_a = policy_terms(y, logged, propensity, one, q)
            add(f"always {plain(arm)}", "IPS", ips_a)
            add(f"always {plain(arm)}", "DR", dr_a)
        add("logging", "observed", y)
        return PolicyValue(tuple(rows), alpha, self.strategy.value, self.reward.label)


def _key(label):
    """A hashable key under which equal labels of different types (1, 1.0, np.int64(1)) meet."""
    return plain(label)


def _top_two(probs: np.ndarray, beta: float) -> np.ndarray:
    """Top-two Thompson probabilities from Thompson's pi (m, A) (module notes)."""
    A = probs.shape[1]
    rest = 1.0 - probs
    with np.errstate(divide="ignore", invalid="ignore"):
        # challenger distribution given leader i: pi_a / (1 - pi_i) over a != i; uniform when pi_i = 1
        cond = np.where(rest[:, :, None] > 1e-12, probs[:, None, :] / rest[:, :, None], 1.0 / (A - 1))
    idx = np.arange(A)
    cond[:, idx, idx] = 0.0
    challenger = np.einsum("mi,mia->ma", probs, cond)
    return beta * probs + (1 - beta) * challenger


@dataclass(frozen=True, repr=False)
class PolicyValue(Rendered):
    """Off-policy values of a policy, of always playing each arm, and of the logging policy.

    Columns: ``policy`` (``"policy"``, ``"always <arm>"``, ``"logging"``), ``estimator``
    (``"IPS"``, ``"DR"``, ``"observed"``), ``value``, ``std_error``, normal ``ci_lower`` /
    ``ci_upper``, ``vs_logging`` (value minus the logging policy's, paired over rows) and its
    ``vs_logging_std_error``, ``n``. See :meth:`Policy.evaluate`.

    Examples
    --------
    >>> v = PolicyValue(({"policy": "logging", "estimator": "observed", "value": 1.0, "std_error": 0.1,
    ...                   "ci_lower": 0.8, "ci_upper": 1.2, "vs_logging": 0.0, "vs_logging_std_error": 0.0,
    ...                   "n": 10},), 0.05, "thompson", "y")
    >>> v.to_frame().value.tolist()
    [1.0]
    """

    records: tuple
    alpha: float
    strategy: str
    reward: str

    _rows_key = "values"
    _text_columns = 2

    def columns(self) -> tuple:
        return ("policy", "estimator", "value", "std_error", "ci_lower", "ci_upper", "vs_logging",
                "vs_logging_std_error", "n")

    def to_dicts(self) -> list[dict]:
        return [dict(r) for r in self.records]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.to_dicts(), columns=list(self.columns()))

    def _meta(self) -> dict:
        return {"alpha": self.alpha, "strategy": self.strategy, "reward": self.reward}

    def _display(self) -> tuple[list[str], list[list[str]]]:
        header = ["policy", "estimator", "value", "std_error", f"{1 - self.alpha:.0%} CI", "vs logging", "n"]
        body = [[r["policy"], r["estimator"], f"{r['value']:.4g}", f"{r['std_error']:.3g}",
                 f"[{r['ci_lower']:.4g}, {r['ci_upper']:.4g}]",
                 f"{r['vs_logging']:+.4g} ({r['vs_logging_std_error']:.3g})", f"{r['n']:,}"] for r in self.records]
        return header, body

    def _footer(self) -> list[str]:
        return [f"off-policy value of the {self.strategy} policy on reward {self.reward!r}: IPS and doubly robust "
                "(Dudik, Langford and Li 2011); 'observed' is the logging policy's mean reward"]
