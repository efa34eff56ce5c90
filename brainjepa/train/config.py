"""Pretraining configuration: one typed tree of frozen dataclasses, defaults in code, YAML + overrides merged once.

Sections: ``model`` (:class:`brainjepa.models.ModelConfig`), ``data``, ``mask``
(:class:`brainjepa.train.mask_config.MaskConfig`), ``optim``, ``run``. Unknown keys, wrong types and values outside
a setting's choices are errors naming the key's dotted path, when the file is loaded (the workflow loads it
before any job runs). The resolved configuration is written next to the run (``config.yaml``).
Defaults follow the paper (docs/reference.md section 5: ViT-B, 300 epochs, 40 warm-up epochs, AdamW, EMA
0.996 -> 1.0); where the public code differs, a switch says so. Two defaults are not the paper's run on 4 GPUs
but its per-process share: ``data.batch_size`` (16 per GPU) and ``optim.accumulation_steps`` (1; the paper's
global batch needs 8 on 4 GPUs, see config/pretrain.yaml).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from brainjepa.config import from_mapping, to_plain
from brainjepa.errors import InputError
from brainjepa.models.config import ModelConfig
from brainjepa.train.mask_config import MaskConfig

Objective = Literal["jepa", "mae"]                 # jepa (Brain-JEPA) | mae (BrainLM-style masked autoencoder baseline)
Loss = Literal["mse", "smooth_l1"]                 # mse (paper) | smooth_l1 (public code)
TargetNorm = Literal["layer", "layer_centered"]    # layer (paper) | layer_centered (also removes the positional part)
EmaSchedule = Literal["paper", "code"]             # paper (linear over all optimizer steps) | code (stops near 0.9965)
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "bf16", "fp32"]        # auto: bf16 on GPU, fp32 on CPU
Collapse = Literal["warn", "stop"]                 # what a narrowing representation monitor does
DATA_DERIVED = ("n_rois", "n_timesteps", "n_gradients")  # model fields set from the shards and gradients


@dataclass(frozen=True)
class DataConfig:
    """The pretraining data: the shard manifest, its split and where tar shards live, the gradients TSV, optionally the
    scaling statistics the shards are checked against and the atlas label table, the window, the loader (batch size per
    process, workers, pinned memory) and the split the representation monitors read."""

    manifest: str = "results/shards/pretrain/manifest.json"
    split: str = "pretrain"
    shard_url: str | None = None          # tar shards elsewhere, {path} = a manifest entry's path (docs/formats.md)
    scaling_stats: str | None = None     # when given, checked against the shards' statistics id
    gradients: str = "results/gradients/gradients.tsv"
    labels: str | None = None             # atlas label table (centroids for model.positional 'centroid')
    window: int | None = None             # time steps per sample; None: the shard manifest's window
    batch_size: int = 16                  # per process
    num_workers: int = 2
    pin_memory: bool = True               # CUDA: page-locked batches, copied to the GPU without blocking (CPU: off)
    monitor_split: str = "monitor"        # the manifest's split of held-out windows the monitors read (run.monitor_*)


@dataclass(frozen=True)
class OptimConfig:
    """The optimisation: epochs and warm-up, the learning rate and weight decay schedules, AdamW's betas, gradient
    accumulation and clipping, the EMA momentum schedule of the target encoder, the loss and target normalisation, and
    the optional anti-collapse regularizer."""

    epochs: int = 300
    warmup_epochs: int = 40
    start_lr: float = 5e-5
    lr: float = 1e-3
    final_lr: float = 1e-6
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    accumulation_steps: int = 1
    ema: tuple[float, float] = (0.996, 1.0)
    ema_schedule: EmaSchedule = "paper"
    loss: Loss = "mse"
    target_norm: TargetNorm = "layer"
    clip_grad: float | None = None
    # anti-collapse term added to the loss, per token position across the global batch (train/regularizers.py):
    # loss + regularizer_weight * R (suggested weights: sigreg 0.09 as LeWorldModel, vicreg 1.0)
    regularizer: Literal["none", "sigreg", "vicreg"] = "none"
    regularizer_weight: float = 0.0
    sigreg_slices: int = 1024             # random unit directions, new each optimizer step
    sigreg_knots: int = 17                # trapezoid points on [0, sigreg_tmax]
    sigreg_tmax: float = 3.0
    vicreg_gamma: float = 1.0             # the std the hinge asks for
    vicreg_eps: float = 1e-4
    mae_targets: Literal["raw", "patch_norm"] = "raw"  # mae only: patch_norm = MAE's norm_pix_loss
    fused: bool = True                    # CUDA: AdamW's fused kernel (one launch for every parameter); CPU: foreach

    def __post_init__(self) -> None:
        weight = self.regularizer_weight
        if not weight >= 0 or weight == float("inf"):
            raise InputError(f"config 'optim.regularizer_weight' must be a finite number >= 0, got {weight}")
        if self.regularizer != "none" and weight == 0:
            raise InputError(f"config 'optim.regularizer_weight' must be > 0 with optim.regularizer "
                             f"'{self.regularizer}' (suggested: 0.09 for sigreg, 1.0 for vicreg)")
        if self.regularizer == "none" and weight != 0:
            raise InputError(f"config 'optim.regularizer_weight' is {weight} but optim.regularizer is 'none'; "
                             "set optim.regularizer (sigreg or vicreg) or the weight to 0")
        if self.sigreg_slices < 1:
            raise InputError(f"config 'optim.sigreg_slices' must be at least 1, got {self.sigreg_slices}")
        if self.sigreg_knots < 2:
            raise InputError(f"config 'optim.sigreg_knots' must be at least 2, got {self.sigreg_knots}")
        for name in ("sigreg_tmax", "vicreg_gamma", "vicreg_eps"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise InputError(f"config 'optim.{name}' must be a finite number > 0, got {value}")

    def check_objective(self, objective: str) -> None:
        """Settings that only one objective takes (``optim.mae_targets`` is the MAE's)."""
        if self.mae_targets != "raw" and objective != "mae":
            raise InputError(f"config 'optim.mae_targets' is '{self.mae_targets}': only the mae objective "
                             f"reconstructs patches (objective is '{objective}')")


@dataclass(frozen=True)
class RunConfig:
    """The run itself: its folder and seed, device and precision, how often it writes checkpoints, logs and
    representation monitors, what a collapse does, and the speed and reproducibility switches (TF32, deterministic
    algorithms, compile, asynchronous saves)."""

    out_dir: str = "results/pretrain/brainjepa"
    seed: int = 0
    device: Device = "auto"
    precision: Precision = "auto"
    checkpoint_every: int = 10            # epochs between epoch-NNNN.pt (latest.pt is written with each)
    save_every_minutes: float = 30.0      # latest.pt after the first optimizer step this long after the last write
                                          # (0: every step); also at each epoch-NNNN.pt, at a stop and at the end
    log_every: int = 10                   # optimizer steps between CSV rows
    collapse_threshold: float = 0.05      # warn when the target features' batch spread falls below this
    monitor_every: int = 50               # optimizer steps between representation monitors (train/monitors.py); 0: off
    monitor_windows: int = 512            # at most this many windows of data.monitor_split
    collapse: Collapse = "warn"           # a monitor below collapse_fraction x its step-0 value: warn | stop the run
    collapse_fraction: float = 0.5
    stop_after_steps: int | None = None   # leave cleanly (writing latest.pt) after this many steps in this call
    progress: bool = True
    deterministic: bool = False           # torch.use_deterministic_algorithms (GPU: slower kernels; CPU: always);
                                          # sets CUBLAS_WORKSPACE_CONFIG=:4096:8 when unset (cuBLAS needs it)
    tf32: bool = True                     # CUDA: TF32 tensor cores for float32 matmuls and cuDNN (false: strict fp32)
    compile: bool = False                 # torch.compile the encoders and the predictor (in place: checkpoints keep
                                          # their keys); off: not measured on a GPU yet (bench/device_check.py)
    compile_backend: str = "inductor"     # torch.compile's backend with run.compile (eager, aot_eager: debugging)
    async_save: bool = True               # latest.pt written by a background thread from a CPU copy of the state;
                                          # epoch-NNNN.pt, final.pt and a stop's latest.pt wait for their write


@dataclass(frozen=True)
class TrainConfig:
    """``objective``: ``jepa`` (predict the EMA target encoder's features of hidden tokens) or ``mae`` (the
    BrainLM-style baseline: the same encoder, ``mask.mode: random`` patch masking, the predictor as a light
    decoder of the hidden patches' raw values, MSE; no target encoder, so the saved ``target_encoder`` is
    the encoder itself, what downstream evaluation takes)."""

    objective: Objective = "jepa"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "accumulation_steps"):
            if getattr(self.optim, name) < 1:
                raise InputError(f"config 'optim.{name}' must be at least 1, got {getattr(self.optim, name)}")
        for section, name in (("data", "batch_size"), ("run", "checkpoint_every"), ("run", "log_every")):
            if getattr(getattr(self, section), name) < 1:
                raise InputError(f"config '{section}.{name}' must be at least 1")
        if self.data.num_workers < 0:
            raise InputError("config 'data.num_workers' must be >= 0")
        if self.run.monitor_every < 0 or self.run.monitor_windows < 2:
            raise InputError("config 'run.monitor_every' must be >= 0 (0: off) and 'run.monitor_windows' >= 2")
        if not 0 <= self.run.save_every_minutes < float("inf"):
            raise InputError(f"config 'run.save_every_minutes' must be a finite number >= 0 (0: every optimizer "
                             f"step), got {self.run.save_every_minutes}")
        if self.run.compile_backend != "inductor":  # the default needs no look-up (torch._dynamo takes a second)
            check_compile_backend(self.run.compile_backend)
        if not 0 < self.run.collapse_fraction < 1:
            raise InputError(f"config 'run.collapse_fraction' must be in (0, 1), got {self.run.collapse_fraction}")
        self.optim.check_objective(self.objective)
        if self.objective == "mae" and self.optim.loss != "mse":
            raise InputError("config 'optim.loss': the mae objective reconstructs with mse")
        if self.data.window is not None:
            if self.data.window % self.model.patch_size:
                raise InputError(f"config 'data.window' ({self.data.window}) is not a multiple of "
                                 f"'model.patch_size' ({self.model.patch_size})")


