"""Pretraining: schedules, EMA, config, the loop on tiny shards, exact resume, failure modes."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from brainjepa.data.shards import build_shards
from brainjepa.errors import InputError, TrainingError
from brainjepa.group.gradients import write_gradients
from brainjepa.group.scaling import ScalingStats, write_scaling_stats
from brainjepa.io import write_timeseries
from brainjepa.train import checkpoint as ckpt
from brainjepa.train.config import load_config
from brainjepa.train.ema import ema_update
from brainjepa.train.jepa import masked_loss, normalize_targets
from brainjepa.train.pretrain import Trainer, pretrain
from brainjepa.train.schedules import cosine_ramp, ema_momentum, warmup_cosine

R, T, WINDOW = 12, 48, 32


# ------------------------------------------------------------------------------------------- schedules
def test_warmup_cosine_end_points():
    assert warmup_cosine(0, 100, 10, 5e-5, 1e-3, 1e-6) == pytest.approx(5e-5)
    assert warmup_cosine(10, 100, 10, 5e-5, 1e-3, 1e-6) == pytest.approx(1e-3)
    assert warmup_cosine(100, 100, 10, 5e-5, 1e-3, 1e-6) == pytest.approx(1e-6)
    assert warmup_cosine(55, 100, 10, 5e-5, 1e-3, 1e-6) == pytest.approx((1e-3 + 1e-6) / 2)
    values = [warmup_cosine(s, 100, 10, 5e-5, 1e-3, 1e-6) for s in range(101)]
    assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:]) <= 0)


def test_weight_decay_and_momentum_end_points():
    assert cosine_ramp(0, 50, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_ramp(50, 50, 0.04, 0.4) == pytest.approx(0.4)
    assert ema_momentum(0, 80, 0.996, 1.0) == pytest.approx(0.996)
    assert ema_momentum(80, 80, 0.996, 1.0) == pytest.approx(1.0)
    # the public code: sized per iteration, stepped per optimizer step -> 1/8 of the way with 8 accumulations
    assert ema_momentum(80, 80, 0.996, 1.0, "code", 8) == pytest.approx(0.996 + 0.004 / 8)
    with pytest.raises(ValueError):
        ema_momentum(1, 2, 0.9, 1.0, "other")


def test_ema_arithmetic():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    frozen = [p.detach().clone() for p in target.parameters()]
    ema_update(target, online, 1.0)  # momentum 1: frozen
    for f, t in zip(frozen, target.parameters()):
        torch.testing.assert_close(t, f, rtol=0, atol=0)
    ema_update(target, online, 0.0)  # momentum 0: copy
    for t, o in zip(target.parameters(), online.parameters()):
        torch.testing.assert_close(t, o)


def test_masked_loss_ignores_padding():
    pred, target = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    target[:, 2] = 100.0  # padded slots
    valid = torch.tensor([[True, True, False], [True, True, False]])
    assert masked_loss(pred, target, valid, "mse").item() == pytest.approx(1.0)
    assert masked_loss(pred, target, valid, "smooth_l1").item() == pytest.approx(0.5)


def test_target_normalisation():
    h = torch.randn(5, 7, 8) * 3 + torch.randn(1, 7, 8) * 10  # per-position offsets shared by the batch
    layer, spread = normalize_targets(h, "layer")
    assert torch.allclose(layer, torch.nn.functional.layer_norm(h, (8,)))
    assert spread == pytest.approx(layer.std(dim=0).mean().item())
    centered, spread_centered = normalize_targets(h, "layer_centered")
    assert spread_centered == spread  # the monitor is on the layer-normed features either way
    assert torch.allclose(centered.mean(-1), torch.zeros(5, 7), atol=1e-5)   # layer-normed per token
    assert torch.allclose(centered.var(-1, unbiased=False), torch.ones(5, 7), atol=1e-2)
    # only what differs between samples survives: a batch of identical samples (all of it "positional")
    # leaves nothing, and the collapse monitor reads 0
    same, spread_same = normalize_targets(h[:1].expand(5, -1, -1), "layer_centered")
    assert same.abs().max() < 1e-2 and spread_same.item() == 0.0
    with pytest.raises(InputError, match="at least 2 samples"):
        normalize_targets(h[:1], "layer_centered")
    with pytest.raises(InputError, match="target_norm"):
        normalize_targets(h, "batch")


def test_config_choices_are_checked_at_load():
    with pytest.raises(InputError, match=r"optim.target_norm is 'batch'; allowed: layer, layer_centered"):
        load_config(None, ["optim.target_norm=batch"])
    with pytest.raises(InputError, match=r"optim.loss is 'l1'"):
        load_config(None, ["optim.loss=l1"])
    assert load_config(None, ["optim.target_norm=layer_centered"]).optim.target_norm == "layer_centered"


def test_config_unknown_keys_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  epochs: 3\n  lrr: 0.1\n")
    with pytest.raises(InputError, match=r"c.yaml: unknown key\(s\) optim.lrr; allowed in 'optim'"):
        load_config(path)
    path.write_text("optim:\n  epochs: 3\n")
    cfg = load_config(path, ["optim.lr=0.5", "model.size=small", "optim.betas=[0.8, 0.9]"])
    assert cfg.optim.epochs == 3 and cfg.optim.lr == 0.5 and cfg.model.size == "small"
    assert cfg.optim.betas == (0.8, 0.9)


# ------------------------------------------------------------------------------------------- the loop
def _make_data(root, n_rois: int, n_time: int, n_runs: int, window: int, monitor: int = 0):
    """Shards of ``n_runs`` runs (n_rois x n_time, planted structure; units of 4 rows), gradients, statistics;
    ``monitor`` of the subjects in split ``monitor`` (data.shards.monitor_subjects_of) instead of ``pretrain``."""
    rng = np.random.default_rng(0)
    names = [f"roi{i}" for i in range(n_rois)]
    mixing = rng.normal(size=(3, n_rois))
    rows = []
    for i in range(n_runs):
        data = rng.normal(size=(n_time, 3)) @ mixing + 0.5 * rng.normal(size=(n_time, n_rois))
        path = root / "runs" / f"r{i:02d}.parquet"
        write_timeseries(data.astype(np.float32), names, path, {"tr": 2.0})
        rows.append({"run_id": f"c/sub-{i:02d}_ses-1_run-1", "cohort": "c", "subject": f"{i:02d}", "session": "1",
                     "run": "1", "split": "pretrain", "path": str(path)})
    frame = pd.DataFrame(rows)
    if monitor:
        from brainjepa.data.shards import monitor_subjects_of

        held = monitor_subjects_of(frame, monitor)
        frame.loc[[("c", subject) in held for subject in frame["subject"]], "split"] = "monitor"
    stats = ScalingStats("subject_mean", tuple(names), np.zeros(n_rois), np.ones(n_rois), n_runs)
    write_scaling_stats(stats, root / "stats.json")
    build_shards(frame, stats, root / "shards", window=window, rows_per_row_group=4)
    write_gradients(rng.normal(size=(n_rois, 4)), np.linspace(1, 0.5, 4), names, root / "gradients.tsv")
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Shards of 24 runs (12 ROIs x 48 steps) with planted structure, gradients and statistics."""
    return _make_data(tmp_path_factory.mktemp("train"), R, T, 24, WINDOW)


