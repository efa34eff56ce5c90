"""Subcommands of BrainLM's capabilities, one per ``evaluate.capabilities`` key (an underscore becomes a hyphen):
forecast, reconstruction, network-id, perturbation; and the perturbation figure."""

from __future__ import annotations

import argparse

from brainjepa.cli.common import json_object, parent

FEATURES = ("embedding", "attention", "raw")   # brainjepa.capabilities.network_id.FEATURES (not imported here)


def _forecast(args: argparse.Namespace) -> None:
    from brainjepa.capabilities.forecast import ForecastConfig, run_forecast

    run_forecast(args.method, args.seed, args.shards, args.cohorts, args.out, ForecastConfig.from_dict(args.settings),
                 args.encoder)


def _reconstruction(args: argparse.Namespace) -> None:
    from brainjepa.capabilities.reconstruction import ReconstructionConfig, run_reconstruction

    run_reconstruction(args.method, args.seed, args.shards, args.cohorts, args.out,
                       ReconstructionConfig.from_dict(args.settings), args.encoder)


def _network_id(args: argparse.Namespace) -> None:
    from brainjepa.capabilities.network_id import NetworkIdConfig, run_network_id

    run_network_id(args.features, args.method, args.seed, args.shards, args.cohorts, args.labels, args.out,
                   NetworkIdConfig.from_dict(args.settings), args.encoder)


def _perturbation(args: argparse.Namespace) -> None:
    from brainjepa.capabilities.perturbation import PerturbationConfig, run_perturbation
    from brainjepa.errors import InputError

    if args.encoder is None:
        raise InputError("perturbation needs an encoder (--encoder)")
    run_perturbation(args.method, args.seed, args.shards, args.cohorts, args.labels, args.out, args.encoder,
                     PerturbationConfig.from_dict(args.settings))


def _figure_perturbation(args: argparse.Namespace) -> None:
    from brainjepa.figures.perturbation import mean_roi_tables, plot_perturbation
    from brainjepa.preprocess.atlas import read_label_table

    rois = mean_roi_tables(args.rois)
    title = args.title if len(args.rois) == 1 else f"{args.title} (mean of {len(args.rois)} seeds)"
    plot_perturbation(rois, read_label_table(args.labels), args.out, args.atlas, title)


def _job_parent(encoder_help: str) -> argparse.ArgumentParser:
    """The options every capability job shares (docs: the capability contract); ``--encoder`` is optional here."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--shards", required=True, help="folder of the per-split shard sets (<split>/manifest.json)")
    p.add_argument("--cohorts", nargs="+", required=True, help="cohorts whose train/val/test subjects are used")
    p.add_argument("--method", required=True, help="the row label of the result (e.g. jepa_finetune, ar, raw, mae)")
    p.add_argument("--settings", type=json_object, default={},
                   help="JSON settings of the capability (evaluate.capabilities.<name>.settings)")
    if encoder_help:
        p.add_argument("--encoder", type=json_object, help=encoder_help)
    return p


def _register_time_series(sub) -> None:
    shared = [parent("out", "seed"), _job_parent("")]
    p = sub.add_parser("forecast", parents=shared,
                       help="forecast the next steps of every ROI from a window's start: a fine-tuned encoder or a "
                            "baseline (persistence, ar, lstm) -> capability JSON")
    p.add_argument("--encoder", type=json_object,
                   help='JSON encoder spec to fine-tune, e.g. {"kind": "checkpoint", "path": "results/pretrain/x/'
                        'final.pt"}; absent for the baselines persistence, ar, lstm')
    p.set_defaults(func=_forecast)

    p = sub.add_parser("reconstruction", parents=shared,
                       help="masked-patch reconstruction R^2 of an MAE checkpoint at several mask ratios -> "
                            "capability JSON")
    p.add_argument("--encoder", type=json_object, required=True,
                   help='JSON spec of the MAE checkpoint (objective: mae), {"kind": "checkpoint", "path": ...}')
    p.set_defaults(func=_reconstruction)


def _register_networks(sub) -> None:
    job = _job_parent('JSON encoder spec, e.g. {"kind": "checkpoint", "path": "results/pretrain/x/final.pt"}')
    p = sub.add_parser("network-id", parents=[parent("labels", "out", "seed"), job],
                       help="classify each ROI's network from one recording's per-ROI features -> record JSON")
    p.add_argument("--features", required=True, choices=FEATURES,
                   help="embedding / attention (need --encoder) or raw (the time series; no encoder)")
    p.set_defaults(func=_network_id)

    p = sub.add_parser("perturbation", parents=[parent("labels", "out", "seed"), job],
                       help="in-silico perturbation of test subjects toward another group -> record JSON and "
                            "<out stem>.rois.tsv, <out stem>.networks.tsv")
    p.set_defaults(func=_perturbation)

    p = sub.add_parser("figure-perturbation", parents=[parent("labels", "out")],
                       help="perturbation magnitudes on a glass brain (and atlas slices) and per network")
    p.add_argument("--rois", required=True, nargs="+",
                   help="the perturbation's <out stem>.rois.tsv; several (seeds): their per-ROI mean")
    p.add_argument("--atlas", help="the atlas image (painted slices)")
    p.add_argument("--title", default="In-silico perturbation", help="figure title")
    p.set_defaults(func=_figure_perturbation)


def register(sub) -> None:
    """BrainLM's capabilities as subcommands of ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`):
    ``forecast``, ``reconstruction``, ``network-id``, ``perturbation`` and ``figure-perturbation``."""
    _register_time_series(sub)
    _register_networks(sub)
