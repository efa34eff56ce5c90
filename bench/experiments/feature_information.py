"""Where a task's information sits: cross-validated logistic regression (train + val subjects, test once) on
simple features of a finished demo-style working directory, per encoder feature cache.

Features: per-ROI log amplitude of each window (std over time, from the shards), the frozen encoder's ROI tokens
(each ROI's tokens averaged over its time patches; their norms, and all R x D values) and its mean-pooled
features (what the paper's linear probe and fine-tuning head read). Behind the issue-11 note: on 1,500 ukbsim
subjects, sex is found from per-ROI amplitude and from the ROI tokens, not from the mean-pooled features.

    python bench/experiments/feature_information.py --workdir /tmp/big --task sex
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

TASKS = {"sex": {"cohorts": ["ukbsim"], "label": "sex", "kind": "binary", "positive": "M"},
         "diagnosis": {"cohorts": ["adnisim"], "label": "diagnosis", "kind": "binary"}}


def score(x: np.ndarray, target: np.ndarray, split: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import balanced_accuracy_score

    fit = np.isin(split, ["train", "val"])
    clf = LogisticRegressionCV(Cs=8, max_iter=3000).fit(x[fit], target[fit])
    return balanced_accuracy_score(target[split == "test"], clf.predict(x[split == "test"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("."))
    ap.add_argument("--task", choices=sorted(TASKS), default="sex")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from brainjepa.evaluate.features import read_features
    from brainjepa.evaluate.tasks import TaskConfig, load_task, split_manifests

    spec = TASKS[args.task]
    t = load_task(TaskConfig.from_dict(args.task, spec), split_manifests(args.workdir / "results/shards"), 160,
                  with_data=True)
    counts = {s: int(len(set(t.subject[t.split == s]))) for s in ("train", "val", "test")}
    print(f"{args.task}: subjects {counts}")
    print(f"per-ROI log amplitude: test BACC {score(np.log(t.data.std(axis=2)), t.target, t.split):.3f}")
    for cache in sorted((args.workdir / "results/evaluate/features").glob(f"*/{spec['cohorts'][0]}.npz")):
        f = read_features(cache)
        index = {(r, s): i for i, (r, s) in enumerate(zip(f["run_id"], f["start"]))}
        rows = np.array([index[(r, s)] for r, s in zip(t.run_id, t.start)])
        rois = f["roi_tokens"][rows].astype(np.float32)
        for name, x in (("ROI-token norms", np.linalg.norm(rois, axis=2)), ("ROI tokens", rois.reshape(len(rows), -1)),
                        ("mean-pooled", f["pooled"][rows])):
            print(f"{cache.parent.name} {name} ({x.shape[1]} features): test BACC {score(x, t.target, t.split):.3f}")


if __name__ == "__main__":
    main()
