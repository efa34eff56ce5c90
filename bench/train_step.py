"""Benchmark: one JEPA-like training step (forward + backward), time per sample and peak memory.

The step, on a batch [B, 1, 450, 160] of random data with gradient positioning:
the target encoder (no grad) encodes all 4500 tokens, its output is layer-normalised (no affine) and
gathered at the targets; the context encoder sees ~20% of the tokens; the predictor predicts ~25%
target tokens (disjoint from the context); MSE; backward. No optimizer step. Each configuration runs
in its own subprocess so that the CPU peak (resource maxrss) belongs to it alone: reported as the
peak RSS and its growth during the steps over the built model. On a GPU the peak is
``torch.cuda.max_memory_allocated``, and both fp32 and bf16 autocast are measured.
One warm-up step, then ``--repeats`` timed steps; the median is reported. One JSON line each.

    python bench/train_step.py [--sizes tiny small] [--batch 4] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainjepa.models import ModelConfig, build_model, count_parameters, gather_tokens  # noqa: E402

N_ROIS, N_TIMESTEPS = 450, 160


def masks(batch: int, n_tokens: int, context: float, target: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint random context [B, Nc] and target [B, Nt] token indices per sample."""
    g = torch.Generator().manual_seed(seed)
    n_ctx, n_tgt = round(context * n_tokens), round(target * n_tokens)
    perms = torch.stack([torch.randperm(n_tokens, generator=g) for _ in range(batch)])
    return perms[:, :n_ctx].contiguous(), perms[:, n_ctx:n_ctx + n_tgt].contiguous()


def jepa_step(encoder, target_encoder, predictor, x, ctx_idx, tgt_idx, dtype: torch.dtype | None) -> float:
    """Forward + backward of one step; returns the loss."""
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        with torch.no_grad():
            h = target_encoder(x)
            h = gather_tokens(F.layer_norm(h, h.shape[-1:]), tgt_idx)
        pred = predictor(encoder(x, ctx_idx), ctx_idx, tgt_idx)
        loss = F.mse_loss(pred.float(), h.float())
    loss.backward()
    return loss.item()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(size: str, batch: int, repeats: int, device: str, dtype_name: str, context: float, target: float) -> dict:
    torch.manual_seed(0)
    dev = torch.device(device)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[dtype_name]
    cfg = ModelConfig(size=size, n_rois=N_ROIS, n_timesteps=N_TIMESTEPS)
    encoder, predictor = build_model(cfg, torch.randn(N_ROIS, cfg.n_gradients))
    target_encoder = copy.deepcopy(encoder).requires_grad_(False)
    for m in (encoder, predictor, target_encoder):
        m.to(dev).train()
    x = torch.randn(batch, 1, N_ROIS, N_TIMESTEPS, device=dev)
    ctx_idx, tgt_idx = (t.to(dev) for t in masks(batch, cfg.n_tokens, context, target))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    base_rss = peak_rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(repeats + 1):
        encoder.zero_grad(set_to_none=True)
        predictor.zero_grad(set_to_none=True)
        sync()
        start = time.perf_counter()
        loss = jepa_step(encoder, target_encoder, predictor, x, ctx_idx, tgt_idx, dtype)
        sync()
        if i:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    out = {"size": size, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "dtype": dtype_name, "batch": batch, "tokens": cfg.n_tokens,
           "context_tokens": ctx_idx.shape[1], "target_tokens": tgt_idx.shape[1],
           "encoder_params_M": round(count_parameters(encoder)["total"] / 1e6, 2),
           "step_s": round(step, 4), "s_per_sample": round(step / batch, 4),
           "tokens_per_s": round(batch * cfg.n_tokens / step), "loss": round(loss, 4), "repeats": repeats}
    if dev.type == "cuda":
        out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
        out["step_rss_growth_mb"] = round(peak_rss_mb() - base_rss, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", nargs="+", default=None, help="fp32 and/or bf16 (default: fp32, + bf16 on a GPU)")
    p.add_argument("--context", type=float, default=0.2, help="fraction of tokens the context encoder sees")
    p.add_argument("--target", type=float, default=0.25, help="fraction of tokens predicted")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one configuration
    args = p.parse_args()
    dtypes = args.dtypes or (["fp32", "bf16"] if args.device.startswith("cuda") else ["fp32"])
    if args.one:
        print(json.dumps(run_one(args.sizes[0], args.batch, args.repeats, args.device, dtypes[0],
                                 args.context, args.target)), flush=True)
        return
    for size in args.sizes:
        for dtype in dtypes:
            cmd = [sys.executable, __file__, "--one", "--sizes", size, "--batch", str(args.batch),
                   "--repeats", str(args.repeats), "--device", args.device, "--dtypes", dtype,
                   "--context", str(args.context), "--target", str(args.target)]
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
