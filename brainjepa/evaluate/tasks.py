"""Downstream tasks: which subjects, which label, which kind; their evaluation windows and targets.

A task (config ``evaluate.tasks.<name>``) names its cohort(s), a label column of the phenotypes sheet (carried
in the shards), its kind (``regression``, ``binary``, ``multiclass``) and which subjects count (``include``:
label -> allowed values, e.g. only cognitively normal subjects for an amyloid task). Subjects come with the
workflow's subject-level splits (``train``/``val``/``test`` shard sets), so no subject is in two splits.

Windows: every non-overlapping window of ``window`` time steps from time 0 of every run (deterministic; a run
shorter than one window was left out of the shards). Training uses every window of a training subject as one
sample with the subject's label; a subject's prediction is the mean over all its windows (and runs).

Targets: regression labels are z-scored with the mean and std of the *training subjects* (one value per
subject, not per window); metrics are also given in original units. Binary tasks map ``positive`` (default
1) to class 1 and the other value to 0; multi-class tasks number the sorted values of the training subjects.

External test cohorts (``test_cohorts``): the task trains and selects on the subjects of ``cohorts`` (their
train and val splits) and tests on every labelled subject of ``test_cohorts`` (all of their train/val/test
subjects, which pretraining never saw); the training cohorts' own test split is not used.

Repeated subject-level splits (:class:`Resampling`, :func:`resample_splits`): instead of the workflow's one split,
``kfold`` (``folds`` x ``repeats``: every subject tested once per repeat) or ``random`` (``splits`` random
train/test splits of ``test_fraction``), stratified by class for classification; in each, a ``val_fraction`` of
the training subjects (by a stable hash of the subject and the split, each class in proportion) is the
validation that selects. With external test cohorts, the resampling draws training and validation subjects of
the training cohorts (a k-fold's held-out fold is its validation) and every split tests the external cohorts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from brainjepa.config import from_mapping
from brainjepa.errors import InputError

Kind = Literal["regression", "binary", "multiclass"]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TaskConfig:
    """One downstream task (config ``evaluate.tasks.<name>``, module docstring): its cohorts, label column and kind, the
    positive class of a binary task, the label values a subject must have (``include``) and the external test
    cohorts."""

    name: str
    cohorts: tuple[str, ...]
    label: str
    kind: Kind
    positive: str | None = None               # binary: the label value that is class 1 (default "1")
    include: dict[str, list] = field(default_factory=dict)   # label -> allowed values
    test_cohorts: tuple[str, ...] = ()        # external test cohorts (module docstring)

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> TaskConfig:
        task = from_mapping(cls, {"name": name, **d}, f"evaluate.tasks.{name}")
        if not task.cohorts:
            raise InputError(f"evaluate.tasks.{name}: cohorts must list at least one cohort")
        both = sorted(set(task.cohorts) & set(task.test_cohorts))
        if both:
            raise InputError(f"evaluate.tasks.{name}: cohort(s) {both} are in both cohorts and test_cohorts")
        return task

    @property
    def all_cohorts(self) -> tuple[str, ...]:
        """The training cohorts, then the external test cohorts."""
        return (*self.cohorts, *self.test_cohorts)


@dataclass(frozen=True)
class Resampling:
    """How the frozen protocols and the FC baselines split a task's subjects (config ``evaluate.resampling``):
    ``fixed`` (the workflow's train/val/test split), ``kfold`` (``folds`` x ``repeats``) or ``random``
    (``splits`` random splits with ``test_fraction`` of the subjects tested); ``val_fraction`` of each split's
    training subjects select (module docstring). Brainmarks (MedARC, arXiv 2510.13768) uses 10 random
    subject-level splits: ``{scheme: random, splits: 10}``."""

    scheme: Literal["fixed", "kfold", "random"] = "fixed"
    folds: int = 5
    repeats: int = 2
    splits: int = 10
    test_fraction: float = 0.2
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        for name, least in (("folds", 2), ("repeats", 1), ("splits", 1)):
            if getattr(self, name) < least:
                raise InputError(f"evaluate.resampling.{name} must be at least {least}, got {getattr(self, name)}")
        for name in ("test_fraction", "val_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise InputError(f"evaluate.resampling.{name} must be in (0, 1), got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Resampling:
        return from_mapping(cls, d or {}, "evaluate.resampling")

    @property
    def count(self) -> int:
        """Splits per evaluation: 1 (fixed), folds x repeats (kfold) or splits (random)."""
        return {"fixed": 1, "kfold": self.folds * self.repeats, "random": self.splits}[self.scheme]


@dataclass
class TaskWindows:
    """The windows of one task. Per window (N): key (run_id, start), split, subject ("cohort/subject"),
    target (z-scored float, or class index); ``data`` [N, R, window] float32 when loaded: a :class:`ShardWindows`
    (:func:`load_task`), which reads windows from the shards as they are indexed, or an array."""

    task: TaskConfig
    run_id: np.ndarray
    start: np.ndarray
    split: np.ndarray
    subject: np.ndarray
    target: np.ndarray
    raw: np.ndarray                            # the label in original units / values
    classes: list[str]                         # classification: class names in index order
    mean: float = 0.0                          # regression: training subjects' mean and std
    std: float = 1.0
    data: ShardWindows | np.ndarray | None = None
    roi_names: list[str] = field(default_factory=list)
    runs: Sequence[np.ndarray] = field(default_factory=list)   # with data: each window's whole run [R, T_run]

    def jittered(self, index: np.ndarray, seed: int, epoch: int) -> np.ndarray:
        """Training-time temporal jitter: for windows ``index`` [B], a window of the same length from a random
        start in each one's run -> [B, R, window] float32: the pretraining loader's train-mode draw
        (:func:`brainjepa.data.schedule.window_starts`, from seed, epoch and the window's key), as the public
        code samples; evaluation keeps the deterministic windows."""
        from brainjepa.data.schedule import window_starts

        if self.data is None or not len(self.runs):
            raise InputError(f"task {self.task.name}: temporal jitter needs the windows' runs (with_data)")
        window = self.data.shape[-1]
        out = np.empty((len(index),) + tuple(self.data.shape[1:]), dtype=np.float32)
        for k, i in enumerate(np.asarray(index)):
            run = self.runs[int(i)]
            (start,) = window_starts(run.shape[1], window, mode="train", seed=seed, epoch=epoch,
                                     run_id=f"{self.run_id[i]}@{self.start[i]}")
            out[k] = run[:, start:start + window]
        return out

    def mask(self, split: str) -> np.ndarray:
        return self.split == split

    def resplit(self, split: np.ndarray) -> TaskWindows:
        """A view with other per-window splits ``split`` [N] (train / val / test, or "" for windows left out):
        a regression's targets z-scored again with its training subjects; the classes and their indices kept
        (a class without a training subject in one split is predicted with probability 0 there)."""
        import dataclasses

        out = dataclasses.replace(self, split=np.asarray(split))
        if self.task.kind == "regression":
            train = out.split == "train"
            values = self.target * self.std + self.mean
            per_subject = pd.Series(values[train]).groupby(self.subject[train]).first()
            out.mean = float(per_subject.mean())
            out.std = float(per_subject.std(ddof=0)) or 1.0
            out.target = (values - out.mean) / out.std
        return out

    @property
    def n_outputs(self) -> int:
        return 1 if self.task.kind == "regression" else len(self.classes)

    def counts(self) -> dict[str, int]:
        """Subjects per split."""
        return {s: int(len(set(self.subject[self.split == s]))) for s in SPLITS}


def value_text(value) -> str:
    """A label value as text: 1.0 -> "1", "M" -> "M" (how ``positive`` and ``include`` are compared)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def task_subjects(task: TaskConfig, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``rows`` (runs or subjects, with columns cohort, the task's label and its ``include`` labels) that
    count for the task: of its cohorts (and test cohorts), allowed by ``include``, with a label."""
    rows = rows[rows["cohort"].isin(task.all_cohorts)]
    for column, allowed in task.include.items():
        keep = {value_text(v) for v in allowed}
        rows = rows[[pd.notna(v) and value_text(v) in keep for v in rows[column]]]
    return rows[rows[task.label].notna()]


def task_splits(task: TaskConfig, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (with cohort and split columns) with the task's view of the splits: without external test
    cohorts unchanged; with them, every row of a test cohort is ``test`` and the training cohorts' test rows are
    left out (module docstring)."""
    if not task.test_cohorts:
        return rows
    external = rows["cohort"].isin(task.test_cohorts)
    rows = rows[external | (rows["split"] != "test")].copy()
    rows.loc[rows["cohort"].isin(task.test_cohorts), "split"] = "test"
    return rows


def task_split_problems(task: TaskConfig, subjects: pd.DataFrame) -> list[str]:
    """What keeps a task from being trained, selected and tested on ``subjects`` (one row per subject: cohort,
    subject, split and the labels), each problem a message naming the task, the split and the counts: a split of
    train/val/test without a labelled subject; for a classification, a training split of fewer than two classes,
    a binary label without exactly two values (or without its ``positive`` one), and multiclass values that no
    training subject has.

    The workflow checks the sheets with it when it starts (the split table and the phenotypes), and
    :func:`load_task` the task's windows, so a problem knowable from the sheets stops the run before any job."""
    if task.label not in subjects.columns:
        return [f"task {task.name}: no label column '{task.label}'"]
    rows = task_splits(task, task_subjects(task, subjects).drop_duplicates(["cohort", "subject"]))
    counts = {s: int((rows["split"] == s).sum()) for s in SPLITS}
    where = f"labelled subjects of cohort(s) {', '.join(task.cohorts)}: " + ", ".join(
        f"{s} {n}" for s, n in counts.items())
    if task.test_cohorts:
        where += f" (test: every subject of test cohort(s) {', '.join(task.test_cohorts)})"
    problems = [f"task {task.name}: no labelled subject in split '{s}' ({where})" for s, n in counts.items() if n == 0]
    if task.kind == "regression" or problems:
        return problems

    def classes(split: str | None) -> dict[str, int]:
        chosen = rows if split is None else rows[rows["split"] == split]
        return {str(k): int(v) for k, v in chosen[task.label].map(value_text).value_counts().sort_index().items()}

    def show(counted: dict[str, int]) -> str:
        return ", ".join(f"{value!r}: {n}" for value, n in counted.items())

    train, every = classes("train"), classes(None)
    if len(every) < 2 and task.kind == "multiclass":
        problems.append(f"task {task.name}: a classification needs at least 2 values, '{task.label}' has "
                        f"{len(every)} ({show(every)} subjects)")
    elif len(train) < 2 and len(every) >= 2:
        fix = (f"stratify the cohort's splits by the label (splits.stratify: {{{task.cohorts[0]}: {task.label}}}) "
               "or add subjects")
        problems.append(f"task {task.name}: the training split holds {len(train)} class of '{task.label}' "
                        f"({show(train)} subjects), a classifier needs at least 2 ({show(every)} in all "
                        f"splits); {fix}")
    if task.kind == "binary":
        positive = task.positive if task.positive is not None else "1"
        if len(every) != 2:
            problems.append(f"task {task.name}: a binary label needs exactly 2 values, '{task.label}' has "
                            f"{len(every)} ({show(every)} subjects); declare the task multiclass, or restrict "
                            "its subjects with include")
        elif positive not in every:
            problems.append(f"task {task.name}: positive value {positive!r} is not among the values of "
                            f"'{task.label}' ({show(every)} subjects)")
    elif len(train) >= 2:
        stray = {k: n for k, n in every.items() if k not in train}
        if stray:
            problems.append(f"task {task.name}: value(s) of '{task.label}' without a training subject "
                            f"({show(stray)} subjects in val/test): a classifier cannot predict them")
    return problems


WINDOW_CACHE_BYTES = 8 << 20      # ShardWindows: decoded row groups kept for the next reads (bytes, as stored)


class ShardWindows:
    """Evaluation windows read from the shards when asked for, instead of held in memory: per window (N) its
    shard (an index into ``shards``: (manifest path, manifest entry)), its row in that shard and its start.

    ``store[i]`` -> [R, window] float32; ``store[index]`` (integers, a boolean mask, a slice, a tensor of
    indices) -> [B, R, window] float32, in the order asked for; :meth:`take` a view of some windows (nothing
    read); :meth:`run` a window's whole run [R, T_run] float32; ``np.asarray(store)`` every window [N, R, window]
    (what the in-memory readers held). The values are those of the in-memory readers: the stored matrix
    (float16 or float32), cut to the window, as float32.

    A read decodes the row group holding the row (a Parquet row group, or a tar shard's group of the manifest's
    ``rows_per_row_group`` samples) and keeps the last decoded groups up to ``cache_bytes``, so reading windows
    in shard order decodes every group once and the memory held is one batch plus the cache, whatever the
    number of windows. Each shard's sha256 is checked against its manifest entry once per process, before its
    first read (:func:`brainjepa.data.shards.verify_shard`; a listing by :func:`read_split` has checked it).
    """

    def __init__(self, shards: list[tuple[Path, dict]], shard: np.ndarray, row: np.ndarray, start: np.ndarray,
                 n_rois: int, window: int, dtype: str, group_size: int | None,
                 cache_bytes: int = WINDOW_CACHE_BYTES):
        self.shards = shards
        self.shard, self.row, self.start = (np.asarray(a, dtype=np.int64) for a in (shard, row, start))
        self.n_rois, self.window, self.dtype, self.group_size = int(n_rois), int(window), dtype, group_size
        self.cache_bytes = int(cache_bytes)
        self._state = {"groups": {}, "bounds": {}, "files": {}}   # shared by the views of one store

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.shard), self.n_rois, self.window)

    def __len__(self) -> int:
        return len(self.shard)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)

    def _index(self, key) -> np.ndarray:
        if isinstance(key, slice):
            return np.arange(len(self))[key]
        key = np.asarray(key.cpu() if hasattr(key, "cpu") else key)
        return np.flatnonzero(key) if key.dtype == bool else key.astype(np.int64).reshape(-1)

    def take(self, key) -> ShardWindows:
        """A view of the windows ``key`` (indices, a boolean mask or a slice), reading through this store's cache."""
        index = self._index(key)
        out = object.__new__(ShardWindows)
        out.__dict__.update(self.__dict__)
        out.shard, out.row, out.start = self.shard[index], self.row[index], self.start[index]
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._read(np.array([int(key)]))[0]
        return self._read(self._index(key))

    def run(self, i: int) -> np.ndarray:
        """Window ``i``'s whole run [R, T_run] float32."""
        return np.asarray(self._matrix(int(self.shard[i]), int(self.row[i])), dtype=np.float32)

    @property
    def runs(self) -> _Runs:
        """Each window's whole run, read when indexed: ``store.runs[i]`` is ``store.run(i)``."""
        return _Runs(self)

    def _read(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), self.n_rois, self.window), dtype=np.float32)
        for k, i in enumerate(index):
            s0 = int(self.start[i])
            out[k] = self._matrix(int(self.shard[i]), int(self.row[i]))[:, s0:s0 + self.window]
        return out

    def _matrix(self, shard: int, row: int) -> np.ndarray:
        """The stored [R, T] matrix of a shard's row, from its decoded group."""
        bounds = self._bounds(shard)
        group = int(np.searchsorted(bounds, row, side="right")) - 1
        return self._group(shard, group)[row - int(bounds[group])]

    def _bounds(self, shard: int) -> np.ndarray:
        """The first row of each group of a shard, and its row count: [groups + 1]."""
        state = self._state
        if shard not in state["bounds"]:
            entry = self.shards[shard][1]
            if self.group_size is not None:
                sizes = [self.group_size] * (int(entry["rows"]) // self.group_size)
                sizes += [int(entry["rows"]) % self.group_size] if int(entry["rows"]) % self.group_size else []
            else:
                meta = self._open(shard).metadata
                sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            state["bounds"][shard] = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        return state["bounds"][shard]

    def _open(self, shard: int):
        """The shard's reader (a ``pyarrow.parquet.ParquetFile`` or a ``TarShardReader``), its sha256 checked first."""
        from brainjepa.data.shards import verify_shard

        files = self._state["files"]
        if shard not in files:
            manifest_path, entry = self.shards[shard]
            path = Path(manifest_path).parent / entry["path"]
            verify_shard(path, entry["sha256"], manifest_path)
            try:
                if self.group_size is not None:
                    from brainjepa.data.tar_shards import TarShardReader

                    files[shard] = TarShardReader(path, int(entry["rows"]), self.group_size,
                                                  where=f"{path} (listed in {manifest_path})")
                else:
                    import pyarrow.parquet as pq

                    files[shard] = pq.ParquetFile(path)
            except OSError as exc:
                raise InputError(f"{path}: cannot read shard ({exc}); listed in {manifest_path}") from exc
            while len(files) > 4:                       # a few open files: the reads go shard by shard
                stale = files.pop(next(iter(files)))
                if hasattr(stale, "close"):
                    stale.close()
        return files[shard]

    def _group(self, shard: int, group: int) -> list[np.ndarray]:
        """The stored [R, T] matrices of one group, decoded once and kept while the cache allows."""
        from brainjepa.data.manifest import DTYPES

        groups = self._state["groups"]
        key = (shard, group)
        if key in groups:
            groups[key] = groups.pop(key)                # most recently used last
            return groups[key]
        handle, dtype = self._open(shard), DTYPES[self.dtype]
        if self.group_size is not None:
            mats = [m for _, m in handle.read_group(group, dtype, self.n_rois)]
        else:
            table = handle.read_row_group(group, columns=["n_rois", "n_timepoints", "data"], use_threads=False)
            mats = [np.frombuffer(b, dtype).reshape(r, t) for b, r, t in
                    zip(table.column("data").to_pylist(), table.column("n_rois").to_pylist(),
                        table.column("n_timepoints").to_pylist())]
        groups[key] = mats
        held = sum(m.nbytes for g in groups.values() for m in g)
        while held > self.cache_bytes and len(groups) > 1:
            held -= sum(m.nbytes for m in groups.pop(next(iter(groups))))
        return mats


class _Runs(Sequence):
    """:attr:`ShardWindows.runs`: a sequence of the windows' whole runs [R, T_run] float32, each read when indexed."""

    def __init__(self, store: ShardWindows) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.store.run(k) for k in range(len(self))[i]]
        return self.store.run(int(i))


