"""LP-FT against a random head (``finetune.head_init: probe | random``) on simulated windows.

Without a finished demo working directory (``results/shards``), this builds a small cohort in memory: per subject
two runs of ``--rois`` ROIs, each giving ``T / window`` evaluation windows, with two planted effects of moderate size,
as in tests/test_evaluate.py's fixture: a binary label raises the amplitude of ROIs 0-3 (x (1 + e), e ~ 0.25) and
lowers it otherwise, and a continuous one (``age``) sets the shared fluctuation of ROIs 4-7 (correlation 0.1-0.6).
An untrained tiny encoder (``--width``, depth 2, the random-init encoder that "from scratch" fine-tunes) is
fine-tuned with the demo's fine-tune settings (config/config.yaml ``evaluate.settings``: 20 epochs, warm-up 2,
base LR 3e-2, balanced class weights) through ``evaluate_windows`` (the code of ``rule evaluate``), once per head
initialisation and seed; it prints each run's selected epoch and test metrics and the mean per arm.

    python bench/experiments/lpft_simulated.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DEMO_FINETUNE = {"epochs": 20, "warmup_epochs": 2, "base_lr": 3.0e-2}   # config/config.yaml evaluate.settings


def simulate(n_subjects: int, rois: int, length: int, window: int, effect: float, seed: int = 0):
    """Windows [N, R, window], subject [N], split [N], binary label [N], age [N] (one value per subject)."""
    rng = np.random.default_rng(seed)
    data, subject, split, label, age = [], [], [], [], []
    for i in range(n_subjects):
        y = i % 2
        a = float(rng.uniform(45, 80))
        part = ("train", "train", "train", "val", "test")[i % 5]
        for _ in range(2):                                            # two runs
            x = rng.normal(size=(rois, length))
            coupling = 0.1 + 0.5 * (a - 45) / 35
            shared = rng.normal(size=length)
            x[4:8] = np.sqrt(coupling) * shared + np.sqrt(1 - coupling) * x[4:8]
            x[:4] *= (1 + effect) if y else 1 / (1 + effect)
            x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True).mean()
            for s0 in range(0, length - window + 1, window):
                data.append(x[:, s0:s0 + window])
                subject.append(f"sim/s{i:03d}")
                split.append(part)
                label.append(y)
                age.append(a)
    return (np.stack(data).astype(np.float32), np.array(subject), np.array(split), np.array(label),
            np.array(age))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=120)
    ap.add_argument("--rois", type=int, default=16)
    ap.add_argument("--effect", type=float, default=0.25)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--finetune", type=json.loads, default=DEMO_FINETUNE, help="JSON fine-tune settings")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from brainjepa.evaluate.config import ProtocolConfig
    from brainjepa.evaluate.run import evaluate_windows
    from brainjepa.evaluate.tasks import TaskConfig, TaskWindows
    from brainjepa.group.gradients import write_gradients

    window, length = 32, 64
    data, subject, split, label, age = simulate(args.subjects, args.rois, length, window, args.effect)
    names = [f"roi{i}" for i in range(args.rois)]
    tmp = Path(tempfile.mkdtemp())
    write_gradients(np.random.default_rng(0).normal(size=(args.rois, 4)), np.linspace(1, 0.5, 4), names,
                    tmp / "gradients.tsv")
    (tmp / "model.yaml").write_text(f"model:\n  size: tiny\n  embed_dim: {args.width}\n  depth: 2\n  num_heads: 4\n"
                                    "  predictor_dim: 16\n  predictor_depth: 1\n  patch_size: 16\n")
    spec = {"kind": "random", "config": str(tmp / "model.yaml"), "gradients": str(tmp / "gradients.tsv")}
    train = split == "train"
    per_subject_age = {s: a for s, a in zip(subject[train], age[train])}
    mean, std = np.mean(list(per_subject_age.values())), np.std(list(per_subject_age.values()))
    tasks = {"binary": (TaskConfig.from_dict("label", {"cohorts": ["sim"], "label": "y", "kind": "binary"}),
                        label.astype(np.int64), ["0", "1"], 0.0, 1.0),
             "age": (TaskConfig.from_dict("age", {"cohorts": ["sim"], "label": "age", "kind": "regression"}),
                     (age - mean) / std, [], float(mean), float(std))}
    print(f"subjects {args.subjects} (train/val/test 3:1:1), windows {len(data)}, ROIs {args.rois}, "
          f"effect {args.effect}, width {args.width}; fine-tune {args.finetune}")
    for name, (task, target, classes, m, s) in tasks.items():
        w = TaskWindows(task, subject, np.zeros(len(data), int), split, subject, target,
                        (label if name == "binary" else age).copy(), classes, m, s, data, names)
        metric = "r" if name == "age" else "balanced_accuracy"
        for head_init in ("probe", "random"):
            cfg = ProtocolConfig.from_dict({"threads": args.threads, "class_weight": "balanced",
                                            "finetune": {**args.finetune, "head_init": head_init}})
            scores = []
            for seed in (int(v) for v in args.seeds.split(",")):
                t0 = time.perf_counter()
                r = evaluate_windows(w, "random_finetune", seed, cfg, spec)
                scores.append(r["test"][metric])
                extra = f", AUROC {r['test']['auroc']:.3f}" if name == "binary" else ""
                print(f"{name} head_init={head_init} seed {seed}: epoch {r['selected']['epoch']}, test {metric} "
                      f"{r['test'][metric]:.3f}{extra} ({time.perf_counter() - t0:.0f} s)", flush=True)
            print(f"{name} head_init={head_init}: mean test {metric} {np.mean(scores):.3f}", flush=True)


if __name__ == "__main__":
    main()
