"""One training loop for every gradient-trained downstream method (fine-tuning, linear and attentive probes).

``fit`` trains a model on the training windows for ``epochs`` epochs, or more when that is fewer than
``min_steps`` optimizer steps (the epochs are extended, the warm-up keeps its share of the run), with a per-step
learning-rate schedule (linear warm-up, cosine decay; each parameter group scaled by its ``lr_scale``). It
evaluates the validation subjects after every epoch (after every k-th when the epochs were extended k-fold, and
after the last) and keeps the state of the best evaluation by the task's metric on subject predictions (the
mean over a subject's windows; :data:`brainjepa.evaluate.metrics.SELECTION`: Pearson r, AUROC, balanced
accuracy), ties broken by the lower validation loss, then the earlier epoch. The test subjects are predicted
once, with the selected state. The validation split is the only thing the selection sees.

``fit_probe`` is the probes' procedure on frozen features (linear probe on pooled features [N, D], attentive
probe on per-ROI tokens [N, R, D], standardised with the training rows' statistics): one ``fit`` per (learning
rate, weight decay) of the section's grid, the best by the same validation metric (points within
:data:`GRID_TIE` of the best count as tied: the lowest validation loss of them); or the paper's LARS linear probe
(``recipe: paper``).

Fine-tuning's windows are read from the shards batch by batch (:class:`WindowInputs`), never all held.
Under torchrun (several processes), every rank sees all windows and takes its slice of each global batch
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
from brainjepa.evaluate.tasks import subject_loss, subject_mean
from brainjepa.train.schedules import warmup_cosine

log = logging.getLogger("brainjepa.evaluate")


@dataclass
class FitResult:
    """What :func:`fit` returns: the selected epoch and its state dict, the per-epoch history, and the selection metric
    with its validation value and the validation loss at that epoch."""

    selected_epoch: int               # 1-based epoch whose state was kept
    history: list[dict]               # per evaluated epoch: train_loss, val_loss, val_<metric>, lr
    state: dict                       # the selected state dict (CPU tensors)
    metric: str = ""                  # the selection metric (SELECTION[kind])
    score: float = -math.inf          # its validation value at the selected epoch (-inf: undefined)
    val_loss: float = math.inf        # the validation loss at the selected epoch


class WindowInputs:
    """Fine-tuning's windows [N, 1, R, T] as :func:`fit`, :func:`predict` and the heads index them, read on
    demand: ``inputs[index]`` (a tensor or array of indices, or a slice) -> a float32 tensor [B, 1, R, T];
    :meth:`take` a view of some windows. ``windows``: anything that indexes as an [N, R, T] array does (an array,
    or a :class:`brainjepa.evaluate.tasks.ShardWindows`, which reads only the windows of a batch from the
    shards, so that no more than a batch is in memory)."""

    def __init__(self, windows) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.windows), 1, *tuple(self.windows.shape)[1:])

    def take(self, index: np.ndarray) -> WindowInputs:
        """The windows ``index`` (indices or a boolean mask), as a view where the windows allow one."""
        if isinstance(self.windows, (np.ndarray, torch.Tensor)):
            return WindowInputs(self.windows[index])
        return WindowInputs(self.windows.take(index))

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        return torch.from_numpy(np.ascontiguousarray(self.windows[key], dtype=np.float32)).unsqueeze(1)


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


def task_loss_fn(kind: str, class_weight: np.ndarray | None, device: torch.device) -> Callable:
    """``loss(module, x, y)`` of a task: :func:`task_loss` of the module's output (``class_weight`` [C] or None)."""
    weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32, device=device)
    return lambda module, x, y: task_loss(kind, module(x), y, weight)


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
    """The learning rate at optimizer step ``step`` of ``total``: linear warm-up from 0 to ``lr`` over ``warmup`` steps,
    then cosine to ``min_lr``."""
    return warmup_cosine(step, total, warmup, 0.0, lr, min_lr)


