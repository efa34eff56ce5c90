"""Figures and the report's tables: what each figure computes, that each file is a real, deterministic image,
and network attention against the encoder's exact attention weights."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from brainjepa.evaluate.attention import AttentionConfig, network_table, roi_attention, token_scores
from brainjepa.figures.common import rgb_from_positions

NETWORKS = ["Vis", "SomMot", "Default"]


def assert_real_image(path, min_side: int = 200) -> None:
    """A readable PNG of a sensible size with more than a handful of colours (not blank)."""
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= min_side
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 20, f"{path}: {len(colours)} colours, looks blank"


def _labels(n_per: int = 6) -> pd.DataFrame:
    rows = []
    for k, net in enumerate(["Subcortical", *NETWORKS]):
        for i in range(n_per):
            rows.append({"index": len(rows) + 1, "name": f"{net}_{i}", "network": net,
                         "hemisphere": "L" if i % 2 else "R", "x": 10.0 * k - 20, "y": 5.0 * i - 15, "z": 4.0 * k})
    return pd.DataFrame(rows)


def _clustered_gradients(labels: pd.DataFrame, spread: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    centres = {net: rng.normal(size=3) for net in labels["network"].unique()}
    values = np.stack([centres[n] for n in labels["network"]]) + spread * rng.normal(size=(len(labels), 3))
    return pd.DataFrame({"name": labels["name"], "g1": values[:, 0], "g2": values[:, 1], "g3": values[:, 2]})


def test_rgb_is_the_min_max_scaled_position():
    rgb = rgb_from_positions(np.array([[0.0, 5, 1], [2, 5, 3], [1, 5, 2]]))
    assert np.allclose(rgb[:, 0], [0, 1, 0.5]) and np.allclose(rgb[:, 1], 0.5) and np.allclose(rgb[:, 2], [0, 1, 0.5])


def test_gradient_space_silhouette_sees_planted_networks(tmp_path):
    from brainjepa.figures.gradients import plot_gradient_space

    labels = _labels()
    tight = plot_gradient_space(_clustered_gradients(labels, 0.05), labels, tmp_path / "a.png")
    loose = plot_gradient_space(_clustered_gradients(labels, 3.0), labels, tmp_path / "b.png")
    assert tight > 0.8 and loose < 0.3
    assert_real_image(tmp_path / "a.png")


def test_gradient_figures_on_the_demo_atlas_are_deterministic(tmp_path):
    """The three gradient figures from a real atlas image, twice: identical bytes; the brain view colours voxels."""
    from brainjepa.figures.gradients import run_gradient_figures
    from brainjepa.group.gradients import write_gradients
    from brainjepa.preprocess.atlas import read_label_table
    from brainjepa.simulate import demo_atlas_paths, write_demo_atlas

    write_demo_atlas(str(tmp_path / "demo"), seed=0)
    paths = demo_atlas_paths(str(tmp_path / "demo"))
    from brainjepa.preprocess.atlas import build_atlas

    build_atlas("MNI152NLin6Asym", tmp_path / "atlas.nii.gz", tmp_path / "labels.tsv", tmp_path / "cache",
                cortical_image=paths["cortical_image"], cortical_labels=paths["cortical_labels"],
                subcortical_image=paths["subcortical_image"], subcortical_labels=paths["subcortical_labels"])
    labels = read_label_table(tmp_path / "labels.tsv")
    grads = _clustered_gradients(labels, 0.1)
    write_gradients(grads[["g1", "g2", "g3"]].to_numpy(), np.array([0.3, 0.2, 0.1]), list(labels["name"]),
                    tmp_path / "gradients.tsv")
    outs = []
    for k in range(2):
        files = [tmp_path / f"{name}{k}.png" for name in ("space", "brain", "eig")]
        run_gradient_figures(tmp_path / "gradients.tsv", tmp_path / "labels.tsv", tmp_path / "atlas.nii.gz", *files)
        outs.append([f.read_bytes() for f in files])
        for f in files:
            assert_real_image(f)
    assert outs[0] == outs[1]


def test_received_and_given_attention_scores():
    """Hand-built weights: every query attends to ROI 2's tokens -> ROI 2 receives everything; given = the share
    of a token's attention that leaves its own ROI."""
    n_rois, n_patches = 4, 3
    n = n_rois * n_patches
    w = torch.zeros(1, 2, n, n)
    w[..., 2 * n_patches:3 * n_patches] = 1.0 / n_patches
    received = token_scores(w, n_rois, n_patches, "received")[0]
    assert torch.allclose(received, torch.tensor([0.0, 0.0, 1.0 / n_patches, 0.0]))
    given = token_scores(w, n_rois, n_patches, "given")[0]
    assert torch.allclose(given, torch.tensor([1.0, 1.0, 0.0, 1.0]))
    # a block-diagonal pattern (each token attends only to its own ROI) gives nothing away
    own = torch.block_diag(*[torch.full((n_patches, n_patches), 1.0 / n_patches)] * n_rois)[None, None]
    assert torch.allclose(token_scores(own, n_rois, n_patches, "given"), torch.zeros(1, n_rois))


