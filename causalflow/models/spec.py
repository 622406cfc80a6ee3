"""``MetricSpec``: metrics and covariates of an experiment, ready to fit (an immutable builder)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..design import Covariates, DesignSource, role_column
from ..errors import ValidationError
from ..linalg.threads import single_blas_thread
from ..validate import column_names, float_values, metric_values

__all__ = ["MetricSpec"]

@dataclass(frozen=True, slots=True)
class MetricSpec:
    """The metrics (outcomes) and pre-treatment covariates of one analysis.

    Made by :meth:`ExperimentData.add_metric`; :meth:`fit` turns it into a fitted model.

    Attributes
    ----------
    data : ExperimentData
    metrics : tuple of str
    covariates : Covariates
    """

    data: object
    metrics: tuple
    covariates: Covariates

    @classmethod
    def build(cls, data, y, covariates) -> MetricSpec:
        """``covariates``: a list of column names, or one string: a column name if the data has
        a column of that name, else a formulaic right-hand side (:meth:`Covariates.from_formula`)."""
        df = data.data
        metrics = column_names(y, "y")
        if not metrics:
            raise ValidationError("y: name at least one metric column")
        roles = data.column_roles
        for name in metrics:
            role_column(df, name, "y", roles, "a metric")
            metric_values(df[name], name, "y")
        if len(set(metrics)) != len(metrics):
            raise ValidationError(f"y: a metric is listed twice in {metrics}")
        roles.update({m: "metric" for m in metrics})
        if isinstance(covariates, str) and covariates not in df.columns:
            # one string that is not a column name: a formulaic right-hand side (a name wins)
            cov = Covariates.from_formula(df, covariates, roles)
        else:
            cov = Covariates.from_frame(df, column_names(covariates, "exogenous_covariates"), roles)
        n, p = len(data.arm_codes), (1 + data.n_arms) * (1 + cov.q)
        if p >= n:
            levels = sorted(((len(lv), name) for name, _, lv in cov.categorical), reverse=True)[:3]
            raise ValidationError(
                f"exogenous_covariates: {cov.q} design columns interacted with {data.n_arms + 1} arms give "
                f"{p} parameters for {n} rows" + (" (levels: " + ", ".join(f"{name!r} {k}" for k, name in levels)
                                                   + "; an identifier is not a covariate)" if levels else ""))
        spec = cls(data, tuple(metrics), cov)
        spec._check_covariates()
        return spec

    def _check_covariates(self) -> None:
        """Collinear covariates are named before any fitting (constant ones by ``Covariates``)."""
        q = self.covariates.q
        if q < 2:
            return
        if self.data.engine is not None:
            centred_gram = self.data.engine.covariate_gram(self.covariates)
        else:
            n = len(self.data.arm_codes)
            mu = self.covariates.means(None, None)
            centred_gram = np.zeros((q, q))
            size = max(256, (1 << 21) // q)  # about 2**21 values per block
            buffer = np.empty((q, min(size, n))).T
            with single_blas_thread():
                for start in range(0, n, size):
                    block = self.covariates.raw(slice(start, min(start + size, n)),
                                                out=buffer[:min(size, n - start)])
                    block -= mu
                    centred_gram += block.T @ block
        names = list(self.covariates.names)
        bad = _dependent(centred_gram, names, only_if_singular=True)
        if bad:
            raise ValidationError(f"exogenous_covariates: covariates are collinear: column(s) {bad} "
                                  "are linearly dependent after centring; drop one of them")

    def _check_within_arms(self) -> None:
        """Name covariates that are constant or collinear within an arm (run when a fit is singular).

        Lin's design [1, A, Xc, A x Xc] has full rank exactly when, within every arm of the
        assignment (instrument), the covariates vary and are not collinear: it spans the same
        columns as arm-specific intercepts and slopes. One pass accumulates, per arm, the
        cross-products of the covariates centred at their overall mean; the within-arm Gram
        matrices follow by subtracting each arm's mean deviation. It costs a pass over the
        covariates, so it runs only to explain a singular fit.
        """
        q = self.covariates.q
        if q == 0:
            return
        arms = self.data.arms
        if self.data.engine is not None:
            count, sums, cross = self.data.engine.within_arm_sums(self.covariates)
        else:
            codes = self.data.instrument_codes
            n = len(codes)
            mu = self.covariates.means(None, None)
            count = np.zeros(len(arms))
            sums = np.zeros((len(arms), q))
            cross = np.zeros((len(arms), q, q))
            size = max(256, (1 << 21) // q)
            for start in range(0, n, size):
                rows = slice(start, min(start + size, n))
                block, block_codes = self.covariates.raw(rows) - mu, codes[rows]
                for j in range(len(arms)):
                    part = block[block_codes == j]
                    count[j] += len(part)
                    sums[j] += part.sum(axis=0)
                    cross[j] += part.T @ part
        names = list(self.covariates.names)
        for j, arm in enumerate(arms):
            if count[j] == 0:
                continue  # an instrument that never takes an arm is refused by ExperimentData
            within = cross[j] - np.outer(sums[j], sums[j]) / count[j]
            # constant within the arm, up to rounding of the subtraction above
            constant = np.diag(within) <= 1e-12 * np.diag(cross[j])
            if constant.any():
                raise ValidationError(
                    f"exogenous_covariates: column(s) {[names[i] for i in np.flatnonzero(constant)]} are "
                    f"constant among the rows of arm {arm!r} of {self.data.intent_to_treat!r}; covariates "
                    "are interacted with the arms (Lin 2013), so each must vary within every arm")
            bad = _dependent(within, names, only_if_singular=True) if q > 1 else []
            if bad:
                raise ValidationError(
                    f"exogenous_covariates: column(s) {bad} are collinear among the rows of arm {arm!r} "
                    f"of {self.data.intent_to_treat!r}; covariates are interacted with the arms (Lin 2013), "
                    "so they must not be linearly dependent within any arm")

    def engine_results(self, covariance, estimator):
        """Fit on an engine table: the linear model's passes run in the engine
        (:class:`causalflow.models.warehouse.EngineModelResults`)."""
        from .warehouse import EngineModelResults
        return EngineModelResults._fit(self, covariance, estimator)

    def source(self) -> DesignSource:
        if self.data.engine is not None:
            raise ValidationError("fit: this estimator reads the rows in memory; on an engine table (parquet, "
                                  "DuckDB, Ibis, Spark) fit cf.LinearModel, or load the table into pandas")
        df, d = self.data.data, self.data
        outcomes = tuple(float_values(df[m]) for m in self.metrics)
        return DesignSource(assign=d.instrument_codes, dose=d.dose, treated=d.treated_codes,
                            n_arms=d.n_arms, covariates=self.covariates, weights=d.weights,
                            clusters=d.cluster_codes, n_clusters=d.n_clusters, outcomes=outcomes)

    def fit(self, estimator, **options):
        """Fit the metrics with ``estimator`` (a class, built with ``options``, or an instance).

        Examples
        --------
        >>> import numpy as np, pandas as pd, causalflow as cf
        >>> rng = np.random.default_rng(1)
        >>> df = pd.DataFrame({"t": rng.integers(0, 2, 200), "x": rng.normal(size=200)})
        >>> df["y"] = 1.0 + 0.5 * df.t + df.x + rng.normal(size=200)
        >>> model = cf.ExperimentData(df, intent_to_treat="t").add_metric(
        ...     y="y", exogenous_covariates=["x"]).fit(cf.LinearModel)
        >>> round(float(model.infer_effect().to_frame().estimate[0]), 2)
        0.54
        """
        if isinstance(estimator, type):
            estimator = estimator(**options)
        elif options:
            raise ValidationError(f"fit: options {sorted(options)} are only accepted with an estimator class")
        if not hasattr(estimator, "fit_spec"):
            raise ValidationError(f"fit: {estimator!r} is not a causalflow estimator")
        try:
            return estimator.fit_spec(self)
        except ValidationError as exc:
            if "singular" in str(exc):
                try:
                    self._check_within_arms()  # a clearer error that names the covariates
                except ValidationError as clearer:
                    raise clearer from exc
            raise


def _dependent(gram: np.ndarray, names: list[str], only_if_singular: bool = False) -> list[str]:
    """Columns with a non-negligible loading on a null direction of a Gram matrix.

    A direction is null when its eigenvalue of the unit-diagonal scaled matrix is below
    q * eps * 1e3 (the tolerance of :func:`causalflow.linalg.twosls.check_full_rank`). With
    ``only_if_singular`` an empty list means full rank; otherwise every name is returned
    when no single direction stands out.
    """
    scale = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    zero = scale <= 1e-150  # nothing left after centring (or underflow): dependent by itself
    if zero.any():
        return [names[i] for i in np.flatnonzero(zero)]
    values, vectors = np.linalg.eigh(gram / np.outer(scale, scale))
    null = vectors[:, values <= len(names) * np.finfo(float).eps * 1e3 * values.max()]
    involved = np.flatnonzero(np.abs(null).max(axis=1) > 1e-6) if null.size else []
    out = [names[i] for i in involved]
    return out if (out or only_if_singular) else names
