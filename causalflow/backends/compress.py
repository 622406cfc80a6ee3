r"""Compression: rows with the same (arm, covariates, cluster) replaced by sufficient statistics.

Wong, Lewis and Wardrop (2021), "You Only Compress Once: Optimal Data Compression for
Estimating Linear Models" (arXiv:2102.11297): with discrete (or bucketed) covariates the
rows of an experiment fall into few cells c of identical design rows :math:`z_c`
(assigned arm, covariates) and, with clusters, cluster. Per cell keep

.. math::

    n_c,\ \ \textstyle\sum w,\ \ \sum w\,y_k,\ \ \sum w^2,\ \ \sum w^2 y_k,\ \ \sum w^2 y_k y_l
    \quad (k \le l \text{ over metrics; } w \text{ the propensity weight, 1 without}).

Then every number of the Lin (2013) regression of :class:`~causalflow.LinearModel` is
exactly a function of the cells:

* moments: :math:`Z'WZ = \sum_c (\sum w)_c z_c z_c'`, :math:`Z'WY = \sum_c z_c (\sum wy)_c'`,
  the centring means :math:`\mu = \sum_c (\sum w)_c x_c / \sum w`, and B from the one solver;
* the effect influence of a row on contrast d is :math:`w_i a_c` with
  :math:`a_c = z_c' A d` (A the bread), and its residual :math:`e_{ik} = y_{ik} - f_{ck}`,
  :math:`f_{ck} = z_c'b_k`;
* CR0 / CR1 (cells within clusters): :math:`S_{g} = \sum_{c \in g} a_c
  [(\sum wy_k)_c - f_{ck}(\sum w)_c]` and the meat :math:`\sum_g S_g S_g'`;
* HC0 / HC1: :math:`\sum_i w_i^2 a_{cr}a_{cs} e_{ik}e_{il} = \sum_c a_{cr}a_{cs}
  [(\sum w^2y_ky_l)_c - f_{ck}(\sum w^2 y_l)_c - f_{cl}(\sum w^2y_k)_c + f_{ck}f_{cl}(\sum w^2)_c]`;
* CR3: the leave-one-cluster-out refits need only the per-cluster moments, sums of cells.

Every formula is an identity, so the compressed fit equals the fit of the rows up to the
rounding of the sums (outcomes are centred at their mean before the sums of squares, so
that the HC meat does not lose digits to cancellation). CR2 needs each cluster's rows
(its hat-matrix adjustment is not a function of the cell sums) and is refused, and so are
encouragement designs (the complier means of a LATE) and metrics with missing values.
Cells within clusters keep only what the CR covariances need (n, sum w, sum w y: K + 2
numbers per cell instead of (K + 1)(K + 2)/2 + K + 1), so they serve CR0 / CR1 / CR3;
HC0 / HC1 need cells compressed without ``cluster_by``.

Two producers, one record: :func:`compress` groups an in-memory table with pandas, or an
Ibis table (DuckDB by default, any Ibis backend; a parquet path is read by Ibis's default
backend) with **one** Ibis aggregation (plus one small validation query), bringing back
only the cells. :meth:`Compressed.fit` fits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import ValidationError
from ..validate import check_alpha, check_choice, column_names, missing_message

__all__ = ["Compressed", "CompressedFit", "compress"]

_P = "__cf_"  # prefix of the statistic columns (no clash with a user's column)
COV_TYPES = ("HC0", "HC1", "CR0", "CR1", "CR3")


def _stat(name: str, *idx) -> str:
    return _P + name + "".join(f"_{i}" for i in idx)


def _pairs(K: int) -> list[tuple[int, int]]:
    return [(k, k2) for k in range(K) for k2 in range(k, K)]


def _is_in_memory(table) -> bool:
    return isinstance(table, pd.DataFrame) or type(table).__module__.split(".")[0] in ("polars", "pyarrow")


def compress(table, *, intent_to_treat: str, y, exogenous_covariates=None, cluster_by=None,
             propensity=None, control=None) -> Compressed:
    r"""Compress an experiment's rows into cells of identical (arm, covariates, cluster).

    Parameters
    ----------
    table : pandas / polars / pyarrow table, an Ibis table, or a parquet path (read by Ibis)
        Never modified. An Ibis table is grouped in its engine (one aggregation); only the
        cells come back.
    intent_to_treat, cluster_by, propensity, control : the roles of
        :class:`~causalflow.ExperimentData` (``propensity``: a column name or a number, two
        arms; in memory also a mapping). ``treated`` is not served: an encouragement
        design's LATE needs complier means that are not cell sums here.
    y : metric name or list of names (no missing values)
    exogenous_covariates : list of column names (discrete or bucketed: every distinct
        combination is a cell; numeric columns are allowed, but continuous ones compress
        nothing)

    Returns
    -------
    Compressed
        ``.frame`` (one row per cell), ``.ratio`` (rows in / cells out), ``.fit(cov_type)``.

    References
    ----------
    Wong, J., Lewis, R. and Wardrop, M. (2021). You Only Compress Once: Optimal Data
    Compression for Estimating Linear Models. arXiv:2102.11297.

    Examples
    --------
    >>> import numpy as np, pandas as pd, causalflow as cf
    >>> from causalflow.backends.compress import compress
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"t": rng.integers(0, 2, 10_000), "device": rng.choice(["ios", "web"], 10_000),
    ...                    "tier": rng.integers(0, 3, 10_000)})
    >>> df["y"] = df.t + df.tier + rng.normal(size=10_000)
    >>> small = compress(df, intent_to_treat="t", y="y", exogenous_covariates=["device", "tier"])
    >>> small.n_rows, small.n_cells, small.ratio
    (10000, 12, 833.3333333333334)
    >>> full = cf.ExperimentData(df, intent_to_treat="t").add_metric(
    ...     y="y", exogenous_covariates=["device", "tier"]).fit(cf.LinearModel)
    >>> fit = small.fit()
    >>> bool(np.allclose(fit.params().values, full.params().values, rtol=1e-10))
    True
    >>> bool(np.allclose(fit.std_errors().values, full.std_errors().values, rtol=1e-10))
    True
    """
    metrics = column_names(y, "y")
    if not metrics:
        raise ValidationError("y: name at least one metric column")
    if len(set(metrics)) != len(metrics):
        raise ValidationError(f"y: a metric is listed twice in {metrics}")
    if isinstance(exogenous_covariates, str):
        exogenous_covariates = [exogenous_covariates]
    covariates = column_names(exogenous_covariates, "exogenous_covariates")
    clusters = column_names(cluster_by, "cluster_by") if cluster_by is not None else []
    if _is_in_memory(table):
        return _compress_frame(table, intent_to_treat, metrics, covariates, clusters, propensity, control)
    return _compress_ibis(table, intent_to_treat, metrics, covariates, clusters, propensity, control)


def _roles(intent_to_treat, metrics, covariates, clusters, propensity) -> dict:
    roles = {intent_to_treat: "intent_to_treat", **{c: "cluster_by" for c in clusters}}
    if isinstance(propensity, str):
        roles[propensity] = "propensity"
    for name in metrics:
        if name in roles:
            raise ValidationError(f"y: column {name!r} is already the {roles[name]} column")
        roles[name] = "metric"
    for name in covariates:
        if name in roles:
            raise ValidationError(f"exogenous_covariates: column {name!r} is already the {roles[name]} column")
    if len(set(covariates)) != len(covariates):
        raise ValidationError(f"exogenous_covariates: a column is listed twice in {covariates}")
    return roles


def _compress_frame(table, intent_to_treat, metrics, covariates, clusters, propensity, control) -> Compressed:
    from ..data import ExperimentData
    from ..validate import metric_values, to_pandas

    df = to_pandas(table)
    _roles(intent_to_treat, metrics, covariates, clusters, propensity)
    data = ExperimentData(df, intent_to_treat=intent_to_treat, propensity=propensity,
                          cluster_by=clusters or None, control=control)  # every role checked as usual
    for name in covariates:
        if name not in df.columns:
            raise ValidationError(f"exogenous_covariates: column {name!r} is not in the data; "
                                  f"columns: {list(map(str, df.columns))[:30]}")
        if df[name].isna().any():
            raise ValidationError(f"exogenous_covariates: column {name!r} has {int(df[name].isna().sum())} "
                                  "missing values")
    Y = np.empty((len(df), len(metrics)))
    for k, name in enumerate(metrics):
        if name not in df.columns:
            raise ValidationError(f"y: column {name!r} is not in the data; columns: {list(map(str, df.columns))[:30]}")
        Y[:, k] = metric_values(df[name], name, "y")
    _no_missing(np.isnan(Y).sum(axis=0), metrics)
    centre = Y.mean(axis=0)
    Y -= centre
    w = None if data.weights is None else data.weights
    keys = [*clusters, *covariates]
    codes = _cell_codes(data.arm_codes, df, keys)
    first = np.unique(codes, return_index=True)[1]  # codes number cells by first appearance
    cells = pd.DataFrame({_stat("arm"): data.arm_codes[first]})
    for c in keys:
        values = df[c].iloc[first].reset_index(drop=True)
        cells[c] = values.astype(df[c].dtype)  # the user's dtype (categoricals, booleans)
    for name, values in _cell_sums(codes, len(first), Y, w, hc=not clusters).items():
        cells[name] = values
    return Compressed(cells, intent_to_treat, data.arms, tuple(metrics), tuple(covariates), tuple(clusters),
                      data.weights is not None, centre, len(df))


def _cell_codes(arms: np.ndarray, df: pd.DataFrame, keys: list) -> np.ndarray:
    """Cell number of every row (cells numbered by first appearance)."""
    if not keys:
        return pd.factorize(arms)[0]
    frame = pd.DataFrame({_stat("arm"): arms, **{c: df[c].to_numpy() for c in keys}}, index=pd.RangeIndex(len(df)))
    codes = frame.groupby(list(frame.columns), sort=False, observed=True, dropna=False).ngroup().to_numpy()
    # ngroup numbers groups in order of first appearance with sort=False
    return codes.astype(np.int64)


def _cell_sums(codes: np.ndarray, n_cells: int, Y: np.ndarray, w: np.ndarray | None, hc: bool) -> dict:
    """The statistics of every cell: rows sorted by cell once, then per cell a few GEMVs and
    one GEMM (Y_c' W_c^2 Y_c), or, with many small cells, sparse sums over row blocks. The
    HC statistics (sums of w^2, w^2 y, w^2 y y') only with ``hc`` (cells without clusters)."""
    n, K = Y.shape
    pairs = _pairs(K)
    out = {_stat("n"): np.bincount(codes, minlength=n_cells).astype(np.int64)}
    ones = np.ones(n) if w is None else w
    out[_stat("w")] = np.bincount(codes, weights=ones, minlength=n_cells)
    out[_stat("ww")] = np.bincount(codes, weights=ones * ones, minlength=n_cells)
    wy = np.empty((n_cells, K))
    wwy = np.empty((n_cells, K))
    wwyy = np.empty((n_cells, K, K))
    if n_cells <= 4096:
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(n_cells + 1))
        for c in range(n_cells):
            rows = order[bounds[c]:bounds[c + 1]]
            Yc = Y[rows]
            wc = ones[rows]
            wy[c] = wc @ Yc
            if hc:
                wwy[c] = (wc * wc) @ Yc
                wwyy[c] = (Yc * (wc * wc)[:, None]).T @ Yc
    else:
        import scipy.sparse

        wy[:], wwy[:], wwyy[:] = 0.0, 0.0, 0.0
        iu = np.array(pairs).T
        for start in range(0, n, 1 << 15):
            sl = slice(start, min(start + (1 << 15), n))
            P = scipy.sparse.csr_matrix((ones[sl], (codes[sl], np.arange(sl.stop - sl.start))),
                                        shape=(n_cells, sl.stop - sl.start))
            Yb, wb = Y[sl], ones[sl]
            wy += P @ Yb
            if hc:
                wwy += P @ (Yb * wb[:, None])
                wwyy[:, iu[0], iu[1]] += P @ (Yb[:, iu[0]] * Yb[:, iu[1]] * wb[:, None])
    for k in range(K):
        out[_stat("wy", k)] = wy[:, k]
    if not hc:
        del out[_stat("ww")]
        return out
    for k in range(K):
        out[_stat("wwy", k)] = wwy[:, k]
    for k, k2 in pairs:
        out[_stat("wwyy", k, k2)] = wwyy[:, k, k2]
    return out


def _no_missing(counts, metrics) -> None:
    for name, count in zip(metrics, counts):
        if count:
            raise ValidationError(f"y: metric {name!r} has {int(count)} missing values; compression needs "
                                  "complete metrics (fit a metric with missing values uncompressed, or "
                                  "compress its complete rows separately)")


def _ibis_table(table):
    from .._optional import require

    ibis = require("ibis", "warehouse")
    if isinstance(table, str):
        return ibis, ibis.read_parquet(table)
    if isinstance(table, ibis.expr.types.Table):
        return ibis, table
    raise ValidationError(f"table: expected a pandas / polars / pyarrow table, an Ibis table or a parquet path, "
                          f"got {type(table).__name__}")


def _compress_ibis(table, intent_to_treat, metrics, covariates, clusters, propensity, control) -> Compressed:
    """The same cells from one Ibis aggregation (after one validation query and the arms)."""
    from ..data import ExperimentData, _arm_codes

    ibis, t = _ibis_table(table)
    _roles(intent_to_treat, metrics, covariates, clusters, propensity)
    columns = set(t.columns)
    for argument, names in (("intent_to_treat", [intent_to_treat]), ("cluster_by", clusters), ("y", metrics),
                            ("exogenous_covariates", covariates),
                            ("propensity", [propensity] if isinstance(propensity, str) else [])):
        for name in names:
            if not isinstance(name, str):
                raise ValidationError(f"{argument}: expected a column name (str), got {name!r}")
            if name not in columns:
                raise ValidationError(f"{argument}: column {name!r} is not in the table; "
                                      f"columns: {sorted(columns)[:30]}")
    if propensity is not None and not isinstance(propensity, (str, int, float)):
        raise ValidationError("propensity: an engine table takes a column name or a number (two arms); "
                              "a mapping is served in memory")
    # one validation query: missing values of every role and the metrics' means (centres)
    checks = {f"nulls_{i}": t[c].isnull().sum() for i, c in enumerate([intent_to_treat, *clusters, *covariates])}
    checks.update({f"ynull_{k}": t[m].isnull().sum() for k, m in enumerate(metrics)})
    checks.update({f"ymean_{k}": t[m].cast("float64").mean() for k, m in enumerate(metrics)})
    checks["rows"] = t.count()
    if isinstance(propensity, str):
        checks.update(pmin=t[propensity].min(), pmax=t[propensity].max(), pnull=t[propensity].isnull().sum())
    row = t.aggregate(**checks).to_pandas().iloc[0]
    for i, c in enumerate([intent_to_treat, *clusters, *covariates]):
        if row[f"nulls_{i}"]:
            argument = ("intent_to_treat" if i == 0 else "cluster_by" if i <= len(clusters)
                        else "exogenous_covariates")
            raise ValidationError(missing_message(argument, c, row[f"nulls_{i}"]))
    _no_missing([row[f"ynull_{k}"] for k in range(len(metrics))], metrics)
    if isinstance(propensity, str):
        if row["pnull"] or not (0 < row["pmin"] and row["pmax"] < 1):
            raise ValidationError(f"propensity: column {propensity!r} has missing values or values outside (0, 1) "
                                  f"(min {row['pmin']:g}, max {row['pmax']:g})")
    n_rows = int(row["rows"])
    arms = t.select(intent_to_treat).distinct().to_pandas()
    if len(arms) < 2:
        raise ValidationError(f"intent_to_treat: column {intent_to_treat!r} has a single arm "
                              f"({arms.iloc[0, 0]!r}); an experiment needs at least two")
    ref = ExperimentData(arms, intent_to_treat=intent_to_treat,
                         propensity=propensity if not isinstance(propensity, str) else None, control=control)
    if isinstance(propensity, str) and ref.n_arms != 1:
        raise ValidationError(f"propensity: a single column ({propensity!r}) needs two arms, "
                              f"{intent_to_treat!r} has {len(ref.arms)}")
    centre = np.array([float(row[f"ymean_{k}"]) for k in range(len(metrics))])
    one = ibis.literal(1.0)
    if isinstance(propensity, str):
        p = t[propensity].cast("float64")
        w = ibis.ifelse(t[intent_to_treat] == ibis.literal(ref.arms[1]), one / p, one / (one - p))
    else:
        w = None  # unit weights: sums of w are counts, products with w drop out

    def total(expr, squared=False):
        if w is None:
            return t.count().cast("float64") if expr is None else expr.sum()
        weight = w * w if squared else w
        return weight.sum() if expr is None else (weight * expr).sum()

    ys = [t[m].cast("float64") - float(centre[k]) for k, m in enumerate(metrics)]
    stats = {_stat("n"): t.count(), _stat("w"): total(None)}
    for k, yk in enumerate(ys):
        stats[_stat("wy", k)] = total(yk)
    if not clusters:  # the HC statistics (cells within clusters serve the CR covariances)
        stats[_stat("ww")] = total(None, True)
        for k, yk in enumerate(ys):
            stats[_stat("wwy", k)] = total(yk, True)
        for k, k2 in _pairs(len(metrics)):
            stats[_stat("wwyy", k, k2)] = total(ys[k] * ys[k2], True)
    cells = t.group_by([intent_to_treat, *clusters, *covariates]).aggregate(**stats).to_pandas()
    cells.insert(0, _stat("arm"), _arm_codes(cells[intent_to_treat], ref.arms).astype(np.int64))
    cells = cells.drop(columns=[intent_to_treat])
    # the engine returns cells in no particular order: sort by their keys, for a reproducible record
    cells = cells.sort_values([_stat("arm"), *clusters, *covariates], kind="stable").reset_index(drop=True)
    return Compressed(cells, intent_to_treat, ref.arms, tuple(metrics), tuple(covariates), tuple(clusters),
                      isinstance(propensity, str), centre, n_rows)


@dataclass(frozen=True)
class Compressed:
    """The cells of a compressed experiment (:func:`compress`).

    Attributes
    ----------
    frame : pandas.DataFrame, one row per cell: ``__cf_arm`` (arm code, 0 = control), the
        cluster and covariate columns, then the statistics ``__cf_n`` (rows), ``__cf_w``
        (sum of weights), ``__cf_wy_k`` (metric k centred at ``centre[k]``) and, without
        clusters (for HC), ``__cf_ww``, ``__cf_wwy_k``, ``__cf_wwyy_k_l``
    intent_to_treat : str; arms : tuple, control first
    metrics, covariates, cluster_by : tuple of str
    weighted : bool, propensity weights
    centre : (K,) the metrics' means subtracted before the sums
    n_rows : int, rows compressed
    """

    frame: pd.DataFrame
    intent_to_treat: str
    arms: tuple
    metrics: tuple
    covariates: tuple
    cluster_by: tuple
    weighted: bool
    centre: np.ndarray
    n_rows: int

    @property
    def n_cells(self) -> int:
        return len(self.frame)

    @property
    def ratio(self) -> float:
        """Compression ratio: rows in / cells out."""
        return self.n_rows / self.n_cells

    def fit(self, cov_type: str | None = None, *, inference: Literal["t", "normal"] = "t",
            av_g: float | None = None, av_planned_n: float | None = None) -> CompressedFit:
        """Fit the cells: exactly :class:`~causalflow.LinearModel`'s fit of the rows.

        ``cov_type``: ``"HC0"``, ``"HC1"``, ``"CR0"``, ``"CR1"`` or ``"CR3"`` (default as
        :class:`~causalflow.LinearModel`: HC1, or with clusters CR1 / CR3 below 50 clusters);
        ``"CR2"`` needs each cluster's rows and is refused.
        """
        from ..linalg.anytime import check_av_options
        from ..linalg.sandwich import Covariance, default_cov_type

        check_choice("inference", inference, ("t", "normal"))
        check_av_options(av_g, av_planned_n)
        G = None
        codes = None
        if self.cluster_by:
            keys = self.frame[list(self.cluster_by)]
            codes = (pd.factorize(keys.iloc[:, 0])[0] if len(self.cluster_by) == 1
                     else pd.MultiIndex.from_frame(keys).factorize()[0]).astype(np.int64)
            G = int(codes.max()) + 1
        cov_type = cov_type or default_cov_type(G)
        if cov_type == "CR2":
            raise ValidationError("cov_type: 'CR2' is not served by a compressed fit (its Bell-McCaffrey "
                                  "adjustment needs each cluster's rows, not cell sums); use 'CR3' or "
                                  "'CR1', or fit the rows")
        covariance = Covariance.of(cov_type)
        check_choice("cov_type", cov_type, COV_TYPES)
        if covariance.clustered and G is None:
            raise ValidationError(f"cov_type: {cov_type} needs cluster_by in compress()")
        if not covariance.clustered and G is not None:
            raise ValidationError(f"cov_type: {cov_type} is not served by cells compressed within clusters "
                                  "(they keep the sums the CR covariances need); compress without "
                                  "cluster_by for HC0 / HC1")
        return CompressedFit._fit(self, covariance, codes, G, inference, av_g, av_planned_n)


class CompressedFit:
    """A fitted :class:`Compressed`: coefficients, standard errors and effects of the rows.

    Attributes
    ----------
    compressed : Compressed; cov_type : str; n : rows; n_clusters : G or None
    names : coefficient names (as :meth:`causalflow.LinearModelResults.params`)
    coef : (p, K) coefficients
    """

    @classmethod
    def _fit(cls, c: Compressed, covariance, codes, G, inference, av_g, av_planned_n) -> CompressedFit:
        from ..design import Covariates, _fill_lin
        from ..linalg.layout import CoefLayout
        from ..linalg.twosls import Moments, solve_2sls

        self = cls()
        f = c.frame
        K = len(c.metrics)
        self.compressed, self.covariance, self.codes, self.n_clusters = c, covariance, codes, G
        self.inference = (inference, av_g, av_planned_n)
        self.counts = f[_stat("n")].to_numpy(dtype=np.int64)
        self.n = int(self.counts.sum())
        self.sw = f[_stat("w")].to_numpy(dtype=float)
        self.cov = Covariates.from_frame(f, list(c.covariates), {})
        arms = f[_stat("arm")].to_numpy()
        J = len(c.arms) - 1
        self.layout = CoefLayout(J, self.cov.q)
        self.mu = self.cov.means(None, self.sw)
        p = self.layout.p
        self.names = self.layout.names([f"{c.intent_to_treat}[{a}]" for a in c.arms[1:]], self.cov.names)
        if self.n <= p:
            raise ValidationError(f"y: metric(s) {list(c.metrics)} have {self.n} complete rows for {p} parameters")
        Z = np.empty((len(f), p))
        Xc = self.cov.raw(slice(0, len(f))) - self.mu
        _fill_lin(Z, arms, J, Xc, dose=False, copy_xc=True)
        self.Z = Z
        self.swy = np.column_stack([f[_stat("wy", k)].to_numpy(dtype=float) for k in range(K)])
        zw = Z * self.sw[:, None]
        moments = Moments(zw.T @ Z, None, Z.T @ self.swy, self.n)
        self.fit = solve_2sls(moments, self.names)
        coef = self.fit.coef.copy()
        coef[0] += c.centre  # the outcomes were centred before the sums: only the intercept moves
        self.coef = coef
        return self

    @property
    def cov_type(self) -> str:
        return self.covariance.cov_type

    @property
    def metrics(self) -> tuple:
        return self.compressed.metrics

    def params(self) -> pd.DataFrame:
        """Coefficients (p x K frame), as ``LinearModelResults.params()``."""
        return pd.DataFrame(self.coef, index=self.names, columns=list(self.metrics))

    def std_errors(self) -> pd.DataFrame:
        """Standard errors of the coefficients (p x K frame)."""
        p, K = self.layout.p, len(self.metrics)
        cov = self._contrast_cov(np.eye(p))[0]
        return pd.DataFrame(np.sqrt(np.diag(cov)).reshape(p, K), index=self.names, columns=list(self.metrics))

    def cov_params(self) -> dict:
        """Covariance of the coefficients, one (p x p) frame per metric."""
        p, K = self.layout.p, len(self.metrics)
        cov = self._contrast_cov(np.eye(p))[0]
        return {m: pd.DataFrame(cov[k::K, k::K], index=self.names, columns=self.names)
                for k, m in enumerate(self.metrics)}

    def _contrast_cov(self, D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint covariance of the contrasts D (m x p) of every metric, columns ordered
        contrast then metric (index r K + k), and their degrees of freedom."""
        c, K, p = self.compressed, len(self.metrics), self.layout.p
        m = D.shape[0]
        f = c.frame
        fitted = self.Z @ self.fit.coef  # f_ck (centred outcomes)
        dof = np.full(m * K, float(self.covariance.dof(self.n, p, self.n_clusters)))
        if self.covariance.meat == "jackknife":
            from ..linalg.small_sample import cluster_cross_products, design_dof, jackknife_coefs

            cp = cluster_cross_products(self.Z, None, self.swy / self.sw[:, None], self.sw, self.codes,
                                        self.n_clusters)
            jack = jackknife_coefs(cp, names=self.names)
            T = np.einsum("rp,gpk->grk", D, jack - self.fit.coef[None]).reshape(self.n_clusters, m * K)
            gram = T.T @ T
            dof = np.repeat(design_dof(cp, None, self.fit.bread, D), K).astype(float)
        else:
            a = self.Z @ (self.fit.influence @ D.T)  # (cells, m): row influence / its weight
            if self.covariance.clustered:
                import scipy.sparse

                resid = self.swy - fitted * self.sw[:, None]  # sum over the cell's rows of w e
                scores = (a[:, :, None] * resid[:, None, :]).reshape(len(f), m * K)
                sums = scipy.sparse.csr_matrix((np.ones(len(f)), (self.codes, np.arange(len(f)))),
                                               shape=(self.n_clusters, len(f))) @ scores
                gram = sums.T @ sums
            else:
                ww = f[_stat("ww")].to_numpy(dtype=float)
                wwy = np.column_stack([f[_stat("wwy", k)].to_numpy(dtype=float) for k in range(K)])
                gram = np.empty((m, K, m, K))
                for k, k2 in _pairs(K):
                    q = (f[_stat("wwyy", k, k2)].to_numpy(dtype=float) - fitted[:, k] * wwy[:, k2]
                         - fitted[:, k2] * wwy[:, k] + fitted[:, k] * fitted[:, k2] * ww)
                    block = (a * q[:, None]).T @ a
                    gram[:, k, :, k2] = block
                    gram[:, k2, :, k] = block.T
                gram = gram.reshape(m * K, m * K)
        gram = 0.5 * (gram + gram.T)
        return self.covariance.factor(self.n, p, self.n_clusters) * gram, dof

    def infer_effect(self, condition_on=None, alpha: float = 0.05):
        r"""Effects of every arm on every metric, overall or in subgroups: the same record
        (:class:`~causalflow.Effects`) as ``LinearModelResults.infer_effect`` of the rows.

        A subgroup's delta vector :math:`e_{D_j} + \sum_l \bar x_{S,l} e_{D_j X_l}` takes the
        weighted covariate means over the cells in S (weights: the cells' sums of weights),
        and its ``n`` is the number of rows of those cells.
        """
        from ..effects.record import Effects, Inference
        from ..models.linear import estimand_notes, parse_conditions

        alpha = check_alpha(alpha)
        conditions = parse_conditions(condition_on, self.cov.sources)
        originals = self.cov.original() if conditions[0] is not None else None
        J, K = self.layout.n_arms, len(self.metrics)
        rows, points = [], []
        for cond in conditions:
            if cond is None:
                shift, size = np.zeros(self.cov.q), self.n
            else:
                mask = cond.evaluate(originals)
                if not mask.any():
                    raise ValidationError(f"condition_on {cond.text!r}: selects no rows")
                shift = self.cov.means(np.flatnonzero(mask), self.sw) - self.mu
                size = int(self.counts[mask].sum())
            rows.append(self.layout.effects(shift))
            points.append(("all" if cond is None else cond.text, cond is not None, size))
        D = np.vstack(rows)
        cov, dof = self._contrast_cov(D)
        estimates = D @ self.coef
        av_dof = self.covariance.dof(self.n, self.layout.p, self.n_clusters)
        records, index = [], []
        for k, metric in enumerate(self.metrics):
            for j in range(J):
                for ci, (label, conditional, size) in enumerate(points):
                    r = ci * J + j
                    dof_r = dof[r * K + k]
                    records.append(dict(metric=metric, arm=self.compressed.arms[j + 1], condition=label,
                                        estimand="CATE" if conditional else "ATE", estimate=float(estimates[r, k]),
                                        n=size, dof=int(dof_r) if float(dof_r).is_integer() else float(dof_r),
                                        av_dof=av_dof, n_clusters=self.n_clusters))
                    index.append(r * K + k)
        index = np.asarray(index)
        distribution, av_g, av_planned_n = self.inference
        inference = Inference(self.cov_type, distribution, self.layout.p, av_g, av_planned_n)
        notes = estimand_notes([r["estimand"] for r in records], False, bool(self.cov.q))
        return Effects._from_fit(records, cov[np.ix_(index, index)], alpha, None,
                                 [None if c is None else c.text for c in conditions], inference,
                                 notes=notes, estimands=("ATE",))

    def __repr__(self) -> str:
        return (f"CompressedFit({len(self.metrics)} metric(s), {self.layout.p} parameters, {self.n} rows in "
                f"{self.compressed.n_cells} cells, cov_type={self.cov_type!r})")
