"""Training checkpoints: one file per save, written atomically; loading fails loudly.

Contents (format ``brainjepa-checkpoint/1``, see :mod:`brainjepa.models.weights` for the shared part):
``encoder``, ``target_encoder``, ``predictor`` (state dicts), ``model_config`` (resolved), ``optimizer``,
``step`` (optimizer steps done), ``epoch`` and ``batch_in_epoch`` (where to continue), ``rng`` (torch CPU/CUDA
generator states), ``config`` (the resolved run configuration), ``roi_names`` and ``scaling_stats_id`` (the
data it was trained on). Plain tensors and Python values only, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from brainjepa.errors import InputError
from brainjepa.io import atomic_path
from brainjepa.models.weights import CHECKPOINT_FORMAT, MODULES, read_torch_file

FORMAT = CHECKPOINT_FORMAT
REQUIRED = (*MODULES, "model_config", "optimizer", "step", "epoch", "batch_in_epoch", "config")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (see the module docstring) atomically: a crash never leaves a half-written file."""
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; any problem is an error naming the file."""
    state = read_torch_file(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise InputError(f"{path}: not a brainjepa checkpoint (format {found!r})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise InputError(f"{path}: checkpoint lacks {missing}")
    return state


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
