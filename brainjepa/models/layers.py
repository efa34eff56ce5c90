"""Transformer building blocks shared by the encoder and the predictor (pre-norm ViT, timm layout).

Parameter names follow the reference layout (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``) so that official checkpoints map block by block without renaming.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainjepa.errors import InputError
from brainjepa.models.config import ATTENTION_ENV, CHOICES

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


class VarLen:
    """Where each sample lies in a packed row: B samples' valid tokens laid end to end, [1, T, D] with
    T = sum(lengths). Lengths are host integers (from the mask collator), so nothing here reads the device."""

    def __init__(self, lengths: Sequence[int]) -> None:
        self.lengths = tuple(int(n) for n in lengths)
        if any(n < 0 for n in self.lengths):
            raise ValueError(f"sample lengths must be non-negative, got {self.lengths}")
        self.total = sum(self.lengths)
        self.max_length = max(self.lengths, default=0)
        self._tables: dict[tuple[str, torch.device], Tensor] = {}

    def __len__(self) -> int:
        return len(self.lengths)

    def _table(self, kind: str, device: torch.device) -> Tensor:
        """``lengths`` [B] (int64) or ``cu_seqlens`` [B + 1] (int32, offsets), made once per device."""
        key = (kind, torch.device(device))
        if key not in self._tables:
            values = self.lengths if kind == "lengths" else (0, *itertools.accumulate(self.lengths))
            dtype = torch.int64 if kind == "lengths" else torch.int32
            self._tables[key] = torch.tensor(values, dtype=dtype).to(device, non_blocking=True)
        return self._tables[key]

    def cu_seqlens(self, device: torch.device) -> Tensor:
        """[B + 1] int32 offsets of the samples in the packed row (flash-attn's varlen layout)."""
        return self._table("cu_seqlens", device)

    def per_token(self, values: Tensor) -> Tensor:
        """One value per sample [B] -> each repeated over the sample's tokens [T]."""
        return values.repeat_interleave(self._table("lengths", values.device), dim=0, output_size=self.total)

    def pack(self, tokens: Tensor) -> Tensor:
        """tokens: [B, N, D], each sample's valid tokens first -> [1, T, D]."""
        if tokens.shape[0] != len(self) or self.max_length > tokens.shape[1]:
            raise ValueError(f"tokens {tuple(tokens.shape)} do not hold samples of lengths {self.lengths}")
        return torch.cat([tokens[b, :n] for b, n in enumerate(self.lengths)])[None]

    def unpack(self, packed: Tensor, n: int) -> Tensor:
        """packed: [1, T, D] -> [B, n, D], each sample's tokens first, zeros after."""
        parts = packed[0].split(self.lengths)
        return torch.stack([F.pad(part, (0, 0, 0, n - part.shape[0])) for part in parts])


def padding_plan(shape: tuple[int, int], valid: Tensor | None,
                 lengths: Sequence[int] | None) -> tuple[Tensor | None, VarLen | None]:
    """How a batch of padded token lists [B, N] is attended: (attn_mask [B, 1, 1, N] or None, VarLen or None).

    ``lengths`` (host ints: each sample's number of valid tokens, a prefix of its row) decide without reading the
    device: every sample full -> neither (no mask, so SDPA may pick its flash kernel); else the valid tokens are
    packed and attended per sample (VarLen), never a mask. Without ``lengths``, ``valid`` [B, N] bool gives the
    key-padding mask (None: nothing padded).
    """
    if lengths is None:
        return key_padding_mask(valid), None
    b, n = shape
    lengths = tuple(int(k) for k in lengths)
    if len(lengths) != b or any(not 0 <= k <= n for k in lengths):
        raise ValueError(f"sample lengths {lengths} do not fit token lists [{b}, {n}]")
    if all(k == n for k in lengths):
        return None, None
    return None, VarLen(lengths)


def drop_path(x: Tensor, p: float, training: bool, varlen: VarLen | None = None) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample. x: [B, ...], or [1, T, D] packed."""
    if p == 0.0 or not training:
        return x
    if varlen is not None:  # one draw per sample, spread over its tokens
        keep = varlen.per_token(x.new_empty(len(varlen)).bernoulli_(1 - p))[None, :, None]
    else:
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class Mlp(nn.Module):
    """The transformer block's feed-forward part: Linear(dim, hidden), GELU, Linear(hidden, dim)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        return self.fc2(self.act(self.fc1(x)))


_FLASH_WARNED = False


def _flash_attn_functions() -> tuple[Callable[..., Tensor], Callable[..., Tensor] | None] | None:
    """The flash_attn package's packed-QKV kernels (dense, varlen), imported only when asked for; None, with one
    warning per process, where the package is missing (SDPA then runs: the same flash kernels through torch
    for unpadded calls on a GPU)."""
    global _FLASH_WARNED
    if importlib.util.find_spec("flash_attn") is None:
        if not _FLASH_WARNED:
            _FLASH_WARNED = True
            warnings.warn("attention 'flash_attn' asked for, but the flash_attn package is not installed: using "
                          "SDPA (install it with pip install 'brainjepa[gpu]', or choose model.attention / "
                          f"{ATTENTION_ENV}: sdpa)", RuntimeWarning, stacklevel=3)
        return None
    import flash_attn

    return flash_attn.flash_attn_qkvpacked_func, getattr(flash_attn, "flash_attn_varlen_qkvpacked_func", None)


class Attention(nn.Module):
    """Multi-head self-attention through SDPA, with an exact path that also returns the weights.

    backend: "sdpa" or "flash_attn" (a runtime choice: :func:`set_attention_backend` changes it).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, backend: str = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        """"sdpa", or "flash_attn" (SDPA, with one warning, where the package is missing)."""
        if backend not in CHOICES["attention"]:
            raise InputError(f"model.attention: {backend!r} is not one of {', '.join(CHOICES['attention'])}")
        self._flash = _flash_attn_functions() if backend == "flash_attn" else None
        self.backend = "flash_attn" if self._flash is not None else "sdpa"

    def _packed_qkv(self, x: Tensor) -> Tensor:
        """x: [B, N, D] -> [B, N, 3, H, D/H]."""
        B, N, D = x.shape
        return self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)

    def _flash_fits(self, qkv: Tensor) -> bool:
        """flash_attn's kernels take fp16/bf16 CUDA tensors only."""
        return self._flash is not None and qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, varlen: VarLen | None = None) -> Tensor:
        """x: [B, N, D], attn_mask: [B, 1, 1, N] bool (True = attend) -> [B, N, D].

        varlen: x is packed, [1, T, D] (:class:`VarLen`); each sample attends within itself, without a mask.
        """
        B, N, D = x.shape
        qkv = self._packed_qkv(x)
        if varlen is not None:
            if attn_mask is not None or B != 1 or N != varlen.total:
                raise ValueError(f"packed attention takes x [1, {varlen.total}, D] and no mask, got {tuple(x.shape)}")
            out = self._varlen(qkv[0], varlen)  # [T, H, D/H]
        elif attn_mask is None and self._flash_fits(qkv):
            out = self._flash[0](qkv)  # [B, N, H, D/H]
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, N, D/H]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2)
        return self.proj(out.reshape(B, N, D))

    def _varlen(self, qkv: Tensor, varlen: VarLen) -> Tensor:
        """Attention within each sample of a packed row. qkv: [T, 3, H, D/H] -> [T, H, D/H].

        flash_attn's varlen kernel in one call where it fits; otherwise one unmasked SDPA call per sample
        ([1, H, n, D/H]: SDPA may pick its flash kernel), so no padded token is computed either way.
        """
        if self._flash_fits(qkv) and self._flash[1] is not None:
            return self._flash[1](qkv, varlen.cu_seqlens(qkv.device), varlen.max_length)
        parts = []
        for part in qkv.split(varlen.lengths):  # [n, 3, H, D/H]
            if part.shape[0] == 0:
                parts.append(part[:, 0])
                continue
            q, k, v = part.permute(1, 2, 0, 3).unsqueeze(1)  # each [1, H, n, D/H]
            parts.append(F.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1))
        return torch.cat(parts)

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


def set_attention_backend(module: nn.Module, backend: str) -> nn.Module:
    """Switch every attention layer of ``module`` to ``backend`` ("sdpa" | "flash_attn"); returns ``module``."""
    for m in module.modules():
        if isinstance(m, Attention):
            m.set_backend(backend)
    return module


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

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, varlen: VarLen | None = None) -> Tensor:
        """x: [B, N, D] (or packed [1, T, D] with ``varlen``) -> the same shape."""
        x = x + drop_path(self.attn(self.norm1(x), attn_mask, varlen), self.drop_path, self.training, varlen)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training, varlen)

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
