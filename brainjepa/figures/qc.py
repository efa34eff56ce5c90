"""Quality control across subjects: per-ROI coverage and temporal SNR over runs, runs excluded and why, split counts.

Inputs: the per-run parcellation QC tables (``<run>_qc.tsv``: roi, n_voxels, frac_signal, tsnr, flag; for
pre-parcellated runs n_voxels is -1 and frac_signal n/a), the shards' ``excluded.tsv`` of every split (runs left
out of training data, with the reason), the split table and the split-balance table.

* ``roi``: per ROI, in atlas order, the median temporal SNR over runs with its 5-95 % range, and the median and
  minimum over runs of the fraction of its voxels whose signal varies (NIfTI runs only), the ROIs' networks as a
  colour strip;
* ``splits``: subjects per cohort and split, and per discrete label value and split;
* the run table: per cohort, runs in the sheet, runs with an ROI flagged, runs excluded from the shards (and the
  reasons), written as a TSV (``qc_runs.tsv``) that the report shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.errors import InputError
from brainjepa.figures.common import network_colors, network_order, pyplot, save


def read_qc_tables(paths: list[str | Path]) -> pd.DataFrame:
    """Stack per-run QC tables: columns run (the file's stem without ``_qc``), cohort (its folder), roi, ..."""
    frames = []
    for path in map(Path, paths):
        try:
            frame = pd.read_csv(path, sep="\t", na_values=["n/a"])
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"{path}: cannot read a QC table ({exc})") from None
        if not {"roi", "tsnr", "frac_signal", "flag"} <= set(frame.columns):
            raise InputError(f"{path}: not a parcellation QC table (columns {list(frame.columns)})")
        frame.insert(0, "run", path.name.removesuffix("_qc.tsv"))
        frame.insert(0, "cohort", path.parent.name)
        frames.append(frame)
    if not frames:
        raise InputError("no QC tables given")
    return pd.concat(frames, ignore_index=True)


def plot_roi_qc(qc: pd.DataFrame, labels: pd.DataFrame, out: str | Path) -> None:
    """The ``roi`` figure: per ROI in atlas order, the temporal SNR over runs (median, 5-95 % band), the median and
    minimum fraction of voxels with signal (NIfTI runs only) and a strip of the ROIs' networks; saved to ``out``."""
    plt = pyplot()
    names = labels["name"].astype(str).tolist()
    x = np.arange(len(names))
    tsnr = qc.pivot_table(index="roi", columns="run", values="tsnr").reindex(names)
    frac = qc.pivot_table(index="roi", columns="run", values="frac_signal").reindex(names)
    fig, axes = plt.subplots(3, 1, figsize=(max(8, len(names) * 0.06 + 3), 7.5), sharex=True,
                             gridspec_kw={"height_ratios": [1, 1, 0.12]})
    q = np.nanpercentile(tsnr.to_numpy(dtype=float), [5, 50, 95], axis=1)
    axes[0].fill_between(x, q[0], q[2], color="#4C72B0", alpha=0.3, step="mid", label="5-95 % of runs")
    axes[0].step(x, q[1], where="mid", color="#4C72B0", lw=1, label="median")
    axes[0].set(ylabel="temporal SNR (mean / sd)", title=f"Per-ROI temporal SNR over {tsnr.shape[1]} runs")
    axes[0].legend(fontsize=8, frameon=False)
    if frac.notna().to_numpy().any():
        f = frac.to_numpy(dtype=float)
        n_runs = int(frac.notna().any(axis=0).sum())
        axes[1].step(x, np.nanmedian(f, axis=1), where="mid", color="#55A868", label="median")
        axes[1].step(x, np.nanmin(f, axis=1), where="mid", color="#C44E52", label="minimum")
        axes[1].set_ylim(-0.02, 1.05)
        axes[1].legend(fontsize=8, frameon=False)
        axes[1].set_title(f"Per-ROI coverage: fraction of voxels with signal over {n_runs} NIfTI runs", fontsize=10)
    else:
        axes[1].text(0.5, 0.5, "no NIfTI runs (pre-parcellated input has no voxel coverage)", ha="center",
                     transform=axes[1].transAxes)
    axes[1].set_ylabel("fraction of voxels")
    networks = labels["network"].astype(str).to_numpy()
    colors = network_colors(network_order(labels))
    axes[2].bar(x, np.ones(len(x)), width=1.0, color=[colors[n] for n in networks])
    axes[2].set_yticks([])
    edges = np.flatnonzero(np.r_[True, networks[1:] != networks[:-1]])   # contiguous runs of one network
    ends = np.r_[edges[1:], len(networks)]
    hemi = labels["hemisphere"].astype(str).to_numpy() if "hemisphere" in labels else np.full(len(networks), "")
    names_of = [f"{n} {h}" if h in ("L", "R") else n for n, h in zip(networks[edges], hemi[edges])]
    axes[2].set_xticks((edges + ends - 1) / 2, names_of, rotation=45, ha="right", fontsize=7)
    axes[2].set_xlim(-0.5, len(names) - 0.5)
    axes[2].set_xlabel("ROI (atlas order), coloured by network")
    fig.tight_layout()
    save(fig, out)


