"""The device check: the package's own pretraining and evaluation engines on one GPU, measured in one table.

    python bench/device_check.py                          # one GPU: ViT-B at 450 x 160, bf16 (under 9 minutes)
    python bench/device_check.py --tiny --device cpu      # CPU, tiny shapes: the same cases (CI, tests)

Synthetic shards (runs of noise with a planted 3-factor structure, gradients, scaling statistics) are built once
under ``--root``; then every case runs in a process of its own, so that its peak GPU memory and host RSS are its
own. The pretraining cases run :class:`brainjepa.train.pretrain.Trainer` itself (the loader with its workers and
mask collator, bf16 autocast, AdamW, EMA, ``log.csv``, the checkpoints), with ``run.stop_after_steps`` and
``run.checkpoint_every: 1``, so that the epoch end (``latest.pt`` and ``epoch-0001.pt``) falls inside the run:

- ``paper``: ViT-B, paper masks, bf16, 2 loader workers, 30 optimizer steps of batch 16 (20 per epoch);
- ``ddp``: the same under ``torchrun --nproc_per_node=1`` with ``BRAINJEPA_DDP=always``: a process group of one
  (NCCL on a GPU, Gloo on CPU) and the DistributedDataParallel wrapper, its all-reduces and the rank-0 saves;
- ``random``: ``mask.mode: random`` (75 % hidden, nothing padded: SDPA gets no mask);
- ``batch64``: paper masks at batch 64 (10 steps; memory headroom);
- ``evaluate``: the evaluation engine: fine-tuning (``evaluate.loop.fit`` on a ``build_finetune`` model, drop
  path 0.1, layer-wise LR decay) and feature extraction (``evaluate.features.extract``);
- ``compile``: ``paper`` with ``run.compile`` (``torch.compile`` of the encoders and the predictor), backend
  ``--compile-backend`` (inductor on a GPU; eager on CPU, which needs no C++ compiler and checks the code path
  only). Last, so that its compilation (minutes for ViT-B) cannot starve the other cases of ``--budget-s``;
  ``--cases paper compile`` compares the two alone. Its rate is the steps after the first 5 (compilation settles
  within them: tests/test_train_speed.py); ``warmup_s`` in the JSON rows is the time to the 5th step, compilation
  included.

Columns: samples/s (pretraining: the median of ``log.csv`` after the first 5 steps; fine-tuning: training windows
over the fastest epoch of 3, its validation pass included; features: windows/s); TFLOP/sample (counted with
``torch.utils.flop_counter`` on one of the case's own batches, forward and backward, the EMA target encoder's
forward included; torch has no formula for its CPU attention kernel, so on CPU attention is left out); MFU
(samples/s x FLOP/sample over the GPU's dense bf16 peak, ``--peak-tflops`` or a table of data-sheet values);
peak GPU memory (``max_memory_allocated``) and host RSS (the case's process, loader workers not included);
checkpoint seconds (the slowest write of ``latest.pt``/``epoch-*.pt``) and size; the SDPA kernels that ran (the
profiler's aten ops in one step: flash, efficient, cudnn, math, cpu_flash); the loss of the first and last step.
The review's FLOP model (../shared/docs/review-gpu-route-2026-12-06.md section 4) expects 2.90 TFLOP per sample
for ViT-B with paper masks, and about 137 samples/s at 40 % MFU of an H100 SXM.

The whole check stops at ``--budget-s`` (510 s): a case that would run past it is stopped and reported as such.
``--json PATH`` writes every row. The exit status is 1 when a case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MARK = "DEVICE_CHECK_ROW "  # a child's result line
CASES = ("paper", "ddp", "random", "batch64", "evaluate", "compile")
# ViT-B at the paper's 450 x 160; tiny: the CPU test's shapes (a few seconds per case)
SHAPES = {
    "full": {"size": "base", "rois": 450, "window": 160, "time": 200, "runs": 320, "gradients": 30, "batch": 16,
             "steps": 30, "large_batch": 64, "large_steps": 10, "workers": 2, "model": {},
             "ft_windows": 128, "features": 128},
    "tiny": {"size": "tiny", "rois": 24, "window": 32, "time": 40, "runs": 40, "gradients": 4, "batch": 4,
             "steps": 14, "large_batch": 8, "large_steps": 6, "workers": 2,
             "model": {"embed_dim": 32, "depth": 2, "num_heads": 2, "predictor_dim": 16, "predictor_depth": 1},
             "ft_windows": 16, "features": 16},
}
WARMUP_STEPS = 5  # log.csv rows left out of the median rate (allocations, kernel choice, worker start)
# dense bf16 tensor-core peaks (TFLOP/s, NVIDIA data sheets), matched in order against the device name
PEAK_TFLOPS = (("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0),
               ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0))
SDPA_NAMES = {"flash_attention": "flash", "efficient_attention": "efficient", "cudnn_attention": "cudnn",
              "attention_math": "math", "flash_attention_for_cpu": "cpu_flash"}


# ----------------------------------------------------------------------------------------------- data
def build_data(root: Path, shape: dict) -> Path:
    """Shards of ``runs`` runs (rois x time, float16), gradients and scaling statistics in a folder of ``root``
    named by the shape (kept: a second check reuses them)."""
    import numpy as np
    import pandas as pd

    from brainjepa.data.shards import build_shards
    from brainjepa.group.gradients import write_gradients
    from brainjepa.group.scaling import ScalingStats, write_scaling_stats
    from brainjepa.io import write_timeseries

    folder = root / f"data-{shape['rois']}x{shape['time']}-{shape['runs']}runs"
    if (folder / "shards" / "manifest.json").exists():
        return folder
    rng = np.random.default_rng(0)
    names = [f"roi{i:03d}" for i in range(shape["rois"])]
    mixing = rng.normal(size=(3, shape["rois"]))
    rows = []
    for i in range(shape["runs"]):
        path = folder / "runs" / f"r{i:04d}.parquet"
        x = rng.normal(size=(shape["time"], 3)) @ mixing + 0.5 * rng.normal(size=(shape["time"], shape["rois"]))
        write_timeseries(x.astype(np.float32), names, path, {"tr": 2.0})
        rows.append({"run_id": f"c/sub-{i:04d}_ses-1_run-1", "cohort": "c", "subject": f"{i:04d}", "session": "1",
                     "run": "1", "split": "pretrain", "path": str(path)})
    stats = ScalingStats("subject_mean", tuple(names), np.zeros(shape["rois"]), np.ones(shape["rois"]), shape["runs"])
    write_scaling_stats(stats, folder / "stats.json")
    write_gradients(rng.normal(size=(shape["rois"], shape["gradients"])), np.linspace(1, 0.5, shape["gradients"]),
                    names, folder / "gradients.tsv")
    build_shards(pd.DataFrame(rows), stats, folder / "shards", window=shape["window"])
    return folder


# ----------------------------------------------------------------------------------------------- measuring
def host_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def device_info(device) -> dict:
    import torch

    info = {"torch": torch.__version__, "device": "cpu", "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info.update(device=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    bf16=torch.cuda.is_bf16_supported())
    return info


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((value for key, value in PEAK_TFLOPS if key in name.upper()), None)


def count_flops(fn, eager: bool = False) -> float | None:
    """FLOPs of ``fn()`` by torch's flop counter (None if it cannot count them). ``eager``: compiled modules run
    uncompiled meanwhile (the counter sees torch's ops, not a compiled graph's kernels; the same arithmetic)."""
    from contextlib import nullcontext

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    stance = torch.compiler.set_stance("force_eager") if eager else nullcontext()
    try:
        with stance, FlopCounterMode(display=False) as counter:
            fn()
    except Exception as exc:  # a counter failure is not a failure of the engine: report it, go on
        print(f"flop counter: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return float(counter.get_total_flops())


def attention_kernels(fn) -> str:
    """The attention kernels that ``fn()`` ran: the profiler's forward SDPA ops (and flash-attn's), with counts."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts: dict[str, int] = {}
    for event in prof.key_averages():
        name = event.key
        if "backward" in name.lower():
            continue
        if name.startswith("aten::_scaled_dot_product_"):
            short = name.removeprefix("aten::_scaled_dot_product_")
            short = SDPA_NAMES.get(short, short)
        elif "flash_attn" in name.lower():
            short = "flash_attn"
        else:
            continue
        counts[short] = counts.get(short, 0) + event.count
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ----------------------------------------------------------------------------------------------- the cases
def pretrain_case(case: str, args, shape: dict, data: Path) -> list[dict]:
    """One pretraining run of the Trainer (module docstring), then one more micro-step of its own loader's batch
    under the profiler (kernels) and the flop counter."""
    import numpy as np
    import pandas as pd
    import torch
    import torch.distributed as dist

    from brainjepa.train import checkpoint as ckpt
    from brainjepa.train.config import load_config
    from brainjepa.train.pretrain import Trainer

    large = case == "batch64"
    batch = shape["large_batch"] if large else shape["batch"]
    steps = shape["large_steps"] if large else shape["steps"]
    out = Path(args.root) / f"run-{'tiny' if args.tiny else 'full'}-{case}"
    sets = [f"data.manifest={data / 'shards' / 'manifest.json'}", f"data.gradients={data / 'gradients.tsv'}",
            f"data.scaling_stats={data / 'stats.json'}", f"run.out_dir={out}", f"model.size={shape['size']}",
            *(f"model.{k}={v}" for k, v in shape["model"].items()), f"data.batch_size={batch}",
            f"data.num_workers={shape['workers']}", f"mask.mode={'random' if case == 'random' else 'paper'}",
            *(["run.compile=true", f"run.compile_backend={args.compile_backend}"] if case == "compile" else []),
            "optim.epochs=100", f"run.stop_after_steps={steps}", "run.log_every=1", "run.progress=false",
            "run.checkpoint_every=1", "run.save_every_minutes=1000", "run.monitor_every=0",
            f"run.device={args.device}", f"run.precision={precision(args)}"]
    writes: list[tuple[str, float, int]] = []
    save = ckpt.save_checkpoint

    def timed_save(path, state, *rest, **kwargs):  # the trainer's own writes, timed
        start = time.perf_counter()
        save(path, state, *rest, **kwargs)
        writes.append((Path(path).name, time.perf_counter() - start, Path(path).stat().st_size))

    ckpt.save_checkpoint = timed_save
    cfg = load_config(None, sets)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, restart=True)
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.fit()
    synchronize(device)
    wall = time.perf_counter() - t0
    peak = peak_gib(device)
    compiled = f", compiled ({args.compile_backend})" if cfg.run.compile else ""
    row = {"case": case, "what": f"pretrain {shape['size']} {cfg.mask.mode} masks, batch {batch}{compiled}",
           **device_info(device), "precision": precision(args), "batch": batch, "workers": shape["workers"],
           "compile": args.compile_backend if cfg.run.compile else None}
    wrapped = type(trainer.online[0]).__name__
    row["ddp"] = f"{dist.get_backend()}/{wrapped}" if dist.is_initialized() else "-"
    if trainer.dist.is_main:
        log = pd.read_csv(out / "log.csv")
        steady = log["samples_per_s"].iloc[WARMUP_STEPS:] if len(log) > WARMUP_STEPS + 2 else log["samples_per_s"]
        batch_data = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                      for k, v in next(iter(trainer.loader)).items()}
        step = lambda: trainer.micro_step(batch_data, True)  # noqa: E731
        row["kernels"] = attention_kernels(step)
        flops = count_flops(step) if not cfg.run.compile else count_flops(step, eager=True)
        trainer.optimizer.zero_grad(set_to_none=True)
        row.update(steps=int(log["step"].max()), epochs_crossed=int(log["epoch"].max()),
                   samples_per_s=float(steady.median()), flop_per_sample=None if flops is None else flops / batch,
                   loss_first=float(log["loss"].iloc[0]), loss_last=float(log["loss"].iloc[-1]),
                   finite=bool(np.isfinite(log["loss"]).all()), peak_gib=peak, wall_s=wall,
                   warmup_s=float(log["elapsed_s"].iloc[min(WARMUP_STEPS, len(log)) - 1]),
                   checkpoint_s=max((s for _, s, _ in writes), default=None),
                   checkpoint_gb=max((b for _, _, b in writes), default=0) / 1e9 or None,
                   checkpoints=[name for name, _, _ in writes])
        row["problems"] = pretrain_problems(case, row, steps)
    row["host_rss_gib"] = host_rss_gib()
    if dist.is_initialized():
        dist.destroy_process_group()
    return [row] if trainer.dist.is_main else []


