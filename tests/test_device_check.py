"""bench/device_check.py at tiny shapes on CPU (so that the GPU check keeps working), and the switch it uses to run
the DDP code path with one process ($BRAINJEPA_DDP=always)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from brainjepa.errors import InputError
from brainjepa.train import checkpoint as ckpt
from brainjepa.train.config import load_config
from brainjepa.train.pretrain import Trainer
from brainjepa.train.runtime import DDP_ENV, ddp_always

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import device_check  # noqa: E402


def test_the_device_check_runs_every_case_at_tiny_shapes_on_cpu(tmp_path):
    """Every case runs the package's engines and is reported ok in one table: the pretraining cases cross an epoch
    end (epoch-0001.pt written there), the ddp case runs under torchrun through Gloo and the DDP wrapper with the
    losses of the single process, the compile case runs run.compile (backend eager on CPU) with the losses of the
    uncompiled paper case, and fine-tuning and feature extraction report a rate."""
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(REPO / "bench" / "device_check.py"), "--tiny", "--device", "cpu", "--root",
           str(tmp_path / "check"), "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout.split("\ndevice cpu")[1]
    assert "samples/s" in table and "SDPA kernels" in table and "FAIL" not in table
    rows = {(r["case"], r["what"].split()[0]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("paper", "pretrain"), ("ddp", "pretrain"), ("random", "pretrain"),
                         ("batch64", "pretrain"), ("evaluate", "fine-tune"), ("evaluate", "features"),
                         ("compile", "pretrain")}
    assert all(not r["problems"] and r["samples_per_s"] > 0 and r["host_rss_gib"] > 0 for r in rows.values())
    paper, ddp = rows["paper", "pretrain"], rows["ddp", "pretrain"]
    for row in (paper, ddp):
        assert row["epochs_crossed"] == 1 and "epoch-0001.pt" in row["checkpoints"]
        assert row["steps"] == device_check.SHAPES["tiny"]["steps"] and row["workers"] == 2
        assert row["kernels"].startswith("cpu_flash") and row["flop_per_sample"] > 0
    assert paper["ddp"] == "-" and ddp["ddp"] == "gloo/DistributedDataParallel"
    assert ddp["loss_first"] == pytest.approx(paper["loss_first"], rel=1e-5)
    assert ddp["loss_last"] == pytest.approx(paper["loss_last"], rel=1e-4)
    assert rows["batch64", "pretrain"]["batch"] == device_check.SHAPES["tiny"]["large_batch"]
    compiled = rows["compile", "pretrain"]
    assert compiled["compile"] == "eager" and paper["compile"] is None and "compiled (eager)" in compiled["what"]
    assert compiled["steps"] == paper["steps"] and compiled["flop_per_sample"] == paper["flop_per_sample"]
    assert compiled["loss_first"] == pytest.approx(paper["loss_first"], rel=1e-5)
    assert compiled["loss_last"] == pytest.approx(paper["loss_last"], rel=1e-4)
    assert compiled["warmup_s"] > 0


def test_the_table_names_a_failed_case_and_the_mfu_uses_the_gpus_peak(capsys):
    rows = [{"case": "paper", "what": "pretrain base paper masks, batch 16", "steps": 30, "samples_per_s": 100.0,
             "flop_per_sample": 2.9e12, "problems": []},
            {"case": "ddp", "problems": ["exit 1: RuntimeError: NCCL error"]}]
    device_check.print_table(rows, device_check.peak_tflops("NVIDIA H100 80GB HBM3", None))
    text = capsys.readouterr().out
    assert "29.3%" in text and "FAIL: exit 1: RuntimeError: NCCL error" in text
    assert device_check.peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert device_check.peak_tflops("Some GPU", None) is None and device_check.peak_tflops("x", 500.0) == 500.0


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    return device_check.build_data(tmp_path_factory.mktemp("ddp"), device_check.SHAPES["tiny"])


def _config(data: Path, out: Path):
    shape = device_check.SHAPES["tiny"]
    return load_config(None, [f"data.manifest={data / 'shards' / 'manifest.json'}",
                              f"data.gradients={data / 'gradients.tsv'}", f"run.out_dir={out}", "model.size=tiny",
                              *(f"model.{k}={v}" for k, v in shape["model"].items()), "data.batch_size=4",
                              "data.num_workers=0", "optim.epochs=1", "run.progress=false", "run.log_every=1",
                              "run.monitor_every=0", "run.device=cpu"])


def test_ddp_always_wraps_one_process_in_ddp_and_trains_as_without(tiny_shards, tmp_path, monkeypatch):
    """$BRAINJEPA_DDP=always, one process and no torchrun: the trainer joins a Gloo group of one, wraps encoder and
    predictor in DistributedDataParallel, all-reduces, and saves on rank 0, with the single process's losses and
    weights; unset, no group and no wrapper."""
    import pandas as pd

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(DDP_ENV, raising=False)
    plain = Trainer(_config(tiny_shards, tmp_path / "plain"))
    assert not plain.ddp and not dist.is_initialized()
    assert not isinstance(plain.online[0], torch.nn.parallel.DistributedDataParallel)
    plain.fit()
    monkeypatch.setenv(DDP_ENV, "always")
    try:
        wrapped = Trainer(_config(tiny_shards, tmp_path / "ddp"))
        assert wrapped.ddp and dist.get_backend() == "gloo" and dist.get_world_size() == 1
        assert all(isinstance(m, torch.nn.parallel.DistributedDataParallel) for m in wrapped.online)
        wrapped.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    losses = [pd.read_csv(tmp_path / name / "log.csv")["loss"].to_numpy() for name in ("plain", "ddp")]
    assert len(losses[0]) == 10
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-5, atol=0)
    a, b = (ckpt.load_checkpoint(tmp_path / name / "final.pt") for name in ("plain", "ddp"))
    for key, value in a["encoder"].items():
        torch.testing.assert_close(b["encoder"][key], value, rtol=1e-4, atol=1e-5)


def test_a_bad_ddp_switch_names_the_variable(monkeypatch):
    monkeypatch.setenv(DDP_ENV, "yes")
    with pytest.raises(InputError, match="BRAINJEPA_DDP='yes' is not one of auto, always"):
        ddp_always()
    for value in ("", "auto", " always "):
        monkeypatch.setenv(DDP_ENV, value)
        assert ddp_always() is (value.strip() == "always")
    assert os.environ[DDP_ENV] == " always "
