"""Brain-JEPA predictor: from context tokens, predict the encoder's tokens at target positions.

Context tokens are mapped to the predictor width and given the predictor's own positional embedding
(a separate, separately learned gradient map); each target slot is a learned mask token plus the
positional embedding of its position. Only the target slots are returned, mapped back to D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainjepa.models.config import ModelConfig
from brainjepa.models.layers import INIT_STD, LayerNorm, VarLen, init_weights, key_padding_mask, make_blocks
from brainjepa.models.pos_embed import BrainPositionalEmbedding


class BrainPredictor(nn.Module):
    """Narrow transformer over [context; mask tokens] (width ``cfg.predictor_dim``, encoder's heads).

    Args:
        cfg: model configuration (sizes resolved from its preset).
        gradients: [R, G] brain gradients, needed when ``cfg.positional == "gradient"``.
        centroids: [R, 3] ROI centroids in mm, needed when ``cfg.positional == "centroid"``.
        out_dim: width of each prediction (default D, the encoder's tokens; ``patch_size`` for the MAE
            decoder, which predicts the patch's raw values).
    """

    def __init__(self, cfg: ModelConfig, gradients: Tensor | None = None, centroids: Tensor | None = None,
                 out_dim: int | None = None) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.cfg = cfg
        dim = cfg.predictor_dim
        self.embed = nn.Linear(cfg.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = BrainPositionalEmbedding(dim, cfg.n_rois, cfg.n_time_patches, cfg.positional,
                                                  cfg.n_gradients, gradients, centroids)
        self.blocks = make_blocks(dim, cfg.predictor_depth, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias,
                                  cfg.drop_path, cfg.attention)
        self.norm = LayerNorm(dim)
        self.proj = nn.Linear(dim, cfg.embed_dim if out_dim is None else out_dim)
        init_weights(self, cfg.init)
        nn.init.trunc_normal_(self.mask_token, std=INIT_STD)

    def tokens(self, context: Tensor, context_idx: Tensor, target_idx: Tensor) -> Tensor:
        """Predictor input. context: [B, Nc, D], context_idx: [B, Nc], target_idx: [B, Nt] -> [B, Nc + Nt, Dp]."""
        if context.shape[:2] != context_idx.shape:
            raise ValueError(f"context {tuple(context.shape)} and context_idx {tuple(context_idx.shape)} disagree")
        pos = self.pos_embed()  # [R*W, Dp]
        # F.embedding, not pos[idx]: the backward of advanced indexing accumulates in a thread-dependent order
        # on CPU (runs at 2 threads differed by ~1e-8); the embedding backward is deterministic.
        ctx = self.embed(context) + F.embedding(context_idx, pos)
        tgt = self.mask_token + F.embedding(target_idx, pos)
        return torch.cat([ctx, tgt.to(ctx.dtype)], dim=1)

    def forward(self, context: Tensor, context_idx: Tensor, target_idx: Tensor,
                context_valid: Tensor | None = None, target_valid: Tensor | None = None,
                context_lengths: Sequence[int] | None = None,
                target_lengths: Sequence[int] | None = None) -> Tensor:
        """Predict the target tokens. Returns [B, Nt, out_dim] (out_dim D by default).

        context: [B, Nc, D] encoder outputs at ``context_idx`` [B, Nc]; target_idx: [B, Nt] (long,
        token = roi * W + t). Padding (each sample's real entries first in its row), as in
        :meth:`BrainEncoder.forward`: with ``context_lengths`` and ``target_lengths`` (host ints, the mask
        collator's), a batch with nothing padded attends without a mask and a padded one is packed, each
        sample's [context; targets] end to end, so no padded slot is computed (predictions there are 0).
        Without them, ``context_valid`` [B, Nc] / ``target_valid`` [B, Nt] (bool) give a key-padding mask:
        padded context is never attended to, and predictions at padded target slots are meaningless (but
        finite). Either way those must be left out of the loss.
        """
        x = self.tokens(context, context_idx, target_idx)
        nc, nt = context.shape[1], target_idx.shape[1]
        if context_lengths is not None and target_lengths is not None:
            varlen = _joint_lengths(context_lengths, target_lengths, nc, nt, x.shape[0])
            if varlen is not None:
                return self._forward_packed(x, nc, nt, tuple(context_lengths), varlen)
            attn_mask = None
        else:
            attn_mask = key_padding_mask(_joint_valid(context_valid, target_valid, context_idx, target_idx))
        for block in self.blocks:
            x = block(x, attn_mask)
        x = self.norm(x[:, nc:])
        return self.proj(x)

    def _forward_packed(self, x: Tensor, nc: int, nt: int, context_lengths: tuple[int, ...],
                        varlen: VarLen) -> Tensor:
        """x: [B, Nc + Nt, Dp] -> [B, Nt, out_dim], attending within each sample's valid entries only."""
        packed = torch.cat([piece for b, (c, n) in enumerate(zip(context_lengths, varlen.lengths))
                            for piece in (x[b, :c], x[b, nc:nc + n - c])])[None]  # [1, T, Dp]
        for block in self.blocks:
            packed = block(packed, None, varlen)
        parts = packed[0].split(varlen.lengths)
        targets = torch.stack([F.pad(part[c:], (0, 0, 0, nt - (part.shape[0] - c)))
                               for c, part in zip(context_lengths, parts)])  # [B, Nt, Dp], zeros after
        return self.proj(self.norm(targets))


def _joint_lengths(context_lengths: Sequence[int], target_lengths: Sequence[int], nc: int, nt: int,
                   batch: int) -> VarLen | None:
    """Each sample's predictor input length (context + targets) as a VarLen, or None when nothing is padded."""
    c, t = tuple(int(k) for k in context_lengths), tuple(int(k) for k in target_lengths)
    if len(c) != batch or len(t) != batch or any(not 0 <= k <= nc for k in c) or any(not 0 <= k <= nt for k in t):
        raise ValueError(f"context lengths {c} and target lengths {t} do not fit [{batch}, {nc}] and [{batch}, {nt}]")
    if all(k == nc for k in c) and all(k == nt for k in t):
        return None
    return VarLen([a + b for a, b in zip(c, t)])


def _joint_valid(context_valid: Tensor | None, target_valid: Tensor | None,
                 context_idx: Tensor, target_idx: Tensor) -> Tensor | None:
    """[B, Nc + Nt] validity of the predictor's input, or None when nothing is padded."""
    if context_valid is None and target_valid is None:
        return None
    if context_valid is None:
        context_valid = torch.ones_like(context_idx, dtype=torch.bool)
    if target_valid is None:
        target_valid = torch.ones_like(target_idx, dtype=torch.bool)
    return torch.cat([context_valid, target_valid], dim=1)
