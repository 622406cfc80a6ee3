"""Loader for the ACIC 2016 competition export in ``../shared/data/acic2016``.

The data are read in place (never copied into the repository). One data set is
(setting, replication): the shared covariates ``x.csv`` with the treatment and
potential outcomes of ``<setting>/zymu_<k>.csv.gz``; the observed outcome is
``y = z * y1 + (1 - z) * y0``.

Reference: Dorie, Hill, Shalit, Scott and Cervone (2019), "Automated versus
do-it-yourself methods for causal inference: lessons learned from a data analysis
competition", Statistical Science 34(1), 43-68.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORICAL = ("x_2", "x_21", "x_24")
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "acic2016"


@dataclass(frozen=True, slots=True)
class AcicDataset:
    """One ACIC 2016 data set.

    Fields: ``setting`` (1..77), ``replication`` (1..3), ``X`` (n x p float design,
    categoricals one-hot without a reference level dropped), ``columns`` (p names),
    ``z`` (n,), ``y`` (n,), and the truths ``satt`` / ``sate`` (sample effects from
    the noisy potential outcomes) and ``mu_att`` / ``mu_ate`` (noise-free).
    """

    setting: int
    replication: int
    X: np.ndarray
    columns: tuple[str, ...]
    z: np.ndarray
    y: np.ndarray
    satt: float
    sate: float
    mu_att: float
    mu_ate: float

    @property
    def key(self) -> str:
        return f"s{self.setting:02d}_r{self.replication}"


def resolve_data_dir(data: str | Path | None = None) -> Path:
    """Return the data folder: ``data`` if given, else ``../shared/data/acic2016`` of the repo."""
    path = Path(data) if data is not None else DEFAULT_DATA
    if not (path / "x.csv").is_file() or not (path / "truth.csv").is_file():
        raise FileNotFoundError(f"data: {path} does not hold the ACIC 2016 export (x.csv, truth.csv)")
    return path


@functools.lru_cache(maxsize=4)
def _covariates(data_dir: str) -> tuple[np.ndarray, tuple[str, ...], pd.DataFrame]:
    raw = pd.read_csv(Path(data_dir) / "x.csv")
    frame = pd.get_dummies(raw, columns=list(CATEGORICAL), dtype=float)
    X = frame.to_numpy(dtype=float)
    X.setflags(write=False)
    return X, tuple(frame.columns), raw


def covariate_frame(data: str | Path | None = None) -> pd.DataFrame:
    """The 58 raw covariates (categoricals as letters), a copy."""
    return _covariates(str(resolve_data_dir(data)))[2].copy()


def truth_table(data: str | Path | None = None) -> pd.DataFrame:
    return pd.read_csv(resolve_data_dir(data) / "truth.csv")


def settings_table(data: str | Path | None = None) -> pd.DataFrame:
    return pd.read_csv(resolve_data_dir(data) / "settings.csv")


def dataset_keys(data: str | Path | None = None) -> list[tuple[int, int]]:
    """All (setting, replication) pairs listed in ``truth.csv``, sorted."""
    t = truth_table(data)
    return sorted(zip(t["setting"].astype(int), t["seed"].astype(int)))


def load_dataset(setting: int, replication: int, data: str | Path | None = None) -> AcicDataset:
    """Load one data set; the observed outcome is built from the potential outcomes."""
    root = resolve_data_dir(data)
    X, cols, _ = _covariates(str(root))
    zymu = pd.read_csv(root / str(setting) / f"zymu_{replication}.csv.gz")
    z = zymu["z"].to_numpy(dtype=float)
    y = np.where(z == 1, zymu["y1"].to_numpy(), zymu["y0"].to_numpy())
    t = truth_table(root)
    row = t[(t["setting"] == setting) & (t["seed"] == replication)]
    if len(row) != 1:
        raise KeyError(f"truth.csv has no row for setting={setting}, replication={replication}")
    r = row.iloc[0]
    return AcicDataset(setting, replication, X, cols, z, y, float(r["satt"]), float(r["sate"]),
                       float(r["mu_att"]), float(r["mu_ate"]))
