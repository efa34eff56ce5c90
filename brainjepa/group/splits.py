"""Subject-level train/val/test splits that never move when subjects are added.

A subject's split is a pure function of (seed, cohort, subject): a uniform number u in [0, 1) from the
SHA-256 of those three, cut at the cumulative split fractions. Adding subjects, cohorts or runs never moves an
existing subject, and every run of a subject lands in the subject's split.

The pretraining cohort (UK Biobank in the paper) first sends the fraction ``pretraining_fraction`` of its
subjects to ``pretrain`` (the set that also feeds the group statistics: scaling, FC, gradients); the rest is
held out for internal tasks and split train/val/test like every other cohort, from an independent draw.

Balance per label (e.g. diagnosis) therefore holds in expectation only: when a split depends on nothing but the
subject's own identifiers it cannot depend on the other subjects' labels, so no assignment can be both strictly
stable and exactly stratified. Small downstream cohorts need the balance (12 subjects can leave a class out of
the training split entirely), and they rarely grow, so stratification is opt-in per cohort
(``stratify={cohort: label}``): within each (cohort, label value) stratum the subjects are ranked by their
hash u and cut by rank with largest-remainder counts, so every split gets its exact share of every class. It
stays deterministic from (seed, the cohort's subjects and labels); adding subjects to a stratified cohort moves
only the few existing subjects at the rank boundaries of their stratum. Cohorts not listed keep the strict
guarantee. ``balance_table`` reports the realised counts per split, cohort and label value.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa import sheets
from brainjepa.errors import InputError

SPLITS = ("train", "val", "test")
PRETRAIN = "pretrain"


def unit_uniform(seed: int, *ids: str) -> float:
    """A stable uniform number in [0, 1) from a seed and identifiers (SHA-256, platform independent)."""
    digest = hashlib.sha256("\x1f".join([str(seed), *map(str, ids)]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(seed: int, cohort: str, subject: str, fractions: dict[str, float],
                 pretraining_fraction: float | None = None) -> str:
    """The split of one subject: ``pretrain`` (pretraining cohort only), ``train``, ``val`` or ``test``."""
    if pretraining_fraction is not None and unit_uniform(seed, "pretrain", cohort, subject) < pretraining_fraction:
        return PRETRAIN
    u = unit_uniform(seed, "split", cohort, subject)
    edge = 0.0
    for name in SPLITS:
        edge += fractions[name]
        if u < edge:
            return name
    return SPLITS[-1]  # u within rounding of 1.0


def check_fractions(fractions: dict[str, float]) -> None:
    """``fractions`` (config ``splits.fractions``) gives exactly train, val and test, each >= 0, summing to 1 (else an
    :class:`brainjepa.errors.InputError` saying which rule fails)."""
    if set(fractions) != set(SPLITS) or any(v < 0 for v in fractions.values()):
        raise InputError(f"splits.fractions must give train, val and test (>= 0), got {fractions}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise InputError(f"splits.fractions must sum to 1, got {sum(fractions.values()):.6g}")


def stratum_counts(n: int, fractions: dict[str, float]) -> list[int]:
    """Subjects per split (train, val, test) for a stratum of n: largest-remainder rounding of n * fraction."""
    exact = [n * fractions[name] for name in SPLITS]
    counts = [int(v) for v in exact]
    by_remainder = sorted(range(len(SPLITS)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def stratified_splits(subjects: pd.DataFrame, seed: int, fractions: dict[str, float]) -> dict[str, str]:
    """Exact per-stratum splits. subjects: cohort, subject, stratum (one row per subject) -> {subject: split}."""
    out = {}
    for _, group in subjects.groupby(["cohort", "stratum"], sort=True):
        ranked = sorted(group["subject"], key=lambda s: unit_uniform(seed, "split", group["cohort"].iloc[0], s))
        edges = np.cumsum([0] + stratum_counts(len(ranked), fractions))
        for name, lo, hi in zip(SPLITS, edges[:-1], edges[1:]):
            out.update({subject: name for subject in ranked[lo:hi]})
    return out


def make_splits(samples: pd.DataFrame, seed: int, fractions: dict[str, float],
                pretraining_cohort: str | None = None, pretraining_fraction: float = 0.8,
                stratify: dict[str, str] | None = None, phenotypes: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run: run_id, cohort, subject, session, run, split (ordered by run_id).

    ``stratify`` maps cohorts to a label column of ``phenotypes`` to balance exactly (see the module notes).
    """
    check_fractions(fractions)
    samples = samples.reset_index(drop=True)
    shared = sheets.shared_subjects(samples)
    if shared:
        subject, cohorts = next(iter(shared.items()))
        raise InputError(f"subject '{subject}' has runs in several cohorts {cohorts}; subject labels must be "
                         "unique across cohorts (prefix them with the cohort)")
    if pretraining_cohort is not None and pretraining_cohort not in set(samples["cohort"]):
        raise InputError(f"splits.pretraining.cohort: '{pretraining_cohort}' has no runs in the sample sheet")
    table = samples[["run_id", "cohort", "subject", "session", "run"]].copy()
    table["split"] = [
        assign_split(seed, c, s, fractions, pretraining_fraction if c == pretraining_cohort else None)
        for c, s in zip(table["cohort"], table["subject"])
    ]
    if stratify:
        strata = _strata(table, stratify, phenotypes, pretraining_cohort)
        if not strata.empty:
            exact = stratified_splits(strata, seed, fractions)
            held = table["subject"].isin(list(exact))
            table.loc[held, "split"] = table.loc[held, "subject"].map(exact)
    return table.sort_values("run_id", ignore_index=True)


