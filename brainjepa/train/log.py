"""The training curve: one CSV row every ``run.log_every`` optimizer steps, cut back to the step resumed from."""

from __future__ import annotations

import csv
from pathlib import Path

LOG_COLUMNS = ["step", "epoch", "loss", "loss_alpha", "loss_beta", "loss_gamma", "lr", "weight_decay",
               "momentum", "target_std", "samples_per_s", "elapsed_s", "regularizer"]


class CSVLog:
    """Append-only CSV of the training curve; a resume first drops the rows after its step (:func:`truncate_log`)."""

    def __init__(self, path: Path, active: bool, columns: list[str] = LOG_COLUMNS):
        self.path, self.active, self.columns = path, active, columns
        if active and not path.exists():
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(columns)
        elif active:
            _migrate_header(path, columns)

    def write(self, row: dict) -> None:
        if self.active:
            with open(self.path, "a", newline="") as fh:
                csv.writer(fh).writerow([_fmt(row.get(c)) for c in self.columns])


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows beyond the resumed step (written after the checkpoint by the interrupted run)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(kept)


def _migrate_header(path: Path, columns: list[str]) -> None:
    """A log written with other columns (a resumed run of an older brainjepa): rewritten with ``columns``, the
    cells of a column it lacks empty, so that every row keeps the header's width."""
    with open(path, newline="") as fh:
        if next(csv.reader(fh), []) == columns:
            return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([[row.get(c) or "" for c in columns] for row in rows])