def _cfg(root, out, *extra):
    sets = [f"data.manifest={root / 'shards' / 'manifest.json'}", f"data.gradients={root / 'gradients.tsv'}",
            f"data.scaling_stats={root / 'stats.json'}", f"run.out_dir={out}", f"data.window={WINDOW}",
            "data.batch_size=4", "data.num_workers=0", "optim.epochs=2", "optim.warmup_epochs=1",
            "model.size=tiny", "model.drop_path=0.1", "run.progress=false", "run.log_every=1",
            "run.checkpoint_every=1", *extra]
    return load_config(None, sets)


def test_loss_falls_and_checkpoints_are_written(tiny_data, tmp_path):
    final = pretrain(_cfg(tiny_data, tmp_path / "run", "optim.epochs=6", "optim.lr=3e-3"))
    assert final.name == "final.pt"
    for name in ("latest.pt", "epoch-0001.pt", "epoch-0006.pt", "config.yaml", "log.csv"):
        assert (tmp_path / "run" / name).exists(), name
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert log["step"].tolist() == list(range(1, 6 * 6 + 1))
    assert log["loss"].iloc[-3:].mean() < log["loss"].iloc[:3].mean()
    assert (log["target_std"] > 0.05).all() and np.isfinite(log["lr"]).all()
    state = ckpt.load_checkpoint(final)
    assert state["step"] == 36 and state["epoch"] == 6 and state["scaling_stats_id"]
    assert torch.load(final, weights_only=True)["format"] == ckpt.FORMAT


def _states_equal(a: dict, b: dict) -> None:
    for module in ckpt.MODULES:
        assert a[module].keys() == b[module].keys()
        for key in a[module]:
            assert torch.equal(a[module][key], b[module][key]), (module, key)


def test_exact_resume_mid_epoch(tiny_data, tmp_path):
    """2N steps in one go == N steps, stop, resume, N more steps (bitwise on CPU)."""
    straight = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, tmp_path / "a")))
    stopped = pretrain(_cfg(tiny_data, tmp_path / "b", "run.stop_after_steps=4"))  # 6 steps per epoch: mid-epoch
    assert stopped.name == "latest.pt" and ckpt.load_checkpoint(stopped)["batch_in_epoch"] == 4
    resumed = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, tmp_path / "b")))
    assert resumed["step"] == straight["step"] == 12
    _states_equal(straight, resumed)
    assert torch.equal(straight["optimizer"]["state"][0]["exp_avg"], resumed["optimizer"]["state"][0]["exp_avg"])
    log_a = pd.read_csv(tmp_path / "a" / "log.csv")
    log_b = pd.read_csv(tmp_path / "b" / "log.csv")
    assert log_b["step"].tolist() == log_a["step"].tolist()
    np.testing.assert_array_equal(log_a["loss"], log_b["loss"])