def _strata(table: pd.DataFrame, stratify: dict[str, str], phenotypes: pd.DataFrame | None,
            pretraining_cohort: str | None) -> pd.DataFrame:
    """The held-out subjects of stratified cohorts with their stratum (label value; missing: "n/a")."""
    if phenotypes is None:
        raise InputError("stratified splits need the phenotypes sheet")
    for cohort, label in stratify.items():
        if label not in phenotypes.columns:
            raise InputError(f"splits.stratify: cohort '{cohort}' is stratified by '{label}', "
                             "which is not a phenotype column")
    subjects = table.drop_duplicates(["cohort", "subject"])
    subjects = subjects[subjects["cohort"].isin(list(stratify)) & (subjects["split"] != PRETRAIN)]
    subjects = subjects[["cohort", "subject"]].merge(phenotypes, on=["cohort", "subject"], how="left")
    subjects["stratum"] = [str(row[stratify[row["cohort"]]]) if pd.notna(row[stratify[row["cohort"]]]) else "n/a"
                           for _, row in subjects.iterrows()]
    return subjects[["cohort", "subject", "stratum"]]


def split_balance(splits: pd.DataFrame, phenotypes: pd.DataFrame, label: str) -> pd.DataFrame:
    """Subjects per (cohort, label value, split): the realised balance of a label across splits."""
    subjects = splits.drop_duplicates(["cohort", "subject"])[["cohort", "subject", "split"]]
    merged = subjects.merge(phenotypes[["cohort", "subject", label]], on=["cohort", "subject"], how="left")
    return merged.pivot_table(index=["cohort", label], columns="split", values="subject", aggfunc="count",
                              fill_value=0)


