"""Where does a Brain-JEPA encoder attend? Attention mass on same-network tokens vs chance, per layer.

For a checkpoint's target encoder and for the same architecture at its initialisation (same seed), the exact
attention weights (``forward_with_attention``) over the pretraining split's evaluation windows, averaged over
windows and heads; for each layer, the mean over query tokens of the attention mass on keys of:
``same_network`` (any ROI of the query's network, itself included), ``same_network_same_time`` (another ROI
of its network in the same time patch: what cross-ROI synchrony needs) and ``same_roi``; with the
``chance`` values of uniform attention. Networks come from the atlas labels' ``network`` column.

    python bench/experiments/jepa_attention.py CHECKPOINT [--manifest results/shards/pretrain/manifest.json]
        [--labels results/atlas/atlas_space-MNI152NLin6Asym_labels.tsv] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]


def token_relations(networks: np.ndarray, n_time_patches: int) -> dict[str, torch.Tensor]:
    """networks: [R] labels -> boolean [N, N] relations between tokens (N = R * W, token = roi * W + t)."""
    roi = np.repeat(np.arange(len(networks)), n_time_patches)
    time = np.tile(np.arange(n_time_patches), len(networks))
    same_net = networks[roi][:, None] == networks[roi][None, :]
    same_roi = roi[:, None] == roi[None, :]
    same_time = time[:, None] == time[None, :]
    return {"same_network": torch.tensor(same_net), "same_roi": torch.tensor(same_roi),
            "same_network_same_time": torch.tensor(same_net & same_time & ~same_roi)}


@torch.no_grad()
def attention_mass(encoder, x: torch.Tensor, relations: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """x: [B, 1, R, T] -> per layer, the mean attention mass of a query on each relation's keys."""
    encoder.eval()
    _, weights = encoder.forward_with_attention(x)
    out = []
    for w in weights:  # [B, H, N, N]
        mean = w.mean(dim=(0, 1))
        out.append({k: round(float((mean * rel).sum(dim=1).mean()), 4) for k, rel in relations.items()})
    return out


def main() -> None:
    from brainjepa.data.dataset import ShardDataset
    from brainjepa.models import ModelConfig, build_model
    from brainjepa.train.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--manifest", type=Path, default=REPO / "results" / "shards" / "pretrain" / "manifest.json")
    parser.add_argument("--labels", type=Path,
                        default=REPO / "results" / "atlas" / "atlas_space-MNI152NLin6Asym_labels.tsv")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation to compare with")
    parser.add_argument("--windows", type=int, default=16)
    args = parser.parse_args()
    state = load_checkpoint(args.checkpoint)
    cfg = ModelConfig(**state["model_config"])
    (gradients,) = [v for k, v in state["target_encoder"].items() if k.endswith(".gradients")]
    trained, _ = build_model(cfg, gradients)
    trained.load_state_dict(state["target_encoder"])
    torch.manual_seed(args.seed)
    initial, _ = build_model(cfg, gradients)
    networks = pd.read_csv(args.labels, sep="\t")["network"].to_numpy()
    if len(networks) != cfg.n_rois:
        raise SystemExit(f"{args.labels}: {len(networks)} ROIs, the model has {cfg.n_rois}")
    relations = token_relations(networks, cfg.n_time_patches)
    dataset = ShardDataset(args.manifest, "pretrain", window=cfg.n_timesteps, mode="eval")
    x = next(iter(DataLoader(dataset, batch_size=args.windows)))[0]
    chance = {k: round(float(rel.float().mean()), 4) for k, rel in relations.items()}
    print(json.dumps({"checkpoint": str(args.checkpoint), "step": state["step"], "windows": len(x),
                      "chance": chance, "trained": attention_mass(trained, x, relations),
                      "initial": attention_mass(initial, x, relations)}))


if __name__ == "__main__":
    main()
