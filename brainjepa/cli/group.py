"""Subcommands of the pooled statistics: splits, split-balance, scaling, group-fc, gradients."""

from __future__ import annotations

import argparse
import logging

from brainjepa.cli.common import fractions, json_object, parent

log = logging.getLogger("brainjepa")


def _splits(args: argparse.Namespace) -> None:
    from brainjepa.group.splits import run_splits

    table = run_splits(args.samples, args.out, args.seed, args.fractions, args.pretraining_cohort,
                       args.pretraining_fraction, args.stratify, args.phenotypes, args.label_types, args.only)
    counts = table.drop_duplicates(["cohort", "subject"]).groupby(["cohort", "split"]).size()
    log.info("subjects per cohort and split:\n%s", counts.to_string())


def _split_balance(args: argparse.Namespace) -> None:
    from brainjepa.group.splits import run_split_balance

    run_split_balance(args.splits, args.phenotypes, args.label_types, args.out)


def _scaling(args: argparse.Namespace) -> None:
    from brainjepa.group.scaling import run_scaling_stats

    stats = run_scaling_stats(args.splits, args.runs_root, args.method, args.out, args.mixed_tr)
    log.info("scaling statistics %s (%s) from %d subjects", stats.id, stats.method, stats.n_subjects)


def _group_fc(args: argparse.Namespace) -> None:
    from brainjepa.group.group_fc import run_group_fc

    run_group_fc(args.splits, args.runs_root, args.labels, args.out)


def _gradients(args: argparse.Namespace) -> None:
    from brainjepa.group.gradients import run_gradients, use_gradients_file

    if args.given:
        use_gradients_file(args.given, args.labels, args.out)
    else:
        run_gradients(args.fc, args.out, args.n_components, args.labels, args.reference)


def register(sub) -> None:
    """The group-level subcommands on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`): ``splits``,
    ``split-balance``, ``scaling``, ``group-fc`` and ``gradients``."""
    p = sub.add_parser("splits", parents=[parent("out", "seed")],
                       help="subject-level train/val/test (and pretrain) splits, one row per run")
    p.add_argument("--samples", required=True)
    p.add_argument("--fractions", type=fractions, required=True, help="train,val,test, e.g. 0.6,0.2,0.2")
    p.add_argument("--pretraining-cohort")
    p.add_argument("--pretraining-fraction", type=float, default=0.8)
    p.add_argument("--stratify", type=json_object, default={}, help="JSON {cohort: label}: exact balance there")
    p.add_argument("--phenotypes", help="phenotypes.tsv (needed with --stratify)")
    p.add_argument("--label-types", type=json_object, default={}, help="JSON label declarations for --phenotypes")
    p.add_argument("--only", choices=["pretrain", "train", "val", "test"],
                   help="write the runs of this split only (the table a stage of one split reads)")
    p.set_defaults(func=_splits)

    p = sub.add_parser("split-balance", parents=[parent("splits", "phenotypes", "label_types", "out")],
                       help="subjects per split for each discrete label (a balance report)")
    p.set_defaults(func=_split_balance)

    p = sub.add_parser("scaling", parents=[parent("splits", "runs_root", "out")],
                       help="robust-scaling statistics from the pretraining set")
    p.add_argument("--method", required=True, help="subject_mean | timepoints | run_demean | zscore | roi_zscore")
    p.add_argument("--mixed-tr", default="error", choices=["error", "warn"],
                   help="pretraining runs whose effective TRs differ (by more than 1%%): refused, or a warning")
    p.set_defaults(func=_scaling)

    p = sub.add_parser("group-fc", parents=[parent("splits", "runs_root", "labels", "out")],
                       help="Fisher-z mean FC of the pretraining set (.npy)")
    p.set_defaults(func=_group_fc)

    p = sub.add_parser("gradients", parents=[parent("labels", "out")],
                       help="diffusion-map gradients of the group FC, or a given gradients file checked")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--fc", help=".npy or header-less csv/tsv matrix")
    src.add_argument("--given", help="a gradients TSV (name, g1..gN) to adopt after checking its ROI names")
    p.add_argument("--n-components", type=int, default=30)
    p.add_argument("--reference", help="gradients TSV to Procrustes-align to")
    p.set_defaults(func=_gradients)
