"""Spatiotemporal masks of Brain-JEPA: which tokens the context encoder sees and which it must predict.

Tokens are ROI-major on an R x W grid (R ROIs, W time patches; 450 x 10 in the paper): token = roi * W + t.
:class:`MaskCollator` collates ``(x, y)`` items into a batch and adds, per sample, the context tokens and the
target tokens as padded index tensors (the model gathers them). ``paper`` mode samples the paper's observation
block, then the alpha (cross-ROI), beta (cross-time) and gamma (double-cross) target regions, pairwise
disjoint from the context; ``random`` mode hides a fixed share of tokens drawn uniformly (the MAE / BrainLM
objective's masking: context = visible tokens, targets = the hidden ones); ``reference`` mode reproduces the
public code's collator (its sizes, its per-batch draws, its beta-ROI bug, lists truncated to the batch
minimum). A batch's masks are a pure function of (seed, DDP rank, epoch, step),
:meth:`MaskCollator.masks_for`, so DataLoader workers and resumed runs reproduce them; in paper mode each
sample's come from its index in the global batch, so DDP ranks draw what one process with the global batch
would. The design, every choice made where the paper is silent and the measured statistics: docs/masks.md
(facts of the paper and code: docs/reference.md section 4).
"""

from __future__ import annotations

import os
import zlib
from typing import Any, NamedTuple

import numpy as np
import torch

from brainjepa.train.mask_config import MODES, MaskConfig, Range  # noqa: F401 (the masks API)

REGIONS = ("alpha", "beta", "gamma")  # target_region codes 0, 1, 2; -1 is padding
_STREAM = zlib.crc32(b"brainjepa.masks")  # keeps mask seeds apart from the data loader's streams
_REFERENCE_EDGE = 0.3  # public code: beta/gamma times from the first/last 3 of 10 time patches



# -- small vectorised samplers (numpy; B = batch size) ------------------------------------------------------
def _sizes(rng: np.random.Generator, bounds: Range, n: int | np.ndarray, size: int,
           stochastic: bool = True) -> np.ndarray:
    """Block sizes [size] (int64): ``f * n`` with ``f ~ U(lo, hi)``, rounded stochastically or floored."""
    x = rng.uniform(bounds[0], bounds[1], size) * n
    if stochastic:
        x = x + rng.random(size)
    return np.floor(x).astype(np.int64)


