"""The result record of an evaluation job: one typed record, written by one function (:meth:`Record.write`).

A (task, method, seed) of the harness (:mod:`.run`) -> ``results/evaluate/.../seed<k>.json``; a (capability,
method, seed) (:mod:`brainjepa.capabilities`) -> ``results/capabilities/<name>/<method>/seed<k>.json``
(docs/formats.md). The metrics tables (:mod:`.summary`) read them by key.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# the fields every record writes, in this order; a capability's record is exactly these (KEYS)
ORDER = ("task", "kind", "method", "seed", "cohorts", "label", "source", "n_subjects", "val", "test", "per_subject",
         "details", "selected", "seconds")


@dataclass(frozen=True)
class Record:
    """One result. ``n_subjects``: {train, val, test}; ``val``/``test``: metric -> value (over the test subjects);
    ``per_subject``: metric -> one value per test subject; ``details``: the capability's curves and settings;
    ``selected``: what was selected on validation ({epoch, history, ...}); ``seconds``: the job's wall time.
    ``extra``: a task's own fields (:mod:`.run`: encoder, protocol, readout, window, target scaling or classes,
    predictions, resampling splits, ...), written after the shared ones; a task's record has no ``per_subject``
    or ``details`` (None: not written)."""

    task: str
    kind: str
    method: str
    seed: int
    cohorts: list[str]
    label: str | None
    source: Any
    n_subjects: dict[str, Any]
    val: dict[str, Any]
    test: dict[str, Any]
    per_subject: dict[str, list[float]] | None
    details: dict[str, Any] | None
    selected: dict[str, Any]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as its JSON object (a deep copy)."""
        shared = {k: getattr(self, k) for k in ORDER if not (k in ("per_subject", "details") and
                                                                 getattr(self, k) is None)}
        return copy.deepcopy({**shared, **self.extra})

    def write(self, out: str | Path) -> dict[str, Any]:
        """Write the record as JSON at ``out`` (atomically); returns :meth:`to_dict`."""
        from brainjepa.io import write_text_atomic

        record = self.to_dict()
        write_text_atomic(out, json.dumps(record, indent=1, default=_plain) + "\n")
        return record


KEYS = frozenset(ORDER)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def settings_dict(cfg) -> dict[str, Any]:
    """A settings dataclass as the record's ``details.settings`` (tuples as lists)."""
    from dataclasses import asdict

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
