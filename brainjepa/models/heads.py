"""Downstream heads on encoder tokens: fine-tuning (mean pool), the linear probe and the attentive probe."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainjepa.models.layers import INIT_STD


class MeanPoolHead(nn.Module):
    """The paper's fine-tuning head: mean over all tokens -> LayerNorm -> Linear. tokens [B, N, D] -> [B, out]."""

    def __init__(self, dim: int, n_outputs: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, n_outputs)
        nn.init.trunc_normal_(self.fc.weight, std=INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(self.norm(tokens.mean(dim=1)))


class FineTuneModel(nn.Module):
    """Encoder + :class:`MeanPoolHead`. x [B, 1, R, T] -> [B, out]."""

    def __init__(self, encoder: nn.Module, n_outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = MeanPoolHead(encoder.embed_dim, n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class LinearProbe(nn.Module):
    """The paper's (and MAE's) linear probe: BatchNorm without affine, then Linear. features [B, D] -> [B, out]."""

    def __init__(self, dim: int, n_outputs: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.fc = nn.Linear(dim, n_outputs)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.bn(features))


class AttentiveProbe(nn.Module):
    """A learned query cross-attending over frozen tokens (V-JEPA's attentive pooler), then LayerNorm + Linear.

    tokens [B, N, D] -> [B, out]. One query, ``num_heads`` heads (SDPA), keys and values from a linear map of
    the layer-normed tokens, an output projection with a residual MLP on the pooled vector.
    """

    def __init__(self, dim: int, n_outputs: int, num_heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attentive probe: width {dim} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_in = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))
        self.norm_out = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, n_outputs)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=INIT_STD)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.query, std=INIT_STD)

    def _qkv(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = tokens.shape
        h = self.num_heads
        kv = self.kv(self.norm_in(tokens)).reshape(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        q = self.q(self.query).reshape(1, 1, h, d // h).transpose(1, 2).expand(b, -1, -1, -1)
        return q, kv[0], kv[1]                                           # [B, H, 1 or N, d/h]

    def pool(self, tokens: Tensor) -> Tensor:
        """tokens [B, N, D] -> pooled [B, D]."""
        q, k, v = self._qkv(tokens)
        out = F.scaled_dot_product_attention(q, k, v)                   # [B, H, 1, d/h]
        pooled = self.proj(out.transpose(1, 2).reshape(tokens.shape[0], -1)) + self.query[:, 0]
        return pooled + self.mlp(self.norm_mlp(pooled))

    def attention(self, tokens: Tensor) -> Tensor:
        """The query's attention over the tokens, per head: [B, H, N] (rows sum to 1), for interpretation."""
        q, k, _ = self._qkv(tokens)
        return torch.softmax(q @ k.transpose(-2, -1) / k.shape[-1] ** 0.5, dim=-1)[:, :, 0]

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(self.norm_out(self.pool(tokens)))