def cpu_state(model: torch.nn.Module) -> dict:
    """A copy of ``model``'s state dict on the CPU (a selected epoch's weights)."""
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> float:
    """Every parameter group's LR: ``value`` times the group's ``lr_scale`` (default 1). Returns ``value``."""
    for group in optimizer.param_groups:
        group["lr"] = value * group.get("lr_scale", 1.0)
    return value


def _batch_inputs(train: tuple, batch: torch.Tensor, epoch: int, sample: Callable | None, device: torch.device):
    """The (inputs, targets or None) of training ``batch`` (indices) on ``device``; inputs as float32, drawn by
    ``sample(indices, epoch)`` when given (the windows of the batch are then not read: streamed inputs are read
    on indexing)."""
    inputs, targets = train
    if sample is not None:
        x = torch.from_numpy(sample(batch.numpy(), epoch)).view(len(batch), *tuple(inputs.shape)[1:])
    else:
        x = inputs[batch]
    return x.to(device).float(), (targets[batch].to(device) if targets is not None else None)


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, train: tuple[torch.Tensor, torch.Tensor | None],
        val: tuple[torch.Tensor, np.ndarray, np.ndarray] | None, kind: str, *, epochs: int, warmup_epochs: float,
        batch_size: int, lr: float, min_lr: float, seed: int, device: torch.device, autocast: Callable,
        rank: int = 0, world_size: int = 1, train_module: torch.nn.Module | None = None,
        name: str = "", class_weight: np.ndarray | None = None,
        sample: Callable[[np.ndarray, int], np.ndarray] | None = None, min_steps: int = 0,
        loss_fn: Callable | None = None, criterion: Criterion | None = None) -> FitResult:
    """Train and select on validation (module docstring): the one train-and-select loop of the evaluation
    (fine-tuning, the probes, forecasting).

    train: (inputs [N, ...], targets [N]); val: (inputs [M, ...], targets [M], subjects [M]); inputs are tensors, or
    a :class:`WindowInputs` that reads each batch's windows when indexed.
    ``train_module``: what the steps call (a DDP wrapper of ``model``); ``model`` is what is evaluated and saved.
    ``class_weight`` [C] (classification): weights of the training loss and of the validation criterion.
    ``sample(indices [B], epoch) -> inputs [B, ...]``: the training inputs of a batch instead of
    ``inputs[indices]`` (temporal jitter); the training set's size is still ``len(inputs)``.
    ``min_steps``: at least this many optimizer steps (module docstring).
    ``loss_fn(module, x, y)``: the training loss of a batch (default: :func:`task_loss`; targets may then be None);
    ``criterion``: the validation evaluation and selection (default: :func:`task_criterion` of ``val``).
    """
    step_module = train_module if train_module is not None else model
    n = len(train[0])
    global_batch = batch_size * world_size
    steps_per_epoch = max(1, math.ceil(n / global_batch))
    run_epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    every = max(1, run_epochs // epochs)                              # evaluations stay about ``epochs``
    total = run_epochs * steps_per_epoch
    warmup = min(int(round(warmup_epochs * steps_per_epoch * run_epochs / epochs)), total)  # cut to the run
    loss_fn = loss_fn or task_loss_fn(kind, class_weight, device)
    criterion = criterion or task_criterion(kind, val, class_weight, max(batch_size, 64), device, autocast)
    best, best_key, history, step, t0 = None, None, [], 0, time.perf_counter()
    for epoch in range(run_epochs):
        model.train()
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))
        losses = []
        for k in range(steps_per_epoch):
            batch = order[k * global_batch:(k + 1) * global_batch][rank * batch_size:(rank + 1) * batch_size]
            if len(batch) == 0:  # an uneven last global batch leaves this rank nothing: still join the step
                batch = order[:1]
            value = set_lr(optimizer, lr_at(step, total, warmup, lr, min_lr))
            x, y = _batch_inputs(train, batch, epoch, sample, device)
            with autocast():
                loss = loss_fn(step_module, x, y)
            losses.append(optimizer_step(optimizer, loss, name, epoch, step))
            step += 1
        if (epoch + 1) % every and epoch + 1 < run_epochs:
            continue
        key, fields = criterion.evaluate(model)
        history.append({"epoch": epoch + 1, **({"step": step} if criterion.steps else {}),
                        "train_loss": float(np.mean(losses)), **fields, "lr": value,
                        "elapsed_s": round(time.perf_counter() - t0, 2)})
        if rank == 0:
            log.info("%s epoch %d/%d: train %s %.4f, %s, lr %.2e", name, epoch + 1, run_epochs, criterion.loss_name,
                     history[-1]["train_loss"], criterion.describe(fields), value)
        if best is None or key > best_key:
            best_key, best = key, (epoch + 1, cpu_state(model))
    if all(k == -math.inf for k in best_key):  # the criterion was never defined
        raise TrainingError(f"{name}: no epoch gave a finite {criterion.what}")
    model.load_state_dict(best[1])
    return FitResult(best[0], history, best[1], criterion.metric, best_key[0], -best_key[-1])


