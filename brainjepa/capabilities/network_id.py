"""Functional-network identification (BrainLM's parcel classification) for any encoder, and the raw baseline.

Which network does an ROI belong to, judged from one recording alone? BrainLM (Ortega Caro et al., 2024)
classifies each parcel's Yeo network from features of one recording, training on 80 % of the parcels and
testing on the rest: 58.8 % from attention weights, 39.2 % from the raw signal, 49.4 % VAE, 25.9 % GCN.

Per-ROI features of one recording (one deterministic evaluation window, :func:`window_starts` ``mode="eval"``):

* ``embedding``: the encoder's output tokens of the ROI averaged over its time patches, [R, D]
  (:func:`brainjepa.evaluate.features.extract`'s ``roi_tokens``);
* ``attention``: the ROI's attention row of one block (``layer``, default the last) from the exact attention
  path, [R, R]: weights [H, N, N] averaged over the heads and the query ROI's time-patch tokens, summed over
  each key ROI's time-patch tokens (:func:`roi_attention_rows`; each row sums to 1);
* ``raw``: the ROI's scaled time series of the window, [R, T] (the baseline; no encoder).

Protocol: the ROIs with a network (the label table's ``network_column``, ROIs matched by name to the shards')
are split once per seed, stratified by network, into ``1 - test_fraction`` training and ``test_fraction``
test ROIs (:func:`stratified_roi_split`: every network in both parts; the same split for every recording of
a seed). Per recording, a logistic regression (scikit-learn, L2, on features standardised over that
recording's training ROIs) is fitted on the training ROIs and scores the test ROIs: accuracy and balanced
accuracy. A subject's score is the mean over its recordings; a split's score the mean over its subjects.
The inverse regularisation ``C`` is chosen from ``c_grid`` by the validation subjects' mean balanced accuracy
(a one-value grid fixes it) and the test subjects are scored once with it. Training subjects are not used:
every classifier sees one recording only. Networks with fewer than 2 ROIs (which cannot be in both parts)
are left out of the scoring with a logged warning. Chance: 1 / networks (uniform guess, and the balanced
accuracy of any constant guess) and the test share of the training ROIs' majority network (majority guess).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from brainjepa.config import from_mapping
from brainjepa.errors import InputError
from brainjepa.evaluate.job import seconds_since
from brainjepa.evaluate.record import Record, settings_dict
from brainjepa.train.config import Device, Precision

log = logging.getLogger("brainjepa.evaluate")
Features = Literal["embedding", "attention", "raw"]
FEATURES: tuple[str, ...] = ("embedding", "attention", "raw")
SPLITS = ("val", "test")


@dataclass(frozen=True)
class NetworkIdConfig:
    """``evaluate.capabilities.network_id.settings``."""

    network_column: str = "network"            # the label table's column naming each ROI's network
    networks: tuple[str, ...] = ()             # the networks to classify (empty: every network of the table)
    test_fraction: float = 0.2                 # share of the scored ROIs held out per recording
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)   # logistic-regression C, chosen on val
    max_iter: int = 200                        # lbfgs iterations per classifier
    layer: int = -1                            # attention features: the block (negative: from the end)
    batch_size: int = 8                        # windows per encoder pass (one [B, H, N, N] at a time)
    device: Device = "auto"
    precision: Precision = "auto"
    threads: int | None = None                 # torch threads (None: torch's default)

    def __post_init__(self) -> None:
        where = "evaluate.capabilities.network_id.settings"
        if not 0 < self.test_fraction < 1:
            raise InputError(f"{where}.test_fraction must be in (0, 1), not {self.test_fraction}")
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise InputError(f"{where}.c_grid must list at least one positive value, not {list(self.c_grid)}")
        if self.batch_size < 1 or self.max_iter < 1:
            raise InputError(f"{where}: batch_size and max_iter must be at least 1")

    @classmethod
    def from_dict(cls, d: dict | None) -> NetworkIdConfig:
        return from_mapping(cls, d or {}, "evaluate.capabilities.network_id.settings")


# ------------------------------------------------------------------------------------------------- ROIs
def roi_networks(labels: pd.DataFrame, roi_names: list[str], column: str, source: str) -> np.ndarray:
    """Each shard ROI's network [R] (str), matched by name in the label table ``labels`` (from ``source``).

    Every shard ROI must have a row and a non-empty network; extra rows of the table are ignored."""
    if column not in labels.columns:
        raise InputError(f"{source}: no network column {column!r} (columns: {', '.join(map(str, labels.columns))})")
    names = labels["name"].astype(str)
    duplicated = sorted(set(names[names.duplicated()]))
    if duplicated:
        raise InputError(f"{source}: ROI names are not unique ({duplicated[:5]})")
    lookup = dict(zip(names, labels[column]))
    missing = [r for r in roi_names if r not in lookup]
    if missing:
        raise InputError(f"{source}: ROI {missing[0]!r} of the shards is not in the label table "
                         f"({len(missing)} missing)")
    empty = [r for r in roi_names if pd.isna(lookup[r]) or not str(lookup[r]).strip()]
    if empty:
        raise InputError(f"{source}: ROI {empty[0]!r} has no {column!r} value ({len(empty)} without)")
    return np.array([str(lookup[r]).strip() for r in roi_names])


def scored_networks(networks: np.ndarray, wanted: tuple[str, ...] = ()) -> tuple[np.ndarray, list[str], list[str]]:
    """ROI networks [R] -> (mask [R] of the scored ROIs, scored networks in order of appearance, excluded ones).

    Only ``wanted`` networks are kept (all when empty; an unknown name is an error); a network with fewer
    than 2 ROIs is excluded with a warning."""
    order = [str(n) for n in dict.fromkeys(networks)]  # plain str: the names go into messages and records
    unknown = [n for n in wanted if n not in order]
    if unknown:
        raise InputError(f"network(s) {unknown} of the settings are not in the label table ({', '.join(order)})")
    keep = [n for n in order if not wanted or n in wanted]
    small = [n for n in keep if int((networks == n).sum()) < 2]
    for n in small:
        log.warning("network %s has %d ROI: left out of the network identification (needs 2: one to train, "
                    "one to test)", n, int((networks == n).sum()))
    scored = [n for n in keep if n not in small]
    if len(scored) < 2:
        raise InputError(f"network identification needs at least 2 networks with 2+ ROIs, got {scored}")
    return np.isin(networks, scored), scored, small


def stratified_roi_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class labels y [R] (ints, every class with 2+ members) -> (train indices, test indices), sorted.

    Each class gets ``floor(test_fraction * n_c)`` test members, at least 1 and at most ``n_c - 1``; the
    remainder up to ``round(test_fraction * R)`` goes to the classes with the largest fractional parts (ties
    broken by the seed). Members are drawn by a seeded permutation: the same seed gives the same split."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        raise InputError(f"a stratified ROI split needs 2+ ROIs per network, class(es) "
                         f"{classes[counts < 2].tolist()} have 1")
    exact = test_fraction * counts
    n_test = np.clip(np.floor(exact).astype(int), 1, counts - 1)
    left = int(round(test_fraction * len(y))) - int(n_test.sum())
    remainder = exact - np.floor(exact)
    order = np.lexsort((rng.permutation(len(classes)), -remainder))    # largest remainder first, seeded ties
    for k in order:
        if left <= 0:
            break
        if n_test[k] < counts[k] - 1:
            n_test[k] += 1
            left -= 1
    test = []
    for c, n in zip(classes, n_test):
        members = np.flatnonzero(y == c)
        test.extend(rng.permutation(members)[:n])
    test = np.sort(np.array(test, dtype=int))
    return np.setdiff1d(np.arange(len(y)), test), test


# ------------------------------------------------------------------------------------------------- features
def roi_attention_rows(weights, n_rois: int, n_patches: int):
    """Attention weights [B, H, N, N] (N = R * W, ROI-major) -> per-ROI attention rows [B, R, R] float32.

    Row i: the weights that ROI i's time-patch tokens put on the tokens of each key ROI j, averaged over the
    heads and the query tokens, summed over key ROI j's time patches (rows sum to 1)."""
    w = weights.float().mean(dim=1)                                          # [B, N, N]
    b = w.shape[0]
    return w.reshape(b, n_rois, n_patches, n_rois, n_patches).mean(dim=2).sum(dim=-1)


