"""Model configuration: one frozen dataclass, sizes from named presets (docs/reference.md section 3)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Literal

from brainjepa.config import choices, from_mapping
from brainjepa.errors import InputError

Size = Literal["tiny", "small", "base", "large", "custom"]
Positional = Literal["gradient", "roi_sincos", "centroid"]
Init = Literal["trunc_normal", "xavier"]
AttentionBackend = Literal["sdpa", "flash_attn"]

# Widths and depths of the published sizes; "tiny" is ours, for tests and the CPU demo.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 96, "depth": 4, "num_heads": 4, "predictor_dim": 48, "predictor_depth": 2},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6, "predictor_dim": 192, "predictor_depth": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "predictor_dim": 384, "predictor_depth": 6},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "predictor_dim": 384, "predictor_depth": 12},
}
CHOICES: dict[str, tuple[str, ...]] = {
    "size": choices(Size), "positional": choices(Positional), "init": choices(Init),
    "attention": choices(AttentionBackend),
}
assert CHOICES["size"] == (*PRESETS, "custom")  # custom: no preset, every size given (e.g. a converted checkpoint)
SIZE_FIELDS = tuple(PRESETS["base"])
ATTENTION_ENV = "BRAINJEPA_ATTENTION"  # the attention backend of models rebuilt from a file (runtime_attention)


def runtime_attention() -> str:
    """The attention backend for a model rebuilt from a checkpoint or weights file: ``$BRAINJEPA_ATTENTION`` when
    set, else "sdpa". A file never chooses it (the backend is how this machine runs, not part of the weights)."""
    name = os.environ.get(ATTENTION_ENV, "").strip() or "sdpa"
    if name not in CHOICES["attention"]:
        raise InputError(f"{ATTENTION_ENV}={name!r} is not one of {', '.join(CHOICES['attention'])}")
    return name


@dataclass(frozen=True)
class ModelConfig:
    """Encoder and predictor hyper-parameters.

    Sizes left as None come from ``PRESETS[size]`` through :meth:`resolved`; ``size="custom"`` has no preset and
    needs every size (``SIZE_FIELDS``) given. The predictor uses the encoder's number of heads.

    Attributes:
        n_rois, n_timesteps: input matrix of one sample, ROIs x time steps.
        patch_size: consecutive time steps of one ROI per token; ``n_timesteps`` must be a multiple.
        n_gradients: columns of the gradient matrix fed to the spatial positional half.
        positional: spatial half of the positional embedding: "gradient" (the paper: a linear map of
            the brain gradients), "roi_sincos" (fixed sin-cos of the ROI index) or "centroid" (a
            linear map of the ROI centroids in mm); the paper's ablation alternatives.
        init: "trunc_normal" (the public code: truncated normal std 0.02 on every Linear and the
            patch projection) or "xavier" (the paper: Xavier uniform). Default: the paper.
        attention: "sdpa" (``F.scaled_dot_product_attention``) or "flash_attn" (the flash_attn
            package; used for fp16/bf16 CUDA inputs, unpadded or packed, other inputs go through SDPA; where
            the package is missing, SDPA with one warning). A runtime setting, not part of the model:
            :meth:`to_dict` (what checkpoints store) leaves it out and :meth:`from_checkpoint` ignores a stored
            one (:func:`runtime_attention` chooses).
    """

    size: Size = "base"
    n_rois: int = 450
    n_timesteps: int = 160
    patch_size: int = 16
    n_gradients: int = 30
    positional: Positional = "gradient"
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    predictor_dim: int | None = None
    predictor_depth: int | None = None
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path: float = 0.0
    init: Init = "xavier"
    attention: AttentionBackend = "sdpa"

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"model.{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("n_rois", "n_timesteps", "patch_size", "n_gradients"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"model.{name}: must be a positive integer, got {getattr(self, name)}")
        if self.n_timesteps % self.patch_size:
            raise InputError(f"model.n_timesteps ({self.n_timesteps}) is not a multiple of "
                             f"model.patch_size ({self.patch_size})")
        if not 0.0 <= self.drop_path < 1.0:
            raise InputError(f"model.drop_path: must be in [0, 1), got {self.drop_path}")
        if self.mlp_ratio <= 0:
            raise InputError(f"model.mlp_ratio: must be positive, got {self.mlp_ratio}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model") -> ModelConfig:
        """Build from a mapping (a YAML section); unknown keys and bad values are errors naming the key."""
        return from_mapping(cls, d, where)

    @classmethod
    def from_checkpoint(cls, d: dict[str, Any], where: str = "model_config") -> ModelConfig:
        """Build from a checkpoint's or weights file's ``model_config``. A stored ``attention`` (files written
        before it became a runtime setting) is ignored: the backend is :func:`runtime_attention`'s."""
        stored = {k: v for k, v in dict(d).items() if k != "attention"}
        return dataclasses.replace(from_mapping(cls, stored, where), attention=runtime_attention())

    def to_dict(self) -> dict[str, Any]:
        """Every field but the runtime ``attention`` backend (what checkpoints store as ``model_config``)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "attention"}

    def resolved(self) -> ModelConfig:
        """A copy with every size filled from the preset, checked for divisibility."""
        if self.size == "custom":
            missing = [k for k in SIZE_FIELDS if getattr(self, k) is None]
            if missing:
                raise InputError(f"model.size 'custom' needs every size: {', '.join(SIZE_FIELDS)} (missing "
                                 f"{', '.join(missing)}); or name a preset ({', '.join(PRESETS)})")
        preset = PRESETS.get(self.size, {})
        sizes = {k: v if getattr(self, k) is None else getattr(self, k) for k, v in preset.items()}
        cfg = dataclasses.replace(self, **sizes)
        cfg._check_widths()
        return cfg

    def _check_widths(self) -> None:
        assert self.embed_dim is not None and self.num_heads is not None and self.predictor_dim is not None
        if int(self.depth) < 0 or int(self.predictor_depth) < 0:
            raise InputError("model.depth and model.predictor_depth must be >= 0")
        # Each positional half is a sin-cos table of width dim/2, so dim/4 must be an integer.
        for name in ("embed_dim", "predictor_dim"):
            dim = getattr(self, name)
            if dim < 4 or dim % 4 or dim % self.num_heads:
                raise InputError(f"model.{name} ({dim}) must be a multiple of 4 and of "
                                 f"model.num_heads ({self.num_heads})")

    @property
    def n_time_patches(self) -> int:
        """W: time patches per ROI."""
        return self.n_timesteps // self.patch_size

    @property
    def n_tokens(self) -> int:
        """R * W: tokens per sample, ROI-major (token = roi * W + time_patch)."""
        return self.n_rois * self.n_time_patches
