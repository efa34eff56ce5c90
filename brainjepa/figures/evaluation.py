"""Evaluation figures from ``results/metrics.tsv`` (one row per task x method x seed).

Every panel shows each task's main test metric: Pearson r for regression, balanced accuracy for classification
(chance: r = 0, BACC = 1 / classes), as the mean over seeds (bar) with the standard deviation over seeds (error
bar) and every seed (dots).

* methods: every method per task (paper Tables 1-3 as bars);
* finetune_vs_linprobe: fine-tuning against linear probing for every encoder that has both (paper Fig. 4);
* scaling: the main metric against encoder parameters for each protocol (paper Fig. 3), drawn only when the
  encoders come in several sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.errors import InputError
from brainjepa.figures.common import pyplot, save

MAIN = {"regression": ("test_r", "test r", 0.0), "binary": ("test_balanced_accuracy", "test balanced accuracy", 0.5),
        "multiclass": ("test_balanced_accuracy", "test balanced accuracy", None)}
PROTOCOL_COLORS = {"finetune": "#C44E52", "linprobe": "#4C72B0", "attentive": "#8172B3", "closed_form": "#55A868",
                   "baseline": "#7f7f7f"}


def read_metrics(path: str | Path, capabilities: bool = False) -> pd.DataFrame:
    """The metrics table; the rows of downstream tasks only unless ``capabilities`` (BrainLM's capabilities'
    rows have kinds of their own, brainjepa.evaluate.capabilities, and figures of their own)."""
    from brainjepa.evaluate.capabilities import KINDS

    path = Path(path)
    try:
        frame = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read the metrics table ({exc})") from None
    missing = [c for c in ("task", "kind", "method", "seed") if c not in frame.columns]
    if missing or frame.empty:
        raise InputError(f"{path}: not a metrics table (missing {missing or 'rows'})")
    return frame if capabilities else frame[~frame["kind"].isin(KINDS)].reset_index(drop=True)


def _split_method(method: str) -> tuple[str, str]:
    from brainjepa.evaluate.run import parse_method

    encoder, protocol = parse_method(method)
    return (method, "baseline") if encoder is None else (encoder, protocol)


def _main(rows: pd.DataFrame) -> tuple[str, str, float | None]:
    """The main metric column, its axis label and its chance level (None for multiclass: not in the table)."""
    return MAIN[rows["kind"].iloc[0]]


def plot_methods(metrics: pd.DataFrame, out: str | Path) -> None:
    """One panel per task: every method's main test metric as a horizontal bar (mean over seeds, standard deviation as
    error bar, each seed a dot), coloured by protocol, chance (where defined) as a dashed line; saved to ``out``."""
    plt = pyplot()
    tasks = list(dict.fromkeys(metrics["task"]))
    n_methods = metrics.groupby("task")["method"].nunique().max()
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 0.32 * n_methods + 1.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = metrics[metrics["task"] == task]
        column, label, chance = _main(rows)
        methods = list(dict.fromkeys(rows["method"]))
        y = np.arange(len(methods))[::-1]
        for yi, method in zip(y, methods):
            values = rows.loc[rows["method"] == method, column].to_numpy(dtype=float)
            _, protocol = _split_method(method)
            ax.barh(yi, np.nanmean(values), xerr=np.nanstd(values) if len(values) > 1 else None,
                    color=PROTOCOL_COLORS.get(protocol, "#7f7f7f"), alpha=0.85, capsize=2)
            ax.plot(values, np.full(len(values), yi), "k.", ms=3)
        if chance is not None:
            ax.axvline(chance, color="k", lw=0.8, ls="--")
        ax.set_yticks(y, methods, fontsize=8)
        ax.set(xlabel=label, title=f"{task} (seeds: {rows['seed'].nunique()})")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save(fig, out)


def plot_finetune_vs_linprobe(metrics: pd.DataFrame, out: str | Path) -> None:
    """One panel per task: fine-tuning beside linear probing for every encoder that has both (mean over seeds, standard
    deviation, each seed a dot), chance (where defined) as a dashed line; saved to ``out``."""
    plt = pyplot()
    tasks = list(dict.fromkeys(metrics["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = metrics[metrics["task"] == task]
        column, label, chance = _main(rows)
        parsed = {m: _split_method(m) for m in dict.fromkeys(rows["method"])}
        encoders = [e for e in dict.fromkeys(e for e, _ in parsed.values())
                    if {(e, "finetune"), (e, "linprobe")} <= set(parsed.values())]
        x = np.arange(len(encoders))
        for k, protocol in enumerate(("finetune", "linprobe")):
            for xi, encoder in zip(x, encoders):
                values = rows.loc[rows["method"] == f"{encoder}_{protocol}", column].to_numpy(dtype=float)
                pos = xi + (k - 0.5) * 0.38
                ax.bar(pos, np.nanmean(values), 0.38, yerr=np.nanstd(values) if len(values) > 1 else None,
                       color=PROTOCOL_COLORS[protocol], capsize=2, label=protocol if xi == 0 else None)
                ax.plot(np.full(len(values), pos), values, "k.", ms=3)
        if chance is not None:
            ax.axhline(chance, color="k", lw=0.8, ls="--")
        ax.set_xticks(x, encoders)
        ax.set(ylabel=label, title=task)
        ax.legend(fontsize=8, frameon=True, loc="best")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Fine-tuning vs linear probing", fontsize=10)
    fig.tight_layout()
    save(fig, out)


def plot_scaling(metrics: pd.DataFrame, params: dict[str, int], out: str | Path) -> None:
    """``params``: {encoder name: parameter count}; needs at least two distinct counts."""
    plt = pyplot()
    if len(set(params.values())) < 2:
        raise InputError("the scaling figure needs encoders of at least two sizes")
    tasks = list(dict.fromkeys(metrics["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = metrics[metrics["task"] == task]
        column, label, chance = _main(rows)
        for protocol in ("finetune", "linprobe", "attentive", "closed_form"):
            points = []
            for encoder, n in sorted(params.items(), key=lambda kv: kv[1]):
                values = rows.loc[rows["method"] == f"{encoder}_{protocol}", column].to_numpy(dtype=float)
                if len(values):
                    points.append((n, np.nanmean(values), np.nanstd(values)))
            if points:
                n, mean, std = map(np.array, zip(*points))
                ax.errorbar(n, mean, yerr=std, marker="o", capsize=2, color=PROTOCOL_COLORS[protocol], label=protocol)
        if chance is not None:
            ax.axhline(chance, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set(xlabel="encoder parameters", ylabel=label, title=task)
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    save(fig, out)
