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


def colour_volume(data: np.ndarray, values: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """An RGBA volume [X, Y, Z, 4] from a label volume ``data`` [X, Y, Z]: voxels of ROI ``values[k]`` get
    ``rgb[k]`` (opaque), every other voxel transparent."""
    values = np.asarray(values).astype(int)
    lut = np.zeros((int(max(values.max(), data.max())) + 1, 4))
    lut[values, :3] = rgb
    lut[values, 3] = 1.0
    return lut[np.clip(data.astype(int), 0, len(lut) - 1)]


PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}


def paint_atlas_slices(fig, cell, atlas_image: str | Path, values: np.ndarray, rgb: np.ndarray,
                       planes: tuple[str, ...] = ("axial",), fractions: tuple[float, ...] = (0.3, 0.5, 0.7)) -> None:
    """Slices of the atlas with ROI ``values[k]`` painted ``rgb[k]`` into the gridspec ``cell``: one row per
    plane ("axial", "coronal", "sagittal"), one column per fraction of the labelled extent, RAS orientation."""
    import nibabel as nib

    from brainjepa.errors import InputError

    img = nib.as_closest_canonical(nib.load(str(atlas_image)))
    data = np.asarray(img.dataobj).astype(np.int64)
    volume = colour_volume(data, values, rgb)
    labelled = np.argwhere(data > 0)
    if not len(labelled):
        raise InputError(f"{atlas_image}: the atlas image has no labelled voxel")
    lo, hi = labelled.min(axis=0), labelled.max(axis=0)
    zooms = img.header.get_zooms()[:3]
    sub = cell.subgridspec(len(planes), len(fractions))
    for row, name in enumerate(planes):
        axis = PLANES[name]
        rest = [a for a in range(3) if a != axis]                 # the plane's axes, RAS order
        for col, frac in enumerate(fractions):
            k = int(round(lo[axis] + frac * (hi[axis] - lo[axis])))
            ax = fig.add_subplot(sub[row, col])
            ax.imshow(np.transpose(np.take(volume, k, axis=axis), (1, 0, 2)), origin="lower",
                      interpolation="nearest", aspect=zooms[rest[1]] / zooms[rest[0]])
            ax.set_facecolor("#202020")
            ax.set_xticks([])
            ax.set_yticks([])
            mm = float(img.affine[axis, axis] * k + img.affine[axis, 3])
            ax.set_title(f"{name}, {'xyz'[axis]} = {mm:.0f} mm", fontsize=8)


def glass_brain_nodes(ax, coords: np.ndarray, rgb: np.ndarray, sizes=18):
    """ROI centroids ``coords`` [R, 3] (mm) on a nilearn glass brain (left, right, axial, coronal views) in
    ``ax``, coloured ``rgb`` [R, 3] and sized ``sizes``; returns the display (close it after saving)."""
    from nilearn import plotting

    n = len(coords)
    return plotting.plot_connectome(np.zeros((n, n)), np.asarray(coords, dtype=np.float64),
                                    node_color=[tuple(c) for c in rgb], node_size=sizes, display_mode="lyrz",
                                    axes=ax, annotate=True, colorbar=False)
