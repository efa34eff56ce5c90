"""Frozen features of an encoder, extracted once per (encoder, cohort) and cached for every probe.

Per evaluation window: ``pooled`` [D], the mean over all tokens of the encoder's output (what the linear and
closed-form probes read), and ``roi_tokens`` [R, D] float16, each ROI's tokens averaged over its time
patches (what the attentive probe attends over: it keeps which ROI carries a feature, at R x D per window
instead of R x W x D, which for 450 ROIs and ViT-B is 5 GB per 8,000 windows instead of 55 GB).

The cache (``.npz``, written atomically): ``run_id``, ``start``, ``pooled`` (float32), ``roi_tokens``
(float16) and ``meta`` (JSON: the encoder spec and its source, the window, the ROI names).

Readouts (:func:`readout_features`), what a probe reads of a window: ``mean`` (the pooled features), ``roi`` (every
ROI's embedding, R x D) and ``cross_roi`` (how the ROIs' embeddings correlate with each other, the feature
dimension playing the part of time in FC: R (R - 1) / 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from brainjepa.errors import InputError

Readout = Literal["mean", "roi", "cross_roi"]
READOUTS = ("mean", "roi", "cross_roi")


def readout_features(pooled: np.ndarray, roi_tokens: np.ndarray, readout: str) -> np.ndarray:
    """A readout of extracted features (:func:`extract`): pooled [N, D], roi_tokens [N, R, D] -> ``mean`` [N, D],
    ``roi`` [N, R D] or ``cross_roi`` [N, R (R - 1) / 2] (the Fisher-z correlation between ROIs of their
    embeddings, over the feature dimension), float32."""
    from brainjepa.evaluate.baselines import fc_features

    if readout == "mean":
        return np.asarray(pooled, dtype=np.float32)
    if readout == "roi":
        return np.asarray(roi_tokens, dtype=np.float32).reshape(len(roi_tokens), -1)
    if readout == "cross_roi":
        return fc_features(np.asarray(roi_tokens, dtype=np.float32))
    raise InputError(f"unknown readout {readout!r}; allowed: {', '.join(READOUTS)}")


def extract(encoder, data: np.ndarray, n_time_patches: int, device, batch_size: int = 32,
            autocast=None) -> tuple[np.ndarray, np.ndarray]:
    """data [N, R, T] -> (pooled [N, D] float32, roi_tokens [N, R, D] float16). Encoder in eval mode.

    (torch is imported here, not with the module: reading a cache, as the closed-form heads do, needs none.)"""
    from contextlib import nullcontext

    import torch

    encoder.eval()
    pooled, rois = [], []
    for i in range(0, len(data), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(data[i:i + batch_size])).unsqueeze(1).to(device)
        with torch.no_grad(), (autocast() if autocast else nullcontext()):
            tokens = encoder(x).float()                                   # [B, R*W, D]
        b, _, d = tokens.shape
        pooled.append(tokens.mean(dim=1).cpu().numpy())
        rois.append(tokens.reshape(b, -1, n_time_patches, d).mean(dim=2).half().cpu().numpy())
    return np.concatenate(pooled), np.concatenate(rois)


def write_features(path: str | Path, run_id: np.ndarray, start: np.ndarray, pooled: np.ndarray,
                   roi_tokens: np.ndarray, meta: dict) -> None:
    from brainjepa.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, run_id=run_id.astype(str), start=start.astype(np.int64), pooled=pooled,
                     roi_tokens=roi_tokens, meta=np.array(json.dumps(meta, sort_keys=True)))


def read_features(path: str | Path) -> dict:
    """The arrays of a cache and its ``meta`` dict; an unreadable file is an InputError naming it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in ("run_id", "start", "pooled", "roi_tokens")}
            out["meta"] = json.loads(str(f["meta"]))
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a feature cache ({exc})") from None
    return out


def run_features(encoder_spec: dict, shards: str | Path, cohorts: list[str], out: str | Path,
                 seed: int = 0, device_kind: str = "auto", precision: str = "auto", batch_size: int = 32) -> None:
    """The ``features`` stage: every train/val/test window of the cohorts through one frozen encoder."""
    import logging
    import time

    from brainjepa.data.shards import load_manifest
    from brainjepa.evaluate.encoders import load_encoder
    from brainjepa.evaluate.tasks import cohort_windows, split_manifests
    from brainjepa.train.runtime import autocast_for, setup_distributed

    manifests = split_manifests(shards)
    window = int(load_manifest(manifests["train"])["window"])
    run_id, start, data, names = cohort_windows(manifests, cohorts, window)
    _, device = setup_distributed(device_kind)
    encoder, source = load_encoder(encoder_spec, names, window, seed=seed)
    encoder.to(device)
    t0 = time.perf_counter()
    pooled, rois = extract(encoder, data, encoder.cfg.n_time_patches, device, batch_size,
                           lambda: autocast_for(device, precision))
    seconds = time.perf_counter() - t0
    logging.getLogger("brainjepa.evaluate").info("%s: %d windows of %s in %.1f s (%.1f windows/s)", out, len(data),
                                                 ",".join(cohorts), seconds, len(data) / max(seconds, 1e-9))
    meta = {"encoder": encoder_spec, "source": source, "window": window, "roi_names": names, "cohorts": cohorts}
    write_features(out, run_id, start, pooled, rois, meta)