def attention_features(encoder, data: np.ndarray, layer: int, device, batch_size: int = 8,
                       autocast=None) -> np.ndarray:
    """data [N, R, T] -> per-ROI attention rows [N, R, R] float32 of block ``layer``, ``batch_size`` windows per
    pass (only one [B, H, N, N] weight tensor exists at a time)."""
    from contextlib import nullcontext

    import torch

    encoder.eval()
    n_rois, n_patches = encoder.cfg.n_rois, encoder.cfg.n_time_patches
    out = []
    for i in range(0, len(data), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(data[i:i + batch_size])).unsqueeze(1).to(device)
        with torch.no_grad(), (autocast() if autocast else nullcontext()):
            _, (weights,) = encoder.forward_with_attention(x, layers=[layer])
            out.append(roi_attention_rows(weights, n_rois, n_patches).cpu().numpy())
            del weights
    return np.concatenate(out)


def recording_features(kind: str, data: np.ndarray, encoder=None, cfg: NetworkIdConfig | None = None,
                       device="cpu", autocast=None) -> np.ndarray:
    """Per-ROI features [N, R, F] of windows [N, R, T]: embedding (F = D), attention (F = R) or raw (F = T)."""
    cfg = cfg or NetworkIdConfig()
    if kind == "raw":
        return np.asarray(data, dtype=np.float32)
    if encoder is None:
        raise InputError(f"--features {kind} needs an encoder (--encoder)")
    if kind == "embedding":
        from brainjepa.evaluate.features import extract

        _, rois = extract(encoder, data, encoder.cfg.n_time_patches, device, cfg.batch_size, autocast)
        return rois.astype(np.float32)
    if kind == "attention":
        return attention_features(encoder, data, cfg.layer, device, cfg.batch_size, autocast)
    raise InputError(f"--features must be one of {', '.join(FEATURES)}, not {kind!r}")