def balance_table(splits: pd.DataFrame, phenotypes: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Long table of subjects per (cohort, label, value, split) for discrete labels (missing values: n/a)."""
    frames = []
    for label in labels:
        counts = split_balance(splits, phenotypes.fillna({label: "n/a"}), label).reset_index()
        counts = counts.rename(columns={label: "value"})
        counts.insert(1, "label", label)
        frames.append(counts)
    columns = ["cohort", "label", "value", PRETRAIN, *SPLITS]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    for column in columns:
        if column not in table:
            table[column] = 0
    table["value"] = table["value"].astype(str)
    return table[columns]


def split_warnings(splits: pd.DataFrame) -> list[str]:
    """A warning per cohort whose downstream subjects leave ``val`` or ``test`` empty (no model selection or no
    test metric is possible on it), naming the cohort and its counts; the pretraining share is not counted."""
    out = []
    subjects = splits.drop_duplicates(["cohort", "subject"])
    for cohort, rows in subjects.groupby("cohort", sort=True):
        counts = rows["split"].value_counts()
        downstream = {s: int(counts.get(s, 0)) for s in ("train", "val", "test")}
        empty = [s for s, n in downstream.items() if n == 0]
        if sum(downstream.values()) and empty:
            out.append(f"cohort {cohort}: no {' or '.join(empty)} subjects (train {downstream['train']}, val "
                       f"{downstream['val']}, test {downstream['test']}); its tasks cannot select or test")
    return out


def pretraining_runs(splits: pd.DataFrame) -> pd.DataFrame:
    """The runs whose data may feed group statistics: the pretraining set only (never a test subject)."""
    runs = splits[splits["split"] == PRETRAIN]
    if runs.empty:
        raise InputError("no subject is in the pretraining set: configure splits.pretraining.cohort")
    return runs


def subject_groups(runs: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """run_ids of each (cohort, subject), in run_id order."""
    return {key: sorted(group["run_id"]) for key, group in runs.groupby(["cohort", "subject"], sort=True)}


def run_file(runs_root: str | Path, run_id: str) -> Path:
    """The per-run file of a stage whose outputs are ``<runs_root>/<cohort>/<stem>.parquet`` (run_id = cohort/stem)."""
    return Path(runs_root) / f"{run_id}.parquet"


def run_files(runs: pd.DataFrame, runs_root: str | Path) -> dict[str, list[Path]]:
    """Per-run files ``<runs_root>/<run_id>.parquet`` grouped by subject ("cohort/subject")."""
    return {f"{cohort}/{subject}": [run_file(runs_root, r) for r in ids]
            for (cohort, subject), ids in subject_groups(runs).items()}


def read_splits(path: str | Path) -> pd.DataFrame:
    """A split table (TSV, one row per run; every column as a string): an unreadable file, or one without the columns
    run_id, cohort, subject, session, run and split, is an error naming it."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read split table ({exc})") from exc
    missing = {"run_id", "cohort", "subject", "session", "run", "split"} - set(table.columns)
    if missing:
        raise InputError(f"{path}: split table lacks column(s) {sorted(missing)}")
    return table


def run_splits(samples_path: str | Path, out: str | Path, seed: int, fractions: dict[str, float],
               pretraining_cohort: str | None, pretraining_fraction: float, stratify: dict[str, str] | None = None,
               phenotypes_path: str | Path | None = None, label_types: dict[str, str] | None = None,
               only: str | None = None) -> pd.DataFrame:
    """The ``splits`` stage: the sample sheet (+ phenotypes when stratifying) -> the split table TSV.

    With ``only`` (a split name), the table of that split's runs alone: the workflow gives each stage that reads
    one split (scaling and group FC: ``pretrain``; the shards of each split) such a table of its own, rewritten only
    when that split's runs change, so that a new downstream subject never touches the pretraining set's stages.
    """
    from brainjepa.io import write_tsv_atomic

    samples = sheets.load_samples(samples_path, produced=lambda p: True)
    phenotypes = None
    if stratify:
        if not phenotypes_path:
            raise InputError(f"stratified splits ({stratify}) need the phenotypes sheet")
        phenotypes = sheets.load_phenotypes(phenotypes_path, label_types or None)
    table = make_splits(samples, seed, fractions, pretraining_cohort, pretraining_fraction, stratify or {},
                        phenotypes)
    if only is not None:
        table = table[table["split"] == only]
        if table.empty:
            raise InputError(f"{samples_path}: no run is in split '{only}' (splits.fractions and the pretraining "
                             "cohort decide the splits; `brainjepa validate --config` prints their counts)")
    write_tsv_atomic(table, out)
    return table


def run_split_balance(splits_path: str | Path, phenotypes_path: str | Path, label_types: dict[str, str],
                      out: str | Path) -> None:
    """The splits stage's balance report: subjects per split for every discrete label -> TSV."""
    from brainjepa.io import write_tsv_atomic

    phenotypes = sheets.load_phenotypes(phenotypes_path, label_types)
    discrete = [name for name, kind in label_types.items() if kind != "continuous"]
    write_tsv_atomic(balance_table(read_splits(splits_path), phenotypes, discrete), out)
