"""The ``evaluate`` stage: one (task, method, seed) -> one JSON of metrics and test predictions.

Methods are ``<encoder>_<protocol>`` (protocols: ``finetune``, ``linprobe``, ``attentive``, ``closed_form``;
encoders named in the workflow config, e.g. ``jepa``, ``mae``, ``random``, ``official``) or a connectivity
baseline (``fc_linear``, ``fc_svm``). Every method sees the same subjects, splits and windows
(:mod:`.tasks`), selects on the validation subjects and predicts the test subjects once.

The JSON: task, kind, method, seed, the encoder's source, subjects per split, the target's scaling (mean and
std of the training subjects) or classes, what was selected (epoch or regularisation) with its history,
validation and test metrics (:mod:`.metrics`, over subjects) and one row per test subject (its label in
original units and the prediction: value in original units, or class probabilities).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from brainjepa.errors import InputError
from brainjepa.evaluate.config import ProtocolConfig
from brainjepa.evaluate.metrics import split_metrics, task_metrics
from brainjepa.evaluate.record import Record
from brainjepa.evaluate.tasks import (
    Resampling,
    TaskConfig,
    TaskWindows,
    load_task,
    split_manifests,
    subject_mean,
)

log = logging.getLogger("brainjepa.evaluate")
PROTOCOLS = ("finetune", "linprobe", "attentive", "closed_form")
BASELINES = ("fc_linear", "fc_svm")
TORCH_PROTOCOLS = ("finetune", "linprobe", "attentive")
FROZEN = ("linprobe", "attentive", "closed_form")     # protocols on cached features
# Deterministic given their features and splits: a seed changes nothing (scikit-learn's lbfgs, ridge and SVM fits).
SEEDLESS = ("closed_form", "fc_linear", "fc_svm")
# A protocol name with its readout (brainjepa.evaluate.features.READOUTS): the linear and closed-form probes read
# ``mean`` (no suffix), ``roi`` or ``cross_roi``; the attentive probe reads the ROI tokens themselves.
PROTOCOL_NAMES = {"finetune": ("finetune", None), "attentive": ("attentive", "tokens"),
                  **{f"{p}{suffix}": (p, readout) for p in ("linprobe", "closed_form")
                     for suffix, readout in (("", "mean"), ("_roi", "roi"), ("_cross_roi", "cross_roi"))}}


def parse_method_readout(method: str) -> tuple[str | None, str, str | None]:
    """``jepa_closed_form_cross_roi`` -> ("jepa", "closed_form", "cross_roi"); ``jepa_linprobe`` -> ("jepa",
    "linprobe", "mean"); ``jepa_finetune`` -> ("jepa", "finetune", None); ``fc_svm`` -> (None, "fc_svm", None)."""
    if method in BASELINES:
        return None, method, None
    for name in sorted(PROTOCOL_NAMES, key=len, reverse=True):   # closed_form_roi before closed_form
        if method.endswith("_" + name) and len(method) > len(name) + 1:
            return (method[: -len(name) - 1], *PROTOCOL_NAMES[name])
    raise InputError(f"method {method!r}: expected <encoder>_<protocol> with a protocol of "
                     f"{', '.join(PROTOCOL_NAMES)}, or one of {', '.join(BASELINES)}")


def parse_method(method: str) -> tuple[str | None, str]:
    """``jepa_finetune`` -> ("jepa", "finetune"); ``jepa_closed_form_roi`` -> ("jepa", "closed_form");
    ``fc_svm`` -> (None, "fc_svm")."""
    return parse_method_readout(method)[:2]


def _features_for(w: TaskWindows, paths: list[str | Path], tokens: bool = True) -> dict[str, np.ndarray]:
    """The cached features of the task's windows (joined on run_id and window start), in window order; without
    ``tokens`` the ROI tokens are not read (``roi_tokens`` is then empty: the pooled readout needs none)."""
    from brainjepa.evaluate.features import read_features

    pooled, rois, found = {}, {}, {}
    for path in paths:
        cache = read_features(path, tokens=tokens)
        for i, key in enumerate(zip(cache["run_id"], cache["start"])):
            found[(str(key[0]), int(key[1]))] = (path, i)
        pooled[path], rois[path] = cache["pooled"], cache["roi_tokens"]
    keys = [(str(r), int(s)) for r, s in zip(w.run_id, w.start)]
    lost = [k for k in keys if k not in found]
    if lost:
        raise InputError(f"feature cache(s) {[str(p) for p in paths]} lack window {lost[0]} of task {w.task.name} "
                         f"({len(lost)} missing): rebuild the features")
    return {"pooled": np.stack([pooled[found[k][0]][found[k][1]] for k in keys]),
            "roi_tokens": (np.stack([rois[found[k][0]][found[k][1]] for k in keys]) if tokens
                           else np.zeros((len(keys), 0, 0), np.float16))}


def _class_weight(w: TaskWindows, cfg: ProtocolConfig) -> np.ndarray | None:
    """Balanced class weights [C] from the training subjects (one count per subject), or None."""
    from brainjepa.evaluate.tasks import class_weights

    if w.task.kind == "regression" or cfg.class_weight == "none":
        return None
    tr = w.mask("train")
    _, target = subject_mean(w.subject[tr], w.target[tr].astype(float))
    return class_weights(target.astype(int), w.n_outputs)


def _gradient_head(protocol: str, w: TaskWindows, inputs: np.ndarray, cfg: ProtocolConfig, seed: int,
                   class_weight: np.ndarray | None = None, encoder=None, name: str = ""):
    """Fine-tune (inputs: windows; LP-FT with ``finetune.head_init: probe``: :func:`.finetune.probe_head`) through
    :func:`.loop.fit`, or fit a probe (inputs: features) through :func:`.loop.fit_probe`; both select on the
    task's metric over the validation subjects.

    Returns (predictions per window of val and test, selection info)."""
    from brainjepa.evaluate.job import torch_job

    job = torch_job(cfg.device, cfg.precision)
    if protocol != "finetune":
        return _probe(protocol, w, inputs, cfg, seed, class_weight, job, name)
    return _finetune(w, inputs, cfg, seed, class_weight, encoder, job, name)


def _ddp(job):
    """What the training steps call: the model, or its DistributedDataParallel wrapper under torchrun."""
    def wrap(model):
        if job.dist.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = job.device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return wrap


def _probe(protocol: str, w: TaskWindows, inputs: np.ndarray, cfg: ProtocolConfig, seed: int,
           class_weight: np.ndarray | None, job, name: str):
    """A linear or attentive probe on frozen features ``inputs`` [N, ...] (:func:`.loop.fit_probe`)."""
    import torch

    from brainjepa.evaluate import loop

    target = torch.from_numpy(w.target)
    tr, va, te = (w.mask(s) for s in ("train", "val", "test"))
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    section = cfg.linprobe if protocol == "linprobe" else cfg.attentive
    fitted = loop.fit_probe(protocol, section, (x[tr], target[tr]), (x[va], w.target[va], w.subject[va]),
                            w.task.kind, w.n_outputs, seed=seed, device=job.device, autocast=job.autocast,
                            rank=job.dist.rank, world_size=job.dist.world_size, wrap=_ddp(job), name=name,
                            class_weight=class_weight)
    x = x.float()
    predictions = {s: loop.predict(fitted.model, x[m], w.task.kind, job.device, 64, job.autocast)
                   for s, m in (("val", va), ("test", te))}
    return predictions, fitted.info


def _finetune(w: TaskWindows, inputs, cfg: ProtocolConfig, seed: int, class_weight: np.ndarray | None, encoder,
              job, name: str):
    """Fine-tune ``encoder`` with a head on the windows ``inputs`` (:func:`.loop.fit`)."""
    import torch

    from brainjepa.evaluate import loop
    from brainjepa.evaluate.finetune import build_finetune, probe_head

    target = torch.from_numpy(w.target)
    tr, va, te = (w.mask(s) for s in ("train", "val", "test"))
    x = loop.WindowInputs(inputs)          # [N, 1, R, T], each batch read from the shards when it is needed
    x_tr, x_va, x_te = (x.take(m) for m in (tr, va, te))
    section, rank, device, autocast = cfg.finetune, job.dist.rank, job.device, job.autocast
    model, optimizer, lr = build_finetune(encoder, w.n_outputs, section, job.dist.world_size)
    model.to(device)
    probe_info = None
    if section.head_init == "probe":   # before the DDP wrapper, which broadcasts rank 0's state
        probe_info = probe_head(model, (x_tr, target[tr]), (x_va, w.target[va], w.subject[va]), w.task.kind,
                                w.n_outputs, cfg.linprobe, seed=seed, device=device, autocast=autocast,
                                rank=rank, name=name, class_weight=class_weight)
    sample = None
    if section.temporal_jitter:
        train_index = np.flatnonzero(tr)
        sample = lambda batch, epoch: w.jittered(train_index[batch], seed, epoch)  # noqa: E731
    result = loop.fit(model, optimizer, (x_tr, target[tr]), (x_va, w.target[va], w.subject[va]), w.task.kind,
                      epochs=section.epochs, warmup_epochs=section.warmup_epochs, batch_size=section.batch_size,
                      lr=lr, min_lr=section.min_lr, seed=seed, device=device, autocast=autocast, rank=rank,
                      world_size=job.dist.world_size, train_module=_ddp(job)(model), name=name,
                      class_weight=class_weight, sample=sample, min_steps=section.min_steps)
    predictions = {s: loop.predict(model, part, w.task.kind, device, 64, autocast)
                   for s, part in (("val", x_va), ("test", x_te))}
    info = {"epoch": result.selected_epoch, "metric": result.metric,
            "score": result.score if np.isfinite(result.score) else None, "history": result.history, "lr": lr,
            "head_init": section.head_init}
    if probe_info is not None:
        info["probe"] = {k: v for k, v in probe_info.items() if k != "history"}
    return predictions, info


def _closed_form(protocol: str, w: TaskWindows, features: np.ndarray, cfg: ProtocolConfig, seed: int,
                 weight: np.ndarray | None):
    from brainjepa.evaluate import baselines

    section = cfg.svm if protocol == "fc_svm" else cfg.closed_form
    maker = baselines.svm_maker if protocol == "fc_svm" else baselines.closed_form_maker
    make = maker(w.task.kind, seed, weight)
    grid = baselines.log_grid(section.log10_range, section.grid)
    tr, va, te = (w.mask(s) for s in ("train", "val", "test"))
    model, value, history = baselines.fit_select(w.task.kind, make, grid, (features[tr], w.target[tr]),
                                                 (features[va], w.target[va], w.subject[va]), w.n_outputs, weight)
    predictions = {s: baselines.predict(model, w.task.kind, features[m], w.n_outputs)
                   for s, m in (("val", va), ("test", te))}
    return predictions, {"regularisation": value, "history": history}


def _subject_rows(w: TaskWindows, split: str, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Subject-level truth and predictions of one split, and its prediction rows for the JSON."""
    mask = w.mask(split)
    subjects, mean_pred = subject_mean(w.subject[mask], pred)
    _, truth = subject_mean(w.subject[mask], w.target[mask].astype(float))
    raw = dict(zip(w.subject[mask], w.raw[mask]))
    rows = []
    for s, p in zip(subjects, mean_pred):
        row = {"subject": str(s), "label": raw[s] if isinstance(raw[s], str) else float(raw[s])}
        if w.task.kind == "regression":
            row["prediction"] = float(p * w.std + w.mean)
        else:
            row["probabilities"] = [float(v) for v in p]
        rows.append(row)
    truth = truth if w.task.kind == "regression" else truth.astype(int)
    return truth, mean_pred, rows


