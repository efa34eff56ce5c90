"""Does the in-silico perturbation find the planted Default network when the representation carries it?

The demo's encoders hardly separate the diagnosis groups in their pooled representation (closed-form AUROC about
0.5 on adnisim), so their perturbation rankings say little about the planted effect (Default amplitude x 0.85,
Default within-network correlation - 0.15). This check swaps in a hand-made "encoder" whose tokens are each ROI's
power (mean square over time patches, ROI r's tokens carry it in dimension r): its pooled representation holds the
amplitude effect, so a working perturbation must rank Default first and the random-direction control must not.

    python bench/experiments/perturb_planted.py [--shards results/shards] \\
        [--labels results/atlas/..._labels.tsv] [--goal mean]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from brainjepa.capabilities import perturbation as perturb
from brainjepa.capabilities.network_id import roi_networks
from brainjepa.evaluate.tasks import split_manifests, split_windows
from brainjepa.preprocess.atlas import read_label_table


class RoiPower(nn.Module):
    """x [B, 1, R, T] -> tokens [B, R * W, R]: token (r, t) is the mean square of ROI r's patch t in dimension r."""

    def __init__(self, n_rois: int, patch: int) -> None:
        super().__init__()
        self.n_rois, self.patch = n_rois, patch
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, r, t = x.shape
        power = (x[:, 0] ** 2).reshape(b, r, t // self.patch, self.patch).mean(-1)      # [B, R, W]
        eye = torch.eye(r, dtype=x.dtype)
        return self.scale * (power[..., None] * eye[:, None, :]).reshape(b, r * (t // self.patch), r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="results/shards")
    ap.add_argument("--labels", default="results/atlas/atlas_space-MNI152NLin6Asym_labels.tsv")
    ap.add_argument("--cohort", default="adnisim")
    ap.add_argument("--settings", default="{}", help="JSON PerturbationConfig overrides")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = perturb.PerturbationConfig.from_dict(json.loads(args.settings))
    manifests = split_manifests(args.shards)
    manifest = json.loads(manifests["train"].read_text())
    w = split_windows(manifests, [args.cohort], int(manifest["window"]), ("train", "test"), label=cfg.label)
    perturb.check_groups({s: v.value for s, v in w.items()}, cfg)
    networks = roi_networks(read_label_table(args.labels), manifest["roi_names"], cfg.network_column, args.labels)
    encoder = RoiPower(len(manifest["roi_names"]), 32)
    t0 = time.perf_counter()
    train, test = w["train"], w["test"]
    both = np.isin(train.value, [cfg.source, cfg.target])
    with torch.no_grad():
        rep = perturb.pooled(encoder, torch.from_numpy(train.data[both])[:, None]).numpy()
    subject_rep, is_target, mu = perturb.training_groups(rep, train.subject[both], train.value[both], cfg)
    mu_s, mu_t = mu["source"], mu["target"]
    difference = perturb.group_difference(subject_rep, is_target, cfg.permutations)
    print(f"group difference: distance {difference['distance']:.4f}, permuted mean {difference['null_mean']:.4f}, "
          f"p {difference['p']:.4f}")
    source = test.value == cfg.source
    data, subject = test.data[source], test.subject[source]
    scale = float(np.sum((mu_s - mu_t) ** 2))
    for name, goal in (("target", mu_t), ("control", perturb.random_direction_target(mu_s, mu_t, 0))):
        if cfg.goal == "shift":
            with torch.no_grad():
                start = perturb.pooled(encoder, torch.from_numpy(data)[:, None]).numpy()
            goal = start + goal - mu_s
        run = perturb.perturb_windows(encoder, data, goal, scale, cfg)
        _, magnitude = perturb.roi_magnitudes(run["delta"], subject)
        table = perturb.network_magnitudes(magnitude, networks).sort_values("rank")
        closed, projected = perturb.closed_shares(run["start"], run["end"], goal, mu_s, mu_t)
        print(f"{name:8s} closed {closed.mean():.3f} projected {projected.mean():.3f}: "
              + ", ".join(f"{r.network} {r.magnitude:.4f}" for r in table.itertuples()))
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
