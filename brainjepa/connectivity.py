"""Group functional connectivity: Pearson FC per subject, Fisher-z averaged, over the pretraining set.

Per run: Pearson correlation of the ROI time series [R, R]. Per subject: the Fisher z (arctanh) of its runs'
FC averaged. Group: the mean z over subjects, back-transformed with tanh; the diagonal is 1. Only the
pretraining set's subjects enter (see ``splits.pretraining_runs``), so no test subject reaches the gradients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.errors import InputError
from brainjepa.io import atomic_path, read_timeseries

Z_CLIP = 1.0 - 1e-7  # |r| is clipped below 1 before arctanh so identical series give a finite z


def run_fc(ts: np.ndarray, source: str = "run") -> np.ndarray:
    """Pearson FC of one run. ts: [T, R] -> [R, R] float64; a constant ROI is an error naming it."""
    std = ts.std(axis=0)
    if np.any(std == 0):
        raise InputError(f"{source}: ROI column(s) {np.flatnonzero(std == 0)[:10].tolist()} are constant; "
                         "Pearson correlation is undefined")
    return np.corrcoef(ts, rowvar=False)


def fisher_z(fc: np.ndarray) -> np.ndarray:
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
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, fc.astype(np.float64))


def plot_fc(fc: np.ndarray, labels: pd.DataFrame, path: str | Path) -> None:
    """Heatmap of FC with ROIs ordered by network (label table order within a network), boundaries drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = labels["network"].astype(str).to_numpy()
    first_seen = list(dict.fromkeys(networks))
    order = np.argsort([first_seen.index(n) for n in networks], kind="stable")
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    image = ax.imshow(fc[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    edges = np.cumsum([np.sum(networks == n) for n in first_seen])
    for edge in edges[:-1]:
        ax.axhline(edge - 0.5, color="k", lw=0.5)
        ax.axvline(edge - 0.5, color="k", lw=0.5)
    centres = edges - np.array([np.sum(networks == n) for n in first_seen]) / 2
    ax.set_xticks(centres - 0.5, first_seen, rotation=90, fontsize=7)
    ax.set_yticks(centres - 0.5, first_seen, fontsize=7)
    fig.colorbar(image, ax=ax, label="Pearson r (Fisher-z mean)")
    ax.set_title(f"Group FC ({len(fc)} ROIs, ordered by network)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, metadata={"Software": None})
    plt.close(fig)
