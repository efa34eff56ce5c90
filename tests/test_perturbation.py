"""In-silico perturbation: the optimisation (loss goes down, no move when there is nothing to move, batch
independence), the magnitudes per ROI and network, a planted network found first, the command's record, tables,
figure and errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_network_id import (
    NETWORKS,
    WINDOW,
    R,
    assert_contract,
    make_planted_data,
    random_spec,
    roi_names,
    run_cli,
)
from torch import nn

from brainjepa.capabilities import perturbation as pt
from brainjepa.errors import InputError


class RoiPower(nn.Module):
    """A synthetic encoder whose pooled representation is each ROI's power: x [B, 1, R, T] -> [B, R * W, R],
    token (r, t) = mean square of ROI r's time patch t, in dimension r."""

    def __init__(self, patch: int = 8) -> None:
        super().__init__()
        self.patch = patch
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, r, t = x.shape
        power = (x[:, 0] ** 2).reshape(b, r, t // self.patch, self.patch).mean(-1)          # [B, R, W]
        return self.gain * (power[..., None] * torch.eye(r)[:, None, :]).reshape(b, -1, r)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    # site "B" only for test subjects (index % 5 == 4): a group without training subjects
    site = ["B" if i % 5 == 4 else "A" for i in range(30)]
    return make_planted_data(tmp_path_factory.mktemp("perturbation"), labels={"site": ("categorical", site)})


def _tiny_encoder(root):
    from brainjepa.evaluate.encoders import load_encoder

    return load_encoder(random_spec(root), roi_names(), WINDOW, seed=0)[0]


def _windows(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, R, WINDOW)).astype(np.float32)


def test_the_loss_decreases_and_windows_are_independent(planted):
    encoder = _tiny_encoder(planted)
    data = _windows()
    with torch.no_grad():
        start = pt.pooled(encoder, torch.from_numpy(data)[:, None]).numpy()
        goal = pt.pooled(encoder, torch.from_numpy(2 * _windows(8, seed=5))[:, None]).mean(0).numpy()   # reachable
    scale = float(np.sum((start.mean(axis=0) - goal) ** 2))
    cfg = pt.PerturbationConfig(steps=40, lr=0.05, log_every=10)
    run = pt.perturb_windows(encoder, data, goal, scale, cfg)
    losses = run["history"][:, 1]
    assert list(run["history"][:, 0]) == [0, 10, 20, 30, 40]
    assert losses[-1] < 0.5 * losses[0] and np.all(np.diff(losses) < 0)
    assert run["delta"].shape == data.shape and run["end"].shape == start.shape
    assert np.allclose(run["start"], start, atol=1e-5)
    with torch.no_grad():                                            # "end" is the representation of x + delta
        end = pt.pooled(encoder, torch.from_numpy(data + run["delta"])[:, None]).numpy()
    assert np.allclose(run["end"], end, atol=1e-5)
    one = pt.perturb_windows(encoder, data, goal, scale, pt.PerturbationConfig(steps=40, lr=0.05, batch_size=1))
    assert np.allclose(one["delta"], run["delta"], atol=1e-4)
    assert all(not p.requires_grad for p in encoder.parameters())   # the encoder stays frozen


def test_no_move_when_the_goal_is_reached_or_the_penalty_is_huge(planted):
    encoder = _tiny_encoder(planted)
    data = _windows(3, seed=1)
    with torch.no_grad():
        start = pt.pooled(encoder, torch.from_numpy(data)[:, None]).numpy()
        far = pt.pooled(encoder, torch.from_numpy(2 * _windows(8, seed=5))[:, None]).mean(0).numpy()
    at_goal = pt.perturb_windows(encoder, data, start, 1.0, pt.PerturbationConfig(steps=20))
    assert np.abs(at_goal["delta"]).max() < 1e-6                     # zero gradient at delta = 0: Adam stays put
    free = pt.perturb_windows(encoder, data, far, 1.0, pt.PerturbationConfig(steps=60, lr=0.01, penalty=0.0))
    held = pt.perturb_windows(encoder, data, far, 1.0, pt.PerturbationConfig(steps=60, lr=0.01, penalty=1e6))
    assert np.sqrt(np.mean(held["delta"] ** 2)) < 0.01 * np.sqrt(np.mean(free["delta"] ** 2))
    with pytest.raises(InputError, match="coincide"):
        pt.perturb_windows(encoder, data, far, 0.0, pt.PerturbationConfig(steps=1))