def pretrain_problems(case: str, row: dict, steps: int) -> list[str]:
    """What makes a pretraining case fail: a non-finite loss, a short run, no epoch end, DDP not in use."""
    problems = []
    if not row["finite"]:
        problems.append("non-finite loss")
    if row["steps"] != steps:
        problems.append(f"{row['steps']} steps, not {steps}")
    if row["epochs_crossed"] < 1 or not any(name.startswith("epoch-") for name in row["checkpoints"]):
        problems.append("no epoch end inside the run")
    if case == "ddp" and not row["ddp"].endswith("/DistributedDataParallel"):
        problems.append(f"not under DDP ({row['ddp']})")
    return problems


def evaluate_case(args, shape: dict) -> list[dict]:
    """Fine-tuning through ``evaluate.loop.fit`` (3 epochs of ``ft_windows`` random windows; the rate is that of
    the fastest epoch, its validation pass included) and feature extraction through ``evaluate.features.extract``."""
    import numpy as np
    import torch

    from brainjepa.evaluate.config import FinetuneConfig
    from brainjepa.evaluate.features import extract
    from brainjepa.evaluate.finetune import build_finetune
    from brainjepa.evaluate.loop import fit, task_loss
    from brainjepa.models import BrainEncoder, ModelConfig
    from brainjepa.train.runtime import autocast_for, setup_distributed

    _, device = setup_distributed(args.device)
    torch.manual_seed(0)
    r, t, b = shape["rois"], shape["window"], shape["batch"]
    cfg = ModelConfig(size=shape["size"], n_rois=r, n_timesteps=t, n_gradients=shape["gradients"], drop_path=0.1,
                      **shape["model"])
    encoder = BrainEncoder(cfg, torch.randn(r, shape["gradients"]))
    model, optimizer, lr = build_finetune(encoder, 1, FinetuneConfig(batch_size=b), 1)
    model.to(device)
    autocast = lambda: autocast_for(device, precision(args))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    n = shape["ft_windows"]
    x, y = torch.randn(n, 1, r, t, generator=g), torch.randn(n, generator=g)
    val = (torch.randn(b, 1, r, t, generator=g), torch.randn(b, generator=g).numpy(), np.arange(b).astype(str))
    info = {**device_info(device), "precision": precision(args), "batch": b, "workers": 0, "ddp": "-"}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    result = fit(model, optimizer, (x, y), val, "regression", epochs=3, warmup_epochs=0.5, batch_size=b, lr=lr,
                 min_lr=1e-6, seed=0, device=device, autocast=autocast, name="device check")
    synchronize(device)
    wall = time.perf_counter() - t0
    elapsed = [0.0] + [h["elapsed_s"] for h in result.history]
    epoch_s = min(end - begin for begin, end in zip(elapsed[1:-1], elapsed[2:]))
    xb, yb = x[:b].to(device), y[:b].to(device)

    def train_step():
        model.train()
        with autocast():
            loss = task_loss("regression", model(xb), yb)
        loss.backward()

    kernels = attention_kernels(train_step)
    flops = count_flops(train_step)
    model.zero_grad(set_to_none=True)
    losses = [h["train_loss"] for h in result.history]
    finetune = {"case": "evaluate", "what": f"fine-tune {shape['size']} (loop.fit)", **info,
                "steps": result.history[-1]["step"], "samples_per_s": n / epoch_s,
                "flop_per_sample": None if flops is None else flops / b, "peak_gib": peak_gib(device),
                "kernels": kernels, "loss_first": losses[0], "loss_last": losses[-1], "wall_s": wall,
                "finite": bool(np.isfinite(losses).all())}
    finetune["problems"] = [] if finetune["finite"] else ["non-finite loss"]
    data = torch.randn(shape["features"], r, t, generator=g).numpy()
    encoder = model.encoder
    extract(encoder, data[:b], cfg.n_time_patches, device, b, autocast)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    pooled, _ = extract(encoder, data, cfg.n_time_patches, device, b, autocast)
    synchronize(device)
    seconds = time.perf_counter() - t0
    one = lambda: extract(encoder, data[:b], cfg.n_time_patches, device, b, autocast)  # noqa: E731
    flops = count_flops(one)
    features = {"case": "evaluate", "what": f"features {shape['size']} (features.extract)", **info,
                "steps": len(data) // b, "samples_per_s": len(data) / seconds, "kernels": attention_kernels(one),
                "flop_per_sample": None if flops is None else flops / b, "peak_gib": peak_gib(device),
                "wall_s": seconds, "finite": bool(np.isfinite(pooled).all())}
    features["problems"] = [] if features["finite"] else ["non-finite features"]
    rss = host_rss_gib()
    return [{**finetune, "host_rss_gib": rss}, {**features, "host_rss_gib": rss}]


