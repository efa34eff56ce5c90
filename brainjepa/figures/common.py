"""What every figure shares: a headless matplotlib, deterministic saving (PNG, and SVG when asked), network colours.

Figures are deterministic: no timestamps or software strings in the files, a fixed SVG id salt, fixed sizes and
DPI, and every colour or order derived from the inputs (never from set or dict iteration order of hashes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.io import atomic_path

DPI = 120
# Yeo-7 colours of the Schaefer release (and of the demo); other networks get tab20 colours in order of appearance.
YEO7_COLORS = {"Vis": "#781180", "SomMot": "#4682B4", "DorsAttn": "#00760E", "SalVentAttn": "#C43AFA",
               "Limbic": "#DCF8A4", "Cont": "#E69422", "Default": "#CD3E4E", "Subcortical": "#808080"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (figures are files; no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "brainjepa"
    return plt


def save(fig, path: str | Path) -> None:
    """Write a figure atomically (PNG or SVG by suffix), without timestamps, then close it."""
    plt = pyplot()
    path = Path(path)
    metadata = {"Date": None, "Creator": None} if path.suffix == ".svg" else {"Software": None}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, metadata=metadata)
    plt.close(fig)


def network_order(labels: pd.DataFrame) -> list[str]:
    """The atlas's networks in order of first appearance in the label table."""
    return list(dict.fromkeys(labels["network"].astype(str)))


def network_colors(networks: list[str]) -> dict[str, str]:
    """A colour per network: the Yeo-7 palette where the name is known, tab20 colours otherwise."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    extra = iter(matplotlib.colors.to_hex(cmap(i % 20)) for i in range(len(networks)))
    return {n: YEO7_COLORS.get(n) or next(extra) for n in networks}


def rgb_from_positions(values: np.ndarray) -> np.ndarray:
    """values [R, 3] -> RGB [R, 3] in [0, 1]: each column min-max scaled (a constant column maps to 0.5)."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = values.min(axis=0), values.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, (values - lo) / span, 0.5)