def _folder(path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(path.iterdir())}


def test_changed_identity_starts_a_new_run_and_keeps_the_old(tiny_data, tmp_path):
    """A rerun with another config (or data) trains from step 0; the old run is moved aside, never mixed."""
    pretrain(_cfg(tiny_data, tmp_path / "c", "run.stop_after_steps=2"))
    old = _folder(tmp_path / "c")
    final = pretrain(_cfg(tiny_data, tmp_path / "c", "optim.lr=0.5"))
    assert _folder(tmp_path / "c.replaced-1") == old
    assert ckpt.load_checkpoint(final)["step"] == 12
    assert pd.read_csv(tmp_path / "c" / "log.csv")["step"].tolist() == list(range(1, 13))
    assert "lr: 0.5" in (tmp_path / "c" / "config.yaml").read_text()


def test_finished_run_is_not_trained_again_unless_restarted(tiny_data, tmp_path):
    out = tmp_path / "done"
    first = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, out)))
    log = (out / "log.csv").read_text()
    assert pretrain(_cfg(tiny_data, out, "run.progress=true")) == out / "final.pt"  # a resumable change only
    assert (out / "log.csv").read_text() == log and not (tmp_path / "done.replaced-1").exists()
    again = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, out), restart=True))
    assert (tmp_path / "done.replaced-1" / "final.pt").exists()
    assert pd.read_csv(out / "log.csv")["step"].tolist() == list(range(1, 13))
    _states_equal(first, again)  # the same identity trains the same model
    (out / "final.pt").unlink()  # what Snakemake does before it reruns the rule (--forcerun pretrain)
    pretrain(_cfg(tiny_data, out))
    assert (tmp_path / "done.replaced-2" / "latest.pt").exists() and (out / "final.pt").exists()


def test_refused_resume_changes_nothing(tiny_data, tmp_path):
    out = tmp_path / "r"
    pretrain(_cfg(tiny_data, out, "run.stop_after_steps=2"))
    (out / "latest.pt").write_bytes(b"truncated")
    before = _folder(out)
    with pytest.raises(InputError, match=r"latest.pt: cannot read checkpoint.*; no epoch-\*.pt beside it"):
        pretrain(_cfg(tiny_data, out, "optim.lr=0.5"))
    assert _folder(out) == before


def test_an_unreadable_latest_points_at_the_epoch_checkpoints(tiny_data, tmp_path):
    out = tmp_path / "e"
    pretrain(_cfg(tiny_data, out, "optim.epochs=2"))
    (out / "latest.pt").write_bytes(b"truncated by a full disk")
    with pytest.raises(InputError, match=r"latest.pt: cannot read checkpoint.*: epoch-0001.pt, epoch-0002.pt; "
                                         "copy the newest over latest.pt to resume from it"):
        pretrain(_cfg(tiny_data, out, "optim.epochs=2"))


def test_workers_give_the_epoch_of_one_process(tiny_data, tmp_path):
    """2 DataLoader workers, 24 runs in units of 4, batch 7: every epoch completes (3 batches), bitwise as 0 workers."""
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        runs[workers] = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, out, "data.batch_size=7",
                                                           f"data.num_workers={workers}")))
        assert pd.read_csv(out / "log.csv")["step"].tolist() == [1, 2, 3, 4, 5, 6]
    _states_equal(runs[0], runs[2])


def test_resume_with_another_worker_count_reproduces_the_epoch(tiny_data, tmp_path):
    straight = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, tmp_path / "a", "data.batch_size=7")))
    pretrain(_cfg(tiny_data, tmp_path / "b", "data.batch_size=7", "run.stop_after_steps=2"))
    resumed = pretrain(_cfg(tiny_data, tmp_path / "b", "data.batch_size=7", "data.num_workers=2"))
    _states_equal(straight, ckpt.load_checkpoint(resumed))


def _cli(tiny_data, out, *extra):
    import sys

    sets = [f"data.manifest={tiny_data / 'shards' / 'manifest.json'}", f"data.gradients={tiny_data / 'gradients.tsv'}",
            f"run.out_dir={out}", f"data.window={WINDOW}", "data.batch_size=4", "data.num_workers=0",
            "optim.epochs=2", "optim.warmup_epochs=1", "model.size=tiny", "model.drop_path=0.1",
            "run.progress=false", "run.log_every=1", "run.checkpoint_every=1", *extra]
    return [sys.executable, "-m", "brainjepa.cli", "pretrain", *[arg for s in sets for arg in ("--set", s)]]


