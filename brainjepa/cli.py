"""The ``brainjepa`` command line: one subcommand per pipeline stage, each a thin call of a library function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from brainjepa import __version__
from brainjepa.errors import InputError, TrainingError

log = logging.getLogger("brainjepa")


def _cmd_simulate(args: argparse.Namespace) -> None:
    from brainjepa import sheets, simulate

    cohorts = simulate.cohorts_from_spec(json.loads(args.cohorts))
    samples = sheets.load_samples(args.samples, produced=lambda p: True)
    phenotypes = sheets.load_phenotypes(args.phenotypes)
    simulate.simulate(samples, phenotypes, args.root, cohorts, args.seed)


def _cmd_simulate_atlas(args: argparse.Namespace) -> None:
    from brainjepa import simulate

    simulate.write_demo_atlas(args.root, args.seed)


def _cmd_simulate_run(args: argparse.Namespace) -> None:
    from brainjepa import simulate

    (cohort,) = simulate.cohorts_from_spec({args.cohort: json.loads(args.cohort_spec)})
    phenotype = json.loads(args.phenotype)
    simulate.simulate_run(args.bold, args.mask or "", cohort, args.subject, args.session, args.run, phenotype,
                          args.seed, simulate.load_demo_atlas(args.root))


def _cmd_demo_sheets(args: argparse.Namespace) -> None:
    from brainjepa import simulate

    cohorts = simulate.cohorts_from_spec(json.loads(args.cohorts))
    simulate.write_demo_sheets(args.samples, args.phenotypes, args.root, cohorts, args.seed)


def _cmd_atlas(args: argparse.Namespace) -> None:
    from brainjepa import atlas

    ident = atlas.build_atlas(
        args.space, args.out_image, args.out_labels, args.cache_dir, overlap=args.overlap,
        n_parcels=args.n_parcels, networks=args.networks, resolution=args.resolution,
        cortical_image=args.cortical_image, cortical_labels=args.cortical_labels,
        subcortical_image=args.subcortical_image, subcortical_labels=args.subcortical_labels)
    log.info("atlas %s written to %s", ident, args.out_image)


def _cmd_parcellate(args: argparse.Namespace) -> None:
    from brainjepa.parcellate import run_parcellate

    run_parcellate(args.out, args.atlas, args.labels, bold=args.bold, timeseries=args.timeseries,
                   mask=args.mask, tr=args.tr, qc_out=args.qc, empty_roi=args.empty_roi)


def _cmd_align_tr(args: argparse.Namespace) -> None:
    from brainjepa.temporal import run_align_tr

    actual = run_align_tr(args.input, args.out, args.target_tr, args.method)
    log.info("%s: TR %.4f s", args.out, actual)


def _cmd_splits(args: argparse.Namespace) -> None:
    from brainjepa import sheets, splits
    from brainjepa.io import write_tsv_atomic

    samples = sheets.load_samples(args.samples, produced=lambda p: True)
    train, val, test = (float(v) for v in args.fractions.split(","))
    stratify = json.loads(args.stratify)
    phenotypes = None
    if stratify:
        if not args.phenotypes:
            raise InputError("--stratify needs --phenotypes")
        phenotypes = sheets.load_phenotypes(args.phenotypes, json.loads(args.label_types) or None)
    table = splits.make_splits(samples, args.seed, {"train": train, "val": val, "test": test},
                               args.pretraining_cohort, args.pretraining_fraction, stratify, phenotypes)
    write_tsv_atomic(table, args.out)
    counts = table.drop_duplicates(["cohort", "subject"]).groupby(["cohort", "split"]).size()
    log.info("subjects per cohort and split:\n%s", counts.to_string())


def _cmd_split_balance(args: argparse.Namespace) -> None:
    from brainjepa import sheets, splits
    from brainjepa.io import write_tsv_atomic

    label_types = json.loads(args.label_types)
    phenotypes = sheets.load_phenotypes(args.phenotypes, label_types)
    discrete = [name for name, kind in label_types.items() if kind != "continuous"]
    table = splits.balance_table(splits.read_splits(args.splits), phenotypes, discrete)
    write_tsv_atomic(table, args.out)


def _cmd_scaling_stats(args: argparse.Namespace) -> None:
    from brainjepa import scaling, splits

    runs = splits.pretraining_runs(splits.read_splits(args.splits))
    stats = scaling.compute_scaling_stats(splits.run_files(runs, args.runs_root), args.method)
    scaling.write_scaling_stats(stats, args.out)
    log.info("scaling statistics %s (%s) from %d subjects", stats.id, stats.method, stats.n_subjects)


def _cmd_group_fc(args: argparse.Namespace) -> None:
    from brainjepa import connectivity, splits
    from brainjepa.atlas import read_label_table

    runs = splits.pretraining_runs(splits.read_splits(args.splits))
    fc, names = connectivity.group_fc(splits.run_files(runs, args.runs_root))
    labels = read_label_table(args.labels)
    if labels["name"].astype(str).tolist() != names:
        raise InputError(f"{args.labels}: ROI names differ from the time series' columns")
    if args.figure:
        connectivity.plot_fc(fc, labels, args.figure)
    connectivity.write_fc(fc, args.out)


def _cmd_gradients(args: argparse.Namespace) -> None:
    from brainjepa.gradients import run_gradients

    run_gradients(args.fc, args.out, args.n_components, args.labels, args.reference)


def _cmd_check_gradients(args: argparse.Namespace) -> None:
    from brainjepa.gradients import use_gradients_file

    use_gradients_file(args.input, args.labels, args.out)


def _cmd_shards(args: argparse.Namespace) -> None:
    from brainjepa import sheets, shards, splits
    from brainjepa.scaling import ScalingStats

    label_types = json.loads(args.label_types)
    table = splits.read_splits(args.splits)
    phenotypes = sheets.load_phenotypes(args.phenotypes, label_types)
    runs = table.merge(phenotypes, on=["cohort", "subject"], how="left")
    runs["path"] = [str(Path(args.runs_root) / f"{r}.parquet") for r in runs["run_id"]]
    manifest = shards.build_shards(
        runs, ScalingStats.load(args.stats), args.out_dir, max_shard_bytes=int(args.max_shard_mb * 2**20),
        dtype=args.dtype, window=args.window, short_policy=args.short_policy, label_columns=label_types)
    log.info("shards: %s", {k: sum(s["rows"] for s in v) for k, v in manifest["splits"].items()})


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from brainjepa.train.config import load_config
    from brainjepa.train.engine import pretrain

    path = pretrain(load_config(args.config, args.set))
    log.info("checkpoint: %s", path)


def _cmd_model_info(args: argparse.Namespace) -> None:
    from brainjepa.models import model_info

    print(json.dumps(model_info(args.size, args.rois, args.timesteps, args.gradients), indent=2))


def _cmd_convert_checkpoint(args: argparse.Namespace) -> None:
    import torch

    from brainjepa.gradients import read_gradients
    from brainjepa.models.convert import config_from_official, from_official
    from brainjepa.train.checkpoint import save_weights

    try:  # the official files also hold optimizer state and numpy scalars: a full (trusted) load
        official = torch.load(args.official, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(f"{args.official}: cannot read the official checkpoint ({exc})") from exc
    _, gradients = read_gradients(args.gradients)
    cfg = config_from_official(official, gradients.shape[0])
    states = from_official(official, torch.tensor(gradients, dtype=torch.float32), cfg)
    save_weights(args.out, states, cfg.to_dict(), source=str(args.official))


def _cmd_export_official(args: argparse.Namespace) -> None:
    import torch

    from brainjepa.io import atomic_path
    from brainjepa.models.convert import to_official
    from brainjepa.train.checkpoint import load_weights

    states, _ = load_weights(args.checkpoint)
    with atomic_path(args.out) as tmp:
        torch.save(to_official(states), tmp)


def _cmd_validate(args: argparse.Namespace) -> None:
    from brainjepa import sheets

    samples = sheets.load_samples(args.samples)
    if args.phenotypes:
        sheets.load_phenotypes(args.phenotypes)
    print(f"{args.samples}: {len(samples)} runs of {samples[['cohort', 'subject']].drop_duplicates().shape[0]} "
          "subjects: valid")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainjepa", description=__doc__)
    parser.add_argument("--version", action="version", version=f"brainjepa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write the synthetic demo cohort listed in the sample sheets")
    p.add_argument("--samples", required=True)
    p.add_argument("--phenotypes", required=True)
    p.add_argument("--root", required=True, help="demo root: rows whose files lie under it are simulated")
    p.add_argument("--cohorts", required=True, help="JSON cohort spec (config 'demo.cohorts')")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("simulate-atlas", help="write the synthetic demo atlas (cortical + subcortical)")
    p.add_argument("--root", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_simulate_atlas)

    p = sub.add_parser("simulate-run", help="write one simulated demo run (BOLD, sidecar, brain mask)")
    p.add_argument("--root", required=True, help="demo root (holds the demo atlas)")
    p.add_argument("--bold", required=True)
    p.add_argument("--mask", help="also write the brain mask here")
    p.add_argument("--cohort", required=True)
    p.add_argument("--cohort-spec", required=True, help="JSON: this cohort's entry of 'demo.cohorts'")
    p.add_argument("--subject", required=True)
    p.add_argument("--session", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--phenotype", required=True, help='JSON, e.g. {"age": 61.5, "sex": "F", "diagnosis": 0}')
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_simulate_run)

    p = sub.add_parser("demo-sheets", help="write samples.tsv and phenotypes.tsv of a demo cohort")
    p.add_argument("--samples", required=True)
    p.add_argument("--phenotypes", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--cohorts", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo_sheets)

    p = sub.add_parser("atlas", help="build the combined subcortical + cortical atlas and its label table")
    p.add_argument("--space", default="MNI152NLin6Asym")
    p.add_argument("--n-parcels", type=int, default=400)
    p.add_argument("--networks", type=int, choices=(7, 17), default=7)
    p.add_argument("--resolution", type=int, default=2, help="TemplateFlow resolution index (2 = 2 mm)")
    p.add_argument("--cortical-image")
    p.add_argument("--cortical-labels")
    p.add_argument("--subcortical-image")
    p.add_argument("--subcortical-labels")
    p.add_argument("--overlap", choices=("subcortical", "cortical"), default="subcortical",
                   help="which atlas keeps voxels labelled by both")
    p.add_argument("--cache-dir", default="resources/cache")
    p.add_argument("--out-image", required=True)
    p.add_argument("--out-labels", required=True)
    p.set_defaults(func=_cmd_atlas)

    p = sub.add_parser("parcellate", help="ROI mean time series of one run (streaming)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bold", help="4-D BOLD NIfTI in the atlas's space")
    src.add_argument("--timeseries", help="already-parcellated T x R file (tsv/csv/npy/parquet)")
    p.add_argument("--atlas", required=True)
    p.add_argument("--labels", help="label table (index, name, ...); column names come from it")
    p.add_argument("--mask")
    p.add_argument("--tr", type=float, help="TR in seconds (else sidecar, then header)")
    p.add_argument("--qc", help="per-ROI QC table (TSV)")
    p.add_argument("--empty-roi", choices=("error", "zero"), default="error")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_parcellate)

    p = sub.add_parser("align-tr", help="align a run's time series to a target TR")
    p.add_argument("--in", dest="input", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--target-tr", type=float, default=2.0)
    p.add_argument("--method", choices=("stride", "resample"), default="stride")
    p.set_defaults(func=_cmd_align_tr)

    p = sub.add_parser("splits", help="subject-level train/val/test (and pretrain) splits, one row per run")
    p.add_argument("--samples", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fractions", default="0.6,0.2,0.2", help="train,val,test")
    p.add_argument("--pretraining-cohort")
    p.add_argument("--pretraining-fraction", type=float, default=0.8)
    p.add_argument("--stratify", default="{}", help='JSON {cohort: label}: exact per-label balance there')
    p.add_argument("--phenotypes", help="phenotypes.tsv (needed with --stratify)")
    p.add_argument("--label-types", default="{}", help="JSON label declarations for --phenotypes")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_splits)

    p = sub.add_parser("split-balance", help="subjects per split for each discrete label (a balance report)")
    p.add_argument("--splits", required=True)
    p.add_argument("--phenotypes", required=True)
    p.add_argument("--label-types", required=True, help='JSON, e.g. {"sex": "categorical"}')
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_split_balance)

    p = sub.add_parser("scaling-stats", help="robust-scaling statistics from the pretraining set")
    p.add_argument("--splits", required=True)
    p.add_argument("--runs-root", required=True, help="folder of <run_id>.parquet (aligned time series)")
    p.add_argument("--method", choices=("subject_mean", "timepoints", "zscore", "roi_zscore"), default="subject_mean")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_scaling_stats)

    p = sub.add_parser("group-fc", help="Fisher-z mean FC of the pretraining set (+ heatmap)")
    p.add_argument("--splits", required=True)
    p.add_argument("--runs-root", required=True)
    p.add_argument("--labels", required=True, help="atlas label table (network order for the heatmap)")
    p.add_argument("--out", required=True, help=".npy")
    p.add_argument("--figure", help="heatmap (.png/.svg)")
    p.set_defaults(func=_cmd_group_fc)

    p = sub.add_parser("gradients", help="diffusion-map gradients of a group FC matrix")
    p.add_argument("--fc", required=True, help=".npy or header-less csv/tsv matrix")
    p.add_argument("--n-components", type=int, default=30)
    p.add_argument("--labels", help="label table: ROI names")
    p.add_argument("--reference", help="gradients TSV to Procrustes-align to")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_gradients)

    p = sub.add_parser("check-gradients", help="adopt a given gradients TSV after checking its ROI names")
    p.add_argument("--in", dest="input", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_check_gradients)

    p = sub.add_parser("shards", help="scaled runs as Parquet shards per split + manifest")
    p.add_argument("--splits", required=True)
    p.add_argument("--runs-root", required=True)
    p.add_argument("--phenotypes", required=True)
    p.add_argument("--label-types", default="{}", help='JSON, e.g. {"age": "continuous"}')
    p.add_argument("--stats", required=True)
    p.add_argument("--max-shard-mb", type=float, default=256)
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--window", type=int, default=160)
    p.add_argument("--short-policy", choices=("exclude", "error"), default="exclude")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_cmd_shards)

    p = sub.add_parser("pretrain", help="Brain-JEPA self-supervised pretraining (resumes from latest.pt)")
    p.add_argument("--config", help="training config YAML (sections model, data, mask, optim, run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set optim.epochs=10 --set model.size=small (repeatable)")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("model-info", help="encoder and predictor parameter counts as JSON")
    p.add_argument("--size", choices=("tiny", "small", "base", "large"), default="base")
    p.add_argument("--rois", type=int, default=450)
    p.add_argument("--timesteps", type=int, default=160)
    p.add_argument("--gradients", type=int, default=30)
    p.set_defaults(func=_cmd_model_info)

    p = sub.add_parser("convert-checkpoint", help="the released Brain-JEPA checkpoint -> brainjepa weights")
    p.add_argument("--official", required=True, help="the official .pth (encoder/predictor/target_encoder)")
    p.add_argument("--gradients", required=True, help="gradients TSV in the model's ROI order")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_convert_checkpoint)

    p = sub.add_parser("export-official", help="brainjepa checkpoint -> the official Brain-JEPA key layout")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_export_official)

    p = sub.add_parser("validate", help="validate the sample sheets")
    p.add_argument("--samples", required=True)
    p.add_argument("--phenotypes")
    p.set_defaults(func=_cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (InputError, TrainingError) as exc:
        print(f"brainjepa {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
