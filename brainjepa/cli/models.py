"""Subcommands about model weights: model-info, convert-checkpoint, export-official."""

from __future__ import annotations

import argparse
import json

from brainjepa.cli.common import parent


def _model_info(args: argparse.Namespace) -> None:
    from brainjepa.models import model_info

    print(json.dumps(model_info(args.size, args.rois, args.timesteps, args.gradients), indent=2))


def _convert_checkpoint(args: argparse.Namespace) -> None:
    from brainjepa.models.convert import convert_official

    convert_official(args.official, args.gradients, args.out, args.num_heads)


def _export_official(args: argparse.Namespace) -> None:
    from brainjepa.models.convert import export_official

    export_official(args.checkpoint, args.out)


def register(sub) -> None:
    from brainjepa.models.config import ModelConfig

    default = ModelConfig()  # the same defaults as a training config without a model section
    p = sub.add_parser("model-info", help="encoder and predictor parameter counts as JSON")
    p.add_argument("--size", default=default.size,
                   help=f"tiny | small | base | large | custom (default {default.size})")
    p.add_argument("--rois", type=int, default=default.n_rois)
    p.add_argument("--timesteps", type=int, default=default.n_timesteps)
    p.add_argument("--gradients", type=int, default=default.n_gradients)
    p.set_defaults(func=_model_info)

    p = sub.add_parser("convert-checkpoint", parents=[parent("out")],
                       help="the released Brain-JEPA checkpoint -> brainjepa weights")
    p.add_argument("--official", required=True, help="the official .pth (encoder/predictor/target_encoder)")
    p.add_argument("--gradients", required=True, help="gradients TSV in the model's ROI order")
    p.add_argument("--num-heads", type=int, help="attention heads, for a width without a preset (not 384/768/1024)")
    p.set_defaults(func=_convert_checkpoint)

    p = sub.add_parser("export-official", parents=[parent("out")],
                       help="brainjepa checkpoint -> the official Brain-JEPA key layout")
    p.add_argument("--checkpoint", required=True)
    p.set_defaults(func=_export_official)
