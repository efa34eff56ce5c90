"""The ``pretrain`` stage: Brain-JEPA self-supervised pretraining, setup in one place and a short epoch loop.

The same engine trains the masked-autoencoder baseline (``objective: mae``, :func:`.jepa.mae_step`): no EMA
target encoder then, and the saved ``target_encoder`` is the encoder.

One optimizer step = ``optim.accumulation_steps`` micro-batches of the JEPA objective (:mod:`.jepa`); after
the step, the EMA update of the target encoder (:mod:`.ema`). Schedules are pure functions of the step
(:mod:`.schedules`), so a resume from ``latest.pt`` replays nothing; runtime pieces shared with evaluation
(torchrun, devices, autocast, batches per epoch) are in :mod:`.runtime`.
"""

from __future__ import annotations

import logging
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from brainjepa.errors import InputError, Preempted, TrainingError
from brainjepa.io import write_text_atomic
from brainjepa.train import checkpoint as ckpt
from brainjepa.train.config import OptimConfig, TrainConfig, dump_config, to_dict, with_data_shape
from brainjepa.train.ema import ema_update
from brainjepa.train.jepa import jepa_step, mae_step
from brainjepa.train.log import CSVLog, truncate_log
from brainjepa.train.runtime import (
    Distributed,
    autocast_for,
    batches_per_epoch,
    compile_modules,
    ddp_always,
    no_sync,
    set_tf32,
    setup_distributed,
    use_deterministic_algorithms,
)
from brainjepa.train.schedules import cosine_ramp, ema_momentum, warmup_cosine

log = logging.getLogger("brainjepa.train")


def param_groups(modules: list[torch.nn.Module]) -> list[dict]:
    """AdamW groups: weight decay on matrices only (no decay on biases, norms and other 1-D parameters)."""
    decay, no_decay = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


def adamw(groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``groups``; on a GPU with ``optim.fused``, its fused kernel (one launch for every parameter, the
    same update to rounding). On CPU torch's default implementation, whatever ``optim.fused`` says."""
    fused = {"fused": True} if cfg.fused and device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), **fused)


@dataclass
class Schedule:
    """Step-indexed schedules of one run (optimizer steps)."""

    total_steps: int
    warmup_steps: int
    cfg: OptimConfig

    def values(self, step: int) -> dict[str, float]:
        o = self.cfg
        return {
            "lr": warmup_cosine(step, self.total_steps, self.warmup_steps, o.start_lr, o.lr, o.final_lr),
            "weight_decay": cosine_ramp(step, self.total_steps, o.weight_decay, o.final_weight_decay),
            "momentum": ema_momentum(step, self.total_steps, o.ema[0], o.ema[1], o.ema_schedule,
                                     o.accumulation_steps),
        }


# ----------------------------------------------------------------------------------------------- setup
def load_gradients_for(cfg: TrainConfig, roi_names: list[str]) -> torch.Tensor:
    """The gradient matrix [R, G] in the shards' ROI order (names must match)."""
    from brainjepa.models.inputs import load_gradients

    return load_gradients(cfg.data.gradients, roi_names, f"the shards' manifest {cfg.data.manifest}")


def load_centroids_for(cfg: TrainConfig, roi_names: list[str]) -> torch.Tensor | None:
    """ROI centroids [R, 3] (mm) from the atlas label table, for the 'centroid' positional ablation."""
    from brainjepa.models.inputs import load_centroids

    return load_centroids(cfg.model.positional, cfg.data.labels, roi_names)


def build_models(cfg: TrainConfig, roi_names: list[str], window: int, device: torch.device):
    """Encoder, target encoder and predictor on ``device``, at the data's shape.

    jepa: the target encoder is a frozen copy of the encoder (updated by EMA). mae: there is none; the
    "target encoder" is the encoder itself (what evaluation loads) and the predictor is the MAE decoder,
    predicting each hidden patch's ``patch_size`` raw values.
    """
    import copy

    from brainjepa.models import BrainEncoder, BrainPredictor, build_model

    gradients = load_gradients_for(cfg, roi_names)
    model_cfg = with_data_shape(cfg.model, len(roi_names), window, gradients.shape[1]).resolved()
    centroids = load_centroids_for(cfg, roi_names)
    if cfg.objective == "mae":
        encoder = BrainEncoder(model_cfg, gradients, centroids)
        decoder = BrainPredictor(model_cfg, gradients, centroids, out_dim=model_cfg.patch_size)
        return encoder.to(device), encoder.to(device), decoder.to(device), model_cfg
    encoder, predictor = build_model(model_cfg, gradients, centroids)
    target = copy.deepcopy(encoder)
    for param in target.parameters():
        param.requires_grad_(False)
    return encoder.to(device), target.to(device), predictor.to(device), model_cfg