def read_split(manifest_path: str | Path, split: str, columns: list[str], with_data: bool,
               positions: bool = False) -> pd.DataFrame:
    """One split's shard rows (every shard of the manifest): the metadata ``columns``, or every column with
    ``data`` ([R, T] float32 per run) when ``with_data``; with ``positions`` also each row's place in the shards,
    ``_shard`` (its shard's index in the manifest's list of the split) and ``_row`` (its row in that shard), what
    :class:`ShardWindows` reads. Each shard's sha256 is checked against the manifest (once per process, whatever
    the columns: :func:`brainjepa.data.shards.read_listed_shard`)."""
    from brainjepa.data.shards import load_manifest, read_listed_shard

    manifest = load_manifest(manifest_path)
    frames = []
    for k, entry in enumerate(manifest["splits"].get(split, [])):
        frame = read_listed_shard(manifest_path, entry, manifest["dtype"], None if with_data else columns)
        if positions:
            frame["_shard"], frame["_row"] = k, np.arange(len(frame))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=columns + (["data"] if with_data else []) + (["_shard", "_row"] if positions
                                                                               else []))
    return pd.concat(frames, ignore_index=True)


def shard_windows(manifests: dict[str, str | Path], rows: pd.DataFrame, start: np.ndarray, window: int,
                  cache_bytes: int = WINDOW_CACHE_BYTES) -> ShardWindows:
    """The :class:`ShardWindows` of the windows of ``window`` steps whose runs are ``rows`` (one per window, with
    ``_source``, the split whose manifest lists the run, and :func:`read_split`'s ``_shard`` and ``_row``),
    starting at ``start`` [N]."""
    from brainjepa.data.shards import load_manifest

    shards, offset = [], {}
    first = load_manifest(manifests[SPLITS[0]])
    for split in SPLITS:
        manifest = load_manifest(manifests[split])
        offset[split] = len(shards)
        shards += [(Path(manifests[split]), entry) for entry in manifest["splits"].get(split, [])]
    tar = first["shard_format"] == "webdataset"
    shard = np.array([offset[s] for s in rows["_source"]], dtype=np.int64) + rows["_shard"].to_numpy(np.int64)
    return ShardWindows(shards, shard, rows["_row"].to_numpy(np.int64), start, len(first["roi_names"]),
                        window, first["dtype"],
                        int(first["rows_per_row_group"]) if tar else None, cache_bytes)


