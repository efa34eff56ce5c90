"""Mask statistics and collator cost of brainjepa.train.masks, both modes (prints measured figures).

    python bench/masks.py [--batches 2000] [--rois 450] [--time-patches 10]

Per mode: context tokens (fraction of the grid), target tokens per region, the share of samples whose
region is empty (and of batches with no beta/gamma target at all), context tokens per ROI for ROIs
0-199 vs the last 50, context tokens per time patch, and the time per batch of 16 (masks alone, and the
whole ``__call__`` with x [16, 1, R, 16 W]).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from brainjepa.train.masks import REGIONS, MaskCollator, MaskConfig


def mask_statistics(collator: MaskCollator, n_batches: int, batch_size: int = 16) -> dict[str, object]:
    """Summary statistics over ``n_batches`` batches of epoch 0 (see the module docstring)."""
    r, w = collator.n_rois, collator.n_time
    ctx_per_token = np.zeros(r * w)
    n_ctx, n_region, batch_no_bg, samples = [], [], 0, 0
    for step in range(n_batches):
        m = collator.masks_for(batch_size, 0, step)
        idx, valid = m["context_idx"].numpy(), m["context_valid"].numpy()
        np.add.at(ctx_per_token, idx[valid], 1)
        n_ctx.append(valid.sum(1))
        region = m["target_region"].numpy()
        counts = np.stack([(region == k).sum(1) for k in range(3)], axis=1)  # [B, 3]
        n_region.append(counts)
        batch_no_bg += int(counts[:, 1:].sum() == 0)
        samples += batch_size
    n_ctx, n_region = np.concatenate(n_ctx), np.concatenate(n_region)
    per_roi = ctx_per_token.reshape(r, w).sum(1) / samples
    low, high = per_roi[: min(200, r)].mean(), per_roi[-min(50, r):].mean()
    return {
        "context_tokens": n_ctx.mean(), "context_fraction": n_ctx.mean() / (r * w),
        "target_fraction": {k: n_region[:, i].mean() / (r * w) for i, k in enumerate(REGIONS)},
        "alpha_share_of_targets": n_region[:, 0].sum() / max(n_region.sum(), 1),
        "empty_rate": {k: float((n_region[:, i] == 0).mean()) for i, k in enumerate(REGIONS)},
        "batches_without_beta_gamma": batch_no_bg / n_batches,
        "context_per_roi_low_high": (low, high, low / high if high else float("inf")),
        "context_per_time_patch": ctx_per_token.reshape(r, w).sum(0) / samples / r,
    }


def time_per_batch(collator: MaskCollator, repeats: int = 300, batch_size: int = 16) -> tuple[float, float]:
    """Milliseconds per batch: ``masks_for`` alone and the whole ``__call__``."""
    batch = [(torch.randn(1, collator.n_rois, 16 * collator.n_time), torch.zeros(2)) for _ in range(batch_size)]
    collator(batch)  # warm up
    t0 = time.perf_counter()
    for step in range(repeats):
        collator.masks_for(batch_size, 0, step)
    t1 = time.perf_counter()
    for _ in range(repeats):
        collator(batch)
    t2 = time.perf_counter()
    return (t1 - t0) / repeats * 1e3, (t2 - t1) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--rois", type=int, default=450)
    parser.add_argument("--time-patches", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    for mode in ("paper", "reference"):
        collator = MaskCollator(args.rois, args.time_patches, MaskConfig(mode=mode), seed=0)
        stats = mask_statistics(collator, args.batches)
        masks_ms, call_ms = time_per_batch(collator)
        print(f"== {mode}: {args.rois} x {args.time_patches}, {args.batches} batches of 16")
        for key, value in stats.items():
            shown = {k: round(float(v), 3) for k, v in value.items()} if isinstance(value, dict) \
                else np.round(value, 3)
            print(f"  {key}: {shown}")
        print(f"  ms per batch of 16: masks {masks_ms:.2f}, whole __call__ {call_ms:.2f}")


if __name__ == "__main__":
    main()
