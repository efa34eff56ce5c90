"""Model weights on disk: brainjepa training checkpoints and weights files, read without the training loop.

Two formats hold the three modules (``encoder``, ``target_encoder``, ``predictor``: state dicts) and the
resolved ``model_config``:

- ``brainjepa-checkpoint/1``: a training checkpoint (``train/checkpoint.py`` adds the optimizer, the step
  counters, RNG states, the run configuration, ``roi_names`` and ``scaling_stats_id``);
- ``brainjepa-weights/1``: weights only, e.g. the released Brain-JEPA checkpoint after conversion
  (``brainjepa convert-checkpoint``), with its ``source``.

Plain tensors and Python values only, so ``torch.load(weights_only=True)`` reads both. Evaluation takes the
target encoder (the paper's choice for downstream use) through :func:`load_weights`.

The attention backend is not part of ``model_config`` (:meth:`ModelConfig.to_dict` leaves it out): it is how a
machine runs the model. Rebuild a model from a file's config with :meth:`ModelConfig.from_checkpoint`, which
ignores an ``attention`` stored by older files and takes :func:`~brainjepa.models.config.runtime_attention`'s
(``$BRAINJEPA_ATTENTION``, default sdpa), so a model trained with flash_attn loads where flash_attn is missing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from brainjepa.errors import InputError
from brainjepa.io import atomic_path

CHECKPOINT_FORMAT = "brainjepa-checkpoint/1"
WEIGHTS_FORMAT = "brainjepa-weights/1"
MODULES = ("encoder", "target_encoder", "predictor")


def _safe_globals() -> list:
    """What a foreign checkpoint may hold beyond tensors and Python values: numpy scalars and their dtypes (the
    public training code stores some), rebuilt from bytes without running any code of the file."""
    import numpy as np

    scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar
    return [scalar, np.dtype, *{type(np.dtype(t)) for t in np.sctypeDict.values() if t is not np.void}]


def read_torch_file(path: str | Path, what: str):
    """``torch.load(weights_only=True)`` on CPU: files are data, never code. A missing, truncated or foreign
    file, or one whose pickle names any callable beyond tensors, Python values and numpy scalars (a crafted
    file runs code when fully unpickled), is an InputError naming the file and what it asks for."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} does not exist")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            unsafe = []
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in _safe_globals()}
        unsafe = [g for g in unsafe if g not in allowed]
        if unsafe:
            raise InputError(f"{path}: {what} refused: it asks to run {', '.join(unsafe[:5])} when loaded, and "
                             "only tensors, Python values and numpy scalars are read from a file (weights_only). "
                             "If it is yours, re-save its state dicts as plain tensors") from None
        raise InputError(f"{path}: cannot read {what}: {_unreadable(path, exc)}") from exc


def _unreadable(path: Path, exc: Exception) -> str:
    """Why a file did not load, in words (torch's own advice to load it with ``weights_only=False`` is left out: a
    crafted file would run code)."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as fh:
        head = fh.read(8)
    text = " ".join(str(exc).split())
    if "WeightsUnpickler error:" in text:  # the weights-only unpickler's reason, without the advice around it
        text = text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation", 1)[0].strip()
    text = text.split(" This is an internal miniz error", 1)[0].rstrip(".")  # drop torch's paragraph after it
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if head.startswith(b"PK\x03\x04"):  # a zip archive, as torch.save writes: cut short or damaged
        return f"a truncated or corrupt PyTorch file ({size} bytes; {reason})"
    return f"not a PyTorch checkpoint, or corrupt ({size} bytes, starting {head.hex(' ')}; {reason})"


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
