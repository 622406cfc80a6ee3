"""``Effects``: the typed record of the effects of one ``infer_effect`` call.

One serialisation path: :meth:`Effects.to_dicts` feeds ``to_frame``, ``summary``,
``to_markdown``, ``_repr_html_`` and the JSON form ``to_dict``.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["COLUMNS", "Effects"]

COLUMNS = ("metric", "arm", "condition", "estimand", "estimate", "std_error", "ci_lower",
           "ci_upper", "p_value", "av_p_value", "av_ci_lower", "av_ci_upper", "n")


def _plain(value):
    """A JSON-ready Python scalar."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True)
class Effects:
    r"""Effects of every metric x arm x condition (x estimand) of one call, with their joint covariance.

    Attributes
    ----------
    records : tuple of dict
        Per effect: metric, arm, condition, estimand, estimate, n, dof (residual degrees of
        freedom: n - p, or clusters - 1 with clustered covariances), n_clusters.
    cov : (m, m) ndarray
        Joint covariance of the m estimates (same order as ``records``).
    alpha : float
        1 - confidence level of the intervals.
    model : the fitted model the effects come from (for projections and new conditions).
    conditions : tuple of the condition texts (None for the average effect).

    Notes
    -----
    ``p_value`` and ``ci_*`` use the normal approximation: :math:`z = \hat\tau / s`,
    :math:`p = 2(1 - \Phi(|z|))`, :math:`\hat\tau \pm z_{1-\alpha/2} s`. The ``av_*``
    columns are anytime-valid (Lindon et al. 2022; :mod:`causalflow.linalg.anytime`).

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 400)})
    >>> df["y"], df["z"] = 2.0 * df.t + rng.normal(size=400), rng.normal(size=400)
    >>> effects = cf.ExperimentData(df, intent_to_treat="t").add_metric(y=["y", "z"]).fit(
    ...     cf.LinearModel).infer_effect()
    >>> effects.to_frame()[["metric", "estimand"]].values.tolist()
    [['y', 'ATE'], ['z', 'ATE']]
    >>> effects.cov.shape, sorted(effects.to_dict())[:2]
    ((2, 2), ['alpha', 'columns'])
    """

    records: tuple
    cov: np.ndarray
    alpha: float
    model: object
    conditions: tuple

    @classmethod
    def _from_fit(cls, records, cov, alpha, model, conditions) -> Effects:
        cov = np.array(cov, dtype=float)
        cov.setflags(write=False)
        return cls(tuple(records), cov, float(alpha), model, tuple(conditions))

    # -- numbers -------------------------------------------------------------------------
    @property
    def estimate(self) -> np.ndarray:
        return np.array([r["estimate"] for r in self.records])

    @property
    def std_error(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 0.0, None))

    def __len__(self) -> int:
        return len(self.records)

    def project(self, weights) -> Effects:
        r"""Project onto a mix of conditions, or onto a target population's covariates.

        ``weights``: ``{condition: weight}`` summing to 1, over conditions this call
        inferred (or that the model can infer; ``"all"`` is the average effect): per
        metric, arm and estimand the estimate :math:`\sum_c v_c \hat\tau_c` with
        variance :math:`v'\Sigma v` from the joint covariance, which is kept across the
        projected arms and metrics. Or a table (pandas / polars / pyarrow) with the
        covariate columns: the conditional effect at that table's covariate means.
        See :mod:`causalflow.projection`.

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 500), "econ": rng.choice(["strong", "weak"], 500)})
        >>> df["y"] = df.t * (1 + (df.econ == "weak")) + rng.normal(size=500)
        >>> eff = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y="y", exogenous_covariates=["econ"]).fit(cf.LinearModel).infer_effect(
        ...     condition_on=["econ == 'strong'", "econ == 'weak'"])
        >>> proj = eff.project({"econ == 'strong'": 0.2, "econ == 'weak'": 0.8})
        >>> bool(np.isclose(proj.estimate[0], 0.2 * eff.estimate[0] + 0.8 * eff.estimate[1]))
        True
        """
        from .projection import project
        return project(self, weights)

    def relative(self, method: str = "delta", scale: str = "percent"):
        r"""Percent change of each effect against the adjusted control mean.

        :math:`\hat\tau / \hat\mu_c` with :math:`\hat\mu_c` the control mean in the same
        condition (a delta-vector contrast of the same fit), a delta-method standard error
        from their joint covariance, and a delta (``method="delta"``) or Fieller
        (``"fieller"``) interval; ``scale="fraction"`` reports 0.05 instead of 5.0.
        See :func:`causalflow.relative.relative_effects`.

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 1000), "x": rng.normal(size=1000)})
        >>> df["y"] = 20 + 2 * df.t + df.x + rng.normal(size=1000)
        >>> rel = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.LinearModel).infer_effect().relative()
        >>> round(float(rel.to_frame().estimate[0]), 1)    # true lift +10%
        10.5
        """
        from .relative import relative_effects
        return relative_effects(self, method=method, scale=scale)

    def adjust(self, method: str = "holm", *, seed=0):
        """Multiple-testing adjustment over all effects of this call.

        Adds ``p_value_adjusted`` (``"holm"``, ``"bonferroni"``, ``"bh"``, ``"by"`` or
        ``"maxt"``) and simultaneous max-t intervals ``sim_ci_lower`` / ``sim_ci_upper``
        from the joint covariance. See :mod:`causalflow.adjustment`.

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 400)})
        >>> df["a"], df["b"] = df.t + rng.normal(size=400), rng.normal(size=400)
        >>> adj = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y=["a", "b"]).fit(cf.LinearModel).infer_effect().adjust("holm")
        >>> list(adj.to_frame().columns[-3:])
        ['p_value_adjusted', 'sim_ci_lower', 'sim_ci_upper']
        """
        from .adjustment import adjust_effects
        return adjust_effects(self, method, seed=seed)

    def _anytime_columns(self) -> dict:
        """Anytime-valid p-values and confidence sequences (:mod:`causalflow.linalg.anytime`)."""
        from .linalg.anytime import contrast_anytime_valid
        nan = np.full(len(self.records), np.nan)
        cov_type = getattr(self.model, "cov_type", None)
        if cov_type is None or not self.records or "dof" not in self.records[0]:
            return {"av_p_value": nan, "av_ci_lower": nan, "av_ci_upper": nan}
        estimator = getattr(self.model, "estimator", None)
        av = contrast_anytime_valid(self.estimate, self.std_error, [r["dof"] for r in self.records],
                                    cov_type, len(self.model.names), self.alpha,
                                    g=getattr(estimator, "av_g", None),
                                    planned_n=getattr(estimator, "av_planned_n", None))
        return {"av_p_value": av.p_value, "av_ci_lower": av.ci_lower, "av_ci_upper": av.ci_upper}

    def to_dicts(self) -> list[dict]:
        """One dict per effect with every column of :data:`COLUMNS` (the one serialisation path)."""
        est, se = self.estimate, self.std_error
        z = stats.norm.ppf(1 - self.alpha / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            p_value = 2 * stats.norm.sf(np.abs(est / se))
        av = self._anytime_columns()
        out = []
        for i, r in enumerate(self.records):
            out.append({"metric": r["metric"], "arm": _plain(r["arm"]), "condition": r["condition"],
                        "estimand": r["estimand"], "estimate": est[i], "std_error": se[i],
                        "ci_lower": est[i] - z * se[i], "ci_upper": est[i] + z * se[i],
                        "p_value": p_value[i], "av_p_value": av["av_p_value"][i],
                        "av_ci_lower": av["av_ci_lower"][i], "av_ci_upper": av["av_ci_upper"][i],
                        "n": int(r["n"])})
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per metric x arm x condition (x estimand)."""
        return pd.DataFrame(self.to_dicts(), columns=list(COLUMNS))

    def to_dict(self) -> dict:
        """JSON-ready form (the form the agent tools return)."""
        return {"alpha": self.alpha,
                "columns": list(COLUMNS),
                "effects": [{k: _plain(v) for k, v in row.items()} for row in self.to_dicts()],
                "covariance": [[_plain(v) for v in row] for row in self.cov]}

    def _table(self) -> tuple[list[str], list[list[str]]]:
        header = ["metric", "arm", "condition", "estimand", "estimate", "std_error",
                  f"{1 - self.alpha:.0%} CI", "p_value", "av_p_value", "n"]
        body = []
        for r in self.to_dicts():
            body.append([str(r["metric"]), str(r["arm"]), str(r["condition"]), r["estimand"],
                         f"{r['estimate']:.4g}", f"{r['std_error']:.3g}",
                         f"[{r['ci_lower']:.4g}, {r['ci_upper']:.4g}]", f"{r['p_value']:.3g}",
                         f"{r['av_p_value']:.3g}", f"{r['n']:,}"])
        return header, body

    def to_markdown(self) -> str:
        header, body = self._table()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines)

    def summary(self) -> str:
        """A readable fixed-width table."""
        header, body = self._table()
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
        fmt = "  ".join(f"{{:<{w}}}" if i < 4 else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*header), "  ".join("-" * w for w in widths)]
        lines += [fmt.format(*row) for row in body]
        from .checks import sample_ratio_warning
        warning = sample_ratio_warning(getattr(getattr(self.model, "spec", None), "data", None))
        return "\n".join(lines + ([warning] if warning else []))

    def _repr_html_(self) -> str:
        header, body = self._table()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    def __repr__(self) -> str:
        return self.summary()
