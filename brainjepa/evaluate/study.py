"""The pretraining study: does pretraining beat random initialisation of the same encoder, on this cohort?

One study (``brainjepa pretraining-study``, docs/study.md) pretrains every training config of its study config
(:class:`StudyConfig`) for every pretraining seed and data fraction to a fixed budget of optimizer steps, and
evaluates the EMA target encoder of evenly spaced checkpoints (and step 0, the initialisation) against
several random initialisations of the first config's encoder and against the input's functional connectivity:

- features of every labelled window of every task (the train, val and test shard sets pooled: the study
  cross-validates over all held-out labelled subjects, not the fixed split; a task with external
  ``test_cohorts`` is skipped, the evaluate stage scores transfer), one row per subject (the mean of
  its windows' rows), with readouts ``mean`` (the mean over tokens [D]), ``roi`` (each ROI's tokens averaged over
  time, [R, D] flattened) and ``cross_roi`` (the Fisher-z correlation between ROIs of those ROI embeddings, over
  the feature dimension, upper triangle [R (R - 1) / 2]); for the raw input the same cross-ROI readout, FC
  (:func:`brainjepa.evaluate.baselines.fc_features`), as the reference row;
- the representation monitors of each encoder on the pretraining shards' ``monitor`` windows
  (:func:`brainjepa.train.monitors.representation_monitors`);
- closed-form probes in repeated cross-validation (:mod:`brainjepa.evaluate.crossval`), the same folds for every
  encoder, with ``label_counts`` labelled training subjects per fold;
- paired bootstraps over subjects of metric(pretrained) - metric(random seed s), for every random seed.

Outputs in the out-dir: ``study.tsv`` (one row per encoder x step x data fraction x label count x task x
readout), ``paired.tsv`` (one row per pretrained row x random seed x paired metric), ``study.md`` and
``study.png``; and ``runs/<config>_s<seed>_d<fraction>/`` (the pretraining runs), ``shards/d<fraction>/`` (the
pretraining shards of a data fraction below 1), ``configs/<config>.yaml`` (each resolved training config) and
``cache/`` (one JSON per evaluated encoder: its out-of-fold predictions and monitors, keyed by the sha256 of
its weights and the evaluation data). A rerun trains and extracts nothing that is there already.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainjepa.config import from_mapping
from brainjepa.errors import InputError
from brainjepa.evaluate.crossval import Protocol
from brainjepa.evaluate.features import READOUTS, Readout, readout_features

log = logging.getLogger("brainjepa.study")

FC = "fc"                                           # the input's cross-ROI readout: the reference row
PAIRED_METRICS = {"regression": ("r",), "binary": ("balanced_accuracy", "auroc"),
                  "multiclass": ("balanced_accuracy",)}
PRIMARY = {"regression": "r", "binary": "auroc", "multiclass": "balanced_accuracy"}
METRICS = ("r", "r2", "mae", "mse", "balanced_accuracy", "auroc", "accuracy", "f1")
MONITORS = ("rankme_pooled", "rankme_tokens", "input_share")
CACHE_VERSION = 1
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ROLES = ("pretrained", "random", "fc")


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class PretrainSpec:
    """One entry of ``configs``: a training config file and ``--set``-style overrides (``section.key=value``)."""

    config: str
    set: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        bad = [item for item in self.set if "=" not in item]
        if bad:
            raise InputError(f"override {bad[0]!r} must look like section.key=value")


@dataclass(frozen=True)
class StudyConfig:
    """A study (module docstring). ``label_counts``: positive integers and/or ``all``; ``data_fractions`` in
    (0, 1]; ``checkpoints``: evaluated checkpoints along the budget (besides step 0); ``monitor_windows``: at most
    this many monitor windows; ``batch_size``: windows per forward pass of feature extraction."""

    name: str
    configs: dict[str, PretrainSpec]
    budget_steps: int = 1440
    checkpoints: int = 4
    seeds: tuple[int, ...] = (0,)
    random_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    data_fractions: tuple[float, ...] = (1.0,)
    label_counts: tuple = ("all",)
    readouts: tuple[Readout, ...] = READOUTS
    cv: Protocol = field(default_factory=Protocol)
    bootstrap: int = 2000
    bootstrap_seed: int = 0
    monitor_windows: int = 512
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name, least in (("budget_steps", 1), ("checkpoints", 1), ("bootstrap", 1), ("monitor_windows", 2),
                            ("batch_size", 1)):
            if getattr(self, name) < least:
                raise InputError(f"config '{name}' must be at least {least}, got {getattr(self, name)}")
        for name in ("seeds", "random_seeds", "data_fractions", "readouts"):
            values = getattr(self, name)
            if not values:
                raise InputError(f"config '{name}' must list at least one value")
            if len(set(values)) != len(values):
                raise InputError(f"config '{name}' lists a value twice: {list(values)}")
        if any(s < 0 for s in (*self.seeds, *self.random_seeds)):
            raise InputError("config 'seeds' and 'random_seeds' must be >= 0")
        if not all(0 < f <= 1 for f in self.data_fractions):
            raise InputError(f"config 'data_fractions' must be in (0, 1], got {list(self.data_fractions)}")
        object.__setattr__(self, "data_fractions", tuple(sorted(self.data_fractions)))
        counts = self.label_counts
        if isinstance(counts, (str, int)) or not isinstance(counts, (list, tuple)) or not counts:
            raise InputError(f"config 'label_counts' must be a list of positive integers and/or 'all', got {counts!r}")
        for n in counts:
            if n != "all" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise InputError(f"config 'label_counts': {n!r} is neither a positive integer nor 'all'")
        if len(set(counts)) != len(counts):
            raise InputError(f"config 'label_counts' lists a value twice: {list(counts)}")
        ordered = sorted(n for n in counts if n != "all") + (["all"] if "all" in counts else [])
        object.__setattr__(self, "label_counts", tuple(ordered))
        for name in self.configs:
            if not NAME.fullmatch(name) or name in ROLES:
                raise InputError(f"config 'configs.{name}': a name of letters, digits, '_', '-', '.' (it names "
                                 f"folders), not one of {ROLES}")

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any], where: str = "study config") -> StudyConfig:
        """Build from a YAML mapping; unknown keys (also inside ``configs.<name>`` and ``cv``) are errors naming
        the key, prefixed by ``where`` (the file)."""
        if not isinstance(tree, Mapping):
            raise InputError(f"{where}: a study config is a mapping (name, configs, ...), got {tree!r}")
        missing = [key for key in ("name", "configs") if key not in tree]
        if missing:
            raise InputError(f"{where}: missing key(s) {', '.join(missing)}")
        raw = tree["configs"]
        if not isinstance(raw, Mapping) or not raw:
            raise InputError(f"{where}: 'configs' must map names to training configs ({{config: ..., set: [...]}})")
        try:
            specs = {str(name): from_mapping(PretrainSpec, spec, f"configs.{name}") for name, spec in raw.items()}
            return from_mapping(cls, {**tree, "configs": specs})
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    @property
    def first(self) -> str:
        """The first config: its model is the random-init controls' architecture."""
        return next(iter(self.configs))


