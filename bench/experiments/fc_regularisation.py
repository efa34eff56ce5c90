"""The FC logistic baseline over its whole regularisation grid on the demo's sex and diagnosis tasks.

For every C of a log grid, with and without class-balanced weights: validation NLL, AUROC and balanced
accuracy, and the same on the test subjects, so one sees what any selection could reach (behind the sizing
of the simulator's ``SEX_WITHIN``, ``brainjepa/simulate.py``). Needs a finished demo working directory:

    python bench/experiments/fc_regularisation.py [--workdir .]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainjepa.evaluate.baselines import fc_features, log_grid
from brainjepa.evaluate.tasks import TaskConfig, load_task, split_manifests

TASKS = {"sex": {"cohorts": ["ukbsim"], "label": "sex", "kind": "binary", "positive": "M"},
         "diagnosis": {"cohorts": ["adnisim"], "label": "diagnosis", "kind": "binary"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("."))
    args = ap.parse_args()
    manifests = split_manifests(args.workdir / "results/shards")
    for name, spec in TASKS.items():
        w = load_task(TaskConfig.from_dict(name, spec), manifests, 160, with_data=True)
        x = fc_features(w.data).astype(float)
        tr, va, te = (w.mask(s) for s in ("train", "val", "test"))
        for weight in (None, "balanced"):
            for c in log_grid((-5, 3), 9):
                model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight=weight))
                model.fit(x[tr], w.target[tr])
                pv, pt = model.predict_proba(x[va])[:, 1], model.predict_proba(x[te])[:, 1]
                val = (log_loss(w.target[va], pv, labels=[0, 1]), roc_auc_score(w.target[va], pv),
                       balanced_accuracy_score(w.target[va], pv > 0.5))
                test = (roc_auc_score(w.target[te], pt), balanced_accuracy_score(w.target[te], pt > 0.5))
                print(f"{name} {weight or 'unweighted'} C={c:.0e}: val NLL {val[0]:.3f} AUROC {val[1]:.2f} "
                      f"BACC {val[2]:.2f} | test AUROC {test[0]:.2f} BACC {test[1]:.2f}")


if __name__ == "__main__":
    main()
