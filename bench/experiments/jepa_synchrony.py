"""Does a pretrained Brain-JEPA use cross-ROI synchrony? Its JEPA loss on real vs synchrony-destroyed inputs.

For a checkpoint, the mean JEPA loss (MSE on layer-normed targets, paper masks) over the pretraining split for:
the real windows (targets normalised as the run was trained: ``optim.target_norm``); the same windows
with each ROI's series circularly shifted by a random lag (every ROI keeps
its own dynamics, the synchrony between ROIs is gone); and Gaussian noise of the same scale. A model that
predicts cross-ROI targets from the other ROIs has a clearly higher loss on the shifted input.

    python bench/experiments/jepa_synchrony.py CHECKPOINT [--manifest results/shards/pretrain/manifest.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]


def shift_rois(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """x: [B, 1, R, T] -> each (sample, ROI) series rolled by its own random lag."""
    out = x.clone()
    B, _, R, T = x.shape
    for b in range(B):
        for r in range(R):
            out[b, 0, r] = torch.roll(x[b, 0, r], int(rng.integers(T // 8, T - T // 8)))
    return out


@torch.no_grad()
def main() -> None:
    from brainjepa.data.dataset import ShardDataset
    from brainjepa.models import ModelConfig, build_model
    from brainjepa.train.checkpoint import load_checkpoint
    from brainjepa.train.masks import MaskCollator, MaskConfig
    from brainjepa.train.pretrain import jepa_step

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--manifest", type=Path, default=REPO / "results" / "shards" / "pretrain" / "manifest.json")
    args = parser.parse_args()
    state = load_checkpoint(args.checkpoint)
    cfg = ModelConfig(**state["model_config"])
    (gradients,) = [v for k, v in state["target_encoder"].items() if k.endswith(".gradients")]
    encoder, predictor = build_model(cfg, gradients)
    target, _ = build_model(cfg, gradients)
    for module, key in ((encoder, "encoder"), (predictor, "predictor"), (target, "target_encoder")):
        module.load_state_dict(state[key])
        module.eval()
    dataset = ShardDataset(args.manifest, "pretrain", window=cfg.n_timesteps, mode="eval")
    collator = MaskCollator(cfg.n_rois, cfg.n_time_patches, MaskConfig(), seed=5)
    rng = np.random.default_rng(0)
    target_norm = state["config"]["optim"].get("target_norm", "layer")
    inputs = {"real": lambda x: x, "roi_shifted": lambda x: shift_rois(x, rng),
              "noise": lambda x: torch.randn_like(x) * x.std()}
    result = {"checkpoint": str(args.checkpoint), "step": state["step"], "target_norm": target_norm}
    for name, transform in inputs.items():
        losses = [jepa_step(encoder, target, predictor, {**b, "x": transform(b["x"])}, "mse",
                            target_norm)[0].item()
                  for b in DataLoader(dataset, batch_size=8, collate_fn=collator, drop_last=True)]
        result[f"loss_{name}"] = round(float(np.mean(losses)), 5)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