def run_evaluation(task: TaskConfig, method: str, seed: int, shards: str | Path, out: str | Path,
                   protocols: ProtocolConfig | None = None, encoder_spec: dict | None = None,
                   features: list[str | Path] | None = None, resampling: Resampling | None = None) -> dict:
    """Evaluate one (task, method, seed) on the shards' windows and write its JSON (rank 0); returns the record.
    ``resampling``: the subject-level splits of the frozen protocols and the FC baselines (default: the fixed
    split; fine-tuning always uses it).

    torch is imported only by the gradient-trained protocols (closed-form and FC jobs start seconds sooner)."""
    from brainjepa.data.shards import load_manifest

    cfg = protocols or ProtocolConfig()
    _, protocol = parse_method(method)
    manifests = split_manifests(shards)
    window = int(load_manifest(manifests["train"])["window"])
    w = load_task(task, manifests, window, with_data=protocol in ("finetune", "fc_linear", "fc_svm"))
    record = evaluate_record(w, method, seed, cfg, encoder_spec, features, resampling)
    if protocol not in TORCH_PROTOCOLS or _rank() == 0:
        return record.write(out)
    return record.to_dict()


def evaluate_windows(w: TaskWindows, method: str, seed: int, protocols: ProtocolConfig | None = None,
                     encoder_spec: dict | None = None, features: list[str | Path] | None = None,
                     resampling: Resampling | None = None) -> dict:
    """Evaluate one (task, method, seed) on loaded task windows ``w`` (:func:`.tasks.load_task`; with their
    data for fine-tuning and the FC baselines); returns the JSON record (module docstring). The windows may
    come from elsewhere than the shards (``bench/experiments/finetune_positive_control.py`` plants effects into
    them)."""
    return evaluate_record(w, method, seed, protocols, encoder_spec, features, resampling).to_dict()