# ------------------------------------------------------------------------------------------------- scoring
def score_recording(features: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                    c_values: tuple[float, ...], max_iter: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """One recording's ROI features [R, F] and networks y [R] -> (scores [C, 2]: accuracy and balanced accuracy
    on the test ROIs, predictions [C, n_test]) of a standardised L2 logistic regression fitted on the training
    ROIs, per value of ``c_values``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features[train])
    x_train, x_test = scaler.transform(features[train]), scaler.transform(features[test])
    out, predictions = np.empty((len(c_values), 2)), np.empty((len(c_values), len(test)), dtype=int)
    for k, c in enumerate(c_values):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            predictions[k] = LogisticRegression(C=c, max_iter=max_iter).fit(x_train, y[train]).predict(x_test)
        out[k] = np.mean(predictions[k] == y[test]), balanced_accuracy_score(y[test], predictions[k])
    return out, predictions


def subject_scores(subject: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-recording scores [N, ...] -> (sorted subjects [S], their mean over recordings [S, ...])."""
    from brainjepa.evaluate.tasks import subject_mean

    flat = scores.reshape(len(scores), -1)
    subjects, means = subject_mean(subject, flat)
    return subjects, means.reshape((len(subjects),) + scores.shape[1:])


def chance_levels(y: np.ndarray, train: np.ndarray, test: np.ndarray, n_classes: int) -> dict[str, float]:
    """Uniform guessing (1 / networks; also the balanced accuracy of any constant guess) and the accuracy of
    always guessing the training ROIs' majority network."""
    majority = np.bincount(y[train], minlength=n_classes).argmax()
    return {"uniform": 1.0 / n_classes, "majority": float(np.mean(y[test] == majority))}


# ------------------------------------------------------------------------------------------------- the stage
def run_network_id(features: str, method: str, seed: int, shards: str | Path, cohorts: list[str],
                   labels_path: str | Path, out: str | Path, cfg: NetworkIdConfig | None = None,
                   encoder_spec: dict | None = None) -> dict:
    """The ``network-id`` stage: one (features, method, seed) -> the capability record at ``out`` (JSON)."""
    from brainjepa.data.shards import load_manifest
    from brainjepa.evaluate.tasks import split_manifests, split_windows
    from brainjepa.preprocess.atlas import read_label_table

    cfg = cfg or NetworkIdConfig()
    _check_features(features, encoder_spec)
    t0 = time.perf_counter()
    manifests = split_manifests(shards)
    manifest = load_manifest(manifests["train"])
    window, roi_names = int(manifest["window"]), list(manifest["roi_names"])
    networks = roi_networks(read_label_table(labels_path), roi_names, cfg.network_column, str(labels_path))
    mask, scored, excluded = scored_networks(networks, cfg.networks)
    y = np.array([scored.index(n) for n in networks[mask]])
    train, test = stratified_roi_split(y, cfg.test_fraction, seed)
    windows = split_windows(manifests, list(cohorts), window)
    source, encoder, job = None, None, None
    if features != "raw":
        from brainjepa.evaluate.encoders import load_encoder
        from brainjepa.evaluate.job import torch_job

        job = torch_job(cfg.device, cfg.precision, threads=cfg.threads or 0, seed=seed)
        encoder, source = load_encoder(encoder_spec, roi_names, window, seed=seed)
        encoder.to(job.device)
    rois = _Rois(y, mask, train, test, scored)
    s = _score(features, windows, encoder, job, cfg, rois)
    details = {
        "features": features, "feature_dim": s["feature_dim"], "window": window,
        "layer": cfg.layer if features == "attention" else None,
        "networks": scored, "excluded_networks": excluded,
        "n_rois": {"train": int(len(train)), "test": int(len(test)), "unscored": int((~mask).sum())},
        "rois_per_network": {n: {"train": int((y[train] == k).sum()), "test": int((y[test] == k).sum())}
                             for k, n in enumerate(scored)},
        "test_rois": [str(r) for r in np.array(roi_names)[mask][test]],
        "chance": chance_levels(y, train, test, len(scored)),
        "test_recall_per_network": s["recall"],            # over all test recordings, at the selected C
        "position_only": s["position_only"],
        "n_recordings": {k: int(len(windows[k].subject)) for k in SPLITS},
        "test_subjects": [str(v) for v in s["subjects"]],
        "settings": settings_dict(cfg),
    }
    record = Record("network_id", "network_id", method, seed, list(cohorts), cfg.network_column, source,
                    {"train": 0, "val": int(len(set(windows["val"].subject))), "test": int(len(s["subjects"]))},
                    s["val"], s["test"], s["per_subject"], details, s["selected"], seconds_since(t0))
    log.info("network_id/%s/seed%d (%s features): test accuracy %.3f, balanced %.3f (chance %.3f), C %g, %.1f s",
             method, seed, features, record.test["accuracy"], record.test["balanced_accuracy"],
             1.0 / len(scored), s["selected"]["C"], record.seconds)
    return record.write(out)


def _check_features(features: str, encoder_spec: dict | None) -> None:
    if features not in FEATURES:
        raise InputError(f"--features must be one of {', '.join(FEATURES)}, not {features!r}")
    if features == "raw" and encoder_spec is not None:
        raise InputError("--features raw reads the time series: give no --encoder")
    if features != "raw" and encoder_spec is None:
        raise InputError(f"--features {features} needs an encoder (--encoder)")


@dataclass(frozen=True)
class _Rois:
    """The scored ROIs: networks y [R_scored], mask [R] of the scored ROIs, train/test ROI indices, network names."""

    y: np.ndarray
    mask: np.ndarray
    train: np.ndarray
    test: np.ndarray
    scored: list[str]


def _score(features: str, windows: dict, encoder, job, cfg: NetworkIdConfig, rois: _Rois) -> dict:
    """Score every val and test recording over the C grid, select C on the validation subjects' mean balanced
    accuracy and report the test subjects at that C: val, test, per_subject, selected, recall, position_only."""
    device, autocast = (job.device, job.autocast) if job is not None else ("cpu", None)
    y, mask, train, test = rois.y, rois.mask, rois.train, rois.test
    scores, predictions = {}, {}
    for split in SPLITS:
        feats = recording_features(features, windows[split].data, encoder, cfg, device, autocast)[:, mask]
        results = [score_recording(f, y, train, test, cfg.c_grid, cfg.max_iter) for f in feats]
        scores[split] = np.stack([r[0] for r in results])                              # [N, C, 2]
        predictions[split] = np.stack([r[1] for r in results])                         # [N, C, n_test]
    _, val_subject = subject_scores(windows["val"].subject, scores["val"])          # [S, C, 2]
    val_mean = val_subject.mean(axis=0)                                                 # [C, 2]
    best = int(np.argmax(val_mean[:, 1]))                                               # first max: smallest C
    subjects, test_subject = subject_scores(windows["test"].subject, scores["test"][:, best])   # [S, 2]
    hits = predictions["test"][:, best] == y[test]                                      # [N, n_test]
    position_only = None
    if encoder is not None:     # what the ROI's position embedding alone gives: the features of an all-zero window
        zero = np.zeros((1,) + windows["test"].data.shape[1:], dtype=np.float32)
        feats = recording_features(features, zero, encoder, cfg, device, autocast)[0, mask]
        acc, bacc = score_recording(feats, y, train, test, (cfg.c_grid[best],), cfg.max_iter)[0][0]
        position_only = {"accuracy": float(acc), "balanced_accuracy": float(bacc)}
    history = [{"C": float(c), "val_accuracy": float(v[0]), "val_balanced_accuracy": float(v[1])}
               for c, v in zip(cfg.c_grid, val_mean)]
    return {
        "val": {"accuracy": float(val_mean[best, 0]), "balanced_accuracy": float(val_mean[best, 1])},
        "test": {"accuracy": float(test_subject[:, 0].mean()), "balanced_accuracy": float(test_subject[:, 1].mean())},
        "per_subject": {"accuracy": [float(v) for v in test_subject[:, 0]],
                        "balanced_accuracy": [float(v) for v in test_subject[:, 1]]},
        "selected": {"epoch": None, "C": float(cfg.c_grid[best]), "history": history},
        "recall": {n: float(hits[:, y[test] == k].mean()) for k, n in enumerate(rois.scored)},
        "position_only": position_only, "subjects": subjects, "feature_dim": int(feats.shape[-1]),
    }
