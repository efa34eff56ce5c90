"""A model's positional inputs from files: the gradient table [R, G] and the ROI centroids [R, 3] (mm), in the
data's ROI order. Pretraining, evaluation and the capabilities build an encoder's position tables from these."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from brainjepa.errors import InputError
from brainjepa.io import check_roi_names


def load_gradients(path: str | Path, roi_names: list[str], against: str) -> torch.Tensor:
    """The gradient matrix [R, G] of the table at ``path`` in the order of ``roi_names`` (the names must match;
    ``against`` names where ``roi_names`` come from in the error)."""
    from brainjepa.group.gradients import read_gradients

    names, gradients = read_gradients(path)
    check_roi_names(names, roi_names, path, against)
    return torch.tensor(gradients, dtype=torch.float32)


def load_centroids(positional: str, labels: str | Path | None, roi_names: list[str],
                   against: str = "the shards' manifest") -> torch.Tensor | None:
    """ROI centroids [R, 3] (mm) from the atlas label table ``labels`` for the 'centroid' positional ablation
    (``positional``: the model's ``positional``); None for any other."""
    if positional != "centroid":
        return None
    from brainjepa.preprocess.atlas import read_label_table

    if not labels:
        raise InputError("model.positional 'centroid' needs data.labels (the atlas label table)")
    table = read_label_table(labels)
    check_roi_names(table["name"].astype(str).tolist(), roi_names, labels, against)
    return torch.tensor(table[["x", "y", "z"]].to_numpy(dtype=np.float32))