@dataclass
class SplitWindows:
    """The deterministic evaluation windows of one split: per window (N) ``subject`` ("cohort/subject"),
    ``run_id``, ``start``; ``data`` [N, R, window] float32; ``value`` [N] the label as text ("1.0" -> "1",
    "" where missing; empty without a label) and ``runs`` (each window's whole run [R, T_run]; empty unless
    asked for)."""

    subject: np.ndarray
    run_id: np.ndarray
    start: np.ndarray
    data: np.ndarray
    value: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    runs: list[np.ndarray] = field(default_factory=list)

    def jittered(self, span: int, seed: int, epoch: int) -> np.ndarray:
        """One stretch of ``span`` steps per window, from a random start in its run (drawn from seed, epoch
        and the window's key) -> [N, R, span] float32. Needs ``runs``."""
        from brainjepa.data.schedule import window_starts

        out = np.empty((len(self.runs), self.data.shape[1], span), dtype=np.float32)
        for i, run in enumerate(self.runs):
            (s0,) = window_starts(run.shape[1], span, mode="train", seed=seed, epoch=epoch,
                                  run_id=f"{self.run_id[i]}@{self.start[i]}")
            out[i] = run[:, s0:s0 + span]
        return out

    def whole_runs(self) -> list[np.ndarray]:
        """Each run once [R, T_run] float32 (a run with several windows is listed once). Needs ``runs``."""
        seen: dict[str, np.ndarray] = {}
        for run_id, run in zip(self.run_id, self.runs):
            seen.setdefault(str(run_id), np.asarray(run, dtype=np.float32))
        return list(seen.values())


