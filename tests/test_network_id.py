"""Functional-network identification: the stratified ROI split, ROI-to-network matching, attention rows against the
full weight tensors, raw time series that carry planted networks, and the command's record and errors."""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from brainjepa.capabilities import network_id as nw
from brainjepa.data.shards import build_shards
from brainjepa.errors import InputError
from brainjepa.evaluate.record import KEYS
from brainjepa.group.gradients import write_gradients
from brainjepa.group.scaling import ScalingStats
from brainjepa.io import write_timeseries

NETWORKS = ("Vis", "SomMot", "Cont", "Default")
PER_NETWORK, T, WINDOW = 4, 64, 32
R = len(NETWORKS) * PER_NETWORK
SMALL_MODEL = ("model:\n  size: tiny\n  embed_dim: 32\n  depth: 2\n  num_heads: 4\n  predictor_dim: 16\n"
               "  predictor_depth: 1\n  patch_size: 16\n")
RECORD_KEYS = KEYS             # the fields of brainjepa.evaluate.record.Record (test_capabilities pins them)


def roi_names() -> list[str]:
    return [f"{net}_{i}" for net in NETWORKS for i in range(PER_NETWORK)]


def roi_network_array() -> np.ndarray:
    return np.repeat(NETWORKS, PER_NETWORK)


def make_planted_data(root, n_subjects: int = 30, labels: dict | None = None, default_amplitude: float = 0.6):
    """Shard sets (train/val/test by subject index mod 5: 3/1/1) of cohort "c": every ROI is 0.8 x its network's
    latent + 0.6 x its own noise, so ROIs of one network share a time course; subjects with diagnosis 1 (odd
    index) have the Default network's amplitude scaled by ``default_amplitude``. ``labels``: extra label
    columns, name -> (kind, [value per subject]). Also writes gradients.tsv, model.yaml and labels.tsv (with
    centroids). Returns root."""
    rng = np.random.default_rng(0)
    names, networks = roi_names(), roi_network_array()
    rows = []
    for i in range(n_subjects):
        latent = rng.normal(size=(T, len(NETWORKS)))
        data = 0.8 * latent[:, np.repeat(np.arange(len(NETWORKS)), PER_NETWORK)] + 0.6 * rng.normal(size=(T, R))
        diagnosis = float(i % 2)
        if diagnosis:
            data[:, networks == "Default"] *= default_amplitude
        path = root / "runs" / f"s{i:02d}.parquet"
        write_timeseries(data.astype(np.float32), names, path, {"tr": 2.0})
        split = ("train", "val", "test")[0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)]
        row = {"run_id": f"c/sub-s{i:02d}_ses-1_run-1", "cohort": "c", "subject": f"s{i:02d}", "session": "1",
               "run": "1", "split": split, "path": str(path), "diagnosis": diagnosis}
        for name, (_, values) in (labels or {}).items():
            row[name] = values[i]
        rows.append(row)
    frame = pd.DataFrame(rows)
    stats = ScalingStats("subject_mean", tuple(names), np.zeros(R), np.ones(R), n_subjects)
    kinds = {"diagnosis": "binary", **{k: v[0] for k, v in (labels or {}).items()}}
    categories = {k: sorted(set(v[1])) for k, v in (labels or {}).items() if v[0] == "categorical"}
    for split in ("train", "val", "test"):
        build_shards(frame[frame["split"] == split], stats, root / "shards" / split, window=WINDOW,
                     label_columns=kinds, categories=categories, flat=True, rows_per_row_group=8)
    write_gradients(rng.normal(size=(R, 4)), np.linspace(1, 0.5, 4), names, root / "gradients.tsv")
    (root / "model.yaml").write_text(SMALL_MODEL)
    k = np.arange(R)
    pd.DataFrame({"index": k + 1, "name": names, "network": networks, "hemisphere": np.where(k % 2, "L", "R"),
                  "x": np.where(k % 2, -30.0, 30.0) + k, "y": -60.0 + 8 * k, "z": 5.0 * (k % 5)}
                 ).to_csv(root / "labels.tsv", sep="\t", index=False)
    return root


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted_data(tmp_path_factory.mktemp("networks"))


def random_spec(root) -> dict:
    return {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}


def run_cli(argv: list[str]) -> None:
    """Parse and run one of the capability commands (brainjepa.cli.capabilities)."""
    from brainjepa.cli.capabilities import register

    parser = argparse.ArgumentParser(prog="brainjepa")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def assert_contract(record: dict, kind: str) -> None:
    assert set(record) == RECORD_KEYS and record["kind"] == kind
    assert set(record["n_subjects"]) == {"train", "val", "test"}
    for split in ("val", "test"):
        assert all(isinstance(v, float) for v in record[split].values())
    for values in record["per_subject"].values():
        assert len(values) == record["n_subjects"]["test"] and all(isinstance(v, float) for v in values)
    assert set(record["selected"]) >= {"epoch", "history"}
    json.dumps(record)                                                       # plain JSON all the way down


