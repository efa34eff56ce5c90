"""The demo's evaluation checks of issue 27, on a finished run: for every encoder and task, the linear probe's test
metric beside the closed-form probe's on the same features (r, or balanced accuracy in points), and for every
classification record of a probe or fine-tune, whether it predicts one class only (at its decision threshold) while
the closed-form probe on the same encoder's features is above chance.

    python bench/demo_evaluation_checks.py [WORKDIR]     # default: the current directory
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    metrics = pd.read_csv(work / "results" / "metrics.tsv", sep="\t")
    metrics = metrics[metrics["kind"].isin(["regression", "binary", "multiclass"])]
    main_metric = {"regression": "test_r", "binary": "test_balanced_accuracy", "multiclass": "test_balanced_accuracy"}
    rows = []
    for (task, kind), group in metrics.groupby(["task", "kind"]):
        column = main_metric[kind]
        means = group.groupby("method")[column].mean()
        for method in means.index:
            if method.endswith("_linprobe"):
                encoder = method[: -len("_linprobe")]
                closed = means.get(f"{encoder}_closed_form")
                if closed is not None:
                    scale = 1.0 if kind == "regression" else 100.0
                    rows.append({"task": task, "encoder": encoder, "metric": column[5:],
                                 "linprobe": round(means[method] * scale, 3), "closed_form": round(closed * scale, 3),
                                 "difference": round((means[method] - closed) * scale, 3)})
    table = pd.DataFrame(rows)
    print("Linear probe vs closed-form probe on the same features (mean over seeds; BACC in points):")
    print(table.to_string(index=False))
    is_r = table["metric"] == "r"
    print(f"largest |difference|: r {table[is_r]['difference'].abs().max():.3f}, "
          f"BACC {table[~is_r]['difference'].abs().max():.1f} points")
    stuck = []
    for path in sorted((work / "results" / "evaluate").glob("*/*/seed[0-9]*.json")):
        if path.name.endswith(".provenance.json"):
            continue
        record = json.loads(path.read_text())
        if record["kind"] == "regression" or record.get("protocol") not in ("finetune", "linprobe", "attentive"):
            continue
        probs = np.array([p["probabilities"] for p in record["predictions"]])
        threshold = (record.get("selected") or {}).get("threshold")
        predicted = (probs[:, 1] > threshold).astype(int) if threshold is not None else probs.argmax(1)
        if len(set(predicted)) == 1:
            closed = metrics.query(f"task == '{record['task']}' and method == '{record['encoder']}_closed_form'")
            stuck.append((str(path.relative_to(work)), float(closed["test_balanced_accuracy"].mean())))
    print(f"probe / fine-tune records predicting one class: {len(stuck)}")
    for path, closed in stuck:
        print(f"  {path} (closed-form BACC on its features: {closed:.3f})")


if __name__ == "__main__":
    main()