def read_excluded(paths: list[str | Path]) -> pd.DataFrame:
    """The shards' ``excluded.tsv`` of every split, stacked (run_id, split, n_timepoints, reason)."""
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path, sep="\t", dtype=str))
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"{path}: cannot read the shards' excluded-runs table ({exc})") from None
    return pd.concat(frames, ignore_index=True)


def run_table(samples: pd.DataFrame, qc: pd.DataFrame, excluded: pd.DataFrame) -> pd.DataFrame:
    """Per cohort: runs in the sheet, runs parcellated, runs with a flagged ROI, runs excluded and why."""
    rows = []
    for cohort, runs in samples.groupby("cohort", sort=True):
        mine = qc[qc["cohort"] == cohort]
        flagged = mine.loc[mine["flag"] != "ok", "run"].nunique()
        out = excluded[excluded["run_id"].str.split("/").str[0] == cohort]
        reasons = "; ".join(f"{r} ({n})" for r, n in out["reason"].value_counts().sort_index().items()) or "none"
        rows.append({"cohort": cohort, "runs_in_sheet": len(runs), "runs_parcellated": mine["run"].nunique(),
                     "runs_with_flagged_roi": int(flagged), "runs_excluded_from_shards": len(out),
                     "exclusion_reasons": reasons})
    return pd.DataFrame(rows)


def plot_splits(splits: pd.DataFrame, balance: pd.DataFrame, out: str | Path) -> None:
    """The ``splits`` figure: stacked bars of subjects per split, one panel per cohort and one per (cohort, discrete
    label) of the balance table, each bar's total above it; saved to ``out``."""
    plt = pyplot()
    order = [s for s in ("pretrain", "train", "val", "test") if s in set(splits["split"])]
    colors = {"pretrain": "#8c8c8c", "train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
    subjects = splits.drop_duplicates(["cohort", "subject"]).groupby(["cohort", "split"]).size().unstack(fill_value=0)
    subjects = subjects.reindex(columns=order, fill_value=0)
    discrete = balance[balance["value"].astype(str) != "n/a"] if len(balance) else balance
    panels = [("subjects per cohort", subjects)]
    for cohort, label in dict.fromkeys(zip(discrete["cohort"], discrete["label"])):
        rows = discrete[(discrete["cohort"] == cohort) & (discrete["label"] == label)].set_index("value")
        panels.append((f"{cohort}: {label}", rows[[s for s in order if s in rows.columns]]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, table) in zip(axes[0], panels):
        bottom = np.zeros(len(table))
        for split in table.columns:
            values = table[split].to_numpy(dtype=float)
            ax.bar(np.arange(len(table)), values, bottom=bottom, color=colors.get(split), label=split)
            bottom += values
        for i, total in enumerate(bottom):
            ax.text(i, total, f"{int(total)}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(table)), [str(v) for v in table.index], rotation=30, ha="right")
        ax.set(title=title, ylabel="subjects")
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    save(fig, out)


def run_qc_figures(qc_paths: list[str | Path], labels_path: str | Path, samples_path: str | Path,
                   splits_path: str | Path, balance_path: str | Path, excluded_paths: list[str | Path],
                   out_roi: str | Path, out_splits: str | Path, out_runs: str | Path) -> pd.DataFrame:
    """The QC figures and run table from their files: the ``roi`` figure (``out_roi``), the ``splits`` figure
    (``out_splits``) and the per-cohort run table, written to ``out_runs`` and returned."""
    from brainjepa.io import write_tsv_atomic
    from brainjepa.preprocess.atlas import read_label_table

    qc = read_qc_tables(qc_paths)
    labels = read_label_table(labels_path)
    plot_roi_qc(qc, labels, out_roi)
    excluded = read_excluded(excluded_paths)
    samples = pd.read_csv(samples_path, sep="\t", dtype=str, keep_default_na=False)
    table = run_table(samples, qc, excluded)
    splits = pd.read_csv(splits_path, sep="\t", dtype=str)
    balance = pd.read_csv(balance_path, sep="\t", dtype={"value": str}, keep_default_na=False)
    plot_splits(splits, balance, out_splits)
    write_tsv_atomic(table, out_runs)
    return table
