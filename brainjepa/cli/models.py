"""Subcommands about model weights: model-info, convert-checkpoint, export-official, export-model (a model bundle,
docs/models.md) and embed (a bundle applied to ROI time series)."""

from __future__ import annotations

import argparse
import json

from brainjepa.cli.common import parent
from brainjepa.errors import InputError


def _model_info(args: argparse.Namespace) -> None:
    from brainjepa.models import model_info

    print(json.dumps(model_info(args.size, args.rois, args.timesteps, args.gradients), indent=2))


def _convert_checkpoint(args: argparse.Namespace) -> None:
    if args.bundle:
        from brainjepa.models.bundle import convert_official_bundle

        if args.tr is None:
            raise InputError("convert-checkpoint --bundle needs --tr: the TR (seconds) of the model's training data "
                             "after alignment (2.205 for the released Brain-JEPA: UK Biobank's 0.735 s, every third "
                             "volume)")
        convert_official_bundle(args.official, args.gradients, args.out, tr=args.tr, scaling_stats=args.scaling_stats,
                                scaling_method=args.scaling_method, tr_alignment=args.tr_alignment,
                                target_tr=args.target_tr, labels=args.labels, num_heads=args.num_heads,
                                with_predictor=args.with_predictor)
        return
    bundle_only = [f"--{k.replace('_', '-')}" for k in ("tr", "scaling_stats", "scaling_method", "target_tr", "labels")
                   if getattr(args, k) is not None] + (["--with-predictor"] if args.with_predictor else [])
    if bundle_only:
        raise InputError(f"convert-checkpoint: {', '.join(bundle_only)} only apply with --bundle")
    from brainjepa.models.convert import convert_official

    convert_official(args.official, args.gradients, args.out, args.num_heads)


def _export_model(args: argparse.Namespace) -> None:
    from brainjepa.models.bundle import export_model

    export_model(args.checkpoint, args.out, manifest=args.manifest, scaling_stats=args.scaling_stats,
                 labels=args.labels, atlas_image=args.atlas_image, tr_alignment=args.tr_alignment,
                 target_tr=args.target_tr, tr=args.tr, with_predictor=args.with_predictor, monitors=args.monitors,
                 metrics=args.metrics, encoder_name=args.encoder_name, paired=args.paired, name=args.name)


def _embed(args: argparse.Namespace) -> None:
    from pathlib import Path

    from brainjepa.models.embed import RunInput, embed, runs_from_sheet

    if bool(args.timeseries) == bool(args.sheet):
        raise InputError("embed: give --timeseries FILE... or --sheet FILE (one of them)")
    if args.sheet:
        if args.tr is not None:
            raise InputError("embed: with --sheet, the TRs come from its 'tr' column (or the files), not --tr")
        runs = runs_from_sheet(args.sheet)
    else:
        runs = [RunInput(str(path), Path(path), args.tr) for path in args.timeseries]
    embed(args.model, runs, args.out, roi_embeddings=args.roi_embeddings, device=args.device,
          batch_size=args.batch_size, precision=args.precision, unnamed_columns=args.unnamed_columns,
          tr_alignment=args.tr_alignment, progress=not args.no_progress)


def _export_official(args: argparse.Namespace) -> None:
    from brainjepa.models.convert import export_official

    export_official(args.checkpoint, args.out)


def register(sub) -> None:
    """The model subcommands on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`): ``model-info`` (its
    defaults those of :class:`brainjepa.models.config.ModelConfig`), the checkpoint conversions (``convert-checkpoint``,
    ``export-official``) and the model bundles (``export-model``, ``embed``)."""
    from brainjepa.models.config import ModelConfig

    default = ModelConfig()  # the same defaults as a training config without a model section
    p = sub.add_parser("model-info", help="encoder and predictor parameter counts as JSON")
    p.add_argument("--size", default=default.size,
                   help=f"tiny | small | base | large | custom (default {default.size})")
    p.add_argument("--rois", type=int, default=default.n_rois)
    p.add_argument("--timesteps", type=int, default=default.n_timesteps)
    p.add_argument("--gradients", type=int, default=default.n_gradients)
    p.set_defaults(func=_model_info)
    _register_conversions(sub)
    _register_bundles(sub)


