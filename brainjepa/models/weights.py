"""Model weights on disk: brainjepa training checkpoints and weights files, read without the training loop.

Two formats hold the three modules (``encoder``, ``target_encoder``, ``predictor``: state dicts) and the
resolved ``model_config``:

- ``brainjepa-checkpoint/1``: a training checkpoint (``train/checkpoint.py`` adds the optimizer, the step
  counters, RNG states, the run configuration, ``roi_names`` and ``scaling_stats_id``);
- ``brainjepa-weights/1``: weights only, e.g. the released Brain-JEPA checkpoint after conversion
  (``brainjepa convert-checkpoint``), with its ``source``.

Plain tensors and Python values only, so ``torch.load(weights_only=True)`` reads both (:func:`read_torch_file`).
Every reader of these files goes through :func:`read_checkpoint` (the file, its keys); evaluation builds its
modules through :func:`load_modules` (the target encoder, the paper's choice for downstream use; an MAE's encoder
and decoder), checked against the evaluation's ROIs and window; a bundle's encoder through :func:`build_modules`.

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


def read_checkpoint(path: str | Path, keys: tuple[str, ...] = (*MODULES, "model_config"), *,
                    formatted: bool = False, hint: str = "") -> dict:
    """The state of a training checkpoint or weights file at ``path``, which must hold ``keys`` (and a format of
    this module with ``formatted``); ``hint`` ends the error when it does not ("; reconstruction needs ...")."""
    state = read_torch_file(path, "checkpoint")
    if not isinstance(state, dict) or (formatted and state.get("format") not in (CHECKPOINT_FORMAT, WEIGHTS_FORMAT)):
        raise InputError(f"{path}: not a brainjepa checkpoint or weights file{hint}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise InputError(f"{path}: not a brainjepa checkpoint or weights file (lacks {missing}){hint}")
    return state


def load_weights(path: str | Path) -> tuple[dict, dict]:
    """The module state dicts and model config of a training checkpoint or a weights file."""
    state = read_checkpoint(path, formatted=True)
    return {m: state[m] for m in MODULES}, state["model_config"]


def build_modules(cfg, states: dict[str, dict], where: str | Path, fits: str = "its model_config",
                  out_dim: int | None = None) -> dict:
    """The modules of ``states`` (name -> state dict; ``encoder``/``target_encoder`` a BrainEncoder, ``predictor`` a
    BrainPredictor of output width ``out_dim``) for the resolved ModelConfig ``cfg``, loaded. Their position tables
    start at zero: the state dicts hold the trained ones. A state that does not fit ``cfg`` is an InputError."""
    from brainjepa.models import BrainEncoder, BrainPredictor

    tables = {"gradients": torch.zeros(cfg.n_rois, cfg.n_gradients) if cfg.positional == "gradient" else None,
              "centroids": torch.zeros(cfg.n_rois, 3) if cfg.positional == "centroid" else None}
    modules = {}
    for name, state in states.items():
        module = (BrainPredictor(cfg, **tables, out_dim=out_dim) if name == "predictor"
                  else BrainEncoder(cfg, **tables))
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"{where}: {name} does not fit {fits} ({exc})") from None
        modules[name] = module
    return modules


def load_modules(path: str | Path, roi_names: list[str], window: int, modules: tuple[str, ...] = ("target_encoder",),
                 *, drop_path: float = 0.0, out_dim: int | None = None, state: dict | None = None,
                 hint: str = "") -> tuple[dict, dict]:
    """The ``modules`` of the checkpoint or weights file at ``path`` (its ``state`` when already read), for inputs
    [B, 1, R, window] with ROIs ``roi_names`` (checked against the file's), ``drop_path`` set. Returns (name ->
    loaded module, the file's state)."""
    import dataclasses

    from brainjepa.io import check_roi_names
    from brainjepa.models import ModelConfig

    if state is None:
        state = read_checkpoint(path, ("model_config", *modules), hint=hint)
    names = state.get("roi_names")
    if names is not None and list(names) != list(roi_names):
        check_roi_names(list(names), list(roi_names), str(path), "the evaluation shards")
    cfg = ModelConfig.from_checkpoint(state["model_config"], f"{path}: model_config").resolved()
    if cfg.n_rois != len(roi_names):
        raise InputError(f"{path}: the model takes {cfg.n_rois} ROIs, the evaluation shards have {len(roi_names)}")
    if cfg.n_timesteps != window:
        raise InputError(f"{path}: the model takes windows of {cfg.n_timesteps} time steps, the evaluation uses "
                         f"{window}")
    cfg = dataclasses.replace(cfg, drop_path=drop_path)
    return build_modules(cfg, {m: state[m] for m in modules}, path, out_dim=out_dim), state
