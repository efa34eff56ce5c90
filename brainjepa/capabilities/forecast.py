"""Forecasting future brain states (BrainLM's capability) for any encoder, beside persistence, AR and an LSTM.

Task: from the first ``context`` time steps of an evaluation window (:func:`window_starts` ``mode="eval"``; the
shards' robust-scaled values), predict the next ``horizon`` steps of every ROI. BrainLM (Ortega Caro et al.,
2024) forecasts 20 steps from 180 on UK Biobank: fine-tuned R^2 0.086 / r 0.280 / MSE 0.648, without
pretraining 0.012 / 0.112 / 0.695, an LSTM -0.001 / 0.151 / 0.704.

Methods (every method trains on the training subjects, selects on the validation subjects, scores the test
subjects once):

* an encoder (``--encoder``: a checkpoint or a random init = trained from scratch), fine-tuned with a head
  (:class:`.forecast_models.EncoderForecaster`): the window with every step from ``context`` on set to zero
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

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainjepa.config import from_mapping
from brainjepa.errors import InputError
from brainjepa.evaluate.job import seconds_since
from brainjepa.evaluate.metrics import regression_scores
from brainjepa.evaluate.record import Record, settings_dict
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


def fit_forecaster(model, optimizer, train: Callable[[int], np.ndarray], val: np.ndarray, *, context: int,
                   horizon: int, epochs: int, warmup_epochs: float, batch_size: int, lr: float, min_lr: float,
                   seed: int, device, autocast: Callable, name: str = "", loss_fn: Callable | None = None):
    """Train on MSE and keep the best validation epoch (loaded into ``model``) through the evaluation's one loop,
    :func:`brainjepa.evaluate.loop.fit`; returns its FitResult (history per epoch: train_loss, val_mse, lr,
    elapsed_s).

    train(epoch) -> training stretches [N, R, >= context + horizon] of that epoch; val: windows [M, R, T]. Each
    optimizer step sets every group's LR to the warm-up + cosine value times its ``lr_scale``. ``loss_fn(model,
    batch)``: the training loss (default: the MSE of the ``horizon`` steps after the context)."""
    import torch.nn.functional as F

    from brainjepa.evaluate.loop import Criterion, fit

    val_truth = val[:, :, context:context + horizon]

    def evaluate(m):
        val_mse = float(np.mean((predict(m, val, device, max(batch_size, 64), autocast) - val_truth) ** 2))
        return (-val_mse if math.isfinite(val_mse) else -math.inf,), {"val_mse": val_mse}

    def loss(m, x, _):
        if loss_fn is not None:
            return loss_fn(m, x)
        return F.mse_loss(m(x).float(), x[:, :, context:context + horizon].float())

    epoch_data = {0: train(0)}

    def sample(index: np.ndarray, epoch: int) -> np.ndarray:
        if epoch not in epoch_data:            # one draw per epoch, as the stretches are drawn per epoch
            epoch_data.clear()
            epoch_data[epoch] = train(epoch)
        return np.ascontiguousarray(epoch_data[epoch][index])

    return fit(model, optimizer, (epoch_data[0], None), None, "regression", epochs=epochs,
               warmup_epochs=warmup_epochs, batch_size=batch_size, lr=lr, min_lr=min_lr, seed=seed, device=device,
               autocast=autocast, name=name, sample=sample, loss_fn=loss,
               criterion=Criterion(evaluate, "validation MSE", "mse", steps=False, loss_name="MSE"))


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
    import torch

    from brainjepa.capabilities.forecast_models import EncoderForecaster, LSTMForecaster
    from brainjepa.evaluate.job import one_process, torch_job

    one_process(f"{name}: forecasting")
    job = torch_job(cfg.device, cfg.precision, threads=cfg.threads or 0, seed=seed)
    source, details, loss_fn = None, {}, None
    if encoder_spec is not None:
        from brainjepa.evaluate.encoders import load_encoder

        encoder, source = load_encoder(encoder_spec, roi_names, window, seed=seed, drop_path=cfg.drop_path)
        cfg.check_window(window, encoder.cfg.patch_size)
        model = EncoderForecaster(encoder, cfg.context, cfg.horizon)
        groups = encoder_param_groups(model, cfg.weight_decay, cfg.layer_decay)
        epochs, lr = cfg.epochs, cfg.lr
        details["head"] = {"context_patches": model.n_context, "patch_size": encoder.cfg.patch_size,
                           "lr_scales": sorted({round(g["lr_scale"], 6) for g in groups})}
    else:
        model = LSTMForecaster(len(roi_names), cfg.context, cfg.horizon, cfg.lstm_hidden, cfg.lstm_layers)
        groups = lstm_param_groups(model, cfg.weight_decay)
        epochs, lr = cfg.lstm_epochs, cfg.lstm_lr
        details["lstm"] = {"output": "iterated one-step", "training": "teacher forcing", "hidden": cfg.lstm_hidden,
                           "layers": cfg.lstm_layers}
        loss_fn = lambda m, batch: m.one_step_loss(batch)  # noqa: E731
    model.to(job.device)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    train = windows["train"]
    if cfg.temporal_jitter:
        sample = lambda epoch: train.jittered(cfg.span, seed, epoch)  # noqa: E731
    else:
        sample = lambda epoch: train.data[:, :, :cfg.span]  # noqa: E731
    fit = fit_forecaster(model, optimizer, sample, windows["val"].data, context=cfg.context, horizon=cfg.horizon,
                         epochs=epochs, warmup_epochs=cfg.warmup_epochs, batch_size=cfg.batch_size, lr=lr,
                         min_lr=cfg.min_lr, seed=seed, device=job.device, autocast=job.autocast, name=name,
                         loss_fn=loss_fn)
    predictions = {s: predict(model, windows[s].data, job.device, max(cfg.batch_size, 64), job.autocast)
                   for s in ("val", "test")}
    details["device"] = str(job.device)
    return predictions, source, {"epoch": fit.selected_epoch, "history": fit.history}, details


def run_forecast(method: str, seed: int, shards: str | Path, cohorts: list[str], out: str | Path,
                 cfg: ForecastConfig | None = None, encoder_spec: dict | None = None) -> dict:
    """The ``forecast`` stage: one (method, seed) -> the capability record at ``out`` (JSON, written atomically).

    ``method``: a label for an encoder method (with ``encoder_spec``) or one of :data:`BASELINES` (without)."""
    from brainjepa.data.shards import load_manifest
    from brainjepa.evaluate.tasks import split_manifests, split_windows

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
        "settings": settings_dict(cfg),
    })
    record = Record("forecast", "forecast", method, seed, list(cohorts), None, source, counts, scores["val"],
                    scores["test"], {"mse": [float(v) for v in mse]}, details, selected, seconds_since(t0))
    log.info("%s: test R2 %.4f, r %.4f, MSE %.4f (%.1f s)", name, record.test["r2"], record.test["r"],
             record.test["mse"], record.seconds)
    return record.write(out)
