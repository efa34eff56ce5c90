"""Group functional connectivity: Pearson FC per subject, Fisher-z averaged, over the pretraining set.

Per run: Pearson correlation of the ROI time series [R, R]. Per subject: the Fisher z (arctanh) of its runs'
FC averaged. Group: the mean z over subjects, back-transformed with tanh; the diagonal is 1. Only the
pretraining set's subjects enter (see ``splits.pretraining_runs``), so no test subject reaches the gradients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainjepa.errors import InputError
from brainjepa.io import atomic_path, check_roi_names, read_timeseries

Z_CLIP = 1.0 - 1e-7  # |r| is clipped below 1 before arctanh so identical series give a finite z


def run_fc(ts: np.ndarray, source: str = "run") -> np.ndarray:
    """Pearson FC of one run. ts: [T, R] -> [R, R] float64; a constant ROI is an error naming it."""
    std = ts.std(axis=0)
    if np.any(std == 0):
        raise InputError(f"{source}: ROI column(s) {np.flatnonzero(std == 0)[:10].tolist()} are constant; "
                         "Pearson correlation is undefined")
    return np.corrcoef(ts, rowvar=False)


def fisher_z(fc: np.ndarray) -> np.ndarray:
    """Fisher z (arctanh) of correlations, clipped to +-:data:`Z_CLIP` first so that r = +-1 (the diagonal) gives a
    finite z; the shape of ``fc``."""
    return np.arctanh(np.clip(fc, -Z_CLIP, Z_CLIP))


def group_fc(subjects: dict[str, list[Path]]) -> tuple[np.ndarray, list[str]]:
    """Fisher-z mean FC over subjects ({key: run files}), runs of a subject averaged first. -> [R, R], names."""
    if not subjects:
        raise InputError("no subjects to compute group FC from")
    names, total = None, None
    for key in sorted(subjects):
        z_runs = []
        for path in subjects[key]:
            frame, _ = read_timeseries(path)
            if names is None:
                names = list(map(str, frame.columns))
            elif list(map(str, frame.columns)) != names:
                raise InputError(f"{path}: ROI columns differ from the other runs'")
            z_runs.append(fisher_z(run_fc(frame.to_numpy(dtype=np.float64), str(path))))
        z = np.mean(z_runs, axis=0)
        total = z if total is None else total + z
    fc = np.tanh(total / len(subjects))
    np.fill_diagonal(fc, 1.0)
    return fc, names


def write_fc(fc: np.ndarray, path: str | Path) -> None:
    """``fc`` saved at ``path`` as a float64 ``.npy``, atomically (:func:`brainjepa.io.atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, fc.astype(np.float64))


def run_group_fc(splits_path: str | Path, runs_root: str | Path, labels_path: str | Path, out: str | Path) -> None:
    """The ``group_fc`` stage: the pretraining set's runs (from the splits table) -> FC ``.npy`` (the heatmap is
    the figures stage's, :mod:`brainjepa.figures.group_fc`).

    The time series' ROI columns must equal the atlas label table's names, in order.
    """
    from brainjepa.group.splits import pretraining_runs, read_splits, run_files
    from brainjepa.preprocess.atlas import read_label_table

    fc, names = group_fc(run_files(pretraining_runs(read_splits(splits_path)), runs_root))
    labels = read_label_table(labels_path)
    check_roi_names(labels["name"].astype(str).tolist(), names, labels_path, "the time series' columns")
    write_fc(fc, out)
