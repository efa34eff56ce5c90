"""Pretraining curves: loss, collapse monitor and learning rate against optimizer steps, one line per run, and
below them the representation monitors of each run's encoders with their step-0 values as reference lines.

Input: each run's ``log.csv`` (:mod:`brainjepa.train.log`; one row every ``run.log_every`` steps) and the
``monitors.csv`` beside it (:mod:`brainjepa.train.monitors`; every ``run.monitor_every`` steps, on held-out
windows). The batch monitor is ``target_std``, the standard deviation over samples of the target features
(averaged over feature dimensions): a representation collapsing to a constant drives it to 0, but one that keeps
only its positions does not; the RankMe of pooled features and the input-dependent share do fall then. Runs of
different objectives (JEPA: latent-space loss; MAE: loss on raw values) have losses on different scales, hence one
panel per quantity and a log scale for the loss.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from brainjepa.errors import InputError
from brainjepa.figures.common import pyplot, save

PANELS = (("loss", "training loss", True), ("target_std", "target feature std (collapse monitor)", False),
          ("lr", "learning rate", False))
MONITOR_PANELS = (("rankme_pooled", "RankMe, pooled features"), ("rankme_tokens", "RankMe, token features"),
                  ("input_share", "input-dependent share of token variance"))


def read_log(path: str | Path) -> pd.DataFrame:
    """A run's training log (``log.csv``); an unreadable file, one without rows or one without the columns step and
    those of :data:`PANELS` (loss, target_std, lr) is an error naming it."""
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
    """``logs``: {run name: log.csv path} -> one figure: a panel per quantity of the log, and a panel per
    representation monitor (each encoder of each run, its step-0 value dashed; from monitors.csv beside the log)."""
    from brainjepa.train.monitors import read_monitors

    plt = pyplot()
    fig, axes = plt.subplots(2, len(PANELS), figsize=(4.3 * len(PANELS), 7.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"context": "-", "target": ":"}
    any_monitors = False
    for k, (name, path) in enumerate(logs.items()):
        frame = read_log(path)
        colour = colours[k % len(colours)]
        for ax, (column, _, _) in zip(axes[0], PANELS):
            ax.plot(frame["step"], frame[column], lw=1, color=colour,
                    label=f"{name} ({int(frame['step'].iloc[-1])} steps)")
        monitors = read_monitors(Path(path).parent / "monitors.csv")
        if monitors is None:
            continue
        any_monitors = True
        for ax, (key, _) in zip(axes[1], MONITOR_PANELS):
            for encoder, style in styles.items():
                column = f"{encoder}_{key}"
                if column not in monitors.columns:
                    continue
                ax.plot(monitors["step"], monitors[column], style, lw=1.2, marker=".", color=colour,
                        label=f"{name}, {encoder} encoder")
                first = monitors.loc[monitors["step"] == 0, column]
                if len(first):
                    ax.axhline(float(first.iloc[0]), ls="--", lw=0.7, color=colour, alpha=0.6)
    for ax, (_, label, log_scale) in zip(axes[0], PANELS):
        ax.set(xlabel="optimizer step", title=label)
        if log_scale:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax, (_, label) in zip(axes[1], MONITOR_PANELS):
        ax.set(xlabel="optimizer step", title=f"{label} (held-out windows)")
        ax.grid(alpha=0.3)
        if not any_monitors:
            ax.text(0.5, 0.5, "no representation monitors\n(run.monitor_every, shards.monitor_subjects)",
                    ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    axes[0][0].legend(fontsize=8, frameon=False)
    if any_monitors:
        axes[1][0].legend(fontsize=7, frameon=False, title="dashed: step 0", title_fontsize=7)
    fig.tight_layout()
    save(fig, out)
