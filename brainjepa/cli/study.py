"""Subcommand of the pretraining study (docs/study.md): pretraining-study."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainjepa.cli.common import json_object


def tasks_argument(text: str) -> dict:
    """``--tasks``: a JSON object {name: {cohorts, label, kind, ...}}, or the path of a JSON file holding one."""
    if not text.lstrip().startswith("{") and Path(text).is_file():
        text = Path(text).read_text()
    return json_object(text)


def _study(args: argparse.Namespace) -> None:
    from brainjepa.evaluate.study import StudyInputs, run_study

    inputs = StudyInputs(pretrain_manifest=args.pretrain_manifest, shards=args.shards, tasks=args.tasks,
                         gradients=args.gradients, labels=args.labels, stats=args.stats, splits=args.splits,
                         runs_root=args.runs_root)
    run_study(args.config, inputs, args.out_dir, threads=args.threads)


def register(sub) -> None:
    """The ``pretraining-study`` subcommand on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`):
    :func:`brainjepa.evaluate.study.run_study` of one study config (docs/study.md), in its out-dir."""
    p = sub.add_parser("pretraining-study",
                       help="does pretraining beat random init? pretrain each config of a study to a step budget, "
                            "probe its checkpoints and random-init seeds in repeated CV, paired bootstraps")
    p.add_argument("--config", required=True, help="study config YAML (config/study/*.yaml)")
    p.add_argument("--pretrain-manifest", required=True,
                   help="the pretraining shards' manifest (results/shards/pretrain/manifest.json)")
    p.add_argument("--shards", required=True, help="folder of the per-split shard sets (<split>/manifest.json)")
    p.add_argument("--tasks", type=tasks_argument, required=True,
                   help='JSON tasks (or a JSON file), as evaluate.tasks: {"age": {"cohorts": ["ukbsim"], '
                        '"label": "age", "kind": "regression"}}')
    p.add_argument("--gradients", required=True, help="gradients TSV (results/gradients/gradients.tsv)")
    p.add_argument("--labels", help="the atlas label table (ROI centroids for model.positional centroid)")
    p.add_argument("--stats", help="scaling_stats.json (checked against the shards; needed for data fractions < 1)")
    p.add_argument("--splits", help="the pretraining split table (results/splits/split-pretrain.tsv; data fractions)")
    p.add_argument("--runs-root", help="folder of the aligned runs (results/align_tr; data fractions)")
    p.add_argument("--threads", type=int, help="torch and scikit-learn threads")
    p.add_argument("--out-dir", required=True, help="the study's folder (results/study/<name>)")
    p.set_defaults(func=_study)
