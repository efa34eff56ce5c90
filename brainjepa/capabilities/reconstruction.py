"""Masked reconstruction quality (BrainLM's headline pretraining metric) of a masked-autoencoder checkpoint.

BrainLM (Ortega Caro et al., 2024), trained at mask ratio 0.75, reports the R^2 of the masked patches on held-out
UK Biobank recordings: 0.402 / 0.389 / 0.343 at mask ratios 0.2 / 0.5 / 0.75.

Here: a brainjepa training checkpoint of the MAE baseline (``objective: mae``; its ``encoder`` and its
``predictor``, the decoder with ``out_dim = patch_size``, :func:`brainjepa.train.pretrain.build_models`) on the
deterministic evaluation windows of the cohorts' validation and test subjects. For each mask ratio in the settings
every window gets a uniform random mask of ``round(ratio x R x W)`` tokens (:func:`brainjepa.train.masks.random_masks`,
as the MAE was trained) drawn from a generator seeded by (seed, the ratio in per mille, the window's run and start),
so the masks do not depend on batching and a seed always gives the same ones. The encoder sees the visible tokens,
the decoder fills the hidden ones (:func:`brainjepa.train.jepa.mae_step` without the loss); scored are the hidden
patches' ``patch_size`` values each, in the shards' robust-scaled units.

Metrics per ratio (``<metric>_mask<percent>``, e.g. ``r2_mask75``), over all masked values of the split:

* ``mse``: the mean of (y - y-hat)^2;
* ``r2`` = 1 - SSE / SST, SST = sum (y - mean(y))^2 around the one global mean of all masked values of the split
  (scikit-learn's ``r2_score`` of the flattened values, BrainLM's ``calculate_r_squared_masked``, here without its
  clip of negative values to 0);
* ``r``: the Pearson correlation of the flattened values.

``per_subject.mse_mask<percent>``: each test subject's mean over its windows of the window's masked MSE.
``details.roi_mean_fill``: the same scores when every hidden patch is filled with the mean of its ROI's visible
values in the window (the window's visible mean for an ROI with none): what the decoder must beat to have learnt
more than each ROI's level.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainjepa.config import from_mapping
from brainjepa.errors import InputError
from brainjepa.evaluate.job import seconds_since
from brainjepa.evaluate.metrics import ScoreAccumulator
from brainjepa.evaluate.record import Record, settings_dict
from brainjepa.train.config import Device, Precision

log = logging.getLogger("brainjepa.evaluate")
WHERE = "evaluate.capabilities.reconstruction.settings"
SPLITS = ("val", "test")


@dataclass(frozen=True)
class ReconstructionConfig:
    """``evaluate.capabilities.reconstruction.settings``."""

    mask_ratios: tuple[float, ...] = (0.2, 0.5, 0.75)   # shares of the R x W tokens hidden
    batch_size: int = 16                                 # windows per forward pass
    device: Device = "auto"
    precision: Precision = "auto"
    threads: int | None = None                           # torch threads (None: torch's default)

    def __post_init__(self) -> None:
        if not self.mask_ratios or any(not 0 < r < 1 for r in self.mask_ratios):
            raise InputError(f"{WHERE}.mask_ratios must list values in (0, 1), not {list(self.mask_ratios)}")
        names = [ratio_name(r) for r in self.mask_ratios]
        if len(set(names)) != len(names):
            raise InputError(f"{WHERE}.mask_ratios {list(self.mask_ratios)}: two ratios round to the same percent "
                             f"({names}), which names the metrics")
        if self.batch_size < 1:
            raise InputError(f"{WHERE}.batch_size must be at least 1")

    @classmethod
    def from_dict(cls, d: dict | None) -> ReconstructionConfig:
        return from_mapping(cls, d or {}, WHERE)


def ratio_name(ratio: float) -> str:
    """0.75 -> "mask75" (the metrics' suffix)."""
    return f"mask{int(round(100 * ratio))}"


# ------------------------------------------------------------------------------------------------- the model
def load_mae(spec: dict, roi_names: list[str], window: int):
    """The encoder and decoder of an MAE checkpoint ``spec`` (``{"kind": "checkpoint", "path": P}``) for inputs
    [B, 1, R, window] with ROIs ``roi_names``. Returns (encoder, decoder, source description)."""
    import torch

    from brainjepa.models import ModelConfig
    from brainjepa.models.weights import load_modules, read_checkpoint

    needs = "reconstruction needs an MAE (objective: mae) checkpoint"
    if not isinstance(spec, dict) or spec.get("kind") != "checkpoint" or "path" not in spec:
        raise InputError(f'encoder spec {spec!r}: {needs}, {{"kind": "checkpoint", "path": ...}}')
    path = Path(spec["path"])
    state = read_checkpoint(path, ("model_config", "encoder", "predictor"), hint=f"; {needs}")
    cfg = ModelConfig.from_checkpoint(state["model_config"], f"{path}: model_config").resolved()
    run_config = state.get("config")
    objective = run_config.get("objective") if isinstance(run_config, dict) else None
    out_dim = state["predictor"].get("proj.weight", torch.empty(0, 0)).shape[0]
    if objective is None:             # a weights file: tell the decoder by its output width
        objective = "mae" if out_dim == cfg.patch_size != cfg.embed_dim else "jepa"
    if objective != "mae" or out_dim != cfg.patch_size:
        raise InputError(f"{path}: a {objective} checkpoint, whose predictor predicts {out_dim}-wide encoder features, "
                         f"not {cfg.patch_size}-step patches: it has no decoder, and {needs}")
    modules, _ = load_modules(path, roi_names, window, ("encoder", "predictor"), out_dim=cfg.patch_size,
                              state=state)
    return modules["encoder"], modules["predictor"], {"kind": "checkpoint", "path": str(path),
                                                      "step": state.get("step"), "objective": objective}


def window_masks(keys: list[str], n_tokens: int, ratio: float, seed: int) -> dict:
    """The masks of windows ``keys`` ("run_id@start") at ``ratio``: :func:`random_masks` with one generator per
    window from (seed, ratio in per mille, the key's stable hash)."""
    from brainjepa.data.schedule import stable_hash
    from brainjepa.train.masks import random_masks

    rngs = [np.random.default_rng([seed, int(round(1000 * ratio)), stable_hash(k)]) for k in keys]
    return random_masks(rngs, n_tokens, ratio)


def roi_mean_fill(patches: np.ndarray, hidden: np.ndarray, n_rois: int) -> np.ndarray:
    """The reference fill: patches [B, R * W, p], hidden [B, R * W] bool -> [B, R * W, p] where every hidden patch
    holds the mean of its ROI's visible values (the window's visible mean for an ROI without any)."""
    b, n, p = patches.shape
    x = patches.reshape(b, n_rois, n // n_rois, p)
    visible = ~hidden.reshape(b, n_rois, n // n_rois, 1)
    counts = visible.sum(axis=(2, 3)) * p                                   # [B, R]
    sums = (x * visible).sum(axis=(2, 3))
    window_mean = sums.sum(axis=1) / np.maximum(counts.sum(axis=1), 1)      # [B]
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), window_mean[:, None])
    fill = np.broadcast_to(mean[:, :, None, None], x.shape)
    return np.where(visible, x, fill).reshape(b, n, p)


def reconstruct_split(encoder, decoder, data: np.ndarray, keys: list[str], ratio: float, seed: int,
                      batch_size: int, device, autocast) -> tuple[ScoreAccumulator, ScoreAccumulator, np.ndarray]:
    """Reconstruct the hidden patches of windows data [N, R, T] at ``ratio``. Returns (scores of the decoder,
    scores of :func:`roi_mean_fill`, per-window masked MSE [N])."""
    import torch

    from brainjepa.models.layers import gather_tokens
    from brainjepa.train.jepa import patch_targets

    cfg = encoder.cfg
    n_tokens, p = cfg.n_tokens, cfg.patch_size
    model_acc, fill_acc, window_mse = ScoreAccumulator(), ScoreAccumulator(), np.empty(len(data))
    encoder.eval()
    decoder.eval()
    for i in range(0, len(data), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(data[i:i + batch_size])).unsqueeze(1).to(device).float()
        masks = window_masks(keys[i:i + batch_size], n_tokens, ratio, seed)
        ctx, tgt = masks["context_idx"].to(device), masks["target_idx"].to(device)
        with torch.no_grad(), autocast():
            pred = decoder(encoder(x, ctx), ctx, tgt)                      # [B, Nt, p]
        patches = patch_targets(x.float(), p)                              # [B, N, p]
        truth = gather_tokens(patches, tgt).cpu().numpy()
        pred = pred.float().cpu().numpy()
        model_acc.add(truth, pred)
        window_mse[i:i + len(x)] = ((truth.astype(np.float64) - pred) ** 2).reshape(len(x), -1).mean(axis=1)
        hidden = np.zeros((len(x), n_tokens), dtype=bool)
        np.put_along_axis(hidden, masks["target_idx"].numpy(), True, axis=1)
        fill = roi_mean_fill(patches.cpu().numpy(), hidden, cfg.n_rois)
        fill_acc.add(truth, np.take_along_axis(fill, masks["target_idx"].numpy()[..., None], axis=1))
    return model_acc, fill_acc, window_mse


# ------------------------------------------------------------------------------------------------- the stage
def run_reconstruction(method: str, seed: int, shards: str | Path, cohorts: list[str], out: str | Path,
                       cfg: ReconstructionConfig | None = None, encoder_spec: dict | None = None) -> dict:
    """The ``reconstruction`` stage: one (MAE checkpoint, seed) -> the capability record at ``out`` (JSON)."""
    from brainjepa.data.shards import load_manifest
    from brainjepa.evaluate.job import one_process, set_threads, torch_job
    from brainjepa.evaluate.tasks import split_manifests, split_windows

    cfg = cfg or ReconstructionConfig()
    if encoder_spec is None:
        raise InputError("reconstruction needs --encoder: the spec of an MAE (objective: mae) checkpoint")
    one_process("reconstruction")
    name = f"reconstruction/{method}/seed{seed}"
    t0 = time.perf_counter()
    set_threads(cfg.threads or 0)
    manifests = split_manifests(shards)
    manifest = load_manifest(manifests["train"])
    window, roi_names = int(manifest["window"]), list(manifest["roi_names"])
    encoder, decoder, source = load_mae(encoder_spec, roi_names, window)
    job = torch_job(cfg.device, cfg.precision)
    encoder.to(job.device)
    decoder.to(job.device)
    windows = split_windows(manifests, list(cohorts), window, splits=SPLITS)
    scores, fill_scores, per_subject, subjects = _score_ratios(encoder, decoder, windows, cfg, seed, job, name)
    n_tokens = encoder.cfg.n_tokens
    details = {"mask_ratios": list(cfg.mask_ratios),
               "n_hidden_tokens": {ratio_name(r): int(min(max(round(r * n_tokens), 1), n_tokens - 1))
                                   for r in cfg.mask_ratios},
               "n_tokens": n_tokens, "patch_size": encoder.cfg.patch_size, "window": window,
               "roi_mean_fill": fill_scores, "device": str(job.device),
               "n_windows": {s: int(len(windows[s].subject)) for s in SPLITS},
               "test_subjects": [str(s) for s in subjects],
               "settings": settings_dict(cfg)}
    return Record("reconstruction", "reconstruction", method, seed, list(cohorts), None, source,
                  {"train": 0, **{s: int(len(set(windows[s].subject))) for s in SPLITS}},
                  scores["val"], scores["test"], per_subject, details, {"epoch": None, "history": []},
                  seconds_since(t0)).write(out)


def _score_ratios(encoder, decoder, windows: dict, cfg: ReconstructionConfig, seed: int, job, name: str):
    """Every mask ratio on every split -> (scores and ROI-mean-fill scores per split, ``<metric>_<ratio>`` ->
    value; per test subject MSE per ratio; the test subjects)."""
    from brainjepa.evaluate.tasks import subject_mean

    scores = {s: {} for s in SPLITS}
    fill_scores = {s: {} for s in SPLITS}
    per_subject, subjects = {}, []
    for ratio in cfg.mask_ratios:
        suffix = ratio_name(ratio)
        for split in SPLITS:
            w = windows[split]
            keys = [f"{r}@{s}" for r, s in zip(w.run_id, w.start)]
            model_acc, fill_acc, window_mse = reconstruct_split(encoder, decoder, w.data, keys, ratio, seed,
                                                                cfg.batch_size, job.device, job.autocast)
            for metric, value in model_acc.scores().items():
                scores[split][f"{metric}_{suffix}"] = value
            for metric, value in fill_acc.scores().items():
                fill_scores[split][f"{metric}_{suffix}"] = value
            if split == "test":
                subjects, mse = subject_mean(w.subject, window_mse)
                per_subject[f"mse_{suffix}"] = [float(v) for v in mse]
        log.info("%s: mask ratio %.2f: test R2 %.4f, MSE %.4f (ROI-mean fill R2 %.4f)", name, ratio,
                 scores["test"][f"r2_{suffix}"], scores["test"][f"mse_{suffix}"], fill_scores["test"][f"r2_{suffix}"])
    return scores, fill_scores, per_subject, subjects
