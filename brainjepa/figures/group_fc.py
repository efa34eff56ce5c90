"""Group FC heatmap: ROIs ordered by network, network boundaries drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.figures.common import network_order, pyplot, save


def plot_fc(fc: np.ndarray, labels: pd.DataFrame, path: str | Path) -> None:
    """Heatmap of FC with ROIs ordered by network (label table order within a network), boundaries drawn."""
    plt = pyplot()
    networks = labels["network"].astype(str).to_numpy()
    first_seen = network_order(labels)
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
    save(fig, path)