def precision(args) -> str:
    """bf16 on a GPU (the paper's), fp32 on CPU."""
    return "fp32" if args.device == "cpu" else "bf16"


def run_case(args) -> None:
    """A child: one case; its rows on stdout (MARK + JSON)."""
    shape = SHAPES["tiny" if args.tiny else "full"]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = build_data(Path(args.root), shape)
    rows = evaluate_case(args, shape) if args.case == "evaluate" else pretrain_case(args.case, args, shape, data)
    for row in rows:
        print(MARK + json.dumps(row), flush=True)


# ----------------------------------------------------------------------------------------------- the table
def child_command(case: str, args) -> tuple[list[str], dict]:
    argv = [str(Path(__file__).resolve()), "--case", case, "--root", str(args.root), "--device", args.device]
    argv += ["--tiny"] if args.tiny else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    argv += ["--compile-backend", args.compile_backend]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if case == "ddp":  # torchrun with one process, and the switch that makes the trainer join a group and wrap
        env["BRAINJEPA_DDP"] = "always"
        env.setdefault("OMP_NUM_THREADS", str(args.threads or os.cpu_count() or 1))
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *argv], env
    return [sys.executable, *argv], env


def fmt(value, spec: str = ".1f", scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale if scale != 1.0 else value, spec)


