"""BrainLM's capabilities as evaluation tasks of the same harness: what each is, its methods and its metrics.

Config ``evaluate.capabilities.<name>`` (``name`` one of :data:`CAPABILITIES`)::

    forecast:       {cohorts: [ukbsim], encoders: [jepa, mae, random], baselines: [persistence, ar, lstm],
                     settings: {...}}                   # brainjepa/capabilities/forecast.py
    network_id:     {cohorts: [ukbsim], encoders: [jepa, mae, random], features: [embedding, attention],
                     baselines: [raw], settings: {...}} # brainjepa/capabilities/network_id.py
    perturbation:   {cohorts: [adnisim], encoders: [jepa, mae, random],
                     settings: {label: diagnosis, source: "0", target: "1", ...}}   # .perturbation
    reconstruction: {cohorts: [ukbsim], encoders: [mae], settings: {mask_ratios: [0.2, 0.5, 0.75]}}  # .reconstruction

Methods (the ``method`` of a result, a row of ``metrics.tsv``): forecasting fine-tunes each encoder
(``<encoder>_finetune``; the random encoder is the "without pretraining" row) beside its baselines; network
identification reads each encoder's ROI embeddings or attention rows (``<encoder>_embedding``,
``<encoder>_attention``) beside the raw time series (``raw``); perturbation and reconstruction run per encoder
(``<encoder>``). Every (capability, method, seed) is one job writing
``results/capabilities/<name>/<method>/seed<k>.json`` (the record of docs/formats.md), aggregated with the
tasks' results by the ``metrics`` rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brainjepa.config import from_mapping
from brainjepa.errors import InputError


@dataclass(frozen=True)
class Capability:
    """One capability: its record ``kind``, CLI command, headline test metrics (the first is the main one),
    the baselines and feature kinds it knows, and whether its encoder methods carry a protocol suffix."""

    kind: str
    command: str
    metrics: tuple[str, ...]
    baselines: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    suffix: str | None = None            # forecast: "finetune" -> <encoder>_finetune


CAPABILITIES: dict[str, Capability] = {
    "forecast": Capability("forecast", "forecast", ("r2", "r", "mse"), baselines=("persistence", "ar", "lstm"),
                           suffix="finetune"),
    "network_id": Capability("network_id", "network-id", ("accuracy", "balanced_accuracy"), baselines=("raw",),
                             features=("embedding", "attention")),
    "perturbation": Capability("perturbation", "perturbation", ("closed_share", "group_p")),
    "reconstruction": Capability("reconstruction", "reconstruction", ("r2_mask75", "r2_mask50", "r2_mask20")),
}
KINDS = {c.kind for c in CAPABILITIES.values()}


@dataclass(frozen=True)
class CapabilityConfig:
    """One capability of config ``evaluate.capabilities.<name>`` (module docstring): its cohorts, the encoders (names of
    ``evaluate.encoders``), baselines and feature kinds it runs, and its ``settings`` for the capability's command."""

    name: str
    cohorts: tuple[str, ...]
    encoders: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any], encoders: list[str] | None = None) -> CapabilityConfig:
        """Parse ``evaluate.capabilities.<name>``; ``encoders``: the names of ``evaluate.encoders``."""
        where = f"evaluate.capabilities.{name}"
        if name not in CAPABILITIES:
            raise InputError(f"{where}: unknown capability; choose from {', '.join(CAPABILITIES)}")
        cap = from_mapping(cls, {"name": name, **d}, where)
        spec = CAPABILITIES[name]
        if not cap.cohorts:
            raise InputError(f"{where}: cohorts must list at least one cohort")
        for key, allowed in (("baselines", spec.baselines), ("features", spec.features)):
            bad = sorted(set(getattr(cap, key)) - set(allowed))
            if bad:
                raise InputError(f"{where}.{key}: {bad} unknown; {name} knows {list(allowed) or 'none'}")
        if spec.features and cap.encoders and not cap.features:
            raise InputError(f"{where}: encoders are listed but no features ({', '.join(spec.features)})")
        if encoders is not None:
            unknown = sorted(set(cap.encoders) - set(encoders))
            if unknown:
                raise InputError(f"{where}.encoders: {unknown} are not entries of evaluate.encoders "
                                 f"({', '.join(encoders)})")
        if not cap.methods():
            raise InputError(f"{where}: no methods (list encoders or baselines)")
        return cap

    def methods(self) -> list[str]:
        """The method names of this capability, in config order."""
        spec = CAPABILITIES[self.name]
        if spec.features:
            out = [f"{e}_{f}" for e in self.encoders for f in self.features]
        elif spec.suffix:
            out = [f"{e}_{spec.suffix}" for e in self.encoders]
        else:
            out = list(self.encoders)
        return out + list(self.baselines)

    def parse_method(self, method: str) -> tuple[str | None, str | None]:
        """``method`` -> (encoder or None for a baseline, feature kind or None)."""
        spec = CAPABILITIES[self.name]
        if method in self.baselines:
            return None, ("raw" if method == "raw" else None)
        for encoder in self.encoders:
            if spec.features:
                for feature in self.features:
                    if method == f"{encoder}_{feature}":
                        return encoder, feature
            elif method == (f"{encoder}_{spec.suffix}" if spec.suffix else encoder):
                return encoder, None
        raise InputError(f"evaluate.capabilities.{self.name}: no method {method!r} (methods: "
                         f"{', '.join(self.methods())})")
