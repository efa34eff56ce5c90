"""The in-silico perturbation figure: how much each ROI had to change to move a group's representation to another's.

Input: the per-ROI table of :func:`brainjepa.capabilities.perturbation.run_perturbation` (``<out stem>.rois.tsv``: name,
network, magnitude, control_magnitude) and the atlas label table (centroids x, y, z). Panels:

* a glass brain of the ROI centroids (nilearn), each coloured and sized by its magnitude (RMS of the
  perturbation over time, the data's scaled units; colour scale shared with the slices);
* with the atlas image, three axial slices with every ROI painted its magnitude's colour (the gradient figure's
  atlas painting);
* per network, the mean magnitude toward the target group (network colours) beside the random-direction
  control's (grey), networks in the table's order, each labelled with its rank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.errors import InputError
from brainjepa.figures.common import glass_brain_nodes, network_colors, network_order, paint_atlas_slices, pyplot, save

CMAP = "magma_r"


def _joined(rois: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The ROI table joined on name with the label table's index and centroids (checked)."""
    missing = [c for c in ("name", "network", "magnitude") if c not in rois.columns]
    if missing:
        raise InputError(f"the perturbation ROI table lacks column(s) {missing}")
    absent = [c for c in ("name", "index", "x", "y", "z") if c not in labels.columns]
    if absent:
        raise InputError(f"the atlas label table lacks column(s) {absent}: the brain view needs ROI centroids")
    lookup = labels.assign(name=labels["name"].astype(str)).set_index("name")
    unknown = [n for n in rois["name"].astype(str) if n not in lookup.index]
    if unknown:
        raise InputError(f"ROI {unknown[0]!r} of the perturbation table is not in the atlas label table "
                         f"({len(unknown)} missing)")
    table = rois.assign(name=rois["name"].astype(str)).reset_index(drop=True)
    for c in ("index", "x", "y", "z"):
        table[c] = lookup.loc[table["name"], c].to_numpy()
    return table


def mean_roi_tables(paths: list[str | Path]) -> pd.DataFrame:
    """The per-ROI mean of several perturbation ROI tables (seeds of one method): name and network of the first,
    the mean of every magnitude column. The tables must list the same ROIs in the same order."""
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path, sep="\t"))
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read the perturbation ROI table ({exc})") from None
        missing = [c for c in ("name", "network", "magnitude") if c not in frames[-1].columns]
        if missing:
            raise InputError(f"{path}: the perturbation ROI table lacks column(s) {missing}")
        if list(frames[-1]["name"].astype(str)) != list(frames[0]["name"].astype(str)):
            raise InputError(f"{path}: its ROIs differ from those of {paths[0]} (tables of one atlas expected)")
    out = frames[0][["name", "network"]].copy()
    for column in [c for c in frames[0].columns if c.endswith("magnitude")]:
        out[column] = np.mean([f[column].to_numpy(dtype=np.float64) for f in frames], axis=0)
    return out


def plot_perturbation(rois: pd.DataFrame, labels: pd.DataFrame, out: str | Path,
                      atlas_image: str | Path | None = None, title: str = "In-silico perturbation") -> None:
    """ROI magnitudes on a glass brain (and painted atlas slices with ``atlas_image``) and a per-network bar chart
    of the target and control magnitudes -> ``out`` (PNG or SVG, deterministic bytes)."""
    import matplotlib

    plt = pyplot()
    table = _joined(rois, labels)
    magnitude = table["magnitude"].to_numpy(dtype=np.float64)
    norm = matplotlib.colors.Normalize(vmin=float(magnitude.min()), vmax=float(magnitude.max()) + 1e-12)
    cmap = matplotlib.colormaps[CMAP]
    rgb = cmap(norm(magnitude))[:, :3]
    rows = 3 if atlas_image is not None else 2
    fig = plt.figure(figsize=(11, 4.2 * rows))
    grid = fig.add_gridspec(rows, 3, height_ratios=[1.1] + [1.0] * (rows - 1))
    glass = fig.add_subplot(grid[0, :])
    sizes = 10 + 70 * norm(magnitude)
    display = glass_brain_nodes(glass, table[["x", "y", "z"]].to_numpy(), rgb, sizes)
    glass.set_title("perturbation magnitude per ROI (RMS over time; colour and size)", fontsize=9)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=glass, fraction=0.02, pad=0.01,
                 label="RMS of delta (scaled units)")
    if atlas_image is not None:
        paint_atlas_slices(fig, grid[1, :], atlas_image, table["index"].to_numpy(), rgb)
    _network_bars(fig.add_subplot(grid[rows - 1, :]), table)
    fig.suptitle(title)
    save(fig, out)
    display.close()


def _network_bars(ax, table: pd.DataFrame) -> None:
    """Mean magnitude per network toward the target (network colours, rank above) and for the control (grey)."""
    from matplotlib.patches import Patch

    order = network_order(table)
    colors = network_colors(order)
    target = np.array([table.loc[table["network"] == n, "magnitude"].mean() for n in order])
    ranks = pd.Series(target).rank(ascending=False, method="min").astype(int).to_numpy()
    x = np.arange(len(order))
    has_control = "control_magnitude" in table.columns
    width = 0.4 if has_control else 0.7
    ax.bar(x - (width / 2 if has_control else 0), target, width, color=[colors[n] for n in order],
           edgecolor="k", linewidth=0.4)
    top = float(target.max())
    if has_control:
        control = np.array([table.loc[table["network"] == n, "control_magnitude"].mean() for n in order])
        ax.bar(x + width / 2, control, width, color="#b0b0b0", edgecolor="k", linewidth=0.4)
        top = max(top, float(control.max()))
    for i, r in enumerate(ranks):
        ax.text(x[i] - (width / 2 if has_control else 0), target[i], f"#{r}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, order, rotation=30, ha="right")
    ax.set_ylim(0, top * 1.3 + 1e-12)
    ax.set_ylabel("mean RMS of delta over the network's ROIs")
    ax.set_title("per network (#: rank toward the target)", fontsize=9)
    handles = [Patch(facecolor="white", edgecolor="k", label="toward the target group (network colours)")]
    if has_control:
        handles.append(Patch(facecolor="#b0b0b0", edgecolor="k", label="control: random direction, same distance"))
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="upper center", ncol=2)