def test_magnitudes_per_roi_and_network_from_a_hand_made_delta():
    delta = np.zeros((3, 4, 10))
    delta[:, 0] = 2.0                                   # ROI 0: RMS 2 in every window
    delta[:, 1, ::2] = 1.0                              # ROI 1: RMS sqrt(1/2)
    delta[2, 3] = 3.0                                   # ROI 3: RMS 3, only in subject b's second window
    subject = np.array(["a", "b", "b"])
    per_subject, magnitude = pt.roi_magnitudes(delta, subject)
    assert np.allclose(per_subject, [[2, np.sqrt(0.5), 0, 0], [2, np.sqrt(0.5), 0, 1.5]])
    assert np.allclose(magnitude, [2, np.sqrt(0.5), 0, 0.75])
    table = pt.network_magnitudes(magnitude, np.array(["X", "Y", "X", "Y"]))
    assert list(table["network"]) == ["X", "Y"] and list(table["n_rois"]) == [2, 2]
    assert np.allclose(table["magnitude"], [1.0, (np.sqrt(0.5) + 0.75) / 2])
    assert list(table["rank"]) == [1.0, 2.0]
    closed, projected = pt.closed_shares(np.array([[0.0, 0.0]]), np.array([[0.5, 0.0]]), np.array([1.0, 0.0]),
                                         np.array([0.0, 0.0]), np.array([2.0, 0.0]))
    assert closed[0] == pytest.approx(0.5) and projected[0] == pytest.approx(0.25)
    u = pt.random_direction_target(np.zeros(5), np.full(5, 2.0), seed=0)
    assert np.linalg.norm(u) == pytest.approx(np.linalg.norm(np.full(5, 2.0)))
    assert np.array_equal(u, pt.random_direction_target(np.zeros(5), np.full(5, 2.0), seed=0))