def test_sigterm_writes_latest_and_the_rerun_ends_as_an_uninterrupted_run(tiny_data, tmp_path):
    """SIGTERM mid-epoch: the step finishes, latest.pt is written, exit 75; the rerun continues bitwise."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.run(_cli(tiny_data, tmp_path / "a"), env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "b"
    proc = subprocess.Popen(_cli(tiny_data, out), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for the third optimizer step in the log (6 per epoch)
        if (out / "log.csv").exists() and len((out / "log.csv").read_text().splitlines()) > 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "signal 15" in err and "latest.pt written" in err
    stopped = ckpt.load_checkpoint(out / "latest.pt")
    assert 3 <= stopped["step"] < 12 and not (out / "final.pt").exists()
    resumed = subprocess.run(_cli(tiny_data, out), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _states_equal(ckpt.load_checkpoint(tmp_path / "a" / "final.pt"), ckpt.load_checkpoint(out / "final.pt"))
    log = pd.read_csv(out / "log.csv")
    assert log["step"].tolist() == list(range(1, 13))  # every step once, from 1


def test_runs_at_two_threads_are_bitwise_identical(tmp_path):
    """Three runs, one seed, 2 threads: equal bits. 64 ROIs x 4 patches: big enough for the CPU backward of
    indexing to split its accumulation over threads (it did with ``pos[idx]`` in the predictor)."""
    data = _make_data(tmp_path / "data", 64, 64, 16, 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        states = [ckpt.load_checkpoint(pretrain(_cfg(data, tmp_path / f"t{i}", "data.batch_size=8",
                                                     "data.window=64"))) for i in range(3)]
    finally:
        torch.set_num_threads(threads)
    _states_equal(states[0], states[1])
    _states_equal(states[0], states[2])


def test_non_finite_loss_stops_the_run(tiny_data, tmp_path, monkeypatch):
    from brainjepa.train import jepa

    original = jepa.masked_loss
    monkeypatch.setattr(jepa, "masked_loss", lambda *a: original(*a) * float("nan"))
    with pytest.raises(TrainingError, match="non-finite loss .* at step 0"):
        pretrain(_cfg(tiny_data, tmp_path / "d"))


def test_centered_targets_train(tiny_data, tmp_path):
    pretrain(_cfg(tiny_data, tmp_path / "c", "optim.target_norm=layer_centered", "optim.epochs=3"))
    log = pd.read_csv(tmp_path / "c" / "log.csv")
    assert np.isfinite(log["loss"]).all() and (log["target_std"] > 0.05).all()


def test_collapse_monitor_warns(tiny_data, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="brainjepa.train"):
        pretrain(_cfg(tiny_data, tmp_path / "e", "run.collapse_threshold=10.0", "optim.epochs=1"))
    assert "possible representation collapse" in caplog.text


def test_gradient_names_must_match_shards(tiny_data, tmp_path):
    names = [f"other{i}" for i in range(R)]
    write_gradients(np.zeros((R, 4)) + np.arange(R)[:, None], np.ones(4), names, tmp_path / "g.tsv")
    with pytest.raises(InputError, match="ROI names/order differ"):
        Trainer(_cfg(tiny_data, tmp_path / "f", f"data.gradients={tmp_path / 'g.tsv'}"))


def test_config_types_are_checked():
    assert load_config(None, ["optim.lr=3e-3"]).optim.lr == pytest.approx(3e-3)
    with pytest.raises(InputError, match="'optim.epochs': expected an integer"):
        load_config(None, ["optim.epochs=ten"])
    with pytest.raises(InputError, match="'run.stop_after_steps': expected an integer"):
        load_config(None, ["run.stop_after_steps=2.5"])


def test_bf16_autocast_path_runs_on_cpu(tiny_data, tmp_path):
    """The GPU path's autocast (bf16) exercised on the CPU: same code, finite loss, fp32 master weights."""
    final = pretrain(_cfg(tiny_data, tmp_path / "bf16", "run.precision=bf16", "optim.epochs=1"))
    log = pd.read_csv(tmp_path / "bf16" / "log.csv")
    assert np.isfinite(log["loss"]).all()
    state = ckpt.load_checkpoint(final)
    assert all(v.dtype == torch.float32 for v in state["encoder"].values() if v.is_floating_point())


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from brainjepa.train.config import load_config
from brainjepa.train.pretrain import Trainer
trainer = Trainer(load_config(None, sys.argv[2:]))
trainer.fit()
modules = {"encoder": trainer.encoder, "target_encoder": trainer.target, "predictor": trainer.predictor}
torch.save({name: m.state_dict() for name, m in modules.items()}, f"{sys.argv[1]}/rank{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


def test_ddp_replicas_agree_and_equal_one_process_with_the_global_batch(tmp_path):
    """Two processes (Gloo) through torchrun with batch 2, on 20 runs in 5 units (units do not divide over the
    ranks): every rank ends with the same encoder, target and predictor, and the run equals one process with
    batch 4 (the same samples, masks and loss per step) to float tolerance."""
    import os
    import subprocess
    import sys

    data = _make_data(tmp_path / "data", R, T, 20, WINDOW)
    script = tmp_path / "ddp_ranks.py"
    script.write_text(DDP_SCRIPT)
    sets = [f"data.manifest={data / 'shards' / 'manifest.json'}", f"data.gradients={data / 'gradients.tsv'}",
            f"data.window={WINDOW}", "data.num_workers=0", "optim.epochs=2", "optim.warmup_epochs=1",
            "model.size=tiny", "run.progress=false", "run.log_every=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path), *sets, f"run.out_dir={tmp_path / 'ddp'}", "data.batch_size=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = ckpt.load_checkpoint(tmp_path / "ddp" / "final.pt")
    assert ddp["step"] == ddp["total_steps"] == 10  # 20 samples / global batch 4, 2 epochs
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    _states_equal(*ranks)
    _states_equal(ranks[0], ddp)
    single = ckpt.load_checkpoint(pretrain(load_config(None, [*sets, f"run.out_dir={tmp_path / 'one'}",
                                                               "data.batch_size=4"])))
    losses = [pd.read_csv(tmp_path / name / "log.csv")["loss"].to_numpy() for name in ("ddp", "one")]
    np.testing.assert_allclose(*losses, rtol=1e-5)  # every step's loss (measured: equal to the 6 digits logged)
    # Adam divides by sqrt(v): where a gradient is ~0, reduction-order differences (1e-7) become visible in the
    # update; measured at most 2.5e-4 after 10 steps at lr 1e-3 (an update is up to 1e-3 per step).
    for module in ckpt.MODULES:
        for key, value in single[module].items():
            torch.testing.assert_close(ddp[module][key], value, rtol=0, atol=1e-3, msg=f"{module}.{key}")


# ------------------------------------------------------------------------------------------- the MAE baseline
def test_random_masks_split_every_sample_into_visible_and_hidden():
    from brainjepa.train.mask_config import MaskConfig
    from brainjepa.train.masks import MaskCollator

    collator = MaskCollator(12, 2, MaskConfig(mode="random", mask_ratio=0.75), seed=3)
    masks = collator.masks_for(4, epoch=0, step=0)
    assert masks["context_idx"].shape == (4, 6) and masks["target_idx"].shape == (4, 18)
    for ctx, tgt in zip(masks["context_idx"], masks["target_idx"]):
        assert sorted(ctx.tolist() + tgt.tolist()) == list(range(24))       # disjoint and covering
    assert masks["context_valid"].all() and masks["target_valid"].all()
    again = collator.masks_for(4, epoch=0, step=0)
    assert torch.equal(again["target_idx"], masks["target_idx"])           # a pure function of the step
    assert not torch.equal(collator.masks_for(4, epoch=0, step=1)["target_idx"], masks["target_idx"])
    with pytest.raises(InputError, match="mask_ratio"):
        MaskConfig(mode="random", mask_ratio=1.0)


def test_mae_objective_trains_with_the_same_engine(tiny_data, tmp_path):
    from brainjepa.train.jepa import patch_targets

    final = pretrain(_cfg(tiny_data, tmp_path / "mae", "objective=mae", "mask.mode=random", "optim.epochs=4",
                          "optim.lr=3e-3"))
    log = pd.read_csv(tmp_path / "mae" / "log.csv")
    assert log["loss"].iloc[-3:].mean() < log["loss"].iloc[:3].mean()
    state = ckpt.load_checkpoint(final)
    for key, value in state["encoder"].items():                              # no EMA: the encoder is the target
        assert torch.equal(value, state["target_encoder"][key]), key
    assert state["predictor"]["proj.weight"].shape[0] == 16                   # the decoder predicts raw patches
    x = torch.arange(2 * 3 * 32, dtype=torch.float32).reshape(2, 1, 3, 32)
    assert torch.equal(patch_targets(x, 16)[0, 1], x[0, 0, 0, 16:32])          # token roi * W + t
    with pytest.raises(InputError, match="mae objective reconstructs with mse"):
        _cfg(tiny_data, tmp_path / "x", "objective=mae", "optim.loss=smooth_l1")


# ------------------------------------------------------------------------------------------- messages
@pytest.mark.parametrize("extra,match", [
    (["data.batch_size=64"], r"split 'pretrain' has 24 windows \(one per run each epoch\), fewer than one "
                             r"optimizer step of 64 \(batch 64\); lower data.batch_size to at most 24"),
    (["data.batch_size=4", "optim.accumulation_steps=8"],
     r"has 24 windows .*fewer than one optimizer step of 32 \(batch 4 x 8 accumulation\); lower "
     r"data.batch_size to at most 3"),
    (["data.batch_size=2", "optim.accumulation_steps=32"],
     r"fewer than one optimizer step of 64 \(batch 2 x 32 accumulation\); lower optim.accumulation_steps to at "
     r"most 12"),
])
def test_a_batch_larger_than_the_split_names_its_windows(tiny_data, tmp_path, extra, match):
    with pytest.raises(InputError, match=match) as info:
        Trainer(_cfg(tiny_data, tmp_path / "big", *extra))
    assert "manifest.json" in str(info.value) and "samples for this rank" not in str(info.value)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 298752 vs 298640"),
    OSError(28, "No space left on device"),
])
def test_a_full_disk_while_saving_names_the_checkpoint_and_keeps_the_old_one(tiny_data, tmp_path, monkeypatch,
                                                                             error):
    out = tmp_path / "full"
    pretrain(_cfg(tiny_data, out, "run.stop_after_steps=2"))
    before = (out / "latest.pt").read_bytes()

    def fail(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise error

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(TrainingError) as info:
        pretrain(_cfg(tiny_data, out))
    message = str(info.value)
    assert f"{out / 'latest.pt'}: cannot write the checkpoint" in message
    assert re.search(r"disk full or file size limit \(\d+ bytes \([\d.]+ [kMG]?B\) free on .*; the checkpoint is "
                     r"about [\d.]+ [kMG]?B\)", message), message
    assert "the previous latest.pt is intact (step 2)" in message and "free space" in message
    assert "inline_container" not in message
    assert (out / "latest.pt").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_a_log_of_older_columns_is_rewritten_with_the_new_header_and_identity_defaults_match(tmp_path):
    """A run resumed after a column was added (regularizer) keeps one width per row; a setting added since a
    checkpoint's identity was written counts as its default, so the run resumes instead of starting afresh."""
    import csv

    from brainjepa.train.log import LOG_COLUMNS, CSVLog
    from brainjepa.train.pretrain import identity_changes

    path = tmp_path / "log.csv"
    old = [c for c in LOG_COLUMNS if c != "regularizer"]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([old, [str(i) for i in range(len(old))]])
    CSVLog(path, True).write({"step": 2, "loss": 0.5, "regularizer": 0.1})
    table = pd.read_csv(path)
    assert table.columns.tolist() == LOG_COLUMNS and len(table) == 2
    assert np.isnan(table["regularizer"].iloc[0]) and table["regularizer"].iloc[1] == pytest.approx(0.1)
    new = {"config": {"optim.lr": 1e-3, "optim.regularizer": "none", "optim.regularizer_weight": 0.0},
           "data": {"shards": ["a"]}}
    older = {"config": {"optim.lr": 1e-3}, "data": {"shards": ["a"]}}
    assert identity_changes(older, new) == []
    assert identity_changes(older, {**new, "config": {**new["config"], "optim.regularizer": "sigreg"}}) == [
        "config optim.regularizer"]


def test_an_identity_written_before_a_setting_became_runtime_only_still_resumes():
    """model.attention was part of a run's identity before it became a runtime choice: a checkpoint that still
    records it resumes (the setting is not compared), whatever this machine's backend."""
    from brainjepa.train.pretrain import RESUMABLE_CHANGES, identity_changes

    assert "model.attention" in RESUMABLE_CHANGES
    new = {"config": {"optim.lr": 1e-3}, "data": {"shards": ["a"]}}
    older = {"config": {"optim.lr": 1e-3, "model.attention": "sdpa"}, "data": {"shards": ["a"]}}
    assert identity_changes(older, new) == []
    assert identity_changes({**older, "config": {**older["config"], "optim.lr": 2e-3}}, new) == ["config optim.lr"]


def test_sigterm_to_the_whole_process_group_with_data_workers_still_writes_latest(tiny_data, tmp_path):
    """Slurm signals every process of the job step, the DataLoader workers too: they died, torch's SIGCHLD handler
    raised `DataLoader worker ... killed by signal: Terminated`, and the trainer exited 1 without latest.pt. The
    workers now ignore SIGTERM and SIGINT; the trainer finishes its step, writes latest.pt and exits 75."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "group"
    proc = subprocess.Popen(_cli(tiny_data, out, "data.num_workers=2"), env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # the second optimizer step is logged: the workers are up
        if (out / "log.csv").exists() and len((out / "log.csv").read_text().splitlines()) > 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "killed by signal" not in err and "latest.pt written" in err
    assert 2 <= ckpt.load_checkpoint(out / "latest.pt")["step"] < 12


# ------------------------------------------------------------------------------------------- the GPU route (CPU)
def test_accumulation_logs_the_mean_of_its_micro_batches(tiny_data, tmp_path, monkeypatch):
    """With accumulation, a log row's loss (and region losses) is the mean over the step's micro-batches, what the
    step minimised; it was the last micro-batch's."""
    import brainjepa.train.pretrain as pretrain_module

    seen = []
    step = pretrain_module.jepa_step

    def recording(*args, **kwargs):
        loss, monitors = step(*args, **kwargs)
        seen.append((loss.item(), monitors["loss_alpha"].item()))
        return loss, monitors

    monkeypatch.setattr(pretrain_module, "jepa_step", recording)
    pretrain(_cfg(tiny_data, tmp_path / "acc", "optim.accumulation_steps=3", "optim.epochs=1"))
    log = pd.read_csv(tmp_path / "acc" / "log.csv")
    assert len(seen) == 6 and log["step"].tolist() == [1, 2]  # 24 windows, batch 4: 6 micro-batches, 2 steps
    pairs = np.array(seen).reshape(2, 3, 2)
    np.testing.assert_allclose(log["loss"], pairs[:, :, 0].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(log["loss_alpha"], np.nanmean(pairs[:, :, 1], axis=1), rtol=1e-5)
    assert not np.allclose(log["loss"], pairs[:, -1, 0], rtol=1e-5)


def test_latest_is_written_every_save_every_minutes_and_with_each_epoch_checkpoint(tiny_data, tmp_path, monkeypatch):
    """run.save_every_minutes: latest.pt after the first optimizer step that long after its last write (0: every
    step), with each epoch-NNNN.pt, at a stop and at the end; no longer at every epoch end (a 1.5 GB write)."""
    saved = []
    write = ckpt.save_checkpoint

    def recording(path, state, intact=None):
        saved.append((path.name, state["step"]))
        write(path, state, intact)

    monkeypatch.setattr(ckpt, "save_checkpoint", recording)
    pretrain(_cfg(tiny_data, tmp_path / "never", "run.checkpoint_every=10", "run.save_every_minutes=1000"))
    assert saved == [("latest.pt", 12), ("final.pt", 12)]  # 2 epochs of 6 steps
    saved.clear()
    pretrain(_cfg(tiny_data, tmp_path / "epochs", "run.save_every_minutes=1000"))  # run.checkpoint_every=1
    assert saved == [("latest.pt", 6), ("epoch-0001.pt", 6), ("latest.pt", 12), ("epoch-0002.pt", 12),
                     ("final.pt", 12)]
    saved.clear()
    pretrain(_cfg(tiny_data, tmp_path / "always", "run.checkpoint_every=10", "run.save_every_minutes=0"))
    assert saved == [("latest.pt", s) for s in range(1, 13)] + [("final.pt", 12)]  # latest.pt once per step
    trainer = Trainer(_cfg(tiny_data, tmp_path / "clock", "run.save_every_minutes=30"))
    assert trainer.step_flags() == (False, False)
    trainer.saved_at -= 30 * 60
    assert trainer.step_flags() == (False, True)
    with pytest.raises(InputError, match="run.save_every_minutes"):
        _cfg(tiny_data, tmp_path / "x", "run.save_every_minutes=-1")


def test_a_checkpoint_of_an_older_brainjepa_still_resumes_exactly(tiny_data, tmp_path):
    """A latest.pt without the settings added since (TF32, fused AdamW, pinned memory, save_every_minutes), without
    `global_batch` and with the old generator state (rank 0's CPU generator) resumes, bitwise as a run in one go."""
    straight = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, tmp_path / "a")))
    out = tmp_path / "b"
    pretrain(_cfg(tiny_data, out, "run.stop_after_steps=4"))
    state = ckpt.load_checkpoint(out / "latest.pt")
    new_keys = ("run.tf32", "optim.fused", "data.pin_memory", "run.save_every_minutes")
    assert not set(new_keys) & set(state["identity"]["config"])  # runtime-only: not in a run's identity
    state["identity"]["config"] = {k: v for k, v in state["identity"]["config"].items() if k not in new_keys}
    for key in ("tf32", "save_every_minutes"):
        state["config"]["run"].pop(key)
    state.pop("global_batch")
    state["rng"] = {"torch": state["rng"]["ranks"][0]["torch"]}
    ckpt.save_checkpoint(out / "latest.pt", state)
    resumed = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, out)))
    assert not (tmp_path / "b.replaced-1").exists() and resumed["step"] == 12
    _states_equal(straight, resumed)


