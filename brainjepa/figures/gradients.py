"""The brain gradient figure (paper Fig. 2): ROIs in the space of gradients 1-3, coloured by position, on the brain.

Colours: each ROI's (g1, g2, g3) min-max scaled per gradient to (R, G, B) over the ROIs shown, so ROIs close in
gradient space have similar colours. Three files:

* ``space``: a 3-D view and the three 2-D projections coloured by position, plus g1 x g2 coloured by the atlas
  network, with the silhouette of the networks in g1-g3 space (cosine distance of Euclidean; > 0 means ROIs sit
  nearer their own network than the next one) in its title;
* ``brain``: the atlas volume with every ROI painted its colour, in orthogonal slices (axial, coronal, sagittal,
  three each, in RAS orientation), and a glass brain of the ROI centroids in the same colours (nilearn);
* ``eigenvalues``: the eigenvalue of every component and its share of their sum (the "explained variance" of a
  diffusion map), with the first three, the ones shown, marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.errors import InputError
from brainjepa.figures.common import (
    glass_brain_nodes,
    network_colors,
    network_order,
    paint_atlas_slices,
    pyplot,
    rgb_from_positions,
    save,
)


def network_silhouette(positions: np.ndarray, networks: np.ndarray) -> float:
    """Mean silhouette of the network labels among ROI positions [R, k] (Euclidean); NaN for < 2 networks."""
    from sklearn.metrics import silhouette_score

    if len(set(networks)) < 2 or len(set(networks)) >= len(networks):
        return float("nan")
    return float(silhouette_score(positions, networks, metric="euclidean"))


def _selected(gradients: pd.DataFrame, labels: pd.DataFrame, cortical_only: bool) -> pd.DataFrame:
    """The label table joined with g1..g3 (checked), cortical ROIs only when asked."""
    missing = [c for c in ("g1", "g2", "g3") if c not in gradients.columns]
    if missing:
        raise InputError(f"the gradients lack component(s) {missing}: the figure shows gradients 1-3")
    if list(gradients["name"].astype(str)) != list(labels["name"].astype(str)):
        raise InputError("the gradients' ROI names differ from the atlas label table's (name or order)")
    table = labels.reset_index(drop=True).copy()
    for c in ("g1", "g2", "g3"):
        table[c] = gradients[c].to_numpy(dtype=np.float64)
    if cortical_only:
        table = table[table["network"].astype(str) != "Subcortical"]
        if len(table) < 2:
            raise InputError("fewer than 2 cortical ROIs: nothing to place in gradient space")
    return table


def plot_gradient_space(gradients: pd.DataFrame, labels: pd.DataFrame, out: str | Path,
                        cortical_only: bool = False) -> float:
    """The 3-D and 2-D views of ROIs in gradient space. Returns the networks' silhouette in g1-g3 space."""
    plt = pyplot()
    table = _selected(gradients, labels, cortical_only)
    pos = table[["g1", "g2", "g3"]].to_numpy()
    rgb = rgb_from_positions(pos)
    networks = table["network"].astype(str).to_numpy()
    silhouette = network_silhouette(pos, networks)
    sub = networks == "Subcortical"
    fig = plt.figure(figsize=(13, 8.4))
    ax = fig.add_subplot(2, 3, 1, projection="3d")
    for mask, marker in ((~sub, "o"), (sub, "^")):
        ax.scatter(*pos[mask].T, c=rgb[mask], marker=marker, s=22, edgecolors="k", linewidths=0.2, depthshade=False)
    ax.set(xlabel="gradient 1", ylabel="gradient 2", zlabel="gradient 3", title="ROIs in gradient 1-3 space")
    ax.view_init(elev=22, azim=-58)
    for k, (i, j) in enumerate(((0, 1), (0, 2), (1, 2))):
        ax = fig.add_subplot(2, 3, 2 + k)
        for mask, marker in ((~sub, "o"), (sub, "^")):
            ax.scatter(pos[mask, i], pos[mask, j], c=rgb[mask], marker=marker, s=22, edgecolors="k", linewidths=0.2)
        ax.set(xlabel=f"gradient {i + 1}", ylabel=f"gradient {j + 1}", title=f"gradients {i + 1} x {j + 1}")
    ax = fig.add_subplot(2, 3, 5)
    colors = network_colors(network_order(table))
    for net in network_order(table):
        m = networks == net
        ax.scatter(pos[m, 0], pos[m, 1], color=colors[net], s=22, edgecolors="k", linewidths=0.2,
                   marker="^" if net == "Subcortical" else "o", label=f"{net} ({m.sum()})")
    ax.set(xlabel="gradient 1", ylabel="gradient 2", title=f"by network (silhouette in g1-g3: {silhouette:.2f})")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    ax = fig.add_subplot(2, 3, 6)
    ax.axis("off")
    ax.text(0, 0.95, "Colour = (g1, g2, g3) min-max scaled to (R, G, B)\nover the ROIs shown; "
            "circles: cortical ROIs,\ntriangles: subcortical ROIs.\n\n"
            f"{len(table)} ROIs{' (cortical only)' if cortical_only else ''}, "
            f"{len(colors)} networks.", va="top", fontsize=9)
    fig.suptitle("Brain gradient positioning: group-FC diffusion-map gradients")
    fig.tight_layout()
    save(fig, out)
    return silhouette


