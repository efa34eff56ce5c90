"""Brain gradient positioning (docs/reference.md section 2) and its ablation alternatives.

The embedding of token ``roi * W + t`` is ``concat([temporal(t), spatial(roi)])``:
- temporal half: fixed 1-D sin-cos of the time-patch index ``t``, stored as a frozen parameter so
  that parameter totals match the reference's (its ``emb_h``);
- spatial half: ``Linear(n_gradients, dim/2)`` of the ROI's gradients ("gradient"), or of its
  centroid in mm ("centroid"), rescaled by a global min-max to [-1, 1] on every forward; or a fixed
  sin-cos of the ROI index ("roi_sincos").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from brainjepa.errors import InputError


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """Fixed sin-cos embedding. positions: [M] -> [M, dim] float32.

    The first dim/2 columns are ``sin(p * w_i)``, the next dim/2 ``cos(p * w_i)``, with
    ``w_i = 1 / 10000 ** (i / (dim / 2))``; computed in float64 like the reference.
    """
    if dim % 2:
        raise ValueError(f"sin-cos width must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def minmax_rescale(x: Tensor) -> Tensor:
    """Global min-max rescale to [-1, 1] (one min and max over the whole tensor)."""
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) * 2 - 1


def _check_table(name: str, table: Tensor | None, n_rois: int, n_cols: int) -> Tensor:
    if table is None:
        raise InputError(f"positional embedding needs the {name} matrix [{n_rois}, {n_cols}], got none")
    if tuple(table.shape) != (n_rois, n_cols):
        raise InputError(f"{name} matrix has shape {tuple(table.shape)}, expected [{n_rois}, {n_cols}] "
                         "(model.n_rois x model.n_gradients, or x 3 for centroids)")
    return table.detach().to(torch.float32).clone()


class BrainPositionalEmbedding(nn.Module):
    """Positional embedding of the R * W tokens of one sample, at width ``dim``.

    Args:
        dim: embedding width D (a multiple of 4).
        n_rois, n_time_patches: the token grid R x W.
        positional: "gradient", "roi_sincos" or "centroid".
        n_gradients: G, columns of ``gradients``.
        gradients: [R, G] brain gradients (kept as a persistent buffer), for "gradient".
        centroids: [R, 3] ROI centroids in mm (kept as a persistent buffer), for "centroid".
    """

    def __init__(self, dim: int, n_rois: int, n_time_patches: int, positional: str, n_gradients: int,
                 gradients: Tensor | None = None, centroids: Tensor | None = None) -> None:
        super().__init__()
        self.n_rois, self.n_time_patches, self.positional = n_rois, n_time_patches, positional
        time_index = torch.arange(n_time_patches).repeat(n_rois)  # token roi*W + t -> t
        self.temporal = nn.Parameter(sincos_1d(dim // 2, time_index), requires_grad=False)
        if positional == "gradient":
            table = _check_table("gradient", gradients, n_rois, n_gradients)
            self.register_buffer("gradients", table)
            self.spatial_proj = nn.Linear(table.shape[1], dim // 2)
        elif positional == "centroid":
            self.register_buffer("centroids", _check_table("centroid", centroids, n_rois, 3))
            self.spatial_proj = nn.Linear(3, dim // 2)
        elif positional == "roi_sincos":
            roi_index = torch.arange(n_rois).repeat_interleave(n_time_patches)
            self.spatial = nn.Parameter(sincos_1d(dim // 2, roi_index), requires_grad=False)
        else:
            raise InputError(f"unknown positional embedding {positional!r}")

    def spatial_half(self) -> Tensor:
        """Spatial half, repeated over each ROI's time patches. Returns [R * W, dim/2]."""
        if self.positional == "roi_sincos":
            return self.spatial
        table = self.gradients if self.positional == "gradient" else self.centroids
        per_roi = minmax_rescale(self.spatial_proj(table))  # [R, dim/2]; same min/max as after repeating
        return per_roi.repeat_interleave(self.n_time_patches, dim=0)

    def forward(self) -> Tensor:
        """Returns [R * W, dim]: concat([temporal, spatial])."""
        spatial = self.spatial_half()
        # Under autocast the projection comes out in bf16; keep the sum in the table's precision.
        return torch.cat([self.temporal, spatial.to(self.temporal.dtype)], dim=1)
