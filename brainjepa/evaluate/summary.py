"""Aggregate the per-(task, method, seed) JSONs: ``metrics.tsv`` and paper-style Markdown tables.

``metrics.tsv``: one row per (task, method, seed) with every validation and test metric (``val_*``,
``test_*``), the selected epoch or regularisation and the subjects per split.

Tables (``<tables>/<task>.md``, one per task, and ``<tables>/summary.md``): rows are methods, columns the
task's test metrics as ``mean (std)`` over seeds and, under it, the 95 % bootstrap interval over test
subjects of the seed-mean (every seed's predictions resampled with the same subjects,
:func:`.metrics.bootstrap_seed_mean`). ``summary.md`` has the paper's columns: MSE / r for regression,
ACC / F1 (%) for classification, plus balanced accuracy, and says how many seeds each cell has.

BrainLM's capabilities (:mod:`.capabilities`: forecasting, network identification, perturbation,
reconstruction) have records of their own kinds: their tables (``<tables>/<capability>.md``) give the
capability's test metrics as mean (std) over seeds, with a 95 % bootstrap interval over test subjects (or
recordings) for the metrics that are a mean over them (the record's ``per_subject``,
:func:`.metrics.bootstrap_subject_mean`); ``summary.md`` ends with a section of their headline metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.errors import InputError
from brainjepa.evaluate.capabilities import CAPABILITIES, KINDS
from brainjepa.evaluate.metrics import CLASSIFICATION, REGRESSION, bootstrap_seed_mean, bootstrap_subject_mean

PAPER_COLUMNS = {"regression": ("mse", "r", "mae"), "classification": ("accuracy", "f1", "balanced_accuracy", "auroc")}
LABELS = {"mse": "MSE", "mae": "MAE", "r": "r", "r2": "R2", "accuracy": "ACC %", "balanced_accuracy": "BACC %",
          "f1": "F1 %", "auroc": "AUROC"}
PERCENT = {"accuracy", "balanced_accuracy", "f1"}


def read_results(paths: list[str | Path]) -> list[dict]:
    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: cannot read an evaluation result ({exc})") from None
    return records


def metrics_table(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {"task": r["task"], "kind": r["kind"], "method": r["method"], "seed": r["seed"]}
        row.update({f"test_{k}": v for k, v in r["test"].items()})
        row.update({f"val_{k}": v for k, v in r["val"].items()})
        selected = r.get("selected", {})
        row["selected_epoch"] = selected.get("epoch") if isinstance(selected, dict) else None
        row["selected_regularisation"] = selected.get("regularisation") if isinstance(selected, dict) else None
        row.update({f"n_{s}": n for s, n in r["n_subjects"].items()})
        row["seconds"] = r.get("seconds")
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["task", "method", "seed"], ignore_index=True)


def _truth_and_preds(runs: list[dict]) -> tuple[str, np.ndarray, list[np.ndarray], float]:
    """Per-subject truth and every seed's predictions, in one subject order (the first seed's)."""
    first = runs[0]
    kind = "regression" if first["kind"] == "regression" else "classification"
    subjects = [p["subject"] for p in first["predictions"]]
    preds = []
    for r in runs:
        by_subject = {p["subject"]: p for p in r["predictions"]}
        if set(by_subject) != set(subjects):
            raise InputError(f"task {first['task']}, method {first['method']}: seeds have different test subjects")
        if kind == "regression":
            std, mean = r["target"]["std"], r["target"]["mean"]
            preds.append(np.array([(by_subject[s]["prediction"] - mean) / std for s in subjects]))
        else:
            preds.append(np.array([by_subject[s]["probabilities"] for s in subjects]))
    if kind == "regression":
        std, mean = first["target"]["std"], first["target"]["mean"]
        truth = np.array([(p["label"] - mean) / std for p in first["predictions"]])
        return kind, truth, preds, std
    classes = first["classes"]
    truth = np.array([classes.index(_text(p["label"])) for p in first["predictions"]])
    return kind, truth, preds, 1.0


def _text(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()


def _cell(values: list[float], interval: tuple[float, float] | None, metric: str) -> str:
    scale = 100.0 if metric in PERCENT else 1.0
    digits = 2 if metric in PERCENT else 3
    v = np.array(values, dtype=float) * scale
    text = f"{np.nanmean(v):.{digits}f} ({np.nanstd(v):.{digits}f})" if len(v) else "-"
    if interval is not None:
        text += f" [{interval[0] * scale:.{digits}f}, {interval[1] * scale:.{digits}f}]"
    return text


def _capability_columns(kind: str, runs: list[dict]) -> list[str]:
    """The capability's headline metrics, then the other test metrics of its records (first-seen order)."""
    spec = next(c for c in CAPABILITIES.values() if c.kind == kind)
    columns = [m for m in spec.metrics if any(m in r["test"] for r in runs)]
    for r in runs:
        columns += [m for m in r["test"] if m not in columns]
    return columns


