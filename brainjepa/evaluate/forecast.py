"""Forecasting future brain states (BrainLM's capability) for any encoder, beside persistence, AR and an LSTM.

Task: from the first ``context`` time steps of an evaluation window (:func:`window_starts` ``mode="eval"``; the
shards' robust-scaled values), predict the next ``horizon`` steps of every ROI. BrainLM (Ortega Caro et al.,
2024) forecasts 20 steps from 180 on UK Biobank: fine-tuned R^2 0.086 / r 0.280 / MSE 0.648, without
pretraining 0.012 / 0.112 / 0.695, an LSTM -0.001 / 0.151 / 0.704.

Methods (every method trains on the training subjects, selects on the validation subjects, scores the test
subjects once):

* an encoder (``--encoder``: a checkpoint or a random init = trained from scratch), fine-tuned with a head
  (``EncoderForecaster`` of :func:`_torch_models`): the window with every step from ``context`` on set to zero
  goes in, and only the context time patches of every ROI are encoded (``token_idx``: tokens ``roi * W + t`` for
  ``t < context / patch_size``), so nothing of the future can reach the prediction. Each ROI's context tokens,
  concatenated -> LayerNorm -> Linear -> its ``horizon`` values (one head shared by the ROIs). AdamW, linear
  warm-up + cosine, layer-wise LR decay (:func:`brainjepa.evaluate.finetune.param_groups_lrd`), MSE; the epoch
  with the lowest validation MSE is kept;
* ``persistence``: the last context value of each ROI, repeated;
* ``ar``: per-ROI AR(p) with intercept, ``x_t = c + sum_k phi_k x_{t-k}``, least squares over every stretch of
  p + 1 consecutive steps of the training data; the forecast is iterated (each predicted step feeds the next);
* ``lstm``: a multivariate LSTM over the ROIs (input: the R values of a step) with a linear read-out of the next
  step of every ROI; trained one step ahead with teacher forcing (MSE at every step of the training stretches),
  forecasting *iterated* (each predicted step is the next input). AdamW, warm-up + cosine; the epoch with the
  lowest validation MSE of the iterated ``horizon``-step forecast is kept. (A direct multi-step read-out of all
  horizon x R values from the last hidden state memorised the demo's 73 training windows within a few epochs
  and never beat the mean: validation R^2 0.001.)

Training data: the training subjects' evaluation windows, or (``temporal_jitter``, the default) at every epoch a
stretch of ``context + horizon`` steps from a random start in each window's run (the pretraining loader's draw);
AR fits on the same data: the training windows, or the whole training runs. Validation and test always read the
deterministic windows.

Metrics, over the test windows' predicted values y-hat against the true values y (and the same on validation):

* ``mse``: the mean of (y - y-hat)^2 over all (window, ROI, step) values;
* ``r2`` = 1 - SSE / SST with SSE = sum (y - y-hat)^2 and SST = sum (y - mean(y))^2 over all (window, ROI, step)
  values, the mean taken over all of them (one global mean): scikit-learn's ``r2_score`` of the flattened values,
  as BrainLM's ``calculate_r_squared_masked`` computes it (BrainLM clips negative values to 0; not here);
* ``r``: the Pearson correlation of the flattened y and y-hat (BrainLM's ``calculate_pearson_masked``, again
  without the clip at 0).

Per horizon step (``details.per_step``) the same over the (window, ROI) values of that step. ``per_subject.mse``:
each test subject's mean over its windows of the window MSE.

Caveat: the shards' values are scaled per run with statistics of the whole run (``run_demean``: each ROI's run
mean is 0), future steps included. When a run is hardly longer than the window the future is then partly
known from the context: it must cancel the context's mean. On the demo (164-step runs, 160-step windows) a line
fitted on the training windows from an ROI's context mean alone predicts the 20th step with test R^2 0.094 and
the 5th with 0.089; a model that reads the context mean (the fine-tuned encoders) gains from it, the AR baseline
(a recursion without that input) cannot. On long runs (UK Biobank: 490 frames) the effect shrinks.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainjepa.config import from_mapping
from brainjepa.errors import InputError, TrainingError
from brainjepa.train.config import Device, Precision

if TYPE_CHECKING:
    from brainjepa.evaluate.tasks import SplitWindows

log = logging.getLogger("brainjepa.evaluate")
WHERE = "evaluate.capabilities.forecast.settings"
BASELINES = ("persistence", "ar", "lstm")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ForecastConfig:
    """``evaluate.capabilities.forecast.settings``. Steps are time steps of the shards (TRs after alignment)."""

    context: int = 128                   # steps seen; a multiple of the encoder's patch size
    horizon: int = 20                    # steps predicted after the context; context + horizon <= window
    temporal_jitter: bool = True         # training stretches from random starts in the runs (False: the windows)
    # the encoder's fine-tuning
    epochs: int = 20
    warmup_epochs: float = 1.0
    batch_size: int = 16
    lr: float = 1e-2                     # peak LR of the head; encoder block i: lr x layer_decay^(depth - i)
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.0
    # the AR baseline
    ar_order: int = 4
    # the LSTM baseline (batch_size, warmup_epochs, min_lr and weight_decay as above)
    lstm_hidden: int = 128
    lstm_layers: int = 1
    lstm_epochs: int = 30
    lstm_lr: float = 3e-3
    device: Device = "auto"
    precision: Precision = "auto"
    threads: int | None = None           # torch threads (None: torch's default)

    def __post_init__(self) -> None:
        if self.context < 1 or self.horizon < 1:
            raise InputError(f"{WHERE}: context ({self.context}) and horizon ({self.horizon}) must be at least 1")
        for name in ("epochs", "batch_size", "ar_order", "lstm_hidden", "lstm_layers", "lstm_epochs"):
            if getattr(self, name) < 1:
                raise InputError(f"{WHERE}.{name} must be at least 1, not {getattr(self, name)}")
        if self.ar_order >= self.context:
            raise InputError(f"{WHERE}.ar_order ({self.ar_order}) must be below the context ({self.context})")
        if self.warmup_epochs < 0:
            raise InputError(f"{WHERE}.warmup_epochs must be >= 0")
        if not 0 < self.layer_decay <= 1:
            raise InputError(f"{WHERE}.layer_decay must be in (0, 1], not {self.layer_decay}")
        if not 0 <= self.drop_path < 1:
            raise InputError(f"{WHERE}.drop_path must be in [0, 1), not {self.drop_path}")
        if self.lr <= 0 or self.lstm_lr <= 0:
            raise InputError(f"{WHERE}: lr and lstm_lr must be positive")

    @classmethod
    def from_dict(cls, d: dict | None) -> ForecastConfig:
        return from_mapping(cls, d or {}, WHERE)

    @property
    def span(self) -> int:
        """Steps of one training sample: context + horizon."""
        return self.context + self.horizon

    def check_window(self, window: int, patch_size: int | None = None) -> None:
        """The context and horizon fit ``window`` (and the context is whole patches of ``patch_size``)."""
        if self.span > window:
            raise InputError(f"{WHERE}: context + horizon ({self.context} + {self.horizon} = {self.span}) is longer "
                             f"than the evaluation window ({window} steps)")
        if patch_size is not None and self.context % patch_size:
            raise InputError(f"{WHERE}.context ({self.context}) is not a multiple of the encoder's patch size "
                             f"({patch_size}): the encoder sees whole time patches only")


# ------------------------------------------------------------------------------------------------- metrics
def regression_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """R^2, Pearson r and MSE over all values of ``truth`` and ``pred`` (any equal shapes, flattened; module
    docstring). r is NaN when either side is constant; R^2 is NaN when the truth is."""
    y = np.asarray(truth, dtype=np.float64).ravel()
    p = np.asarray(pred, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"truth {np.shape(truth)} and prediction {np.shape(pred)} must be equal and non-empty")
    sse = float(np.sum((y - p) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    yc, pc = y - y.mean(), p - p.mean()
    denom = math.sqrt(float(np.sum(yc ** 2)) * float(np.sum(pc ** 2)))
    return {"r2": 1.0 - sse / sst if sst > 0 else float("nan"),
            "r": float(np.sum(yc * pc)) / denom if denom > 0 else float("nan"),
            "mse": sse / y.size}


def forecast_scores(truth: np.ndarray, pred: np.ndarray) -> tuple[dict[str, float], dict[str, list[float]]]:
    """truth, pred [N, R, H] -> (overall scores, per horizon step: {"r2": [H], "r": [H], "mse": [H]})."""
    per_step = [regression_scores(truth[..., h], pred[..., h]) for h in range(truth.shape[-1])]
    return regression_scores(truth, pred), {k: [s[k] for s in per_step] for k in ("r2", "r", "mse")}


def subject_mse(subject: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per subject the mean over its windows of the window MSE: subject [N], truth/pred [N, ...] ->
    (sorted subjects [S], MSE [S])."""
    from brainjepa.evaluate.tasks import subject_mean

    window_mse = ((np.asarray(truth, np.float64) - pred) ** 2).reshape(len(truth), -1).mean(axis=1)
    return subject_mean(subject, window_mse)


