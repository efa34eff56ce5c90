"""The pretraining objectives: JEPA (:func:`jepa_step`) and the masked-autoencoder baseline (:func:`mae_step`).

JEPA: normalised EMA-target features, the masked regression loss, one micro-batch's loss.

Per micro-batch: the EMA target encoder sees the whole input (no grad), its output is layer-normalised (no
affine) and gathered at the target tokens; the encoder sees the context tokens only; the predictor predicts
the targets; the loss is MSE (paper) or smooth L1 (public code) over the valid target tokens.

``optim.target_norm: layer_centered`` (not in the paper) guards against positional collapse: the part of a
layer-normed target that is the same for every sample at a token position (its positional embedding's
imprint) is subtracted (the mean over the micro-batch at that position) and the rest is layer-normed again,
so the loss is about content only and shrinking content cannot lower it. Measured on the demo
(``bench/experiments/jepa_synchrony.py``): with ``layer`` the tiny model's loss settles at the position-only level and
the content of its targets shrinks; with ``layer_centered`` the loss falls below it.

``optim.regularizer`` (``sigreg`` | ``vicreg``, :mod:`.regularizers`) adds ``optim.regularizer_weight * R`` to
either objective's loss, ``R`` computed on the context encoder's output per token position across the global
batch; monitor ``regularizer`` (``R``, unweighted). ``optim.mae_targets: patch_norm`` (mae only) normalises each
hidden patch's target values by their own mean and standard deviation (MAE's ``norm_pix_loss``).
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F

from brainjepa.config import choices
from brainjepa.errors import InputError
from brainjepa.models.layers import gather_tokens
from brainjepa.train.config import Loss, OptimConfig, TargetNorm
from brainjepa.train.regularizers import Regularizer

LOSSES = choices(Loss)  # the config's lists, not copies
TARGET_NORMS = choices(TargetNorm)
MAE_TARGETS = choices(typing.get_type_hints(OptimConfig)["mae_targets"])
REGION_LOSSES = ("loss_alpha", "loss_beta", "loss_gamma")  # target_region codes 0, 1, 2


def masked_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str,
                n_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over valid target tokens and features. pred, target: [B, Nt, D]; valid: [B, Nt] bool.

    n_valid: the number of valid tokens to divide by (default: ``valid.sum()``); under DDP, the global batch's
    count divided by the world size, so that DDP's mean over ranks is the global batch's mean.
    """
    if kind == "mse":
        per = F.mse_loss(pred, target, reduction="none")
    elif kind == "smooth_l1":
        per = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
    else:
        raise InputError(f"optim.loss must be one of {', '.join(LOSSES)}, not {kind!r}")
    weight = valid.unsqueeze(-1).to(per.dtype)
    count = weight.sum() if n_valid is None else n_valid.to(per.dtype)
    return (per * weight).sum() / (count * per.shape[-1]).clamp_min(1.0)