def test_deterministic_sets_the_cublas_workspace_it_needs(tiny_data, tmp_path, monkeypatch):
    """run.deterministic on a GPU raised at the first cuBLAS matmul: CUBLAS_WORKSPACE_CONFIG must be set before
    CUDA starts. The trainer sets :4096:8 when it is unset, and keeps a value of the user's."""
    import os

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # restored (or removed) after the test
    try:
        Trainer(_cfg(tiny_data, tmp_path / "d", "run.deterministic=true"))
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and torch.are_deterministic_algorithms_enabled()
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        Trainer(_cfg(tiny_data, tmp_path / "d", "run.deterministic=true"))
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_local_rank_without_its_gpu_names_processes_and_gpus(monkeypatch):
    """4 processes on a node with 1 GPU: ranks 1-3 died in torch.cuda.set_device ("invalid device ordinal"). Now
    an error naming the two settings, before any CUDA call."""
    from brainjepa.train.runtime import setup_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail("set_device called"))
    for key, value in {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4",
                       "CUDA_VISIBLE_DEVICES": "0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(TrainingError, match=r"local rank 3 of 4 processes on this node needs GPU cuda:3, but this "
                                            r"process sees 1 GPU\(s\) \(CUDA_VISIBLE_DEVICES=0\).*pretrain.processes "
                                            r"or evaluate.processes.*pretrain.gpus or evaluate.gpus"):
        setup_distributed("auto")


