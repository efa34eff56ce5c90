"""Helpers shared by the group-stage tests: a sample table and synthetic aligned runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa import sheets
from brainjepa.io import write_timeseries

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _samples(cohorts: dict[str, int], runs: int = 1) -> pd.DataFrame:
    rows = [{"cohort": c, "subject": f"{c}{i:03d}", "session": "1", "run": str(r)}
            for c, n in cohorts.items() for i in range(n) for r in range(1, runs + 1)]
    frame = pd.DataFrame(rows)
    frame["run_id"] = [sheets.run_id(r) for r in rows]
    return frame



def _write_runs(root: Path, table: pd.DataFrame, rng: np.random.Generator, n_rois: int = 6) -> None:
    names = [f"roi{i}" for i in range(n_rois)]
    mixing = rng.normal(size=(n_rois, n_rois))
    for run_id in table["run_id"]:
        data = 100 + rng.normal(size=(50, n_rois)) @ mixing + rng.normal(0, 5, size=n_rois)
        write_timeseries(data.astype(np.float32), names, root / f"{run_id}.parquet", {"tr": 2.0})