def plot_gradient_brain(gradients: pd.DataFrame, labels: pd.DataFrame, atlas_image: str | Path, out: str | Path,
                        cortical_only: bool = False) -> None:
    """Atlas ROIs painted their gradient colour in orthogonal slices, and a glass brain of ROI centroids."""
    plt = pyplot()
    table = _selected(gradients, labels, cortical_only)
    rgb = rgb_from_positions(table[["g1", "g2", "g3"]].to_numpy())
    fig = plt.figure(figsize=(11, 12))
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1.2])
    paint_atlas_slices(fig, grid[0], atlas_image, table["index"].to_numpy(), rgb,
                       planes=("axial", "coronal", "sagittal"))
    glass = fig.add_subplot(grid[1])
    display = glass_brain_nodes(glass, table[["x", "y", "z"]].to_numpy(), rgb)
    glass.set_title("glass brain of the ROI centroids", fontsize=8)
    fig.suptitle("Gradient colours on the brain: each ROI coloured by its (g1, g2, g3) position")
    save(fig, out)
    display.close()


def plot_eigenvalues(eigenvalues: pd.DataFrame, out: str | Path, shown: int = 3) -> None:
    """Eigenvalue per component and its share of the sum (bars), the first ``shown`` highlighted."""
    plt = pyplot()
    values = eigenvalues["eigenvalue"].to_numpy(dtype=np.float64)
    share = values / values.sum() if values.sum() > 0 else np.zeros_like(values)
    idx = np.arange(1, len(values) + 1)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.bar(idx, share * 100, color=["#CD3E4E" if i <= shown else "#9a9a9a" for i in idx])
    ax2 = ax.twinx()
    ax2.plot(idx, np.cumsum(share) * 100, color="k", marker=".", lw=1)
    ax.set(xlabel="component", ylabel="share of the eigenvalue sum (%)",
           title=f"Diffusion-map eigenvalues (first {shown} shown in the gradient figure: "
                 f"{share[:shown].sum() * 100:.1f} %)")
    ax2.set_ylabel("cumulative (%)")
    ax2.set_ylim(0, 102)
    fig.tight_layout()
    save(fig, out)


def run_gradient_figures(gradients_path: str | Path, labels_path: str | Path, atlas_image: str | Path | None,
                         out_space: str | Path, out_brain: str | Path | None, out_eigenvalues: str | Path,
                         cortical_only: bool = False) -> float:
    """The gradient figures of one pipeline; the brain view needs the atlas image (pre-parcellated: skip it)."""
    from brainjepa.group.gradients import eigenvalues_path, read_gradients
    from brainjepa.preprocess.atlas import read_label_table

    names, values = read_gradients(gradients_path)
    gradients = pd.DataFrame(values, columns=[f"g{i + 1}" for i in range(values.shape[1])])
    gradients.insert(0, "name", names)
    labels = read_label_table(labels_path)
    silhouette = plot_gradient_space(gradients, labels, out_space, cortical_only)
    if out_brain is not None:
        if atlas_image is None:
            raise InputError("the brain view of the gradients needs the atlas image")
        plot_gradient_brain(gradients, labels, atlas_image, out_brain, cortical_only)
    eig = eigenvalues_path(gradients_path)
    if not Path(eig).exists():
        raise InputError(f"{eig}: the gradients' eigenvalue file is missing")
    plot_eigenvalues(pd.read_csv(eig, sep="\t"), out_eigenvalues)
    return silhouette

