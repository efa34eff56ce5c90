"""Does the JEPA objective reward an encoder that mixes ROIs? Pretrain with its attention confined, then probe.

Mean-pooled features can only carry between-ROI correlation (where the demo plants age) if the encoder mixes
ROIs. This bench pretrains the same config, data and seed twice: ``free`` (as configured) and ``confined``,
where the first ``--blocks`` blocks of the encoder (context and target alike) may only attend to tokens of
the query's own network and time patch (networks from the atlas labels), so the mixing is built in rather
than learnt. For each it reports the mean JEPA loss over the last 200 steps (lower: the objective prefers
that encoder) and the ridge probe of ``bench/experiments/probe.py`` on mean-pooled features of the pretrained target
encoder and of the same architecture at its initialisation, both read out as they were trained (confined
or not). If pretraining made the confined encoder's features more informative than its random start, the
objective would favour ROI mixing; if they fall below the random start, it works against it.

    python bench/experiments/jepa_forced_mixing.py [--seeds 0] [--blocks 0] [--set optim.target_norm=layer_centered ...]
        [--manifest results/shards/pretrain/manifest.json] [--gradients results/gradients/gradients.tsv]

Runs are kept under ``--out`` (named by a hash of the data, blocks and overrides) and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe as P  # bench/experiments/probe.py: per_subject, probe, encoders, network_mixing, mean_pooled

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def confined_encoder(networks: np.ndarray, blocks: set[int]):
    """Inside the ``with``, every BrainEncoder's ``blocks`` attend only to same-network, same-time tokens."""
    import torch

    from brainjepa.models.encoder import BrainEncoder
    from brainjepa.models.layers import key_padding_mask

    original = BrainEncoder.forward

    def forward(self, x, token_idx=None, token_valid=None):
        if max(blocks) >= len(self.blocks):
            raise ValueError(f"--blocks {sorted(blocks)}: the encoder has blocks 0..{len(self.blocks) - 1}")
        tokens = self.embed(x, token_idx)
        padding = key_padding_mask(token_valid)
        idx = torch.arange(tokens.shape[1]).expand(tokens.shape[0], -1) if token_idx is None else token_idx
        allowed = P.same_network_same_time(networks, self.cfg.n_time_patches, idx)
        if padding is not None:
            allowed = allowed & padding
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, allowed if i in blocks else padding)
        return self.norm(tokens)

    BrainEncoder.forward = forward
    try:
        yield
    finally:
        BrainEncoder.forward = original


def pretrain(out: Path, args, seed: int) -> Path:
    """Run (or reuse) one pretraining in-process; returns its final checkpoint."""
    from brainjepa.train.config import load_config
    from brainjepa.train.pretrain import pretrain as run

    if not (out / "final.pt").exists():
        sets = [f"data.manifest={args.manifest}", f"data.gradients={args.gradients}", f"run.out_dir={out}",
                f"run.seed={seed}", "run.progress=false", "run.checkpoint_every=100", *args.set]
        run(load_config(args.config, sets))
    return out / "final.pt"


def tail_loss(run: Path, steps: int = 200) -> float:
    """Mean logged loss over the run's last ``steps`` optimizer steps (whatever ``run.log_every`` is)."""
    with open(run / "log.csv") as handle:
        rows = [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(handle)]
    last = rows[-1][0]
    return float(np.mean([loss for step, loss in rows if step > last - steps]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[0], help="encoder blocks to confine")
    parser.add_argument("--label", default="age")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "pretrain.yaml")
    parser.add_argument("--manifest", type=Path, default=REPO / "results" / "shards" / "pretrain" / "manifest.json")
    parser.add_argument("--gradients", type=Path, default=REPO / "results" / "gradients" / "gradients.tsv")
    parser.add_argument("--labels", type=Path,
                        default=REPO / "results" / "atlas" / "atlas_space-MNI152NLin6Asym_labels.tsv")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "forced_mixing")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    networks = pd.read_csv(args.labels, sep="\t")["network"].to_numpy()
    blocks = set(args.blocks)
    key = hashlib.sha256("\n".join([str(args.manifest.resolve()), f"blocks={sorted(blocks)}", *sorted(args.set)])
                         .encode()).hexdigest()[:10]
    for seed in args.seeds:
        for mode in ("free", "confined"):
            out = args.out / key / mode / f"seed{seed}"
            with confined_encoder(networks, blocks) if mode == "confined" else contextlib.nullcontext():
                checkpoint = pretrain(out, args, seed)
            pretrained, random_init, mcfg = P.encoders(checkpoint, seed)
            row = {"seed": seed, "mode": mode, "blocks": sorted(blocks), "overrides": args.set,
                   "loss_last_200_steps": round(tail_loss(out), 4)}
            for name, encoder in (("pretrained", pretrained), ("random_init", random_init)):
                featurize = (P.network_mixing(encoder, networks, mcfg.n_time_patches, blocks) if mode == "confined"
                             else P.mean_pooled(encoder))
                x, y = P.per_subject(featurize, args.manifest, args.label, mcfg.n_timesteps)
                row[name] = {k: round(v, 4) for k, v in P.probe(x, y).items()}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