def test_roi_attention_equals_the_exact_weights_and_does_not_depend_on_the_batch():
    from test_models import gradients, tiny

    from brainjepa.models import BrainEncoder

    torch.manual_seed(0)
    cfg = tiny(depth=3)
    encoder = BrainEncoder(cfg, gradients()).eval()
    data = np.random.default_rng(0).normal(size=(5, cfg.n_rois, cfg.n_timesteps)).astype(np.float32)
    with torch.no_grad():
        _, every = encoder.forward_with_attention(torch.from_numpy(data).unsqueeze(1))
    expected = every[1][:, [0]].mean(dim=1)                                  # layer 1, head 0
    expected = expected.mean(dim=1).reshape(5, cfg.n_rois, cfg.n_time_patches).mean(dim=2).double().numpy()
    for batch in (1, 2, 5):
        got = roi_attention(encoder, data, AttentionConfig(layer=1, heads=[0], batch_size=batch), "cpu")
        assert np.allclose(got, expected, atol=1e-6)
    with pytest.raises(Exception, match="heads"):
        roi_attention(encoder, data, AttentionConfig(heads=[99]), "cpu")


def test_network_table_normalises_and_tests_the_group_difference():
    rng = np.random.default_rng(0)
    networks = np.array(["A"] * 4 + ["B"] * 4 + ["C"] * 4)
    scores = rng.uniform(0.9, 1.1, size=(40, 12))
    groups = np.array(["0"] * 20 + ["1"] * 20)
    scores[20:, 8:] *= 1.5                                                   # group 1 attends more to C
    table = network_table(scores, groups, networks)
    sums = table.groupby("group")["value"].sum()
    assert np.allclose(sums, 1.0)
    by = table[table["group"] == "0"].set_index("network")
    assert by.loc["C", "difference"] > 0 and by.loc["C", "p_permutation"] < 0.01
    assert (table["p_permutation"] > 0).all() and (table["p_permutation"] <= 1).all()
    assert set(table["n_subjects"]) == {20} and set(table["n_rois"]) == {4}


def test_network_attention_cli_on_a_task(tmp_path):
    """The network-attention command on a small cohort: the tables, the figure, a clear error for a regression task."""
    from test_evaluate import R, _make_eval_data

    from brainjepa.cli import main

    root, _ = _make_eval_data(tmp_path / "data", n_subjects=30)
    labels = pd.DataFrame({"index": range(1, R + 1), "name": [f"roi{i}" for i in range(R)],
                           "network": ["A"] * 4 + ["B"] * (R - 4), "hemisphere": "n/a"})
    labels.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    spec = {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}
    task = {"name": "diagnosis", "cohorts": ["c"], "label": "diagnosis", "kind": "binary"}
    args = ["network-attention", "--encoder", json.dumps(spec), "--shards", str(root / "shards"),
            "--labels", str(tmp_path / "labels.tsv"), "--settings", json.dumps({"task": "diagnosis", "batch_size": 3}),
            "--out-networks", str(tmp_path / "net.tsv"), "--out-rois", str(tmp_path / "rois.tsv"),
            "--figure", str(tmp_path / "att.png")]
    assert main([*args, "--task", json.dumps(task)]) == 0
    table = pd.read_csv(tmp_path / "net.tsv", sep="\t")
    assert sorted(table["group"].astype(str).unique()) == ["0", "1"] and len(table) == 4
    assert table.drop_duplicates("group")["n_subjects"].sum() == 30
    assert len(pd.read_csv(tmp_path / "rois.tsv", sep="\t")) == 2 * R
    assert_real_image(tmp_path / "att.png")
    regression = {"name": "age", "cohorts": ["c"], "label": "age", "kind": "regression"}
    (tmp_path / "net.tsv").unlink()
    assert main([*args, "--task", json.dumps(regression)]) == 1
    assert not (tmp_path / "net.tsv").exists()


def _metrics() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for task, kind in (("age", "regression"), ("sex", "binary")):
        for method in ("fc_linear", "small_finetune", "small_linprobe", "big_finetune", "big_linprobe"):
            for seed in (0, 1):
                row = {"task": task, "kind": kind, "method": method, "seed": seed, "n_test": 20}
                row["test_r" if kind == "regression" else "test_balanced_accuracy"] = rng.uniform(0.4, 0.9)
                rows.append(row)
    return pd.DataFrame(rows)


