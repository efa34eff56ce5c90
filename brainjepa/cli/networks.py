"""Subcommands of BrainLM's capabilities on atlas networks: network-id, perturb, and the perturbation figure."""

from __future__ import annotations

import argparse

from brainjepa.cli.common import json_object, parent

FEATURES = ("embedding", "attention", "raw")        # brainjepa.evaluate.networks.FEATURES (not imported here)


def _network_id(args: argparse.Namespace) -> None:
    from brainjepa.evaluate.networks import NetworkIdConfig, run_network_id

    run_network_id(args.features, args.method, args.seed, args.shards, args.cohorts, args.labels, args.out,
                   NetworkIdConfig.from_dict(args.settings), args.encoder)


def _perturb(args: argparse.Namespace) -> None:
    from brainjepa.errors import InputError
    from brainjepa.evaluate.perturb import PerturbConfig, run_perturbation

    if args.encoder is None:
        raise InputError("perturb needs an encoder (--encoder)")
    run_perturbation(args.method, args.seed, args.shards, args.cohorts, args.labels, args.out, args.encoder,
                     PerturbConfig.from_dict(args.settings))


def _figure_perturbation(args: argparse.Namespace) -> None:
    from brainjepa.figures.perturbation import mean_roi_tables, plot_perturbation
    from brainjepa.preprocess.atlas import read_label_table

    rois = mean_roi_tables(args.rois)
    title = args.title if len(args.rois) == 1 else f"{args.title} (mean of {len(args.rois)} seeds)"
    plot_perturbation(rois, read_label_table(args.labels), args.out, args.atlas, title)


def register(sub) -> None:
    job = argparse.ArgumentParser(add_help=False)
    job.add_argument("--shards", required=True, help="the shard root (<shards>/{train,val,test}/manifest.json)")
    job.add_argument("--cohorts", nargs="+", required=True, help="cohorts whose subjects are used")
    job.add_argument("--method", required=True, help="the row label in metrics, e.g. jepa_embedding, raw, jepa")
    job.add_argument("--encoder", type=json_object,
                     help='JSON encoder spec, e.g. {"kind": "checkpoint", "path": "results/pretrain/x/final.pt"}')
    job.add_argument("--settings", type=json_object, default={}, help="JSON settings of the capability")

    p = sub.add_parser("network-id", parents=[parent("labels", "out", "seed"), job],
                       help="classify each ROI's network from one recording's per-ROI features -> record JSON")
    p.add_argument("--features", required=True, choices=FEATURES,
                   help="embedding / attention (need --encoder) or raw (the time series; no encoder)")
    p.set_defaults(func=_network_id)

    p = sub.add_parser("perturb", parents=[parent("labels", "out", "seed"), job],
                       help="in-silico perturbation of test subjects toward another group -> record JSON and "
                            "<out stem>.rois.tsv, <out stem>.networks.tsv")
    p.set_defaults(func=_perturb)

    p = sub.add_parser("figure-perturbation", parents=[parent("labels", "out")],
                       help="perturbation magnitudes on a glass brain (and atlas slices) and per network")
    p.add_argument("--rois", required=True, nargs="+",
                   help="the perturbation's <out stem>.rois.tsv; several (seeds): their per-ROI mean")
    p.add_argument("--atlas", help="the atlas image (painted slices)")
    p.add_argument("--title", default="In-silico perturbation", help="figure title")
    p.set_defaults(func=_figure_perturbation)
