"""The exponential moving average of the target encoder."""

from __future__ import annotations

import torch


@torch.no_grad()
def ema_update(target: torch.nn.Module, online: torch.nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, for every trainable parameter (fused)."""
    pairs = [(t, o) for t, o in zip(target.parameters(), online.parameters()) if o.requires_grad]
    if not pairs:
        return
    target_params = [t for t, _ in pairs]
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, [o.detach() for _, o in pairs], alpha=1.0 - momentum)