def print_table(rows: list[dict], peak: float | None) -> None:
    header = ("case", "what", "steps", "samples/s", "TFLOP/sample", "MFU", "peak GiB", "RSS GiB", "ckpt s (GB)",
              "DDP", "SDPA kernels", "loss first->last", "wall s", "status")
    lines = [header]
    for r in rows:
        flop = r.get("flop_per_sample")
        mfu = (r["samples_per_s"] * flop / (peak * 1e12)) if peak and flop and r.get("samples_per_s") else None
        ckpt = "-" if r.get("checkpoint_s") is None else f"{r['checkpoint_s']:.1f} ({r['checkpoint_gb']:.2f})"
        loss = "-" if r.get("loss_first") is None else f"{r['loss_first']:.4f}->{r['loss_last']:.4f}"
        status = "ok" if not r.get("problems") else "FAIL: " + "; ".join(r["problems"])
        lines.append((r["case"], r.get("what", ""), fmt(r.get("steps"), "d"), fmt(r.get("samples_per_s")),
                      fmt(flop, ".3g", 1e-12), fmt(mfu, ".1%"), fmt(r.get("peak_gib"), ".2f"),
                      fmt(r.get("host_rss_gib"), ".2f"), ckpt, r.get("ddp", "-"), r.get("kernels", "-"), loss,
                      fmt(r.get("wall_s")), status))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print(" | ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU, CI)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "brainjepa-device-check",
                        help="synthetic shards and run folders (kept, reused)")
    parser.add_argument("--budget-s", type=float, default=510.0, help="stop every case by then (seconds)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: by its name)")
    parser.add_argument("--threads", type=int, help="torch threads per case (default: torch's; --tiny on CPU: 1)")
    parser.add_argument("--compile-backend", help="the compile case's run.compile_backend (default: inductor on a "
                        "GPU, eager on CPU)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--keep", action="store_true", help="keep the cases' run folders (checkpoints, log.csv)")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # a child: one case
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.compile_backend is None:  # eager on CPU: the code path without a C++ compiler (minutes at 2 cores)
        args.compile_backend = "inductor" if args.device == "cuda" else "eager"
    if args.threads is None and args.tiny and args.device == "cpu":
        args.threads = 1  # tiny shapes gain nothing from more, and a shared machine's cores are oversubscribed
    if args.case:
        run_case(args)
        return
    start = time.perf_counter()
    shape = SHAPES["tiny" if args.tiny else "full"]
    args.root.mkdir(parents=True, exist_ok=True)
    build_data(args.root, shape)
    print(f"data: {shape['runs']} runs of {shape['rois']} x {shape['time']} in {args.root} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    rows: list[dict] = []
    for case in args.cases:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 5:
            rows.append({"case": case, "problems": ["not run: --budget-s spent"]})
            continue
        cmd, env = child_command(case, args)
        t0 = time.perf_counter()
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=left, cwd=REPO)
        except subprocess.TimeoutExpired:
            rows.append({"case": case, "wall_s": time.perf_counter() - t0,
                         "problems": [f"stopped at --budget-s ({args.budget_s:.0f} s)"]})
            continue
        found = [json.loads(line[len(MARK):]) for line in result.stdout.splitlines() if line.startswith(MARK)]
        if result.returncode or not found:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            print(f"--- {case} failed (exit {result.returncode}):\n{result.stderr[-3000:]}", file=sys.stderr)
            found = [{"case": case, "wall_s": time.perf_counter() - t0,
                      "problems": [f"exit {result.returncode}: {tail[0][:160]}"]}]
        rows += found
        if not args.keep:  # ViT-B checkpoints are about 1.5 GB each
            shutil.rmtree(args.root / f"run-{'tiny' if args.tiny else 'full'}-{case}", ignore_errors=True)
        print(f"{case}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    first = next((r for r in rows if "device" in r), {})
    peak = peak_tflops(first.get("device", ""), args.peak_tflops) if first.get("device", "cpu") != "cpu" else None
    where = f", CUDA {first['cuda']}, bf16 {first['bf16']}" if "cuda" in first else f", {first.get('threads')} threads"
    print(f"\ndevice {first.get('device', '?')}, torch {first.get('torch', '?')}{where}; MFU against "
          f"{fmt(peak, '.0f')} TFLOP/s dense bf16; whole check {time.perf_counter() - start:.0f} s")
    print_table(rows, peak)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"peak_tflops": peak, "rows": rows}, indent=1))
    if any(r.get("problems") for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