# ------------------------------------------------------------------------------------------------- split
def test_stratified_split_holds_every_network_in_both_parts_and_is_seeded():
    y = np.repeat(np.arange(8), 8)                                           # the demo: 8 networks x 8 ROIs
    train, test = nw.stratified_roi_split(y, 0.2, seed=0)
    assert len(test) == round(0.2 * len(y)) and len(train) + len(test) == len(y)
    assert not set(train) & set(test)
    assert set(y[train]) == set(y[test]) == set(range(8))
    again = nw.stratified_roi_split(y, 0.2, seed=0)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    assert not np.array_equal(nw.stratified_roi_split(y, 0.2, seed=1)[1], test)
    uneven = np.array([0] * 2 + [1] * 3 + [2] * 20)                          # small networks keep one of each
    tr, te = nw.stratified_roi_split(uneven, 0.2, seed=3)
    assert set(uneven[tr]) == set(uneven[te]) == {0, 1, 2} and np.sum(uneven[te] == 2) == 4
    with pytest.raises(InputError, match="2\\+ ROIs"):
        nw.stratified_roi_split(np.array([0, 0, 1]), 0.2, 0)


def test_roi_networks_match_by_name_and_fail_clearly(caplog):
    names = roi_names()
    table = pd.DataFrame({"index": range(R), "name": names, "network": roi_network_array()}).iloc[::-1]
    assert list(nw.roi_networks(table, names, "network", "labels.tsv")) == list(roi_network_array())
    with pytest.raises(InputError, match="labels.tsv: no network column 'yeo7'"):
        nw.roi_networks(table, names, "yeo7", "labels.tsv")
    with pytest.raises(InputError, match="ROI 'Vis_0' of the shards is not in the label table"):
        nw.roi_networks(table[table["name"] != "Vis_0"], names, "network", "labels.tsv")
    networks = np.array(["A", "A", "B", "B", "C"])
    with caplog.at_level(logging.WARNING):
        mask, scored, excluded = nw.scored_networks(networks)
    assert scored == ["A", "B"] and excluded == ["C"] and list(mask) == [True] * 4 + [False]
    assert "network C has 1 ROI" in caplog.text
    assert nw.scored_networks(networks, ("A", "B"))[1] == ["A", "B"]
    with pytest.raises(InputError, match=r"\['Limbic'\]"):
        nw.scored_networks(networks, ("A", "Limbic"))


# ------------------------------------------------------------------------------------------------- features
def test_attention_features_equal_the_full_weights_by_hand_and_ignore_the_batch():
    from test_models import gradients, tiny

    from brainjepa.models import BrainEncoder

    torch.manual_seed(0)
    cfg = tiny(depth=3)
    encoder = BrainEncoder(cfg, gradients()).eval()
    n_rois, w = cfg.n_rois, cfg.n_time_patches
    data = np.random.default_rng(0).normal(size=(5, n_rois, cfg.n_timesteps)).astype(np.float32)
    with torch.no_grad():
        _, every = encoder.forward_with_attention(torch.from_numpy(data).unsqueeze(1))
    full = every[1].double().numpy()                                          # layer 1: [B, H, N, N]
    expected = np.zeros((5, n_rois, n_rois))
    for i in range(n_rois):
        for j in range(n_rois):
            block = full[:, :, i * w:(i + 1) * w, j * w:(j + 1) * w]          # queries of ROI i, keys of ROI j
            expected[:, i, j] = block.sum(axis=3).mean(axis=(1, 2))
    assert np.allclose(expected.sum(axis=2), 1.0)
    for batch in (1, 2, 5):
        got = nw.attention_features(encoder, data, layer=1, device="cpu", batch_size=batch)
        assert got.shape == (5, n_rois, n_rois) and np.allclose(got, expected, atol=1e-5)
    last = nw.recording_features("attention", data, encoder, nw.NetworkIdConfig(batch_size=2))
    assert np.allclose(last, nw.roi_attention_rows(every[-1], n_rois, w).numpy(), atol=1e-5)


def test_embedding_features_are_the_roi_tokens_of_extract():
    from test_models import gradients, tiny

    from brainjepa.evaluate.features import extract
    from brainjepa.models import BrainEncoder

    torch.manual_seed(1)
    encoder = BrainEncoder(tiny(), gradients()).eval()
    data = np.random.default_rng(1).normal(size=(3, encoder.cfg.n_rois, encoder.cfg.n_timesteps)).astype(np.float32)
    _, rois = extract(encoder, data, encoder.cfg.n_time_patches, "cpu")
    assert np.array_equal(nw.recording_features("embedding", data, encoder), rois.astype(np.float32))
    assert np.array_equal(nw.recording_features("raw", data), data)