def load_study(path: str | Path) -> StudyConfig:
    """A study config from its YAML file (:meth:`StudyConfig.from_dict`)."""
    import yaml

    try:
        tree = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the study config ({exc})") from None
    return StudyConfig.from_dict(tree, str(path))


def label_text(n: int | str | None) -> str:
    """A label count as written in tables, keys and file names: ``all`` for None or ``all``, else the integer."""
    return "all" if n in (None, "all") else str(int(n))


def fraction_text(fraction: float) -> str:
    """A data fraction as written in tables and folder names (``%g``: 1, 0.5, 0.25)."""
    return f"{fraction:g}"


# ----------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class StudyInputs:
    """The workflow's files a study reads. ``splits``/``runs_root``/``stats`` build the shards of a data fraction
    below 1 (``stats`` also checks the shards' scaling); ``labels``: the atlas label table (ROI centroids)."""

    pretrain_manifest: str
    shards: str
    tasks: dict
    gradients: str
    labels: str | None = None
    stats: str | None = None
    splits: str | None = None
    runs_root: str | None = None


@dataclass
class TaskData:
    """One task's subjects: ``subjects`` [S] (sorted "cohort/subject"), ``target`` [S] (z-scored values or class
    indices), ``rows`` [N] (each of its windows' row in the study's windows), ``subject_of`` [N], the CV
    ``splits`` (:func:`brainjepa.evaluate.crossval.cv_folds`) and ``digest`` (what its predictions depend on)."""

    task: Any
    subjects: np.ndarray
    target: np.ndarray
    rows: np.ndarray
    subject_of: np.ndarray
    n_classes: int
    scale: float
    splits: list
    digest: str

    @property
    def kind(self) -> str:
        return self.task.kind