def data_window(cfg: TrainConfig, manifest: dict) -> int:
    """Time steps per sample: ``data.window``, or the shard manifest's window when it is not set."""
    window = cfg.data.window if cfg.data.window is not None else int(manifest["window"])
    if window > int(manifest["window"]):
        raise InputError(f"data.window ({window}) is longer than the shards' window ({manifest['window']}) in "
                         f"{cfg.data.manifest}: runs shorter than it may have been kept")
    return window


def build_loader(cfg: TrainConfig, manifest: dict, dist_info: Distributed, window: int, patches: int,
                 device: torch.device | None = None):
    """The pretraining DataLoader: shuffled shards, one random window per run, the mask collator. Batches for a
    GPU are page-locked (``data.pin_memory``), so that their copy to it does not block the process."""
    from torch.utils.data import DataLoader

    from brainjepa.data.dataset import ShardDataset
    from brainjepa.train.masks import MaskCollator

    dataset = ShardDataset(cfg.data.manifest, cfg.data.split, window=window, mode="train",
                           seed=cfg.run.seed, rank=dist_info.rank, world_size=dist_info.world_size,
                           scaling_stats=cfg.data.scaling_stats, batch_size=cfg.data.batch_size,
                           shard_url=cfg.data.shard_url)
    collator = MaskCollator(len(manifest["roi_names"]), patches, cfg.mask, seed=cfg.run.seed)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, collate_fn=collator, drop_last=True,
                        num_workers=cfg.data.num_workers, persistent_workers=cfg.data.num_workers > 0,
                        generator=torch.Generator().manual_seed(cfg.run.seed), worker_init_fn=ignore_stop_signals,
                        pin_memory=cfg.data.pin_memory and device is not None and device.type == "cuda")
    return dataset, collator, loader


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker ignores SIGTERM and SIGINT: Slurm (and `kill -- -pgid`, Ctrl-C) signals every process of
    the job, and a worker killed by it made torch's SIGCHLD handler raise in the trainer before it could finish its
    step and write latest.pt. The trainer stops them when it leaves (and Slurm's SIGKILL follows anyway)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def too_few_windows(cfg: TrainConfig, manifest: dict, world_size: int) -> str:
    """The message for a split with fewer windows than one optimizer step takes, and the setting to lower."""
    n = sum(int(entry["rows"]) for entry in manifest["splits"].get(cfg.data.split, []))
    batch, accumulation = cfg.data.batch_size, cfg.optim.accumulation_steps
    parts = [f"batch {batch}"] + ([f"{accumulation} accumulation"] if accumulation > 1 else []) + (
        [f"{world_size} processes"] if world_size > 1 else [])
    if n // (accumulation * world_size) >= 1:
        fix = f"lower data.batch_size to at most {n // (accumulation * world_size)}"
    elif n // (batch * world_size) >= 1:
        fix = f"lower optim.accumulation_steps to at most {n // (batch * world_size)}"
    elif n // world_size >= 1:
        fix = f"lower data.batch_size to at most {n // world_size} and optim.accumulation_steps to 1"
    else:
        fix = "use fewer processes or more runs"
    return (f"{cfg.data.manifest}: split '{cfg.data.split}' has {n} windows (one per run each epoch), fewer than "
            f"one optimizer step of {batch * accumulation * world_size} ({' x '.join(parts)}); {fix}")


# ----------------------------------------------------------------------------------------------- the run
# Settings that do not change what is trained: a run may resume with other values. Paths are left out of a
# run's identity too; the content they point at is in it (run_identity).
RESUMABLE_CHANGES = {"run.stop_after_steps", "run.progress", "data.num_workers", "run.log_every",
                     "run.checkpoint_every", "run.collapse_threshold", "run.out_dir", "data.manifest", "data.shard_url",
                     "data.gradients", "data.scaling_stats", "data.labels", "run.monitor_every", "run.monitor_windows",
                     "run.collapse", "run.collapse_fraction", "data.monitor_split",
                     # kernels and I/O: TF32, fused AdamW, pinned batches, how often and how latest.pt is written,
                     # torch.compile and its backend (the same model and arithmetic, other kernels)
                     "run.tf32", "optim.fused", "data.pin_memory", "run.save_every_minutes", "run.async_save",
                     "run.compile", "run.compile_backend",
                     "model.attention"}  # the attention backend: how this machine runs the model, not what it is


def run_identity(cfg: TrainConfig, manifest: dict) -> dict:
    """What a run trains: its configuration (less RESUMABLE_CHANGES) and the content of its data.

    Data: the sha256 of every shard of the split (from the manifest), the scaling statistics id, the sha256 of
    the gradients file (and of the label table when ROI centroids are the positions). Two runs with equal
    identities train the same model.
    """
    from brainjepa.io import sha256_file

    config = {k: v for k, v in _flatten(to_dict(cfg)).items() if k not in RESUMABLE_CHANGES}
    data = {"shards": [entry["sha256"] for entry in manifest["splits"].get(cfg.data.split, [])],
            "scaling_stats_id": manifest["scaling_stats_id"], "gradients_sha256": sha256_file(cfg.data.gradients)}
    if cfg.model.positional == "centroid":
        data["labels_sha256"] = sha256_file(cfg.data.labels)
    return {"config": config, "data": data}


def identity_changes(old: dict, new: dict) -> list[str]:
    """Dotted names of what differs between two identities (config keys, data items). A config key that the
    older identity lacks (a setting added since it was written) counts as its default there; one that it has but
    that is no longer part of an identity (in RESUMABLE_CHANGES since it was written) is not compared."""
    defaults = _flatten(to_dict(TrainConfig()))
    missing = object()

    def old_value(key: str):
        value = old["config"].get(key, missing)
        return defaults.get(key) if value is missing else value

    keys = (set(old["config"]) | set(new["config"])) - RESUMABLE_CHANGES
    changes = [f"config {k}" for k in sorted(keys) if old_value(k) != new["config"].get(k)]
    return changes + [f"data {k}" for k in sorted(set(old["data"]) | set(new["data"]))
                      if old["data"].get(k) != new["data"].get(k)]


class Trainer:
    """Holds one run's state; ``fit`` trains to the end (or to ``run.stop_after_steps``), resuming if possible.

    The run folder (``run.out_dir``) holds one run. ``fit`` decides from ``latest.pt`` (see :meth:`start`):
    resume an unfinished run of the same identity; do nothing for a finished one whose ``final.pt`` is there
    (unless ``restart``); otherwise train afresh, first moving the old folder aside to
    ``<out_dir>.replaced-<n>`` (never mixing two runs). A finished run without ``final.pt`` is trained again:
    that is what Snakemake asks for when it reruns the rule (it deletes ``final.pt`` first; the workflow reruns
    it only when an input changed or on ``--forcerun pretrain``).
    """

    def __init__(self, cfg: TrainConfig, restart: bool = False):
        from brainjepa.data.shards import load_manifest

        self.cfg, self.restart = cfg, restart
        self.out = Path(cfg.run.out_dir)
        if cfg.run.deterministic:  # before any CUDA work: it sets CUBLAS_WORKSPACE_CONFIG when unset
            use_deterministic_algorithms()
        self.dist, self.device = setup_distributed(cfg.run.device, group=ddp_always())
        self.ddp = dist.is_initialized()  # DDP and its collectives: several processes, or $BRAINJEPA_DDP=always
        set_tf32(self.device, cfg.run.tf32)
        torch.manual_seed(cfg.run.seed)  # every rank builds the same models (the target encoder included)
        self.manifest = load_manifest(cfg.data.manifest)
        self.identity = run_identity(cfg, self.manifest)
        window = data_window(cfg, self.manifest)
        self.encoder, self.target, self.predictor, self.model_cfg = build_models(
            cfg, self.manifest["roi_names"], window, self.device)
        if self.dist.rank > 0:  # dropout / drop path differ by rank; rank 0 keeps a single process's stream
            torch.manual_seed(cfg.run.seed + self.dist.rank)
        if cfg.run.compile:  # in place, before DDP wraps them: state_dict keys unchanged
            compile_modules([self.encoder, self.target, self.predictor], cfg.run.compile_backend)
        self.dataset, self.collator, self.loader = build_loader(cfg, self.manifest, self.dist, window,
                                                                self.model_cfg.n_time_patches, self.device)
        self.online = [self._wrap(self.encoder), self._wrap(self.predictor)]
        self.optimizer = adamw(param_groups([self.encoder, self.predictor]), cfg.optim, self.device)
        self.global_batch = {"batch_size": cfg.data.batch_size, "processes": self.dist.world_size,
                             "accumulation_steps": cfg.optim.accumulation_steps}
        # one figure for every rank: the smallest rank's full batches, in whole optimizer steps
        self.batches_per_epoch = batches_per_epoch(self.dataset, cfg.data.batch_size,
                                                   cfg.optim.accumulation_steps, self.device)
        per_epoch = self.batches_per_epoch // cfg.optim.accumulation_steps
        if per_epoch < 1:
            raise InputError(too_few_windows(cfg, self.manifest, self.dist.world_size))
        self.schedule = Schedule(cfg.optim.epochs * per_epoch, cfg.optim.warmup_epochs * per_epoch, cfg.optim)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.saved_step: int | None = None  # the step of this run's latest.pt on disk
        self.saved_at = time.monotonic()    # when latest.pt was last written, or fit began (run.save_every_minutes)
        self.signal: int | None = None
        self.writer = ckpt.BackgroundWriter()  # run.async_save: latest.pt written on a thread of its own
        # where the loss first went non-finite: step, epoch, batch, value (-1: not yet). Kept on the device, so that
        # an ordinary step reads nothing from it; check_finite reads it (log steps, saves, monitors, the end).
        self.nonfinite = torch.full((4,), -1.0, dtype=torch.float64, device=self.device)
        self.tick = time.perf_counter()
        self.rate = [0, 0.0]  # samples and training seconds since the last log row (samples_per_s)
        self.csv = CSVLog(self.out / "log.csv", False)  # opened by fit, once the run folder is settled
        self.monitor_windows = self._monitor_windows(window)
        self.monitor_csv = CSVLog(self.out / "monitors.csv", False, self.monitor_columns())
        self.monitor_reference: dict[str, float] | None = None   # the step-0 monitors
        self.monitor_step: int | None = None                      # the step of the last monitors

    # -- representation monitors (train/monitors.py) --------------------------------------------------------
    def _monitor_windows(self, window: int) -> torch.Tensor | None:
        """The held-out windows of the monitors (rank 0 computes them; None: off)."""
        from brainjepa.train.monitors import monitor_windows

        cfg = self.cfg
        if not cfg.run.monitor_every or not self.dist.is_main:
            return None
        windows = monitor_windows(cfg.data.manifest, cfg.data.monitor_split, window, cfg.run.monitor_windows,
                                  cfg.data.shard_url)
        if windows is None:
            log.warning("%s has no '%s' split (shards.monitor_subjects; brainjepa shards --monitor-subjects): "
                        "the representation monitors are off", cfg.data.manifest, cfg.data.monitor_split)
        else:
            log.info("representation monitors every %d steps on %d held-out windows of split '%s'",
                     cfg.run.monitor_every, len(windows), cfg.data.monitor_split)
        return windows

    def monitored(self) -> dict[str, torch.nn.Module]:
        """The encoders the monitors watch: the context and the EMA target encoder (the MAE: its encoder)."""
        return {"context": self.encoder} if self.cfg.objective == "mae" else {"context": self.encoder,
                                                                               "target": self.target}

    def monitor_columns(self) -> list[str]:
        from brainjepa.train.monitors import MONITORS

        return ["step", "epoch", *(f"{name}_{key}" for name in self.monitored() for key in MONITORS)]

    def watch(self, force: bool = False) -> None:
        """The monitors at this step (every run.monitor_every steps, or ``force``): written to monitors.csv, and a
        monitor below run.collapse_fraction of its step-0 value is a warning, or (run.collapse: stop) the end of
        the run with latest.pt written. Rank 0 computes; every rank learns whether to stop."""
        from brainjepa.train.monitors import narrowed, representation_monitors

        cfg = self.cfg.run
        if not cfg.monitor_every or self.monitor_step == self.step or (not force and self.step % cfg.monitor_every):
            return
        self.check_finite()  # no monitors (nor a collapse stop's save) of a non-finite state
        problems: list[str] = []
        if self.monitor_windows is not None:
            values = representation_monitors(self.monitored(), self.monitor_windows)
            if self.step == 0:
                self.monitor_reference = values
            self.monitor_csv.write({"step": self.step, "epoch": self.epoch, **values})
            if self.monitor_reference is not None:
                problems = narrowed(values, self.monitor_reference, cfg.collapse_fraction)
            if problems:
                log.warning("representations narrowing at step %d (monitors on %d held-out windows): %s", self.step,
                            len(self.monitor_windows), "; ".join(problems))
        self.monitor_step = self.step
        stop = torch.tensor(int(bool(problems) and cfg.collapse == "stop"), device=self.device)
        if dist.is_initialized():
            dist.broadcast(stop, 0)
        if stop.item():
            self.save("latest.pt", wait=True)
            raise TrainingError(f"representation collapse at step {self.step} (run.collapse: stop): "
                                f"{'; '.join(problems) or 'see rank 0'}; {self.out / 'monitors.csv'} has every value")

    def _monitor_reference_from_log(self) -> None:
        """On resume: the step-0 monitors from monitors.csv (the reference of the narrowing check)."""
        import csv

        path = self.out / "monitors.csv"
        if self.monitor_windows is None or not path.exists():
            return
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("step") == "0":
                    self.monitor_reference = {k: float(v) for k, v in row.items() if k not in ("step", "epoch") and v}
        if self.monitor_reference is None:
            log.warning("%s has no step-0 row: the monitors are logged without their reference", path)

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.ddp:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state(self, rng: dict | None = None) -> dict:
        """The checkpoint's contents (checkpoint module); ``rng``: every rank's generators (default: this one's)."""
        return {"encoder": self.encoder.state_dict(), "target_encoder": self.target.state_dict(),
                "predictor": self.predictor.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "rng": rng or {"ranks": [ckpt.rng_state(self.device)]}, "global_batch": dict(self.global_batch),
                "config": to_dict(self.cfg),
                "model_config": self.model_cfg.to_dict(),
                "roi_names": list(self.manifest["roi_names"]),
                "scaling_stats_id": self.manifest["scaling_stats_id"],
                "identity": self.identity, "total_steps": self.schedule.total_steps}

    def save(self, *names: str, wait: bool = False) -> None:
        """Write checkpoints ``names`` on rank 0; under DDP a collective (every rank sends its generators).

        Never a non-finite state (:meth:`check_finite` first). ``run.async_save``: a ``latest.pt`` alone (the
        periodic save; ``wait`` False) is copied to the CPU here and written by a background thread while training
        goes on, so that under DDP no rank waits for the disk; any other save (``epoch-NNNN.pt``, ``final.pt``, a
        stop's ``latest.pt``) waits for that write, then writes in this thread. A background write that failed is
        raised here, at the next save (or at the end of :meth:`fit`). The time spent here is not training time
        (``samples_per_s``)."""
        self.rate[1] += time.perf_counter() - self.tick
        self.check_finite()
        rng = ckpt.gather_rng_states(self.device)
        if self.dist.is_main:
            background = self.cfg.run.async_save and not wait and names == ("latest.pt",)
            self.writer.wait()  # one write at a time, in order; a failed one is raised here
            for name in names:
                if name == "latest.pt" and self.saved_step == self.step:
                    continue  # written at this step already (run.save_every_minutes, then an epoch end or the end)
                if background:
                    self.writer.submit(self.out / name, ckpt.cpu_copy(self.state(rng)), self._intact(name))
                else:
                    ckpt.save_checkpoint(self.out / name, self.state(rng), self._intact(name))
                if name == "latest.pt":
                    self.saved_step = self.step
        if dist.is_initialized():
            dist.barrier()
        if "latest.pt" in names:
            self.saved_at = time.monotonic()
        self.tick = time.perf_counter()

    def _intact(self, name: str) -> str:
        """What is safe, and what to do, if writing checkpoint ``name`` fails (latest.pt is written first)."""
        if name != "latest.pt":
            copy = f"copy it to {name}" + ("" if name == "final.pt" else " and rerun to continue")
            return f"latest.pt holds the same state (step {self.step}): free space, then {copy}"
        if self.saved_step is None:
            return "nothing of this run was saved yet: free space and rerun (from step 0)"
        return (f"the previous latest.pt is intact (step {self.saved_step}): free space and rerun to continue "
                "from it")

    def start(self) -> str:
        """Settle the run folder: 'fresh', 'resume' or 'done' (nothing to train). Writes nothing on refusal."""
        path = self.out / "latest.pt"
        if not path.exists():
            return "fresh"
        try:
            state = ckpt.load_checkpoint(path)
        except InputError as exc:  # e.g. truncated by a full disk: point at the epoch checkpoints beside it
            kept = sorted(p.name for p in self.out.glob("epoch-*.pt"))
            hint = (f"the epoch checkpoints beside it: {', '.join(kept[-3:])}; copy the newest over latest.pt to "
                    "resume from it" if kept else "no epoch-*.pt beside it (run.checkpoint_every)")
            raise InputError(f"{exc}; {hint}, or move {self.out} away to start again") from None
        if "identity" not in state:
            raise TrainingError(f"{path}: written by an older brainjepa (no run identity); move {self.out} away "
                                "or use another run.out_dir")
        changes = identity_changes(state["identity"], self.identity)
        finished = state["step"] >= state.get("total_steps", float("inf"))
        if changes:
            log.warning("%s: a new run (changed since the last: %s)", self.out, ", ".join(changes[:8]))
            return "fresh"
        if finished and (self.out / "final.pt").exists() and not self.restart:
            return "done"
        if finished or self.restart:
            log.warning("%s: %s: a new run from step 0", self.out,
                        "restart asked for" if self.restart else "finished run without final.pt (a rerun)")
            return "fresh"
        self._check_global_batch(state.get("global_batch"), path)
        self.load(state)
        return "resume"

    def _check_global_batch(self, saved: dict | None, path: Path) -> None:
        """A resume keeps the global batch (batch per process x processes x accumulation): with another, the
        optimizer steps per epoch, hence the schedules (learning rate, weight decay, EMA) and the place the
        checkpoint stopped at, would mean something else. The batch and the accumulation are in the run's
        identity (a change is a new run), so here it is the number of processes that changed. A checkpoint of
        an older brainjepa does not say its processes: accepted."""
        if saved is None or saved == self.global_batch:
            return
        raise InputError(
            f"{path}: trained with a global batch of {global_batch_text(saved)}; this run's is "
            f"{global_batch_text(self.global_batch)}: resuming would change the optimizer steps per epoch and the "
            f"schedules mid-run. Resume with {saved['processes']} process(es) in all (the config's pretrain.nodes x "
            f"pretrain.processes, or torchrun's), or move {self.out} away (or pretrain --restart) to train afresh")

    def load(self, state: dict) -> None:
        for name, module in (("encoder", self.encoder), ("target_encoder", self.target),
                             ("predictor", self.predictor)):
            module.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.saved_step = self.step
        if not ckpt.set_rng_state(state["rng"], self.dist.rank, self.device):
            log.warning("%s holds no random generator state of rank %d: its dropout and drop-path draws go on from "
                        "seed %d + rank", self.out / "latest.pt", self.dist.rank, self.cfg.run.seed)
        log.info("resumed %s at step %d (epoch %d, batch %d)", self.out / "latest.pt", self.step, self.epoch,
                 self.batch_in_epoch)

    def _settle_folder(self, how: str) -> None:
        """Rank 0: move an old run aside (fresh), or cut the log back to the resumed step (resume)."""
        if self.dist.is_main:
            if how == "fresh" and self.out.exists() and any(self.out.iterdir()):
                aside = _free_name(self.out)
                self.out.rename(aside)
                log.warning("previous run in %s moved to %s", self.out, aside)
            self.out.mkdir(parents=True, exist_ok=True)
            if how == "resume":
                truncate_log(self.out / "log.csv", self.step)
                truncate_log(self.out / "monitors.csv", self.step)
            write_text_atomic(self.out / "config.yaml", dump_config(self.cfg))
        if dist.is_initialized():
            dist.barrier()
        self.csv = CSVLog(self.out / "log.csv", self.dist.is_main)
        self.monitor_csv = CSVLog(self.out / "monitors.csv", self.dist.is_main, self.monitor_columns())
        if how == "resume":
            self._monitor_reference_from_log()

    # -- training ------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train every remaining epoch; returns the path of ``final.pt`` (or ``latest.pt`` if stopped early).

        ``latest.pt`` is written after the first optimizer step ``run.save_every_minutes`` after its last write,
        with every ``epoch-NNNN.pt`` (``run.checkpoint_every``), when a call stops and at the end. SIGTERM and
        SIGINT finish the current optimizer step, write ``latest.pt`` and raise :class:`Preempted`. Whatever ends
        the call, a ``latest.pt`` still being written in the background (``run.async_save``) is finished first;
        its failure is raised (or, when something else already ended the call, logged).
        """
        try:
            path = self._fit()
        except BaseException:
            error = self.writer.wait(raise_error=False)
            if error is not None:
                log.error("a checkpoint written in the background failed too: %s", error)
            raise
        self.writer.wait()
        return path

    def _fit(self) -> Path:
        how = self.start()
        if how == "done":
            log.info("%s: finished run of the same identity: nothing to train", self.out)
            return self.out / "final.pt"
        self._settle_folder(how)
        if self.step == 0:
            self.watch(force=True)  # the reference: the run's initialisation
        self.t0 = self.tick = time.perf_counter()
        self.rate = [0, 0.0]
        self.saved_at = time.monotonic()
        start_step = self.step
        with _catch_signals(self):
            while self.epoch < self.cfg.optim.epochs:
                if not self.train_one_epoch(start_step):
                    self.save("latest.pt", wait=True)
                    if self.signal is not None:
                        log.warning("signal %d: stopped at step %d (epoch %d, batch %d); latest.pt written, "
                                    "rerun to continue", self.signal, self.step, self.epoch, self.batch_in_epoch)
                        raise Preempted(f"signal {self.signal} at step {self.step}: {self.out / 'latest.pt'} "
                                        "written; rerun to continue")
                    return self.out / "latest.pt"
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if self.epoch % self.cfg.run.checkpoint_every == 0:  # latest.pt first: the epoch file's fallback
                    self.save("latest.pt", f"epoch-{self.epoch:04d}.pt")
        self.watch(force=True)
        self.save("latest.pt", "final.pt")
        return self.out / "final.pt"

    def step_flags(self) -> tuple[bool, bool]:
        """After an optimizer step: (stop, save). stop: a signal reached this process (or, under DDP, any rank);
        save: ``run.save_every_minutes`` have passed since latest.pt was written (on any rank's clock).

        One process: Python values, nothing read from the device. DDP: one all-reduce (the step's only host
        sync), so every rank stops, or saves, at the same step; it carries whether any rank's loss went
        non-finite, so that every rank raises at once (:meth:`check_finite`)."""
        stop = self.signal is not None
        save = time.monotonic() - self.saved_at >= 60 * self.cfg.run.save_every_minutes
        if dist.is_initialized():
            flags = torch.cat([torch.tensor([stop, save], dtype=torch.int32, device=self.device),
                               (self.nonfinite[:1] >= 0).to(torch.int32)])
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            stop, save, nonfinite = (bool(v) for v in flags.tolist())
            if nonfinite:
                self.check_finite()
        if stop and self.signal is None:
            self.signal = signal.SIGTERM
        return stop, save

    def check_finite(self) -> None:
        """Raise TrainingError naming the step (epoch, batch) where the loss first went non-finite, if it did.

        The micro-steps record it on the device (no host sync); this reads it: on log steps, before any checkpoint
        is written (a non-finite state is never saved), before the monitors and at the end of the run. Under
        DDP a collective (every rank calls it at the same step): the first of every rank's."""
        records = [self.nonfinite]
        if dist.is_initialized():
            records = [torch.empty_like(self.nonfinite) for _ in range(dist.get_world_size())]
            dist.all_gather(records, self.nonfinite)
        found = [row for row in torch.stack(records).tolist() if row[0] >= 0]
        if not found:
            return
        step, epoch, batch, value = min(found, key=lambda row: row[0])
        raise TrainingError(f"non-finite loss ({value}) at step {int(step)}, epoch {int(epoch)}, batch {int(batch)} "
                            f"(seen at step {self.step}; no checkpoint was written after it); lower optim.lr or "
                            "check the data")

    def train_one_epoch(self, start_step: int) -> bool:
        """One epoch from ``batch_in_epoch``; False when ``run.stop_after_steps`` or a signal ends this call."""
        from tqdm import tqdm

        cfg, accumulation = self.cfg, self.cfg.optim.accumulation_steps
        self.dataset.set_epoch(self.epoch, start_batch=self.batch_in_epoch)  # resume mid-epoch: nothing replayed
        self.collator.set_epoch(self.epoch, self.batch_in_epoch)
        n_batches = self.batches_per_epoch
        batches = iter(self.loader)
        bar = tqdm(total=n_batches, initial=self.batch_in_epoch, desc=f"epoch {self.epoch}", leave=False,
                   disable=not (cfg.run.progress and self.dist.is_main))
        micro: list[tuple[torch.Tensor, dict]] = []  # this optimizer step's micro-batches: (loss, monitors)
        for index in range(self.batch_in_epoch, n_batches):
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in next(batches).items()}
            last_micro = (index + 1) % accumulation == 0
            micro.append(self.micro_step(batch, last_micro))
            self.batch_in_epoch = index + 1
            bar.update(1)
            if last_micro:
                self.rate[0] += batch["x"].shape[0] * accumulation
                self.optimizer_step(*micro_batch_mean(micro), bar)
                micro = []
                stop, save = self.step_flags()
                limit = cfg.run.stop_after_steps
                if stop or (limit is not None and self.step - start_step >= limit):
                    bar.close()
                    return False  # fit writes latest.pt
                if save:
                    self.save("latest.pt")
        bar.close()
        return True

    def micro_step(self, batch: dict, last_micro: bool) -> tuple[torch.Tensor, dict]:
        """Forward and backward of one micro-batch (DDP gradient sync only on the last micro-batch).

        ``optim.regularizer``: its term is computed on the global micro-batch (every rank's samples) with the
        directions of this optimizer step (:mod:`.regularizers`); each rank adds the same value, and DDP's mean
        of the gradients is the single-process one.
        """
        from brainjepa.train.regularizers import Regularizer

        self.cfg.optim.check_objective(self.cfg.objective)
        sync = nullcontext() if last_micro or not self.ddp else no_sync(self.online)
        n_valid = None
        if self.ddp:  # normalise by the global batch's targets: DDP's mean is then its mean
            n_valid = batch["target_valid"].sum().to(torch.float64)
            dist.all_reduce(n_valid)
            n_valid = n_valid / self.dist.world_size
        regularizer = Regularizer.from_config(self.cfg.optim, self.cfg.run.seed, self.step)
        with sync, autocast_for(self.device, self.cfg.run.precision):
            if self.cfg.objective == "mae":
                loss, monitors = mae_step(self.online[0], self.online[1], batch, self.model_cfg.patch_size, n_valid,
                                          regularizer, self.cfg.optim.mae_targets)
            else:
                loss, monitors = jepa_step(self.online[0], self.target, self.online[1], batch, self.cfg.optim.loss,
                                           self.cfg.optim.target_norm, n_valid, regularizer)
        if self.ddp:  # the logged loss: the global batch's (the mean of the ranks' shares)
            monitors["loss_global"] = loss.detach().clone()
            dist.all_reduce(monitors["loss_global"])
            monitors["loss_global"] /= self.dist.world_size
        self._note_non_finite(loss)
        with sync:
            (loss / self.cfg.optim.accumulation_steps).backward()
        return loss.detach(), monitors

    def _note_non_finite(self, loss: torch.Tensor) -> None:
        """Where the loss first went non-finite (step, epoch, batch, value), recorded on the device: a step reads
        nothing from it (no host sync); :meth:`check_finite` does. The step goes on (its update is non-finite, and
        never saved)."""
        record, loss = self.nonfinite, loss.detach()
        first = ~torch.isfinite(loss) & (record[0] < 0)
        for i, value in enumerate((self.step, self.epoch, self.batch_in_epoch)):
            record[i].masked_fill_(first, value)
        record[3].copy_(torch.where(first, loss.to(record.dtype), record[3]))

    def optimizer_step(self, loss: torch.Tensor, monitors: dict, bar) -> None:
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
        if self.cfg.objective == "jepa":
            ema_update(self.target, self.encoder, values["momentum"])
        self.step += 1
        self.monitor(loss, monitors, values, bar)
        self.watch()

    def monitor(self, loss: torch.Tensor, monitors: dict, values: dict, bar) -> None:
        """A log step (every ``run.log_every`` steps, and step 1): the non-finite check, one read of the step's loss
        and monitors from the device, the CSV row, the progress bar and the collapse warning on ``target_std``.
        Other steps read nothing. ``samples_per_s``: every process's samples since the last row over the training
        time since then (checkpoint writes left out), measured after that read, so that it counts the device's
        work, not the host's (which runs ahead of it)."""
        if not (self.step % self.cfg.run.log_every == 0 or self.step == 1):
            return
        self.check_finite()
        loss = monitors.pop("loss_global", loss)
        names = list(monitors)
        numbers = torch.stack([loss.float(), *(monitors[k].float() for k in names)]).tolist()
        now = time.perf_counter()
        samples_per_s = self.rate[0] * self.dist.world_size / max(self.rate[1] + now - self.tick, 1e-9)
        self.rate, self.tick = [0, 0.0], now
        loss_value, host = numbers[0], dict(zip(names, numbers[1:]))
        target_std = host["target_std"]
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{values['lr']:.2e}", std=f"{target_std:.3f}",
                        sps=f"{samples_per_s:.0f}")
        if target_std < self.cfg.run.collapse_threshold and self.dist.is_main:
            log.warning("possible representation collapse at step %d: target feature std across the batch "
                        "%.4f < %.4f", self.step, target_std, self.cfg.run.collapse_threshold)
        self.csv.write({"step": self.step, "epoch": self.epoch, "loss": loss_value, **values, **host,
                        "samples_per_s": samples_per_s, "elapsed_s": now - self.t0})


