"""Representation monitors: RankMe, the input-dependent share, the narrowing check, and a run that logs them."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from brainjepa.data.shards import monitor_subjects_of
from brainjepa.errors import TrainingError
from brainjepa.models import ModelConfig
from brainjepa.models.encoder import BrainEncoder
from brainjepa.train.config import load_config
from brainjepa.train.monitors import input_share, narrowed, rankme, representation_monitors
from brainjepa.train.pretrain import pretrain

R, T, WINDOW = 12, 48, 32


def test_rankme_and_the_input_share_on_known_matrices():
    rng = np.random.default_rng(0)
    gaussian = torch.tensor(rng.normal(size=(4000, 16)))
    assert 15.0 < rankme(gaussian) <= 16.0                      # full rank, flat spectrum
    assert rankme(torch.ones(50, 16)) == pytest.approx(1.0, abs=1e-3)
    two = torch.tensor(rng.normal(size=(500, 2))) @ torch.tensor(rng.normal(size=(2, 16)))
    assert 1.5 < rankme(two) < 2.0                              # rank 2
    tokens = torch.tensor(rng.normal(size=(200, 10, 8)))
    assert input_share(tokens) == pytest.approx(1.0, abs=0.02)  # position says nothing
    positional = torch.tensor(rng.normal(size=(1, 10, 8))).expand(200, 10, 8)
    assert input_share(positional) == pytest.approx(0.0, abs=1e-12)   # position says everything
    assert input_share(torch.ones(20, 10, 8)) == 0.0
    mixed = positional + tokens                                 # as much input as position
    assert input_share(mixed) == pytest.approx(0.5, abs=0.1)


class _Positional(torch.nn.Module):
    """An encoder whose tokens are its positional embedding alone (the input is ignored): positional collapse."""

    def __init__(self, encoder: BrainEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(torch.zeros_like(x))


class _Constant(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], R * (WINDOW // 16), -1)


def _encoder(seed: int) -> BrainEncoder:
    torch.manual_seed(seed)
    cfg = ModelConfig(size="tiny", n_rois=R, n_timesteps=WINDOW, patch_size=16, n_gradients=4, positional="roi_sincos")
    return BrainEncoder(cfg.resolved())


def test_a_constant_or_positional_encoder_is_flagged_and_a_random_one_is_not():
    windows = torch.randn(64, 1, R, WINDOW)
    reference = representation_monitors({"context": _encoder(0)}, windows)
    assert reference["context_rankme_pooled"] > 5 and reference["context_input_share"] > 0.3
    assert narrowed(representation_monitors({"context": _encoder(1)}, windows), reference, 0.5) == []
    constant = narrowed(representation_monitors({"context": _Constant(96)}, windows), reference, 0.5)
    assert {p.split()[0] for p in constant} == {"context_rankme_pooled", "context_rankme_tokens",
                                                "context_input_share"}
    positional = narrowed(representation_monitors({"context": _Positional(_encoder(0))}, windows), reference, 0.5)
    assert {p.split()[0] for p in positional} >= {"context_rankme_pooled", "context_input_share"}, positional
    assert "< 0.5 x its step-0 value" in positional[0]


def test_monitor_subjects_are_a_stable_fifth_at_most():
    table = pd.DataFrame({"cohort": "c", "subject": [f"{i:03d}" for i in range(100)]})
    held = monitor_subjects_of(table, 64)
    assert len(held) == 20                                      # at most 1 in 5
    assert monitor_subjects_of(table, 8) <= held and len(monitor_subjects_of(table, 8)) == 8
    grown = pd.concat([table, pd.DataFrame({"cohort": "c", "subject": ["new"]})])
    assert len(monitor_subjects_of(grown, 8) & monitor_subjects_of(table, 8)) >= 7   # a new subject moves one
    assert monitor_subjects_of(table.iloc[:9], 64) == set()     # below 10 subjects: none held out


@pytest.fixture(scope="module")
def monitor_data(tmp_path_factory):
    from test_pretrain import _make_data

    return _make_data(tmp_path_factory.mktemp("monitors"), R, T, 30, WINDOW, monitor=6)


def _cfg(root, out, *extra):
    return load_config(None, [
        f"data.manifest={root / 'shards' / 'manifest.json'}", f"data.gradients={root / 'gradients.tsv'}",
        f"data.scaling_stats={root / 'stats.json'}", f"run.out_dir={out}", f"data.window={WINDOW}",
        "data.batch_size=4", "data.num_workers=0", "optim.epochs=2", "optim.warmup_epochs=1", "model.size=tiny",
        "model.patch_size=16", "run.progress=false", "run.log_every=1", "run.monitor_every=2", *extra])


@pytest.mark.parametrize("objective", ["jepa", "mae"])
def test_a_run_logs_its_monitors_from_step_0_and_a_resume_keeps_them_once(monitor_data, tmp_path, objective):
    extra = ["objective=mae", "mask.mode=random"] if objective == "mae" else []
    out = tmp_path / "run"
    pretrain(_cfg(monitor_data, out, "run.stop_after_steps=5", *extra))
    pretrain(_cfg(monitor_data, out, *extra))                      # resumed at step 5
    table = pd.read_csv(out / "monitors.csv")
    steps = table["step"].tolist()
    assert steps[0] == 0 and steps == sorted(set(steps)) and {2, 4, 6}.issubset(steps)
    assert steps[-1] == pd.read_csv(out / "log.csv")["step"].iloc[-1]   # and at the end
    encoders = ["context"] if objective == "mae" else ["context", "target"]
    assert [c for c in table.columns if c not in ("step", "epoch")] == [
        f"{e}_{m}" for e in encoders for m in ("rankme_pooled", "rankme_tokens", "input_share")]
    assert np.isfinite(table.drop(columns=["step", "epoch"]).to_numpy()).all()


def test_a_narrowing_run_warns_or_stops_with_its_checkpoint(monitor_data, tmp_path, monkeypatch, caplog):
    import brainjepa.train.monitors as monitors

    def halved(values, reference, fraction):     # the monitors of every step after 0 as half their reference
        return narrowed({k: v * 0.4 for k, v in values.items()}, reference, fraction) if values != reference else []

    monkeypatch.setattr(monitors, "narrowed", halved)
    with caplog.at_level(logging.WARNING, logger="brainjepa.train"):
        pretrain(_cfg(monitor_data, tmp_path / "warn"))
    assert "representations narrowing at step 2" in caplog.text and "context_rankme_pooled" in caplog.text
    with pytest.raises(TrainingError, match=r"representation collapse at step 2 \(run.collapse: stop\)"):
        pretrain(_cfg(monitor_data, tmp_path / "stop", "run.collapse=stop"))
    assert (tmp_path / "stop" / "latest.pt").exists() and not (tmp_path / "stop" / "final.pt").exists()


def test_without_a_monitor_split_the_run_says_so(tmp_path, monitor_data, caplog):
    import json
    import shutil

    shutil.copytree(monitor_data / "shards", tmp_path / "shards")
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    del manifest["splits"]["monitor"]
    (tmp_path / "shards" / "manifest.json").write_text(json.dumps(manifest))
    for name in ("stats.json", "gradients.tsv"):
        shutil.copy(monitor_data / name, tmp_path / name)
    with caplog.at_level(logging.WARNING, logger="brainjepa.train"):
        pretrain(_cfg(tmp_path, tmp_path / "run", "optim.epochs=1"))
    assert "has no 'monitor' split" in caplog.text and "representation monitors are off" in caplog.text


def test_the_report_draws_the_monitors_and_states_what_narrowed(tmp_path):
    from brainjepa.figures.summary import monitor_text, run_monitors
    from brainjepa.figures.training import plot_pretraining

    steps = np.arange(1, 51)
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"step": steps, "epoch": steps // 10, "loss": 1 / steps, "target_std": 0.5 + 0 * steps,
                  "lr": np.minimum(steps / 10, 1) * 1e-3}).to_csv(run / "log.csv", index=False)
    (run / "config.yaml").write_text("run:\n  collapse_fraction: 0.5\n")
    monitor_steps = np.array([0, 10, 20, 30, 40, 50])
    pd.DataFrame({"step": monitor_steps, "epoch": monitor_steps // 10,
                  "context_rankme_pooled": [28.0, 25, 20, 15, 12, 10], "context_rankme_tokens": 40.0,
                  "context_input_share": 0.9, "target_rankme_pooled": 27.0, "target_rankme_tokens": 41.0,
                  "target_input_share": [0.9, 0.8, 0.6, 0.5, 0.4, 0.3]}).to_csv(run / "monitors.csv", index=False)
    plot_pretraining({"jepa": run / "log.csv"}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 20_000
    text = monitor_text(run_monitors(run))
    assert text.startswith("context: RankMe 28 -> 10, input share 0.9 -> 0.9; target: RankMe 27 -> 27, input "
                           "share 0.9 -> 0.3 (step 50); NARROWED: context_rankme_pooled 10 < 0.5 x its step-0 value "
                           "28; target_input_share 0.3 < 0.5 x its step-0 value 0.9"), text
    (run / "monitors.csv").unlink()
    assert monitor_text(run_monitors(run)) == "no monitors"
    plot_pretraining({"jepa": run / "log.csv"}, tmp_path / "q.png")   # a run without monitors still draws
