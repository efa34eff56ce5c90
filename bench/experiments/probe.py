"""Does pretraining help? Linear probe of the pretrained vs a randomly initialised encoder on the demo.

For each seed: pretrain the tiny model (config/pretrain.yaml, seed overridden; reused when its final.pt
exists), then embed every run of every split with (a) the pretrained target encoder and (b) an encoder with
the same architecture and a fresh random initialisation (same seed: the pretraining run's own starting
point). Features: the mean over all tokens of
each evaluation window, averaged over a subject's windows and runs. Two references bracket the result: the
probe on each window's FC (what the planted label lives in), and ``random_init_network_mixing``: the random
encoder with every attention layer restricted to tokens of the query's own network and time patch (atlas
``network`` labels). That is what mean-pooled features of an encoder that had learnt to mix ROIs within a
network could carry, with no training at all. Probe: ridge regression (alpha chosen by
inner CV) of the planted label, scored by 5-fold cross-validation over subjects, repeated 5 times: Pearson r
and MSE on the z-scored label. Also reported per encoder: ``content_share``, the share of its layer-normed
features that depends on the input rather than on the token position (falls towards 0 on positional collapse).

    python bench/experiments/probe.py [--seeds 0 1 2] [--label age] [--out bench/out/probe] [--set optim.epochs=200 ...]

``--set`` overrides the pretraining config (as ``brainjepa pretrain --set``); each combination of overrides
gets its own run directory under ``--out`` (named by a hash of the data and the overrides), so runs are
reused, and an interrupted one resumes from its ``latest.pt``.

Run after `snakemake --cores 2 all` (the demo data). ``--shards``: the folder of the per-split shard sets
(``results/shards``, one ``<split>/manifest.json`` each) or a single manifest holding several splits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

REPO = Path(__file__).resolve().parents[2]


def split_manifests(shards: Path) -> list[tuple[Path, str]]:
    """(manifest, split) pairs: every ``<split>/manifest.json`` under a folder, or the splits of one manifest."""
    from brainjepa.data.shards import load_manifest

    if shards.is_dir() and not (shards / "manifest.json").exists():
        return [(m, m.parent.name) for m in sorted(shards.glob("*/manifest.json"))]
    return [(shards, split) for split in load_manifest(shards)["splits"]]


def pretrain_manifest(shards: Path) -> Path:
    return dict((split, m) for m, split in split_manifests(shards))["pretrain"]


def run_dir(args, seed: int) -> Path:
    """bench/out/probe/seed0 for the demo's data and config; .../<hash of data and overrides>/seed0 otherwise."""
    default_data = args.manifest.resolve() == (REPO / "results" / "shards").resolve()
    if not args.set and default_data:
        return args.out / f"seed{seed}"
    key = hashlib.sha256("\n".join([str(args.manifest.resolve()), *sorted(args.set)]).encode()).hexdigest()[:10]
    return args.out / key / f"seed{seed}"


def pretrain(seed: int, args) -> Path:
    out = run_dir(args, seed)
    if not (out / "final.pt").exists():
        subprocess.run([sys.executable, "-m", "brainjepa.cli", "pretrain", "--config", str(args.config),
                        "--set", f"data.manifest={pretrain_manifest(args.manifest)}",
                        "--set", f"data.gradients={args.gradients}",
                        "--set", f"run.out_dir={out}", "--set", f"run.seed={seed}", "--set", "run.progress=false",
                        *[x for item in args.set for x in ("--set", item)]], check=True)
    return out / "final.pt"


