"""Downstream heads on encoder tokens: fine-tuning (mean pool), the linear probe and the attentive probe.

The probes standardise their inputs with the mean and std of the training rows (:class:`Standardise`: buffers,
saved and applied with the probe), except the paper's linear probe (BatchNorm without affine, ``norm="batchnorm"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainjepa.models.layers import INIT_STD


class Standardise(nn.Module):
    """(x - mean) / std with the statistics of the training rows kept as buffers (in the state dict, so prediction
    applies the training transform). ``shape``: the trailing dims of the inputs ([D] or [R, D]); identity until
    :meth:`fit`."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @torch.no_grad()
    def fit(self, x: Tensor) -> Standardise:
        """Statistics over the rows of ``x`` [N, *shape] (float64; a constant coordinate keeps std 1)."""
        x = x.double()
        mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
        std = torch.where(std > 1e-8 * (1 + mean.abs()), std, torch.ones_like(std))
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))
        return self

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


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

    @torch.no_grad()
    def load_probe(self, probe: LinearProbe) -> None:
        """Start from a linear probe fitted on this head's input at initialisation (the pooled tokens, LayerNorm-ed
        without affine): the LayerNorm's affine takes the probe's standardisation (weight 1 / std, bias
        -mean / std), the Linear the probe's weights, so the head computes what the probe does (LP-FT)."""
        mean, std = probe.standardisation()
        self.norm.weight.copy_(1.0 / std)
        self.norm.bias.copy_(-mean / std)
        self.fc.weight.copy_(probe.fc.weight)
        self.fc.bias.copy_(probe.fc.bias)


class FineTuneModel(nn.Module):
    """Encoder + :class:`MeanPoolHead`. x [B, 1, R, T] -> [B, out]."""

    def __init__(self, encoder: nn.Module, n_outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = MeanPoolHead(encoder.embed_dim, n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class LinearProbe(nn.Module):
    """A linear probe: a normalisation, then Linear. features [B, D] -> [B, out].

    ``norm="batchnorm"``: the paper's (and MAE's) BatchNorm without affine (batch statistics in training, running
    ones in evaluation); ``norm="standardise"``: fixed training-row statistics (:class:`Standardise`, set with
    ``probe.norm.fit(train_features)``)."""

    def __init__(self, dim: int, n_outputs: int, norm: str = "batchnorm") -> None:
        super().__init__()
        if norm not in ("batchnorm", "standardise"):
            raise ValueError(f"linear probe: norm {norm!r} is not batchnorm or standardise")
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if norm == "batchnorm" else Standardise((dim,))
        self.fc = nn.Linear(dim, n_outputs)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def standardisation(self) -> tuple[Tensor, Tensor]:
        """(mean [D], std [D]) of the normalisation as applied in evaluation mode: the probe is
        ``fc((x - mean) / std)``."""
        if isinstance(self.norm, Standardise):
            return self.norm.mean.detach().clone(), self.norm.std.detach().clone()
        return (self.norm.running_mean.detach().clone(),
                torch.sqrt(self.norm.running_var.detach() + self.norm.eps))

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.norm(features))


class AttentiveProbe(nn.Module):
    """A learned query cross-attending over frozen tokens (V-JEPA's attentive pooler), then LayerNorm + Linear.

    tokens [B, N, D] -> [B, out]. One query, ``num_heads`` heads (SDPA), keys and values from a linear map of
    the layer-normed tokens, an output projection with a residual MLP on the pooled vector. With ``n_tokens``
    the tokens are first standardised per (token, feature) by :class:`Standardise` (``probe.standardise.fit``
    on the training rows [N, n_tokens, D]); without, they are read as they are.
    """

    def __init__(self, dim: int, n_outputs: int, num_heads: int = 4, mlp_ratio: float = 4.0,
                 n_tokens: int | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attentive probe: width {dim} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.standardise = Standardise((n_tokens, dim)) if n_tokens else nn.Identity()
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
        tokens = self.standardise(tokens)
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
