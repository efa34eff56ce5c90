"""Masked reconstruction quality of an MAE checkpoint: scores, masks, the stage, its CLI and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_forecast import RECORD_KEYS, T_RUN, WINDOW, R, make_shards, random_spec, run_cli

from brainjepa.capabilities.reconstruction import (
    ReconstructionConfig,
    load_mae,
    roi_mean_fill,
    run_reconstruction,
    window_masks,
)
from brainjepa.errors import InputError
from brainjepa.evaluate.metrics import ScoreAccumulator, regression_scores
from brainjepa.models import BrainEncoder, BrainPredictor, ModelConfig
from brainjepa.models.weights import CHECKPOINT_FORMAT

NAMES = [f"roi{i}" for i in range(R)]
MODEL = ModelConfig(size="tiny", n_rois=R, n_timesteps=WINDOW, patch_size=16, n_gradients=4, embed_dim=32, depth=2,
                    num_heads=4, predictor_dim=32, predictor_depth=2).resolved()
FAST = {"threads": 1, "device": "cpu"}


def shared_signal(rng, i):
    """Every ROI a scaled copy of one smooth signal plus a little noise: a hidden patch is in the visible ROIs."""
    base = np.convolve(rng.normal(size=T_RUN + 8), np.ones(8) / np.sqrt(8), mode="valid")[:T_RUN, None]
    return base * np.linspace(0.5, 1.5, R)[None, :] + 0.1 * rng.normal(size=(T_RUN, R))


def save_checkpoint(path, encoder, decoder, objective: str, roi_names=NAMES) -> None:
    torch.save({"format": CHECKPOINT_FORMAT, "encoder": encoder.state_dict(), "target_encoder": encoder.state_dict(),
                "predictor": decoder.state_dict(), "model_config": MODEL.to_dict(), "roi_names": list(roi_names),
                "config": {"objective": objective}, "step": 0}, path)


def train_mae(root, steps: int) -> tuple[BrainEncoder, BrainPredictor]:
    """A tiny MAE trained ``steps`` steps at mask ratio 0.5 on random crops of the training runs (mae_step, as
    pretraining; the crops keep it from memorising the few windows)."""
    from brainjepa.evaluate.tasks import split_manifests, split_windows
    from brainjepa.train.jepa import mae_step
    from brainjepa.train.masks import random_masks

    torch.manual_seed(0)
    gradients = torch.randn(R, 4)
    encoder, decoder = BrainEncoder(MODEL, gradients), BrainPredictor(MODEL, gradients, out_dim=MODEL.patch_size)
    train = split_windows(split_manifests(root / "shards"), ["c"], WINDOW, keep_runs=True)["train"]
    runs = np.stack(train.runs)                                                           # [N, R, T_RUN]
    optimizer = torch.optim.AdamW([*encoder.parameters(), *decoder.parameters()], lr=3e-3)
    rng = np.random.default_rng(0)
    for step in range(steps):
        starts = rng.integers(0, T_RUN - WINDOW + 1, size=8)
        crops = np.stack([runs[i, :, s0:s0 + WINDOW] for i, s0 in zip(rng.choice(len(runs), 8), starts)])
        batch = {"x": torch.from_numpy(crops).unsqueeze(1)}
        batch.update(random_masks([np.random.default_rng([step, k]) for k in range(8)], MODEL.n_tokens, 0.5))
        loss, _ = mae_step(encoder, decoder, batch, MODEL.patch_size)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return encoder.eval(), decoder.eval()


@pytest.fixture(scope="module")
def mae_data(tmp_path_factory):
    root = make_shards(tmp_path_factory.mktemp("reconstruction"), signal=shared_signal)
    trained, untrained = train_mae(root, 400), train_mae(root, 0)
    save_checkpoint(root / "mae.pt", *trained, "mae")
    save_checkpoint(root / "untrained.pt", *untrained, "mae")
    return root, trained


# ------------------------------------------------------------------------------------------------- pieces
def test_scores_accumulated_in_pieces_equal_the_flat_scores_and_scikit_learn():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    y, p = rng.normal(size=(5, 7, 3)) + 1.0, rng.normal(size=(5, 7, 3))
    acc = ScoreAccumulator()
    for k in range(5):
        acc.add(y[k], p[k])
    for key, value in regression_scores(y, p).items():
        assert acc.scores()[key] == pytest.approx(value, rel=1e-9)
    assert acc.scores()["r2"] == pytest.approx(r2_score(y.ravel(), p.ravel()))


def test_masks_depend_on_the_window_not_on_the_batch():
    keys = [f"c/run{i}@0" for i in range(6)]
    together = window_masks(keys, 32, 0.2, seed=0)
    alone = [window_masks([k], 32, 0.2, seed=0) for k in keys]
    for i, single in enumerate(alone):
        assert torch.equal(together["target_idx"][i], single["target_idx"][0])
    assert together["target_idx"].shape == (6, 6)                   # round(0.2 x 32) hidden
    hidden, visible = set(together["target_idx"][0].tolist()), set(together["context_idx"][0].tolist())
    assert not hidden & visible and len(hidden | visible) == 32
    assert not torch.equal(window_masks(keys, 32, 0.2, seed=1)["target_idx"], together["target_idx"])


def test_roi_mean_fill_holds_each_rois_visible_mean():
    patches = np.arange(4 * 2, dtype=float).reshape(1, 4, 2)         # 2 ROIs x 2 time patches of 2 steps
    hidden = np.array([[False, True, True, True]])                  # ROI 1 has nothing visible
    fill = roi_mean_fill(patches, hidden, n_rois=2)
    assert fill[0, 1].tolist() == [0.5, 0.5]                        # ROI 0's visible patch (0, 1)
    assert fill[0, 2].tolist() == fill[0, 3].tolist() == [0.5, 0.5]  # the window's visible mean
    assert fill[0, 0].tolist() == [0.0, 1.0]                        # visible patches unchanged


# ------------------------------------------------------------------------------------------------- the stage
def test_reconstruction_r2_of_a_trained_mae_matches_a_direct_computation(mae_data, tmp_path):
    from sklearn.metrics import r2_score

    from brainjepa.evaluate.tasks import split_manifests, split_windows
    from brainjepa.models.layers import gather_tokens
    from brainjepa.train.jepa import patch_targets

    root, (encoder, decoder) = mae_data
    cfg = ReconstructionConfig.from_dict({**FAST, "mask_ratios": [0.2, 0.5]})
    record = run_reconstruction("mae", 0, root / "shards", ["c"], tmp_path / "r.json", cfg,
                             {"kind": "checkpoint", "path": str(root / "mae.pt")})
    untrained = run_reconstruction("mae", 0, root / "shards", ["c"], tmp_path / "u.json", cfg,
                                {"kind": "checkpoint", "path": str(root / "untrained.pt")})
    assert record["test"]["r2_mask20"] > 0.5 > untrained["test"]["r2_mask20"]
    assert record["test"]["r2_mask20"] > record["details"]["roi_mean_fill"]["test"]["r2_mask20"]
    # the same number computed here, straight from the masks
    test = split_windows(split_manifests(root / "shards"), ["c"], WINDOW, splits=("test",))["test"]
    masks = window_masks([f"{r}@{s}" for r, s in zip(test.run_id, test.start)], MODEL.n_tokens, 0.2, seed=0)
    x = torch.from_numpy(test.data).unsqueeze(1)
    with torch.no_grad():
        pred = decoder(encoder(x, masks["context_idx"]), masks["context_idx"], masks["target_idx"])
    truth = gather_tokens(patch_targets(x, MODEL.patch_size), masks["target_idx"])
    assert record["test"]["r2_mask20"] == pytest.approx(r2_score(truth.numpy().ravel(), pred.numpy().ravel()),
                                                        abs=1e-5)
    assert record["test"]["mse_mask20"] == pytest.approx(float(((truth - pred) ** 2).mean()), abs=1e-6)


def test_the_record_follows_the_contract_and_a_seed_gives_the_same_masks(mae_data, tmp_path):
    root, _ = mae_data
    spec = json.dumps({"kind": "checkpoint", "path": str(root / "mae.pt")})
    outs = []
    for name, batch in (("a", 16), ("b", 3)):
        out = tmp_path / f"{name}.json"
        assert run_cli("reconstruction", "--shards", str(root / "shards"), "--cohorts", "c", "--method", "mae",
                       "--encoder", spec, "--seed", "2", "--settings", json.dumps({**FAST, "batch_size": batch}),
                       "--out", str(out)) == 0
        outs.append(json.loads(out.read_text()))
    record = outs[0]
    assert set(record) == RECORD_KEYS
    assert (record["task"], record["kind"], record["method"], record["seed"]) == ("reconstruction", "reconstruction",
                                                                                  "mae", 2)
    names = {f"{m}_mask{p}" for m in ("r2", "r", "mse") for p in (20, 50, 75)}
    assert set(record["test"]) == set(record["val"]) == names
    assert all(isinstance(v, float) for v in record["test"].values())
    assert record["n_subjects"] == {"train": 0, "val": 8, "test": 8}
    assert {k: len(v) for k, v in record["per_subject"].items()} == {f"mse_mask{p}": 8 for p in (20, 50, 75)}
    assert record["details"]["n_hidden_tokens"] == {"mask20": 6, "mask50": 16, "mask75": 24}
    assert record["source"]["objective"] == "mae" and record["selected"] == {"epoch": None, "history": []}
    assert outs[1]["test"] == pytest.approx(record["test"], rel=1e-5)          # batching does not move the masks


def test_a_jepa_checkpoint_or_a_random_encoder_is_refused(mae_data, tmp_path):
    root, (encoder, _) = mae_data
    save_checkpoint(tmp_path / "jepa.pt", encoder, BrainPredictor(MODEL, torch.randn(R, 4)), "jepa")
    with pytest.raises(InputError, match=r"jepa.pt: a jepa checkpoint.*reconstruction needs an MAE \(objective: mae\) "
                                         r"checkpoint"):
        load_mae({"kind": "checkpoint", "path": str(tmp_path / "jepa.pt")}, NAMES, WINDOW)
    with pytest.raises(InputError, match=r"reconstruction needs an MAE \(objective: mae\) checkpoint"):
        load_mae(random_spec(root), NAMES, WINDOW)
    assert run_cli("reconstruction", "--shards", str(root / "shards"), "--cohorts", "c", "--method", "jepa",
                   "--encoder", json.dumps({"kind": "checkpoint", "path": str(tmp_path / "jepa.pt")}),
                   "--out", str(tmp_path / "x.json")) == 1
    assert not (tmp_path / "x.json").exists()


def test_roi_names_window_and_settings_are_checked(mae_data, tmp_path):
    root, (encoder, decoder) = mae_data
    save_checkpoint(tmp_path / "other.pt", encoder, decoder, "mae", roi_names=[*NAMES[:-1], "elsewhere"])
    with pytest.raises(InputError, match=r"other.pt: ROI names/order differ .*ROI 8 is 'elsewhere'"):
        load_mae({"kind": "checkpoint", "path": str(tmp_path / "other.pt")}, NAMES, WINDOW)
    with pytest.raises(InputError, match="windows of 64 time steps, the evaluation uses 32"):
        load_mae({"kind": "checkpoint", "path": str(root / "mae.pt")}, NAMES, 32)
    with pytest.raises(InputError, match=r"missing.pt: checkpoint does not exist"):
        load_mae({"kind": "checkpoint", "path": str(tmp_path / "missing.pt")}, NAMES, WINDOW)
    with pytest.raises(InputError, match=r"mask_ratios must list values in \(0, 1\)"):
        ReconstructionConfig.from_dict({"mask_ratios": [0.5, 1.0]})
    with pytest.raises(InputError, match="round to the same percent"):
        ReconstructionConfig.from_dict({"mask_ratios": [0.5, 0.501]})
    with pytest.raises(InputError, match="reconstruction.settings.ratios"):
        ReconstructionConfig.from_dict({"ratios": [0.5]})
