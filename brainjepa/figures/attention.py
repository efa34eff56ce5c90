"""Network attention figure (paper Fig. 7): grouped bars of the normalised attention per network, one bar per group.

Input: the network table of :func:`brainjepa.evaluate.attention.run_network_attention` (group, network, value,
n_subjects, and with two groups difference and p_permutation). The chance level, 1 / number of networks (every
network equally attended), is drawn as a line; with two groups each network is annotated with its permutation
p-value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.figures.common import pyplot, save

GROUP_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


def plot_network_attention(table: pd.DataFrame, out: str | Path, title: str) -> None:
    """Grouped bars of the normalised attention per network, one bar per group (its subject count in the legend), the
    uniform level 1 / networks as a dashed line and, when the table has them, each network's permutation p-value; saved
    to ``out``."""
    plt = pyplot()
    networks = list(dict.fromkeys(table["network"]))
    groups = list(dict.fromkeys(table["group"].astype(str)))
    width = 0.8 / len(groups)
    x = np.arange(len(networks))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(networks) + 3.5), 4.4))
    top = 0.0
    for k, group in enumerate(groups):
        rows = table[table["group"].astype(str) == group].set_index("network").loc[networks]
        values = rows["value"].to_numpy(dtype=float)
        top = max(top, float(values.max()))
        ax.bar(x + (k - (len(groups) - 1) / 2) * width, values, width, color=GROUP_COLORS[k % len(GROUP_COLORS)],
               label=f"{group} (n = {int(rows['n_subjects'].iloc[0])})")
    ax.axhline(1 / len(networks), color="k", lw=0.8, ls="--", label="uniform (1 / networks)")
    if "p_permutation" in table.columns:
        first = table[table["group"].astype(str) == groups[0]].set_index("network").loc[networks]
        for i, p in enumerate(first["p_permutation"].to_numpy(dtype=float)):
            ax.text(x[i], top * 1.01, f"p={p:.2g}", ha="center", va="bottom", fontsize=7)
    lo = float(table["value"].min())
    ax.set_ylim(max(0.0, lo - (top - lo) * 0.6), top + (top - lo) * 0.35 + 1e-6)
    ax.set_xticks(x, networks, rotation=30, ha="right")
    ax.set_ylabel("normalised attention (networks sum to 1)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save(fig, out)
