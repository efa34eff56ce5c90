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
    kind = spec.get("kind")
    if kind == "checkpoint":
        from brainjepa.models.weights import load_modules

        path = Path(spec["path"])
        modules, state = load_modules(path, roi_names, window, ("target_encoder",), drop_path=drop_path)
        source = {"kind": kind, "path": str(path), "step": state.get("step"), "source": state.get("source")}
        return modules["target_encoder"], source
    if kind == "bundle":
        return _bundle_encoder(Path(spec["path"]), roi_names, window, drop_path)
    if kind == "random":
        return _random_encoder(spec, roi_names, window, seed, drop_path)
    raise InputError(f"encoder spec {spec!r}: kind must be 'checkpoint', 'bundle' or 'random'")


def _bundle_encoder(path: Path, roi_names: list[str], window: int, drop_path: float):
    """The encoder of the bundle folder ``path`` (``{"kind": "bundle"}``), checked against the ROIs and window."""
    from brainjepa.io import check_roi_names
    from brainjepa.models.bundle import load_bundle, read_bundle

    bundle = read_bundle(path)
    check_roi_names(list(bundle.rois), list(roi_names), path / "rois.tsv", "the evaluation shards")
    if bundle.model.n_timesteps != window:
        raise InputError(f"{path}: the encoder takes windows of {bundle.model.n_timesteps} time steps, the "
                         f"evaluation uses {window}")
    encoder, bundle = load_bundle(path, drop_path=drop_path)
    encoder.train()  # as a freshly built module: the caller sets eval (features) or train (fine-tuning)
    source = {"kind": "bundle", "path": str(path), "tr": bundle.input.tr,
              "scaling_stats_id": bundle.input.scaling_stats_id, "scaling_source": bundle.input.scaling_source}
    return encoder, source


def _random_encoder(spec: dict, roi_names: list[str], window: int, seed: int, drop_path: float):
    """A freshly initialised encoder (``{"kind": "random"}``) of the training config's architecture at the data's
    shape, seeded by ``seed``."""
    from brainjepa.models import BrainEncoder
    from brainjepa.models.inputs import load_centroids, load_gradients
    from brainjepa.train.config import load_config, with_data_shape

    train_cfg = load_config(spec["config"], [f"data.gradients={spec['gradients']}"]
                            + ([f"data.labels={spec['labels']}"] if spec.get("labels") else []))
    data = train_cfg.data
    gradients = load_gradients(data.gradients, list(roi_names), f"the shards' manifest {data.manifest}")
    cfg = with_data_shape(train_cfg.model, len(roi_names), window, gradients.shape[1])
    cfg = dataclasses.replace(cfg, drop_path=drop_path)
    torch.manual_seed(seed)
    encoder = BrainEncoder(cfg, gradients, load_centroids(train_cfg.model.positional, data.labels, list(roi_names)))
    return encoder, {"kind": "random", "config": spec["config"], "seed": seed}
