"""The Brain-JEPA pretraining loop: setup in one place, a short ``train_one_epoch``, pure schedules.

One optimizer step = ``accumulation_steps`` micro-batches. Per micro-batch: the EMA target encoder sees the
whole input (no grad), its output is layer-normalised (no affine) and gathered at the target tokens; the
encoder sees the context tokens only; the predictor predicts the targets; loss MSE (paper) or smooth L1 (code)
over the valid target tokens. After the step: EMA update of the target encoder.

``optim.target_norm: layer_centered`` (not in the paper) guards against positional collapse: the part of a
layer-normed target that is the same for every sample at a token position (its positional embedding's
imprint) is subtracted (the mean over the micro-batch at that position) and the rest is layer-normed again,
so the loss is about content only and shrinking content cannot lower it. Measured on the demo
(``bench/jepa_synchrony.py``): with ``layer`` the tiny model's loss settles at the position-only level and
the content of its targets shrinks; with ``layer_centered`` the loss falls below it.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from brainjepa.errors import InputError, TrainingError
from brainjepa.io import write_text_atomic
from brainjepa.train import checkpoint as ckpt
from brainjepa.train.config import CHOICES, TrainConfig, dump_config, to_dict
from brainjepa.train.ema import ema_update
from brainjepa.train.schedules import cosine_ramp, ema_momentum, warmup_cosine

log = logging.getLogger("brainjepa.train")
LOG_COLUMNS = ["step", "epoch", "loss", "loss_alpha", "loss_beta", "loss_gamma", "lr", "weight_decay",
               "momentum", "target_std", "samples_per_s", "elapsed_s"]
RESUMABLE_CHANGES = {"run.stop_after_steps", "run.progress", "data.num_workers"}


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> tuple[Distributed, torch.device]:
    """torchrun's environment -> process group (NCCL on GPU, Gloo on CPU) and this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist_info = Distributed(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_kind == "cuda" or (device_kind == "auto" and torch.cuda.is_available())
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise TrainingError("run.device is 'cuda' but no GPU is visible")
    device = torch.device(f"cuda:{dist_info.local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist_info, device


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on GPU (precision auto/bf16); fp32 otherwise. CPU and GPU run the same code."""
    if precision not in ("auto", "bf16", "fp32"):
        raise InputError(f"run.precision must be auto, bf16 or fp32, not {precision!r}")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def param_groups(modules: list[torch.nn.Module]) -> list[dict]:
    """AdamW groups: weight decay on matrices only (no decay on biases, norms and other 1-D parameters)."""
    decay, no_decay = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


def masked_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over valid target tokens and features. pred, target: [B, Nt, D]; valid: [B, Nt] bool."""
    if kind == "mse":
        per = F.mse_loss(pred, target, reduction="none")
    elif kind == "smooth_l1":
        per = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
    else:
        raise InputError(f"optim.loss must be 'mse' or 'smooth_l1', not {kind!r}")
    weight = valid.unsqueeze(-1).to(per.dtype)
    return (per * weight).sum() / (weight.sum() * per.shape[-1]).clamp_min(1.0)


def gather_tokens(h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """h: [B, N, D], idx: [B, K] -> [B, K, D]."""
    return torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))


TARGET_NORMS = CHOICES[("optim", "target_norm")]


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


def jepa_step(encoder, target_encoder, predictor, batch: dict, loss_kind: str,
              target_norm: str = "layer") -> tuple[torch.Tensor, dict]:
    """Loss of one micro-batch and its monitors. batch: the mask collator's dict, already on the device."""
    x = batch["x"]
    with torch.no_grad():
        h, target_std = normalize_targets(target_encoder(x), target_norm)  # [B, R*W, D], all tokens
        targets = gather_tokens(h, batch["target_idx"])        # [B, Nt, D]
    z = encoder(x, batch["context_idx"], batch["context_valid"])
    pred = predictor(z, batch["context_idx"], batch["target_idx"], batch["context_valid"], batch["target_valid"])
    loss = masked_loss(pred.float(), targets, batch["target_valid"], loss_kind)
    monitors = {"target_std": target_std.detach()}
    with torch.no_grad():
        for region, name in enumerate(("loss_alpha", "loss_beta", "loss_gamma")):
            valid = batch["target_valid"] & (batch["target_region"] == region)
            monitors[name] = masked_loss(pred.float(), targets, valid, loss_kind) if valid.any() else \
                torch.tensor(float("nan"), device=x.device)
    return loss, monitors


