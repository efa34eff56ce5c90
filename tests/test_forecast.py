"""Forecasting (BrainLM's capability): metrics, baselines, the encoder forecaster's causality, the stage and its CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from brainjepa.capabilities.forecast import (
    ForecastConfig,
    ar_forecast,
    fit_ar,
    forecast_scores,
    persistence_forecast,
    run_forecast,
)
from brainjepa.data.shards import build_shards
from brainjepa.errors import InputError
from brainjepa.evaluate.metrics import regression_scores
from brainjepa.evaluate.record import KEYS
from brainjepa.group.gradients import write_gradients
from brainjepa.group.scaling import ScalingStats
from brainjepa.io import write_timeseries

R, T_RUN, WINDOW, PATCH = 8, 96, 64, 16
SMALL_MODEL = ("model:\n  size: tiny\n  embed_dim: 32\n  depth: 2\n  num_heads: 4\n  predictor_dim: 16\n"
               "  predictor_depth: 1\n  patch_size: 16\n")
FAST = {"context": 48, "horizon": 8, "threads": 1, "device": "cpu"}
RECORD_KEYS = KEYS             # the fields of brainjepa.evaluate.record.Record (test_capabilities pins them)


def make_shards(root, n_subjects: int = 40, signal=None, seed: int = 0):
    """Per-split shard sets (cohort "c", one run of T_RUN steps per subject, train/val/test 3:1:1) of
    ``signal(rng, i) -> [T_RUN, R]`` (default: sinusoids of period 16 steps with ROI-specific phases, a random
    phase per run, and noise), the gradients and a small model config. Returns root."""
    rng = np.random.default_rng(seed)
    names = [f"roi{i}" for i in range(R)]
    t = np.arange(T_RUN)[:, None]
    roi_phase = np.linspace(0, np.pi, R)[None, :]

    def sinusoids(rng, i):
        return np.sin(2 * np.pi * t / 16 + roi_phase + rng.uniform(0, 2 * np.pi)) + 0.1 * rng.normal(size=(T_RUN, R))

    signal = signal or sinusoids
    rows = []
    for i in range(n_subjects):
        path = root / "runs" / f"s{i:02d}.parquet"
        write_timeseries(np.asarray(signal(rng, i), dtype=np.float32), names, path, {"tr": 2.0})
        split = ("train", "val", "test")[0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)]
        rows.append({"run_id": f"c/sub-s{i:02d}_ses-1_run-1", "cohort": "c", "subject": f"s{i:02d}", "session": "1",
                     "run": "1", "split": split, "path": str(path)})
    frame = pd.DataFrame(rows)
    stats = ScalingStats("subject_mean", tuple(names), np.zeros(R), np.ones(R), n_subjects)
    for split in ("train", "val", "test"):
        build_shards(frame[frame["split"] == split], stats, root / "shards" / split, window=WINDOW, flat=True,
                     rows_per_row_group=8)
    write_gradients(rng.normal(size=(R, 4)), np.linspace(1, 0.5, 4), names, root / "gradients.tsv")
    (root / "model.yaml").write_text(SMALL_MODEL)
    return root


def random_spec(root) -> dict:
    return {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}


@pytest.fixture(scope="module")
def sine_data(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("forecast"))


def run_cli(*args: str) -> int:
    """``brainjepa`` on ``args``: its exit status."""
    import brainjepa.cli as cli

    return cli.main(list(args))


# ------------------------------------------------------------------------------------------------- metrics
def test_scores_equal_scikit_learn_and_scipy_over_the_flattened_values():
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_squared_error, r2_score

    rng = np.random.default_rng(0)
    truth = rng.normal(size=(6, 5, 4)) + 0.3
    pred = 0.5 * truth + rng.normal(size=truth.shape)
    overall, per_step = forecast_scores(truth, pred)
    assert overall["r2"] == pytest.approx(r2_score(truth.ravel(), pred.ravel()))
    assert overall["r"] == pytest.approx(pearsonr(truth.ravel(), pred.ravel())[0])
    assert overall["mse"] == pytest.approx(mean_squared_error(truth.ravel(), pred.ravel()))
    for h in range(4):
        assert per_step["r2"][h] == pytest.approx(r2_score(truth[..., h].ravel(), pred[..., h].ravel()))
        assert per_step["r"][h] == pytest.approx(pearsonr(truth[..., h].ravel(), pred[..., h].ravel())[0])
        assert per_step["mse"][h] == pytest.approx(np.mean((truth[..., h] - pred[..., h]) ** 2))
    constant = regression_scores(truth, np.zeros_like(truth))
    assert np.isnan(constant["r"]) and constant["r2"] < 0               # no clip at 0 (BrainLM clips)
    assert regression_scores(truth, truth) == {"r2": 1.0, "r": pytest.approx(1.0), "mse": 0.0}


# ------------------------------------------------------------------------------------------------- baselines
def test_persistence_repeats_the_last_context_value():
    context = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = persistence_forecast(context, 5)
    assert out.shape == (2, 3, 5)
    assert (out == context[..., -1:]).all()


def test_ar_recovers_the_coefficients_of_a_known_ar2_process():
    rng = np.random.default_rng(1)
    coef = np.array([[0.2, 0.6, -0.3], [-0.1, 1.2, -0.5], [0.0, 0.3, 0.2]])     # (c, phi_1, phi_2) per ROI
    series = []
    for _ in range(20):
        x = np.zeros((3, 400))
        for t in range(2, 400):
            x[:, t] = coef[:, 0] + coef[:, 1] * x[:, t - 1] + coef[:, 2] * x[:, t - 2] + rng.normal(size=3)
        series.append(x[:, 50:])
    fitted = fit_ar(series, 2)
    np.testing.assert_allclose(fitted, coef, atol=0.03)
    # the iterated forecast applies the recursion to its own predictions
    context = rng.normal(size=(4, 3, 10))
    out = ar_forecast(context, fitted, 3)
    step1 = fitted[:, 0] + fitted[:, 1] * context[..., -1] + fitted[:, 2] * context[..., -2]
    step2 = fitted[:, 0] + fitted[:, 1] * step1 + fitted[:, 2] * context[..., -1]
    np.testing.assert_allclose(out[..., 0], step1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[..., 1], step2, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- the encoder
def test_the_encoder_forecast_never_sees_the_future(sine_data):
    from brainjepa.capabilities.forecast_models import EncoderForecaster
    from brainjepa.evaluate.encoders import load_encoder

    encoder, _ = load_encoder(random_spec(sine_data), [f"roi{i}" for i in range(R)], WINDOW, seed=0)
    model = EncoderForecaster(encoder, 48, 8).eval()
    assert model.token_idx.tolist()[0][:4] == [0, 1, 2, 4]           # ROI-major, the 3 context patches of W = 4
    x = torch.randn(3, R, WINDOW)
    other = x.clone()
    other[:, :, 48:] = torch.randn(3, R, WINDOW - 48) * 10          # another future
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(other), rtol=0, atol=0)
        changed = x.clone()
        changed[:, :, 47] += 1.0                                      # the last context step does count
        assert not torch.allclose(model(x), model(changed))
    x.requires_grad_(True)
    model(x).sum().backward()
    assert (x.grad[:, :, 48:] == 0).all() and x.grad[:, :, :48].abs().sum() > 0


def test_a_fine_tuned_encoder_beats_persistence_on_predictable_signals(sine_data, tmp_path):
    settings = ForecastConfig.from_dict({**FAST, "epochs": 15, "lr": 3e-3})
    shards = sine_data / "shards"
    tuned = run_forecast("random_finetune", 0, shards, ["c"], tmp_path / "enc.json", settings, random_spec(sine_data))
    persistence = run_forecast("persistence", 0, shards, ["c"], tmp_path / "p.json", settings)
    ar = run_forecast("ar", 0, shards, ["c"], tmp_path / "ar.json", settings)
    assert tuned["test"]["r2"] > 0.5 > persistence["test"]["r2"]
    assert tuned["test"]["mse"] < persistence["test"]["mse"]
    assert ar["test"]["r2"] > 0.9                                    # a sinusoid is an AR(2) process
    assert 1 <= tuned["selected"]["epoch"] <= 15 and len(tuned["selected"]["history"]) == 15
    # persistence by hand from the windows
    from brainjepa.evaluate.tasks import split_manifests, split_windows

    test = split_windows(split_manifests(shards), ["c"], WINDOW)["test"].data
    expected = np.mean((test[:, :, 48:56] - test[:, :, 47:48]) ** 2)
    assert persistence["test"]["mse"] == pytest.approx(expected, rel=1e-5)


def test_training_is_deterministic_for_a_seed(sine_data, tmp_path):
    settings = ForecastConfig.from_dict({**FAST, "lstm_epochs": 2, "lstm_hidden": 16})
    a = run_forecast("lstm", 3, sine_data / "shards", ["c"], tmp_path / "a.json", settings)
    b = run_forecast("lstm", 3, sine_data / "shards", ["c"], tmp_path / "b.json", settings)
    assert a["test"] == b["test"] and a["per_subject"] == b["per_subject"]


# ------------------------------------------------------------------------------------------------- the stage
@pytest.mark.parametrize("method", ["persistence", "ar", "lstm", "random_finetune"])
def test_every_method_writes_the_contract_record_through_the_cli(sine_data, tmp_path, method):
    settings = {**FAST, "epochs": 2, "lstm_epochs": 2, "lstm_hidden": 16}
    out = tmp_path / "sub" / f"{method}.json"
    args = ["forecast", "--shards", str(sine_data / "shards"), "--cohorts", "c", "--method", method, "--seed", "1",
            "--settings", json.dumps(settings), "--out", str(out)]
    if method.endswith("finetune"):
        args += ["--encoder", json.dumps(random_spec(sine_data))]
    assert run_cli(*args) == 0
    record = json.loads(out.read_text())
    assert set(record) == RECORD_KEYS
    assert (record["task"], record["kind"], record["method"], record["seed"]) == ("forecast", "forecast", method, 1)
    assert record["cohorts"] == ["c"] and record["label"] is None
    assert set(record["test"]) == set(record["val"]) == {"r2", "r", "mse"}
    assert all(isinstance(v, float) for v in record["test"].values())
    assert record["n_subjects"] == {"train": 0 if method == "persistence" else 24, "val": 8, "test": 8}
    assert len(record["per_subject"]["mse"]) == 8 == len(record["details"]["test_subjects"])
    assert np.mean(record["per_subject"]["mse"]) == pytest.approx(record["test"]["mse"])   # one window each
    per_step = record["details"]["per_step"]["test"]
    assert {k: len(v) for k, v in per_step.items()} == {"r2": 8, "r": 8, "mse": 8}
    assert np.mean(per_step["mse"]) == pytest.approx(record["test"]["mse"])
    assert (record["source"] is None) == (method in ("persistence", "ar", "lstm"))
    trained = method in ("lstm", "random_finetune")
    assert (record["selected"]["epoch"] is not None) == trained and len(record["selected"]["history"]) == 2 * trained
    assert record["details"]["settings"]["context"] == 48


@pytest.mark.parametrize("settings, method, encoder, message", [
    ({"context": 40, "horizon": 8}, "random_finetune", True,
     r"context \(40\) is not a multiple of the encoder's patch size \(16\)"),
    ({"context": 48, "horizon": 20}, "ar", False, r"context \+ horizon \(48 \+ 20 = 68\) is longer than the "
                                                  r"evaluation window \(64 steps\)"),
    ({"context": 48, "horizon": 8}, "ar", True, "'ar' is a baseline without an encoder"),
    ({"context": 48, "horizon": 8}, "jepa_finetune", False, "'jepa_finetune' needs an encoder"),
    ({"context": 48, "horizon": 8, "ar_order": 48}, "ar", False, r"ar_order \(48\) must be below the context"),
])
def test_bad_settings_and_methods_are_errors_that_say_why(sine_data, tmp_path, settings, method, encoder, message):
    with pytest.raises(InputError, match=message):
        run_forecast(method, 0, sine_data / "shards", ["c"], tmp_path / "x.json", ForecastConfig.from_dict(settings),
                     random_spec(sine_data) if encoder else None)
    assert not (tmp_path / "x.json").exists()


def test_unknown_settings_keys_and_cohorts_are_errors(sine_data, tmp_path):
    with pytest.raises(InputError, match=r"evaluate.capabilities.forecast.settings.horizn"):
        ForecastConfig.from_dict({"horizn": 3})
    with pytest.raises(InputError, match=r"no run of cohort\(s\) \['ukb'\]"):
        run_forecast("persistence", 0, sine_data / "shards", ["ukb"], tmp_path / "x.json", ForecastConfig(**FAST))
    assert run_cli("forecast", "--shards", str(sine_data / "shards"), "--cohorts", "c", "--method", "ar",
                   "--settings", '{"context": 48, "horizon": 99}', "--out", str(tmp_path / "x.json")) == 1


def test_the_head_learns_at_the_full_rate_and_lower_layers_decay(sine_data):
    from brainjepa.capabilities.forecast_models import EncoderForecaster
    from brainjepa.evaluate.encoders import load_encoder
    from brainjepa.evaluate.finetune import param_groups_lrd

    encoder, _ = load_encoder(random_spec(sine_data), [f"roi{i}" for i in range(R)], WINDOW, seed=0)
    model = EncoderForecaster(encoder, 48, 8)
    scale = {n: g["lr_scale"] for g in param_groups_lrd(model, 0.05, 0.5) for n in g["names"]}
    assert scale["fc.weight"] == scale["norm.weight"] == scale["encoder.norm.weight"] == 1.0
    assert scale["encoder.blocks.1.attn.qkv.weight"] == 0.5 and scale["encoder.blocks.0.attn.qkv.weight"] == 0.25
    assert scale["encoder.patch_embed.proj.weight"] == 0.125


def test_the_baselines_without_a_network_do_not_import_torch(sine_data, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from brainjepa.capabilities.forecast import ForecastConfig, run_forecast; "
            f"[run_forecast(m, 0, {str(sine_data / 'shards')!r}, ['c'], {str(tmp_path / 'x.json')!r}, "
            "ForecastConfig(context=48, horizon=8)) for m in ('persistence', 'ar')]; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
