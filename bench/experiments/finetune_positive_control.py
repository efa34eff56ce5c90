"""Positive control of the fine-tune: how strong must the demo's planted amplitude effect be for the harness's
fine-tuning to find it with the demo's labelled subjects?

On a finished demo working directory (``results/shards``, ``results/pretrain/brainjepa_tiny/final.pt``), the
task's windows are loaded as ``rule evaluate`` loads them, and the task's planted amplitude contrast is
strengthened by a factor k in every window (sex: SomMot amplitude x k and Vis amplitude / k in men, the reverse in
women, on top of the simulator's exp(+-0.08); diagnosis: Default amplitude / k with the diagnosis, x k without;
k = 1 is the demo as simulated). Per k it prints the contrast's effect size (Cohen's d of the per-window log
amplitude contrast between the classes, all splits), the test balanced accuracy of a logistic regression on the
per-ROI log amplitudes (the information a perfect reader of amplitude has at this training size; train + val,
test once) and, per seed, the fine-tune's selected epoch, test BACC and AUROC (the demo's fine-tune settings,
``evaluate.evaluate_windows``: the same code as ``rule evaluate``).

    python bench/experiments/finetune_positive_control.py --task sex --factors 1,1.1,1.15,1.3
    python bench/experiments/finetune_positive_control.py --task diagnosis --factors 1,1.15,1.3,1.5
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from pathlib import Path

import numpy as np

TASKS = {"sex": {"cohorts": ["ukbsim"], "label": "sex", "kind": "binary", "positive": "M"},
         "diagnosis": {"cohorts": ["adnisim"], "label": "diagnosis", "kind": "binary"}}
DEMO_FINETUNE = {"epochs": 20, "warmup_epochs": 2, "base_lr": 3.0e-2}   # config/config.yaml evaluate.settings


def contrast(task: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(up, down) ROI masks of the task's planted contrast: up scaled by k in class 1, down by 1 / k."""
    has = lambda key: np.array([key in n for n in names])  # noqa: E731
    if task == "sex":
        return has("_SomMot_"), has("_Vis_")
    default = has("_Default_")
    return np.zeros_like(default), default


def plant(data: np.ndarray, target: np.ndarray, up: np.ndarray, down: np.ndarray, k: float) -> np.ndarray:
    """Windows [N, R, T] with the contrast strengthened by k: class 1 x k on ``up`` and / k on ``down``, class 0
    the reverse."""
    sign = np.where(target == 1, 1.0, -1.0)[:, None, None]
    out = data.copy()
    out[:, up] *= k ** sign
    out[:, down] *= k ** -sign
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="sex")
    ap.add_argument("--factors", default="1,1.1,1.15,1.3", help="comma-separated k")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--workdir", type=Path, default=Path("."))
    ap.add_argument("--finetune", type=json.loads, default=DEMO_FINETUNE, help="JSON fine-tune settings")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import balanced_accuracy_score

    from brainjepa.evaluate.config import ProtocolConfig
    from brainjepa.evaluate.run import evaluate_windows
    from brainjepa.evaluate.tasks import TaskConfig, load_task, split_manifests

    task = TaskConfig.from_dict(args.task, TASKS[args.task])
    base = load_task(task, split_manifests(args.workdir / "results/shards"), 160, with_data=True)
    up, down = contrast(args.task, base.roi_names)
    cfg = ProtocolConfig.from_dict({"threads": args.threads, "class_weight": "balanced", "finetune": args.finetune})
    spec = {"kind": "checkpoint", "path": str(args.workdir / "results/pretrain/brainjepa_tiny/final.pt")}
    print(f"{args.task}: subjects {base.counts()}; contrast ROIs up {int(up.sum())}, down {int(down.sum())}")
    for k in (float(v) for v in args.factors.split(",")):
        w = copy.copy(base)
        w.data = plant(base.data, base.target, up, down, k)
        amp = np.log(w.data.std(axis=2))
        score = (amp[:, up].mean(1) if up.any() else 0.0) - amp[:, down].mean(1)
        a, b = score[w.target == 1], score[w.target == 0]
        d = (a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
        fit, test = np.isin(w.split, ["train", "val"]), w.split == "test"
        oracle = LogisticRegressionCV(Cs=8, max_iter=3000).fit(amp[fit], w.target[fit])
        line = (f"k={k:g}: contrast d={d:.2f}; log-amplitude logistic test BACC "
                f"{balanced_accuracy_score(w.target[test], oracle.predict(amp[test])):.3f}; fine-tune")
        for seed in (int(s) for s in args.seeds.split(",")):
            r = evaluate_windows(w, "jepa_finetune", seed, cfg, spec)
            line += (f" seed {seed}: epoch {r['selected']['epoch']}, BACC {r['test']['balanced_accuracy']:.3f},"
                     f" AUROC {r['test']['auroc']:.3f};")
        print(line, flush=True)


if __name__ == "__main__":
    main()
