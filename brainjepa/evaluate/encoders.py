"""The encoders the harness evaluates, from one spec each: a checkpoint's target encoder, or a random init.

Spec (JSON on the command line, ``evaluate.encoders`` in the workflow config):

- ``{"kind": "checkpoint", "path": P}``: the ``target_encoder`` of a brainjepa training checkpoint (Brain-JEPA
  or the MAE baseline, whose target encoder is its encoder) or weights file (the released Brain-JEPA
  checkpoint after ``brainjepa convert-checkpoint``);
- ``{"kind": "bundle", "path": DIR}``: the encoder of a model bundle (``brainjepa export-model``, or
  ``convert-checkpoint --bundle``: :mod:`brainjepa.models.bundle`), read from JSON and safetensors only, so a model
  trained elsewhere is evaluated by the same harness;
- ``{"kind": "random", "config": C, "gradients": G}``: the architecture of training config C at the data's
  shape, freshly initialised from a seed (the random-init control and the from-scratch fine-tune).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from brainjepa.errors import InputError


def load_encoder(spec: dict, roi_names: list[str], window: int, seed: int = 0, drop_path: float = 0.0):
    """The encoder of ``spec`` for inputs [B, 1, R, window] with ROIs ``roi_names`` (checked against the
    checkpoint's); ``drop_path``: the stochastic-depth rate to train with (fine-tuning). Returns (encoder,
    description dict)."""
    from brainjepa.models import BrainEncoder, ModelConfig

    kind = spec.get("kind")
    if kind == "checkpoint":
        from brainjepa.models.weights import read_torch_file

        path = Path(spec["path"])
        state = read_torch_file(path, "checkpoint")
        if not isinstance(state, dict) or "target_encoder" not in state or "model_config" not in state:
            raise InputError(f"{path}: not a brainjepa checkpoint or weights file (no target_encoder)")
        names = state.get("roi_names")
        if names is not None and list(names) != list(roi_names):
            from brainjepa.io import check_roi_names

            check_roi_names(list(names), list(roi_names), str(path), "the evaluation shards")
        cfg = ModelConfig.from_checkpoint(state["model_config"], f"{path}: model_config")
        if cfg.n_rois != len(roi_names):
            raise InputError(f"{path}: the encoder takes {cfg.n_rois} ROIs, the evaluation shards have "
                             f"{len(roi_names)}")
        if cfg.n_timesteps != window:
            raise InputError(f"{path}: the encoder takes windows of {cfg.n_timesteps} time steps, the "
                             f"evaluation uses {window}")
        cfg = dataclasses.replace(cfg, drop_path=drop_path)
        tables = {"gradients": torch.zeros(cfg.n_rois, cfg.n_gradients) if cfg.positional == "gradient" else None,
                  "centroids": torch.zeros(cfg.n_rois, 3) if cfg.positional == "centroid" else None}
        encoder = BrainEncoder(cfg, **tables)
        try:
            encoder.load_state_dict(state["target_encoder"])
        except RuntimeError as exc:
            raise InputError(f"{path}: target_encoder does not fit its model_config ({exc})") from None
        source = {"kind": kind, "path": str(path), "step": state.get("step"), "source": state.get("source")}
        return encoder, source
    if kind == "bundle":
        from brainjepa.io import check_roi_names
        from brainjepa.models.bundle import load_bundle, read_bundle

        path = Path(spec["path"])
        bundle = read_bundle(path)
        check_roi_names(list(bundle.rois), list(roi_names), path / "rois.tsv", "the evaluation shards")
        if bundle.model.n_timesteps != window:
            raise InputError(f"{path}: the encoder takes windows of {bundle.model.n_timesteps} time steps, the "
                             f"evaluation uses {window}")
        encoder, bundle = load_bundle(path, drop_path=drop_path)
        encoder.train()  # as a freshly built module: the caller sets eval (features) or train (fine-tuning)
        source = {"kind": kind, "path": str(path), "tr": bundle.input.tr,
                  "scaling_stats_id": bundle.input.scaling_stats_id, "scaling_source": bundle.input.scaling_source}
        return encoder, source
    if kind == "random":
        from brainjepa.train.config import load_config, with_data_shape
        from brainjepa.train.pretrain import load_centroids_for, load_gradients_for

        train_cfg = load_config(spec["config"], [f"data.gradients={spec['gradients']}"]
                                + ([f"data.labels={spec['labels']}"] if spec.get("labels") else []))
        gradients = load_gradients_for(train_cfg, list(roi_names))
        cfg = with_data_shape(train_cfg.model, len(roi_names), window, gradients.shape[1])
        cfg = dataclasses.replace(cfg, drop_path=drop_path)
        torch.manual_seed(seed)
        encoder = BrainEncoder(cfg, gradients, load_centroids_for(train_cfg, list(roi_names)))
        return encoder, {"kind": kind, "config": spec["config"], "seed": seed}
    raise InputError(f"encoder spec {spec!r}: kind must be 'checkpoint', 'bundle' or 'random'")