# ------------------------------------------------------------------------------------------------- baselines
def persistence_forecast(context: np.ndarray, horizon: int) -> np.ndarray:
    """The last context value repeated: context [N, R, C] -> [N, R, horizon]."""
    return np.repeat(context[..., -1:], horizon, axis=-1)


def fit_ar(series: list[np.ndarray], order: int) -> np.ndarray:
    """Per-ROI AR(order) with intercept by least squares over every stretch of order + 1 steps of ``series``
    (each [R, T], T > order). Returns coefficients [R, order + 1]: (c, phi_1 .. phi_p), phi_k the weight of
    x_{t-k}."""
    n_rois = series[0].shape[0]
    gram = np.zeros((n_rois, order + 1, order + 1))
    moment = np.zeros((n_rois, order + 1))
    for x in series:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1] <= order:
            continue
        t = x.shape[1] - order
        lags = np.stack([np.ones((n_rois, t))] + [x[:, order - k:order - k + t] for k in range(1, order + 1)],
                        axis=-1)                                             # [R, t, p + 1]
        gram += np.einsum("rti,rtj->rij", lags, lags)
        moment += np.einsum("rti,rt->ri", lags, x[:, order:])
    if not gram[:, 0, 0].all():
        raise InputError(f"the AR({order}) baseline needs training series longer than {order} steps")
    return np.stack([np.linalg.lstsq(g, m, rcond=None)[0] for g, m in zip(gram, moment)])


