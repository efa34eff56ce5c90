"""The GPU route's speed switches, on CPU: torch.compile (run.compile), no host syncs on ordinary steps, and the
background write of latest.pt (run.async_save)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from test_pretrain import _cfg as _pretrain_cfg
from test_pretrain import _make_data

from brainjepa.errors import InputError, TrainingError
from brainjepa.train import checkpoint as ckpt
from brainjepa.train.config import load_config
from brainjepa.train.pretrain import RESUMABLE_CHANGES, Trainer, pretrain, run_identity

R, T, WINDOW = 12, 48, 32
SPEED_KEYS = ("run.compile", "run.compile_backend", "run.async_save")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Shards of 24 runs (12 ROIs x 48 steps), gradients and statistics: 6 optimizer steps of batch 4 an epoch."""
    return _make_data(tmp_path_factory.mktemp("speed"), R, T, 24, WINDOW)


def _cfg(root, out, *extra):
    """test_pretrain's tiny run config with paper-mode masks (their packed lengths vary from batch to batch)."""
    return _pretrain_cfg(root, out, "mask.mode=paper", *extra)


def _states_equal(a: dict, b: dict, exact: bool = True) -> None:
    for module in ckpt.MODULES:
        assert a[module].keys() == b[module].keys(), module
        for key in a[module]:
            if exact:
                assert torch.equal(a[module][key], b[module][key]), (module, key)
            else:
                torch.testing.assert_close(a[module][key], b[module][key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.fixture
def fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------- run.compile
def test_compile_trains_as_without_and_keeps_checkpoint_keys(tiny_data, tmp_path, fresh_dynamo):
    """run.compile (backend eager: no C++ compiler needed) under paper masks, drop path on: the same loss at every
    step as without compile (same seed), and a checkpoint whose keys are the uncompiled one's (in-place compile: no
    `_orig_mod.` prefix), which a plain BrainEncoder loads."""
    from brainjepa.models import BrainEncoder, ModelConfig

    plain = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, tmp_path / "plain", "optim.epochs=1")))
    trainer = Trainer(_cfg(tiny_data, tmp_path / "compiled", "optim.epochs=1", "run.compile=true",
                           "run.compile_backend=eager"))
    assert all(getattr(m, "_compiled_call_impl", None) is not None
               for m in (trainer.encoder, trainer.target, trainer.predictor))
    compiled = ckpt.load_checkpoint(trainer.fit())
    assert not any("_orig_mod" in key for module in ckpt.MODULES for key in compiled[module])
    _states_equal(plain, compiled, exact=False)
    losses = [pd.read_csv(tmp_path / name / "log.csv")["loss"].to_numpy() for name in ("plain", "compiled")]
    assert len(losses[0]) == 6
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
    encoder = BrainEncoder(ModelConfig.from_checkpoint(compiled["model_config"]),
                           torch.zeros(R, compiled["model_config"]["n_gradients"]))
    encoder.load_state_dict(compiled["target_encoder"])  # strict: every key, no prefix


def test_compile_does_not_recompile_every_step(tiny_data, tmp_path, fresh_dynamo):
    """Paper masks give each batch other context and target token counts (the packed lengths): with automatic
    dynamic shapes the models are compiled a few times in the first steps (static, then with those sizes as
    symbols; the encoder's code also without gradients, for the EMA target), and never again while the lengths go
    on changing."""
    from torch._dynamo.utils import counters

    trainer = Trainer(_cfg(tiny_data, tmp_path / "c", "run.compile=true", "run.compile_backend=eager",
                           "run.monitor_every=0"))
    counters.clear()
    graphs, lengths = [], []
    micro_step, optimizer_step = trainer.micro_step, trainer.optimizer_step

    def recording_micro(batch, last):
        lengths.append((tuple(batch["context_lengths"]), tuple(batch["target_lengths"])))
        return micro_step(batch, last)

    def recording_step(*args):
        optimizer_step(*args)
        graphs.append(counters["stats"]["unique_graphs"])

    trainer.micro_step, trainer.optimizer_step = recording_micro, recording_step
    trainer.fit()
    assert len(graphs) == 12
    assert len(set(lengths[4:])) == 8 and len({sum(c) for c, _ in lengths[4:]}) >= 4  # the later steps' shapes vary
    assert graphs[4] == graphs[-1]          # nothing compiled over steps 5-12
    assert 0 < graphs[-1] <= 16, graphs     # encoder, target and predictor: a bounded number of graphs in all