def capability_tables(records: list[dict], n_boot: int = 1000) -> tuple[dict[str, str], list[str]]:
    """Markdown per capability (rows methods, columns its test metrics: mean (std) [95 % interval]) and the
    lines of the summary's capability section."""
    by_task: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        by_task.setdefault(r["task"], {}).setdefault(r["method"], []).append(r)
    tables, summary = {}, []
    for task, methods in sorted(by_task.items()):
        runs_all = [r for runs in methods.values() for r in runs]
        kind = runs_all[0]["kind"]
        columns = _capability_columns(kind, runs_all)
        n = runs_all[0]["n_subjects"]
        lines = [f"# {task}: {kind} (cohorts {', '.join(runs_all[0]['cohorts'])}; subjects train/val/test "
                 f"{n.get('train', 0)}/{n.get('val', 0)}/{n.get('test', 0)})", "",
                 "Test metrics: mean (std) over seeds, [95 % bootstrap interval over test subjects or recordings] "
                 "where the metric is a mean over them.", "",
                 "| method | seeds | " + " | ".join(LABELS.get(c, c) for c in columns) + " |",
                 "|---|---|" + "---|" * len(columns)]
        main = CAPABILITIES[task].metrics[0] if task in CAPABILITIES else columns[0]
        for method, runs in sorted(methods.items()):
            runs = sorted(runs, key=lambda r: r["seed"])
            cells = []
            for c in columns:
                values = [r["test"][c] for r in runs if c in r["test"]]
                per = [r.get("per_subject", {}).get(c) for r in runs]
                interval = bootstrap_subject_mean(per, n_boot) if all(p is not None for p in per) else None
                cells.append(_cell(values, interval, c))
            lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
            if main in columns:
                summary.append(f"| {task} | {method} | {len(runs)} | {LABELS.get(main, main)} "
                               f"{cells[columns.index(main)]} |")
        tables[task] = "\n".join(lines) + "\n"
    section = []
    if summary:
        section = ["", "## BrainLM's capabilities", "", "The headline test metric of each capability (tables "
                   "<capability>.md have them all).", "", "| capability | method | seeds | metric |",
                   "|---|---|---|---|", *summary]
    return tables, section


def task_tables(records: list[dict], n_boot: int = 1000) -> dict[str, str]:
    """Markdown per task (and ``summary``): rows methods, columns metrics: mean (std) [95 % interval]."""
    capability = [r for r in records if r["kind"] in KINDS]
    records = [r for r in records if r["kind"] not in KINDS]
    by_task: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        by_task.setdefault(r["task"], {}).setdefault(r["method"], []).append(r)
    tables, summary = {}, []
    for task, methods in sorted(by_task.items()):
        any_run = next(iter(methods.values()))[0]
        kind = "regression" if any_run["kind"] == "regression" else "classification"
        names = REGRESSION if kind == "regression" else CLASSIFICATION
        n = any_run["n_subjects"]
        lines = [f"# {task}: {any_run['label']} ({any_run['kind']}; cohorts {', '.join(any_run['cohorts'])}; "
                 f"subjects train/val/test {n['train']}/{n['val']}/{n['test']})", "",
                 "Test metrics over subjects: mean (std) over seeds, [95 % bootstrap interval over test subjects "
                 "of the seed mean].", "",
                 "| method | seeds | " + " | ".join(LABELS[m] for m in names) + " |",
                 "|---|---|" + "---|" * len(names)]
        for method, runs in sorted(methods.items()):
            runs = sorted(runs, key=lambda r: r["seed"])
            kind_, truth, preds, scale = _truth_and_preds(runs)
            intervals = bootstrap_seed_mean(kind_, truth, preds, scale, n_boot=n_boot)
            cells = [_cell([r["test"][m] for r in runs], intervals.get(m), m) for m in names]
            lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
            main = PAPER_COLUMNS[kind][:2]
            summary.append((task, kind, method, len(runs),
                            " / ".join(_cell([r["test"][m] for r in runs], None, m) for m in main),
                            _cell([r["test"][PAPER_COLUMNS[kind][2]] for r in runs],
                                  intervals.get(PAPER_COLUMNS[kind][2]), PAPER_COLUMNS[kind][2])))
        tables[task] = "\n".join(lines) + "\n"
    lines = ["# Downstream results (paper style)", "",
             "Regression: MSE (z-scored target) / r, and MAE in original units; classification: ACC / F1 (%), "
             "and balanced accuracy (%). Mean (std) over seeds; [95 % bootstrap interval over test subjects].", "",
             "| task | method | seeds | MSE / r or ACC / F1 | MAE or BACC |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {m} | {s} | {a} | {b} |" for t, _, m, s, a, b in summary]
    cap_tables, section = capability_tables(capability, n_boot)
    tables.update(cap_tables)
    tables["summary"] = "\n".join(lines + section) + "\n"
    return tables


def run_summary(results: list[str | Path], out_tsv: str | Path, tables_dir: str | Path, n_boot: int = 1000) -> None:
    """The ``metrics`` stage: every result JSON -> metrics.tsv and tables/<task>.md + tables/summary.md."""
    from brainjepa.io import write_text_atomic, write_tsv_atomic

    records = read_results(results)
    if not records:
        raise InputError("no evaluation results to aggregate")
    write_tsv_atomic(metrics_table(records), out_tsv)
    for name, text in task_tables(records, n_boot).items():
        write_text_atomic(Path(tables_dir) / f"{name}.md", text)