def evaluate_record(w: TaskWindows, method: str, seed: int, protocols: ProtocolConfig | None = None,
                    encoder_spec: dict | None = None, features: list[str | Path] | None = None,
                    resampling: Resampling | None = None) -> Record:
    """:func:`evaluate_windows`, as the :class:`.record.Record` (the task's own fields in ``extra``)."""
    from brainjepa.evaluate.job import seconds_since, seed_everything, set_threads

    cfg = protocols or ProtocolConfig()
    resampling = resampling or Resampling()
    task = w.task
    encoder_name, protocol, readout = parse_method_readout(method)
    uses_torch = protocol in TORCH_PROTOCOLS
    if uses_torch:
        set_threads(cfg.threads)
    name = f"{task.name}/{method}/seed{seed}"
    window = int(w.data.shape[-1]) if w.data is not None else None
    if protocol in ("finetune", "fc_linear", "fc_svm") and w.data is None:
        raise InputError(f"{name}: {protocol} needs the task's windows (load_task with_data=True)")
    seed_everything(seed, uses_torch)
    t0 = time.perf_counter()
    fit, source, window = _fitter(w, protocol, readout, cfg, seed, encoder_spec, features, name, window)
    extra = {"test_cohorts": list(task.test_cohorts), "encoder": encoder_name, "protocol": protocol,
             "readout": readout, "window": window}
    if task.kind == "regression":
        extra["target"] = {"mean": w.mean, "std": w.std}
    else:
        extra["classes"] = w.classes
    if protocol == "finetune" or resampling.scheme == "fixed":
        parts = _fixed_split(w, fit, cfg)
    else:
        parts = _resampled(w, fit, cfg, resampling)
    shared = {k: parts.pop(k) for k in ("n_subjects", "val", "test", "selected")}
    record = Record(task.name, task.kind, method, seed, list(task.cohorts), task.label, source, per_subject=None,
                    details=None, seconds=seconds_since(t0), extra={**extra, **parts}, **shared)
    log.info("%s: test %s (%.1f s)", name, ", ".join(f"{k} {v:.3f}" for k, v in record.test.items()),
             record.seconds)
    return record


