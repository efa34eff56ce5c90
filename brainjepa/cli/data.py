"""Subcommand of the training-data stage: shards."""

from __future__ import annotations

import argparse
import logging

from brainjepa.cli.common import parent

log = logging.getLogger("brainjepa")


def _shards(args: argparse.Namespace) -> None:
    from brainjepa.data.shards import run_shards

    manifest = run_shards(args.splits, args.runs_root, args.phenotypes, args.label_types, args.stats, args.out_dir,
                          max_shard_mb=args.max_shard_mb, dtype=args.dtype, window=args.window,
                          short_policy=args.short_policy, split=args.split, shard_format=args.format,
                          monitor_subjects=args.monitor_subjects)
    log.info("shards: %s", {k: sum(s["rows"] for s in v) for k, v in manifest["splits"].items()})


def register(sub) -> None:
    """The ``shards`` subcommand on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`): the scaled runs of
    the splits as Parquet or WebDataset shards, with their manifest."""
    p = sub.add_parser("shards", parents=[parent("splits", "runs_root", "phenotypes", "label_types")],
                       help="scaled runs as Parquet (or WebDataset tar) shards per split + manifest")
    p.add_argument("--stats", required=True, help="scaling statistics JSON")
    p.add_argument("--max-shard-mb", type=float, required=True)
    p.add_argument("--dtype", required=True, help="float16 | float32")
    p.add_argument("--window", type=int, required=True, help="model window (time steps)")
    p.add_argument("--short-policy", required=True, help="runs shorter than the window: exclude | error")
    p.add_argument("--format", default="parquet", choices=["parquet", "webdataset"],
                   help="shard files: parquet (default) | webdataset (tar, one sample per run; docs/formats.md)")
    p.add_argument("--split", help="only this split's runs, its shards directly in --out-dir")
    p.add_argument("--monitor-subjects", type=int, default=0,
                   help="with --split pretrain: hold this many pretraining subjects out of training as the "
                        "representation monitors' windows (split 'monitor', in --out-dir/monitor)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_shards)