@dataclass
class Schedule:
    """Step-indexed schedules of one run (optimizer steps)."""

    total_steps: int
    warmup_steps: int
    cfg: object  # OptimConfig

    def values(self, step: int) -> dict[str, float]:
        o = self.cfg
        return {
            "lr": warmup_cosine(step, self.total_steps, self.warmup_steps, o.start_lr, o.lr, o.final_lr),
            "weight_decay": cosine_ramp(step, self.total_steps, o.weight_decay, o.final_weight_decay),
            "momentum": ema_momentum(step, self.total_steps, o.ema[0], o.ema[1], o.ema_schedule,
                                     o.accumulation_steps),
        }


class CSVLog:
    """Append-only CSV of the training curve (rows at or after a resumed step replace nothing: see resume)."""

    def __init__(self, path: Path, active: bool):
        self.path, self.active = path, active
        if active and not path.exists():
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(LOG_COLUMNS)

    def write(self, row: dict) -> None:
        if self.active:
            with open(self.path, "a", newline="") as fh:
                csv.writer(fh).writerow([_fmt(row.get(c)) for c in LOG_COLUMNS])


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# ----------------------------------------------------------------------------------------------- setup
def load_gradients_for(cfg: TrainConfig, roi_names: list[str]) -> torch.Tensor:
    """The gradient matrix [R, G] in the shards' ROI order (names must match)."""
    from brainjepa.gradients import read_gradients

    names, gradients = read_gradients(cfg.data.gradients)
    if names != list(roi_names):
        raise InputError(f"{cfg.data.gradients}: ROI names/order differ from the shards' manifest "
                         f"{cfg.data.manifest} ({len(names)} vs {len(roi_names)} ROIs)")
    return torch.tensor(gradients, dtype=torch.float32)


def load_centroids_for(cfg: TrainConfig, roi_names: list[str]) -> torch.Tensor | None:
    """ROI centroids [R, 3] (mm) from the atlas label table, for the 'centroid' positional ablation."""
    if cfg.model.get("positional", "gradient") != "centroid":
        return None
    from brainjepa.atlas import read_label_table

    if not cfg.data.labels:
        raise InputError("model.positional 'centroid' needs data.labels (the atlas label table)")
    table = read_label_table(cfg.data.labels)
    if table["name"].astype(str).tolist() != list(roi_names):
        raise InputError(f"{cfg.data.labels}: ROI names differ from the shards' manifest")
    return torch.tensor(table[["x", "y", "z"]].to_numpy(dtype=np.float32))


def build_models(cfg: TrainConfig, roi_names: list[str], device: torch.device):
    """Encoder, EMA target encoder (a frozen copy) and predictor on ``device``."""
    import copy

    from brainjepa.models import ModelConfig, build_model

    gradients = load_gradients_for(cfg, roi_names)
    model_cfg = ModelConfig.from_dict({**cfg.model, "n_rois": len(roi_names), "n_timesteps": cfg.data.window,
                                       "n_gradients": gradients.shape[1]}).resolved()
    encoder, predictor = build_model(model_cfg, gradients, load_centroids_for(cfg, roi_names))
    target = copy.deepcopy(encoder)
    for param in target.parameters():
        param.requires_grad_(False)
    return encoder.to(device), target.to(device), predictor.to(device), model_cfg


def build_loader(cfg: TrainConfig, manifest: dict, dist_info: Distributed, patches: int):
    """The pretraining DataLoader: shuffled shards, one random window per run, the mask collator."""
    from torch.utils.data import DataLoader

    from brainjepa.data import ShardDataset
    from brainjepa.masks import MaskCollator, MaskConfig

    dataset = ShardDataset(cfg.data.manifest, cfg.data.split, window=cfg.data.window, mode="train",
                           seed=cfg.run.seed, rank=dist_info.rank, world_size=dist_info.world_size,
                           scaling_stats=cfg.data.scaling_stats)
    mask_cfg = MaskConfig.from_dict({"mode": cfg.mask.mode, **cfg.mask.options})
    collator = MaskCollator(len(manifest["roi_names"]), patches, mask_cfg, seed=cfg.run.seed)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, collate_fn=collator, drop_last=True,
                        num_workers=cfg.data.num_workers, persistent_workers=cfg.data.num_workers > 0,
                        generator=torch.Generator().manual_seed(cfg.run.seed))
    return dataset, collator, loader