def test_evaluation_figures(tmp_path):
    from brainjepa.errors import InputError
    from brainjepa.figures import evaluation

    metrics = _metrics()
    evaluation.plot_methods(metrics, tmp_path / "m.png")
    evaluation.plot_finetune_vs_linprobe(metrics, tmp_path / "v.png")
    evaluation.plot_finetune_vs_linprobe(metrics, tmp_path / "v.svg")
    evaluation.plot_scaling(metrics, {"small": 1000, "big": 100000}, tmp_path / "s.png")
    for name in ("m.png", "v.png", "s.png"):
        assert_real_image(tmp_path / name)
    assert (tmp_path / "v.svg").read_text().lstrip().startswith("<?xml")
    first = (tmp_path / "v.svg").read_bytes()
    evaluation.plot_finetune_vs_linprobe(metrics, tmp_path / "v.svg")
    assert (tmp_path / "v.svg").read_bytes() == first                          # no dates, fixed ids
    with pytest.raises(InputError, match="two sizes"):
        evaluation.plot_scaling(metrics, {"small": 1000, "big": 1000}, tmp_path / "s.png")


def test_pretraining_curves_need_the_log_columns(tmp_path):
    from brainjepa.errors import InputError
    from brainjepa.figures.training import plot_pretraining

    steps = np.arange(1, 51)
    pd.DataFrame({"step": steps, "epoch": steps // 10, "loss": 1 / steps, "target_std": 0.5 + 0 * steps,
                  "lr": np.minimum(steps / 10, 1) * 1e-3}).to_csv(tmp_path / "log.csv", index=False)
    plot_pretraining({"run": tmp_path / "log.csv"}, tmp_path / "p.png")
    assert_real_image(tmp_path / "p.png")
    pd.DataFrame({"step": [1], "loss": [1.0]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="bad.csv.*target_std"):
        plot_pretraining({"run": tmp_path / "bad.csv"}, tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()


def test_qc_figures_and_run_table(tmp_path):
    from brainjepa.figures.qc import run_qc_figures

    labels = _labels(4)
    labels.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    rng = np.random.default_rng(0)
    splits, samples, qc_paths = [], [], []
    for cohort in ("big", "small"):
        for i in range(6):
            run_id = f"{cohort}/sub-{cohort}{i}_ses-1_run-1"
            frac = np.ones(len(labels))
            frac[3] = 0.0 if i == 0 else 1.0
            qc = pd.DataFrame({"roi": labels["name"], "n_voxels": 10, "frac_signal": frac,
                               "tsnr": rng.uniform(50, 150, len(labels)),
                               "flag": np.where(frac > 0, "ok", "no_signal")})
            path = tmp_path / "parcellate" / f"{run_id}_qc.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            qc.to_csv(path, sep="\t", index=False)
            qc_paths.append(path)
            splits.append({"run_id": run_id, "cohort": cohort, "subject": f"{cohort}{i}", "session": "1", "run": "1",
                           "split": ("train", "val", "test")[i % 3]})
            samples.append({"cohort": cohort, "subject": f"{cohort}{i}", "bold": "x.nii.gz", "timeseries": ""})
    pd.DataFrame(splits).to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    pd.DataFrame(samples).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    pd.DataFrame([{"cohort": "small", "label": "diagnosis", "value": v, "pretrain": 0, "train": 1, "val": 1,
                   "test": 1} for v in ("0", "1")]).to_csv(tmp_path / "balance.tsv", sep="\t", index=False)
    pd.DataFrame([{"run_id": "small/sub-small5_ses-1_run-1", "split": "test", "n_timepoints": 20,
                   "reason": "shorter than the window (160)"}]).to_csv(tmp_path / "excluded.tsv", sep="\t", index=False)
    table = run_qc_figures(qc_paths, tmp_path / "labels.tsv", tmp_path / "samples.tsv", tmp_path / "splits.tsv",
                           tmp_path / "balance.tsv", [tmp_path / "excluded.tsv"], tmp_path / "rois.png",
                           tmp_path / "splits.png", tmp_path / "runs.tsv")
    by = table.set_index("cohort")
    assert by.loc["big", "runs_with_flagged_roi"] == 1 and by.loc["small", "runs_excluded_from_shards"] == 1
    assert "shorter than the window (160) (1)" in by.loc["small", "exclusion_reasons"]
    assert by.loc["big", "exclusion_reasons"] == "none"
    for name in ("rois.png", "splits.png"):
        assert_real_image(tmp_path / name)


def test_rst_summary_table_renders():
    from docutils.core import publish_parts

    from brainjepa.figures.summary import rst_table

    frame = pd.DataFrame({"task": ["age", "sex"], "method": ["jepa_finetune", "fc_*svm|"], "value": ["0.7", "a\\b"]})
    html = publish_parts(rst_table(frame, "T"), writer="html", settings_overrides={"halt_level": 2})["body"]
    assert "jepa_finetune" in html and "fc_*svm|" in html and "a\\b" in html and html.count("<tr") == 3