def _register_conversions(sub) -> None:
    """convert-checkpoint and export-official: the released checkpoint's key layout, both ways."""
    p = sub.add_parser("convert-checkpoint", parents=[parent("out")],
                       help="the released Brain-JEPA checkpoint -> brainjepa weights")
    p.add_argument("--official", required=True, help="the official .pth (encoder/predictor/target_encoder)")
    p.add_argument("--gradients", required=True, help="gradients TSV in the model's ROI order")
    p.add_argument("--num-heads", type=int, help="attention heads, for a width without a preset (not 384/768/1024)")
    b = p.add_argument_group("model bundle (--bundle: --out is a folder; docs/models.md)")
    b.add_argument("--bundle", action="store_true", help="write a model bundle folder instead of a weights file")
    b.add_argument("--tr", type=float, help="TR (s) of the training data after alignment (the release's: 2.205)")
    b.add_argument("--scaling-stats", help="scaling statistics JSON over the gradients' ROIs (the release's were "
                   "never published: e.g. `brainjepa scaling` on your cohort)")
    b.add_argument("--scaling-method", help="instead of statistics: a per-sample method (zscore | roi_zscore)")
    b.add_argument("--tr-alignment", default="stride", help="stride | resample (default stride, as the release)")
    b.add_argument("--target-tr", type=float, help="the alignment's target TR (default: --tr)")
    b.add_argument("--labels", help="atlas label table: ROI networks and the atlas identity in the bundle")
    b.add_argument("--with-predictor", action="store_true", help="also the predictor's weights")
    p.set_defaults(func=_convert_checkpoint)

    p = sub.add_parser("export-official", parents=[parent("out")],
                       help="brainjepa checkpoint -> the official Brain-JEPA key layout")
    p.add_argument("--checkpoint", required=True)
    p.set_defaults(func=_export_official)


def _register_bundles(sub) -> None:
    """export-model and embed: writing a model bundle, and applying one."""
    p = sub.add_parser("export-model", parents=[parent("out")],
                       help="training checkpoint -> a model bundle others can use (docs/models.md)")
    p.add_argument("--checkpoint", required=True, help="a training checkpoint (final.pt)")
    p.add_argument("--manifest", help="the pretraining shard manifest (default: the checkpoint's data.manifest)")
    p.add_argument("--scaling-stats", help="its scaling statistics (default: the checkpoint's data.scaling_stats)")
    p.add_argument("--labels", help="atlas label table (default: the checkpoint's data.labels): networks, atlas id")
    p.add_argument("--atlas-image", help="the atlas image (its sidecar's atlas_id and space go into config.json)")
    p.add_argument("--tr-alignment", default="stride", help="how the runs were TR-aligned: stride | resample "
                   "(the workflow's align_tr.method; default stride)")
    p.add_argument("--target-tr", type=float, help="the alignment's target TR (align_tr.target_tr; default: the "
                   "effective TR)")
    p.add_argument("--tr", type=float, help="the effective TR (s) after alignment (default: the shard manifest's)")
    p.add_argument("--with-predictor", action="store_true", help="also the predictor's weights")
    p.add_argument("--monitors", help="the run's monitors.csv (default: beside the checkpoint, when there)")
    p.add_argument("--metrics", help="an evaluation metrics.tsv: its rows of this encoder go into the model card")
    p.add_argument("--paired", help="an evaluation paired.tsv: this encoder's differences from random "
                   "initialisation go into the model card")
    p.add_argument("--encoder-name", help="the encoder's name in --metrics and --paired (methods <name>_<protocol>)")
    p.add_argument("--name", help="the model's name in the card (default: the --out folder's name)")
    p.set_defaults(func=_export_model)

    p = sub.add_parser("embed", parents=[parent("out")],
                       help="a model bundle's features of ROI time series (TR alignment, scaling, windows as trained)")
    p.add_argument("--model", required=True, help="a model bundle folder (export-model)")
    p.add_argument("--timeseries", nargs="+", help="ROI time-series files (parquet, tsv, csv, npy)")
    p.add_argument("--sheet", help="a sample sheet (samples.tsv) of timeseries rows, for many runs")
    p.add_argument("--tr", type=float, help="TR (s) of --timeseries files that do not carry one (tsv, csv, npy)")
    p.add_argument("--roi-embeddings", action="store_true", help="also each ROI's embedding per window (R x D)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"), help="auto: bf16 on GPU")
    p.add_argument("--tr-alignment", choices=("stride", "resample"), help="default: the bundle's method")
    p.add_argument("--unnamed-columns", default="error", choices=("error", "label_order"),
                   help="error | label_order: columns without ROI names (npy, header-less text) are refused, or "
                        "taken to be in the bundle's ROI order (rois.tsv)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_embed)
