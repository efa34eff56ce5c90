"""Subcommands of the figures and the report: one per figure family, plus network attention and the run summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainjepa.cli.common import json_object, parent


def named_path(text: str) -> tuple[str, str]:
    """``name=path``."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected name=path, got {text!r}")
    return name, path


def _qc_files(splits: str, root: str) -> list[Path]:
    import pandas as pd

    run_ids = pd.read_csv(splits, sep="\t", dtype=str)["run_id"]
    return [Path(root) / f"{run_id}_qc.tsv" for run_id in run_ids]


def _figure_fc(args: argparse.Namespace) -> None:
    from brainjepa.errors import InputError
    from brainjepa.figures.group_fc import plot_fc
    from brainjepa.group.gradients import load_fc
    from brainjepa.preprocess.atlas import read_label_table

    fc = load_fc(args.fc)
    labels = read_label_table(args.labels)
    if fc.shape != (len(labels), len(labels)):
        raise InputError(f"{args.fc}: FC of shape {fc.shape}, but {args.labels} has {len(labels)} ROIs")
    plot_fc(fc, labels, args.out)


def _figure_gradients(args: argparse.Namespace) -> None:
    import logging

    from brainjepa.figures.gradients import run_gradient_figures

    silhouette = run_gradient_figures(args.gradients, args.labels, args.atlas, args.out_space, args.out_brain,
                                      args.out_eigenvalues, args.cortical_only)
    logging.getLogger("brainjepa").info("silhouette of the atlas networks in gradient 1-3 space: %.3f", silhouette)


def _network_attention(args: argparse.Namespace) -> None:
    from brainjepa.evaluate.attention import AttentionConfig, run_network_attention
    from brainjepa.figures.attention import plot_network_attention

    cfg = AttentionConfig.from_dict(args.settings)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    table = run_network_attention(args.encoder, args.shards, dict(args.task), args.labels, cfg, args.out_networks,
                                  args.out_rois, seed=args.seed)
    layer = "last" if cfg.layer == -1 else str(cfg.layer)
    heads = "mean of all heads" if not cfg.heads else f"heads {cfg.heads}"
    plot_network_attention(table, args.figure, f"Attention {cfg.direction} per network: encoder {cfg.encoder}, "
                                               f"layer {layer}, {heads}; groups: {args.task.get('label')}")


def _figure_pretraining(args: argparse.Namespace) -> None:
    from brainjepa.figures.training import plot_pretraining

    plot_pretraining(dict(args.log), args.out)


def _figure_evaluation(args: argparse.Namespace) -> None:
    from brainjepa.figures import evaluation

    metrics = evaluation.read_metrics(args.metrics)
    for out in args.out_methods:
        evaluation.plot_methods(metrics, out)
    for out in args.out_finetune_vs_linprobe:
        evaluation.plot_finetune_vs_linprobe(metrics, out)
    if args.out_scaling:
        from brainjepa.figures.summary import encoder_parameters

        params = {name: encoder_parameters(path) for name, path in args.encoder}
        evaluation.plot_scaling(metrics, params, args.out_scaling)


def _figure_capabilities(args: argparse.Namespace) -> None:
    from brainjepa.figures.capabilities import plot_capabilities, read_records

    records = read_records(args.results)
    for out in args.out:
        plot_capabilities(records, out)


def _figure_qc(args: argparse.Namespace) -> None:
    from brainjepa.figures.qc import run_qc_figures

    run_qc_figures(_qc_files(args.splits, args.parcellate_root), args.labels, args.samples, args.splits,
                   args.balance, args.excluded, args.out_roi, args.out_splits, args.out_runs)


def _report_summary(args: argparse.Namespace) -> None:
    from brainjepa.figures.summary import write_summary

    write_summary(args.samples, args.splits, args.excluded, dict(args.run), args.metrics, args.out, args.json,
                  args.results_dir, args.report_command, args.manifests)


def register(sub) -> None:
    """The figure subcommands on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`): ``figure-fc`` and
    ``figure-gradients`` here, the figures of trained encoders (``network-attention``, ``figure-pretraining``,
    ``figure-evaluation``, ``figure-capabilities``) and of the runs (``figure-qc``, ``report-summary``) through the
    helpers below."""
    p = sub.add_parser("figure-fc", parents=[parent("labels", "out")], help="group FC heatmap ordered by network")
    p.add_argument("--fc", required=True, help="group FC .npy")
    p.set_defaults(func=_figure_fc)

    p = sub.add_parser("figure-gradients", parents=[parent("labels")],
                       help="ROIs in gradient 1-3 space, their colours on the brain, the eigenvalues")
    p.add_argument("--gradients", required=True, help="gradients TSV (its _eigenvalues.tsv beside it)")
    p.add_argument("--atlas", help="the atlas image (for the brain view)")
    p.add_argument("--out-space", required=True)
    p.add_argument("--out-brain", help="brain view (needs --atlas)")
    p.add_argument("--out-eigenvalues", required=True)
    p.add_argument("--cortical-only", action="store_true", help="cortical ROIs only (as the paper's figure)")
    p.set_defaults(func=_figure_gradients)
    _register_model_figures(sub)
    _register_run_figures(sub)


