"""Build the encoder/predictor pair and count their parameters."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from brainjepa.models.config import ModelConfig
from brainjepa.models.encoder import BrainEncoder
from brainjepa.models.predictor import BrainPredictor


def build_model(cfg: ModelConfig, gradients: Tensor | None,
                centroids: Tensor | None = None) -> tuple[BrainEncoder, BrainPredictor]:
    """The context encoder and the predictor (the target encoder is a copy of the encoder).

    gradients: [R, G] (positional "gradient"); centroids: [R, 3] in mm (positional "centroid").
    """
    return BrainEncoder(cfg, gradients, centroids), BrainPredictor(cfg, gradients, centroids)


def count_parameters(module: nn.Module) -> dict[str, int]:
    """{"total": every parameter (frozen sin-cos tables included), "trainable": requires_grad ones}."""
    params = list(module.parameters())
    return {"total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad)}


def model_info(size: str, n_rois: int, n_timesteps: int, n_gradients: int = 30) -> dict[str, Any]:
    """Sizes and parameter counts of a preset at a given input shape (built on the meta device)."""
    cfg = ModelConfig(size=size, n_rois=n_rois, n_timesteps=n_timesteps, n_gradients=n_gradients).resolved()
    with torch.device("meta"):
        encoder, predictor = build_model(cfg, torch.empty(n_rois, n_gradients))
    return {"size": size, "n_rois": n_rois, "n_timesteps": n_timesteps, "n_gradients": n_gradients,
            "n_tokens": cfg.n_tokens, "embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_heads": cfg.num_heads,
            "predictor_dim": cfg.predictor_dim, "predictor_depth": cfg.predictor_depth,
            "encoder": count_parameters(encoder), "predictor": count_parameters(predictor)}
