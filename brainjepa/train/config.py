"""Pretraining configuration: typed dataclasses per section, defaults in code, YAML + CLI overrides merged once.

Unknown keys are errors; the resolved configuration is written next to the run (``config.yaml``).
Defaults follow the paper (brainjepa-reference.md section 5); where the public code differs, a switch says so.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from brainjepa.errors import InputError


@dataclass(frozen=True)
class DataConfig:
    manifest: str = "results/shards/manifest.json"
    split: str = "pretrain"
    scaling_stats: str | None = None     # checked against the shards' statistics id when given
    gradients: str = "results/group/gradients.tsv"
    labels: str | None = None             # atlas label table (centroids for positional='centroid')
    window: int = 160
    batch_size: int = 16                  # per process
    num_workers: int = 2


@dataclass(frozen=True)
class MaskSection:
    mode: str = "paper"                   # paper | reference (the public code's collator)
    options: dict = field(default_factory=dict)   # further MaskConfig fields (block size ranges)


@dataclass(frozen=True)
class OptimConfig:
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
    ema_schedule: str = "paper"           # paper (linear over all optimizer steps) | code (stops near 0.9965)
    loss: str = "mse"                     # mse (paper) | smooth_l1 (code)
    target_norm: str = "layer"            # layer (paper) | layer_centered (also removes the positional part)
    clip_grad: float | None = None


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "results/pretrain/brainjepa"
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda
    precision: str = "auto"               # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    checkpoint_every: int = 10            # epochs; `latest.pt` is written at every epoch end too
    log_every: int = 10                   # optimizer steps between CSV rows
    collapse_threshold: float = 0.05      # warn when the target features' batch spread falls below this
    stop_after_steps: int | None = None   # leave cleanly (writing latest.pt) after this many steps in this call
    progress: bool = True


@dataclass(frozen=True)
class TrainConfig:
    model: dict = field(default_factory=lambda: {"size": "tiny"})   # brainjepa.models ModelConfig fields
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskSection = field(default_factory=MaskSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _build(cls, values: dict, where: str):
    """Instantiate dataclass ``cls`` from a dict, recursing into nested dataclasses; unknown keys are errors."""
    if not isinstance(values, dict):
        raise InputError(f"config section '{where}' must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"unknown config key(s) in '{where}': {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = _coerce(value, hint, f"{where}.{name}" if where else name)
    return cls(**kwargs)


def _coerce(value, hint, where: str):
    """Check a scalar against its annotation (int, float, bool, str, optional, tuple); '1e-3' counts as float."""
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    base = next((a for a in args if a is not type(None)), hint) if type(None) in args else hint
    if typing.get_origin(base) is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(typing.get_args(base)):
            raise InputError(f"config '{where}': expected {len(typing.get_args(base))} values, got {value!r}")
        return tuple(_coerce(v, t, where) for v, t in zip(value, typing.get_args(base)))
    if base is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"config '{where}': expected a number, got {value!r}") from None
    if base is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"config '{where}': expected an integer, got {value!r}")
    if base in (bool, str) and not isinstance(value, base):
        raise InputError(f"config '{where}': expected {base.__name__}, got {value!r}")
    return value


def _set_path(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file <- ``key.sub=value`` overrides (values parsed as YAML)."""
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
    cfg = _build(TrainConfig, tree, "")
    _check_choices(cfg, path)
    return cfg


# String settings and their allowed values, checked when the config is loaded (not at the first step).
CHOICES = {
    ("optim", "loss"): ("mse", "smooth_l1"),
    ("optim", "ema_schedule"): ("paper", "code"),
    ("optim", "target_norm"): ("layer", "layer_centered"),
    ("run", "device"): ("auto", "cpu", "cuda"),
    ("run", "precision"): ("auto", "bf16", "fp32"),
}


def _check_choices(cfg: TrainConfig, path) -> None:
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise InputError(f"{path or 'training config'}: {section}.{key} is {value!r}; "
                             f"allowed: {', '.join(allowed)}")


def to_dict(cfg: TrainConfig) -> dict:
    """Plain-Python form (lists for tuples) for YAML and checkpoints."""
    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