@dataclass
class Criterion:
    """How :func:`fit` evaluates and selects: ``evaluate(model) -> (key, history fields)``, the largest key kept
    (the first of equal keys; a key of only -inf is undefined); ``what`` names the criterion in the error when no
    epoch defined it; ``steps``: the history records the optimizer step; ``loss_name`` and ``describe`` the log."""

    evaluate: Callable[[torch.nn.Module], tuple[tuple[float, ...], dict]]
    what: str
    metric: str = ""
    steps: bool = True
    loss_name: str = "loss"

    @staticmethod
    def describe(fields: dict) -> str:
        return ", ".join(f"{k.replace('_', ' ', 1)} {math.nan if v is None else v:.4f}" for k, v in fields.items())


def task_criterion(kind: str, val: tuple, class_weight: np.ndarray | None, batch_size: int, device: torch.device,
                   autocast: Callable) -> Criterion:
    """A task's selection: the task's metric on subject predictions of ``val`` (inputs, targets, subjects;
    :data:`brainjepa.evaluate.metrics.SELECTION`), ties broken by the lower validation loss."""
    from brainjepa.evaluate.metrics import SELECTION, selection_score

    metric = SELECTION[kind]
    val_truth = subject_mean(val[2], np.asarray(val[1], dtype=float))[1]
    val_truth = val_truth if kind == "regression" else val_truth.astype(int)

    def evaluate(model):
        val_pred = predict(model, val[0], kind, device, batch_size, autocast)
        val_loss = subject_loss(kind, val[2], val[1], val_pred, class_weight)
        score = selection_score(kind, val_truth, subject_mean(val[2], val_pred)[1])
        key = (score, -val_loss if math.isfinite(val_loss) else -math.inf)
        return key, {"val_loss": val_loss, f"val_{metric}": score if math.isfinite(score) else None}
    return Criterion(evaluate, f"validation {metric} or loss", metric)


GRID_TIE = 0.01                       # fit_probe: grid points this close to the best validation metric are tied


@dataclass
class ProbeFit:
    """What :func:`fit_probe` returns: the selected probe (eval mode, its selected state) and ``info`` on how it was
    selected (recipe, lr, weight decay, epoch, metric, score, history and the grid)."""

    model: torch.nn.Module            # the selected probe (its standardisation inside), with the selected state
    info: dict                        # recipe, lr, weight_decay, epoch, metric, score, history, grid


def _probe_and_optimizer(protocol: str, section, x_train: torch.Tensor, n_outputs: int, lr: float, wd: float):
    """A fresh probe (standardised on ``x_train``, or the paper's BatchNorm) and its optimizer."""
    from brainjepa.models.heads import AttentiveProbe, LinearProbe

    if protocol == "linprobe" and section.recipe == "paper":
        model = LinearProbe(x_train.shape[-1], n_outputs, norm="batchnorm")
        return model, LARS(model.parameters(), lr=lr, weight_decay=wd)
    if protocol == "linprobe":
        model = LinearProbe(x_train.shape[-1], n_outputs, norm="standardise")
        model.norm.fit(x_train)
        groups = [{"params": [model.fc.weight], "weight_decay": wd}, {"params": [model.fc.bias], "weight_decay": 0.0}]
        return model, torch.optim.Adam(groups, lr=lr)         # coupled decay: an L2 penalty (ridge / logistic)
    from brainjepa.train.pretrain import param_groups

    model = AttentiveProbe(x_train.shape[-1], n_outputs, section.num_heads, n_tokens=x_train.shape[1])
    model.standardise.fit(x_train)
    groups = param_groups([model])
    groups[0]["weight_decay"] = wd
    return model, torch.optim.AdamW(groups, lr=lr)