def split_windows(manifests: dict, cohorts: list[str], window: int, splits: tuple[str, ...] = SPLITS,
                  label: str | None = None, keep_runs: bool = False,
                  skip_empty: bool = False) -> dict[str, SplitWindows]:
    """The cohorts' deterministic evaluation windows (every window from time 0, as the tasks read them) of
    each split in ``splits``: ``{split: SplitWindows}``; with ``label`` also each window's label as text, with
    ``keep_runs`` each window's whole run. A split without any window is an error naming its manifest, or left
    out of the result with ``skip_empty``."""
    from brainjepa.data.schedule import window_starts

    out = {}
    for split in splits:
        frame = read_split(manifests[split], split, [], True)
        if label is not None and label not in frame.columns:
            raise InputError(f"{manifests[split]}: shards lack label column {label!r} (add it to the workflow "
                             "config's labels)")
        frame = frame[frame["cohort"].isin(cohorts)]
        rows: dict[str, list] = {"subject": [], "run_id": [], "start": [], "data": [], "value": [], "runs": []}
        for _, row in frame.iterrows():
            run = np.asarray(row["data"], dtype=np.float32)
            value = "" if label is None or pd.isna(row[label]) else value_text(row[label])
            for s0 in window_starts(run.shape[1], window, mode="eval"):
                rows["subject"].append(f"{row['cohort']}/{row['subject']}")
                rows["run_id"].append(row["run_id"])
                rows["start"].append(s0)
                rows["data"].append(run[:, s0:s0 + window])
                if label is not None:
                    rows["value"].append(value)
                if keep_runs:
                    rows["runs"].append(run)
        if not rows["data"] and skip_empty:
            continue
        if not rows["data"]:
            raise InputError(f"{manifests[split]}: no run of cohort(s) {list(cohorts)} with a full window of "
                             f"{window} time steps in split '{split}'")
        out[split] = SplitWindows(np.array(rows["subject"]), np.array(rows["run_id"]), np.array(rows["start"]),
                                  np.stack(rows["data"]), np.array(rows["value"], dtype=str), rows["runs"])
    return out