def _register_model_figures(sub) -> None:
    """The figures of trained encoders: attention per network, pretraining curves, evaluation, capabilities."""
    p = sub.add_parser("network-attention", parents=[parent("labels", "seed")],
                       help="attention per network of one encoder, compared between the groups of a task")
    p.add_argument("--encoder", type=json_object, required=True, help="JSON encoder spec (as for evaluate)")
    p.add_argument("--task", type=json_object, required=True, help='JSON task with its "name" (a classification)')
    p.add_argument("--shards", required=True, help="folder of the per-split shard sets")
    p.add_argument("--settings", type=json_object, default={}, help="JSON figures.attention settings")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out-networks", required=True, help="network table (TSV)")
    p.add_argument("--out-rois", required=True, help="per-ROI table (TSV)")
    p.add_argument("--figure", required=True, help="grouped bar chart (.png/.svg)")
    p.set_defaults(func=_network_attention)

    p = sub.add_parser("figure-pretraining", parents=[parent("out")],
                       help="pretraining loss, collapse monitor and learning rate per run")
    p.add_argument("--log", type=named_path, action="append", required=True, help="name=log.csv (repeatable)")
    p.set_defaults(func=_figure_pretraining)

    p = sub.add_parser("figure-evaluation", help="methods per task, fine-tune vs linear probe, model-size scaling")
    p.add_argument("--metrics", required=True, help="metrics.tsv")
    p.add_argument("--out-methods", nargs="+", default=[])
    p.add_argument("--out-finetune-vs-linprobe", nargs="+", default=[])
    p.add_argument("--out-scaling", help="scaling figure (needs --encoder name=checkpoint of 2+ sizes)")
    p.add_argument("--encoder", type=named_path, action="append", default=[], help="name=checkpoint (repeatable)")
    p.set_defaults(func=_figure_evaluation)

    p = sub.add_parser("figure-capabilities",
                       help="BrainLM's capabilities: forecasting per horizon step, network identification, "
                            "masked reconstruction per mask ratio (every method, mean over seeds)")
    p.add_argument("--results", nargs="+", required=True,
                   help="capability records (results/capabilities/<capability>/<method>/seed<k>.json)")
    p.add_argument("--out", nargs="+", required=True, help="figure file(s): .png and/or .svg")
    p.set_defaults(func=_figure_capabilities)


def _register_run_figures(sub) -> None:
    """The figures and the report page of the data: QC and the report summary."""
    p = sub.add_parser("figure-qc", parents=[parent("labels", "splits")],
                       help="per-ROI coverage and temporal SNR over runs, split counts, runs excluded")
    p.add_argument("--parcellate-root", required=True, help="folder of <cohort>/<stem>_qc.tsv")
    p.add_argument("--samples", required=True)
    p.add_argument("--balance", required=True, help="the split-balance table")
    p.add_argument("--excluded", nargs="+", required=True, help="the shards' excluded.tsv of every split")
    p.add_argument("--out-roi", required=True)
    p.add_argument("--out-splits", required=True)
    p.add_argument("--out-runs", required=True, help="per-cohort run table (TSV)")
    p.set_defaults(func=_figure_qc)

    p = sub.add_parser("report-summary", parents=[parent("splits", "out")],
                       help="the report's first page: cohorts, runs, splits, models, metrics (RST)")
    p.add_argument("--samples", required=True)
    p.add_argument("--excluded", nargs="+", required=True)
    p.add_argument("--run", type=named_path, action="append", default=[], help="name=pretraining run folder")
    p.add_argument("--metrics", help="metrics.tsv")
    p.add_argument("--json", help="the same facts as JSON (printed at the end of a workflow run)")
    p.add_argument("--manifests", nargs="*", default=[], help="shard manifests (the cohorts' effective TRs)")
    p.add_argument("--results-dir", default="results", help="the dataset's results folder (where the outputs are)")
    p.add_argument("--report-command", default="snakemake --report results/report.html",
                   help="the command that makes the HTML report (shown where the outputs are listed)")
    p.set_defaults(func=_report_summary)
