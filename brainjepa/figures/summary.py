"""The report's first page: a reStructuredText summary of the run (included by ``workflow/report/workflow.rst``).

Sections: cohorts (subjects, runs, runs excluded from the shards), subjects per split, the models trained
(objective, architecture, parameters, steps, last loss), and the metrics table (each task's main test metric as
mean (std) over seeds, every method). Every number is read from the pipeline's outputs, none from the config.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.errors import InputError
from brainjepa.io import atomic_path


def encoder_parameters(checkpoint: str | Path) -> int:
    """Parameters of a checkpoint's (target) encoder, frozen positional tables included."""
    from brainjepa.models.weights import read_torch_file

    state = read_torch_file(checkpoint, "checkpoint")
    if not isinstance(state, dict) or "target_encoder" not in state:
        raise InputError(f"{checkpoint}: not a brainjepa checkpoint (no target_encoder)")
    return int(sum(v.numel() for v in state["target_encoder"].values()))


def rst_table(frame: pd.DataFrame, title: str = "") -> str:
    """A DataFrame as an RST list-table (every cell as text)."""
    lines = [f".. list-table:: {title}".rstrip(), "   :header-rows: 1", ""]
    for row in [list(frame.columns)] + frame.astype(str).values.tolist():
        lines.append(f"   * - {_cell(row[0])}")
        lines += [f"     - {_cell(c)}" for c in row[1:]]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    """A table cell's text with every RST markup character escaped (``jepa_`` would be a reference, ``*`` emphasis)."""
    text = " ".join(str(value).split())
    return "".join("\\" + c if c in "\\*`|_" else c for c in text) or "\\ "


def _models(runs: dict[str, str | Path]) -> pd.DataFrame:
    import yaml

    from brainjepa.figures.training import read_log

    rows = []
    for name, folder in runs.items():
        folder = Path(folder)
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        log = read_log(folder / "log.csv")
        model = cfg.get("model", {})
        rows.append({"run": name, "objective": cfg.get("objective", "jepa"),
                     "encoder": f"{model.get('size')}: {model.get('depth')} blocks x {model.get('embed_dim')} wide, "
                                f"{model.get('num_heads')} heads, patch {model.get('patch_size')}",
                     "positions": model.get("positional"),
                     "parameters": f"{encoder_parameters(folder / 'final.pt'):,}",
                     "steps": int(log["step"].iloc[-1]), "epochs": int(log["epoch"].iloc[-1]) + 1,
                     "last loss": f"{log['loss'].iloc[-1]:.4g}",
                     "representations (step 0 -> last)": monitor_text(run_monitors(folder))})
    return pd.DataFrame(rows)


def run_monitors(folder: str | Path) -> dict | None:
    """A run folder's representation monitors (:func:`brainjepa.train.monitors.monitor_summary` at its config's
    run.collapse_fraction), or None."""
    import yaml

    from brainjepa.train.monitors import monitor_summary

    folder = Path(folder)
    cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    return monitor_summary(folder / "monitors.csv", float(cfg.get("run", {}).get("collapse_fraction", 0.5)))


def monitor_text(summary: dict | None) -> str:
    """One line of a run's monitors: pooled RankMe and input share of each encoder, step 0 -> last, and which
    fell below their threshold."""
    if summary is None:
        return "no monitors"
    parts = []
    for encoder in ("context", "target"):
        cells = [f"{label} {summary['reference'].get(f'{encoder}_{key}', float('nan')):.3g} -> "
                 f"{summary['values'][f'{encoder}_{key}']:.3g}"
                 for key, label in (("rankme_pooled", "RankMe"), ("input_share", "input share"))
                 if f"{encoder}_{key}" in summary["values"]]
        if cells:
            parts.append(f"{encoder}: {', '.join(cells)}")
    verdict = ("NARROWED: " + "; ".join(summary["narrowed"])) if summary["narrowed"] else "none narrowed"
    return f"{'; '.join(parts)} (step {summary['step']}); {verdict}"


