"""The pretraining study's figure (``study.png``) from its ``study.tsv`` (:mod:`brainjepa.evaluate.study`).

One row of panels per task x readout, its primary metric (regression r, binary AUROC, multiclass balanced
accuracy) against: pretraining steps (each config's mean over pretraining seeds, at the largest data fraction
and label count), the data fraction (each run's last checkpoint) and the labelled training subjects per fold
(last checkpoint, largest fraction). The random-init seeds are a grey band (their range) with their mean
dashed; the input's FC, the reference, a dotted line. A last row: the representation monitors against steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PRIMARY = {"regression": "r", "binary": "auroc", "multiclass": "balanced_accuracy"}
MONITORS = ("rankme_pooled", "rankme_tokens", "input_share")


def _label_order(values) -> list[str]:
    """Label counts as text, numbers ascending and ``all`` last."""
    values = set(map(str, values))
    return sorted((v for v in values if v != "all"), key=int) + (["all"] if "all" in values else [])


def _band(ax, values: pd.Series, label: str | None = "random (range)") -> None:
    values = values.dropna()
    if len(values):
        ax.axhspan(values.min(), values.max(), color="0.85", label=label)
        ax.axhline(values.mean(), color="0.5", ls="--", lw=1)


def study_figure(table: pd.DataFrame, out: str | Path, title: str = "") -> None:
    """Draw study.png from the study table (the frame of study.tsv): one row of panels per task x readout (the
    metric against pretraining steps, the data fraction and the label count), and a last row of monitors."""
    from brainjepa.figures.common import pyplot, save

    plt = pyplot()
    table = table.copy()
    table["label_count"] = table["label_count"].astype(str)
    pre = table[table["encoder"] == "pretrained"]
    configs = list(dict.fromkeys(pre["config"]))
    style = {"labels": _label_order(table["label_count"]),
             "fraction": float(pre["data_fraction"].max()) if len(pre) else 1.0,
             "colours": {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(configs)}}
    panels = [(t, r) for t in dict.fromkeys(table["task"]) for r in dict.fromkeys(table["readout"]) if r != "fc"]
    fig, axes = plt.subplots(len(panels) + 1, 3, figsize=(13, 2.8 * (len(panels) + 1)), squeeze=False)
    for row, (task, readout) in enumerate(panels):
        _task_panels(axes[row], table, task, readout, style)
        if row == 0:
            axes[row, 0].legend(fontsize=7, loc="best")
    _monitor_panels(axes[-1], table, style)
    if title:
        fig.suptitle(f"pretraining study: {title} (grey: random-init seeds' range; dotted: FC)", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    else:
        fig.tight_layout()
    save(fig, out)


def _task_panels(axes, table: pd.DataFrame, task: str, readout: str, style: dict) -> None:
    """One task x readout: its metric against steps (at the largest data fraction and label count), against the
    data fraction (last checkpoints) and against the label count (last checkpoints, largest fraction); the
    random-init seeds' range in grey and the FC readout dotted."""
    labels, fraction, colours = style["labels"], style["fraction"], style["colours"]
    label = labels[-1]
    at = (table["task"] == task) & (table["readout"] == readout)
    mine, theirs = table[at & (table["encoder"] == "pretrained")], table[at & (table["encoder"] == "random")]
    metric = PRIMARY[table.loc[table["task"] == task, "kind"].iloc[0]]
    ref = table[(table["encoder"] == "fc") & (table["task"] == task)][metric]
    at_label = mine[mine["label_count"] == label]
    last = at_label[at_label["step"] == at_label.groupby(["config", "seed", "data_fraction"])["step"]
                    .transform("max")]
    ax, ax2, ax3 = axes
    _band(ax, theirs[theirs["label_count"] == label][metric])
    _band(ax2, theirs[theirs["label_count"] == label][metric], None)
    for config, colour in colours.items():
        part = at_label[(at_label["config"] == config) & np.isclose(at_label["data_fraction"], fraction)]
        mean = part.groupby("step")[metric].mean()
        ax.plot(mean.index, mean.values, "o-", color=colour, label=config)
        mean = last[last["config"] == config].groupby("data_fraction")[metric].mean()
        ax2.plot(mean.index, mean.values, "o-", color=colour)
    ax.set_xlabel("pretraining steps")
    ax2.set_xlabel("pretraining data fraction")
    x = np.arange(len(labels))
    spread = theirs.groupby("label_count")[metric].agg(["min", "max", "mean"]).reindex(labels)
    ax3.fill_between(x, spread["min"], spread["max"], color="0.85")
    ax3.plot(x, spread["mean"], "--", color="0.5", lw=1)
    final = mine[np.isclose(mine["data_fraction"], fraction)]
    final = final[final["step"] == final.groupby(["config", "seed", "label_count"])["step"].transform("max")]
    for config, colour in colours.items():
        mean = final[final["config"] == config].groupby("label_count")[metric].mean().reindex(labels)
        ax3.plot(x, mean.values, "o-", color=colour)
    ax3.set_xticks(x, labels)
    ax3.set_xlabel("labelled training subjects per fold")
    for a in axes:
        if len(ref.dropna()):
            a.axhline(float(ref.iloc[0]), color="k", ls=":", lw=1, label="FC (input)" if a is ax else None)
        a.set_ylabel(f"{task} {metric} ({readout})", fontsize=8)


def _monitor_panels(axes, table: pd.DataFrame, style: dict) -> None:
    """The representation monitors against steps (largest data fraction), random seeds' range in grey."""
    encoders = table.drop_duplicates(["encoder", "config", "seed", "step", "data_fraction"])
    for ax, monitor in zip(axes, MONITORS):
        _band(ax, encoders[encoders["encoder"] == "random"][monitor], None)
        runs = encoders[(encoders["encoder"] == "pretrained") & np.isclose(encoders["data_fraction"],
                                                                             style["fraction"])]
        for config, colour in style["colours"].items():
            mean = runs[runs["config"] == config].groupby("step")[monitor].mean()
            ax.plot(mean.index, mean.values, "o-", color=colour)
        ax.set_xlabel("pretraining steps")
        ax.set_ylabel(monitor, fontsize=8)
