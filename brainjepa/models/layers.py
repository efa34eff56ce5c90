"""Transformer building blocks shared by the encoder and the predictor (pre-norm ViT, timm layout).

Parameter names follow the reference layout (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``) so that official checkpoints map block by block without renaming.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainjepa.errors import InputError

LayerNorm = partial(nn.LayerNorm, eps=1e-6)
INIT_STD = 0.02


def gather_tokens(tokens: Tensor, index: Tensor) -> Tensor:
    """Keep some tokens of each sample. tokens: [B, N, D], index: [B, K] (long) -> [B, K, D]."""
    if index.dim() != 2 or index.shape[0] != tokens.shape[0]:
        raise ValueError(f"token index must be [B, K] with B={tokens.shape[0]}, got {tuple(index.shape)}")
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def key_padding_mask(valid: Tensor | None) -> Tensor | None:
    """Attention mask from token validity. valid: [B, N] bool -> [B, 1, 1, N] bool (True = attend).

    Every query (padded ones included) attends to the valid keys of its sample, so padded rows stay
    finite; a sample with no valid token at all attends to everything rather than to nothing.
    """
    if valid is None:
        return None
    if valid.dim() != 2 or valid.dtype != torch.bool:
        raise ValueError(f"token validity must be a [B, N] bool tensor, got {valid.dtype} {tuple(valid.shape)}")
    keys = valid | ~valid.any(dim=1, keepdim=True)
    return keys[:, None, None, :]


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample. x: [B, ...]."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        return self.fc2(self.act(self.fc1(x)))


def _flash_attn_function() -> Callable[..., Tensor]:
    """The flash_attn package's packed-QKV kernel, imported only when asked for."""
    if importlib.util.find_spec("flash_attn") is None:
        raise InputError("model.attention is 'flash_attn' but the flash_attn package is not installed; "
                         "install it (pip install 'brainjepa[gpu]') or use attention: sdpa, which picks "
                         "the same flash kernels on a GPU through torch")
    from flash_attn import flash_attn_qkvpacked_func
    return flash_attn_qkvpacked_func


class Attention(nn.Module):
    """Multi-head self-attention through SDPA, with an exact path that also returns the weights."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, backend: str = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self._flash = _flash_attn_function() if backend == "flash_attn" else None

    def _packed_qkv(self, x: Tensor) -> Tensor:
        """x: [B, N, D] -> [B, N, 3, H, D/H]."""
        B, N, D = x.shape
        return self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x: [B, N, D], attn_mask: [B, 1, 1, N] bool (True = attend) -> [B, N, D]."""
        B, N, D = x.shape
        qkv = self._packed_qkv(x)
        if self._flash is not None and attn_mask is None and x.is_cuda and qkv.dtype in (torch.float16,
                                                                                          torch.bfloat16):
            out = self._flash(qkv)  # [B, N, H, D/H]
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, N, D/H]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2)
        return self.proj(out.reshape(B, N, D))

    def forward_with_weights(self, x: Tensor, attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Explicit softmax(Q K^T / sqrt(d)). x: [B, N, D] -> ([B, N, D], weights [B, H, N, N])."""
        B, N, D = x.shape
        q, k, v = self._packed_qkv(x).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(B, N, D)
        return self.proj(out), weights


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)), with drop path."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, backend: str = "sdpa") -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, backend)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        x = x + drop_path(self.attn(self.norm1(x), attn_mask), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)

    def forward_with_attention(self, x: Tensor, attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: [B, N, D] -> ([B, N, D], attention weights [B, H, N, N])."""
        y, weights = self.attn.forward_with_weights(self.norm1(x), attn_mask)
        x = x + drop_path(y, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training), weights


def make_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                drop_path_rate: float, backend: str) -> nn.ModuleList:
    """``depth`` blocks with drop path rising linearly from 0 to ``drop_path_rate``."""
    rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist() if depth else []
    return nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias, r, backend) for r in rates)


@torch.no_grad()
def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise every Linear, the patch Conv2d and LayerNorm of ``module``.

    "trunc_normal" (the public code): weights ~ truncated normal, std 0.02 (cut at +-2, as timm's),
    biases 0. "xavier" (the paper): Xavier uniform weights (the Conv2d as a [D, patch] matrix, as MAE
    does), biases 0. LayerNorm: weight 1, bias 0. Frozen sin-cos tables are left alone.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if scheme == "trunc_normal":
                nn.init.trunc_normal_(m.weight, std=INIT_STD)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
            else:
                raise InputError(f"unknown init scheme {scheme!r}")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