def test_compile_is_a_runtime_choice_a_run_resumes_across(tiny_data, tmp_path, fresh_dynamo):
    """run.compile, run.compile_backend and run.async_save are not in a run's identity (as the attention backend):
    a run stopped with compile on resumes with it off, and ends as the uncompiled run in one go."""
    from brainjepa.data.shards import load_manifest

    cfg = _cfg(tiny_data, tmp_path / "x", "run.compile=true", "run.compile_backend=aot_eager",
               "run.async_save=false")
    assert set(SPEED_KEYS) <= RESUMABLE_CHANGES
    assert not set(SPEED_KEYS) & set(run_identity(cfg, load_manifest(cfg.data.manifest))["config"])
    straight = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, tmp_path / "a")))
    out = tmp_path / "b"
    pretrain(_cfg(tiny_data, out, "run.compile=true", "run.compile_backend=eager", "run.stop_after_steps=4"))
    resumed = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, out)))
    assert not (tmp_path / "b.replaced-1").exists() and resumed["step"] == 12
    assert pd.read_csv(out / "log.csv")["step"].tolist() == list(range(1, 13))
    _states_equal(straight, resumed, exact=False)


def test_compile_covers_the_mae_objective(tiny_data, tmp_path, fresh_dynamo):
    """objective mae: the encoder (which is also the saved target encoder) and the decoder are compiled, once each,
    and train as without compile."""
    extra = ("objective=mae", "mask.mode=random", "optim.epochs=1")
    plain = pd.read_csv(pretrain(_cfg(tiny_data, tmp_path / "plain", *extra)).parent / "log.csv")["loss"]
    trainer = Trainer(_cfg(tiny_data, tmp_path / "mae", *extra, "run.compile=true", "run.compile_backend=eager"))
    assert trainer.target is trainer.encoder
    assert trainer.encoder._compiled_call_impl is not None and trainer.predictor._compiled_call_impl is not None
    trainer.fit()
    np.testing.assert_allclose(pd.read_csv(tmp_path / "mae" / "log.csv")["loss"], plain, rtol=1e-6)


def test_a_compile_backend_is_checked_at_load():
    assert load_config(None, ["run.compile=true", "run.compile_backend=eager"]).run.compile_backend == "eager"
    assert load_config(None, ["run.compile_backend=aot_eager"]).run.compile_backend == "aot_eager"
    assert load_config(None, []).run.compile is False and load_config(None, []).run.compile_backend == "inductor"
    with pytest.raises(InputError, match=r"'run.compile_backend' is 'indcutor'; allowed: .*eager.*inductor"):
        load_config(None, ["run.compile=true", "run.compile_backend=indcutor"])


# ------------------------------------------------------------------------------------------- host syncs
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
STEP_CODE = ("brainjepa/train/pretrain.py", "brainjepa/train/jepa.py", "brainjepa/train/ema.py",
             "brainjepa/train/runtime.py", "brainjepa/models/")


def test_an_ordinary_step_reads_nothing_from_the_device(tiny_data, tmp_path, monkeypatch):
    """A CPU run cannot show a host sync, but it can show what would cause one: every read of a tensor's value on
    the host (.item(), .tolist(), .cpu(), .numpy(), bool(), float(), int()) made by the training step's code
    (trainer, objective, EMA, models; the mask collator's host-side tensors are not the device's). Over the steps
    that are neither log steps (run.log_every 1000: only step 1) nor saves: none. It was 7 per step (the non-finite
    check, the 3 region losses' `valid.any()`, `target_std`, `loss.item()` and the flags' `tolist()`)."""
    trainer = Trainer(_cfg(tiny_data, tmp_path / "s", "optim.epochs=1", "run.log_every=1000",
                           "run.save_every_minutes=1000", "run.checkpoint_every=10", "run.monitor_every=0"))
    counting, reads = [False], []

    def counted(name, original):
        def read(self, *args, **kwargs):
            if counting[0]:
                caller = sys._getframe(1).f_code
                where = caller.co_filename.replace("\\", "/")
                if any(part in where for part in STEP_CODE):
                    reads.append((name, where.split("brainjepa/")[-1], caller.co_name, trainer.step))
            return original(self, *args, **kwargs)
        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    micro_step, save = trainer.micro_step, trainer.save

    def from_step_two(batch, last):  # step 1 is a log step: count from the second step's first micro-batch
        counting[0] = trainer.step >= 1
        return micro_step(batch, last)

    def no_count(*args, **kwargs):
        counting[0] = False
        return save(*args, **kwargs)

    trainer.micro_step, trainer.save = from_step_two, no_count
    trainer.fit()
    monkeypatch.undo()
    assert trainer.step == 6 and reads == []
    log = pd.read_csv(tmp_path / "s" / "log.csv")
    assert log["step"].tolist() == [1] and np.isfinite(log["loss"]).all()


