"""Anti-collapse regularisers on the encoder's output, per token position across the global batch.

``optim.regularizer`` (``none`` | ``sigreg`` | ``vicreg``) adds ``optim.regularizer_weight * R`` to the JEPA or
MAE loss (LeWorldModel's additive form, not LeJEPA's convex ``(1 - lambda) L + lambda R``). ``R`` is computed on
the context encoder's output ``z: [B, K, D]`` (the K context tokens of each sample, ``context_idx: [B, K]`` their
token positions ``roi * W + t``, ``context_valid: [B, K]`` the real ones). For each token position p, the samples
of the global batch (every rank) whose context holds p form the distribution at p; ``R`` is the mean of the
per-position statistic over the positions held by at least 2 samples. Positions held by 0 or 1 sample are left
out (no distribution to test: their tokens get no gradient from ``R``).

- :func:`sigreg` (LeJEPA's SIGReg, arXiv 2511.08544; per position as LeWorldModel does per time step): the
  embeddings at p are projected on M random unit directions, ``s = z . a_m``; the Epps-Pulley statistic
  ``T_pm = N_p * int |phi_hat(t) - exp(-t^2 / 2)|^2 exp(-t^2 / 2) dt`` over the real line compares their
  empirical characteristic function ``phi_hat(t) = mean_n exp(i t s_n)`` with the standard normal's. The
  integrand ``(mean cos(t s) - e^{-t^2/2})^2 + (mean sin(t s))^2`` is even in t: the trapezoid rule on
  ``[0, tmax]`` with ``knots`` points, weights doubled. ``R = mean_{p, m} T_pm``. Under the null (Gaussian
  samples) ``E[T] = int (1 - e^{-t^2}) e^{-t^2/2} dt ~ 1.06`` whatever N; a constant sample gives ``~0.41 N``.
- :func:`vicreg_variance` (VICReg's variance hinge): ``std_pd = sqrt(Var_p(z_d) + eps)`` (unbiased variance
  over the samples at p), ``R = mean_{p, d} relu(gamma - std_pd)``.

Everything is computed in float32 (float64 inputs stay float64), with autocast off.

DDP: the per-position sums (and counts) are all-reduced, so ``R`` on every rank is the single-process value on the
global batch. The all-reduce is differentiable with ``torch.distributed.nn.functional.all_reduce``'s semantics:
its backward all-reduces (sums) the incoming gradients. Every rank adds the same ``R`` to its loss, so the
gradient reaching rank r's own tokens is ``world_size * dR/dz_r``; DDP then averages the parameter gradients over
the ranks (divides by ``world_size``), which leaves exactly the single-process gradient of ``R`` on the global
batch. No further scaling is needed (the data loss is scaled the same way: ``jepa.masked_loss``'s ``n_valid``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from brainjepa.train.config import OptimConfig

# the largest [tokens, slices, knots] (and [positions, slices, knots]) float32 block SIGReg builds at once
CHUNK_BYTES = 64 * 2**20


# ----------------------------------------------------------------------------------------------- collectives
def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward sums the incoming gradients over ranks (as torch.distributed.nn does)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over the ranks of the default process group; the tensor itself in one process.

    The semantics of ``torch.distributed.nn.functional.all_reduce`` (forward and backward are both sums over
    ranks), written out here because that function warns on every call (deprecated since torch 2.x).
    """
    return _AllReduceSum.apply(tensor) if _world() > 1 else tensor


def _all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place, non-differentiable sum over ranks (counts, and the sums inside :class:`_SIGReg`)."""
    if _world() > 1:
        dist.all_reduce(tensor)
    return tensor


# ----------------------------------------------------------------------------------------------- helpers
def _compute_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def valid_tokens(z: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The real tokens, flattened. z: [B, K, D], idx: [B, K] long, valid: [B, K] bool -> ([N, D], [N] long)."""
    if z.dim() != 3 or idx.shape != z.shape[:2] or valid.shape != z.shape[:2]:
        raise ValueError(f"z must be [B, K, D] with idx and valid [B, K]; got {tuple(z.shape)}, "
                         f"{tuple(idx.shape)}, {tuple(valid.shape)}")
    valid = valid.bool()
    return z.to(_compute_dtype(z))[valid], idx[valid].long()