def normalize_targets(h: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Target-encoder output -> (regression targets [B, N, D] float32, collapse monitor (scalar)).

    h: [B, N, D], all tokens. ``layer`` (paper): layer norm without affine. ``layer_centered``: layer norm,
    minus the mean over the batch at each token position, layer norm again (needs B >= 2). The monitor
    (``target_std``) is the spread across the batch of the layer-normed features, whatever ``kind`` is:
    ~0 when every sample's targets are the same (positional or total collapse).
    """
    if kind not in TARGET_NORMS:
        raise InputError(f"optim.target_norm must be one of {TARGET_NORMS}, not {kind!r}")
    h = F.layer_norm(h.float(), (h.shape[-1],))
    target_std = h.std(dim=0).mean() if h.shape[0] > 1 else h.new_full((), float("nan"))  # undefined for B = 1
    if kind == "layer_centered":
        if h.shape[0] < 2:
            raise InputError("optim.target_norm 'layer_centered' needs at least 2 samples per micro-batch "
                             f"(data.batch_size), got {h.shape[0]}")
        h = F.layer_norm(h - h.mean(dim=0, keepdim=True), (h.shape[-1],))
    return h, target_std


def add_regularizer(loss: torch.Tensor, monitors: dict, regularizer: Regularizer | None, z: torch.Tensor,
                    batch: dict, n_positions: int) -> torch.Tensor:
    """``loss + weight * R`` with ``R`` on the context encoder's output z: [B, K, D] at ``batch["context_idx"]``
    (all of the global batch's samples at each position); ``monitors["regularizer"] = R``. No-op for None.

    Under DDP every rank adds the same global ``R``; see :mod:`.regularizers` for why its gradient needs no
    scaling (DDP's mean over ranks gives the single-process gradient).
    """
    if regularizer is None:
        return loss
    value = regularizer(z, batch["context_idx"], batch["context_valid"], n_positions)
    monitors["regularizer"] = value.detach()
    return loss + regularizer.weight * value


def encode_and_predict(encoder, predictor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The context encoder's output z [B, Nc, D] and the predictor's [B, Nt, out_dim] for a collated batch.

    The collator's host-side ``context_lengths``/``target_lengths`` reach the models (no device read decides it):
    a batch with nothing padded (``random``, ``reference``) attends without a mask, so SDPA may use its flash
    kernel; a padded one (``paper``) is packed, so no padded token is computed. A batch without them (built by
    hand) takes the key-padding-mask path of ``context_valid``/``target_valid``.
    """
    c_len, t_len = batch.get("context_lengths"), batch.get("target_lengths")
    z = encoder(batch["x"], batch["context_idx"], batch["context_valid"], lengths=c_len)
    pred = predictor(z, batch["context_idx"], batch["target_idx"], batch["context_valid"], batch["target_valid"],
                     context_lengths=c_len, target_lengths=t_len)
    return z, pred


def jepa_step(encoder, target_encoder, predictor, batch: dict, loss_kind: str,
              target_norm: str = "layer", n_valid: torch.Tensor | None = None,
              regularizer: Regularizer | None = None) -> tuple[torch.Tensor, dict]:
    """Loss of one micro-batch and its monitors. batch: the mask collator's dict, already on the device.

    n_valid: see :func:`masked_loss` (the region monitors stay local to this process's micro-batch).
    regularizer: ``optim.regularizer``'s term for this step (:func:`add_regularizer`), or None.
    """
    x = batch["x"]
    with torch.no_grad():
        h, target_std = normalize_targets(target_encoder(x), target_norm)  # [B, R*W, D], all tokens
        targets = gather_tokens(h, batch["target_idx"])        # [B, Nt, D]
    z, pred = encode_and_predict(encoder, predictor, batch)
    loss = masked_loss(pred.float(), targets, batch["target_valid"], loss_kind, n_valid)
    monitors = {"target_std": target_std.detach()}
    nan = torch.full((), float("nan"), device=x.device)
    with torch.no_grad():  # NaN for a region without targets, decided on the device (no host sync)
        for region, name in enumerate(REGION_LOSSES):
            valid = batch["target_valid"] & (batch["target_region"] == region)
            monitors[name] = torch.where(valid.any(), masked_loss(pred.float(), targets, valid, loss_kind), nan)
    loss = add_regularizer(loss, monitors, regularizer, z, batch, h.shape[1])
    return loss, monitors


def patch_targets(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Raw patch values in token order: x [B, 1, R, T] -> [B, R * W, patch_size] (token = roi * W + t)."""
    b, _, r, t = x.shape
    return x.reshape(b, r * (t // patch_size), patch_size)


def normalize_patches(targets: torch.Tensor, kind: str = "raw") -> torch.Tensor:
    """MAE targets [B, Nt, p] -> the regression targets. ``raw``: unchanged. ``patch_norm`` (MAE's
    ``norm_pix_loss``): each patch minus its own mean, divided by ``sqrt(var + 1e-6)`` (unbiased variance over
    its p values, as MAE; needs p >= 2)."""
    if kind == "raw":
        return targets
    if kind != "patch_norm":
        raise InputError(f"optim.mae_targets must be one of {', '.join(MAE_TARGETS)}, not {kind!r}")
    if targets.shape[-1] < 2:
        raise InputError("optim.mae_targets 'patch_norm' needs model.patch_size >= 2 (a patch's own variance)")
    mean, var = targets.mean(dim=-1, keepdim=True), targets.var(dim=-1, keepdim=True)
    return (targets - mean) / (var + 1e-6).sqrt()


def mae_step(encoder, decoder, batch: dict, patch_size: int, n_valid: torch.Tensor | None = None,
             regularizer: Regularizer | None = None, targets: str = "raw") -> tuple[torch.Tensor, dict]:
    """The masked-autoencoder baseline's loss of one micro-batch: MSE of the hidden patches' values.

    The encoder sees the visible tokens (``context_idx``), the decoder (a predictor with ``out_dim =
    patch_size``) fills the hidden ones (``target_idx``). targets: ``optim.mae_targets`` (:func:`normalize_patches`);
    regularizer: as in :func:`jepa_step`, on the encoder's output. Monitor ``target_std``: the spread across the
    batch of the mean-pooled, layer-normed encoder output (~0 when every sample encodes alike).
    """
    x = batch["x"]
    z, pred = encode_and_predict(encoder, decoder, batch)
    patches = patch_targets(x.float(), patch_size)                    # [B, R*W, p], all tokens
    goal = normalize_patches(gather_tokens(patches, batch["target_idx"]), targets)
    loss = masked_loss(pred.float(), goal, batch["target_valid"], "mse", n_valid)
    with torch.no_grad():
        pooled = F.layer_norm(z.float(), (z.shape[-1],)).mean(dim=1)
        spread = pooled.std(dim=0).mean() if pooled.shape[0] > 1 else pooled.new_full((), float("nan"))
    nan = torch.full((), float("nan"), device=x.device)
    monitors = {"target_std": spread.detach(), **{name: nan for name in REGION_LOSSES}}
    loss = add_regularizer(loss, monitors, regularizer, z, batch, patches.shape[1])
    return loss, monitors