def test_speed_switches_apply_on_a_gpu_device_only(tiny_data):
    """run.tf32 (TF32 matmuls and cuDNN), optim.fused (AdamW's fused kernel), data.pin_memory (page-locked
    batches): on for a CUDA device by default, off by their switch, and never on CPU (the CPU path is unchanged)."""
    from brainjepa.data.shards import load_manifest
    from brainjepa.train.config import OptimConfig
    from brainjepa.train.pretrain import adamw, build_loader
    from brainjepa.train.runtime import Distributed, set_tf32

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    precision, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        set_tf32(cpu, True)
        assert torch.get_float32_matmul_precision() == precision
        set_tf32(cuda, True)
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
        set_tf32(cuda, False)
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn
    params = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    assert adamw(params, OptimConfig(), cuda).defaults["fused"] is True
    assert not adamw(params, OptimConfig(), cpu).defaults["fused"]
    assert not adamw(params, OptimConfig(fused=False), cuda).defaults["fused"]
    root = tiny_data
    for extra, device, pinned in (([], cuda, True), ([], cpu, False), (["data.pin_memory=false"], cuda, False)):
        cfg = _cfg(root, root / "unused", *extra)
        loader = build_loader(cfg, load_manifest(cfg.data.manifest), Distributed(), WINDOW, 1, device)[2]
        assert loader.pin_memory is pinned