def _fitter(w: TaskWindows, protocol: str, readout: str, cfg: ProtocolConfig, seed: int, encoder_spec: dict | None,
            features: list[str | Path] | None, name: str, window: int | None):
    """The method's ``fit(view, class_weight) -> (predictions {val, test}, selection info)``, the encoder's
    source and the window length (a feature cache's, for the frozen protocols)."""
    if protocol == "finetune":
        from brainjepa.evaluate.encoders import load_encoder

        if encoder_spec is None:
            raise InputError(f"{name}: fine-tuning needs an encoder spec")
        encoder, source = load_encoder(encoder_spec, w.roi_names, window, seed=seed, drop_path=cfg.finetune.drop_path)

        def fit(view: TaskWindows, weight: np.ndarray | None):
            return _gradient_head(protocol, view, view.data, cfg, seed, weight, encoder, name)
        return fit, source, window
    if protocol in FROZEN:
        if not features:
            raise InputError(f"{name}: {protocol} needs the encoder's feature cache(s)")
        from brainjepa.evaluate.features import read_features, readout_features

        cached = _features_for(w, list(features), tokens=protocol == "attentive" or readout != "mean")
        if protocol == "attentive":
            inputs = cached["roi_tokens"]
        else:
            inputs = readout_features(cached["pooled"], cached["roi_tokens"], readout)
        meta = read_features(features[0], tokens=False)["meta"]

        def fit(view: TaskWindows, weight: np.ndarray | None):
            if protocol == "closed_form":
                return _closed_form(protocol, view, inputs.astype(np.float64), cfg, seed, weight)
            return _gradient_head(protocol, view, inputs, cfg, seed, weight, name=name)
        return fit, meta["source"], meta.get("window", window)
    from brainjepa.evaluate.baselines import fc_features

    fc = fc_features(w.data)

    def fit(view: TaskWindows, weight: np.ndarray | None):
        return _closed_form(protocol, view, fc, cfg, seed, weight)
    return fit, None, window


