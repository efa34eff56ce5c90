"""Subcommands of downstream evaluation: features, evaluate, metrics."""

from __future__ import annotations

import argparse

from brainjepa.cli.common import json_object, parent


def _features(args: argparse.Namespace) -> None:
    from brainjepa.evaluate.config import ProtocolConfig
    from brainjepa.evaluate.features import run_features

    cfg = ProtocolConfig.from_dict(args.protocols)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    run_features(args.encoder, args.shards, args.cohort, args.out, seed=args.seed, device_kind=cfg.device,
                 precision=cfg.precision)


def _evaluate(args: argparse.Namespace) -> None:
    from brainjepa.evaluate.config import ProtocolConfig
    from brainjepa.evaluate.run import run_evaluation
    from brainjepa.evaluate.tasks import Resampling, TaskConfig

    name = args.task.get("name")
    if not isinstance(name, str):
        raise argparse.ArgumentTypeError("--task needs a \"name\"")
    task = TaskConfig.from_dict(name, {k: v for k, v in args.task.items() if k != "name"})
    try:
        run_evaluation(task, args.method, args.seed, args.shards, args.out, ProtocolConfig.from_dict(args.protocols),
                       args.encoder, args.features, Resampling.from_dict(args.resampling))
    finally:
        import sys

        if "torch" in sys.modules:  # only the gradient-trained protocols import torch (and start a group)
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _metrics(args: argparse.Namespace) -> None:
    from brainjepa.evaluate.summary import run_summary

    run_summary(args.results, args.out, args.tables, n_boot=args.bootstrap)


def register(sub) -> None:
    """The evaluation's subcommands on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`): ``features``
    (cached frozen features of one encoder), ``evaluate`` (one task x method x seed -> metrics JSON) and ``metrics``
    (the JSONs aggregated into metrics.tsv and Markdown tables)."""
    shards = argparse.ArgumentParser(add_help=False)
    shards.add_argument("--shards", required=True, help="folder of the per-split shard sets (<split>/manifest.json)")
    shards.add_argument("--protocols", type=json_object, default={},
                        help="JSON protocol settings (the workflow config's evaluate.protocols)")

    p = sub.add_parser("features", parents=[parent("out", "seed"), shards],
                       help="frozen features of one encoder for the cohorts' train/val/test windows (cached)")
    p.add_argument("--encoder", type=json_object, required=True,
                   help='JSON encoder spec, e.g. {"kind": "checkpoint", "path": "results/pretrain/x/final.pt"}')
    p.add_argument("--cohort", action="append", required=True, help="cohort (repeatable)")
    p.set_defaults(func=_features)

    p = sub.add_parser("evaluate", parents=[parent("out", "seed"), shards],
                       help="one downstream (task, method, seed): fine-tune, probe or baseline -> metrics JSON")
    p.add_argument("--task", type=json_object, required=True,
                   help='JSON task, e.g. {"name": "age", "cohorts": ["ukbsim"], "label": "age", "kind": "regression"}')
    p.add_argument("--method", required=True,
                   help="<encoder>_<protocol>: finetune, attentive, linprobe[_roi|_cross_roi], "
                        "closed_form[_roi|_cross_roi]; or fc_linear, fc_svm")
    p.add_argument("--encoder", type=json_object, help="JSON encoder spec (fine-tuning)")
    p.add_argument("--features", nargs="+", help="feature caches of the task's cohorts (probes)")
    p.add_argument("--resampling", type=json_object, default={},
                   help='JSON subject-level splits of the frozen protocols and FC baselines (the workflow config\'s '
                        'evaluate.resampling), e.g. {"scheme": "kfold", "folds": 5, "repeats": 2}; default: the '
                        'fixed split')
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("metrics", parents=[parent("out")],
                       help="aggregate evaluation JSONs into metrics.tsv and Markdown tables")
    p.add_argument("--results", nargs="+", required=True, help="result JSONs")
    p.add_argument("--tables", required=True, help="folder for <task>.md and summary.md")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the test subjects")
    p.set_defaults(func=_metrics)
