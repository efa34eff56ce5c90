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

import json
import logging
import time
from pathlib import Path

import numpy as np

from brainjepa.errors import InputError
from brainjepa.evaluate.config import ProtocolConfig
from brainjepa.evaluate.metrics import task_metrics
from brainjepa.evaluate.tasks import TaskConfig, TaskWindows, load_task, split_manifests, subject_mean

log = logging.getLogger("brainjepa.evaluate")
PROTOCOLS = ("finetune", "linprobe", "attentive", "closed_form")
BASELINES = ("fc_linear", "fc_svm")
TORCH_PROTOCOLS = ("finetune", "linprobe", "attentive")


def parse_method(method: str) -> tuple[str | None, str]:
    """``jepa_finetune`` -> ("jepa", "finetune"); ``fc_svm`` -> (None, "fc_svm")."""
    if method in BASELINES:
        return None, method
    for protocol in PROTOCOLS:
        if method.endswith("_" + protocol) and len(method) > len(protocol) + 1:
            return method[: -len(protocol) - 1], protocol
    raise InputError(f"method {method!r}: expected <encoder>_<protocol> with a protocol of {', '.join(PROTOCOLS)}, "
                     f"or one of {', '.join(BASELINES)}")


def _seed_everything(seed: int, with_torch: bool) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    if with_torch:
        import torch

        torch.manual_seed(seed)


def _features_for(w: TaskWindows, paths: list[str | Path]) -> dict[str, np.ndarray]:
    """The cached features of the task's windows (joined on run_id and window start), in window order."""
    from brainjepa.evaluate.features import read_features

    pooled, rois, found = {}, {}, {}
    for path in paths:
        cache = read_features(path)
        for i, key in enumerate(zip(cache["run_id"], cache["start"])):
            found[(str(key[0]), int(key[1]))] = (path, i)
        pooled[path], rois[path] = cache["pooled"], cache["roi_tokens"]
    keys = [(str(r), int(s)) for r, s in zip(w.run_id, w.start)]
    lost = [k for k in keys if k not in found]
    if lost:
        raise InputError(f"feature cache(s) {[str(p) for p in paths]} lack window {lost[0]} of task {w.task.name} "
                         f"({len(lost)} missing): rebuild the features")
    return {"pooled": np.stack([pooled[found[k][0]][found[k][1]] for k in keys]),
            "roi_tokens": np.stack([rois[found[k][0]][found[k][1]] for k in keys])}


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
    """Fine-tune (inputs: windows) or train a probe (inputs: features) through :func:`.loop.fit`.

    Returns (test predictions per window, selection info)."""
    import torch

    from brainjepa.evaluate import loop
    from brainjepa.train.runtime import autocast_for, setup_distributed

    dist_info, device = setup_distributed(cfg.device)
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    if protocol == "finetune":
        from brainjepa.evaluate.finetune import build_finetune

        x = x.unsqueeze(1)
        section = cfg.finetune
        model, optimizer, lr = build_finetune(encoder, w.n_outputs, section, dist_info.world_size)
    elif protocol == "linprobe":
        from brainjepa.models.heads import LinearProbe

        section = cfg.linprobe
        model = LinearProbe(x.shape[-1], w.n_outputs)
        lr = section.base_lr * section.batch_size * dist_info.world_size / 256
        optimizer = loop.LARS(model.parameters(), lr=lr, weight_decay=section.weight_decay)
    else:
        from brainjepa.models.heads import AttentiveProbe
        from brainjepa.train.pretrain import param_groups

        section = cfg.attentive
        x = x.float()
        model = AttentiveProbe(x.shape[-1], w.n_outputs, section.num_heads)
        lr = section.base_lr * section.batch_size * dist_info.world_size / 256
        groups = param_groups([model])
        groups[0]["weight_decay"] = section.weight_decay
        optimizer = torch.optim.AdamW(groups, lr=lr)
    model.to(device)
    train_module = model
    if dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = lambda: autocast_for(device, cfg.precision)  # noqa: E731
    target = torch.from_numpy(w.target)
    tr, va, te = (w.mask(s) for s in ("train", "val", "test"))
    sample = None
    if protocol == "finetune" and section.temporal_jitter:
        train_index = np.flatnonzero(tr)
        sample = lambda batch, epoch: w.jittered(train_index[batch], seed, epoch)  # noqa: E731
    result = loop.fit(model, optimizer, (x[tr], target[tr]), (x[va], w.target[va], w.subject[va]), w.task.kind,
                      epochs=section.epochs, warmup_epochs=section.warmup_epochs, batch_size=section.batch_size,
                      lr=lr, min_lr=section.min_lr, seed=seed, device=device,
                      autocast=autocast, rank=dist_info.rank,
                      world_size=dist_info.world_size, train_module=train_module, name=name,
                      class_weight=class_weight, sample=sample)
    predictions = {s: loop.predict(model, x[m], w.task.kind, device, 64, autocast)
                   for s, m in (("val", va), ("test", te))}
    info = {"epoch": result.selected_epoch, "history": result.history, "lr": lr}
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
                   features: list[str | Path] | None = None) -> dict:
    """Evaluate one (task, method, seed) on the shards' windows and write its JSON (rank 0); returns the record.

    torch is imported only by the gradient-trained protocols (closed-form and FC jobs start seconds sooner)."""
    from brainjepa.data.shards import load_manifest
    from brainjepa.io import write_text_atomic

    cfg = protocols or ProtocolConfig()
    _, protocol = parse_method(method)
    manifests = split_manifests(shards)
    window = int(load_manifest(manifests["train"])["window"])
    w = load_task(task, manifests, window, with_data=protocol in ("finetune", "fc_linear", "fc_svm"))
    record = evaluate_windows(w, method, seed, cfg, encoder_spec, features)
    if protocol not in TORCH_PROTOCOLS or _rank() == 0:
        write_text_atomic(out, json.dumps(record, indent=1, default=_plain) + "\n")
    return record


