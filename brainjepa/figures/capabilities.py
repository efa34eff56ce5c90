"""The capabilities figure: BrainLM's forecasting, network identification and masked reconstruction, every method.

Input: the capability records (``results/capabilities/<capability>/<method>/seed<k>.json``, written by
``brainjepa forecast``, ``network-id`` and ``reconstruction``). One panel per capability present, each value the
mean over the method's seeds (error bars: the std over seeds where there are several):

* forecasting: test R^2 at every horizon step (``details.per_step.test.r2``), one line per method;
* network identification: test accuracy per method, with uniform guessing (dashed) and, for encoders, the
  accuracy of the position embedding alone (an all-zero window, ``details.position_only``; open markers);
* masked reconstruction: test R^2 on the masked patches at each mask ratio, one line per method.

Perturbation records have their own figure (:mod:`brainjepa.figures.perturbation`) and are skipped here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from brainjepa.errors import InputError
from brainjepa.figures.common import pyplot, save

PANELS = ("forecast", "network_id", "reconstruction")
TITLES = {"forecast": "forecasting (test R$^2$ per horizon step)",
          "network_id": "functional-network identification (test accuracy)",
          "reconstruction": "masked reconstruction (test R$^2$ of masked patches)"}


def read_records(paths: list[str | Path]) -> dict[str, dict[str, list[dict]]]:
    """``{capability: {method: [record per seed]}}`` from capability JSON files (unreadable or foreign files
    are errors naming the file)."""
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read the capability record ({exc})") from None
        if not isinstance(record, dict) or not {"task", "method", "test"} <= set(record):
            raise InputError(f"{path}: not a capability record (needs task, method and test)")
        out[str(record["task"])][str(record["method"])].append(record)
    return {k: dict(v) for k, v in out.items()}


def _seed_stats(values: list) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over seeds of equal-length value lists."""
    array = np.asarray(values, dtype=np.float64)
    return array.mean(axis=0), array.std(axis=0)


def _forecast(ax, methods: dict[str, list[dict]]) -> None:
    for method, records in sorted(methods.items()):
        try:
            curves = [r["details"]["per_step"]["test"]["r2"] for r in records]
        except (KeyError, TypeError):
            raise InputError(f"forecast/{method}: a record lacks details.per_step.test.r2") from None
        mean, std = _seed_stats(curves)
        steps = np.arange(1, len(mean) + 1)
        line, = ax.plot(steps, mean, marker="o", markersize=3, label=method)
        if len(records) > 1:
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("R$^2$")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], -1.0))


def _network_id(ax, methods: dict[str, list[dict]]) -> None:
    names = sorted(methods)
    labelled = False
    for i, method in enumerate(names):
        records = methods[method]
        mean, std = _seed_stats([r["test"]["accuracy"] for r in records])
        ax.bar(i, mean, yerr=std if len(records) > 1 else None, color=f"C{i % 10}", capsize=3)
        position = [r.get("details", {}).get("position_only") for r in records]
        if all(position):
            ax.plot(i, np.mean([p["accuracy"] for p in position]), marker="o", markerfacecolor="none",
                    markeredgecolor="black", linestyle="none",
                    label=None if labelled else "position embedding alone (all-zero window)")
            labelled = True
    chance = [r["details"]["chance"]["uniform"] for rs in methods.values() for r in rs
              if "chance" in r.get("details", {})]
    if chance:
        ax.axhline(float(np.mean(chance)), color="0.3", linestyle="--", linewidth=1, label="uniform guessing")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")


def _reconstruction(ax, methods: dict[str, list[dict]]) -> None:
    from brainjepa.capabilities.reconstruction import ratio_name

    for method, records in sorted(methods.items()):
        ratios = sorted({float(x) for r in records for x in r["details"]["mask_ratios"]})
        try:
            values = [[r["test"][f"r2_{ratio_name(x)}"] for x in ratios] for r in records]
        except KeyError as exc:
            raise InputError(f"reconstruction/{method}: a record lacks test {exc}") from None
        mean, std = _seed_stats(values)
        ax.errorbar(ratios, mean, yerr=std if len(records) > 1 else None, marker="o", capsize=3, label=method)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("mask ratio")
    ax.set_ylabel("R$^2$")


def plot_capabilities(records: dict[str, dict[str, list[dict]]], out: str | Path) -> list[str]:
    """One panel per capability of PANELS present in ``records`` (:func:`read_records`) -> ``out`` (PNG or SVG,
    deterministic bytes). Returns the capabilities drawn; none is an error."""
    shown = [c for c in PANELS if records.get(c)]
    if not shown:
        raise InputError(f"no forecast, network_id or reconstruction record among the inputs "
                         f"(found: {sorted(records) or 'none'})")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 4.2), squeeze=False)
    draw = {"forecast": _forecast, "network_id": _network_id, "reconstruction": _reconstruction}
    for ax, capability in zip(axes[0], shown):
        draw[capability](ax, records[capability])
        ax.set_title(TITLES[capability], fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("BrainLM's capabilities: every method on the held-out subjects (mean over seeds)")
    fig.tight_layout()
    save(fig, out)
    return shown