def batches_per_epoch(dataset, batch_size: int, accumulation: int, device: torch.device) -> int:
    """Micro-batches every rank runs this epoch: the smallest rank's full batches, whole optimizer steps."""
    local = torch.tensor(len(dataset) // batch_size, device=device)
    if dist.is_initialized():
        dist.all_reduce(local, op=dist.ReduceOp.MIN)
    return int(local) // accumulation * accumulation


# ----------------------------------------------------------------------------------------------- the run
class Trainer:
    """Holds one run's state; ``fit`` trains to the end (or to ``run.stop_after_steps``), resuming if possible."""

    def __init__(self, cfg: TrainConfig):
        from brainjepa.shards import load_manifest

        self.cfg = cfg
        self.out = Path(cfg.run.out_dir)
        self.dist, self.device = setup_distributed(cfg.run.device)
        torch.manual_seed(cfg.run.seed + self.dist.rank)
        self.manifest = load_manifest(cfg.data.manifest)
        self.encoder, self.target, self.predictor, self.model_cfg = build_models(
            cfg, self.manifest["roi_names"], self.device)
        self.dataset, self.collator, self.loader = build_loader(cfg, self.manifest, self.dist,
                                                                self.model_cfg.n_time_patches)
        self.online = [self._wrap(self.encoder), self._wrap(self.predictor)]
        self.optimizer = torch.optim.AdamW(param_groups([self.encoder, self.predictor]), lr=cfg.optim.lr,
                                           betas=tuple(cfg.optim.betas))
        per_epoch = len(self.dataset) // cfg.data.batch_size // cfg.optim.accumulation_steps
        if per_epoch < 1:
            raise InputError(f"{cfg.data.manifest}: split '{cfg.data.split}' has {len(self.dataset)} samples for "
                             f"this rank, fewer than one optimizer step (batch {cfg.data.batch_size} x "
                             f"{cfg.optim.accumulation_steps} accumulation)")
        self.schedule = Schedule(cfg.optim.epochs * per_epoch, cfg.optim.warmup_epochs * per_epoch, cfg.optim)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.csv = CSVLog(self.out / "log.csv", self.dist.is_main)

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.dist.world_size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"encoder": self.encoder.state_dict(), "target_encoder": self.target.state_dict(),
                "predictor": self.predictor.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "rng": ckpt.rng_state(), "config": to_dict(self.cfg),
                "model_config": {k: v for k, v in vars(self.model_cfg).items()},
                "roi_names": list(self.manifest["roi_names"]),
                "scaling_stats_id": self.manifest["scaling_stats_id"]}

    def save(self, *names: str) -> None:
        if self.dist.is_main:
            for name in names:
                ckpt.save_checkpoint(self.out / name, self.state())
        if dist.is_initialized():
            dist.barrier()

    def resume(self) -> bool:
        """Continue from ``latest.pt`` when the run directory has one (same configuration required)."""
        path = self.out / "latest.pt"
        if not path.exists():
            return False
        state = ckpt.load_checkpoint(path)
        changed = _config_changes(state["config"], to_dict(self.cfg)) - RESUMABLE_CHANGES
        if changed:
            raise TrainingError(f"{path}: the configuration changed since this run started ({sorted(changed)}); "
                                "use a new run.out_dir or restore the configuration")
        for name, module in (("encoder", self.encoder), ("target_encoder", self.target),
                             ("predictor", self.predictor)):
            module.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        ckpt.set_rng_state(state["rng"])
        if self.dist.is_main:
            _truncate_log(self.out / "log.csv", self.step)
        log.info("resumed %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)
        return True

    # -- training ------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train every remaining epoch; returns the path of ``final.pt`` (or ``latest.pt`` if stopped early)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = self.tick = time.perf_counter()
        if self.dist.is_main:
            write_text_atomic(self.out / "config.yaml", dump_config(self.cfg))
        self.resume()
        start_step = self.step
        while self.epoch < self.cfg.optim.epochs:
            if not self.train_one_epoch(start_step):
                self.save("latest.pt")
                return self.out / "latest.pt"
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            names = ["latest.pt"] + ([f"epoch-{self.epoch:04d}.pt"] if self.epoch % self.cfg.run.checkpoint_every == 0 else [])
            self.save(*names)
        self.save("latest.pt", "final.pt")
        return self.out / "final.pt"

    def train_one_epoch(self, start_step: int) -> bool:
        """One epoch from ``batch_in_epoch``; False when ``run.stop_after_steps`` ends this call first."""
        from tqdm import tqdm

        cfg, accumulation = self.cfg, self.cfg.optim.accumulation_steps
        self.dataset.set_epoch(self.epoch)
        self.collator.set_epoch(self.epoch)
        n_batches = batches_per_epoch(self.dataset, cfg.data.batch_size, accumulation, self.device)
        batches = iter(self.loader)
        for _ in range(self.batch_in_epoch):  # resume mid-epoch: same data and masks, no compute
            next(batches)
        bar = tqdm(total=n_batches, initial=self.batch_in_epoch, desc=f"epoch {self.epoch}", leave=False,
                   disable=not (cfg.run.progress and self.dist.is_main))
        for index in range(self.batch_in_epoch, n_batches):
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in next(batches).items()}
            last_micro = (index + 1) % accumulation == 0
            loss, monitors = self.micro_step(batch, last_micro)
            self.batch_in_epoch = index + 1
            bar.update(1)
            if last_micro:
                now = time.perf_counter()
                samples_per_s = batch["x"].shape[0] * accumulation / max(now - self.tick, 1e-9)
                self.tick = now
                self.optimizer_step(loss, monitors, samples_per_s, bar)
                stop = cfg.run.stop_after_steps
                if stop is not None and self.step - start_step >= stop:
                    bar.close()
                    return False
        bar.close()
        return True

    def micro_step(self, batch: dict, last_micro: bool) -> tuple[torch.Tensor, dict]:
        """Forward and backward of one micro-batch (DDP gradient sync only on the last micro-batch)."""
        sync = nullcontext() if last_micro or self.dist.world_size == 1 else _no_sync(self.online)
        with sync, autocast_for(self.device, self.cfg.run.precision):
            loss, monitors = jepa_step(self.online[0], self.target, self.online[1], batch, self.cfg.optim.loss,
                                      self.cfg.optim.target_norm)
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite loss ({loss.item()}) at step {self.step}, epoch {self.epoch}, "
                                f"batch {self.batch_in_epoch}; lower optim.lr or check the data")
        with sync:
            (loss / self.cfg.optim.accumulation_steps).backward()
        return loss.detach(), monitors

    def optimizer_step(self, loss: torch.Tensor, monitors: dict, samples_per_s: float, bar) -> None:
        values = self.schedule.values(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = values["lr"]
            if group["apply_wd"]:
                group["weight_decay"] = values["weight_decay"]
        if self.cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           self.cfg.optim.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        ema_update(self.target, self.encoder, values["momentum"])
        self.step += 1
        self.monitor(loss, monitors, values, samples_per_s * self.dist.world_size, bar)

    def monitor(self, loss, monitors: dict, values: dict, samples_per_s: float, bar) -> None:
        target_std = float(monitors["target_std"])
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{values['lr']:.2e}", std=f"{target_std:.3f}",
                        sps=f"{samples_per_s:.0f}")
        if target_std < self.cfg.run.collapse_threshold and self.dist.is_main:
            log.warning("possible representation collapse at step %d: target feature std across the batch "
                        "%.4f < %.4f", self.step, target_std, self.cfg.run.collapse_threshold)
        if self.step % self.cfg.run.log_every == 0 or self.step == 1:
            self.csv.write({"step": self.step, "epoch": self.epoch, "loss": loss.item(), **values,
                            **{k: float(v) for k, v in monitors.items()}, "samples_per_s": samples_per_s,
                            "elapsed_s": time.perf_counter() - self.t0})


def _no_sync(modules):
    from contextlib import ExitStack

    stack = ExitStack()
    for module in modules:
        if hasattr(module, "no_sync"):
            stack.enter_context(module.no_sync())
    return stack


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "model":
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _config_changes(old: dict, new: dict) -> set[str]:
    a, b = _flatten(old), _flatten(new)
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows beyond the resumed step (written after the checkpoint by the interrupted run)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(kept)


def pretrain(cfg: TrainConfig) -> Path:
    """Run (or resume) pretraining; returns the final (or latest) checkpoint path."""
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
