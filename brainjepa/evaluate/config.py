"""Settings of the downstream protocols: one frozen dataclass per protocol, defaults from the paper.

docs/reference.md section 6. Learning rates are base rates: the rate used is ``base_lr x global batch / 256``
(MAE's rule, which the public fine-tuning code follows). The workflow passes the config's
``evaluate.protocols`` section; unknown keys are errors naming their path.
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


@dataclass(frozen=True)
class LinprobeConfig:
    """The paper's linear probe: BatchNorm (no affine) + Linear on frozen mean-pooled features, LARS, batch 64,
    50 epochs, base LR 0.01, no weight decay."""

    epochs: int = 50
    warmup_epochs: float = 5.0
    batch_size: int = 64
    base_lr: float = 0.01
    min_lr: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class AttentiveConfig:
    """The attentive probe (V-JEPA's frozen evaluation) on frozen per-ROI tokens: AdamW."""

    epochs: int = 50
    warmup_epochs: float = 5.0
    batch_size: int = 64
    base_lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
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
                raise InputError(f"evaluate.protocols.{name}: epochs and batch_size must be at least 1")
            if section.warmup_epochs < 0:  # a warm-up longer than the run is cut to the run (loop.fit)
                raise InputError(f"evaluate.protocols.{name}: warmup_epochs must be >= 0")
        if not 0 < self.finetune.layer_decay <= 1:
            raise InputError("evaluate.protocols.finetune.layer_decay must be in (0, 1]")
        if not 0 <= self.finetune.drop_path < 1:
            raise InputError("evaluate.protocols.finetune.drop_path must be in [0, 1)")
        for name in ("closed_form", "svm"):
            section = getattr(self, name)
            if section.grid < 1 or section.log10_range[0] > section.log10_range[1]:
                raise InputError(f"evaluate.protocols.{name}: grid >= 1 and log10_range (lo, hi) with lo <= hi")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ProtocolConfig:
        return from_mapping(cls, d or {}, "evaluate.protocols")