@dataclass
class StudyData:
    """Every labelled window of every task once: ``data`` [N, R, window] float32, ``roi_names``; the tasks;
    ``monitor`` [M, 1, R, window] (None without a monitor split); ``digest`` (what features depend on)."""

    data: np.ndarray
    roi_names: list[str]
    window: int
    tasks: dict[str, TaskData]
    monitor: Any
    digest: str


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def load_study_data(study: StudyConfig, inputs: StudyInputs) -> StudyData:
    """The tasks' labelled windows of the train/val/test shards pooled, their subjects and CV folds, and the
    monitor windows of the pretraining shards."""
    from brainjepa.data.shards import load_manifest
    from brainjepa.evaluate.crossval import cv_folds
    from brainjepa.evaluate.tasks import TaskConfig, load_task, split_manifests, subject_mean
    from brainjepa.train.monitors import monitor_windows

    if not isinstance(inputs.tasks, Mapping) or not inputs.tasks:
        raise InputError("--tasks: a JSON object of at least one task {name: {cohorts, label, kind, ...}}")
    manifests = split_manifests(inputs.shards)
    window = int(load_manifest(manifests["train"])["window"])
    shards = {s: [e["sha256"] for entries in load_manifest(p)["splits"].values() for e in entries]
              for s, p in manifests.items()}
    keys: dict[str, int] = {}
    windows: list[np.ndarray] = []
    tasks: dict[str, TaskData] = {}
    roi_names: list[str] = []
    for name, spec in inputs.tasks.items():
        if not isinstance(spec, Mapping):
            raise InputError(f"--tasks: task {name!r} must be a mapping (cohorts, label, kind, ...)")
        task = TaskConfig.from_dict(str(name), dict(spec))
        if task.test_cohorts:       # a transfer test, not a cross-validation: the evaluate stage scores it
            log.info("task %s: skipped, its test cohorts %s are external (the study cross-validates within "
                     "cohorts; the evaluate stage scores transfer tasks)", task.name, ",".join(task.test_cohorts))
            continue
        w = load_task(task, manifests, window, with_data=True)
        roi_names = w.roi_names
        rows = np.empty(len(w.subject), dtype=int)
        for i, key in enumerate(f"{r}@{s}" for r, s in zip(w.run_id, w.start)):
            if key not in keys:
                keys[key] = len(windows)
                windows.append(w.data[i])
            rows[i] = keys[key]
        subjects, target = subject_mean(w.subject, w.target.astype(float))
        if task.kind != "regression":
            target = np.rint(target).astype(int)
        splits = cv_folds(target, task.kind, study.cv.folds, study.cv.repeats)
        digest = _digest({"task": dataclasses.asdict(task), "cv": dataclasses.asdict(study.cv), "shards": shards,
                          "subjects": subjects.tolist(), "version": CACHE_VERSION})
        tasks[task.name] = TaskData(task, subjects, target, rows, w.subject, w.n_outputs, float(w.std), splits,
                                    digest)
        log.info("task %s: %d labelled subjects (%d windows) of %s, %d x %d-fold CV", task.name, len(subjects),
                 len(rows), ",".join(task.cohorts), study.cv.repeats, study.cv.folds)
    monitor = monitor_windows(inputs.pretrain_manifest, "monitor", window, study.monitor_windows)
    pretrain = load_manifest(inputs.pretrain_manifest)
    digest = _digest({"window": window, "shards": shards, "rois": roi_names, "version": CACHE_VERSION,
                      "monitor": [e["sha256"] for e in pretrain["splits"].get("monitor", [])],
                      "monitor_windows": study.monitor_windows})
    if monitor is None:
        log.warning("%s has no 'monitor' split: the study's monitors are left empty", inputs.pretrain_manifest)
    return StudyData(np.stack(windows), roi_names, window, tasks, monitor, digest)


# ----------------------------------------------------------------------------------------------- data fractions
def fraction_subjects(subjects: list[tuple[str, str]], fraction: float) -> set[tuple[str, str]]:
    """The (cohort, subject) pairs of a data fraction: the ``round(fraction x n)`` (at least 1) with the smallest
    stable hash (:func:`brainjepa.group.splits.unit_uniform` of "data_fraction", cohort, subject). Nested: a
    smaller fraction's subjects are inside a larger one's."""
    from brainjepa.group.splits import unit_uniform

    ordered = sorted(set(subjects), key=lambda cs: (unit_uniform(0, "data_fraction", *cs), cs))
    n = len(ordered) if fraction >= 1 else max(1, int(math.floor(fraction * len(ordered) + 0.5)))
    return set(ordered[:n])