def load_task(task: TaskConfig, manifests: dict[str, str | Path], window: int, with_data: bool = False) -> TaskWindows:
    """The task's windows from the per-split shard sets ``{split: manifest path}`` (train, val, test); with
    ``with_data`` their ``data``, a :class:`ShardWindows` that reads them from the shards when asked for (the
    task's windows are never all in memory at once)."""
    from brainjepa.data.schedule import window_starts
    from brainjepa.data.shards import load_manifest

    missing = [s for s in SPLITS if s not in manifests]
    if missing:
        raise InputError(f"task {task.name}: no shard manifest for split(s) {missing}")
    needed = [task.label, *task.include]
    columns = ["run_id", "cohort", "subject", "split", "n_timepoints", *dict.fromkeys(needed)]
    rows = []
    for split in SPLITS:
        frame = read_split(manifests[split], split, columns, False, positions=with_data)
        frame["_source"] = split
        absent = [c for c in needed if c not in frame.columns]
        if absent:
            raise InputError(f"{manifests[split]}: shards lack label column(s) {absent} of task {task.name} "
                             f"(add them to the workflow config's labels)")
        rows.append(task_subjects(task, frame))
    table = task_splits(task, pd.concat(rows, ignore_index=True)).reset_index(drop=True)
    unknown = sorted(set(task.all_cohorts) - set(table["cohort"]))
    if unknown:
        raise InputError(f"task {task.name}: cohort(s) {unknown} have no labelled subject in the "
                         f"train/val/test shards")
    windows = []
    for i, row in enumerate(table.itertuples(index=False)):
        for start in window_starts(int(row.n_timepoints), window, mode="eval"):
            windows.append((i, start))
    if not windows:
        raise InputError(f"task {task.name}: no run has a full window of {window} time steps")
    index = np.array([w[0] for w in windows])
    start = np.array([w[1] for w in windows])
    sub = table.iloc[index].reset_index(drop=True)
    subject = (sub["cohort"] + "/" + sub["subject"]).to_numpy()
    split = sub["split"].to_numpy()
    raw = sub[task.label].to_numpy()
    problems = task_split_problems(task, sub.drop_duplicates(["cohort", "subject"]))
    if problems:
        raise InputError("; ".join(problems) + " (in the train/val/test shards, runs of a full window only)")
    out = TaskWindows(task, sub["run_id"].to_numpy(), start, split, subject, np.zeros(len(sub)), raw, [])
    _set_targets(out)
    if with_data:
        out.data = shard_windows(manifests, sub, start, window)
        out.runs = out.data.runs
        out.roi_names = list(load_manifest(manifests["train"])["roi_names"])
    return out


