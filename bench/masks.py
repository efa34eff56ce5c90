"""Mask statistics, collator cost and padding cost of brainjepa.train.masks (prints measured figures).

    python bench/masks.py [--batches 2000] [--rois 450] [--time-patches 10]
    python bench/masks.py --padding [--batches 200] [--global-batch 64]

Per mode: context tokens (fraction of the grid), target tokens per region, the share of samples whose
region is empty (and of batches with no beta/gamma target at all), context tokens per ROI for ROIs
0-199 vs the last 50, context tokens per time patch, and the time per batch of 16 (masks alone, and the
whole ``__call__`` with x [16, 1, R, 16 W]).

``--padding``: per mode, the tokens the context encoder and the predictor compute per sample, against the
valid ones, for three ways of running padded batches of 16: ``masked`` (every sample padded to the batch
maximum, a key-padding mask: the models without lengths), ``sorted`` (a global batch of ``--global-batch``
sorted by context size, then cut into batches of 16: bucketing across ranks or accumulation steps) and
``packed`` (the models with the collator's lengths: valid tokens end to end, attention per sample), with
the training FLOPs per sample of ViT-B at this grid (2 FLOP per multiply-add; a block costs 24 n D^2 + 4 n^2 D
forward, backward twice that; the target encoder's forward over the whole grid included).
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


def _batch_lengths(collator: MaskCollator, batch_size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Context and target lengths [B] of batch ``step`` of epoch 0."""
    m = collator.masks_for(batch_size, 0, step)
    return np.asarray(m["context_lengths"]), np.asarray(m["target_lengths"])


def _vit_flops(n: np.ndarray, dim: int, depth: int) -> float:
    """Forward FLOPs of ``depth`` blocks of width ``dim`` over sequences of lengths ``n`` (one per sample)."""
    n = n.astype(np.float64)
    return float(depth * (24 * n * dim**2 + 4 * n**2 * dim).sum())


def padding_statistics(collator: MaskCollator, n_batches: int, batch_size: int = 16, global_batch: int = 64,
                       size: str = "base") -> dict[str, dict[str, float]]:
    """Per strategy (masked, sorted (paper mode only), packed): tokens computed per sample by the context encoder
    (``context``), at the target slots (``targets``) and by the predictor (``predictor``: context + targets), the
    valid ones, and training TFLOP per sample of the ``size`` preset (module docstring). ``sorted`` draws global
    batches of
    ``global_batch`` samples (``n_batches * batch_size / global_batch`` of them)."""
    from brainjepa.models.config import PRESETS

    sizes = PRESETS[size]
    d, dp = sizes["embed_dim"], sizes["predictor_dim"]
    n_grid = collator.n_rois * collator.n_time
    if global_batch % batch_size:
        raise ValueError(f"--global-batch ({global_batch}) must be a multiple of the batch ({batch_size})")

    def groups(strategy: str):
        """(computed context lengths, computed target lengths, valid ones) per batch of ``batch_size``."""
        if strategy == "sorted":
            for step in range(max(n_batches * batch_size // global_batch, 1)):
                c, t = _batch_lengths(collator, global_batch, step)
                order = np.argsort(c, kind="stable")
                for chunk in order.reshape(-1, batch_size):
                    yield np.full(batch_size, c[chunk].max()), np.full(batch_size, t[chunk].max()), c[chunk], t[chunk]
            return
        for step in range(n_batches):
            c, t = _batch_lengths(collator, batch_size, step)
            if strategy == "packed":
                yield c, t, c, t
            else:
                yield np.full(batch_size, c.max()), np.full(batch_size, t.max()), c, t

    out = {}
    # sorting applies to paper mode only: reference mode truncates each batch, random mode has one size
    for strategy in ("masked", "sorted", "packed") if collator.cfg.mode == "paper" else ("masked", "packed"):
        sums = dict.fromkeys(("context", "targets", "predictor", "context_valid", "targets_valid",
                              "predictor_valid", "tflop"), 0.0)
        samples = 0
        for c, t, cv, tv in groups(strategy):
            sums["context"] += c.sum()
            sums["targets"] += t.sum()
            sums["predictor"] += (c + t).sum()
            sums["context_valid"] += cv.sum()
            sums["targets_valid"] += tv.sum()
            sums["predictor_valid"] += (cv + tv).sum()
            encoder = 3 * _vit_flops(c, d, sizes["depth"])  # forward + backward
            predictor = 3 * (_vit_flops(c + t, dp, sizes["predictor_depth"]) + 2 * (c * d * dp + t * dp * d).sum())
            target = _vit_flops(np.full(len(c), n_grid), d, sizes["depth"])  # forward only
            sums["tflop"] += (encoder + predictor + target) / 1e12
            samples += len(c)
        out[strategy] = {k: v / samples for k, v in sums.items()}
        out[strategy]["padded_share"] = 1 - out[strategy]["predictor_valid"] / out[strategy]["predictor"]
    return out


def print_padding(args: argparse.Namespace) -> None:
    """The ``--padding`` report (module docstring)."""
    for mode in ("paper", "reference", "random"):
        collator = MaskCollator(args.rois, args.time_patches, MaskConfig(mode=mode), seed=0)
        stats = padding_statistics(collator, args.batches, 16, args.global_batch)
        print(f"== {mode}: {args.rois} x {args.time_patches}, {args.batches} batches of 16 "
              f"(sorted: global batches of {args.global_batch}); tokens per sample computed (valid), ViT-B")
        ideal = stats["packed"]["tflop"]
        for strategy, row in stats.items():
            print(f"  {strategy:7s} context {row['context']:7.1f} ({row['context_valid']:.1f})  targets "
                  f"{row['targets']:7.1f} ({row['targets_valid']:.1f})  predictor {row['predictor']:7.1f} "
                  f"({row['predictor_valid']:.1f})  padded {100 * row['padded_share']:4.1f}%  "
                  f"{row['tflop']:.3f} TFLOP/sample (x{row['tflop'] / ideal:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--rois", type=int, default=450)
    parser.add_argument("--time-patches", type=int, default=10)
    parser.add_argument("--padding", action="store_true", help="the padding report instead (module docstring)")
    parser.add_argument("--global-batch", type=int, default=64, help="--padding: the sorted strategy's pool")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    if args.padding:
        print_padding(args)
        return
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
