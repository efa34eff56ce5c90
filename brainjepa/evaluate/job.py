"""The setup every evaluation and capability job shares: one process, torch threads, seed, device, precision."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from brainjepa.errors import InputError


def one_process(name: str) -> None:
    """Refuse to run under torchrun with several processes (jobs that are not data-parallel)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError(f"{name} runs in one process (not under torchrun)")


@dataclass
class TorchJob:
    """A job's torch side: ``dist`` (rank, world size), ``device``, and :meth:`autocast` for ``precision``."""

    dist: Any
    device: Any
    precision: str
    started: float = field(default_factory=time.perf_counter)

    def autocast(self):
        """The autocast context of this job's device and precision (bf16 on GPU by default, fp32 on CPU)."""
        from brainjepa.train.runtime import autocast_for

        return autocast_for(self.device, self.precision)


def set_threads(threads: int) -> None:
    """torch's intra-op threads (0: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def seed_everything(seed: int, with_torch: bool) -> None:
    """Python's, numpy's global and (``with_torch``) torch's generators from ``seed``."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    if with_torch:
        import torch

        torch.manual_seed(seed)


def torch_job(device_kind: str, precision: str, *, threads: int = 0, seed: int | None = None) -> TorchJob:
    """Set torch's threads (``threads`` > 0) and seed (``seed`` not None), then pick the device (the process group
    under torchrun): in that order, so a job's random draws do not depend on which of them it calls."""
    import torch

    from brainjepa.train.runtime import setup_distributed

    set_threads(threads)
    if seed is not None:
        torch.manual_seed(seed)
    dist, device = setup_distributed(device_kind)
    return TorchJob(dist, device, precision)


def seconds_since(t0: float) -> float:
    """Wall seconds since ``t0`` (``time.perf_counter``), as a record stores them."""
    return round(time.perf_counter() - t0, 2)
