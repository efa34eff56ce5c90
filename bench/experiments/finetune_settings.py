"""Fine-tuning settings on the demo: test metrics of one task for given fine-tune settings, seeds 0 and 1.

Runs the workflow's evaluation of ``<encoder>_finetune`` in-process (the same code as ``rule evaluate``) on a
finished demo working directory (``results/shards`` and ``results/pretrain/*/final.pt``) and prints, per seed,
the selected epoch, the test metrics and the seconds. Behind the demo's fine-tune settings in
``config/config.yaml`` (e.g. 6 epochs at base_lr 1e-2 at chance on age, 20 at 3e-2 r ~0.7):

    python bench/experiments/finetune_settings.py age jepa '{"epochs": 20, "warmup_epochs": 2, "base_lr": 0.03}'
    python bench/experiments/finetune_settings.py sex jepa '{"epochs": 20, "warmup_epochs": 2, "base_lr": 0.03}' \
        --class-weight balanced
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from brainjepa.evaluate.config import ProtocolConfig
from brainjepa.evaluate.run import run_evaluation
from brainjepa.evaluate.tasks import TaskConfig

TASKS = {"age": {"cohorts": ["ukbsim"], "label": "age", "kind": "regression"},
         "sex": {"cohorts": ["ukbsim"], "label": "sex", "kind": "binary", "positive": "M"},
         "diagnosis": {"cohorts": ["adnisim"], "label": "diagnosis", "kind": "binary"}}
CHECKPOINTS = {"jepa": "results/pretrain/brainjepa_tiny/final.pt", "mae": "results/pretrain/mae_tiny/final.pt"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=sorted(TASKS))
    ap.add_argument("encoder", choices=sorted(CHECKPOINTS))
    ap.add_argument("finetune", type=json.loads, help="JSON fine-tune settings (evaluate.settings.finetune)")
    ap.add_argument("--class-weight", default="none", choices=["none", "balanced"])
    ap.add_argument("--workdir", type=Path, default=Path("."))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", help="another pretrained checkpoint of the encoder (e.g. a longer run)")
    args = ap.parse_args()
    task = TaskConfig.from_dict(args.task, TASKS[args.task])
    spec = {"kind": "checkpoint", "path": args.checkpoint or str(args.workdir / CHECKPOINTS[args.encoder])}
    cfg = ProtocolConfig.from_dict({"threads": args.threads, "class_weight": args.class_weight,
                                    "finetune": args.finetune})
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (0, 1):
            r = run_evaluation(task, f"{args.encoder}_finetune", seed, args.workdir / "results/shards",
                               Path(tmp) / "out.json", cfg, spec)
            metrics = {k: round(v, 3) for k, v in r["test"].items()}
            print(f"{args.task} {args.encoder} seed {seed}: epoch {r['selected']['epoch']}, test {metrics}, "
                  f"{r['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
