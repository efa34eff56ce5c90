"""Brain-JEPA encoder: ROI x time patches, brain gradient positioning, a pre-norm ViT (no CLS token).

Tokens are ROI-major: token ``roi * W + t`` holds time steps ``t * p .. t * p + p - 1`` of ROI ``roi``
(W = n_timesteps / p time patches per ROI).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from brainjepa.models.config import ModelConfig
from brainjepa.models.layers import (
    LayerNorm,
    gather_tokens,
    init_weights,
    key_padding_mask,
    make_blocks,
    padding_plan,
)
from brainjepa.models.pos_embed import BrainPositionalEmbedding


class PatchEmbed(nn.Module):
    """Each ROI's ``patch_size`` consecutive time steps -> one D-dim token (a strided (1, p) conv)."""

    def __init__(self, n_rois: int, n_timesteps: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.input_shape = (n_rois, n_timesteps)
        self.proj = nn.Conv2d(1, dim, kernel_size=(1, patch_size), stride=(1, patch_size))

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, 1, R, T] -> [B, R * W, D], ROI-major."""
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"expected input [B, 1, {self.input_shape[0]}, {self.input_shape[1]}] "
                             f"(ROIs x time steps), got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, D, R, W] -> [B, R*W, D]


class BrainEncoder(nn.Module):
    """Patch embedding + positional embedding + ViT blocks + final LayerNorm.

    Args:
        cfg: model configuration (sizes resolved from its preset).
        gradients: [R, G] brain gradients, needed when ``cfg.positional == "gradient"``.
        centroids: [R, 3] ROI centroids in mm, needed when ``cfg.positional == "centroid"``.
    """

    def __init__(self, cfg: ModelConfig, gradients: Tensor | None = None, centroids: Tensor | None = None) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.n_rois, cfg.n_timesteps, cfg.patch_size, cfg.embed_dim)
        self.pos_embed = BrainPositionalEmbedding(cfg.embed_dim, cfg.n_rois, cfg.n_time_patches, cfg.positional,
                                                  cfg.n_gradients, gradients, centroids)
        self.blocks = make_blocks(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias,
                                  cfg.drop_path, cfg.attention)
        self.norm = LayerNorm(cfg.embed_dim)
        init_weights(self, cfg.init)

    def embed(self, x: Tensor, token_idx: Tensor | None = None) -> Tensor:
        """Patchify and add the positional embedding, then keep ``token_idx``.

        x: [B, 1, R, T], token_idx: [B, N] (long, token = roi * W + t) or None -> [B, N, D].
        """
        tokens = self.patch_embed(x) + self.pos_embed()
        return tokens if token_idx is None else gather_tokens(tokens, token_idx)

    def forward(self, x: Tensor, token_idx: Tensor | None = None, token_valid: Tensor | None = None,
                lengths: Sequence[int] | None = None) -> Tensor:
        """x: [B, 1, R, T] -> [B, N, D] for the N tokens in ``token_idx`` (all R * W when None).

        Padding, when samples have fewer than N tokens (each sample's real tokens first in its row):
        ``lengths`` (host ints, one per sample: the mask collator's ``context_lengths``) is the fast way: a batch
        with every sample full attends without a mask, and a padded one is packed ([1, sum(lengths), D]) so that
        no padded token is computed (:func:`~brainjepa.models.layers.padding_plan`); outputs at padded
        positions are then 0. Without it, ``token_valid`` [B, N] (bool) gives a key-padding mask: padded tokens
        are never attended to, and their outputs are meaningless (but finite). Padded positions of
        ``token_idx`` must still hold a valid index (e.g. 0).
        """
        tokens = self.embed(x, token_idx)
        n = tokens.shape[1]
        attn_mask, varlen = padding_plan((tokens.shape[0], n), token_valid, lengths)
        if varlen is not None:
            tokens = varlen.pack(tokens)  # [1, sum(lengths), D]
        for block in self.blocks:
            tokens = block(tokens, attn_mask, varlen)
        tokens = self.norm(tokens)
        return tokens if varlen is None else varlen.unpack(tokens, n)

    def forward_features(self, x: Tensor) -> Tensor:
        """All tokens. x: [B, 1, R, T] -> [B, R * W, D]."""
        return self.forward(x)

    def forward_with_attention(self, x: Tensor, layers: Sequence[int] | None = None,
                               token_idx: Tensor | None = None,
                               token_valid: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Exact attention path for interpretation (same tokens as :meth:`forward` up to rounding).

        x: [B, 1, R, T]; layers: block indices whose weights to return (negative ones count from the
        end; None = every block). Returns (tokens [B, N, D], one [B, H, N, N] per requested layer,
        in block order); weights are softmax(Q K^T / sqrt(d)), rows sum to 1 over the valid keys.
        """
        wanted = _layer_set(layers, len(self.blocks))
        tokens = self.embed(x, token_idx)
        attn_mask = key_padding_mask(token_valid)
        weights = []
        for i, block in enumerate(self.blocks):
            if i in wanted:
                tokens, w = block.forward_with_attention(tokens, attn_mask)
                weights.append(w)
            else:
                tokens = block(tokens, attn_mask)
        return self.norm(tokens), weights


def _layer_set(layers: Sequence[int] | None, depth: int) -> set[int]:
    """Block indices (negative ones from the end) -> a set of non-negative indices."""
    if layers is None:
        return set(range(depth))
    bad = [i for i in layers if not -depth <= i < depth]
    if bad:
        raise IndexError(f"layer(s) {bad} out of range for an encoder of depth {depth}")
    return {i % depth for i in layers}
