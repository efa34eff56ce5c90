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
    """The evaluation records (result JSONs) of ``paths``, in order; a file that cannot be read or parsed is an error
    naming it."""
    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: cannot read an evaluation result ({exc})") from None
    return records


def metrics_table(records: list[dict]) -> pd.DataFrame:
    """The ``metrics.tsv`` table of ``records``: one row per record (task, kind, method, seed), its ``test_*`` and
    ``val_*`` metrics, the selected epoch or regularisation, ``n_<split>`` subjects and seconds, sorted by task, method
    and seed."""
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


def _over_splits(runs: list[dict], metric: str) -> str:
    """A resampled method's test metric over its splits (every seed's): mean [2.5th, 97.5th percentile]; "-" for
    a method on the fixed split."""
    values = [e["test"].get(metric, np.nan) for r in runs for e in r.get("splits", [])]
    values = np.array([v for v in values if v is not None], dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return "-"
    scale, digits = (100.0, 1) if metric in PERCENT else (1.0, 3)
    lo, hi = np.percentile(values * scale, [2.5, 97.5])
    return f"{values.mean() * scale:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] ({len(values)})"


def _scheme(run: dict) -> str:
    spec = run.get("resampling")
    if not spec:
        return "fixed"
    if spec["scheme"] == "kfold":
        return f"{spec['folds']}-fold x {spec['repeats']}"
    return f"{spec['splits']} random"


def task_tables(records: list[dict], n_boot: int = 1000, paired: pd.DataFrame | None = None) -> dict[str, str]:
    """Markdown per task (and ``summary``): rows methods, columns metrics: mean (std) [95 % interval]; then the
    task's paired differences (``paired``: :func:`paired_table`)."""
    capability = [r for r in records if r["kind"] in KINDS]
    records = [r for r in records if r["kind"] not in KINDS]
    sections = paired_markdown(paired) if paired is not None and len(paired) else {}
    by_task: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        by_task.setdefault(r["task"], {}).setdefault(r["method"], []).append(r)
    tables, summary = {}, []
    for task, methods in sorted(by_task.items()):
        any_run = next(iter(methods.values()))[0]
        kind = "regression" if any_run["kind"] == "regression" else "classification"
        names = REGRESSION if kind == "regression" else CLASSIFICATION
        n = any_run["n_subjects"]
        external = any_run.get("test_cohorts") or []
        where = f"cohorts {', '.join(any_run['cohorts'])}" + (f", tested on {', '.join(external)}" if external else "")
        primary = "r" if kind == "regression" else ("auroc" if any_run["kind"] == "binary" else "balanced_accuracy")
        lines = [f"# {task}: {any_run['label']} ({any_run['kind']}; {where}; fixed split's subjects "
                 f"train/val/test {n['train']}/{n['val']}/{n['test']})", "",
                 "Test metrics over subjects: mean (std) over seeds, [95 % bootstrap interval over test subjects "
                 "of the seed mean]. A resampled method (splits: k-fold x repeats or random splits) is scored on "
                 "each subject's test prediction averaged over the splits that test it; its last column gives "
                 f"{LABELS[primary]} over the splits: mean [2.5th, 97.5th percentile] (number of splits x seeds). "
                 "A random encoder's seeds are its initialisations.", "",
                 "| method | seeds | splits | " + " | ".join(LABELS[m] for m in names) + f" | {LABELS[primary]} "
                 "over splits |", "|---|---|---|" + "---|" * len(names) + "---|"]
        for method, runs in sorted(methods.items()):
            runs = sorted(runs, key=lambda r: r["seed"])
            kind_, truth, preds, scale = _truth_and_preds(runs)
            thresholds = [r.get("selected", {}).get("threshold") if isinstance(r.get("selected"), dict) else None
                          for r in runs]
            intervals = bootstrap_seed_mean(kind_, truth, preds, scale, n_boot=n_boot, thresholds=thresholds)
            cells = [_cell([r["test"][m] for r in runs], intervals.get(m), m) for m in names]
            lines.append(f"| {method} | {len(runs)} | {_scheme(runs[0])} | " + " | ".join(cells)
                         + f" | {_over_splits(runs, primary)} |")
            main = PAPER_COLUMNS[kind][:2]
            summary.append((task, kind, method, len(runs),
                            " / ".join(_cell([r["test"][m] for r in runs], None, m) for m in main),
                            _cell([r["test"][PAPER_COLUMNS[kind][2]] for r in runs],
                                  intervals.get(PAPER_COLUMNS[kind][2]), PAPER_COLUMNS[kind][2])))
        tables[task] = "\n".join(lines + sections.get(task, [])) + "\n"
    lines = ["# Downstream results (paper style)", "",
             "Regression: MSE (z-scored target) / r, and MAE in original units; classification: ACC / F1 (%), "
             "and balanced accuracy (%). Mean (std) over seeds; [95 % bootstrap interval over test subjects].", "",
             "| task | method | seeds | MSE / r or ACC / F1 | MAE or BACC |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {m} | {s} | {a} | {b} |" for t, _, m, s, a, b in summary]
    if paired is not None and len(paired):
        lines += _paired_summary(paired)
    cap_tables, section = capability_tables(capability, n_boot)
    tables.update(cap_tables)
    tables["summary"] = "\n".join(lines + section) + "\n"
    return tables


def _paired_summary(paired: pd.DataFrame) -> list[str]:
    """The summary's section: per task and pretrained method, its primary metric's difference from the random
    encoder (worst seed) and from each FC baseline, and whether it beats them."""
    lines = ["", "## Does pretraining help? Paired differences on the same test subjects", "",
             "Pretrained minus random init (the worst of its initialisations) and minus the FC baselines, on the "
             "task's first paired metric: difference [95 % paired bootstrap interval]; **beats**: every interval "
             "excludes zero (tables/<task>.md and tables/paired.tsv have every row).", "",
             "| task | method | metric | vs random init | vs FC |", "|---|---|---|---|---|"]
    for (task, method), rows in paired.groupby(["task", "method"], sort=True):
        metric = rows["metric"].iloc[0]
        rows = rows[rows["metric"] == metric]
        cells = []
        for random in (True, False):
            part = rows[rows["versus_seed"].notna() == random] if random else rows[rows["versus_seed"].isna()]
            if not len(part):
                cells.append("-")
                continue
            worst = part.loc[part["delta"].idxmin()]
            text = f"{worst['delta']:+.3f} [{worst['ci_low']:+.3f}, {worst['ci_high']:+.3f}]"
            if not random:
                text += f" ({worst['versus']})"
            cells.append(f"**{text} beats**" if part["beats"].all() else text)
        lines.append(f"| {task} | {method} | {LABELS.get(metric, metric)} | {cells[0]} | {cells[1]} |")
    return lines


# ----------------------------------------------------------------------------------------------- paired differences
PAIRED_METRICS = {"regression": ("r",), "binary": ("auroc", "balanced_accuracy"), "multiclass": ("balanced_accuracy",)}
PAIRED_COLUMNS = ("task", "method", "versus", "versus_seed", "metric", "n_subjects", "delta", "ci_low", "ci_high", "p",
                  "beats")


def encoder_role(record: dict) -> str:
    """``fc`` (a connectivity baseline), ``random`` (an untrained encoder) or ``pretrained`` (a checkpoint)."""
    if record.get("encoder") is None:
        return "fc"
    source = record.get("source") or {}
    return "random" if isinstance(source, dict) and source.get("kind") == "random" else "pretrained"


def protocol_name(record: dict) -> str:
    """The method less its encoder: ``jepa_closed_form_roi`` -> ``closed_form_roi``."""
    return record["method"][len(record["encoder"]) + 1:] if record.get("encoder") else record["method"]


def _threshold(runs: list[dict]) -> float | None:
    """The decision threshold of a seed mean: the median of the seeds' (each chosen on validation), or None."""
    values = [r.get("selected", {}).get("threshold") for r in runs if isinstance(r.get("selected"), dict)]
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _aligned(runs: list[dict], other: list[dict]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, float]:
    """The seed-mean predictions of ``runs`` and ``other`` on the subjects both predict (sorted): (kind, truth,
    pred_a, pred_b, scale); regression in z units of the first run's target."""
    kind, truth_a, preds_a, scale = _truth_and_preds(runs)
    _, _, preds_b, _ = _truth_and_preds(other)
    names_a = [p["subject"] for p in runs[0]["predictions"]]
    names_b = [p["subject"] for p in other[0]["predictions"]]
    if kind == "regression":   # b on a's scale: back to original units, then a's z
        tb, ta = other[0]["target"], runs[0]["target"]
        preds_b = [(p * tb["std"] + tb["mean"] - ta["mean"]) / ta["std"] for p in preds_b]
    common = sorted(set(names_a) & set(names_b))
    ia = np.array([names_a.index(s) for s in common], dtype=int)
    ib = np.array([names_b.index(s) for s in common], dtype=int)
    mean_a = np.mean([p[ia] for p in preds_a], axis=0)
    mean_b = np.mean([p[ib] for p in preds_b], axis=0)
    return runs[0]["kind"], truth_a[ia], mean_a, mean_b, scale


def paired_table(records: list[dict], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired differences on the same test subjects (PAIRED_COLUMNS): every pretrained method (its seeds'
    mean prediction) minus each seed of the random encoder with the same protocol (a random encoder's seed is
    its initialisation in the frozen protocols) and minus each FC baseline (its seed mean), per metric of
    :data:`PAIRED_METRICS`: the observed difference, its 95 % paired-bootstrap interval over subjects and the share
    of resamples where the pretrained method is not better (:func:`brainjepa.evaluate.crossval.paired_bootstrap`),
    and whether the interval excludes zero on its good side."""
    from brainjepa.evaluate.crossval import beats, paired_bootstrap

    rows = []
    by_task: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        if r["kind"] not in KINDS:
            by_task.setdefault(r["task"], {}).setdefault(r["method"], []).append(r)
    for task, methods in sorted(by_task.items()):
        runs = {m: sorted(rs, key=lambda r: r["seed"]) for m, rs in methods.items()}
        for method, mine in sorted(runs.items()):
            if encoder_role(mine[0]) != "pretrained":
                continue
            versus = [(other, [run]) for other, theirs in sorted(runs.items())
                      if encoder_role(theirs[0]) == "random" and protocol_name(theirs[0]) == protocol_name(mine[0])
                      for run in theirs]
            versus += [(other, theirs) for other, theirs in sorted(runs.items()) if encoder_role(theirs[0]) == "fc"]
            for other, theirs in versus:
                kind, truth, a, b, scale = _aligned(mine, theirs)
                for metric in PAIRED_METRICS[kind]:
                    result = paired_bootstrap(kind, truth, a, b, metric, n_boot=n_boot, seed=seed, scale=scale,
                                              thresholds=(_threshold(mine), _threshold(theirs)))
                    rows.append({"task": task, "method": method, "versus": other,
                                 "versus_seed": theirs[0]["seed"] if encoder_role(theirs[0]) == "random" else None,
                                 "metric": metric,
                                 "n_subjects": len(truth), **result, "beats": beats(result, metric)})
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def paired_markdown(paired: pd.DataFrame) -> dict[str, list[str]]:
    """Per task, the lines of its paired-differences section: against the random encoder, the worst difference
    over its seeds with that seed's interval and how many seeds the pretrained method beats; against each FC
    baseline, the difference and its interval."""
    out: dict[str, list[str]] = {}
    for task, rows in paired.groupby("task", sort=True):
        lines = ["", "## Paired differences on the same test subjects", "",
                 "Pretrained minus random init (each initialisation; the worst shown) and minus each FC baseline: "
                 "difference of the metric [95 % paired bootstrap interval over subjects]; **beats**: the interval "
                 "excludes zero.", "", "| method | versus | metric | subjects | difference | beats |",
                 "|---|---|---|---|---|---|"]
        for (method, versus, metric), group in rows.groupby(["method", "versus", "metric"], sort=True):
            worst = group.loc[group["delta"].idxmin()]
            text = f"{worst['delta']:+.3f} [{worst['ci_low']:+.3f}, {worst['ci_high']:+.3f}]"
            if len(group) > 1:
                text += f" (worst of {len(group)} seeds, seed {int(worst['versus_seed'])})"
            won = f"{int(group['beats'].sum())}/{len(group)}"
            lines.append(f"| {method} | {versus} | {LABELS.get(metric, metric)} | {int(worst['n_subjects'])} | "
                         f"{text} | {'**' + won + '**' if group['beats'].all() else won} |")
        out[str(task)] = lines
    return out


def run_summary(results: list[str | Path], out_tsv: str | Path, tables_dir: str | Path, n_boot: int = 1000) -> None:
    """The ``metrics`` stage: every result JSON -> metrics.tsv and tables/<task>.md + tables/summary.md."""
    from brainjepa.io import write_text_atomic, write_tsv_atomic

    records = read_results(results)
    if not records:
        raise InputError("no evaluation results to aggregate")
    write_tsv_atomic(metrics_table(records), out_tsv)
    paired = paired_table(records, n_boot)
    write_tsv_atomic(paired, Path(tables_dir) / "paired.tsv")
    for name, text in task_tables(records, n_boot, paired).items():
        write_text_atomic(Path(tables_dir) / f"{name}.md", text)