def position_counts(pos: torch.Tensor, n_positions: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Samples holding each position in the global batch (all ranks). pos: [N] long -> [P] (no gradient)."""
    if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= n_positions):
        raise ValueError(f"token positions must lie in [0, {n_positions}), got {int(pos.min())}..{int(pos.max())}")
    counts = torch.zeros(n_positions, dtype=dtype, device=pos.device)
    counts.index_add_(0, pos, torch.ones(pos.shape[0], dtype=dtype, device=pos.device))
    return _all_reduce_(counts)


def epps_pulley_grid(knots: int, tmax: float, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature of the Epps-Pulley integral over the real line: (t [K], weights [K]).

    ``int_{-inf}^{inf} f(t) exp(-t^2/2) dt ~ sum_k weights_k f(t_k)`` for an even f: the trapezoid rule on
    ``[0, tmax]`` with ``knots`` equally spaced points, weights doubled (symmetry), times the Gaussian window.
    """
    if knots < 2 or not tmax > 0:
        raise ValueError(f"the Epps-Pulley grid needs knots >= 2 and tmax > 0, got {knots}, {tmax}")
    t = torch.linspace(0.0, float(tmax), knots, dtype=torch.float64)
    trapezoid = torch.full((knots,), float(tmax) / (knots - 1), dtype=torch.float64)
    trapezoid[[0, -1]] /= 2
    weights = 2 * trapezoid * torch.exp(-t**2 / 2)
    return t.to(dtype=dtype, device=device), weights.to(dtype=dtype, device=device)


def sigreg_directions(dim: int, slices: int, seed: int, step: int) -> torch.Tensor:
    """M random unit directions [D, M] (float32, CPU), a pure function of (run seed, optimizer step).

    Every DDP rank (and a resumed run) draws the same directions; a new set every optimizer step (all the
    micro-batches of one step share it).
    """
    state = np.random.SeedSequence([int(seed) % 2**63, int(step)]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    a = torch.randn(dim, slices, generator=generator)
    return a / a.norm(dim=0, keepdim=True)


# ----------------------------------------------------------------------------------------------- SIGReg
def _slice_chunk(n_tokens: int, n_positions: int, knots: int, chunk_bytes: int) -> int:
    """Slices per chunk so that a [max(N, 2P), m, K] float32 block stays within ``chunk_bytes``."""
    return max(1, chunk_bytes // (4 * knots * max(n_tokens, 2 * n_positions, 1)))


def _local_sums(s: torch.Tensor, pos: torch.Tensor, t: torch.Tensor, n_positions: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos / sin sums by position. s: [N, m], pos: [N], t: [K] -> (sums [P, m, K, 2], cos, sin [N, m, K])."""
    ts = s.unsqueeze(-1) * t                                          # [N, m, K]
    cos, sin = torch.cos(ts), torch.sin(ts)
    sums = s.new_zeros(n_positions, s.shape[1], t.shape[0], 2)
    sums.index_add_(0, pos, torch.stack((cos, sin), dim=-1))
    return sums, cos, sin


def _statistic_and_grad(sums: torch.Tensor, counts: torch.Tensor, keep: torch.Tensor, t: torch.Tensor,
                        w: torch.Tensor, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Epps-Pulley statistics from the global sums [P, m, K, 2] -> (sum over kept p and the m slices,
    dT/dsums [P, m, K, 2] or None). ``N (C/N - g)^2 + N (S/N)^2 = ((C - N g)^2 + S^2) / N``."""
    n = counts.clamp_min(1.0)[:, None, None]                         # [P, 1, 1]
    g = torch.exp(-t**2 / 2)                                          # [K]
    dc = sums[..., 0] - n * g                                         # [P, m, K]
    sn = sums[..., 1]
    per = ((dc**2 + sn**2) / n * w).sum(-1)                           # [P, m]
    total = per[keep].sum()
    if not need_grad:
        return total, None
    scale = (2 * w / n) * keep[:, None, None].to(w.dtype)             # [P, 1, K]
    return total, torch.stack((dc * scale, sn * scale), dim=-1)


class _SIGReg(torch.autograd.Function):
    """R = mean over kept positions and slices of the Epps-Pulley statistic, from projections s: [N, M].

    The forward all-reduces the per-position sums chunk by chunk and keeps only ``s`` for the backward, which
    recomputes each chunk (the same collectives in the same order on every rank). The backward first sums the
    incoming gradient over ranks: the semantics of a differentiable all-reduce (see the module docstring).
    """

    @staticmethod
    def forward(ctx, s: torch.Tensor, pos: torch.Tensor, counts: torch.Tensor, t: torch.Tensor,
                w: torch.Tensor, chunk: int) -> torch.Tensor:
        keep = counts >= 2
        denom = float(keep.sum()) * s.shape[1]
        total = s.new_zeros(())
        for start in range(0, s.shape[1], chunk):
            sums, _, _ = _local_sums(s[:, start:start + chunk], pos, t, counts.shape[0])
            total = total + _statistic_and_grad(_all_reduce_(sums), counts, keep, t, w, False)[0]
        ctx.save_for_backward(s, pos, counts, t, w)
        ctx.chunk, ctx.denom = chunk, denom
        return total / denom

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s, pos, counts, t, w = ctx.saved_tensors
        keep = counts >= 2
        grad = _all_reduce_(grad.detach().clone()) / ctx.denom
        ds = torch.empty_like(s)
        for start in range(0, s.shape[1], ctx.chunk):
            part = slice(start, start + ctx.chunk)
            sums, cos, sin = _local_sums(s[:, part], pos, t, counts.shape[0])
            _, dsums = _statistic_and_grad(_all_reduce_(sums), counts, keep, t, w, True)
            dsums = dsums[pos]                                        # [N, m, K, 2]
            ds[:, part] = ((cos * dsums[..., 1] - sin * dsums[..., 0]) * t).sum(-1) * grad
        return ds, None, None, None, None, None


def sigreg(z: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, n_positions: int, directions: torch.Tensor,
           knots: int = 17, tmax: float = 3.0, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """SIGReg per token position over the global batch (scalar, float32; float64 for float64 inputs).

    z: [B, K, D] the encoder's output at the tokens ``idx: [B, K]`` (positions in ``[0, n_positions)``), valid:
    [B, K] bool; directions: [D, M] unit columns (:func:`sigreg_directions`). Memory: the [N, M] projections
    are kept for the backward; the cos / sin blocks are built ``chunk_bytes`` at a time. 0 when no position is
    held by 2 samples.
    """
    with torch.autocast(z.device.type, enabled=False):
        zf, pos = valid_tokens(z, idx, valid)
        dtype = zf.dtype
        counts = position_counts(pos, n_positions, dtype)
        if not bool((counts >= 2).any()):
            return zf.sum() * 0
        t, w = epps_pulley_grid(knots, tmax, dtype, z.device)
        s = zf @ directions.to(device=z.device, dtype=dtype)          # [N, M]
        chunk = _slice_chunk(s.shape[0], n_positions, knots, chunk_bytes)
        return _SIGReg.apply(s, pos, counts, t, w, chunk)


# ----------------------------------------------------------------------------------------------- VICReg
def vicreg_variance(z: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, n_positions: int,
                    gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg's variance hinge per token position over the global batch (scalar, float32).

    z: [B, K, D], idx / valid: [B, K]. ``mean_{p, d} relu(gamma - sqrt(Var_p(z_d) + eps))`` over the positions
    held by >= 2 samples; the variance is unbiased and taken in two passes (per-position means, then the
    centred sum of squares, each all-reduced), which stays accurate when the means dwarf the spread.
    """
    with torch.autocast(z.device.type, enabled=False):
        zf, pos = valid_tokens(z, idx, valid)
        counts = position_counts(pos, n_positions, zf.dtype)
        keep = counts >= 2
        if not bool(keep.any()):
            return zf.sum() * 0
        n = counts.clamp_min(1.0)[:, None]
        sums = all_reduce_sum(zf.new_zeros(n_positions, zf.shape[1]).index_add(0, pos, zf))
        mean = sums / n                                               # [P, D]
        centred = zf - mean[pos]
        squares = all_reduce_sum(zf.new_zeros(n_positions, zf.shape[1]).index_add(0, pos, centred**2))
        std = torch.sqrt(squares[keep] / (n[keep] - 1) + eps)         # [P_kept, D]
        return torch.relu(gamma - std).mean()


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Regularizer:
    """One optimizer step's anti-collapse term: ``kind`` (sigreg | vicreg), ``weight`` and their settings.

    ``seed`` and ``step`` pick SIGReg's directions (:func:`sigreg_directions`). Build with :meth:`from_config`.
    """

    kind: str
    weight: float
    slices: int = 1024
    knots: int = 17
    tmax: float = 3.0
    gamma: float = 1.0
    eps: float = 1e-4
    seed: int = 0
    step: int = 0

    @classmethod
    def from_config(cls, optim: OptimConfig, seed: int, step: int) -> Regularizer | None:
        """From an ``OptimConfig`` (None when ``optim.regularizer`` is ``none``)."""
        if optim.regularizer == "none":
            return None
        return cls(optim.regularizer, optim.regularizer_weight, optim.sigreg_slices, optim.sigreg_knots,
                   optim.sigreg_tmax, optim.vicreg_gamma, optim.vicreg_eps, seed, step)

    def __call__(self, z: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, n_positions: int) -> torch.Tensor:
        """R (unweighted) on z: [B, K, D] at token positions idx: [B, K] (valid: [B, K] bool)."""
        if self.kind == "sigreg":
            directions = sigreg_directions(z.shape[-1], self.slices, self.seed, self.step)
            return sigreg(z, idx, valid, n_positions, directions, self.knots, self.tmax)
        if self.kind == "vicreg":
            return vicreg_variance(z, idx, valid, n_positions, self.gamma, self.eps)
        raise ValueError(f"optim.regularizer must be sigreg or vicreg here, not {self.kind!r}")


def null_expectation(tmax: float = math.inf) -> float:
    """E[T] of the Epps-Pulley statistic for Gaussian samples: ``int (1 - e^{-t^2}) e^{-t^2/2} dt`` over
    ``[-tmax, tmax]`` (any N; the statistic's scale for a healthy position)."""
    return math.sqrt(2 * math.pi) * math.erf(tmax / math.sqrt(2)) - \
        math.sqrt(2 * math.pi / 3) * math.erf(tmax * math.sqrt(1.5))
