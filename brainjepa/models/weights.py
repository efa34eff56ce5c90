"""Model weights on disk: brainjepa training checkpoints and weights files, read without the training loop.

Two formats hold the three modules (``encoder``, ``target_encoder``, ``predictor``: state dicts) and the
resolved ``model_config``:

- ``brainjepa-checkpoint/1``: a training checkpoint (``train/checkpoint.py`` adds the optimizer, the step
  counters, RNG states, the run configuration, ``roi_names`` and ``scaling_stats_id``);
- ``brainjepa-weights/1``: weights only, e.g. the released Brain-JEPA checkpoint after conversion
  (``brainjepa convert-checkpoint``), with its ``source``.

Plain tensors and Python values only, so ``torch.load(weights_only=True)`` reads both. Evaluation takes the
target encoder (the paper's choice for downstream use) through :func:`load_weights`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from brainjepa.errors import InputError
from brainjepa.io import atomic_path

CHECKPOINT_FORMAT = "brainjepa-checkpoint/1"
WEIGHTS_FORMAT = "brainjepa-weights/1"
MODULES = ("encoder", "target_encoder", "predictor")


def read_torch_file(path: str | Path, what: str, weights_only: bool = True):
    """``torch.load`` on CPU; a missing, truncated or foreign file is an InputError naming it.

    ``weights_only=False`` unpickles arbitrary objects: only for files the user trusts (the official release).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise InputError(f"{path}: cannot read {what} ({exc})") from exc


def save_weights(path: str | Path, states: dict, model_config: dict, source: str) -> None:
    """Model weights only (e.g. converted from the official release): the three modules and their config."""
    missing = [m for m in MODULES if m not in states]
    if missing:
        raise InputError(f"weights for {path} lack {missing}")
    with atomic_path(path) as tmp:
        torch.save({"format": WEIGHTS_FORMAT, **{m: states[m] for m in MODULES},
                    "model_config": model_config, "source": source}, tmp)


def load_weights(path: str | Path) -> tuple[dict, dict]:
    """The module state dicts and model config of a training checkpoint or a weights file."""
    state = read_torch_file(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") not in (CHECKPOINT_FORMAT, WEIGHTS_FORMAT):
        raise InputError(f"{path}: not a brainjepa checkpoint or weights file")
    missing = [k for k in (*MODULES, "model_config") if k not in state]
    if missing:
        raise InputError(f"{path}: lacks {missing}")
    return {m: state[m] for m in MODULES}, state["model_config"]
