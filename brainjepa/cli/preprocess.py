"""Subcommands of the per-run stages: atlas, parcellate, align-tr (each on one run, or on many in one process)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("brainjepa")


def _atlas(args: argparse.Namespace) -> None:
    from brainjepa.errors import InputError
    from brainjepa.preprocess.atlas import build_atlas, build_label_atlas

    if args.labels_only:
        if args.out_image:
            raise InputError("--labels-only writes a label table only; drop --out-image")
        ident = build_label_atlas(args.labels_only, args.out_labels)
        log.info("label-table atlas %s written to %s", ident, args.out_labels)
        return
    if not args.space or not args.out_image:
        raise InputError("an atlas image needs --space and --out-image (or give --labels-only TABLE)")
    ident = build_atlas(
        args.space, args.out_image, args.out_labels, args.cache_dir, overlap=args.overlap,
        n_parcels=args.n_parcels, networks=args.networks, resolution=args.resolution,
        cortical_image=args.cortical_image, cortical_labels=args.cortical_labels,
        subcortical_image=args.subcortical_image, subcortical_labels=args.subcortical_labels)
    log.info("atlas %s written to %s", ident, args.out_image)


def _parcellate(args: argparse.Namespace) -> None:
    from brainjepa.errors import InputError
    from brainjepa.preprocess.parcellate import parcellate_runs, run_parcellate

    if args.samples:
        per_run = [f"--{name}" for name in ("out", "mask", "tr", "qc") if getattr(args, name) is not None]
        if per_run:
            raise InputError(f"--samples takes each run's files and TR from the sheet; drop {', '.join(per_run)}")
        if not args.out_root:
            raise InputError("--samples needs --out-root (the folder of <run_id>.parquet and <run_id>_qc.tsv)")
        n = parcellate_runs(args.samples, args.out_root, args.atlas, args.labels, args.runs, args.empty_roi,
                            args.unnamed_columns, args.stamp)
        log.info("%d runs parcellated to %s", n, args.out_root)
        return
    if args.out is None or args.out_root or args.runs or args.stamp:
        raise InputError("one run (--bold or --timeseries) needs --out, not --out-root, --runs or --stamp")
    run_parcellate(args.out, args.atlas, args.labels, bold=args.bold, timeseries=args.timeseries,
                   mask=args.mask, tr=args.tr, qc_out=args.qc, empty_roi=args.empty_roi,
                   unnamed_columns=args.unnamed_columns)


def _align_tr(args: argparse.Namespace) -> None:
    from brainjepa.preprocess.align_tr import align_tr_runs

    for out, actual in zip(args.out, align_tr_runs(args.input, args.out, args.target_tr, args.method)):
        log.info("%s: TR %.4f s", out, actual)
    if args.stamp:
        from brainjepa.batches import write_stamp

        write_stamp(args.stamp, args.out)


def register(sub) -> None:
    """The preprocessing subcommands on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`): ``atlas`` (the
    combined atlas and its label table), ``parcellate`` (ROI mean time series) and ``align-tr`` (runs brought to one
    TR)."""
    p = sub.add_parser("atlas", help="build the combined subcortical + cortical atlas and its label table")
    p.add_argument("--space", help="MNI152NLin6Asym or MNI152NLin2009cAsym")
    p.add_argument("--n-parcels", type=int, default=400, help="Schaefer-2018 parcels (TemplateFlow)")
    p.add_argument("--networks", type=int, default=7, help="Schaefer network order: 7 or 17")
    p.add_argument("--resolution", type=int, default=2, help="TemplateFlow resolution index (2 = 2 mm)")
    p.add_argument("--cortical-image")
    p.add_argument("--cortical-labels")
    p.add_argument("--subcortical-image")
    p.add_argument("--subcortical-labels")
    p.add_argument("--overlap", default="subcortical", help="which atlas keeps voxels labelled by both: "
                   "subcortical | cortical")
    p.add_argument("--cache-dir", default="resources/cache", help="pinned downloads (Tian S3)")
    p.add_argument("--out-image")
    p.add_argument("--out-labels", required=True)
    p.add_argument("--labels-only", metavar="TABLE", help="a label table (name; index, network, hemisphere, x, y, z) "
                   "for pre-parcellated cohorts: no image is made")
    p.set_defaults(func=_atlas)

    p = sub.add_parser("parcellate", help="ROI mean time series of one run (streaming), or of many runs of a sheet")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bold", help="4-D BOLD NIfTI in the atlas's space")
    src.add_argument("--timeseries", help="already-parcellated T x R file (tsv/csv/npy/parquet)")
    src.add_argument("--samples", help="a sample sheet: parcellate its runs (--runs, default all) into --out-root")
    p.add_argument("--out", help="output file (one run)")
    p.add_argument("--out-root", help="with --samples: writes <out-root>/<run_id>.parquet and <run_id>_qc.tsv")
    p.add_argument("--runs", nargs="+", metavar="RUN_ID", help="with --samples: these runs (<cohort>/sub-..._run-..)")
    p.add_argument("--stamp", help="with --samples: the batch's stamp, written last (TSV of the files written)")
    p.add_argument("--atlas", help="the atlas image (NIfTI runs); without it, --labels alone names the columns of "
                                   "pre-parcellated runs")
    p.add_argument("--labels", help="label table (index, name, ...); column names come from it")
    p.add_argument("--mask")
    p.add_argument("--tr", type=float, help="TR in seconds, 0 < TR <= 30 as the sample sheet's tr (else sidecar, "
                   "then header; each held to the same range)")
    p.add_argument("--qc", help="per-ROI QC table (TSV)")
    p.add_argument("--empty-roi", default="error", help="ROIs without signal: error | zero")
    p.add_argument("--unnamed-columns", default="error", choices=["error", "label_order"],
                   help="time-series files whose columns have no ROI names (.npy, no or a numbered header): "
                        "refuse them (error) or read them in the label table's order (label_order)")
    p.set_defaults(func=_parcellate)

    p = sub.add_parser("align-tr", help="align runs' time series to a target TR (one process for all)")
    p.add_argument("--in", dest="input", nargs="+", required=True, help="run files (parcellate's Parquet)")
    p.add_argument("--out", nargs="+", required=True, help="output files, one per --in file, in the same order")
    p.add_argument("--target-tr", type=float, required=True, help="seconds")
    p.add_argument("--method", default="stride", help="stride (the paper) | resample (anti-aliased)")
    p.add_argument("--stamp", help="the batch's stamp, written last (TSV of the files written)")
    p.set_defaults(func=_align_tr)