@torch.no_grad()
def per_subject(featurize, manifest: Path, label: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """featurize(x [B, 1, R, T]) -> [B, F], averaged over each subject's evaluation windows and runs.

    Returns features [S, F] and the subject's label [S] (subjects with the label), over every split.
    """
    from torch.utils.data import DataLoader

    from brainjepa.data.dataset import ShardDataset

    feats: dict[str, list] = {}
    labels: dict[str, float] = {}
    for path, split in split_manifests(manifest):
        dataset = ShardDataset(path, split, window=window, mode="eval", label_columns=[label],
                               return_run_id=True)
        for x, y, run_ids in DataLoader(dataset, batch_size=16):
            for run_id, f, value in zip(run_ids, featurize(x), y[:, 0]):
                subject = run_id.split("_ses-")[0]
                feats.setdefault(subject, []).append(np.asarray(f))
                labels[subject] = float(value)
    subjects = sorted(s for s in feats if np.isfinite(labels[s]))
    return np.stack([np.mean(feats[s], axis=0) for s in subjects]), np.array([labels[s] for s in subjects])


@torch.no_grad()
def content_share(encoder, manifest: Path, window: int) -> float:
    """Share of the layer-normed output that depends on the input, not on the token's position.

    Over the pretraining split's evaluation windows: ``h`` [N, L, D] layer-normed encoder outputs; the
    per-position mean over windows is the positional part; returns ``|h - mean_N h|^2 / |h|^2`` (0 when
    every window gives the same features: positional collapse).
    """
    from torch.utils.data import DataLoader

    from brainjepa.data.dataset import ShardDataset

    encoder.eval()
    x = torch.cat([b[0] for b in DataLoader(ShardDataset(pretrain_manifest(manifest), "pretrain", window=window,
                                                         mode="eval"),
                                            batch_size=16)])
    h = torch.nn.functional.layer_norm(encoder.forward_features(x), (encoder.embed_dim,))
    return float(((h - h.mean(dim=0, keepdim=True)) ** 2).mean() / (h ** 2).mean())


def mean_pooled(encoder):
    """Encoder features: the mean over all tokens of each window."""
    encoder.eval()
    return lambda x: encoder.forward_features(x).mean(dim=1).numpy()


def same_network_same_time(networks: np.ndarray, n_time_patches: int,
                           token_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Which keys each query may attend to when confined to its own network and time patch.

    networks: [R] network label per ROI; token = roi * W + t. token_idx: [B, N] kept tokens (None: all
    R * W). Returns bool [N_all, N_all], or [B, 1, N, N] for ``token_idx`` (an SDPA mask, True = attend;
    every token may attend to itself).
    """
    codes = torch.as_tensor(pd.factorize(np.asarray(networks))[0])
    net = codes.repeat_interleave(n_time_patches)
    time = torch.arange(n_time_patches).repeat(len(codes))
    if token_idx is None:
        return (net[:, None] == net[None, :]) & (time[:, None] == time[None, :])
    n, t = net[token_idx], time[token_idx]
    return ((n[:, :, None] == n[:, None, :]) & (t[:, :, None] == t[:, None, :]))[:, None]


def network_mixing(encoder, networks: np.ndarray, n_time_patches: int, blocks=None):
    """Mean-pooled features with the attention of ``blocks`` (None: all) confined to same-network, same-time keys."""
    allowed = same_network_same_time(networks, n_time_patches)
    confined = set(range(len(encoder.blocks))) if blocks is None else set(blocks)
    encoder.eval()

    def featurize(x):
        tokens = encoder.embed(x)
        for i, block in enumerate(encoder.blocks):
            tokens = block(tokens, allowed if i in confined else None)
        return encoder.norm(tokens).mean(dim=1).numpy()

    return featurize


def fc_upper_triangle(x: torch.Tensor) -> np.ndarray:
    """Reference features carrying the planted signal: each window's FC, upper triangle. x: [B, 1, R, T]."""
    fcs = [np.corrcoef(xi[0].numpy()) for xi in x]
    return np.stack([fc[np.triu_indices(len(fc), 1)] for fc in fcs])


def probe(features: np.ndarray, target: np.ndarray, repeats: int = 5) -> dict:
    """Cross-validated ridge probe: mean Pearson r and MSE of the z-scored target over repeats."""
    z = (target - target.mean()) / target.std()
    rs, mses = [], []
    for rep in range(repeats):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
        pred = cross_val_predict(model, features, z, cv=KFold(5, shuffle=True, random_state=rep))
        rs.append(np.corrcoef(pred, z)[0, 1])
        mses.append(np.mean((pred - z) ** 2))
    return {"r": float(np.mean(rs)), "mse": float(np.mean(mses))}


def encoders(checkpoint: Path, seed: int):
    from brainjepa.models import ModelConfig, build_model
    from brainjepa.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    cfg = ModelConfig(**state["model_config"])
    (gradients,) = [v for k, v in state["target_encoder"].items() if k.endswith(".gradients")]
    pretrained, _ = build_model(cfg, gradients)
    pretrained.load_state_dict(state["target_encoder"])
    torch.manual_seed(seed)
    random_init, _ = build_model(cfg, gradients)  # same architecture and gradients, fresh weights
    return pretrained, random_init, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label", default="age")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "pretrain.yaml")
    parser.add_argument("--shards", dest="manifest", type=Path, default=REPO / "results" / "shards",
                        help="per-split shard sets (results/shards) or one manifest of several splits")
    parser.add_argument("--gradients", type=Path, default=REPO / "results" / "gradients" / "gradients.tsv")
    parser.add_argument("--labels", type=Path,
                        default=REPO / "results" / "atlas" / "atlas_space-MNI152NLin6Asym_labels.tsv",
                        help="atlas labels with a 'network' column (for the network-mixing reference)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "probe")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="pretraining config override (repeatable)")
    args = parser.parse_args()
    rows = []
    x, y = per_subject(fc_upper_triangle, args.manifest, args.label, 160)
    print(json.dumps({"reference": "fc_upper_triangle", "label": args.label, "subjects": len(y), **probe(x, y)}),
          flush=True)
    networks = pd.read_csv(args.labels, sep="\t")["network"].to_numpy()
    for seed in args.seeds:
        pretrained, random_init, cfg = encoders(pretrain(seed, args), seed)
        if len(networks) != cfg.n_rois:
            raise SystemExit(f"{args.labels}: {len(networks)} ROIs, the model has {cfg.n_rois}")
        x, y = per_subject(network_mixing(random_init, networks, cfg.n_time_patches), args.manifest, args.label,
                           cfg.n_timesteps)
        print(json.dumps({"seed": seed, "reference": "random_init_network_mixing", "label": args.label,
                          "subjects": len(y), **probe(x, y)}), flush=True)
        for name, encoder in (("pretrained", pretrained), ("random_init", random_init)):
            x, y = per_subject(mean_pooled(encoder), args.manifest, args.label, cfg.n_timesteps)
            rows.append({"seed": seed, "encoder": name, "label": args.label, "subjects": len(y), **probe(x, y),
                         "content_share": round(content_share(encoder, args.manifest, cfg.n_timesteps), 4)})
            print(json.dumps(rows[-1]), flush=True)
    summary = {name: {k: float(np.mean([r[k] for r in rows if r["encoder"] == name]))
                      for k in ("r", "mse", "content_share")}
               for name in ("pretrained", "random_init")}
    # A win needs both a higher r and a lower MSE (with no signal at all, r alone moves by noise).
    wins = sum(p["r"] > q["r"] and p["mse"] < q["mse"] for p, q in zip(rows[::2], rows[1::2]))
    print(json.dumps({"overrides": args.set, "summary": summary,
                      "pretrained_beats_random_in_seeds": f"{wins}/{len(args.seeds)}"}))


if __name__ == "__main__":
    main()