def _capabilities(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (capability, method): its headline test metric (brainjepa.evaluate.capabilities)."""
    from brainjepa.evaluate.capabilities import CAPABILITIES

    rows = []
    for (task, method), group in metrics.groupby(["task", "method"], sort=True):
        spec = next((c for c in CAPABILITIES.values() if c.kind == group["kind"].iloc[0]), None)
        if spec is None:
            continue
        column = f"test_{spec.metrics[0]}"
        values = group[column].to_numpy(dtype=float) if column in group else np.array([np.nan])
        std = f" ({np.nanstd(values):.3f})" if len(values) > 1 else ""
        rows.append({"capability": task, "method": method, "metric": spec.metrics[0],
                     "test": f"{np.nanmean(values):.3f}{std}", "test subjects": int(group["n_test"].iloc[0])})
    return pd.DataFrame(rows)


def _metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per method, one column per task: the task's main test metric, mean (std) over seeds."""
    from brainjepa.figures.evaluation import MAIN

    cells: dict[str, dict[str, str]] = {}
    columns = []
    for task, rows in metrics.groupby("task", sort=False):
        column, label, _ = MAIN[rows["kind"].iloc[0]]
        metric = "r" if column == "test_r" else "BACC"
        header = f"{task}: {metric} ({int(rows['n_test'].iloc[0])} test subjects)"
        columns.append(header)
        for method, group in rows.groupby("method", sort=False):
            values = group[column].to_numpy(dtype=float)
            std = f" ({np.nanstd(values):.3f})" if len(values) > 1 else ""
            cells.setdefault(method, {})[header] = f"{np.nanmean(values):.3f}{std}"
    table = pd.DataFrame.from_dict(cells, orient="index").reindex(columns=columns).fillna("")
    table.insert(0, "method", table.index)
    return table.reset_index(drop=True)


def write_summary(samples_path: str | Path, splits_path: str | Path, excluded_paths: list[str | Path],
                  runs: dict[str, str | Path], metrics_path: str | Path | None, out: str | Path,
                  out_json: str | Path | None = None, results_dir: str | Path = "results",
                  report_command: str = "snakemake --report results/report.html",
                  manifests: list[str | Path] = ()) -> str:
    """The report's first page (RST) and, with ``out_json``, the same facts as JSON (what the workflow prints at
    the end of a run): cohorts (with the effective TRs of their sharded runs, from the shard ``manifests``),
    subjects per split, runs excluded and why, models, and where the outputs are (under ``results_dir``; the
    HTML report is made by ``report_command``)."""
    samples = pd.read_csv(samples_path, sep="\t", dtype=str, keep_default_na=False)
    splits = pd.read_csv(splits_path, sep="\t", dtype=str)
    from brainjepa.figures.qc import read_excluded

    excluded = read_excluded(excluded_paths)
    cohorts = _cohort_table(samples, excluded, manifests)
    per_split = (splits.drop_duplicates(["cohort", "subject"]).groupby(["cohort", "split"]).size()
                 .unstack(fill_value=0))
    per_split = per_split[[s for s in ("pretrain", "train", "val", "test") if s in per_split.columns]].reset_index()
    parts = [f"{len(samples)} runs of {samples.groupby('cohort')['subject'].nunique().sum()} subjects in "
             f"{samples['cohort'].nunique()} cohorts; {len(excluded)} runs excluded from the training shards "
             "(the QC section lists why).", "",
             rst_table(cohorts, "Cohorts"), rst_table(per_split, "Subjects per split (subject-level splits)")]
    if runs:
        parts.append(rst_table(_models(runs), "Models pretrained"))
    if metrics_path is not None:
        parts += _metric_tables(metrics_path, results_dir)
    text = "\n".join(parts)
    if out_json is not None:
        facts = {"runs": len(samples), "subjects": int(samples.groupby("cohort")["subject"].nunique().sum()),
                 "cohorts": cohorts.rename(columns={"runs excluded from the shards": "excluded",
                                                    "TR after alignment (s)": "tr"}).to_dict("records"),
                 "subjects_per_split": per_split.set_index("cohort").to_dict("index"),
                 "excluded": {"runs": len(excluded),
                              "reasons": {str(k): int(v) for k, v in excluded["reason"].value_counts().items()}},
                 "models": {name: str(Path(folder) / "final.pt") for name, folder in runs.items()},
                 "monitors": {name: run_monitors(folder) for name, folder in runs.items()},
                 "outputs": {"results": str(results_dir), "metrics": str(metrics_path) if metrics_path else None,
                             "figures": f"{results_dir}/figures",
                             "report": f"{results_dir}/report.html ({report_command})"}}
        with atomic_path(out_json) as tmp:
            Path(tmp).write_text(json.dumps(facts, indent=1, default=int) + "\n")
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text)
    return text