def test_a_log_step_reads_the_monitors_once(tiny_data, tmp_path):
    """The log row is unchanged in content (every column) when read with one transfer: a run logs every step with
    finite values and the region losses' NaN only where a micro-batch had no such target."""
    pretrain(_cfg(tiny_data, tmp_path / "l", "optim.epochs=1"))
    log = pd.read_csv(tmp_path / "l" / "log.csv")
    assert log["step"].tolist() == list(range(1, 7))
    for column in ("loss", "target_std", "lr", "samples_per_s", "elapsed_s"):
        assert np.isfinite(log[column]).all(), column
    assert (log["samples_per_s"] > 0).all()


def _nan_from(monkeypatch, micro_batch: int) -> None:
    """The JEPA loss is NaN from the ``micro_batch``-th call of the run on (0-based)."""
    import brainjepa.train.pretrain as pretrain_module

    calls = [0]
    step = pretrain_module.jepa_step

    def poisoned(*args, **kwargs):
        loss, monitors = step(*args, **kwargs)
        calls[0] += 1
        return (loss * float("nan") if calls[0] > micro_batch else loss), monitors

    monkeypatch.setattr(pretrain_module, "jepa_step", poisoned)


def _recording_saves(monkeypatch) -> list:
    saved = []
    write = ckpt.save_checkpoint

    def recording(path, state, intact=None):
        saved.append((path.name, state["step"]))
        write(path, state, intact)

    monkeypatch.setattr(ckpt, "save_checkpoint", recording)
    return saved


def test_a_loss_gone_non_finite_is_raised_at_the_next_log_step_naming_its_step(tiny_data, tmp_path, monkeypatch):
    """NaN from step 6 (the first of epoch 2, 0-based as before; 6 steps an epoch): no step reads the device, so it
    is found at the next log step (8, run.log_every 4), named as step 6, and nothing is written after step 6."""
    _nan_from(monkeypatch, 6)
    saved = _recording_saves(monkeypatch)
    out = tmp_path / "n"
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 6, epoch 1, batch 0 \(seen at step 8;"):
        pretrain(_cfg(tiny_data, out, "run.log_every=4", "run.save_every_minutes=1000"))
    assert saved == [("latest.pt", 6), ("epoch-0001.pt", 6)]
    assert ckpt.load_checkpoint(out / "latest.pt")["step"] == 6 and not (out / "final.pt").exists()
    assert pd.read_csv(out / "log.csv")["step"].tolist() == [1, 4]


@pytest.mark.parametrize("async_save", ["true", "false"])
def test_a_non_finite_state_is_never_saved(tiny_data, tmp_path, monkeypatch, async_save):
    """latest.pt every step (run.save_every_minutes 0), no log step after step 1: the save after the first NaN step
    (step 6) raises instead of writing; latest.pt stays at step 6 (the background write of it finished first)."""
    _nan_from(monkeypatch, 6)
    saved = _recording_saves(monkeypatch)
    out = tmp_path / "n"
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 6, epoch 1, batch 0 \(seen at step 7;"):
        pretrain(_cfg(tiny_data, out, "run.log_every=1000", "run.save_every_minutes=0", "run.checkpoint_every=10",
                      f"run.async_save={async_save}"))
    assert saved == [("latest.pt", s) for s in range(1, 7)]
    assert ckpt.load_checkpoint(out / "latest.pt")["step"] == 6


def test_the_first_non_finite_micro_batch_is_named_with_accumulation(tiny_data, tmp_path, monkeypatch):
    """With 3 micro-batches a step, NaN from the 5th micro-batch (step 1, batch 4): the message names its step and
    batch, not a later one's."""
    _nan_from(monkeypatch, 4)
    with pytest.raises(TrainingError, match=r"at step 1, epoch 0, batch 4 \(seen at step 2;"):
        pretrain(_cfg(tiny_data, tmp_path / "a", "optim.accumulation_steps=3", "run.log_every=1000",
                      "optim.epochs=1", "run.save_every_minutes=1000"))


# ------------------------------------------------------------------------------------------- run.async_save
def test_the_cpu_copy_of_a_state_is_not_changed_by_training():
    state = {"a": torch.ones(3), "b": [torch.zeros(2), (1, "x")], "c": {"d": torch.arange(3)}, "e": 1.5}
    copy = ckpt.cpu_copy(state)
    state["a"].add_(1)
    state["c"]["d"][0] = 7
    state["b"].append(None)
    assert torch.equal(copy["a"], torch.ones(3)) and copy["c"]["d"].tolist() == [0, 1, 2]
    assert len(copy["b"]) == 2 and copy["b"][1] == (1, "x") and copy["e"] == 1.5


def test_a_crash_after_a_background_save_resumes_as_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    """latest.pt every step, written in the background (run.async_save) or not: a crash in step 5 leaves the
    latest.pt of step 4 (its write finished before the error left fit), equal to the synchronous one, and the
    rerun ends bitwise as a run in one go."""
    straight = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, tmp_path / "a")))
    stopped = {}
    for mode in ("true", "false"):
        out = tmp_path / mode
        extra = ("run.save_every_minutes=0", f"run.async_save={mode}")
        trainer = Trainer(_cfg(tiny_data, out, *extra))
        step = trainer.optimizer_step

        def crash(*args, trainer=trainer, step=step):
            if trainer.step == 4:
                raise RuntimeError("crash")
            step(*args)

        trainer.optimizer_step = crash
        with pytest.raises(RuntimeError, match="crash"):
            trainer.fit()
        stopped[mode] = ckpt.load_checkpoint(out / "latest.pt")
        assert stopped[mode]["step"] == 4
        resumed = ckpt.load_checkpoint(pretrain(_cfg(tiny_data, out, *extra)))
        assert not (tmp_path / f"{mode}.replaced-1").exists()
        _states_equal(straight, resumed)
    _states_equal(stopped["true"], stopped["false"])
    assert torch.equal(stopped["true"]["optimizer"]["state"][0]["exp_avg"],
                       stopped["false"]["optimizer"]["state"][0]["exp_avg"])