def _set_targets(w: TaskWindows) -> None:
    """Targets from the raw labels, with statistics from the training subjects only."""
    task, train = w.task, w.split == "train"
    if task.kind == "regression":
        try:
            values = w.raw.astype(float)
        except ValueError as exc:
            raise InputError(f"task {task.name}: label '{task.label}' is not numeric ({exc})") from None
        per_subject = pd.Series(values[train]).groupby(w.subject[train]).first()
        w.mean = float(per_subject.mean())
        w.std = float(per_subject.std(ddof=0)) or 1.0
        w.target = (values - w.mean) / w.std
        return
    text = np.array([value_text(v) for v in w.raw])
    if task.kind == "binary":
        values = sorted({str(t) for t in text})
        if len(values) != 2:
            raise InputError(f"task {task.name}: a binary label needs exactly 2 values, '{task.label}' has "
                             f"{values}")
        positive = task.positive if task.positive is not None else "1"
        if positive not in values:
            raise InputError(f"task {task.name}: positive value {positive!r} is not among {values}")
        negative = next(v for v in values if v != positive)
        w.classes = [negative, positive]
    else:
        w.classes = sorted({str(t) for t in text[train]})
        stray = sorted({str(t) for t in text} - set(w.classes))
        if stray:
            raise InputError(f"task {task.name}: value(s) {stray} of '{task.label}' have no training subject")
    lookup = {c: i for i, c in enumerate(w.classes)}
    w.target = np.array([lookup[t] for t in text], dtype=np.int64)


