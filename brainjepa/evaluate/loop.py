"""One training loop for every gradient-trained downstream method (fine-tuning, linear and attentive probes).

``fit`` trains a model on the training windows for ``epochs`` epochs with a per-step learning-rate schedule
(linear warm-up, cosine decay; each parameter group scaled by its ``lr_scale``), evaluates the validation
subjects after every epoch and keeps the state of the best epoch (lowest validation loss, computed on subject
predictions: the mean over a subject's windows). The test subjects are predicted once, with the selected
state. The validation split is the only thing the selection sees.

Under torchrun (several processes), every rank holds all windows and takes its slice of each global batch
(``batch_size`` per rank); the model is wrapped in DistributedDataParallel; evaluation is the same on every
rank. On a GPU the forward passes run under bf16 autocast (``precision``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from brainjepa.errors import TrainingError
from brainjepa.evaluate.tasks import subject_loss
from brainjepa.train.schedules import warmup_cosine

log = logging.getLogger("brainjepa.evaluate")


@dataclass
class FitResult:
    selected_epoch: int               # 1-based epoch whose state was kept
    history: list[dict]               # per epoch: train_loss, val_loss, lr
    state: dict                       # the selected state dict (CPU tensors)


def optimizer_step(optimizer, loss: torch.Tensor, name: str, epoch: int, step: int) -> float:
    """One optimizer step on ``loss`` (refused when it is not finite); returns the loss value."""
    if not torch.isfinite(loss):
        raise TrainingError(f"{name}: non-finite loss at epoch {epoch + 1}, step {step}; lower the LR")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def task_loss(kind: str, output: torch.Tensor, target: torch.Tensor,
              class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE on z-scored targets (output [B, 1]) or cross-entropy (output [B, C] logits, target class indices;
    ``class_weight`` [C]: weighted CE, normalised by the batch's total weight as torch does)."""
    if kind == "regression":
        return F.mse_loss(output[:, 0].float(), target.float())
    return F.cross_entropy(output.float(), target.long(), weight=class_weight)


def to_prediction(kind: str, output: torch.Tensor) -> np.ndarray:
    """Regression value [B] or class probabilities [B, C]."""
    if kind == "regression":
        return output[:, 0].float().cpu().numpy()
    return torch.softmax(output.float(), dim=1).cpu().numpy()


@torch.no_grad()
def predict(model: torch.nn.Module, inputs: torch.Tensor, kind: str, device: torch.device, batch_size: int,
            autocast) -> np.ndarray:
    """Predictions of ``model`` (eval mode) for ``inputs`` [N, ...], in batches."""
    model.eval()
    out = []
    for i in range(0, len(inputs), batch_size):
        with autocast():
            out.append(to_prediction(kind, model(inputs[i:i + batch_size].to(device).float())))
    return np.concatenate(out) if out else np.zeros((0,))


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    return warmup_cosine(step, total, warmup, 0.0, lr, min_lr)


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, np.ndarray, np.ndarray], kind: str, *, epochs: int, warmup_epochs: float,
        batch_size: int, lr: float, min_lr: float, seed: int, device: torch.device, autocast: Callable,
        rank: int = 0, world_size: int = 1, train_module: torch.nn.Module | None = None,
        name: str = "", class_weight: np.ndarray | None = None,
        sample: Callable[[np.ndarray, int], np.ndarray] | None = None) -> FitResult:
    """Train and select on validation (module docstring).

    train: (inputs [N, ...], targets [N]); val: (inputs [M, ...], targets [M], subjects [M]).
    ``train_module``: what the steps call (a DDP wrapper of ``model``); ``model`` is what is evaluated and saved.
    ``class_weight`` [C] (classification): weights of the training loss and of the validation criterion.
    ``sample(indices [B], epoch) -> inputs [B, ...]``: the training inputs of a batch instead of
    ``inputs[indices]`` (temporal jitter); the training set's size is still ``len(inputs)``.
    """
    step_module = train_module if train_module is not None else model
    inputs, targets = train
    n = len(inputs)
    global_batch = batch_size * world_size
    steps_per_epoch = max(1, math.ceil(n / global_batch))
    total = epochs * steps_per_epoch
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total)  # a warm-up longer than the run is cut
    weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32, device=device)
    best, best_loss, history, step = None, math.inf, [], 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))
        losses = []
        for k in range(steps_per_epoch):
            batch = order[k * global_batch:(k + 1) * global_batch][rank * batch_size:(rank + 1) * batch_size]
            if len(batch) == 0:  # an uneven last global batch leaves this rank nothing: still join the step
                batch = order[:1]
            value = lr_at(step, total, warmup, lr, min_lr)
            for group in optimizer.param_groups:
                group["lr"] = value * group.get("lr_scale", 1.0)
            x = inputs[batch]
            if sample is not None:
                x = torch.from_numpy(sample(batch.numpy(), epoch)).view_as(x)
            x, y = x.to(device).float(), targets[batch].to(device)
            with autocast():
                loss = task_loss(kind, step_module(x), y, weight)
            losses.append(optimizer_step(optimizer, loss, name, epoch, step))
            step += 1
        val_pred = predict(model, val[0], kind, device, max(batch_size, 64), autocast)
        val_loss = subject_loss(kind, val[2], val[1], val_pred, class_weight)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                        "lr": value, "elapsed_s": round(time.perf_counter() - t0, 2)})
        if rank == 0:
            log.info("%s epoch %d/%d: train loss %.4f, val loss %.4f, lr %.2e", name, epoch + 1, epochs,
                     history[-1]["train_loss"], val_loss, value)
        if val_loss < best_loss:
            best_loss, best = val_loss, (epoch + 1, copy.deepcopy({k: v.detach().cpu()
                                                                    for k, v in model.state_dict().items()}))
    if best is None:  # every validation loss was NaN
        raise TrainingError(f"{name}: no epoch gave a finite validation loss")
    model.load_state_dict(best[1])
    return FitResult(best[0], history, best[1])


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as MAE's linear probe uses it: SGD with momentum whose update of every
    parameter with more than one dimension is scaled by ``trust_coefficient * |w| / |g + wd w|``; biases and
    other 1-D parameters take the plain step."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "trust_coefficient": trust_coefficient})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.norm(p), torch.norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), group["trust_coefficient"] * w_norm / u_norm,
                                        torch.ones_like(w_norm))
                    update = update.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).add_(update)
                p.add_(state["mu"], alpha=-group["lr"])
