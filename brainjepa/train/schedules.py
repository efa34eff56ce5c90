"""Schedules as pure functions of the optimizer step, so resuming needs no replay (nanoGPT's ``get_lr``)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, start: float, peak: float, final: float) -> float:
    """Linear warm-up from ``start`` to ``peak`` over ``warmup_steps``, then cosine to ``final`` at ``total_steps``."""
    if step < warmup_steps:
        return start + (peak - start) * step / max(warmup_steps, 1)
    progress = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_ramp(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (``total_steps``): the weight-decay schedule."""
    progress = min(1.0, step / max(total_steps, 1))
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_momentum(step: int, total_steps: int, start: float, end: float, schedule: str = "paper",
                 accumulation_steps: int = 1) -> float:
    """EMA momentum at an optimizer step.

    ``paper``: linear from ``start`` to ``end`` over all optimizer steps. ``code``: the public code's schedule,
    sized in iterations (optimizer steps x accumulation) but advanced once per optimizer step, so it only
    travels 1/accumulation of the way (0.996 -> ~0.9965 with 8 accumulation steps).
    """
    if schedule == "paper":
        horizon = total_steps
    elif schedule == "code":
        horizon = total_steps * accumulation_steps
    else:
        raise ValueError(f"EMA schedule must be 'paper' or 'code', not {schedule!r}")
    return start + (end - start) * min(1.0, step / max(horizon, 1))