@pytest.mark.parametrize("goal", ["mean", "shift"])
def test_the_planted_network_ranks_first(goal):
    """Only the Default network's amplitude differs between the groups and the encoder reads ROI power: the
    perturbation toward the target must spend most of its change on Default's ROIs."""
    rng = np.random.default_rng(0)
    networks = np.repeat(NETWORKS, R // len(NETWORKS))

    def group(n, amplitude):
        x = rng.normal(size=(n, R, WINDOW)).astype(np.float32)
        x[:, networks == "Default"] *= amplitude
        return x

    encoder = RoiPower()
    with torch.no_grad():
        mu_s = pt.pooled(encoder, torch.from_numpy(group(80, 1.0))[:, None]).mean(0).numpy()
        mu_t = pt.pooled(encoder, torch.from_numpy(group(80, 0.7))[:, None]).mean(0).numpy()
        test = group(6, 1.0)
        start = pt.pooled(encoder, torch.from_numpy(test)[:, None]).numpy()
    target = mu_t if goal == "mean" else start + mu_t - mu_s
    run = pt.perturb_windows(encoder, test, target, float(np.sum((mu_s - mu_t) ** 2)),
                             pt.PerturbationConfig(goal=goal, steps=100))
    table = pt.network_magnitudes(pt.roi_magnitudes(run["delta"], np.arange(6))[1], networks)
    ranked = table.sort_values("rank")
    assert ranked["network"].iloc[0] == "Default"
    assert ranked["magnitude"].iloc[0] > 2 * ranked["magnitude"].iloc[1]
    closed, projected = pt.closed_shares(run["start"], run["end"], target, mu_s, mu_t)
    assert closed.mean() > 0.8 and projected.mean() > 0.8


def test_group_difference_permutation_test_tells_a_real_difference_from_none():
    rng = np.random.default_rng(0)
    rep = rng.normal(size=(40, 6))
    is_target = np.arange(40) % 2 == 0
    none = pt.group_difference(rep, is_target, 500)
    shifted = rep.copy()
    shifted[is_target, 0] += 1.5
    real = pt.group_difference(shifted, is_target, 500)
    assert none["p"] > 0.05 and real["p"] == pytest.approx(1 / 501)
    assert real["distance"] > real["null_95"] and none["distance"] < none["null_95"]
    direct = np.linalg.norm(shifted[is_target].mean(0) - shifted[~is_target].mean(0))
    assert real["distance"] == pytest.approx(direct)
    assert pt.group_difference(rep, is_target, 500) == none                 # deterministic
    with pytest.raises(InputError, match="permutations"):
        pt.PerturbationConfig(permutations=0)


def test_perturb_command_writes_the_record_tables_and_a_deterministic_figure(planted, tmp_path):
    from test_figures import assert_real_image

    out = tmp_path / "jobs" / "seed0.json"
    run_cli(["perturbation", "--method", "random", "--seed", "0", "--shards", str(planted / "shards"),
             "--cohorts", "c", "--labels", str(planted / "labels.tsv"), "--out", str(out),
             "--encoder", json.dumps(random_spec(planted)),
             "--settings", json.dumps({"label": "diagnosis", "source": 0, "target": 1, "steps": 15,
                                       "threads": 1})])
    record = json.loads(out.read_text())
    assert_contract(record, "perturbation")
    assert record["label"] == "diagnosis" and record["source"]["kind"] == "random"
    assert record["n_subjects"] == {"train": 18, "val": 0, "test": 3}       # test subjects of the source group
    test = record["test"]
    for prefix in ("", "control_"):
        assert {f"{prefix}closed_share", f"{prefix}projected_share", f"{prefix}rms"} <= set(test)
        assert {f"{prefix}magnitude_{n}" for n in NETWORKS} | {f"{prefix}rank_{n}" for n in NETWORKS} <= set(test)
    assert sorted(test[f"rank_{n}"] for n in NETWORKS) == [1.0, 2.0, 3.0, 4.0]
    assert 0 < test["closed_share"] <= 1 and -1 <= test["control_spearman"] <= 1
    assert 0 < test["group_p"] <= 1 and record["details"]["group_difference"]["permutations"] == 1000
    assert record["details"]["loss"].startswith("||pool(x + delta) - mu_t||^2")
    rois = pd.read_csv(tmp_path / "jobs" / "seed0.rois.tsv", sep="\t")
    nets = pd.read_csv(tmp_path / "jobs" / "seed0.networks.tsv", sep="\t")
    assert list(rois.columns) == ["name", "network", "magnitude", "control_magnitude"]
    assert list(rois["name"]) == roi_names()
    assert list(nets.columns) == ["network", "n_rois", "magnitude", "rank", "control_magnitude", "control_rank"]
    for row in nets.itertuples():
        assert row.magnitude == pytest.approx(rois.loc[rois["network"] == row.network, "magnitude"].mean())
        assert test[f"magnitude_{row.network}"] == pytest.approx(row.magnitude)
    figures = []
    for k in range(2):
        run_cli(["figure-perturbation", "--rois", str(tmp_path / "jobs" / "seed0.rois.tsv"),
                 "--labels", str(planted / "labels.tsv"), "--out", str(tmp_path / f"fig{k}.png")])
        assert_real_image(tmp_path / f"fig{k}.png")
        figures.append((tmp_path / f"fig{k}.png").read_bytes())
    assert figures[0] == figures[1]


def test_perturbation_figure_paints_the_atlas(tmp_path, small_atlas):
    from test_figures import assert_real_image

    from brainjepa.figures.perturbation import plot_perturbation

    image, _ = small_atlas
    labels = pd.DataFrame({"index": [1, 2, 3, 4], "name": ["A_1", "B_2", "C_3", "D_4"],
                           "network": ["N1", "N1", "N2", "N2"], "x": [-8.0, 0, 8, 0], "y": [0.0, -10, 0, 10],
                           "z": [0.0, 0, 10, 10]})
    rois = pd.DataFrame({"name": ["A_1", "B_2", "C_3", "D_4"], "network": ["N1", "N1", "N2", "N2"],
                         "magnitude": [0.1, 0.2, 0.3, 0.4], "control_magnitude": [0.2, 0.2, 0.2, 0.2]})
    plot_perturbation(rois, labels, tmp_path / "p.png", image)
    plot_perturbation(rois, labels, tmp_path / "p2.png", image)
    assert_real_image(tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes() == (tmp_path / "p2.png").read_bytes()
    with pytest.raises(InputError, match="ROI 'E_5'"):
        plot_perturbation(pd.concat([rois, rois.iloc[[0]].assign(name="E_5")]), labels, tmp_path / "q.png")
    with pytest.raises(InputError, match="centroids"):
        plot_perturbation(rois, labels.drop(columns="z"), tmp_path / "q.png")


def test_perturb_errors_name_the_problem(planted, tmp_path):
    out = tmp_path / "x.json"
    base = ["perturbation", "--method", "random", "--shards", str(planted / "shards"), "--cohorts", "c",
            "--labels", str(planted / "labels.tsv"), "--out", str(out), "--encoder", json.dumps(random_spec(planted))]

    def run(settings: dict) -> None:
        run_cli([*base, "--settings", json.dumps({"steps": 2, **settings})])

    with pytest.raises(InputError, match="shards lack label column 'amyloid'"):
        run({"label": "amyloid"})
    with pytest.raises(InputError, match="target: the group site='B' has no training subject"):
        run({"label": "site", "source": "A", "target": "B"})
    with pytest.raises(InputError, match="target: diagnosis='2' is not a value of the label"):
        run({"target": "2"})
    with pytest.raises(InputError, match="no network column 'yeo7'"):
        run({"network_column": "yeo7"})
    with pytest.raises(InputError, match="source and target are both '1'"):
        run({"source": "1", "target": "1"})
    with pytest.raises(InputError, match="needs an encoder"):
        run_cli(base[:-2])
    assert not out.exists() and not (tmp_path / "x.rois.tsv").exists()
