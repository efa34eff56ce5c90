"""Training checkpoints: one file per save, written atomically; loading fails loudly.

Contents (format ``brainjepa-checkpoint/1``, see :mod:`brainjepa.models.weights` for the shared part):
``encoder``, ``target_encoder``, ``predictor`` (state dicts), ``model_config`` (resolved), ``optimizer``,
``step`` (optimizer steps done), ``epoch`` and ``batch_in_epoch`` (where to continue), ``rng`` (every rank's own
CPU and CUDA generator states, :func:`gather_rng_states`), ``global_batch`` (batch per process, processes and
accumulation steps: a resume must keep their product), ``config`` (the resolved run configuration), ``roi_names``
and ``scaling_stats_id`` (the data it was trained on). Plain tensors and Python values only, so
``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import errno
import math
import shutil
from pathlib import Path

import torch

from brainjepa.errors import InputError, TrainingError
from brainjepa.io import atomic_path
from brainjepa.models.weights import CHECKPOINT_FORMAT, MODULES, read_torch_file

FORMAT = CHECKPOINT_FORMAT
REQUIRED = (*MODULES, "model_config", "optimizer", "step", "epoch", "batch_in_epoch", "config")


def save_checkpoint(path: str | Path, state: dict, intact: str | None = None) -> None:
    """Write ``state`` (see the module docstring) atomically: a crash never leaves a half-written file.

    A write that fails for lack of space (a full disk, a quota, a file size limit) is a TrainingError naming the
    file, the free bytes and the checkpoint's size; ``intact`` says what is still safe and what to do (default:
    whether an older file of that name is left as it was)."""
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, **state}, tmp)
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not any(s in str(exc) for s in WRITE_FAILURES):
            raise
        if intact is None:
            intact = (f"the previous {path.name} is intact" if path.exists() else
                      f"no {path.name} was there before") + "; free space (or write elsewhere) and rerun"
        raise TrainingError(write_failure(path, exc, tensor_bytes(state), intact)) from exc


# What torch's writer (PytorchStreamWriter) says when the file stops growing: a full disk or a size limit.
WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def write_failure(path: Path, exc: BaseException, size: int, intact: str) -> str:
    """The message of a checkpoint write that failed: why (no space, size limit, other), free bytes, what is safe."""
    import resource

    n_free = shutil.disk_usage(path.parent).free
    free = f"{n_free} bytes ({human_bytes(n_free)}) free on {path.parent}"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if isinstance(exc, OSError) and exc.errno not in NO_SPACE:
        why = f"{exc.strerror or exc} ({free})"
    else:
        why = f"disk full or file size limit ({free}; the checkpoint is about {human_bytes(size)})"
        if limit != resource.RLIM_INFINITY:
            why += f"; this process may write files of at most {limit} bytes (ulimit -f)"
    return f"{path}: cannot write the checkpoint: {why}; {intact}"


def tensor_bytes(tree) -> int:
    """Bytes of the tensors in a nested dict/list: about a checkpoint's size on disk."""
    if torch.is_tensor(tree):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tensor_bytes(v) for v in tree)
    return 0


def human_bytes(n: float) -> str:
    """``1234567`` -> ``1.2 MB`` (powers of 1000, up to GB)."""
    if n < 1000:
        return f"{n:.0f} B"
    units = ("kB", "MB", "GB")
    power = min(len(units), int(math.log10(n) // 3))
    return f"{n / 1000 ** power:.1f} {units[power - 1]}"


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


def rng_state(device: torch.device | None = None) -> dict:
    """This process's generators: the CPU one (``torch``) and, on a GPU, its own device's (``cuda``)."""
    state = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def gather_rng_states(device: torch.device) -> dict | None:
    """Every rank's generators (:func:`rng_state`) at rank 0, as a checkpoint's ``rng``: ``{"ranks": [rank 0's,
    rank 1's, ...]}``. A collective under DDP (every rank calls it); None on the other ranks."""
    import torch.distributed as dist

    own = rng_state(device)
    if not dist.is_initialized():
        return {"ranks": [own]}
    states = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(own, states, dst=0)
    return {"ranks": states} if states is not None else None


def set_rng_state(state: dict, rank: int = 0, device: torch.device | None = None) -> bool:
    """Restore this rank's own generators from a checkpoint's ``rng`` (:func:`gather_rng_states`); False when the
    checkpoint has none for this rank (the generators are left as they are).

    A checkpoint of an older brainjepa holds rank 0's CPU generator and the CUDA generator of every GPU then
    visible (``{"torch", "cuda": [...]}``): rank 0 takes the CPU one and its own GPU's, when that GPU was saved."""
    if "ranks" in state:
        if rank >= len(state["ranks"]):
            return False
        own = state["ranks"][rank]
        torch.set_rng_state(own["torch"])
        if device is not None and device.type == "cuda" and "cuda" in own:
            torch.cuda.set_rng_state(own["cuda"], device)
        return True
    if rank != 0:
        return False
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda") or []
    if device is not None and device.type == "cuda" and (device.index or 0) < len(saved):
        torch.cuda.set_rng_state(saved[device.index or 0], device)
    return True


def cpu_copy(tree):
    """A copy of a checkpoint's state that later training cannot change: every tensor copied to the CPU (a new
    tensor even when it is there already), every dict, list and tuple rebuilt; other values (numbers, strings)
    are immutable and kept."""
    if torch.is_tensor(tree):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: cpu_copy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(cpu_copy(value) for value in tree)
    return tree


class BackgroundWriter:
    """Writes one checkpoint at a time on a thread of its own (``run.async_save``): :meth:`submit` first waits for
    the previous write, then starts this one and returns. A write that failed is raised again (the same
    exception: :func:`save_checkpoint`'s TrainingError) by the next :meth:`wait` or :meth:`submit`.

    The state handed over must not change while it is written: :func:`cpu_copy`. Torch's writer releases the
    interpreter lock while it writes, so training goes on meanwhile."""

    def __init__(self) -> None:
        import threading

        self._threading = threading
        self._thread = None
        self._error: BaseException | None = None

    def submit(self, path: str | Path, state: dict, intact: str | None = None) -> None:
        self.wait()
        self._thread = self._threading.Thread(target=self._write, args=(path, state, intact),
                                              name=f"checkpoint {Path(path).name}")
        self._thread.start()

    def _write(self, path, state, intact) -> None:
        try:
            save_checkpoint(path, state, intact)  # the module's function at call time (tests replace it)
        except BaseException as exc:  # handed to the training thread
            self._error = exc

    def wait(self, raise_error: bool = True) -> BaseException | None:
        """Wait for the write in progress, if any. Its error is raised (``raise_error``) or returned."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error
        return error