def ar_forecast(context: np.ndarray, coef: np.ndarray, horizon: int) -> np.ndarray:
    """Iterated AR forecast: context [N, R, C], coef [R, p + 1] (:func:`fit_ar`) -> [N, R, horizon]."""
    order = coef.shape[1] - 1
    history = np.asarray(context[..., -order:], dtype=np.float64)            # [N, R, p], oldest first
    out = np.empty(context.shape[:2] + (horizon,))
    for h in range(horizon):
        step = coef[:, 0] + np.einsum("nrk,rk->nr", history[..., ::-1], coef[:, 1:])
        out[..., h] = step
        history = np.concatenate([history[..., 1:], step[..., None]], axis=-1)
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------------------- models
def _torch_models():
    """The trained forecasters (defined on first use, so that importing this module does not import torch)."""
    import torch
    from torch import nn

    from brainjepa.models.layers import INIT_STD

    class EncoderForecaster(nn.Module):
        """Encoder on the context patches + a per-ROI head. x [B, R, T'] (T' >= context; steps from ``context``
        on are never read) -> [B, R, horizon]."""

        def __init__(self, encoder: nn.Module, context: int, horizon: int) -> None:
            super().__init__()
            cfg = encoder.cfg
            self.encoder, self.context, self.horizon = encoder, context, horizon
            self.n_rois, self.window, self.n_context = cfg.n_rois, cfg.n_timesteps, context // cfg.patch_size
            idx = torch.arange(cfg.n_rois)[:, None] * cfg.n_time_patches + torch.arange(self.n_context)[None, :]
            self.register_buffer("token_idx", idx.reshape(1, -1), persistent=False)   # [1, R * Wc], ROI-major
            width = self.n_context * encoder.embed_dim
            self.norm = nn.LayerNorm(width, eps=1e-6)
            self.fc = nn.Linear(width, horizon)
            nn.init.trunc_normal_(self.fc.weight, std=INIT_STD)
            nn.init.zeros_(self.fc.bias)

        def encoder_input(self, x):
            """x [B, R, T'] -> [B, 1, R, window]: the context, zeros from step ``context`` on."""
            full = x.new_zeros(x.shape[0], 1, self.n_rois, self.window)
            full[:, 0, :, :self.context] = x[:, :, :self.context]
            return full

        def forward(self, x):
            b = x.shape[0]
            tokens = self.encoder(self.encoder_input(x), self.token_idx.expand(b, -1))   # [B, R * Wc, D]
            return self.fc(self.norm(tokens.reshape(b, self.n_rois, -1)))

    class LSTMForecaster(nn.Module):
        """Multivariate LSTM over the ROIs, one step ahead, iterated. x [B, R, T'] -> [B, R, horizon]: the LSTM
        reads the context, a linear map of its hidden state predicts the next step of every ROI, and each
        prediction is fed back as the next input. Trained by :meth:`one_step_loss` (teacher forcing)."""

        def __init__(self, n_rois: int, context: int, horizon: int, hidden: int, layers: int) -> None:
            super().__init__()
            self.n_rois, self.context, self.horizon = n_rois, context, horizon
            self.lstm = nn.LSTM(n_rois, hidden, layers, batch_first=True)
            self.fc = nn.Linear(hidden, n_rois)
            nn.init.trunc_normal_(self.fc.weight, std=INIT_STD)
            nn.init.zeros_(self.fc.bias)

        def one_step_loss(self, x):
            """MSE of the next-step predictions at every step of the stretches x [B, R, S]."""
            seq = x.transpose(1, 2)                                                 # [B, S, R]
            out, _ = self.lstm(seq[:, :-1])
            return torch.nn.functional.mse_loss(self.fc(out).float(), seq[:, 1:].float())

        def forward(self, x):
            out, state = self.lstm(x[:, :, :self.context].transpose(1, 2))         # [B, C, hidden]
            step = self.fc(out[:, -1:])                                             # [B, 1, R]
            steps = [step]
            for _ in range(self.horizon - 1):
                out, state = self.lstm(step, state)
                step = self.fc(out)
                steps.append(step)
            return torch.cat(steps, dim=1).transpose(1, 2)                          # [B, R, H]

    return EncoderForecaster, LSTMForecaster