def fit_probe(protocol: str, section, train: tuple[torch.Tensor, torch.Tensor],
              val: tuple[torch.Tensor, np.ndarray, np.ndarray], kind: str, n_outputs: int, *, seed: int,
              device: torch.device, autocast: Callable, rank: int = 0, world_size: int = 1,
              wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None, name: str = "",
              class_weight: np.ndarray | None = None) -> ProbeFit:
    """Fit a probe on frozen features and select it on validation (module docstring).

    protocol ``linprobe`` (train inputs [N, D], ``section`` a LinprobeConfig) or ``attentive`` ([N, R, D], an
    AttentiveConfig); train: (inputs, targets [N]); val: (inputs [M, ...], targets [M], subjects [M]). Each grid
    point starts from the same initialisation (``seed``); the one with the best validation metric (ties: the lower
    validation loss, then the earlier grid point) is returned; grid points within :data:`GRID_TIE` of the best
    validation metric count as tied (a few validation subjects rank by chance: on 40, one swapped pair moves
    AUROC by 0.003). ``wrap(model)``: what the steps call (DDP).
    ``info['grid']``: one row per grid point (lr, weight_decay, selected epoch, its validation metric and loss)."""
    x_train = train[0].float()
    x_val = val[0].float()
    if protocol == "linprobe" and section.recipe == "paper":
        grid = [(section.base_lr * section.batch_size * world_size / 256, section.weight_decay)]
        min_steps = 0
    else:
        grid = [(float(lr), float(wd)) for lr in section.lr_grid for wd in section.weight_decay_grid]
        min_steps = section.min_steps
    fits, rows = [], []
    for lr, wd in grid:
        torch.manual_seed(seed)
        model, optimizer = _probe_and_optimizer(protocol, section, x_train, n_outputs, lr, wd)
        model.to(device)
        result = fit(model, optimizer, (x_train, train[1]), (x_val, val[1], val[2]), kind, epochs=section.epochs,
                     warmup_epochs=section.warmup_epochs, batch_size=section.batch_size, lr=lr,
                     min_lr=section.min_lr, seed=seed, device=device, autocast=autocast, rank=rank,
                     world_size=world_size, train_module=wrap(model) if wrap else None,
                     name=f"{name} lr {lr:g} wd {wd:g}", class_weight=class_weight, min_steps=min_steps)
        score = result.score if math.isfinite(result.score) else None
        rows.append({"lr": lr, "weight_decay": wd, "epoch": result.selected_epoch, f"val_{result.metric}": score,
                     "val_loss": result.val_loss, "steps": result.history[-1]["step"]})
        fits.append((model, result, lr, wd))
    top = max(f[1].score for f in fits)
    tied = [f for f in fits if f[1].score >= top - GRID_TIE or not math.isfinite(top)]
    model, result, lr, wd = min(tied, key=lambda f: f[1].val_loss)      # the first of equal losses
    if rank == 0 and len(grid) > 1:
        log.info("%s: selected lr %g, weight decay %g (epoch %d, val %s %.4f)", name, lr, wd, result.selected_epoch,
                 result.metric, result.score)
    info = {"recipe": getattr(section, "recipe", "standard"), "lr": lr, "weight_decay": wd,
            "epoch": result.selected_epoch, "metric": result.metric,
            "score": result.score if math.isfinite(result.score) else None, "history": result.history, "grid": rows}
    return ProbeFit(model.eval(), info)


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
