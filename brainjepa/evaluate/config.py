"""Settings of the downstream protocols: one frozen dataclass per protocol.

docs/reference.md section 6. Fine-tuning and the paper's linear probe (``linprobe.recipe: paper``) keep the
paper's settings; their learning rates are base rates: the rate used is ``base_lr x global batch / 256`` (MAE's
rule, which the public fine-tuning code follows). The probes' default recipe is this package's (it fits at any
sample size): standardised features, at least ``min_steps`` optimizer steps, and the learning rate and weight
decay chosen on the validation subjects from ``lr_grid`` x ``weight_decay_grid`` (rates as used, not scaled by
the batch). Every gradient-trained method selects its epoch (and grid point) on the task's metric over the
validation subjects (:data:`brainjepa.evaluate.metrics.SELECTION`). The workflow passes the config's
``evaluate.settings`` section; unknown keys are errors naming their path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from brainjepa.config import from_mapping
from brainjepa.errors import InputError
from brainjepa.train.config import Device, Precision

Protocol = Literal["finetune", "linprobe", "attentive", "closed_form"]
Baseline = Literal["fc_linear", "fc_svm"]


@dataclass(frozen=True)
class FinetuneConfig:
    """The paper's fine-tuning: AdamW, base LR 1e-3, weight decay 0.05, batch 16, 50 epochs, warm-up + cosine,
    layer-wise LR decay 0.75 and drop path 0.1 (both applied here, unlike the public code)."""

    epochs: int = 50
    warmup_epochs: float = 5.0
    batch_size: int = 16                  # per process
    base_lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    # Training windows from a random start in each run at every epoch (the public code's training sampling);
    # False: the fixed evaluation windows. Validation and test always read the deterministic windows.
    temporal_jitter: bool = False
    # The head's start: "probe" (LP-FT, Kumar et al. 2022: the linear probe procedure of ``linprobe`` fitted on
    # the frozen encoder's features, LayerNorm-ed as the head reads them, copied into the head: its LayerNorm
    # affine takes the standardisation, its Linear the probe's) or "random" (the paper's fresh head).
    head_init: Literal["probe", "random"] = "probe"
    min_steps: int = 0                    # at least this many optimizer steps (more epochs); 0: the epochs as set


@dataclass(frozen=True)
class LinprobeConfig:
    """The linear probe on frozen mean-pooled features.

    ``recipe: standard`` (default): features standardised with the training rows' mean and std (kept with the
    probe), Linear, Adam with an L2 penalty (coupled weight decay: the objective of ridge / L2 logistic
    regression), at least ``min_steps`` steps, the learning rate and weight decay chosen on validation from
    ``lr_grid`` x ``weight_decay_grid``. ``recipe: paper``: the paper's probe, BatchNorm (no affine) + Linear,
    LARS, batch 64, 50 epochs, base LR 0.01 (``base_lr``), no weight decay (``weight_decay``); ``min_steps`` and
    the grids are not used (with ~70 training windows it takes ~100 steps at LR 0.0025 and does not fit)."""

    recipe: Literal["standard", "paper"] = "standard"
    epochs: int = 50
    warmup_epochs: float = 5.0
    batch_size: int = 64
    min_lr: float = 0.0
    min_steps: int = 500
    lr_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    weight_decay_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    base_lr: float = 0.01                 # recipe paper
    weight_decay: float = 0.0             # recipe paper


@dataclass(frozen=True)
class AttentiveConfig:
    """The attentive probe (V-JEPA's frozen evaluation) on frozen per-ROI tokens, standardised per (ROI, feature)
    with the training rows' statistics: AdamW (decoupled weight decay, none on biases and norms), at least
    ``min_steps`` steps, learning rate and weight decay chosen on validation from ``lr_grid`` x
    ``weight_decay_grid``."""

    epochs: int = 50
    warmup_epochs: float = 5.0
    batch_size: int = 64
    min_lr: float = 1e-6
    min_steps: int = 500
    lr_grid: tuple[float, ...] = (1e-3, 1e-2)
    weight_decay_grid: tuple[float, ...] = (0.01, 0.1, 1.0)
    num_heads: int = 4


@dataclass(frozen=True)
class ClosedFormConfig:
    """Ridge (regression) / L2 logistic regression (classification) on standardised features; the
    regularisation chosen on the validation subjects from a log grid (``grid`` values from 10^lo to 10^hi)."""

    log10_range: tuple[float, float] = (-3.0, 5.0)
    grid: int = 17


@dataclass(frozen=True)
class SvmConfig:
    """RBF support vector machine (SVR / SVC) on FC features; C chosen on validation from a log grid."""

    log10_range: tuple[float, float] = (-2.0, 3.0)
    grid: int = 11


@dataclass(frozen=True)
class ProtocolConfig:
    """The evaluation protocols' settings (config ``evaluate.settings``): one section per protocol, the class weighting
    of classification losses and selection, and the device, precision and torch threads of every evaluation job."""

    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    linprobe: LinprobeConfig = field(default_factory=LinprobeConfig)
    attentive: AttentiveConfig = field(default_factory=AttentiveConfig)
    closed_form: ClosedFormConfig = field(default_factory=ClosedFormConfig)
    svm: SvmConfig = field(default_factory=SvmConfig)
    # Classification losses and selection: "none" (the paper's plain cross-entropy) or "balanced" (every class
    # weighted N / (C x count) from the training subjects, scikit-learn's rule), which keeps small or
    # imbalanced sets from collapsing onto the majority class when balanced accuracy is what counts.
    class_weight: Literal["none", "balanced"] = "none"
    device: Device = "auto"
    precision: Precision = "auto"
    threads: int | None = None            # torch threads (None: torch's default)

    def __post_init__(self) -> None:
        for name in ("finetune", "linprobe", "attentive"):
            section = getattr(self, name)
            if section.epochs < 1 or section.batch_size < 1:
                raise InputError(f"evaluate.settings.{name}: epochs and batch_size must be at least 1")
            if section.warmup_epochs < 0:  # a warm-up longer than the run is cut to the run (loop.fit)
                raise InputError(f"evaluate.settings.{name}.warmup_epochs must be >= 0, got {section.warmup_epochs}")
            if section.min_steps < 0:
                raise InputError(f"evaluate.settings.{name}.min_steps must be >= 0, got {section.min_steps}")
        for name in ("linprobe", "attentive"):
            section = getattr(self, name)
            if not section.lr_grid or min(section.lr_grid) <= 0:
                raise InputError(f"evaluate.settings.{name}.lr_grid must list at least one learning rate, each > 0, "
                                 f"got {list(section.lr_grid)}")
            if not section.weight_decay_grid or min(section.weight_decay_grid) < 0:
                raise InputError(f"evaluate.settings.{name}.weight_decay_grid must list at least one weight decay, "
                                 f"each >= 0, got {list(section.weight_decay_grid)}")
        if not 0 < self.finetune.layer_decay <= 1:
            raise InputError("evaluate.settings.finetune.layer_decay must be in (0, 1]")
        if not 0 <= self.finetune.drop_path < 1:
            raise InputError("evaluate.settings.finetune.drop_path must be in [0, 1)")
        for name in ("closed_form", "svm"):
            section = getattr(self, name)
            if section.grid < 1 or section.log10_range[0] > section.log10_range[1]:
                raise InputError(f"evaluate.settings.{name}: grid >= 1 and log10_range (lo, hi) with lo <= hi")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ProtocolConfig:
        return from_mapping(cls, d or {}, "evaluate.settings")