def _random_subset(rng: np.random.Generator, candidates: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """A uniformly random subset of each row's candidates: [B, N] bool, ``min(counts[b], candidates)`` True."""
    keys = rng.random(candidates.shape)
    keys[~candidates] = 2.0  # non-candidates come after every candidate
    counts = np.minimum(counts, candidates.sum(axis=1))
    kth = np.sort(keys, axis=1)[np.arange(len(counts)), np.maximum(counts - 1, 0)]
    return (keys <= np.where(counts > 0, kth, -1.0)[:, None]) & candidates


def _interval(start: np.ndarray, length: np.ndarray, n: int) -> np.ndarray:
    """Contiguous ranges ``[start, start + length)`` of ``range(n)``: [B, n] bool."""
    t = np.arange(n)
    return (t >= start[:, None]) & (t < (start + length)[:, None])


def _uniform_int(rng: np.random.Generator, n_choices: np.ndarray) -> np.ndarray:
    """Per row an integer uniform in ``[0, n_choices)`` (n_choices >= 1): [B] int64."""
    return np.floor(rng.random(n_choices.shape) * n_choices).astype(np.int64)


class Blocks(NamedTuple):
    """Paper-mode blocks of a batch: ROI sets [B, R] bool and time sets [B, W] bool.

    ``obs_*`` is the observation before the removal; ``ctx_*`` the context after it.
    """

    obs_roi: np.ndarray
    obs_time: np.ndarray
    ctx_roi: np.ndarray
    ctx_time: np.ndarray
    alpha_roi: np.ndarray
    alpha_time: np.ndarray
    beta_roi: np.ndarray
    beta_time: np.ndarray
    gamma_roi: np.ndarray
    gamma_time: np.ndarray


def _observation_and_alpha(rng: np.random.Generator, b: int, r: int, w: int, cfg: MaskConfig):
    """Observation ROIs/times, alpha ROIs/times ([B, R] / [B, W] bool) and the time span beta must avoid
    (``keep_start``, ``keep_end`` [B]: alpha's times, or one observed patch if alpha has none)."""
    n_obs_roi = np.clip(_sizes(rng, cfg.observation_roi, r, b), 1, r)
    obs_roi = _random_subset(rng, np.ones((b, r), bool), n_obs_roi)
    width = np.clip(_sizes(rng, cfg.observation_time, w, b), 1, w)
    start = _uniform_int(rng, w - width + 1)
    obs_time = _interval(start, width, w)
    # one random observed ROI stays out of alpha, so the context always has an ROI
    protected = _random_subset(rng, obs_roi, np.ones(b, np.int64))
    n_alpha_roi = np.clip(_sizes(rng, cfg.alpha_roi, r, b), 0, r - 1)
    alpha_roi = _random_subset(rng, ~protected, n_alpha_roi)
    alpha_len = np.minimum(np.clip(_sizes(rng, cfg.alpha_time, w, b), 0, w), width)
    alpha_start = start + _uniform_int(rng, width - alpha_len + 1)
    alpha_time = _interval(alpha_start, alpha_len, w)
    keep_start = np.where(alpha_len > 0, alpha_start, np.minimum(alpha_start, start + width - 1))
    keep_end = np.where(alpha_len > 0, alpha_start + alpha_len, keep_start + 1)
    return obs_roi, obs_time, alpha_roi, alpha_time, keep_start, keep_end


def _beta_time(rng: np.random.Generator, keep_start: np.ndarray, keep_end: np.ndarray, w: int,
               bounds: Range) -> np.ndarray:
    """Beta's times [B, W] bool: a contiguous range outside ``[keep_start, keep_end)``, placed uniformly
    among the positions that fit; its length is clipped to the larger gap beside the kept span."""
    length = np.minimum(np.clip(_sizes(rng, bounds, w, len(keep_start)), 0, w),
                        np.maximum(keep_start, w - keep_end))
    n_left = np.maximum(keep_start - length + 1, 0)
    n_right = np.maximum(w - keep_end - length + 1, 0)
    j = _uniform_int(rng, n_left + n_right)
    start = np.where(j < n_left, j, keep_end + j - n_left)
    return _interval(start, length, w)


def paper_blocks(rng: np.random.Generator, batch_size: int, n_rois: int, n_time: int,
                 cfg: MaskConfig) -> Blocks:
    """Sample the paper-mode blocks of one batch (module docstring, steps 1-5)."""
    b, r, w = batch_size, n_rois, n_time
    obs_roi, obs_time, alpha_roi, alpha_time, keep_start, keep_end = _observation_and_alpha(rng, b, r, w, cfg)
    ctx_roi = obs_roi & ~alpha_roi
    beta_time = _beta_time(rng, keep_start, keep_end, w, cfg.beta_gamma_time)
    ctx_time = obs_time & ~beta_time
    beta_roi = _random_subset(rng, ctx_roi, _sizes(rng, cfg.beta_gamma_roi, r, b))
    gamma_roi = _random_subset(rng, ~ctx_roi, _sizes(rng, cfg.beta_gamma_roi, r, b))
    gamma_time = _random_subset(rng, ~ctx_time, _sizes(rng, cfg.beta_gamma_time, w, b))
    return Blocks(obs_roi, obs_time, ctx_roi, ctx_time, alpha_roi, alpha_time, beta_roi, beta_time,
                  gamma_roi, gamma_time)


def _outer(roi: np.ndarray, time: np.ndarray) -> np.ndarray:
    """ROI set [B, R] x time set [B, W] -> token mask [B, R * W] (ROI-major)."""
    return (roi[:, :, None] & time[:, None, :]).reshape(roi.shape[0], -1)


def _paper_grids(rng: np.random.Generator, b: int, r: int, w: int, cfg: MaskConfig):
    """Context mask [B, R*W] bool and target codes [B, 1, R*W] int8 (0 alpha, 1 beta, 2 gamma, -1 none)
    of one paper-mode batch; the regions are disjoint, so one grid holds them all."""
    k = paper_blocks(rng, b, r, w, cfg)
    codes = np.full((b, r * w), -1, np.int8)
    for code, (roi, time) in enumerate(((k.alpha_roi, k.alpha_time), (k.beta_roi, k.beta_time),
                                        (k.gamma_roi, k.gamma_time))):
        codes[_outer(roi, time)] = code
    return _outer(k.ctx_roi, k.ctx_time), codes[:, None, :]


# -- reference mode -----------------------------------------------------------------------------------------
def _size_span(bounds: Range, n: int) -> tuple[int, int]:
    """Smallest and largest ``floor(f * n)`` for ``f`` in ``[lo, hi)`` (``lo`` when lo == hi)."""
    lo, hi = bounds
    return int(np.floor(lo * n)), int(np.floor(lo * n) if hi == lo else np.ceil(hi * n) - 1)


def check_reference_grid(n_rois: int, n_time: int, cfg: MaskConfig) -> None:
    """Raise ValueError where the public code's sampler would fail on this grid and these ranges."""
    obs_w = _size_span(cfg.observation_time, n_time)
    alpha_w = _size_span(cfg.alpha_time, n_time)
    if _size_span(cfg.observation_roi, n_rois)[1] >= n_rois or obs_w[1] >= n_time or obs_w[0] < 1:
        raise ValueError(f"reference masks on {n_rois} x {n_time}: the observation must leave out at least "
                         "one ROI and one time patch and hold at least one patch (its upper fractions < 1)")
    if alpha_w[1] >= obs_w[0]:
        raise ValueError(f"reference masks on {n_rois} x {n_time}: alpha spans up to {alpha_w[1]} time "
                         f"patches but the observation may span only {obs_w[0]}; the public code needs alpha "
                         "narrower than the observation (use mode 'paper' on this grid)")


def _reference_side(rng: np.random.Generator, edge: np.ndarray, pools: tuple[np.ndarray, np.ndarray],
                    cfg: MaskConfig) -> tuple[np.ndarray, np.ndarray]:
    """One beta/gamma draw of the reference mode on one edge.

    edge: [B, W] candidate times; pools: the beta and gamma ROI candidates [B, R] (disjoint).
    Returns the times [B, W] bool and target codes [B, R*W] int8 (1 beta, 2 gamma, -1 none).
    """
    b, w = edge.shape
    f = rng.uniform(*cfg.beta_gamma_roi, b)  # one fraction for both pools, as upstream
    rois = [_random_subset(rng, p, np.floor(p.sum(1) * f).astype(np.int64)) for p in pools]
    times = _random_subset(rng, edge, _sizes(rng, cfg.beta_gamma_time, w, b, stochastic=False))
    codes = np.full((b, edge.shape[1] * rois[0].shape[1]), -1, np.int8)
    codes[_outer(rois[0], times)] = 1
    codes[_outer(rois[1], times)] = 2
    return times, codes


def _reference_grids(rng: np.random.Generator, b: int, r: int, w: int, cfg: MaskConfig):
    """Context mask [B, R*W] bool and target codes [B, 3, R*W] int8 of the parts alpha, right edge, left
    edge (0 alpha, 1 beta, 2 gamma, -1 none) of one reference-mode batch (module docstring)."""
    alpha_h, alpha_w = (_sizes(rng, bounds, n, 1, stochastic=False)[0]
                        for bounds, n in ((cfg.alpha_roi, r), (cfg.alpha_time, w)))
    obs_h, obs_w = (_sizes(rng, bounds, n, 1, stochastic=False)[0]
                    for bounds, n in ((cfg.observation_roi, r), (cfg.observation_time, w)))
    every = np.ones((b, r), bool)
    obs_roi = _random_subset(rng, every, np.full(b, obs_h))
    start = _uniform_int(rng, np.full(b, w - obs_w))
    alpha_roi = _random_subset(rng, every, np.full(b, alpha_h))
    alpha_start = start + _uniform_int(rng, np.full(b, obs_w - alpha_w))
    alpha = np.where(_outer(alpha_roi, _interval(alpha_start, np.full(b, alpha_w), w)), 0, -1).astype(np.int8)
    pools = (obs_roi & alpha_roi, ~(obs_roi & alpha_roi))  # upstream intersects where it meant to subtract
    k = max(1, int(_REFERENCE_EDGE * w + 0.5))
    t = np.arange(w)[None, :].repeat(b, 0)
    right_t, right = _reference_side(rng, t >= w - k, pools, cfg)
    left_t, left = _reference_side(rng, t < k, pools, cfg)
    ctx_time = _interval(start, np.full(b, obs_w), w) & ~right_t & ~left_t
    context = _outer(obs_roi & ~alpha_roi, ctx_time)
    return context, np.stack([alpha, right, left], axis=1)


# -- from masks to padded index tensors -------------------------------------------------------------------
def _pad_lists(mask: np.ndarray, keep: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's True positions in increasing order, left-aligned and padded with 0.

    mask: [B, N] bool. keep: truncate every row to this many (default: pad to the longest row).
    Returns positions [B, L] int64 and valid [B, L] bool.
    """
    b, n = mask.shape
    counts = mask.sum(axis=1)
    length = int(counts.max(initial=0)) if keep is None else keep
    flat = np.flatnonzero(mask)  # row-major: each row's positions ascending
    row = np.repeat(np.arange(b), counts)
    slot = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
    if keep is not None:
        inside = slot < length
        flat, row, slot = flat[inside], row[inside], slot[inside]
    positions = np.zeros(b * length, np.int64)
    positions[row * length + slot] = flat - row * n
    valid = np.arange(length)[None, :] < counts[:, None]
    return positions.reshape(b, length), valid


def _lengths(valid: np.ndarray) -> tuple[int, ...]:
    """Each row's number of valid entries (a prefix), as host ints: valid [B, L] bool -> B ints."""
    return tuple(int(k) for k in valid.sum(axis=1))


def _index_tensors(context: np.ndarray, codes: np.ndarray, truncate: bool) -> dict[str, Any]:
    """Context mask [B, T] bool and target codes [B, P, T] int8 (region, -1 none) -> the index tensors.

    Targets are the P parts in order, each in token order (a token may recur in two parts).
    truncate: cut every sample to the batch minimum (reference mode) instead of padding to the maximum.
    """
    n_tokens = context.shape[1]
    flat = codes.reshape(codes.shape[0], -1)
    is_target = flat >= 0
    keep_c = int(context.sum(1).min(initial=n_tokens)) if truncate else None
    keep_t = int(is_target.sum(1).min(initial=flat.shape[1])) if truncate else None
    ctx_idx, ctx_valid = _pad_lists(context, keep_c)
    pos, tgt_valid = _pad_lists(is_target, keep_t)
    region = np.where(tgt_valid, np.take_along_axis(flat, pos, axis=1), -1).astype(np.int64)
    return {"context_idx": torch.from_numpy(ctx_idx), "context_valid": torch.from_numpy(ctx_valid),
            "target_idx": torch.from_numpy(np.where(tgt_valid, pos % n_tokens, 0)),
            "target_valid": torch.from_numpy(tgt_valid), "target_region": torch.from_numpy(region),
            "context_lengths": _lengths(ctx_valid), "target_lengths": _lengths(tgt_valid)}


def random_masks(rngs: list[np.random.Generator], n_tokens: int, ratio: float) -> dict[str, Any]:
    """Uniform patch masking, one generator per sample: ``round(ratio * N)`` hidden tokens (at least 1, at
    most N - 1), the same count for every sample, so nothing is padded. Indices sorted ascending.

    Returns context_idx/context_valid [B, Nc], target_idx/target_valid/target_region [B, Nt] (region -1:
    no alpha/beta/gamma region) and context_lengths/target_lengths (B ints: Nc and Nt).
    """
    n_hidden = int(min(max(round(ratio * n_tokens), 1), n_tokens - 1))
    perms = [rng.permutation(n_tokens) for rng in rngs]
    hidden = np.sort(np.stack([p[:n_hidden] for p in perms]), axis=1)
    visible = np.sort(np.stack([p[n_hidden:] for p in perms]), axis=1)
    return {"context_idx": torch.from_numpy(visible.astype(np.int64)),
            "context_valid": torch.ones(visible.shape, dtype=torch.bool),
            "target_idx": torch.from_numpy(hidden.astype(np.int64)),
            "target_valid": torch.ones(hidden.shape, dtype=torch.bool),
            "target_region": torch.full(hidden.shape, -1, dtype=torch.int64),
            "context_lengths": (visible.shape[1],) * len(rngs), "target_lengths": (n_hidden,) * len(rngs)}


def _distributed_rank() -> int:
    """This process's torch.distributed rank, 0 when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class MaskCollator:
    """Collate ``(x [1, R, T], y [n_labels])`` items and add the batch's masks (module docstring).

    ``__call__`` returns ``x`` [B, 1, R, T], ``y`` [B, n_labels] (``run_id``: list, when items carry it),
    ``context_idx``/``context_valid`` [B, Nc], ``target_idx``/``target_valid``/``target_region`` [B, Nt]
    (region 0 alpha, 1 beta, 2 gamma, -1 padding) and ``context_lengths``/``target_lengths`` (tuples of B
    Python ints: each sample's valid entries, the prefix of its row). Indices are tokens ``roi * W + t``. The
    lengths stay on the host: the models decide from them, without reading the device, whether a batch is
    padded (no mask when it is not; packed tokens when it is: :func:`brainjepa.models.layers.padding_plan`).

    rank: the DDP rank, which places this process's samples in the global batch (default: torch.distributed's
    when initialised, else 0). Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, n_rois: int, n_time_patches: int, cfg: MaskConfig | None = None, seed: int = 0,
                 rank: int | None = None):
        self.n_rois, self.n_time = int(n_rois), int(n_time_patches)
        self.cfg = cfg if cfg is not None else MaskConfig()
        if self.n_rois < 1 or self.n_time < 1:
            raise ValueError(f"grid {n_rois} x {n_time_patches}: needs at least one ROI and one time patch")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, not {seed}")
        if self.cfg.mode == "reference":
            check_reference_grid(self.n_rois, self.n_time, self.cfg)
        self.seed = int(seed)
        self._explicit_rank = rank
        self.rank = _distributed_rank() if rank is None else int(rank)
        # [epoch, first step, generation]: shared so that set_epoch reaches persistent workers
        self._shared = torch.zeros(3, dtype=torch.int64).share_memory_()
        self._owner: tuple[int, int] | None = None  # (pid, generation) the local count belongs to
        self._count = 0

    @property
    def epoch(self) -> int:
        """The epoch set by :meth:`set_epoch` (shared with the DataLoader workers)."""
        return int(self._shared[0])

    def set_epoch(self, epoch: int, step: int = 0) -> None:
        """Select the epoch and restart the batch count at ``step`` (non-zero to resume mid-epoch)."""
        if int(epoch) < 0 or int(step) < 0:
            raise ValueError(f"epoch and step must be non-negative, not {epoch}, {step}")
        self._shared[0], self._shared[1] = int(epoch), int(step)
        self._shared[2] += 1
        if self._explicit_rank is None and torch.utils.data.get_worker_info() is None:
            self.rank = _distributed_rank()  # torch.distributed may have started since __init__

    def masks_for(self, batch_size: int, epoch: int, step: int) -> dict[str, Any]:
        """The index tensors of batch ``step`` of ``epoch``: a pure function of them, the seed and the rank.

        Paper mode draws each sample's masks from (seed, epoch, step, its index in the global batch: rank x
        batch_size + i), so DDP ranks with batch B draw what one process with batch B x world_size would;
        reference mode draws per batch and rank, as the public code does.
        """
        if self.cfg.mode == "random":
            first = self.rank * int(batch_size)
            return random_masks([np.random.default_rng([self.seed, int(epoch), int(step), first + i, _STREAM])
                                 for i in range(int(batch_size))], self.n_rois * self.n_time, self.cfg.mask_ratio)
        if self.cfg.mode == "reference":
            rng = np.random.default_rng([self.seed, int(epoch), int(step), self.rank, _STREAM])
            context, parts = _reference_grids(rng, int(batch_size), self.n_rois, self.n_time, self.cfg)
            return _index_tensors(context, parts, True)
        first = self.rank * int(batch_size)
        grids = [_paper_grids(np.random.default_rng([self.seed, int(epoch), int(step), first + i, _STREAM]), 1,
                              self.n_rois, self.n_time, self.cfg) for i in range(int(batch_size))]
        context = np.concatenate([g[0] for g in grids])
        parts = np.concatenate([g[1] for g in grids])
        return _index_tensors(context, parts, False)

    def next_step(self) -> int:
        """The epoch step of the next batch this process makes (module docstring), and count it."""
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        owner = (os.getpid(), int(self._shared[2]))
        if owner != self._owner:  # a new epoch, or a fresh worker process: count from zero
            self._owner, self._count = owner, 0
        step = int(self._shared[1]) + self._count * n_workers + worker
        self._count += 1
        return step

    def __call__(self, batch: list) -> dict[str, Any]:
        """Collate ``batch`` (see the class docstring for the output)."""
        collated = torch.utils.data.default_collate(batch)
        x, y = collated[0], collated[1]
        if x.ndim != 4 or x.shape[2] != self.n_rois or x.shape[3] % self.n_time:
            raise ValueError(f"batch x has shape {tuple(x.shape)}; expected [B, 1, {self.n_rois}, T] with T a "
                             f"multiple of {self.n_time} time patches")
        out = {"x": x, "y": y}
        if len(collated) > 2:
            out["run_id"] = list(collated[2])
        out.update(self.masks_for(len(batch), self.epoch, self.next_step()))
        return out