DDP_RESUME_SCRIPT = """
import sys, torch, torch.distributed as dist
from brainjepa.train.config import load_config
from brainjepa.train.pretrain import Trainer
out = sys.argv[1]
trainer = Trainer(load_config(None, sys.argv[2:]))
load = trainer.load
def loaded(state):  # this rank's generator right after the resume
    load(state)
    torch.save(torch.get_rng_state(), f"{out}/rank{dist.get_rank()}-resumed.pt")
trainer.load = loaded
trainer.fit()
torch.save(torch.get_rng_state(), f"{out}/rank{dist.get_rank()}-end.pt")  # after its last save
dist.destroy_process_group()
"""


def test_ddp_ranks_resume_their_own_generators_and_another_process_count_is_refused(tmp_path):
    """Two Gloo processes with drop path (per-rank draws): latest.pt holds each rank's generator, each rank gets its
    own back, and the resumed run equals one in one go bitwise. It was rank 0's only, restored on every rank (and
    every visible GPU's CUDA generator, an IndexError with fewer GPUs). A resume on 1 process (another global
    batch, hence other steps per epoch and schedules) is refused, naming both global batches, and changes nothing."""
    import os
    import shutil
    import subprocess
    import sys

    data = _make_data(tmp_path / "data", R, T, 20, WINDOW)
    script = tmp_path / "ddp_resume.py"
    script.write_text(DDP_RESUME_SCRIPT)
    sets = [f"data.manifest={data / 'shards' / 'manifest.json'}", f"data.gradients={data / 'gradients.tsv'}",
            f"data.window={WINDOW}", "data.num_workers=0", "optim.epochs=2", "optim.warmup_epochs=1",
            "model.size=tiny", "model.drop_path=0.2", "run.progress=false", "run.log_every=1", "data.batch_size=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(name: str, *extra: str) -> None:
        (tmp_path / name).mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(tmp_path / name), *sets, f"run.out_dir={tmp_path / name / 'run'}", *extra]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun("a")
    torchrun("b", "run.stop_after_steps=3")
    stopped = ckpt.load_checkpoint(tmp_path / "b" / "run" / "latest.pt")
    assert stopped["step"] == 3 and stopped["global_batch"] == {"batch_size": 2, "processes": 2,
                                                                "accumulation_steps": 1}
    ranks = stopped["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    for rank in (0, 1):
        assert torch.equal(ranks[rank]["torch"], torch.load(tmp_path / "b" / f"rank{rank}-end.pt"))
    shutil.copytree(tmp_path / "b" / "run", tmp_path / "c")
    before = _folder(tmp_path / "c")
    with pytest.raises(InputError, match=r"latest.pt: trained with a global batch of 4 \(batch 2 x 2 processes\); "
                                         r"this run's is 2 \(batch 2 x 1 process\).*Resume with 2 process\(es\)"):
        pretrain(load_config(None, [*sets, f"run.out_dir={tmp_path / 'c'}"]))
    assert _folder(tmp_path / "c") == before
    torchrun("b")
    for rank in (0, 1):
        assert torch.equal(ranks[rank]["torch"], torch.load(tmp_path / "b" / f"rank{rank}-resumed.pt"))
    _states_equal(ckpt.load_checkpoint(tmp_path / "a" / "run" / "final.pt"),
                  ckpt.load_checkpoint(tmp_path / "b" / "run" / "final.pt"))