def fraction_manifest(fraction: float, inputs: StudyInputs, out_dir: Path) -> Path:
    """The pretraining shard manifest of a data fraction: the workflow's for 1, else shards rebuilt under
    ``<out_dir>/shards/d<fraction>`` from the aligned runs of :func:`fraction_subjects` of the pretraining
    subjects (those of the monitor split kept apart as they are), with the source manifest's settings and
    scaling statistics. Rebuilt only when its runs or statistics change."""
    from brainjepa.data.shards import MONITOR_SPLIT, PRETRAIN_SPLIT, build_shards, check_scaling_stats, load_manifest
    from brainjepa.evaluate.tasks import read_split
    from brainjepa.group.scaling import ScalingStats
    from brainjepa.group.splits import read_splits, run_file

    if fraction >= 1:
        return Path(inputs.pretrain_manifest)
    for option, value in (("--splits", inputs.splits), ("--runs-root", inputs.runs_root), ("--stats", inputs.stats)):
        if not value:
            raise InputError(f"data fraction {fraction:g} rebuilds the pretraining shards: {option} is needed")
    source = load_manifest(inputs.pretrain_manifest)
    check_scaling_stats(inputs.pretrain_manifest, inputs.stats)
    table = read_splits(inputs.splits)
    table = table[table["split"] == PRETRAIN_SPLIT].copy()
    if table.empty:
        raise InputError(f"{inputs.splits}: no run in split '{PRETRAIN_SPLIT}'")
    held = read_split(inputs.pretrain_manifest, MONITOR_SPLIT, ["cohort", "subject"], False)
    monitor = set(zip(held["cohort"], held["subject"]))
    pairs = list(zip(table["cohort"], table["subject"]))
    chosen = fraction_subjects([p for p in pairs if p not in monitor], fraction)
    table["split"] = [MONITOR_SPLIT if p in monitor else PRETRAIN_SPLIT for p in pairs]
    table = table[[p in monitor or p in chosen for p in pairs]]
    table["path"] = [str(run_file(inputs.runs_root, r)) for r in table["run_id"]]
    folder = out_dir / "shards" / f"d{fraction_text(fraction)}"
    settings = {"runs": sorted(zip(table["run_id"], table["split"])), "stats": source["scaling_stats_id"],
                **{k: source.get(k) for k in ("dtype", "window", "rows_per_row_group", "max_shard_bytes",
                                              "shard_format")}}
    marker = folder.with_name(folder.name + ".json")
    if (folder / "manifest.json").exists() and marker.exists() and json.loads(marker.read_text()) == json.loads(
            json.dumps(settings)):
        return folder / "manifest.json"
    log.info("data fraction %g: %d of %d pretraining subjects -> %s", fraction, len(chosen),
             len(set(pairs) - monitor), folder)
    build_shards(table, ScalingStats.load(inputs.stats), folder, max_shard_bytes=int(source["max_shard_bytes"]),
                 dtype=source["dtype"], window=int(source["window"]),
                 rows_per_row_group=int(source["rows_per_row_group"]), flat=True,
                 shard_format=source["shard_format"])
    from brainjepa.io import write_text_atomic

    write_text_atomic(marker, json.dumps(settings, indent=1) + "\n")
    return folder / "manifest.json"


# ----------------------------------------------------------------------------------------------- pretraining
@dataclass(frozen=True)
class PretrainRun:
    """One pretraining run of the study: its config and seed, data fraction and manifest, the epochs of the step
    budget (``steps_per_epoch`` optimizer steps each), the epochs whose checkpoints are evaluated and the
    overrides that make its training config."""

    config: str
    seed: int
    fraction: float
    out_dir: Path
    manifest: Path
    steps_per_epoch: int
    epochs: int
    checkpoint_epochs: tuple[int, ...]
    overrides: tuple[str, ...]

    def checkpoint(self, epoch: int) -> Path:
        return self.out_dir / ("final.pt" if epoch == self.epochs else f"epoch-{epoch:04d}.pt")


def data_overrides(inputs: StudyInputs, manifest: str | Path) -> list[str]:
    """The ``--set`` overrides that point a training config at the study's data: ``manifest``, the gradients and, when
    the study has them, the scaling statistics and the atlas label table."""
    out = [f"data.manifest={manifest}", f"data.gradients={inputs.gradients}"]
    out += [f"data.scaling_stats={inputs.stats}"] if inputs.stats else []
    return out + ([f"data.labels={inputs.labels}"] if inputs.labels else [])


