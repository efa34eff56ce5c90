"""Process runtime shared by pretraining and evaluation: torchrun's environment, devices, autocast, batches.

CPU and GPU run the same code: on a GPU, ``autocast_for`` adds bf16 autocast (SDPA picks its FlashAttention
kernel for the calls without a key-padding mask) and :func:`set_tf32` lets float32 matmuls use TF32 tensor cores;
under torchrun, one process per device (``cuda:LOCAL_RANK``) joins a process group (NCCL, or Gloo on CPU).
``$BRAINJEPA_DDP=always`` (:func:`ddp_always`) has pretraining join one, and wrap its models in DDP, even as a single
process, so that the DDP code path runs on one GPU (bench/device_check.py).
"""

from __future__ import annotations

import os
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from brainjepa.config import choices
from brainjepa.errors import InputError, TrainingError
from brainjepa.train.config import Precision

PRECISIONS = choices(Precision)
DDP_ENV = "BRAINJEPA_DDP"  # auto: a process group when several processes run | always: even for one (ddp_always)


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str, group: bool = False) -> tuple[Distributed, torch.device]:
    """torchrun's environment -> process group (NCCL on GPU, Gloo on CPU) and this process's device.

    On GPU, local rank i takes ``cuda:i`` of the GPUs this process sees: one process per GPU. A local rank without
    its GPU (more processes than GPUs on a node) is an error naming the two settings, before any CUDA call.
    ``group``: join a process group even as the only process (:func:`ddp_always`); under torchrun through its
    environment, otherwise through a store of this process's own."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist_info = Distributed(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_kind == "cuda" or (device_kind == "auto" and torch.cuda.is_available())
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise TrainingError("run.device is 'cuda' but no GPU is visible")
    if use_cuda and dist_info.local_rank >= torch.cuda.device_count():
        raise TrainingError(missing_gpu(dist_info.local_rank, torch.cuda.device_count()))
    device = torch.device(f"cuda:{dist_info.local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if (world > 1 or group) and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if world == 1 and "MASTER_ADDR" not in os.environ:  # one process, no torchrun: no rendezvous to meet at
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(backend)
    return dist_info, device


def ddp_always() -> bool:
    """``$BRAINJEPA_DDP``: ``always`` has pretraining join a process group and wrap its models in
    DistributedDataParallel even as one process (``torchrun --nproc_per_node=1``, or no torchrun), so that NCCL, the
    DDP wrapper, its all-reduces and the rank-0 saves run on a single GPU; unset, empty or ``auto``: only when
    several processes run. It changes how a run is executed, not what it trains."""
    value = os.environ.get(DDP_ENV, "").strip() or "auto"
    if value not in ("auto", "always"):
        raise InputError(f"{DDP_ENV}={value!r} is not one of auto, always")
    return value == "always"


def missing_gpu(local_rank: int, visible: int) -> str:
    """The message of a local rank that has no GPU of its own."""
    processes = os.environ.get("LOCAL_WORLD_SIZE", "?")
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f"{visible} GPU(s)" + (f" (CUDA_VISIBLE_DEVICES={devices})" if devices is not None else "")
    return (f"local rank {local_rank} of {processes} processes on this node needs GPU cuda:{local_rank}, but this "
            f"process sees {seen}: each process drives one GPU, so the processes per node (the config's "
            "pretrain.processes or evaluate.processes, torchrun's --nproc_per_node) must equal the GPUs per node "
            "(pretrain.gpus or evaluate.gpus)")


def use_deterministic_algorithms() -> None:
    """``run.deterministic``: torch's deterministic algorithms. cuBLAS (CUDA >= 10.2) is reproducible only with
    ``CUBLAS_WORKSPACE_CONFIG`` set before it starts, and torch raises at the first matmul without it: set to
    ``:4096:8`` here when unset (a value set by the user is kept). Call it before any CUDA work."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def set_tf32(device: torch.device, enabled: bool) -> None:
    """``run.tf32`` on a GPU: float32 matmuls (``torch.set_float32_matmul_precision('high')``) and cuDNN
    convolutions may use TF32 tensor cores (Ampere and later; a 10-bit mantissa on the products, float32
    accumulation). It speeds up fp32 runs and what runs outside autocast; bf16 autocast regions are unaffected.
    ``enabled`` False: strict float32 ('highest'). No effect on CPU."""
    if device.type != "cuda":
        return
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


def compile_modules(modules, backend: str = "inductor") -> None:
    """``run.compile``: ``torch.compile`` each module in place (``nn.Module.compile``, once per module object), so
    that its ``state_dict`` keys stay as they are (no ``_orig_mod.`` prefix) and every reader of a checkpoint loads
    it. Call it before wrapping a module in DDP.

    Shapes: ``dynamic=None``, torch's automatic dynamic shapes. A first call compiles for its shapes; a size or
    host integer that then changes (paper masks: each batch's context and target token counts, the packed lengths)
    is recompiled once as a symbol, after which other values reuse that graph. The encoder's frame is also
    compiled once without gradients (the EMA target encoder) and once per mode the monitors call it in. Measured
    on CPU with backend ``eager`` (tests/test_train_speed.py): a bounded number of graphs in the first steps of a
    run, none after."""
    seen: set[int] = set()
    for module in modules:
        if id(module) not in seen:  # mae: the encoder is also the "target encoder"
            seen.add(id(module))
            module.compile(backend=backend, dynamic=None)


def check_distributed(device_kind: str = "auto", expect_world_size: int | None = None) -> dict:
    """Join the job's process group and all-reduce every rank's number + 1, as a job on several nodes does before
    it trains. Returns this rank's report: rank, world_size, host, sum (world_size x (world_size + 1) / 2 when
    every rank took part); raises TrainingError when the world or the sum is not what it should be."""
    import socket

    info, device = setup_distributed(device_kind)
    value = torch.tensor([info.rank + 1.0], device=device)
    if dist.is_initialized():
        dist.all_reduce(value)
        dist.destroy_process_group()
    report = {"rank": info.rank, "world_size": info.world_size, "local_rank": info.local_rank,
              "host": socket.gethostname(), "device": str(device), "sum": float(value)}
    if expect_world_size is not None and info.world_size != expect_world_size:
        raise TrainingError(f"world size {info.world_size}, expected {expect_world_size} (nodes x processes per "
                            "node): the launcher did not start every process")
    if report["sum"] != info.world_size * (info.world_size + 1) / 2:
        raise TrainingError(f"the all-reduce gave {report['sum']}, not the sum over {info.world_size} ranks")
    return report


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on GPU (precision auto/bf16); fp32 otherwise. ``precision`` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise TrainingError(f"run.precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def batches_per_epoch(dataset, batch_size: int, accumulation: int, device: torch.device) -> int:
    """Micro-batches every rank runs this epoch: the smallest rank's full batches, whole optimizer steps."""
    local = torch.tensor(len(dataset) // batch_size, device=device)
    if dist.is_initialized():
        dist.all_reduce(local, op=dist.ReduceOp.MIN)
    return int(local) // accumulation * accumulation


def no_sync(modules) -> ExitStack:
    """Skip DDP's gradient all-reduce for these modules (accumulation micro-batches before the last)."""
    stack = ExitStack()
    for module in modules:
        if hasattr(module, "no_sync"):
            stack.enter_context(module.no_sync())
    return stack
