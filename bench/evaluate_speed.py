"""Sizing evaluation jobs: fine-tuning time per sample and feature-extraction throughput, per model size.

Measures, on random inputs of the given shape (the numbers do not depend on the data), with the evaluation
code itself (FineTuneModel + layer-decayed AdamW, brainjepa.evaluate.features.extract):

- fine-tuning: seconds per training sample (forward, backward, optimizer step at batch ``--batch``);
- feature extraction: windows per second (forward only, mean pooling and per-ROI token means).

    python bench/evaluate_speed.py                        # tiny and small at 450 x 160 and 64 x 160, CPU
    python bench/evaluate_speed.py --sizes base --device cuda --precision bf16

Prints one line per (size, shape) and a JSON summary. On CPU, torch uses its default thread count unless
``--threads`` is given.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import torch


def measure(size: str, n_rois: int, window: int, batch: int, steps: int, device: torch.device,
            precision: str) -> dict:
    from brainjepa.evaluate.config import FinetuneConfig
    from brainjepa.evaluate.features import extract
    from brainjepa.evaluate.finetune import build_finetune
    from brainjepa.models import BrainEncoder, ModelConfig
    from brainjepa.train.runtime import autocast_for

    torch.manual_seed(0)
    cfg = ModelConfig(size=size, n_rois=n_rois, n_timesteps=window, n_gradients=30, drop_path=0.1)
    encoder = BrainEncoder(cfg, torch.randn(n_rois, 30))
    model, optimizer, _ = build_finetune(encoder, 1, FinetuneConfig(batch_size=batch), 1)
    model.to(device).train()
    x = torch.randn(batch, 1, n_rois, window, device=device)
    y = torch.randn(batch, device=device)
    autocast = (lambda: autocast_for(device, precision)) if precision != "fp32" else nullcontext

    def step():
        with autocast():
            loss = torch.nn.functional.mse_loss(model(x)[:, 0].float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up (allocations, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = (time.perf_counter() - t0) / (steps * batch)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    data = torch.randn(batch * steps, n_rois, window).numpy()
    extract(model.encoder, data[:batch], cfg.n_time_patches, device, batch, autocast)
    t0 = time.perf_counter()
    extract(model.encoder, data, cfg.n_time_patches, device, batch, autocast)
    if device.type == "cuda":
        torch.cuda.synchronize()
    windows_per_s = len(data) / (time.perf_counter() - t0)
    return {"size": size, "n_rois": n_rois, "window": window, "batch": batch, "device": device.type,
            "precision": precision, "finetune_s_per_sample": round(train_s, 5),
            "features_windows_per_s": round(windows_per_s, 1),
            "peak_gib": None if peak is None else round(peak, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--shapes", nargs="+", default=["450x160", "64x160"], help="ROIs x window")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for size in args.sizes:
        for shape in args.shapes:
            n_rois, window = (int(v) for v in shape.split("x"))
            r = measure(size, n_rois, window, args.batch, args.steps, torch.device(args.device), args.precision)
            results.append(r)
            print(f"{size:5s} {n_rois}x{window} {args.device} {args.precision}: fine-tune "
                  f"{r['finetune_s_per_sample'] * 1000:.1f} ms/sample, features {r['features_windows_per_s']:.1f} "
                  f"windows/s" + (f", peak {r['peak_gib']} GiB" if r["peak_gib"] is not None else ""), flush=True)
    print(json.dumps({"threads": torch.get_num_threads(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