def evaluate_windows(w: TaskWindows, method: str, seed: int, protocols: ProtocolConfig | None = None,
                     encoder_spec: dict | None = None, features: list[str | Path] | None = None) -> dict:
    """Evaluate one (task, method, seed) on loaded task windows ``w`` (:func:`.tasks.load_task`; with their
    data for fine-tuning and the FC baselines); returns the JSON record (module docstring). The windows may
    come from elsewhere than the shards (``bench/finetune_positive_control.py`` plants effects into them)."""
    cfg = protocols or ProtocolConfig()
    task = w.task
    encoder_name, protocol = parse_method(method)
    uses_torch = protocol in TORCH_PROTOCOLS
    if uses_torch and cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    name = f"{task.name}/{method}/seed{seed}"
    window = int(w.data.shape[-1]) if w.data is not None else None
    if protocol in ("finetune", "fc_linear", "fc_svm") and w.data is None:
        raise InputError(f"{name}: {protocol} needs the task's windows (load_task with_data=True)")
    _seed_everything(seed, uses_torch)
    weight = _class_weight(w, cfg)
    t0 = time.perf_counter()
    source = None
    if protocol == "finetune":
        from brainjepa.evaluate.encoders import load_encoder

        if encoder_spec is None:
            raise InputError(f"{name}: fine-tuning needs an encoder spec")
        encoder, source = load_encoder(encoder_spec, w.roi_names, window, seed=seed, drop_path=cfg.finetune.drop_path)
        predictions, info = _gradient_head(protocol, w, w.data, cfg, seed, weight, encoder, name)
    elif protocol in ("linprobe", "attentive", "closed_form"):
        if not features:
            raise InputError(f"{name}: {protocol} needs the encoder's feature cache(s)")
        cached = _features_for(w, list(features))
        inputs = cached["roi_tokens"] if protocol == "attentive" else cached["pooled"]
        from brainjepa.evaluate.features import read_features

        meta = read_features(features[0])["meta"]
        source, window = meta["source"], meta.get("window", window)
        if protocol == "closed_form":
            predictions, info = _closed_form(protocol, w, inputs.astype(np.float64), cfg, seed, weight)
        else:
            predictions, info = _gradient_head(protocol, w, inputs, cfg, seed, weight, name=name)
    else:
        from brainjepa.evaluate.baselines import fc_features

        predictions, info = _closed_form(protocol, w, fc_features(w.data), cfg, seed, weight)
    record = {"task": task.name, "kind": task.kind, "label": task.label, "cohorts": list(task.cohorts),
              "method": method, "encoder": encoder_name, "protocol": protocol, "seed": seed, "source": source,
              "n_subjects": w.counts(), "n_windows": {s: int(w.mask(s).sum()) for s in ("train", "val", "test")},
              "window": window}
    if task.kind == "regression":
        record["target"] = {"mean": w.mean, "std": w.std}
    else:
        record["classes"] = w.classes
        record["class_weight"] = None if weight is None else [float(v) for v in weight]
    for split in ("val", "test"):
        truth, pred, rows = _subject_rows(w, split, predictions[split])
        record[split] = task_metrics(task.kind, truth, pred, w.std)
        if split == "test":
            record["predictions"] = rows
    record["selected"] = info
    record["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("%s: test %s (%.1f s)", name, ", ".join(f"{k} {v:.3f}" for k, v in record["test"].items()),
             record["seconds"])
    return record


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