def test_a_failed_background_write_is_raised_by_fit(tiny_data, tmp_path, monkeypatch):
    """The background write of latest.pt fails (a full disk: save_checkpoint's TrainingError): fit raises that
    error, at the next save, and writes nothing after it."""
    import threading

    saved, threads = [], []
    error = TrainingError("latest.pt: cannot write the checkpoint: disk full (test)")

    def failing(path, state, intact=None):
        threads.append(threading.current_thread() is threading.main_thread())
        saved.append((path.name, state["step"]))
        if state["step"] == 3:
            raise error

    monkeypatch.setattr(ckpt, "save_checkpoint", failing)
    with pytest.raises(TrainingError, match=r"disk full \(test\)") as info:
        pretrain(_cfg(tiny_data, tmp_path / "f", "run.save_every_minutes=0", "run.checkpoint_every=10"))
    assert info.value is error
    assert saved == [("latest.pt", 1), ("latest.pt", 2), ("latest.pt", 3)] and not any(threads)


def test_final_and_epoch_checkpoints_are_written_in_the_training_thread(tiny_data, tmp_path, monkeypatch):
    """epoch-NNNN.pt, final.pt (and the latest.pt written with them) are waited for; a periodic latest.pt is not."""
    import threading

    where = []
    write = ckpt.save_checkpoint

    def recording(path, state, intact=None):
        where.append((path.name, state["step"], threading.current_thread() is threading.main_thread()))
        write(path, state, intact)

    monkeypatch.setattr(ckpt, "save_checkpoint", recording)
    pretrain(_cfg(tiny_data, tmp_path / "w", "run.save_every_minutes=0", "optim.epochs=1"))
    assert where == [*(("latest.pt", s, False) for s in range(1, 7)), ("epoch-0001.pt", 6, True),
                     ("final.pt", 6, True)]
    where.clear()
    pretrain(_cfg(tiny_data, tmp_path / "s", "run.save_every_minutes=1000", "run.stop_after_steps=2"))
    assert where == [("latest.pt", 2, True)]  # a stop waits for its write


# ------------------------------------------------------------------------------------------- under DDP
def test_under_ddp_compile_and_async_save_train_as_one_process_and_a_nan_stops_every_rank_at_once(
        tiny_data, tmp_path, monkeypatch, fresh_dynamo):
    """$BRAINJEPA_DDP=always (a Gloo group of one, the DDP wrapper around the compiled modules): the losses of the
    plain single process, latest.pt written in the background each step; a NaN loss travels with the step's flags
    all-reduce, so it is raised right after its step (step 4 of 1-based log steps), not at the next log step."""
    import torch.distributed as dist

    from brainjepa.train.runtime import DDP_ENV

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(DDP_ENV, raising=False)
    pretrain(_cfg(tiny_data, tmp_path / "plain", "optim.epochs=1"))
    monkeypatch.setenv(DDP_ENV, "always")
    try:
        trainer = Trainer(_cfg(tiny_data, tmp_path / "ddp", "optim.epochs=1", "run.compile=true",
                               "run.compile_backend=eager", "run.save_every_minutes=0"))
        assert all(isinstance(m, torch.nn.parallel.DistributedDataParallel) for m in trainer.online)
        trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    losses = [pd.read_csv(tmp_path / name / "log.csv")["loss"].to_numpy() for name in ("plain", "ddp")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert ckpt.load_checkpoint(tmp_path / "ddp" / "latest.pt")["step"] == 6
    _nan_from(monkeypatch, 3)
    try:
        with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 3, epoch 0, batch 3 \(seen at "
                                                r"step 4;"):
            pretrain(_cfg(tiny_data, tmp_path / "nan", "optim.epochs=1", "run.log_every=1000"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