def _fixed_split(w: TaskWindows, fit, cfg: ProtocolConfig) -> dict:
    """Fit on the task's own split: subjects and windows per split, class weights, metrics, predictions, the
    selection (a binary task's threshold chosen on the validation subjects)."""
    task = w.task
    weight = _class_weight(w, cfg)
    predictions, info = fit(w, weight)
    out = {"n_subjects": w.counts(), "n_windows": {s: int(w.mask(s).sum()) for s in ("train", "val", "test")}}
    if task.kind != "regression":
        out["class_weight"] = None if weight is None else [float(v) for v in weight]
    (val_truth, val_pred, _), (test_truth, test_pred, rows) = (_subject_rows(w, s, predictions[s])
                                                               for s in ("val", "test"))
    out["val"], out["test"], threshold = split_metrics(task.kind, (val_truth, val_pred), (test_truth, test_pred),
                                                       w.std)
    out["predictions"] = rows
    out["selected"] = {**info, "threshold": threshold} if task.kind == "binary" else info
    return out


def _resampled(w: TaskWindows, fit, cfg: ProtocolConfig, resampling: Resampling) -> dict:
    """Fit and test on every split of ``resampling`` (:func:`.tasks.resample_splits`): per split its subjects,
    validation and test metrics and selection (``splits``; a binary task's threshold chosen on the split's
    validation subjects); ``val`` the mean of the splits' validation metrics; ``test`` the metrics of each subject's
    test predictions averaged over the splits that test it (in original units for a regression, probabilities for
    a classification; a binary task decides at the median of the splits' thresholds) and ``predictions`` those
    averages, one row per subject; ``n_subjects``: the mean training and validation subjects per split and the
    subjects tested."""
    from brainjepa.evaluate.tasks import resample_splits

    total: dict[str, np.ndarray] = {}
    seen: dict[str, int] = {}
    per_split, counts = [], []
    for split_name, split in resample_splits(w, resampling):
        view = w.resplit(split)
        predictions, info = fit(view, _class_weight(view, cfg))
        (val_truth, val_pred, _), (test_truth, test_pred, _) = (_subject_rows(view, s, predictions[s])
                                                                for s in ("val", "test"))
        val, test, threshold = split_metrics(w.task.kind, (val_truth, val_pred), (test_truth, test_pred), view.std)
        entry = {"split": split_name, "n_subjects": view.counts(), "val": val, "test": test,
                 "selected": {**info, "threshold": threshold} if w.task.kind == "binary" else info}
        subjects, _ = subject_mean(view.subject[view.mask("test")], predictions["test"])
        original = test_pred * view.std + view.mean if w.task.kind == "regression" else test_pred
        for subject, value in zip(subjects, original):
            total[subject] = total.get(subject, 0) + value
            seen[subject] = seen.get(subject, 0) + 1
        per_split.append(entry)
        counts.append(entry["n_subjects"])
    tested = np.isin(w.subject, list(total))
    oof = dataclasses.replace(w, split=np.where(tested, "test", ""))   # on the task's own scale, every method
    average = np.stack([total[s] / seen[s] for s in w.subject[tested]])
    if w.task.kind == "regression":
        average = (average - w.mean) / w.std
    truth, pred, rows = _subject_rows(oof, "test", average)
    val = {k: float(np.nanmean([e["val"][k] for e in per_split])) for k in per_split[0]["val"]}
    selected = {"splits": len(per_split)}
    threshold = None
    if w.task.kind == "binary":   # each split's threshold was chosen on its validation subjects only
        threshold = float(np.median([e["selected"]["threshold"] for e in per_split]))
        selected["threshold"] = threshold
    return {"resampling": dataclasses.asdict(resampling), "splits": per_split, "val": val,
            "test": task_metrics(w.task.kind, truth, pred, w.std, threshold), "predictions": rows,
            "n_subjects": {"train": round(float(np.mean([c["train"] for c in counts])), 1),
                           "val": round(float(np.mean([c["val"] for c in counts])), 1), "test": len(total)},
            "selected": selected}


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0
