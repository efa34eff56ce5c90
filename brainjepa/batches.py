"""Batches of runs: the per-run stages (simulate_run, parcellate, align_tr) run one job per batch, not per run.

Snakemake spends about 0.6 s on every job (on 2 cores: 64 align_tr jobs took 40 s, most of it Python and pandas
imports), so a cohort of hundreds of runs needs many runs per job. A batch is a set of subjects of one cohort.
The parcellate and align_tr batch jobs declare only a stamp (:func:`write_stamp`) and the workflow has a rule per
run beside them, so any single run file is still a target. A bad run fails its batch's job after the other runs
of the batch are written, and the error names every bad run.

A subject's batch is a pure function of (cohort, subject) and the cohort's number of batches n: the index
floor(n * u), u uniform in [0, 1) from the SHA-256 of the identifiers (as the splits do). All runs of a subject
share a batch, and adding subjects never moves an existing run, so new subjects rerun only the batches they join.
Changing a cohort's n reshuffles that cohort (its batches rerun).

The pretraining cohort's held-out subjects are batched apart from its pretraining set (names ``<cohort>-hNN``
beside ``<cohort>-bNN``; each part gets n batches). The group statistics and the pretraining shards read only
pretraining runs, so adding a held-out subject reruns no job that feeds them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pandas as pd

from brainjepa.errors import InputError

PRETRAINING_PART, HELD_OUT_PART = "b", "h"
BATCH_NAME = re.compile(r"^(?P<cohort>[A-Za-z0-9]+)-(?P<part>[bh])(?P<index>\d+)$")
T = TypeVar("T")
log = logging.getLogger("brainjepa")


def batch_of(cohort: str, subject: str, n_batches: int) -> int:
    """The batch index (0 .. n_batches - 1) of a subject: floor(n * u), u from SHA-256("batch", cohort, subject)."""
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 1:
        raise ValueError(f"the number of batches must be a positive integer, got {n_batches!r}")
    digest = hashlib.sha256("\x1f".join(("batch", str(cohort), str(subject))).encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return min(int(u * n_batches), n_batches - 1)


def batch_name(cohort: str, index: int, n_batches: int, held_out: bool = False) -> str:
    """``<cohort>-bNN`` (``-hNN`` for the pretraining cohort's held-out subjects), zero-padded to n's digits."""
    width = max(2, len(str(n_batches - 1)))
    return f"{cohort}-{HELD_OUT_PART if held_out else PRETRAINING_PART}{index:0{width}d}"


def n_batches_of(cohort: str, batching: dict) -> int:
    """The configured number of batches of a cohort (config ``batching``: ``default`` and per-cohort counts)."""
    return int(batching.get("cohorts", {}).get(cohort, batching["default"]))


def assign_batches(split_table: pd.DataFrame, batching: dict,
                   pretraining_cohort: str | None = None) -> dict[str, list[str]]:
    """The non-empty batches of a split table: {batch name: [run_id, ...]}, both sorted.

    split_table: columns run_id, cohort, subject, split (brainjepa.group.splits.make_splits). Subjects of
    ``pretraining_cohort`` outside the ``pretrain`` split are the held-out part (``<cohort>-hNN``).
    """
    batches: dict[str, list[str]] = {}
    for row in split_table[["run_id", "cohort", "subject", "split"]].itertuples(index=False):
        n = n_batches_of(row.cohort, batching)
        held_out = row.cohort == pretraining_cohort and row.split != "pretrain"
        name = batch_name(row.cohort, batch_of(row.cohort, row.subject, n), n, held_out)
        batches.setdefault(name, []).append(row.run_id)
    return {name: sorted(batches[name]) for name in sorted(batches)}


def rule_name(stage: str, batch: str) -> str:
    """The Snakemake rule of one stage and batch: ``parcellate_ukbsim_b03`` (rule names are identifiers)."""
    return f"{stage}_{batch.replace('-', '_')}"


def content_digest(*parts) -> str:
    """A short SHA-256 of JSON-serialisable parts (a batch's sheet rows, labels, settings): 16 hex digits.

    A rule parameter holding it reruns the batch's job exactly when its own rows change.
    """
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def select_runs(samples: pd.DataFrame, run_ids: Iterable[str] | None, source: str) -> pd.DataFrame:
    """The rows of ``run_ids`` (all rows when None) of a sample sheet indexed by run_id, in the order given.

    A run id the sheet lacks is an error naming it and the sheet ``source``.
    """
    if run_ids is None:
        return samples
    run_ids = list(run_ids)
    missing = [r for r in run_ids if r not in samples.index]
    if missing:
        raise InputError(f"{source}: no row for run {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                     if len(missing) > 1 else ""))
    return samples.loc[run_ids]


@contextmanager
def naming_run(run_id: str) -> Iterator[None]:
    """Re-raise an error of one run's processing with the run named first (a batch job processes many)."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"run {run_id}: {exc}") from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise RuntimeError(f"run {run_id}: {type(exc).__name__}: {exc}") from exc


def for_each_run(items: list[tuple[str, T]], process: Callable[[T], object], stage: str) -> None:
    """Call ``process(item)`` for each (run_id, item), logging each run and naming it in any error.

    A run that fails does not stop the others: every run is tried, then one bad run's error is raised as it was,
    and several are raised together as one InputError naming each (the first five in full)."""
    failures: list[Exception] = []
    for i, (run_id, item) in enumerate(items, start=1):
        log.info("%s %d/%d: %s", stage, i, len(items), run_id)
        try:
            with naming_run(run_id):
                process(item)
        except (InputError, RuntimeError) as exc:
            log.info("%s %d/%d: %s failed; going on with the batch's other runs", stage, i, len(items), run_id)
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        shown = "; ".join(str(e) for e in failures[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise InputError(f"{len(failures)} of {len(items)} runs failed ({stage}): {shown}{more}")


def write_stamp(path, files: list) -> None:
    """The stamp of a finished batch: a TSV of every file it wrote (``file``, ``bytes``), written atomically once
    all of them exist. Downstream rules depend on a batch's stamp instead of its many per-run files, so that the
    workflow graph resolves one file per batch, not one per run (Snakemake looks each input up among the
    producing rule's outputs, which costs the batch size per lookup)."""
    import os

    from brainjepa.io import write_tsv_atomic

    missing = [str(f) for f in files if not os.path.isfile(f)]
    if missing:
        raise InputError(f"{path}: the batch did not write {len(missing)} of its files, e.g. {missing[0]}")
    write_tsv_atomic(pd.DataFrame({"file": [str(f) for f in files], "bytes": [os.path.getsize(f) for f in files]}),
                     path)
    _remove_stale_stamps(path)


def _remove_stale_stamps(path) -> None:
    """Remove the stamps of the same batch with another run-list digest (``<batch>-<8 hex>.tsv`` beside ``path``):
    the batch's earlier run lists."""
    from pathlib import Path

    path = Path(path)
    match = re.fullmatch(r"(.+)-[0-9a-f]{8}\.tsv", path.name)
    if not match:
        return
    for other in path.parent.glob(f"{match[1]}-*.tsv"):
        if other != path and re.fullmatch(re.escape(match[1]) + r"-[0-9a-f]{8}\.tsv", other.name):
            other.unlink(missing_ok=True)