def micro_batch_mean(micro: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
    """The loss and monitors of one optimizer step: the mean over its micro-batches (what the step minimised),
    each monitor's over the micro-batches where it is defined (a region without targets in a micro-batch is NaN
    there). Stays on the device: no host sync."""
    loss = torch.stack([loss for loss, _ in micro]).mean()
    monitors = {key: torch.stack([m[key].float() for _, m in micro if key in m]).nanmean() for key in micro[0][1]}
    return loss, monitors


def global_batch_text(batch: dict) -> str:
    """``{"batch_size": 16, "processes": 4, "accumulation_steps": 8}`` -> ``512 (batch 16 x 4 processes x 8
    accumulation)``."""
    size, processes, steps = batch["batch_size"], batch["processes"], batch["accumulation_steps"]
    parts = [f"batch {size}", f"{processes} process" + ("es" if processes != 1 else "")]
    parts += [f"{steps} accumulation"] if steps != 1 else []
    return f"{size * processes * steps} ({' x '.join(parts)})"


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out




def _free_name(out: Path) -> Path:
    """``<out>.replaced-<n>``, the first that does not exist."""
    n = 1
    while out.with_name(f"{out.name}.replaced-{n}").exists():
        n += 1
    return out.with_name(f"{out.name}.replaced-{n}")


@contextmanager
def _catch_signals(trainer: Trainer):
    """SIGTERM / SIGINT set ``trainer.signal`` (the loop stops after the current step) instead of killing."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        trainer.signal = signum
        log.warning("signal %d received: finishing step %d, then writing latest.pt", signum, trainer.step + 1)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def pretrain(cfg: TrainConfig, restart: bool = False) -> Path:
    """Run (or resume) pretraining; returns the final (or latest) checkpoint path.

    restart: train from step 0 even when ``run.out_dir`` holds this run finished (the old folder is moved aside).
    """
    trainer = Trainer(cfg, restart)
    try:
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