def plan_run(study: StudyConfig, name: str, seed: int, fraction: float, manifest: Path, inputs: StudyInputs,
             out_dir: Path) -> PretrainRun:
    """The run of config ``name`` x ``seed`` x ``fraction``: ``optim.epochs`` = the budget over the optimizer
    steps per epoch of its data (at least 1), a checkpoint every ``epochs // checkpoints`` epochs (the last one
    ``final.pt``), ``optim.warmup_epochs`` the config's but at most the epochs."""
    from brainjepa.data.shards import load_manifest
    from brainjepa.train.config import load_config
    from brainjepa.train.pretrain import too_few_windows

    spec = study.configs[name]
    base = [*spec.set, *data_overrides(inputs, manifest)]
    cfg = load_config(spec.config, base)
    data = load_manifest(manifest)
    n = sum(int(entry["rows"]) for entry in data["splits"].get(cfg.data.split, []))
    per_epoch = n // cfg.data.batch_size // cfg.optim.accumulation_steps
    if per_epoch < 1:
        raise InputError(f"study config '{name}' at data fraction {fraction:g}: " + too_few_windows(cfg, data, 1))
    epochs = max(1, int(math.floor(study.budget_steps / per_epoch + 0.5)))
    every = max(1, epochs // study.checkpoints)
    kept = tuple(sorted({min(every * k, epochs) for k in range(1, study.checkpoints)} | {epochs}))
    out = out_dir / "runs" / f"{name}_s{seed}_d{fraction_text(fraction)}"
    overrides = (*base, f"run.out_dir={out}", f"run.seed={seed}", f"optim.epochs={epochs}",
                 f"optim.warmup_epochs={min(cfg.optim.warmup_epochs, epochs)}", f"run.checkpoint_every={every}",
                 "run.progress=false")
    return PretrainRun(name, seed, fraction, out, Path(manifest), per_epoch, epochs, kept, overrides)


def train_run(run: PretrainRun, spec: PretrainSpec) -> None:
    """Pretrain (or resume, or skip when ``study-run.json`` says this run identity finished with its checkpoints)."""
    from brainjepa.data.shards import load_manifest
    from brainjepa.io import write_text_atomic
    from brainjepa.train import pretrain as training
    from brainjepa.train.config import load_config

    cfg = load_config(spec.config, list(run.overrides))
    identity = json.loads(json.dumps(training.run_identity(cfg, load_manifest(run.manifest)), default=str))
    marker = run.out_dir / "study-run.json"
    needed = [run.checkpoint(e) for e in run.checkpoint_epochs]
    if marker.exists() and json.loads(marker.read_text()).get("identity") == identity and all(
            p.exists() for p in needed):
        log.info("%s: finished, with checkpoints at epochs %s", run.out_dir, list(run.checkpoint_epochs))
        return
    log.info("pretraining %s: %d epochs x %d steps (budget), checkpoints at epochs %s", run.out_dir, run.epochs,
             run.steps_per_epoch, list(run.checkpoint_epochs))
    training.pretrain(cfg)
    absent = [str(p) for p in needed if not p.exists()]
    if absent:
        raise InputError(f"{run.out_dir}: pretraining ended without checkpoint(s) {absent}; move the folder away "
                         "and rerun the study")
    write_text_atomic(marker, json.dumps({"identity": identity, "epochs": run.epochs,
                                          "checkpoint_epochs": list(run.checkpoint_epochs)}, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------- features
def encoder_digest(encoder) -> str:
    """sha256 of an encoder's weights (every tensor of its state dict, by name: values, dtype and shape)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def entry_key(task: TaskData, readout: str, n: int | str | None) -> str:
    """The key of one prediction in an encoder's cache: task name, readout, label count and the first 16 hex digits of
    the task's digest, joined by ``|``."""
    return f"{task.task.name}|{readout}|{label_text(n)}|{task.digest[:16]}"


def _label_count(n: int | str) -> int | None:
    return None if n == "all" else int(n)


def _read_cache(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s: unreadable cache, computed again", path)
        return {}
    return cached if cached.get("version") == CACHE_VERSION else {}


def _probe_all(cached: dict, missing: list[tuple[TaskData, str, Any]], feature_of, study: StudyConfig,
               threads: int | None) -> None:
    """Probe every missing (task, readout, label count) with ``feature_of(readout)`` [N_windows, F]."""
    from brainjepa.evaluate.crossval import oof_predictions
    from brainjepa.evaluate.tasks import subject_mean

    per_subject: dict[tuple[str, str], np.ndarray] = {}
    for task, readout, n in missing:
        key = (task.task.name, readout)
        if key not in per_subject:
            subjects, means = subject_mean(task.subject_of, feature_of(readout)[task.rows])
            if list(subjects) != list(task.subjects):
                raise RuntimeError(f"task {task.task.name}: subjects out of order")
            per_subject[key] = means
        pred = oof_predictions(per_subject[key], task.target, task.kind, task.n_classes, task.splits, task.subjects,
                               _label_count(n), study.cv)
        cached["predictions"][entry_key(task, readout, n)] = np.round(pred, 7).tolist()


def evaluate_encoder(encoder, description: dict, data: StudyData, study: StudyConfig, cache_dir: Path,
                     device, threads: int | None = None) -> dict:
    """An encoder's out-of-fold predictions for every task x readout x label count and its monitors, from its
    cache file (``cache/<sha256>.json``, the sha256 of its weights and the data) or computed (one feature
    extraction for whatever is missing). Returns the cache dict: encoder, monitors, predictions {entry_key: list}."""
    from brainjepa.evaluate import features
    from brainjepa.io import write_text_atomic

    weights = encoder_digest(encoder)
    path = cache_dir / f"{_digest([weights, data.digest])[:32]}.json"
    cached = _read_cache(path) or {"version": CACHE_VERSION, "weights_sha256": weights, "predictions": {}}
    cached["encoder"] = description
    missing = [(t, r, n) for t in data.tasks.values() for r in study.readouts for n in study.label_counts
               if entry_key(t, r, n) not in cached["predictions"]]
    if not missing and "monitors" in cached:
        return cached
    if "monitors" not in cached:
        cached["monitors"] = {}
        if data.monitor is not None:
            import torch

            from brainjepa.train.monitors import representation_monitors

            with torch.no_grad():
                values = representation_monitors({"e": encoder.to(device)}, data.monitor.to(device))
            cached["monitors"] = {k.removeprefix("e_"): v for k, v in values.items()}
    if missing:
        log.info("features of %s: %d windows", description, len(data.data))
        encoder.to(device)
        pooled, rois = features.extract(encoder, data.data, encoder.cfg.n_time_patches, device, study.batch_size)
        done: dict[str, np.ndarray] = {}

        def feature_of(readout: str) -> np.ndarray:
            if readout not in done:
                done[readout] = readout_features(pooled, rois, readout)
            return done[readout]

        _probe_all(cached, missing, feature_of, study, threads)
    write_text_atomic(path, json.dumps(cached, sort_keys=True) + "\n")
    return cached


def evaluate_fc(data: StudyData, study: StudyConfig, cache_dir: Path, threads: int | None = None) -> dict:
    """The input's FC (:func:`brainjepa.evaluate.baselines.fc_features`) probed as the encoders are (all labels)."""
    from brainjepa.evaluate.baselines import fc_features
    from brainjepa.io import write_text_atomic

    path = cache_dir / f"fc-{_digest(['fc', data.digest])[:28]}.json"
    cached = _read_cache(path) or {"version": CACHE_VERSION, "predictions": {}}
    cached.update(encoder={"kind": FC}, monitors={})
    missing = [(t, FC, "all") for t in data.tasks.values() if entry_key(t, FC, "all") not in cached["predictions"]]
    if missing:
        log.info("FC of %d windows", len(data.data))
        fc = fc_features(data.data)
        _probe_all(cached, missing, lambda readout: fc, study, threads)
        write_text_atomic(path, json.dumps(cached, sort_keys=True) + "\n")
    return cached


# ----------------------------------------------------------------------------------------------- the study
def _random_spec(configs_dir: Path, name: str, inputs: StudyInputs) -> dict:
    spec = {"kind": "random", "config": str(configs_dir / f"{name}.yaml"), "gradients": inputs.gradients}
    return {**spec, "labels": inputs.labels} if inputs.labels else spec


def write_configs(study: StudyConfig, inputs: StudyInputs, out_dir: Path) -> Path:
    """Each config resolved with its overrides as ``configs/<name>.yaml`` (what its random init is built from);
    the configs are checked here, before any training."""
    from brainjepa.io import write_text_atomic
    from brainjepa.train.config import dump_config, load_config

    folder = out_dir / "configs"
    for name, spec in study.configs.items():
        cfg = load_config(spec.config, [*spec.set, *data_overrides(inputs, inputs.pretrain_manifest)])
        text = dump_config(cfg)
        path = folder / f"{name}.yaml"
        if not path.exists() or path.read_text() != text:
            write_text_atomic(path, text)
    return folder


def run_study(config: str | Path | StudyConfig, inputs: StudyInputs, out_dir: str | Path,
              threads: int | None = None) -> dict[str, Path]:
    """Run (or resume) a study; returns the paths of study.tsv, paired.tsv, study.md and study.png.

    ``threads``: torch's threads and the BLAS threads of the probes (unset: the libraries' defaults)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(threads)) if threads else nullcontext():
        return _run_study(config, inputs, out_dir, threads)


def _run_study(config: str | Path | StudyConfig, inputs: StudyInputs, out_dir: str | Path,
               threads: int | None) -> dict[str, Path]:
    import torch

    from brainjepa.evaluate.encoders import load_encoder

    study = config if isinstance(config, StudyConfig) else load_study(config)
    out = Path(out_dir)
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configs_dir = write_configs(study, inputs, out)
    data = load_study_data(study, inputs)
    records: list[dict] = [{"role": FC, "config": "", "seed": None, "step": None, "epoch": None,
                            "data_fraction": None, "checkpoint": "", **evaluate_fc(data, study, cache_dir, threads)}]
    for seed in study.random_seeds:
        encoder, source = load_encoder(_random_spec(configs_dir, study.first, inputs), data.roi_names, data.window,
                                       seed=seed)
        cached = evaluate_encoder(encoder, source, data, study, cache_dir, device, threads)
        records.append({"role": "random", "config": study.first, "seed": seed, "step": 0, "epoch": 0,
                        "data_fraction": None, "checkpoint": "", **cached})
    manifests = {f: fraction_manifest(f, inputs, out) for f in study.data_fractions}
    for name, spec in study.configs.items():
        for seed in study.seeds:
            for fraction in study.data_fractions:
                run = plan_run(study, name, seed, fraction, manifests[fraction], inputs, out)
                train_run(run, spec)
                encoder, source = load_encoder(_random_spec(configs_dir, name, inputs), data.roi_names, data.window,
                                               seed=seed)
                cached = evaluate_encoder(encoder, source, data, study, cache_dir, device, threads)
                common = {"role": "pretrained", "config": name, "seed": seed, "data_fraction": fraction}
                records.append({**common, "step": 0, "epoch": 0, "checkpoint": "", **cached})
                for epoch in run.checkpoint_epochs:
                    path = run.checkpoint(epoch)
                    encoder, source = load_encoder({"kind": "checkpoint", "path": str(path)}, data.roi_names,
                                                   data.window)
                    cached = evaluate_encoder(encoder, source, data, study, cache_dir, device, threads)
                    step = source.get("step") if source.get("step") is not None else epoch * run.steps_per_epoch
                    records.append({**common, "step": int(step), "epoch": epoch, "checkpoint": str(path), **cached})
    table = study_table(records, data, study)
    paired = paired_table(records, data, study)
    paths = {"study": out / "study.tsv", "paired": out / "paired.tsv", "markdown": out / "study.md",
             "figure": out / "study.png"}
    from brainjepa.figures.study import study_figure
    from brainjepa.io import write_text_atomic, write_tsv_atomic

    write_tsv_atomic(table, paths["study"])
    write_tsv_atomic(paired, paths["paired"])
    write_text_atomic(paths["markdown"], study_markdown(study, table, paired))
    study_figure(table, paths["figure"], title=study.name)
    log.info("study %s: %s", study.name, ", ".join(str(p) for p in paths.values()))
    return paths


# ----------------------------------------------------------------------------------------------- tables
def _entries(record: dict, data: StudyData, study: StudyConfig):
    """(task, readout, label count, prediction) of a record, in table order."""
    readouts = (FC,) if record["role"] == FC else study.readouts
    counts = ("all",) if record["role"] == FC else study.label_counts
    for task in data.tasks.values():
        for readout in readouts:
            for n in counts:
                yield task, readout, n, np.asarray(record["predictions"][entry_key(task, readout, n)], dtype=float)


def _identity(record: dict) -> dict:
    return {"encoder": record["role"], "config": record["config"], "seed": record["seed"], "step": record["step"],
            "epoch": record["epoch"], "data_fraction": record["data_fraction"]}


def study_table(records: list[dict], data: StudyData, study: StudyConfig) -> pd.DataFrame:
    """study.tsv: one row per encoder x step x data fraction x label count x task x readout: the metrics on the
    repeat-averaged out-of-fold predictions (:func:`brainjepa.evaluate.metrics.task_metrics`; regression ``mae``
    in the label's units) and the encoder's monitors."""
    from brainjepa.evaluate.metrics import task_metrics

    rows = []
    for record in records:
        monitors = {m: record.get("monitors", {}).get(m, math.nan) for m in MONITORS}
        for task, readout, n, pred in _entries(record, data, study):
            metrics = task_metrics(task.kind, task.target, pred, task.scale)
            rows.append({**_identity(record), "label_count": label_text(n), "task": task.task.name,
                         "kind": task.kind, "readout": readout, "n_subjects": len(task.subjects),
                         **{m: metrics.get(m, math.nan) for m in METRICS}, **monitors,
                         "checkpoint": record["checkpoint"]})
    return pd.DataFrame(rows)


def paired_table(records: list[dict], data: StudyData, study: StudyConfig) -> pd.DataFrame:
    """paired.tsv: for each pretrained row and each random seed, per paired metric of its task's kind
    (:data:`PAIRED_METRICS`), the paired bootstrap over subjects of metric(pretrained) - metric(random seed):
    delta, the 95 % interval, ``p`` = P(delta <= 0) and ``beats`` (the interval above 0). The same resamples for
    every comparison of a task."""
    from brainjepa.evaluate.crossval import beats, metric_value, paired_difference, resampled_metric, resamples

    randoms = {r["seed"]: r for r in records if r["role"] == "random"}
    idx = {name: resamples(len(t.subjects), study.bootstrap, study.bootstrap_seed) for name, t in data.tasks.items()}
    boot: dict[tuple, np.ndarray] = {}
    value: dict[tuple, float] = {}

    def metric_of(tag, task: TaskData, pred: np.ndarray, metric: str) -> tuple[float, np.ndarray]:
        if tag not in boot:
            value[tag] = metric_value(task.kind, task.target, pred, metric, task.scale)
            boot[tag] = resampled_metric(task.kind, task.target, pred, idx[task.task.name], metric, task.scale)
        return value[tag], boot[tag]

    random_preds = {(seed, t.task.name, r, n): p for seed, rec in randoms.items() for t, r, n, p in
                    _entries(rec, data, study)}
    rows = []
    for k, record in enumerate(records):
        if record["role"] != "pretrained":
            continue
        for task, readout, n, pred in _entries(record, data, study):
            for metric in PAIRED_METRICS[task.kind]:
                mine, mine_boot = metric_of((k, task.task.name, readout, n, metric), task, pred, metric)
                for seed in study.random_seeds:
                    other = random_preds[(seed, task.task.name, readout, n)]
                    theirs, theirs_boot = metric_of(("random", seed, task.task.name, readout, n, metric), task, other,
                                                    metric)
                    result = paired_difference(mine - theirs, mine_boot, theirs_boot, metric)
                    rows.append({**_identity(record), "label_count": label_text(n), "task": task.task.name,
                                 "kind": task.kind, "readout": readout, "metric": metric, "random_seed": seed,
                                 "pretrained": mine, "random": theirs, **result, "beats": beats(result, metric)})
    columns = ["encoder", "config", "seed", "step", "epoch", "data_fraction", "label_count", "task", "kind", "readout",
               "metric", "random_seed", "pretrained", "random", "delta", "ci_low", "ci_high", "p", "beats"]
    return pd.DataFrame(rows, columns=columns)


def headline(table: pd.DataFrame, study: StudyConfig) -> tuple[pd.DataFrame, str]:
    """The rows of the study's headline (the largest data fraction and label count, each run's last step) and
    the label count's text."""
    counts = [label_text(n) for n in study.label_counts]
    label = "all" if "all" in counts else counts[-1]
    fraction = max(study.data_fractions)
    rows = table[(table["label_count"] == label)]
    pre = rows[(rows["encoder"] == "pretrained") & np.isclose(rows["data_fraction"].astype(float), fraction)]
    last = pre.groupby(["config", "seed"])["step"].transform("max")
    return pre[pre["step"] == last], label


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def study_markdown(study: StudyConfig, table: pd.DataFrame, paired: pd.DataFrame) -> str:
    """study.md: per config, task, readout and paired metric at the largest budget, full data and all labels: the
    pretrained metric (mean over pretraining seeds), the random seeds' mean and range, the worst paired delta
    against any random seed with its interval, and whether it beats every random seed; the FC reference row;
    the monitors."""
    final, label = headline(table, study)
    fraction = max(study.data_fractions)
    lines = [f"# Pretraining study: {study.name}", "",
             f"Budget {study.budget_steps} optimizer steps per run; pretraining seeds {list(study.seeds)}; random-init "
             f"seeds {list(study.random_seeds)} (the first config's architecture, `{study.first}`); "
             f"{study.cv.repeats} x {study.cv.folds}-fold CV over all labelled held-out subjects, "
             f"{study.bootstrap} paired bootstrap resamples of the subjects.",
             f"Rows: each run's last checkpoint, data fraction {fraction:g}, {label} labelled training subjects per "
             "fold. "
             "Worst Δ: the smallest paired difference (pretrained − random) over every pretraining seed × random seed, "
             "with its 95 % interval; *beats* = every such interval is above 0 (docs/study.md).", "",
             "| config | task | readout | metric | step | pretrained | random mean [min, max] | worst Δ [95 % CI] | "
             "P(Δ ≤ 0) | beats every random seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    randoms = table[(table["encoder"] == "random") & (table["label_count"] == label)]
    pairs = paired.merge(final[["config", "seed", "step", "data_fraction"]].drop_duplicates(),
                         on=["config", "seed", "step", "data_fraction"]) if len(paired) else paired
    pairs = pairs[pairs["label_count"] == label] if len(pairs) else pairs
    for config in study.configs:
        for task in dict.fromkeys(table["task"]):
            kind = table.loc[table["task"] == task, "kind"].iloc[0]
            for readout in study.readouts:
                for metric in PAIRED_METRICS[kind]:
                    pre = final[(final["config"] == config) & (final["task"] == task) & (final["readout"] == readout)]
                    rnd = randoms[(randoms["task"] == task) & (randoms["readout"] == readout)][metric]
                    mine = pairs[(pairs["config"] == config) & (pairs["task"] == task)
                                 & (pairs["readout"] == readout) & (pairs["metric"] == metric)] if len(pairs) else pairs
                    if pre.empty:
                        continue
                    if len(mine):
                        worst = mine.loc[mine["delta"].idxmin()]
                        delta = (f"{worst['delta']:+.3f} [{worst['ci_low']:+.3f}, {worst['ci_high']:+.3f}] "
                                 f"(seed {worst['seed']} vs {worst['random_seed']})")
                        p, verdict = _fmt(worst["p"]), "**yes**" if bool(mine["beats"].all()) else "no"
                    else:
                        delta, p, verdict = "-", "-", "-"
                    steps = sorted(set(pre["step"].astype(int)))
                    lines.append(f"| {config} | {task} | {readout} | {metric} | {'/'.join(map(str, steps))} | "
                                 f"{_fmt(pre[metric].mean())} (n={len(pre)}) | {_fmt(rnd.mean())} "
                                 f"[{_fmt(rnd.min())}, {_fmt(rnd.max())}] | {delta} | {p} | {verdict} |")
    fc = table[table["encoder"] == FC]
    for task in dict.fromkeys(fc["task"]):
        row = fc[fc["task"] == task].iloc[0]
        for metric in PAIRED_METRICS[row["kind"]]:
            lines.append(f"| FC (input) | {task} | {FC} | {metric} | - | {_fmt(row[metric])} | - | - | - | - |")
    return "\n".join(lines + _monitor_lines(study, table, final)) + "\n"


def _monitor_lines(study: StudyConfig, table: pd.DataFrame, final: pd.DataFrame) -> list[str]:
    """study.md's monitor table: per config at the headline checkpoints, and the random seeds' mean."""
    lines = ["", "Monitors on the pretraining shards' monitor windows (RankMe of pooled and of token features, "
             "input-dependent share of the token variance) at the same checkpoints; random: mean over seeds.", "",
             "| encoder | " + " | ".join(MONITORS) + " |", "|---|" + "---|" * len(MONITORS)]
    first = table.drop_duplicates(["encoder", "config", "seed", "step", "data_fraction"])
    for config in study.configs:
        mon = first.merge(final[["config", "seed", "step", "data_fraction"]].drop_duplicates())
        mon = mon[mon["config"] == config]
        if len(mon):
            lines.append(f"| {config} | " + " | ".join(_fmt(mon[m].mean(), 2) for m in MONITORS) + " |")
    rnd = first[first["encoder"] == "random"]
    lines.append("| random | " + " | ".join(_fmt(rnd[m].mean(), 2) for m in MONITORS) + " |")
    return lines
