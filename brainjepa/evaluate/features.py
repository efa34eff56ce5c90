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


def extract_batches(encoder, data, n_time_patches: int, device, batch_size: int = 32, autocast=None):
    """data [N, R, T] (an array, or a :class:`brainjepa.evaluate.tasks.ShardWindows` that reads its windows as
    sliced) -> per batch of ``batch_size`` windows, in order: (pooled [B, D] float32, roi_tokens [B, R, D]
    float16). Encoder in eval mode. Only one batch is held at a time.

    (torch is imported here, not with the module: reading a cache, as the closed-form heads do, needs none.)"""
    from contextlib import nullcontext

    import torch

    encoder.eval()
    for i in range(0, len(data), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(data[i:i + batch_size])).unsqueeze(1).to(device)
        with torch.no_grad(), (autocast() if autocast else nullcontext()):
            tokens = encoder(x).float()                                   # [B, R*W, D]
        b, _, d = tokens.shape
        yield (tokens.mean(dim=1).cpu().numpy(),
               tokens.reshape(b, -1, n_time_patches, d).mean(dim=2).half().cpu().numpy())


def extract(encoder, data: np.ndarray, n_time_patches: int, device, batch_size: int = 32,
            autocast=None) -> tuple[np.ndarray, np.ndarray]:
    """data [N, R, T] -> (pooled [N, D] float32, roi_tokens [N, R, D] float16): :func:`extract_batches`, joined."""
    pooled, rois = zip(*extract_batches(encoder, data, n_time_patches, device, batch_size, autocast))
    return np.concatenate(pooled), np.concatenate(rois)


def _npy_member(archive, name: str, dtype: np.dtype, shape: tuple[int, ...]):
    """An open ``<name>.npy`` member of a zip ``archive`` (as :func:`numpy.savez` writes it) with its header
    written: the caller writes the C-order bytes of ``shape`` elements of ``dtype`` and closes it."""
    member = archive.open(f"{name}.npy", "w", force_zip64=True)
    np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": tuple(shape)})
    return member


def write_features(path: str | Path, run_id: np.ndarray, start: np.ndarray, pooled: np.ndarray,
                   roi_tokens, meta: dict) -> None:
    """Write a cache (module docstring), atomically. ``roi_tokens``: [N, R, D] float16, or an iterable of
    [B, R, D] float16 batches (N rows in all), written as they come: the cache's ROI tokens are then never all
    in memory. ``pooled`` [N, D] float32, or a list that the batches' caller fills (it is written last)."""
    import zipfile

    from brainjepa.io import atomic_path

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in (("run_id", run_id.astype(str)), ("start", start.astype(np.int64))):
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            n = len(run_id)
            written = 0
            member = None
            for batch in ([roi_tokens] if isinstance(roi_tokens, np.ndarray) else roi_tokens):
                batch = np.ascontiguousarray(batch, dtype=np.float16)
                if member is None:
                    member = _npy_member(archive, "roi_tokens", np.float16, (n, *batch.shape[1:]))
                member.write(batch.tobytes())
                written += len(batch)
            if member is None:
                raise ValueError(f"{path}: no ROI tokens to write")
            member.close()
            if written != n:
                raise ValueError(f"{path}: {written} windows of ROI tokens for {n} window keys")
            pooled = np.asarray(np.concatenate(pooled) if isinstance(pooled, list) else pooled, dtype=np.float32)
            for name, array in (("pooled", pooled), ("meta", np.array(json.dumps(meta, sort_keys=True)))):
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def read_features(path: str | Path, tokens: bool = True) -> dict:
    """The arrays of a cache and its ``meta`` dict (without ``tokens``, ``roi_tokens`` is not read and is None);
    an unreadable file is an InputError naming it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in ("run_id", "start", "pooled", *(("roi_tokens",) if tokens else ()))}
            out.setdefault("roi_tokens", None)
            out["meta"] = json.loads(str(f["meta"]))
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a feature cache ({exc})") from None
    return out


def run_features(encoder_spec: dict, shards: str | Path, cohorts: list[str], out: str | Path,
                 seed: int = 0, device_kind: str = "auto", precision: str = "auto", batch_size: int = 32) -> None:
    """The ``features`` stage: every train/val/test window of the cohorts through one frozen encoder, the windows
    read from the shards one batch at a time and the ROI tokens written as they come (the memory held does not
    grow with the cohorts but for the pooled features, D floats per window)."""
    import logging
    import time

    from brainjepa.data.shards import load_manifest
    from brainjepa.evaluate.encoders import load_encoder
    from brainjepa.evaluate.job import torch_job
    from brainjepa.evaluate.tasks import cohort_windows, split_manifests

    manifests = split_manifests(shards)
    window = int(load_manifest(manifests["train"])["window"])
    run_id, start, data, names = cohort_windows(manifests, cohorts, window)   # read batch by batch
    job = torch_job(device_kind, precision)
    encoder, source = load_encoder(encoder_spec, names, window, seed=seed)
    encoder.to(job.device)
    t0 = time.perf_counter()
    pooled: list[np.ndarray] = []

    def tokens():
        for batch_pooled, batch_rois in extract_batches(encoder, data, encoder.cfg.n_time_patches, job.device,
                                                        batch_size, job.autocast):
            pooled.append(batch_pooled)
            yield batch_rois

    meta = {"encoder": encoder_spec, "source": source, "window": window, "roi_names": names, "cohorts": cohorts}
    write_features(out, run_id, start, pooled, tokens(), meta)
    seconds = time.perf_counter() - t0
    logging.getLogger("brainjepa.evaluate").info("%s: %d windows of %s in %.1f s (%.1f windows/s)", out, len(data),
                                                 ",".join(cohorts), seconds, len(data) / max(seconds, 1e-9))
