"""Subcommands of BrainLM's forecasting and masked-reconstruction capabilities: forecast, reconstruct."""

from __future__ import annotations

import argparse

from brainjepa.cli.common import json_object, parent


def _capability_parent() -> argparse.ArgumentParser:
    """The options every capability job shares (docs: the capability contract)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--shards", required=True, help="folder of the per-split shard sets (<split>/manifest.json)")
    p.add_argument("--cohorts", nargs="+", required=True, help="cohorts whose train/val/test subjects are used")
    p.add_argument("--method", required=True, help="the row label of the result (e.g. jepa_finetune, ar, mae)")
    p.add_argument("--settings", type=json_object, default={},
                   help="JSON settings of the capability (evaluate.capabilities.<name>.settings)")
    return p


def _forecast(args: argparse.Namespace) -> None:
    from brainjepa.evaluate.forecast import ForecastConfig, run_forecast

    run_forecast(args.method, args.seed, args.shards, args.cohorts, args.out, ForecastConfig.from_dict(args.settings),
                 args.encoder)


def _reconstruct(args: argparse.Namespace) -> None:
    from brainjepa.evaluate.reconstruct import ReconstructConfig, run_reconstruct

    run_reconstruct(args.method, args.seed, args.shards, args.cohorts, args.out,
                    ReconstructConfig.from_dict(args.settings), args.encoder)


def register(sub) -> None:
    shared = [parent("out", "seed"), _capability_parent()]
    p = sub.add_parser("forecast", parents=shared,
                       help="forecast the next steps of every ROI from a window's start: a fine-tuned encoder or a "
                            "baseline (persistence, ar, lstm) -> capability JSON")
    p.add_argument("--encoder", type=json_object,
                   help='JSON encoder spec to fine-tune, e.g. {"kind": "checkpoint", "path": "results/pretrain/x/'
                        'final.pt"}; absent for the baselines persistence, ar, lstm')
    p.set_defaults(func=_forecast)

    p = sub.add_parser("reconstruct", parents=shared,
                       help="masked-patch reconstruction R^2 of an MAE checkpoint at several mask ratios -> "
                            "capability JSON")
    p.add_argument("--encoder", type=json_object, required=True,
                   help='JSON spec of the MAE checkpoint (objective: mae), {"kind": "checkpoint", "path": ...}')
    p.set_defaults(func=_reconstruct)
