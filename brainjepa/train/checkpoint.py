"""Checkpoints: one file per save, written atomically; loading fails loudly.

Contents: ``encoder``, ``target_encoder``, ``predictor`` (state dicts), ``optimizer``, ``step`` (optimizer
steps done), ``epoch`` and ``batch_in_epoch`` (where to continue), ``rng`` (torch CPU/CUDA generator states),
``config`` (the resolved run configuration) and ``format``. Plain tensors and Python values only, so
``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from brainjepa.errors import InputError
from brainjepa.io import atomic_path

FORMAT = "brainjepa-checkpoint/1"
MODULES = ("encoder", "target_encoder", "predictor")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (see the module docstring) atomically: a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; any problem is an error naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise InputError(f"{path}: cannot read checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not a brainjepa checkpoint (format {state.get('format') if isinstance(state, dict) else None!r})")
    missing = [k for k in (*MODULES, "optimizer", "step", "epoch", "batch_in_epoch", "config") if k not in state]
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


WEIGHTS_FORMAT = "brainjepa-weights/1"


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
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise InputError(f"{path}: cannot read checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") not in (FORMAT, WEIGHTS_FORMAT):
        raise InputError(f"{path}: not a brainjepa checkpoint or weights file")
    missing = [k for k in (*MODULES, "model_config") if k not in state]
    if missing:
        raise InputError(f"{path}: lacks {missing}")
    return {m: state[m] for m in MODULES}, state["model_config"]