def test_scoring_a_recording_with_separable_and_random_features():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 6)
    train, test = nw.stratified_roi_split(y, 0.25, 0)
    centres = rng.normal(size=(4, 10)) * 3
    scores, pred = nw.score_recording(centres[y] + rng.normal(size=(24, 10)) * 0.3, y, train, test, (0.1, 1.0))
    assert scores.shape == (2, 2) and pred.shape == (2, len(test)) and np.allclose(scores, 1.0)
    chance = nw.chance_levels(y, train, test, 4)
    assert chance["uniform"] == 0.25 and 0 < chance["majority"] <= 0.5


# ------------------------------------------------------------------------------------------------- the command
def test_raw_time_series_identify_planted_networks(planted, tmp_path):
    out = tmp_path / "raw.json"
    run_cli(["network-id", "--features", "raw", "--method", "raw", "--seed", "0", "--shards",
             str(planted / "shards"), "--cohorts", "c", "--labels", str(planted / "labels.tsv"), "--out", str(out),
             "--settings", json.dumps({"c_grid": [0.1, 1.0]})])
    record = json.loads(out.read_text())
    assert_contract(record, "network_id")
    assert record["source"] is None and record["method"] == "raw" and record["label"] == "network"
    assert record["n_subjects"] == {"train": 0, "val": 6, "test": 6}
    chance = record["details"]["chance"]
    assert chance["uniform"] == 0.25
    assert record["test"]["accuracy"] > 0.8 > chance["majority"] + 0.3       # shared latents: far above chance
    assert len(record["per_subject"]["accuracy"]) == 6
    assert np.mean(record["per_subject"]["accuracy"]) == pytest.approx(record["test"]["accuracy"])
    assert [h["C"] for h in record["selected"]["history"]] == [0.1, 1.0]
    assert record["details"]["n_rois"] == {"train": 12, "test": 4, "unscored": 0}
    assert record["details"]["position_only"] is None
    assert set(record["details"]["test_recall_per_network"]) == set(NETWORKS)


@pytest.mark.parametrize("features", ["embedding", "attention"])
def test_encoder_features_write_the_record(planted, tmp_path, features):
    out = tmp_path / f"{features}.json"
    run_cli(["network-id", "--features", features, "--method", f"random_{features}", "--seed", "1",
             "--shards", str(planted / "shards"), "--cohorts", "c", "--labels", str(planted / "labels.tsv"),
             "--out", str(out), "--encoder", json.dumps(random_spec(planted)),
             "--settings", json.dumps({"c_grid": [1.0], "batch_size": 3, "threads": 1})])
    record = json.loads(out.read_text())
    assert_contract(record, "network_id")
    assert record["source"]["kind"] == "random" and record["details"]["feature_dim"] == (32 if features ==
                                                                                         "embedding" else R)
    assert 0.0 <= record["test"]["balanced_accuracy"] <= 1.0
    assert set(record["details"]["position_only"]) == {"accuracy", "balanced_accuracy"}
    # the same split for every recording of a seed, a different one for another seed
    split = nw.stratified_roi_split(np.repeat(np.arange(4), 4), 0.2, 1)[1]
    assert record["details"]["test_rois"] == [roi_names()[i] for i in split]


def test_network_id_errors_name_the_problem(planted, tmp_path):
    base = ["network-id", "--method", "m", "--shards", str(planted / "shards"), "--cohorts", "c",
            "--labels", str(planted / "labels.tsv"), "--out", str(tmp_path / "x.json")]
    with pytest.raises(InputError, match="no network column 'yeo17'"):
        run_cli([*base, "--features", "raw", "--settings", json.dumps({"network_column": "yeo17"})])
    with pytest.raises(InputError, match="give no --encoder"):
        run_cli([*base, "--features", "raw", "--encoder", json.dumps(random_spec(planted))])
    with pytest.raises(InputError, match="needs an encoder"):
        run_cli([*base, "--features", "attention"])
    with pytest.raises(InputError, match="unknown key"):
        run_cli([*base, "--features", "raw", "--settings", json.dumps({"folds": 5})])
    with pytest.raises(InputError, match="cohort"):
        run_cli([*base[:6], "nowhere", *base[7:], "--features", "raw"])
    table = pd.read_csv(planted / "labels.tsv", sep="\t")
    table[table["name"] != "Cont_2"].to_csv(tmp_path / "short.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="ROI 'Cont_2'"):
        run_cli([*base[:8], str(tmp_path / "short.tsv"), *base[9:], "--features", "raw"])
    with pytest.raises(SystemExit):                                          # argparse: not a feature kind
        run_cli([*base, "--features", "pixels"])
    assert not (tmp_path / "x.json").exists()
