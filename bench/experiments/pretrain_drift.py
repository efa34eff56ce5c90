"""How far pretraining moved the encoder: per-tensor relative distance of a checkpoint's target encoder from
a fresh initialisation, and the same for two fresh initialisations (the scale of "unrelated weights").

Uses the evaluation's own encoder loading (``brainjepa.evaluate.encoders.load_encoder``) on a finished demo
working directory; prints the median and max over weight matrices of |W_a - W_b| / |W_b|:

    python bench/experiments/pretrain_drift.py [--workdir .]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.evaluate.encoders import load_encoder

CHECKPOINTS = {"jepa": "results/pretrain/brainjepa_tiny/final.pt", "mae": "results/pretrain/mae_tiny/final.pt"}


def relative_distances(a, b) -> np.ndarray:
    sa, sb = a.state_dict(), b.state_dict()
    return np.array([float((sa[k] - sb[k]).norm() / sb[k].norm()) for k in sb
                     if sb[k].ndim > 1 and k in sa and sb[k].norm() > 0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("."))
    args = ap.parse_args()
    wd = args.workdir
    rois = pd.read_csv(wd / "results/atlas/atlas_space-MNI152NLin6Asym_labels.tsv", sep="\t")["name"].tolist()
    random_spec = {"kind": "random", "config": str(wd / "config/pretrain.yaml"),
                   "gradients": str(wd / "results/gradients/gradients.tsv"),
                   "labels": str(wd / "results/atlas/atlas_space-MNI152NLin6Asym_labels.tsv")}
    fresh0, _ = load_encoder(random_spec, rois, 160, seed=0)
    fresh1, _ = load_encoder(random_spec, rois, 160, seed=1)
    rows = {"fresh seed 1 vs fresh seed 0": relative_distances(fresh1, fresh0)}
    for name, path in CHECKPOINTS.items():
        trained, _ = load_encoder({"kind": "checkpoint", "path": str(wd / path)}, rois, 160)
        rows[f"{name} pretrained vs fresh seed 0"] = relative_distances(trained, fresh0)
    for name, d in rows.items():
        print(f"{name}: median {np.median(d):.3f}, max {d.max():.3f} over {len(d)} weight matrices")


if __name__ == "__main__":
    main()
