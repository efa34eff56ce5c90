"""Pretraining curves: loss, collapse monitor and learning rate against optimizer steps, one line per run.

Input: each run's ``log.csv`` (:mod:`brainjepa.train.log`; one row every ``run.log_every`` steps). The collapse
monitor is ``target_std``, the standard deviation over samples of the target features (averaged over feature
dimensions): a representation collapsing to a constant drives it to 0. Runs of different objectives (JEPA:
latent-space loss; MAE: loss on raw values) have losses on different scales, hence one panel per quantity and a
log scale for the loss.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from brainjepa.errors import InputError
from brainjepa.figures.common import pyplot, save

PANELS = (("loss", "training loss", True), ("target_std", "target feature std (collapse monitor)", False),
          ("lr", "learning rate", False))


def read_log(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read the training log ({exc})") from None
    missing = [c for c in ("step", *(p[0] for p in PANELS)) if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: training log lacks column(s) {missing}")
    if frame.empty:
        raise InputError(f"{path}: the training log has no rows")
    return frame


def plot_pretraining(logs: dict[str, str | Path], out: str | Path) -> None:
    """``logs``: {run name: log.csv path} -> one figure with a panel per quantity."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.3 * len(PANELS), 3.6))
    for name, path in logs.items():
        frame = read_log(path)
        for ax, (column, _, _) in zip(axes, PANELS):
            ax.plot(frame["step"], frame[column], lw=1, label=f"{name} ({int(frame['step'].iloc[-1])} steps)")
    for ax, (_, label, log_scale) in zip(axes, PANELS):
        ax.set(xlabel="optimizer step", title=label)
        if log_scale:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    save(fig, out)