def check_compile_backend(name: str) -> None:
    """``run.compile_backend``: one of torch.compile's backends (``torch._dynamo.list_backends()``, or its debugging
    backends ``eager`` and ``aot_eager``); otherwise an error naming the key and the choices."""
    import torch._dynamo

    allowed = sorted({*torch._dynamo.list_backends(), "eager", "aot_eager"})
    if name not in allowed:
        raise InputError(f"config 'run.compile_backend' is {name!r}; allowed: {', '.join(allowed)}")


def _set_path(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise InputError(f"override '{dotted}': '{key}' is not a section")
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file <- ``key.sub=value`` overrides (values parsed as YAML); checked once."""
    tree: dict = {}
    if path is not None:
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{path}: cannot read the training config ({exc})") from exc
    for item in overrides or []:
        if "=" not in item:
            raise InputError(f"override '{item}' must look like section.key=value")
        key, value = item.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(value))
    if isinstance(tree, dict) and isinstance(tree.get("model"), dict):
        derived = sorted(set(tree["model"]) & set(DATA_DERIVED))
        if derived:
            raise InputError(f"{path or 'training config'}: model.{derived[0]} is set from the data "
                             "(shards, gradients); remove it")
    try:
        return from_mapping(TrainConfig, tree)
    except InputError as exc:
        raise InputError(f"{path or 'training config'}: {exc}") from None


def to_dict(cfg: TrainConfig) -> dict:
    """Plain-Python form (lists for tuples) for YAML and checkpoints; data-derived model fields left out."""
    tree = to_plain(cfg)
    for name in DATA_DERIVED:
        tree["model"].pop(name)
    return tree


def dump_config(cfg: TrainConfig) -> str:
    """The training config as YAML (:func:`to_dict`: data-derived model fields left out), keys in the dataclasses'
    order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def with_data_shape(cfg: ModelConfig, n_rois: int, n_timesteps: int, n_gradients: int) -> ModelConfig:
    """The model config at the data's shape (ROIs and window from the shards, gradient columns)."""
    return dataclasses.replace(cfg, n_rois=n_rois, n_timesteps=n_timesteps, n_gradients=n_gradients)