def encoder_param_groups(model, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups with layer-wise decay: the encoder's layers as :func:`.finetune.param_groups_lrd` numbers
    them, the head (``norm``, ``fc``) the top layer."""
    from brainjepa.evaluate.finetune import param_groups_lrd

    groups = param_groups_lrd(model, weight_decay, layer_decay)
    return [{k: v for k, v in g.items() if k != "names"} for g in groups]


def lstm_param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices, none on biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------------------- training
def predict(model, windows: np.ndarray, device, batch_size: int, autocast: Callable) -> np.ndarray:
    """Forecasts of ``model`` (eval mode): windows [N, R, T'] -> [N, R, horizon] float32."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(windows[i:i + batch_size])).to(device).float()
            with autocast():
                out.append(model(x).float().cpu().numpy())
    return np.concatenate(out)


@dataclass
class ForecastFit:
    selected_epoch: int           # 1-based, the lowest validation MSE
    history: list[dict]           # per epoch: train_loss, val_mse, lr, elapsed_s


def fit_forecaster(model, optimizer, train: Callable[[int], np.ndarray], val: np.ndarray, *, context: int,
                   horizon: int, epochs: int, warmup_epochs: float, batch_size: int, lr: float, min_lr: float,
                   seed: int, device, autocast: Callable, name: str = "",
                   loss_fn: Callable | None = None) -> ForecastFit:
    """Train on MSE and keep the best validation epoch (loaded into ``model``).

    train(epoch) -> training stretches [N, R, >= context + horizon] of that epoch; val: windows [M, R, T]. Each
    optimizer step sets every group's LR to the warm-up + cosine value times its ``lr_scale``. ``loss_fn(model,
    batch)``: the training loss (default: the MSE of the ``horizon`` steps after the context)."""
    import torch
    import torch.nn.functional as F

    from brainjepa.evaluate.loop import lr_at, optimizer_step

    first = train(0)
    n = len(first)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total)
    val_truth = val[:, :, context:context + horizon]
    best, best_mse, history, step, t0 = None, math.inf, [], 0, time.perf_counter()
    for epoch in range(epochs):
        data = first if epoch == 0 else train(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        model.train()
        losses = []
        for k in range(steps_per_epoch):
            batch = torch.from_numpy(np.ascontiguousarray(data[order[k * batch_size:(k + 1) * batch_size]]))
            batch = batch.to(device).float()
            value = lr_at(step, total, warmup, lr, min_lr)
            for group in optimizer.param_groups:
                group["lr"] = value * group.get("lr_scale", 1.0)
            with autocast():
                if loss_fn is None:
                    loss = F.mse_loss(model(batch).float(), batch[:, :, context:context + horizon].float())
                else:
                    loss = loss_fn(model, batch)
            losses.append(optimizer_step(optimizer, loss, name, epoch, step))
            step += 1
        val_mse = float(np.mean((predict(model, val, device, max(batch_size, 64), autocast) - val_truth) ** 2))
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_mse": val_mse, "lr": value,
                        "elapsed_s": round(time.perf_counter() - t0, 2)})
        log.info("%s epoch %d/%d: train MSE %.4f, val MSE %.4f, lr %.2e", name, epoch + 1, epochs,
                 history[-1]["train_loss"], val_mse, value)
        if val_mse < best_mse:
            best_mse = val_mse
            best = (epoch + 1, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
    if best is None:
        raise TrainingError(f"{name}: no epoch gave a finite validation MSE")
    model.load_state_dict(best[1])
    return ForecastFit(best[0], history)


# ------------------------------------------------------------------------------------------------- the stage
def _check_method(method: str, encoder_spec: dict | None) -> None:
    if encoder_spec is None and method not in BASELINES:
        raise InputError(f"forecast method {method!r} needs an encoder (--encoder); without one the method must be "
                         f"a baseline: {', '.join(BASELINES)}")
    if encoder_spec is not None and method in BASELINES:
        raise InputError(f"forecast method {method!r} is a baseline without an encoder: give no --encoder")


def _train_torch(method: str, seed: int, cfg: ForecastConfig, windows: dict[str, SplitWindows], roi_names: list[str],
                 window: int, encoder_spec: dict | None, name: str):
    """Fine-tune an encoder or train the LSTM. Returns (predictions {val, test}, source, selected, details)."""
    import os

    import torch

    from brainjepa.train.runtime import autocast_for, setup_distributed

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError(f"{name}: forecasting runs in one process (not under torchrun)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    _, device = setup_distributed(cfg.device)
    encoder_cls, lstm_cls = _torch_models()
    source, details, loss_fn = None, {}, None
    if encoder_spec is not None:
        from brainjepa.evaluate.encoders import load_encoder

        encoder, source = load_encoder(encoder_spec, roi_names, window, seed=seed, drop_path=cfg.drop_path)
        cfg.check_window(window, encoder.cfg.patch_size)
        model = encoder_cls(encoder, cfg.context, cfg.horizon)
        groups = encoder_param_groups(model, cfg.weight_decay, cfg.layer_decay)
        epochs, lr = cfg.epochs, cfg.lr
        details["head"] = {"context_patches": model.n_context, "patch_size": encoder.cfg.patch_size,
                           "lr_scales": sorted({round(g["lr_scale"], 6) for g in groups})}
    else:
        model = lstm_cls(len(roi_names), cfg.context, cfg.horizon, cfg.lstm_hidden, cfg.lstm_layers)
        groups = lstm_param_groups(model, cfg.weight_decay)
        epochs, lr = cfg.lstm_epochs, cfg.lstm_lr
        details["lstm"] = {"output": "iterated one-step", "training": "teacher forcing", "hidden": cfg.lstm_hidden,
                           "layers": cfg.lstm_layers}
        loss_fn = lambda m, batch: m.one_step_loss(batch)  # noqa: E731
    model.to(device)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    train = windows["train"]
    if cfg.temporal_jitter:
        sample = lambda epoch: train.jittered(cfg.span, seed, epoch)  # noqa: E731
    else:
        sample = lambda epoch: train.data[:, :, :cfg.span]  # noqa: E731
    autocast = lambda: autocast_for(device, cfg.precision)  # noqa: E731
    fit = fit_forecaster(model, optimizer, sample, windows["val"].data, context=cfg.context, horizon=cfg.horizon,
                         epochs=epochs, warmup_epochs=cfg.warmup_epochs, batch_size=cfg.batch_size, lr=lr,
                         min_lr=cfg.min_lr, seed=seed, device=device, autocast=autocast, name=name,
                         loss_fn=loss_fn)
    predictions = {s: predict(model, windows[s].data, device, max(cfg.batch_size, 64), autocast)
                   for s in ("val", "test")}
    details["device"] = str(device)
    return predictions, source, {"epoch": fit.selected_epoch, "history": fit.history}, details


def run_forecast(method: str, seed: int, shards: str | Path, cohorts: list[str], out: str | Path,
                 cfg: ForecastConfig | None = None, encoder_spec: dict | None = None) -> dict:
    """The ``forecast`` stage: one (method, seed) -> the capability record at ``out`` (JSON, written atomically).

    ``method``: a label for an encoder method (with ``encoder_spec``) or one of :data:`BASELINES` (without)."""
    from brainjepa.data.shards import load_manifest
    from brainjepa.evaluate.tasks import split_manifests, split_windows
    from brainjepa.io import write_text_atomic

    cfg = cfg or ForecastConfig()
    _check_method(method, encoder_spec)
    name = f"forecast/{method}/seed{seed}"
    t0 = time.perf_counter()
    manifests = split_manifests(shards)
    manifest = load_manifest(manifests["train"])
    window, roi_names = int(manifest["window"]), list(manifest["roi_names"])
    cfg.check_window(window)
    windows = split_windows(manifests, list(cohorts), window, keep_runs=True)
    c, h = cfg.context, cfg.horizon
    source, selected, details = None, {"epoch": None, "history": []}, {}
    uses_train = method != "persistence"
    if method == "persistence":
        predictions = {s: persistence_forecast(windows[s].data[:, :, :c], h) for s in ("val", "test")}
    elif method == "ar":
        series = windows["train"].whole_runs() if cfg.temporal_jitter else list(windows["train"].data)
        coef = fit_ar(series, cfg.ar_order)
        predictions = {s: ar_forecast(windows[s].data[:, :, :c], coef, h) for s in ("val", "test")}
        details["ar"] = {"order": cfg.ar_order, "fitted_on": "runs" if cfg.temporal_jitter else "windows",
                         "mean_coefficients": [float(v) for v in coef.mean(axis=0)],   # (c, phi_1 .. phi_p)
                         "coefficients": [[float(v) for v in row] for row in coef]}
    else:
        predictions, source, selected, more = _train_torch(method, seed, cfg, windows, roi_names, window,
                                                           encoder_spec, name)
        details.update(more)
    scores, per_step = {}, {}
    for split in ("val", "test"):
        truth = windows[split].data[:, :, c:c + h]
        scores[split], per_step[split] = forecast_scores(truth, predictions[split])
    subjects, mse = subject_mse(windows["test"].subject, windows["test"].data[:, :, c:c + h], predictions["test"])
    counts = {s: int(len(set(windows[s].subject))) for s in SPLITS}
    if not uses_train:
        counts["train"] = 0
    details.update({
        "context": c, "horizon": h, "window": window, "per_step": per_step,
        "training_data": None if not uses_train else ("jittered stretches of the training runs"
                                                      if cfg.temporal_jitter else "the training windows"),
        "n_windows": {s: int(len(windows[s].subject)) for s in SPLITS},
        "test_subjects": [str(s) for s in subjects],
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    })
    record = {"task": "forecast", "kind": "forecast", "method": method, "seed": seed, "cohorts": list(cohorts),
              "label": None, "source": source, "n_subjects": counts, "val": scores["val"], "test": scores["test"],
              "per_subject": {"mse": [float(v) for v in mse]}, "details": details, "selected": selected,
              "seconds": round(time.perf_counter() - t0, 2)}
    log.info("%s: test R2 %.4f, r %.4f, MSE %.4f (%.1f s)", name, record["test"]["r2"], record["test"]["r"],
             record["test"]["mse"], record["seconds"])
    write_text_atomic(out, json.dumps(record, indent=1) + "\n")
    return record
