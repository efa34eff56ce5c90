"""The ``mask`` section of the training config: which sampler, and the block-size ranges (no torch needed).

The samplers are in :mod:`brainjepa.train.masks`; the design is in docs/masks.md.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from brainjepa.config import from_mapping
from brainjepa.errors import InputError

MaskMode = Literal["paper", "reference", "random"]  # random: MAE / BrainLM-style uniform patch masking
MODES = typing.get_args(MaskMode)
Range = tuple[float, float]


@dataclass(frozen=True)
class MaskConfig:
    """Mask sampling; ranges are fractions ``(lo, hi)`` of R (``*_roi``) or of W (``*_time``).

    The same ranges drive both modes (the released config's ``enc_mask_scale``, ``pred_mask_R_scale``,
    ``pred_mask_T_roi_scale``, ``pred_mask_R_roi_scale``, ``pred_mask_T_scale``). ``random`` mode ignores them:
    each sample hides ``mask_ratio`` of its tokens, drawn uniformly (MAE; BrainLM masks 20-75 %).
    """

    mode: MaskMode = "paper"
    observation_roi: Range = (0.84, 1.0)
    observation_time: Range = (0.84, 1.0)
    alpha_roi: Range = (0.45, 0.6)
    alpha_time: Range = (0.2, 0.6)
    beta_gamma_roi: Range = (0.15, 0.3)
    beta_gamma_time: Range = (0.0, 0.4)
    mask_ratio: float = 0.75

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mask config: mode must be one of {MODES}, not {self.mode!r}")
        for f in dataclasses.fields(self):
            if f.name in ("mode", "mask_ratio"):
                continue
            value = getattr(self, f.name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise InputError(f"mask config: {f.name} must be two numbers (lo, hi), not {value!r}") from None
            if not 0.0 <= lo <= hi <= 1.0:
                raise InputError(f"mask config: {f.name} = ({lo}, {hi}) must satisfy 0 <= lo <= hi <= 1")
            object.__setattr__(self, f.name, (lo, hi))
        if isinstance(self.mask_ratio, bool) or not isinstance(self.mask_ratio, (int, float)) or \
                not 0.0 < self.mask_ratio < 1.0:
            raise InputError(f"mask config: mask_ratio must be a number in (0, 1), not {self.mask_ratio!r}")
        if self.observation_roi[0] <= 0 or self.observation_time[0] <= 0:
            raise InputError("mask config: the observation block's fractions must be above 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "mask") -> MaskConfig:
        """Build from a YAML/JSON mapping (ranges may be lists); unknown keys are errors naming the key."""
        return from_mapping(cls, d, where)


