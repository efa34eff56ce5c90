"""Which units, rows and windows a data consumer reads: pure functions of (seed, epoch, rank, worker, run).

No torch here, so that code that only needs the window schedule (downstream task windows, feature caches)
does not import it. :mod:`brainjepa.data.dataset` documents the order these functions produce.
"""

from __future__ import annotations

import zlib

import numpy as np

# Stream tags: the generators for unit order, row order and window starts never share a seed.
_UNITS, _ROWS, _WINDOWS = 0, 1, 2


def stable_hash(text: str) -> int:
    """A platform- and process-independent 32-bit hash (never Python's salted ``hash``)."""
    return zlib.crc32(text.encode("utf-8"))


def assign_units(n_units: int, *, mode: str, seed: int, epoch: int, rank: int, world_size: int,
                 worker: int, num_workers: int) -> list[int]:
    """The unit indices (in reading order) of one consumer: DDP rank ``rank`` of ``world_size``, DataLoader
    worker ``worker`` of ``num_workers``.

    Train mode permutes all units from (seed, epoch); eval mode keeps manifest order. The rank takes every
    ``world_size``-th unit of that order, then the worker every ``num_workers``-th of the rank's: the
    consumers' sets are disjoint and together hold every unit once.
    """
    if not (0 <= rank < world_size and 0 <= worker < num_workers):
        raise ValueError(f"rank {rank} of {world_size} / worker {worker} of {num_workers} is out of range")
    if mode == "train":
        order = np.random.default_rng([seed, epoch, _UNITS]).permutation(n_units)
    else:
        order = np.arange(n_units)
    return [int(u) for u in order[rank::world_size][worker::num_workers]]


def window_starts(n_timepoints: int, window: int, *, mode: str, seed: int = 0, epoch: int = 0,
                  run_id: str = "") -> list[int]:
    """Start indices of the windows taken from one run (see the module docstring)."""
    if mode == "eval":
        return list(range(0, (n_timepoints // window) * window, window))
    if n_timepoints < window:
        return []
    rng = np.random.default_rng([seed, epoch, _WINDOWS, stable_hash(run_id)])
    return [int(rng.integers(0, n_timepoints - window + 1))]