def _cohort_table(samples: pd.DataFrame, excluded: pd.DataFrame, manifests: list[str | Path]) -> pd.DataFrame:
    """One row per cohort: subjects, runs, input kind, runs excluded from the shards, effective TRs (from the shard
    ``manifests``)."""
    cohort_of = excluded["run_id"].str.split("/").str[0]
    trs: dict[str, set[str]] = {}  # cohort -> its effective TRs over the splits' shards
    for manifest in manifests:
        for cohort, counts in json.loads(Path(manifest).read_text()).get("tr", {}).items():
            trs.setdefault(cohort, set()).update(counts)
    return pd.DataFrame([{"cohort": c, "subjects": rows["subject"].nunique(), "runs": len(rows),
                          "input": "ROI time series" if (rows["bold"] == "").all() else
                                   ("NIfTI BOLD" if (rows["bold"] != "").all() else "NIfTI and time series"),
                          "runs excluded from the shards": int((cohort_of == c).sum()),
                          "TR after alignment (s)": ", ".join(sorted(trs.get(c, {}), key=float)) or "n/a"}
                         for c, rows in samples.groupby("cohort", sort=True)])


def _metric_tables(metrics_path: str | Path, results_dir: str | Path) -> list[str]:
    """The summary's test-metric and capability tables (RST), where the metrics table has rows for them."""
    from brainjepa.figures.evaluation import read_metrics

    parts = []
    metrics = read_metrics(metrics_path)
    if len(metrics):
        parts.append(rst_table(_metrics(metrics), f"Test metrics, mean (std) over {metrics['seed'].nunique()} "
                               "seeds (r: Pearson; BACC: balanced accuracy; every metric and bootstrap intervals: "
                               f"{results_dir}/tables/summary.md)"))
    capabilities = _capabilities(read_metrics(metrics_path, capabilities=True))
    if len(capabilities):
        parts.append(rst_table(capabilities, "BrainLM's capabilities: the headline test metric, mean (std) over "
                               f"seeds (every metric: {results_dir}/tables/<capability>.md)"))
    return parts


def summary_lines(path: str | Path) -> list[str]:
    """The run summary JSON as a few lines for the end of a workflow run (empty when it is not there)."""
    try:
        facts = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    lines = [f"brainjepa: {facts['runs']} runs of {facts['subjects']} subjects in {len(facts['cohorts'])} cohorts; "
             f"{facts['excluded']['runs']} runs excluded from the shards"
             + (f" ({', '.join(f'{r}: {n}' for r, n in facts['excluded']['reasons'].items())})"
                if facts["excluded"]["runs"] else "")]
    tr = {row["cohort"]: row.get("tr", "n/a") for row in facts["cohorts"]}
    for cohort, counts in facts["subjects_per_split"].items():
        lines.append(f"  {cohort}: " + ", ".join(f"{split} {n}" for split, n in counts.items())
                     + f"; TR after alignment {tr.get(cohort, 'n/a')} s")
    for name, path_ in facts["models"].items():
        lines.append(f"  model {name}: {path_}; representations: {monitor_text(facts.get('monitors', {}).get(name))}")
    outputs = facts["outputs"]
    lines.append(f"  metrics: {outputs['metrics'] or 'none (no evaluate tasks)'}; figures: {outputs['figures']}; "
                 f"report: {outputs['report']}")
    return lines