def resample_splits(w: TaskWindows, cfg: Resampling) -> list[tuple[str, np.ndarray]]:
    """The subject-level splits of :class:`Resampling` ``cfg`` (not ``fixed``) over the task's windows ``w``:
    ``[(name, split [N])]`` with each window's split (train / val / test, "" where left out), names ``r<repeat>f<fold>``
    (kfold) or ``s<k>`` (random). Every window of a subject is in one split; within one split no subject is in two
    parts. The subjects of external test cohorts are always the test part (module docstring)."""
    from brainjepa.evaluate.crossval import cv_folds, first_labelled

    if cfg.scheme == "fixed":
        raise ValueError("resample_splits: scheme 'fixed' is the task's own split")
    external = w.split == "test" if w.task.test_cohorts else np.zeros(len(w.split), bool)
    pool = np.unique(w.subject[~external])
    tested = np.unique(w.subject[external])
    first = {}
    for subject, target in zip(w.subject, w.target):
        first.setdefault(subject, target)
    target = np.array([first[s] for s in pool])
    kind = w.task.kind
    if len(pool) < 3:
        raise InputError(f"task {w.task.name}: {len(pool)} subject(s) to resample, at least 3 are needed")

    def carve(train: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(training, validation) subject indices: ``val_fraction`` of ``train`` by hash, classes in proportion."""
        n_val = min(len(train) - 1, max(1, int(round(cfg.val_fraction * len(train)))))
        val = first_labelled(train, pool, target, kind, n_val, seed)
        return np.setdiff1d(train, val), val

    parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []   # (name, train, val, test) pool indices
    none = np.array([], dtype=int)
    if cfg.scheme == "kfold":
        for repeat, folds in enumerate(cv_folds(target, kind, cfg.folds, cfg.repeats)):
            for fold, (train, held) in enumerate(folds):
                if len(tested):       # external test: the held-out fold selects
                    parts.append((f"r{repeat}f{fold}", train, held, none))
                else:
                    tr, va = carve(train, repeat * cfg.folds + fold)
                    parts.append((f"r{repeat}f{fold}", tr, va, held))
    else:
        from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

        fraction = cfg.val_fraction if len(tested) else cfg.test_fraction
        stratify = kind != "regression" and np.bincount(target.astype(int)).min(initial=len(pool)) >= 2
        splitter = (StratifiedShuffleSplit if stratify else ShuffleSplit)(cfg.splits, test_size=fraction,
                                                                          random_state=0)
        for k, (train, held) in enumerate(splitter.split(np.zeros(len(pool)), target if stratify else None)):
            if len(tested):
                parts.append((f"s{k}", np.sort(train), np.sort(held), none))
            else:
                tr, va = carve(np.sort(train), k)
                parts.append((f"s{k}", tr, va, np.sort(held)))
    out = []
    for name, train, val, test in parts:
        of_subject = {pool[i]: "train" for i in train} | {pool[i]: "val" for i in val}
        of_subject |= {pool[i]: "test" for i in test} | {s: "test" for s in tested}
        out.append((name, np.array([of_subject.get(s, "") for s in w.subject], dtype=object)))
    return out


def subject_mean(subject: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average per subject: subject [N], values [N] or [N, C] -> (sorted subjects [S], means [S] / [S, C])."""
    order = np.unique(subject)
    position = {s: i for i, s in enumerate(order)}
    idx = np.array([position[s] for s in subject])
    values = np.asarray(values, dtype=float)
    sums = np.zeros((len(order),) + values.shape[1:])
    np.add.at(sums, idx, values)
    counts = np.bincount(idx, minlength=len(order)).reshape((-1,) + (1,) * (values.ndim - 1))
    return order, sums / counts


def class_weights(target: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced class weights [C] from training targets [N] (class indices): ``N / (C x count_c)``, as
    scikit-learn's ``class_weight="balanced"``; a class without a training sample gets weight 0."""
    counts = np.bincount(np.asarray(target, dtype=np.int64), minlength=n_classes).astype(float)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, counts.sum() / (n_classes * counts), 0.0)


def subject_loss(kind: str, subject: np.ndarray, target: np.ndarray, pred: np.ndarray,
                 class_weight: np.ndarray | None = None) -> float:
    """The selection criterion over subject-mean predictions: MSE (regression) or NLL (classification; with
    ``class_weight`` [C] the weighted mean of the subjects' NLL, each weighted by its class's weight)."""
    subjects, mean_pred = subject_mean(subject, pred)
    _, mean_target = subject_mean(subject, target.astype(float))
    if kind == "regression":
        return float(np.mean((mean_pred - mean_target) ** 2))
    label = mean_target.astype(int)
    nll = -np.log(np.clip(mean_pred[np.arange(len(subjects)), label], 1e-12, 1.0))
    weight = np.ones(len(label)) if class_weight is None else np.asarray(class_weight, float)[label]
    return float((weight * nll).sum() / weight.sum())


def cohort_windows(manifests: dict[str, str | Path], cohorts: list[str], window: int
                   ) -> tuple[np.ndarray, np.ndarray, ShardWindows, list[str]]:
    """Every evaluation window of the cohorts' train/val/test runs, labelled or not: (run_id [N], start [N],
    data [N, R, window] float32 as a :class:`ShardWindows` (read from the shards as indexed), ROI names), in
    split order, the order of :func:`split_windows`. What the feature cache of an encoder holds; a split without a
    run of the cohorts is skipped."""
    from brainjepa.data.schedule import window_starts
    from brainjepa.data.shards import load_manifest

    rows, starts = [], []
    for split in SPLITS:
        frame = read_split(manifests[split], split, ["run_id", "cohort", "n_timepoints"], False, positions=True)
        frame = frame[frame["cohort"].isin(cohorts)]
        for run_id, n_time, shard, row in zip(frame["run_id"], frame["n_timepoints"], frame["_shard"], frame["_row"]):
            for s0 in window_starts(int(n_time), window, mode="eval"):
                rows.append((run_id, split, shard, row))
                starts.append(s0)
    if not rows:
        raise InputError(f"cohort(s) {cohorts}: no run with a full window of {window} time steps in the "
                         "train/val/test shards")
    table = pd.DataFrame(rows, columns=["run_id", "_source", "_shard", "_row"])
    start = np.array(starts, dtype=np.int64)
    data = shard_windows(manifests, table, start, window)
    names = list(load_manifest(manifests["train"])["roi_names"])
    return table["run_id"].to_numpy(), start, data, names


def split_manifests(shards: str | Path) -> dict[str, Path]:
    """``{split: <shards>/<split>/manifest.json}`` for train, val and test (the workflow's layout)."""
    out = {s: Path(shards) / s / "manifest.json" for s in SPLITS}
    missing = [str(p) for p in out.values() if not p.exists()]
    if missing:
        raise InputError(f"shard manifest(s) missing: {missing}")
    return out
