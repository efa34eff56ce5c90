"""Downstream evaluation: metrics, tasks and targets, fine-tuning rules, probes, caches, baselines, tables."""

from __future__ import annotations

import contextlib
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from brainjepa.data.shards import build_shards
from brainjepa.errors import InputError
from brainjepa.evaluate import loop
from brainjepa.evaluate.config import ProtocolConfig
from brainjepa.evaluate.metrics import bootstrap_seed_mean, classification_metrics, regression_metrics
from brainjepa.evaluate.tasks import TaskConfig, load_task, split_manifests
from brainjepa.group.gradients import write_gradients
from brainjepa.group.scaling import ScalingStats
from brainjepa.io import write_timeseries

R, T, WINDOW = 8, 64, 32
SMALL_MODEL = ("model:\n  size: tiny\n  embed_dim: 32\n  depth: 2\n  num_heads: 4\n  predictor_dim: 16\n"
               "  predictor_depth: 1\n  patch_size: 16\n")
AGE = TaskConfig.from_dict("age", {"cohorts": ["c"], "label": "age", "kind": "regression"})
SEX = TaskConfig.from_dict("sex", {"cohorts": ["c"], "label": "sex", "kind": "binary", "positive": "M"})


# ------------------------------------------------------------------------------------------------- metrics
def test_regression_metrics_match_scipy_and_numpy():
    from scipy.stats import pearsonr

    rng = np.random.default_rng(0)
    y, p = rng.normal(size=50), rng.normal(size=50)
    m = regression_metrics(y, p, scale=7.5)
    assert m["mse"] == pytest.approx(np.mean((y - p) ** 2))
    assert m["mae"] == pytest.approx(np.mean(np.abs(y - p)) * 7.5)
    assert m["r"] == pytest.approx(pearsonr(y, p)[0])
    assert m["r2"] == pytest.approx(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))


def test_classification_metrics_match_their_definitions():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=80)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, size=80), 0, 1)
    m = classification_metrics(y, np.stack([1 - p1, p1], axis=1))
    pred = (p1 > 0.5).astype(int)
    tp, fp, fn = np.sum((pred == 1) & (y == 1)), np.sum((pred == 1) & (y == 0)), np.sum((pred == 0) & (y == 1))
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["balanced_accuracy"] == pytest.approx(np.mean([np.mean(pred[y == c] == c) for c in (0, 1)]))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    u = mannwhitneyu(p1[y == 1], p1[y == 0]).statistic
    assert m["auroc"] == pytest.approx(u / (np.sum(y == 1) * np.sum(y == 0)))


def test_numpy_metrics_equal_scikit_learn_with_ties_and_one_class():
    from scipy.stats import pearsonr
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        f1_score,
        mean_absolute_error,
        mean_squared_error,
        r2_score,
        roc_auc_score,
    )

    rng = np.random.default_rng(4)
    y, p = rng.normal(size=30), rng.normal(size=30)
    m = regression_metrics(y, p, scale=2.0)
    assert m["mse"] == pytest.approx(mean_squared_error(y, p))
    assert m["mae"] == pytest.approx(2.0 * mean_absolute_error(y, p))
    assert m["r"] == pytest.approx(pearsonr(y, p)[0])
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert np.isnan(regression_metrics(y, np.zeros(30))["r"])
    labels = rng.integers(0, 2, size=40)
    p1 = np.round(rng.uniform(size=40) * 4) / 4                  # many ties in the scores
    prob = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(labels, prob)
    pred = prob.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert m["f1"] == pytest.approx(f1_score(labels, pred))
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, p1))
    assert np.isnan(classification_metrics(np.ones(5, int), prob[:5])["auroc"])
    three = rng.dirichlet(np.ones(3), size=60)
    y3 = rng.integers(0, 3, size=60)
    m3 = classification_metrics(y3, three)
    assert m3["f1"] == pytest.approx(f1_score(y3, three.argmax(1), average="macro"))
    assert m3["auroc"] == pytest.approx(roc_auc_score(y3, three, multi_class="ovr"))


def test_balanced_class_weights_and_the_weighted_selection_criterion():
    from sklearn.utils.class_weight import compute_class_weight

    from brainjepa.evaluate.tasks import class_weights, subject_loss

    target = np.array([0, 0, 0, 1, 0, 0, 1, 0])
    assert np.allclose(class_weights(target, 2), compute_class_weight("balanced", classes=np.arange(2), y=target))
    assert class_weights(target, 3)[2] == 0.0
    # the majority-class constant predictor has the lower plain NLL on an imbalanced set, not the weighted one
    subject = np.arange(8)
    constant = np.tile([0.75, 0.25], (8, 1))
    informative = np.where(target[:, None] == 1, [0.45, 0.55], [0.55, 0.45])
    weight = class_weights(target, 2)
    assert subject_loss("binary", subject, target, constant) < subject_loss("binary", subject, target, informative)
    assert (subject_loss("binary", subject, target, informative, weight)
            < subject_loss("binary", subject, target, constant, weight))
    # weighted CE in the training loss: torch's weighted mean equals the class-weighted NLL
    logits = torch.log(torch.from_numpy(informative))
    loss = loop.task_loss("binary", logits, torch.from_numpy(target), torch.from_numpy(weight).float())
    assert loss.item() == pytest.approx(subject_loss("binary", subject, target, informative, weight), rel=1e-5)


def test_bootstrap_interval_brackets_the_seed_mean():
    rng = np.random.default_rng(2)
    y = rng.normal(size=60)
    preds = [y + rng.normal(scale=0.5, size=60) for _ in range(3)]
    ci = bootstrap_seed_mean("regression", y, preds, n_boot=300)
    mean_r = np.mean([regression_metrics(y, p)["r"] for p in preds])
    assert ci["r"][0] < mean_r < ci["r"][1] and ci["r"][1] - ci["r"][0] < 0.3


# ------------------------------------------------------------------------------------------------- data
def _make_eval_data(root, n_subjects: int = 60):
    """Per-split shard sets (train/val/test) of one cohort with age, sex and diagnosis planted in the data."""
    rng = np.random.default_rng(0)
    names = [f"roi{i}" for i in range(R)]
    rows = []
    for i in range(n_subjects):
        age = float(rng.uniform(45, 80))
        sex = "M" if i % 2 else "F"
        diagnosis = float(i % 3 == 0)
        shared = rng.normal(size=(T, 1))
        coupling = 0.2 + 0.6 * (age - 45) / 35                 # age: correlation of ROIs 0-3
        data = rng.normal(size=(T, R))
        data[:, :4] = np.sqrt(coupling) * shared + np.sqrt(1 - coupling) * data[:, :4]
        data[:, 4:6] *= 1.5 if sex == "M" else 0.7             # sex: amplitude of ROIs 4-5
        data[:, 6:] *= 0.6 if diagnosis else 1.4               # diagnosis: amplitude of ROIs 6-7
        path = root / "runs" / f"s{i:02d}.parquet"
        write_timeseries(data.astype(np.float32), names, path, {"tr": 2.0})
        split = ("train", "val", "test")[0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)]
        rows.append({"run_id": f"c/sub-s{i:02d}_ses-1_run-1", "cohort": "c", "subject": f"s{i:02d}",
                     "session": "1", "run": "1", "split": split, "path": str(path), "age": round(age, 1),
                     "sex": sex, "diagnosis": diagnosis})
    frame = pd.DataFrame(rows)
    stats = ScalingStats("subject_mean", tuple(names), np.zeros(R), np.ones(R), n_subjects)
    kinds = {"age": "continuous", "sex": "categorical", "diagnosis": "binary"}
    for split in ("train", "val", "test"):
        build_shards(frame[frame["split"] == split], stats, root / "shards" / split, window=WINDOW,
                     label_columns=kinds, categories={"sex": ["F", "M"]}, flat=True, rows_per_row_group=8)
    write_gradients(rng.normal(size=(R, 4)), np.linspace(1, 0.5, 4), names, root / "gradients.tsv")
    (root / "model.yaml").write_text(SMALL_MODEL)
    return root, frame


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    return _make_eval_data(tmp_path_factory.mktemp("evaluate"))


def test_task_windows_keep_splits_apart_and_scale_with_training_subjects(eval_data):
    root, frame = eval_data
    w = load_task(AGE, split_manifests(root / "shards"), WINDOW)
    by_subject = pd.Series(w.split).groupby(w.subject).nunique()
    assert (by_subject == 1).all()                                  # no subject in two splits
    assert len(w.run_id) == len(frame) * (T // WINDOW)              # every non-overlapping window
    train_ages = frame.loc[frame["split"] == "train", "age"]
    assert w.mean == pytest.approx(train_ages.mean()) and w.std == pytest.approx(train_ages.std(ddof=0))
    np.testing.assert_allclose(w.target * w.std + w.mean, w.raw.astype(float))
    sex = load_task(SEX, split_manifests(root / "shards"), WINDOW)
    assert sex.classes == ["F", "M"] and set(sex.target[sex.raw == "M"]) == {1}


def test_temporal_jitter_draws_training_windows_from_the_whole_run(eval_data, tmp_path):
    from brainjepa.evaluate.run import run_evaluation

    root, _ = eval_data
    w = load_task(AGE, split_manifests(root / "shards"), WINDOW, with_data=True)
    index = np.flatnonzero(w.mask("train"))[:6]
    a, b = w.jittered(index, seed=0, epoch=0), w.jittered(index, seed=0, epoch=1)
    np.testing.assert_array_equal(a, w.jittered(index, seed=0, epoch=0))      # deterministic per (seed, epoch)
    assert a.shape == (6, R, WINDOW) and not np.array_equal(a, b)
    for k, i in enumerate(index):                                            # a window of the window's own run
        run = w.runs[i]
        assert any(np.array_equal(a[k], run[:, s:s + WINDOW]) for s in range(run.shape[1] - WINDOW + 1))
    seen = []
    real = loop.fit

    def spy(*args, **kwargs):
        seen.append(kwargs.get("sample"))
        return real(*args, **kwargs)

    spec = {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}
    settings = {"finetune": {"epochs": 2, "warmup_epochs": 1, "temporal_jitter": True}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "fit", spy)
        run_evaluation(AGE, "random_finetune", 0, root / "shards", tmp_path / "j.json",
                       ProtocolConfig.from_dict(settings), spec)
    assert seen and seen[-1] is not None                # the fine-tune's fit (LP-FT's probe fits come first)


def test_target_scaling_ignores_val_and_test_labels(eval_data, tmp_path):
    root, frame = eval_data
    frame = frame.copy()
    frame.loc[frame["split"] != "train", "age"] += 30.0
    stats = ScalingStats("subject_mean", tuple(f"roi{i}" for i in range(R)), np.zeros(R), np.ones(R), len(frame))
    for split in ("train", "val", "test"):
        build_shards(frame[frame["split"] == split], stats, tmp_path / split, window=WINDOW,
                     label_columns={"age": "continuous"}, flat=True)
    moved = load_task(AGE, split_manifests(tmp_path), WINDOW)
    same = load_task(AGE, split_manifests(root / "shards"), WINDOW)
    assert moved.mean == same.mean and moved.std == same.std


def test_include_filter_and_bad_tasks(eval_data):
    root, _ = eval_data
    manifests = split_manifests(root / "shards")
    healthy = TaskConfig.from_dict("age_cn", {"cohorts": ["c"], "label": "age", "kind": "regression",
                                              "include": {"diagnosis": [0]}})
    w = load_task(healthy, manifests, WINDOW)
    assert len(set(w.subject)) == 40
    with pytest.raises(InputError, match="unknown key"):
        TaskConfig.from_dict("x", {"cohorts": ["c"], "label": "age", "kind": "regression", "colour": 1})
    with pytest.raises(InputError, match="no labelled subject"):
        load_task(TaskConfig.from_dict("x", {"cohorts": ["zz"], "label": "age", "kind": "regression"}),
                  manifests, WINDOW)
    with pytest.raises(InputError, match="lack label column"):
        load_task(TaskConfig.from_dict("x", {"cohorts": ["c"], "label": "iq", "kind": "regression"}),
                  manifests, WINDOW)


# ------------------------------------------------------------------------------------------------- fine-tuning
def _small_encoder(root, drop_path: float = 0.0, seed: int = 0):
    from brainjepa.evaluate.encoders import load_encoder

    spec = {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}
    return load_encoder(spec, [f"roi{i}" for i in range(R)], WINDOW, seed=seed, drop_path=drop_path)[0]


def test_layer_decay_gives_each_layer_its_rate(eval_data):
    from brainjepa.evaluate.config import FinetuneConfig
    from brainjepa.evaluate.finetune import build_finetune

    root, _ = eval_data
    cfg = FinetuneConfig(base_lr=2.56e-2, batch_size=10, layer_decay=0.5, weight_decay=0.05)
    model, optimizer, lr = build_finetune(_small_encoder(root), 1, cfg, world_size=1)
    assert lr == pytest.approx(2.56e-2 * 10 / 256)
    expected = {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}                    # depth 2: embeddings, 2 blocks, norm + head
    layer_of = {}
    for group in optimizer.param_groups:
        assert group["lr_scale"] == pytest.approx(expected[group["layer"]])
        for p in group["params"]:
            layer_of[id(p)] = (group["layer"], group["weight_decay"])
    names = dict(model.named_parameters())
    assert layer_of[id(names["encoder.patch_embed.proj.weight"])] == (0, 0.05)
    assert layer_of[id(names["encoder.blocks.0.attn.qkv.weight"])] == (1, 0.05)
    assert layer_of[id(names["encoder.blocks.1.norm1.weight"])] == (2, 0.0)
    assert layer_of[id(names["head.fc.weight"])] == (3, 0.05)
    assert layer_of[id(names["head.fc.bias"])] == (3, 0.0)
    # the loop applies the scales: after a step every group's lr is the schedule's value times its scale
    x, y = torch.randn(20, 1, R, WINDOW), torch.randn(20)
    loop.fit(model, optimizer, (x, y), (x[:4], y[:4].numpy(), np.arange(4)), "regression", epochs=2,
             warmup_epochs=0, batch_size=10, lr=lr, min_lr=lr, seed=0, device=torch.device("cpu"),
             autocast=contextlib.nullcontext)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(lr * expected[group["layer"]])


def test_drop_path_is_active_in_training_and_off_in_evaluation(eval_data):
    root, _ = eval_data
    with_dp = _small_encoder(root, drop_path=0.5)
    plain = _small_encoder(root, drop_path=0.0)
    plain.load_state_dict(with_dp.state_dict())
    assert [b.drop_path for b in with_dp.blocks] == [0.0, 0.5]       # linear over the blocks, to the rate
    x = torch.randn(6, 1, R, WINDOW)
    with_dp.train()
    torch.manual_seed(0)
    a = with_dp(x)
    torch.manual_seed(1)
    b = with_dp(x)
    assert not torch.allclose(a, b)                                   # samples' branches dropped at random
    with_dp.eval()
    plain.eval()
    torch.testing.assert_close(with_dp(x), plain(x))                 # evaluation: no drop path


def test_selected_epoch_is_the_best_validation_epoch(eval_data, tmp_path):
    from brainjepa.evaluate.run import run_evaluation

    root, _ = eval_data
    settings = ProtocolConfig.from_dict({"finetune": {"epochs": 4, "warmup_epochs": 1, "base_lr": 0.05,
                                                      "batch_size": 8}})
    spec = {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}
    record = run_evaluation(AGE, "random_finetune", 0, root / "shards", tmp_path / "a.json", settings, spec)
    history = record["selected"]["history"]
    best = max(history, key=lambda h: (h["val_r"], -h["val_loss"]))     # the task's metric, ties by the loss
    assert record["selected"]["metric"] == "r" and record["selected"]["epoch"] == best["epoch"]
    assert record["val"]["r"] == pytest.approx(best["val_r"], rel=1e-4)   # the kept state is that epoch's
    assert record["val"]["mse"] == pytest.approx(best["val_loss"], rel=1e-4)
    assert json.loads((tmp_path / "a.json").read_text())["selected"]["epoch"] == record["selected"]["epoch"]
    assert record["n_subjects"] == {"train": 36, "val": 12, "test": 12} and len(record["predictions"]) == 12


def test_fit_never_sees_the_test_split(eval_data, monkeypatch):
    """The loop gets train and val only: test labels changed -> the same selection and validation metrics."""
    from brainjepa.evaluate import run as run_module

    root, _ = eval_data
    seen = {}
    real_fit = loop.fit

    def spy(model, optimizer, train, val, *args, **kwargs):
        seen["n"] = (len(train[0]), len(val[0]))
        return real_fit(model, optimizer, train, val, *args, **kwargs)

    monkeypatch.setattr(loop, "fit", spy)
    settings = ProtocolConfig.from_dict({"linprobe": {"epochs": 3, "warmup_epochs": 0}})
    w = load_task(AGE, split_manifests(root / "shards"), WINDOW)
    feats = np.random.default_rng(0).normal(size=(len(w.run_id), 5)).astype(np.float32)
    torch.manual_seed(0)
    first, _ = run_module._gradient_head("linprobe", w, feats, settings, 0)
    w.target[w.mask("test")] = 100.0
    torch.manual_seed(0)
    second, info = run_module._gradient_head("linprobe", w, feats, settings, 0)
    assert seen["n"] == (int(w.mask("train").sum()), int(w.mask("val").sum()))
    np.testing.assert_allclose(first["val"], second["val"])


# ------------------------------------------------------------------------------------------------- probes
def test_cached_features_equal_fresh_ones(eval_data, tmp_path):
    from brainjepa.evaluate.features import extract, read_features, run_features
    from brainjepa.evaluate.run import _features_for

    root, _ = eval_data
    spec = {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}
    run_features(spec, root / "shards", ["c"], tmp_path / "f.npz", seed=3)
    cache = read_features(tmp_path / "f.npz")
    w = load_task(AGE, split_manifests(root / "shards"), WINDOW, with_data=True)
    encoder = _small_encoder(root, seed=3)
    pooled, rois = extract(encoder, w.data, encoder.cfg.n_time_patches, torch.device("cpu"))
    joined = _features_for(w, [tmp_path / "f.npz"])
    np.testing.assert_allclose(joined["pooled"], pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(joined["roi_tokens"].astype(np.float32), rois.astype(np.float32), atol=1e-3)
    assert cache["meta"]["encoder"] == spec and cache["roi_tokens"].shape[1:] == (R, 32)
    tokens = encoder(torch.from_numpy(w.data[:2]).unsqueeze(1))
    np.testing.assert_allclose(pooled[:2], tokens.mean(dim=1).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_feature_windows_are_the_tasks_windows_and_an_absent_cohort_is_named(eval_data):
    from brainjepa.evaluate.tasks import cohort_windows, split_windows

    root, _ = eval_data
    manifests = split_manifests(root / "shards")
    run_id, start, data, names = cohort_windows(manifests, ["c"], WINDOW)
    per_split = split_windows(manifests, ["c"], WINDOW)
    assert list(run_id) == [r for s in ("train", "val", "test") for r in per_split[s].run_id]
    np.testing.assert_array_equal(data, np.concatenate([per_split[s].data for s in ("train", "val", "test")]))
    assert data.shape == (len(start), R, WINDOW) and names == [f"roi{i}" for i in range(R)]
    with pytest.raises(InputError, match=r"cohort\(s\) \['zz'\]: no run with a full window"):
        cohort_windows(manifests, ["zz"], WINDOW)
    assert split_windows(manifests, ["zz"], WINDOW, skip_empty=True) == {}


def test_lars_scales_matrix_updates_by_the_trust_ratio():
    w = torch.nn.Parameter(torch.full((2, 2), 2.0))
    b = torch.nn.Parameter(torch.zeros(2))
    opt = loop.LARS([w, b], lr=1.0, momentum=0.0, trust_coefficient=0.001)
    w.grad, b.grad = torch.full((2, 2), 0.5), torch.ones(2)
    opt.step()
    ratio = 0.001 * 4.0 / 1.0                                          # |w| = 4, |g| = 1
    torch.testing.assert_close(w.detach(), torch.full((2, 2), 2.0 - 0.5 * ratio))
    torch.testing.assert_close(b.detach(), -torch.ones(2))             # 1-D: the plain step


@pytest.mark.parametrize("method", ["random_linprobe", "random_attentive", "random_closed_form", "fc_linear",
                                    "fc_svm", "random_finetune"])
def test_every_method_writes_its_json_through_the_cli(eval_data, tmp_path, method):
    from brainjepa.cli import main

    root, _ = eval_data
    spec = {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}
    settings = {"finetune": {"epochs": 2, "warmup_epochs": 1}, "linprobe": {"epochs": 3},
                "attentive": {"epochs": 3, "warmup_epochs": 1}, "closed_form": {"grid": 5}, "svm": {"grid": 3}}
    args = ["--shards", str(root / "shards"), "--protocols", json.dumps(settings)]
    if method.endswith(("probe", "attentive", "form")):
        assert main(["features", "--encoder", json.dumps(spec), "--cohort", "c", "--out", str(tmp_path / "f.npz"),
                     *args]) == 0
        args += ["--features", str(tmp_path / "f.npz")]
    elif method.endswith("finetune"):
        args += ["--encoder", json.dumps(spec)]
    for task in (SEX, AGE):
        out = tmp_path / f"{task.name}.json"
        task_json = json.dumps({"name": task.name, "cohorts": list(task.cohorts), "label": task.label,
                                "kind": task.kind, "positive": task.positive})
        assert main(["evaluate", "--task", task_json, "--method", method, "--seed", "0", "--out", str(out),
                     *args]) == 0
        record = json.loads(out.read_text())
        assert record["method"] == method and len(record["predictions"]) == 12
        assert set(record["test"]) == ({"mse", "mae", "r", "r2"} if task.kind == "regression"
                                       else {"accuracy", "balanced_accuracy", "f1", "auroc"})


def test_fine_tuning_finds_a_planted_amplitude_effect(eval_data):
    """Positive control of the fine-tune (the demo's sex and diagnosis effects are too weak for ~70 training
    subjects: bench/experiments/finetune_positive_control.py): an untrained encoder fine-tuned on 36 subjects finds the
    fixture's sex, planted as the amplitude of ROIs 4-5 only, on the held-out subjects; loaded windows go
    through evaluate_windows, the code of rule evaluate."""
    from brainjepa.evaluate.run import evaluate_windows

    root, _ = eval_data
    w = load_task(SEX, split_manifests(root / "shards"), WINDOW, with_data=True)
    spec = {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}
    cfg = ProtocolConfig.from_dict({"finetune": {"epochs": 40, "warmup_epochs": 1, "base_lr": 0.03},
                                    "class_weight": "balanced", "threads": 1})
    record = evaluate_windows(w, "random_finetune", 0, cfg, spec)
    assert record["n_subjects"] == {"train": 36, "val": 12, "test": 12}
    assert record["test"]["auroc"] >= 0.9 and record["test"]["balanced_accuracy"] >= 0.75
    with pytest.raises(InputError, match="needs the task's windows"):
        evaluate_windows(load_task(SEX, split_manifests(root / "shards"), WINDOW), "random_finetune", 0, cfg, spec)


def test_closed_form_and_fc_jobs_do_not_import_torch(eval_data, tmp_path):
    """An evaluation job pays its imports (torch: about 3 s on a small machine, times dozens of jobs in the
    demo): the FC and closed-form heads do not import it."""
    import subprocess
    import sys

    root, _ = eval_data
    argv = ["evaluate", "--task", json.dumps({"name": "sex", "cohorts": ["c"], "label": "sex", "kind": "binary",
                                               "positive": "M"}),
            "--method", "fc_linear", "--seed", "0", "--shards", str(root / "shards"),
            "--protocols", json.dumps({"closed_form": {"grid": 3}, "class_weight": "balanced"}),
            "--out", str(tmp_path / "fc.json")]
    code = ("import json, sys; from brainjepa.cli import main; rc = main(json.loads(sys.argv[1])); "
            "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"rc": 0, "torch": False}
    record = json.loads((tmp_path / "fc.json").read_text())
    train = eval_data[1].query("split == 'train'")["sex"]
    expected = [len(train) / (2 * (train == c).sum()) for c in ("F", "M")]
    assert record["protocol"] == "fc_linear" and record["class_weight"] == pytest.approx(expected)


def test_fc_baseline_finds_the_planted_correlation(eval_data, tmp_path):
    from brainjepa.evaluate.run import run_evaluation

    root, _ = eval_data
    record = run_evaluation(AGE, "fc_linear", 0, root / "shards", tmp_path / "fc.json")
    assert record["test"]["r"] > 0.5


def test_summary_tables_and_metrics_tsv(eval_data, tmp_path):
    from brainjepa.evaluate.run import run_evaluation
    from brainjepa.evaluate.summary import run_summary

    root, _ = eval_data
    paths = []
    for seed in (0, 1):
        for method in ("fc_linear", "fc_svm"):
            paths.append(tmp_path / f"{method}-{seed}.json")
            run_evaluation(SEX, method, seed, root / "shards", paths[-1],
                           ProtocolConfig.from_dict({"svm": {"grid": 3}}))
    run_summary(paths, tmp_path / "metrics.tsv", tmp_path / "tables", n_boot=100)
    table = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    assert len(table) == 4 and {"test_accuracy", "val_auroc", "selected_regularisation"} <= set(table.columns)
    text = (tmp_path / "tables" / "sex.md").read_text()
    assert "| fc_svm | 2 |" in text and "[" in text
    assert "fc_linear" in (tmp_path / "tables" / "summary.md").read_text()


def test_method_names_are_checked():
    from brainjepa.evaluate.run import parse_method

    assert parse_method("jepa_closed_form") == ("jepa", "closed_form")
    assert parse_method("fc_svm") == (None, "fc_svm")
    with pytest.raises(InputError, match="expected <encoder>_<protocol>"):
        parse_method("jepa_magic")


def test_official_checkpoint_is_evaluated_through_the_converter(eval_data, tmp_path):
    """A synthetic checkpoint in the released layout -> convert-checkpoint -> fine-tune and probe rows."""
    from test_convert import official_checkpoint, official_shapes

    from brainjepa.evaluate.features import run_features
    from brainjepa.evaluate.run import run_evaluation
    from brainjepa.models.convert import convert_official

    root, _ = eval_data
    shapes = official_shapes(dim=384, depth=1, pdim=192, pdepth=1, rois=R, patches=WINDOW // 16, grads=4)
    torch.save(official_checkpoint(shapes), tmp_path / "official.pth")
    convert_official(tmp_path / "official.pth", root / "gradients.tsv", tmp_path / "official.pt")
    spec = {"kind": "checkpoint", "path": str(tmp_path / "official.pt")}
    settings = ProtocolConfig.from_dict({"finetune": {"epochs": 1, "warmup_epochs": 0}})
    record = run_evaluation(SEX, "official_finetune", 0, root / "shards", tmp_path / "ft.json", settings, spec)
    assert record["source"]["source"] == str(tmp_path / "official.pth") and len(record["predictions"]) == 12
    run_features(spec, root / "shards", ["c"], tmp_path / "f.npz")
    record = run_evaluation(SEX, "official_closed_form", 0, root / "shards", tmp_path / "cf.json", settings,
                            features=[tmp_path / "f.npz"])
    assert record["encoder"] == "official" and np.isfinite(record["test"]["accuracy"])


def test_ddp_fine_tuning_equals_one_process_with_the_global_batch(eval_data, tmp_path):
    """torchrun, 2 Gloo processes at batch 4 = one process at batch 8: the same steps, so the same predictions
    (drop path off: its draws differ by rank); rank 0 writes the JSON."""
    import os
    import subprocess
    import sys

    root, _ = eval_data
    spec = json.dumps({"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")})
    task = json.dumps({"name": "age", "cohorts": ["c"], "label": "age", "kind": "regression"})

    def settings(batch):
        return json.dumps({"finetune": {"epochs": 2, "warmup_epochs": 1, "batch_size": batch, "drop_path": 0.0}})

    common = ["evaluate", "--task", task, "--method", "random_finetune", "--seed", "0", "--encoder", spec,
              "--shards", str(root / "shards")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "brainjepa.cli", *common, "--protocols", settings(4), "--out", str(tmp_path / "ddp.json")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "brainjepa.cli", *common, "--protocols", settings(8), "--out",
                          str(tmp_path / "one.json")], capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ddp", "one"))
    assert a["selected"]["lr"] == pytest.approx(b["selected"]["lr"])
    np.testing.assert_allclose([p["prediction"] for p in a["predictions"]], [p["prediction"] for p in b["predictions"]],
                               rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kind", ["regression", "binary"])
def test_vectorised_bootstrap_metrics_equal_the_reference_ones(kind):
    from brainjepa.evaluate.metrics import fast_metrics, task_metrics

    rng = np.random.default_rng(5)
    if kind == "regression":
        y = rng.normal(size=(6, 30))
        p = y + rng.normal(size=(6, 30))
    else:
        y = rng.integers(0, 2, size=(6, 30))
        p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, size=(6, 30)), 0, 1)
        p = np.stack([1 - p1, p1], axis=-1)
    fast = fast_metrics("regression" if kind == "regression" else "classification", y, p, 2.0)
    for k in range(6):
        ref = task_metrics(kind, y[k], p[k], 2.0)
        for name, value in ref.items():
            assert fast[name][k] == pytest.approx(value), name


# ------------------------------------------------------------------------------------------------- shard checksums
CORRUPTED = (r"val/shard-00000\.parquet: sha256 [0-9a-f]{64} does not match [0-9a-f]{64} in "
             r"\S*val/manifest\.json; the shard is corrupted or was replaced \(rebuild the shards\)")


def _corrupted_copy(eval_data, tmp_path):
    """A copy of the fixture's shard sets with one byte of ``val/shard-00000.parquet`` flipped (same size)."""
    import shutil

    root, _ = eval_data
    copy = tmp_path / "shards"
    shutil.copytree(root / "shards", copy)
    path = copy / "val" / "shard-00000.parquet"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    path.write_bytes(bytes(raw))
    assert path.stat().st_size == (root / "shards" / "val" / "shard-00000.parquet").stat().st_size
    return copy


def test_a_flipped_byte_in_a_val_shard_stops_evaluation_and_features(eval_data, tmp_path, capsys):
    """Evaluation reads verify the shards' sha256 (same size, one byte changed: the metrics would change)."""
    from brainjepa.cli import main
    from brainjepa.evaluate.tasks import read_split

    root, _ = eval_data
    copy = _corrupted_copy(eval_data, tmp_path)
    for columns, with_data in ((["subject", "age"], False), ([], True)):  # some columns: still the whole file
        with pytest.raises(InputError, match=CORRUPTED):
            read_split(copy / "val" / "manifest.json", "val", columns, with_data)
    assert len(read_split(copy / "train" / "manifest.json", "train", ["subject"], False)) == 36  # clean shards
    task = json.dumps({"name": "age", "cohorts": ["c"], "label": "age", "kind": "regression"})
    assert main(["evaluate", "--shards", str(copy), "--task", task, "--method", "fc_linear", "--seed", "0",
                 "--protocols", json.dumps({"closed_form": {"grid": 3}}), "--out", str(tmp_path / "e.json")]) != 0
    assert re.search(CORRUPTED, capsys.readouterr().err) and not (tmp_path / "e.json").exists()
    spec = {"kind": "random", "config": str(root / "model.yaml"), "gradients": str(root / "gradients.tsv")}
    assert main(["features", "--shards", str(copy), "--encoder", json.dumps(spec), "--cohort", "c",
                 "--out", str(tmp_path / "f.npz")]) != 0
    assert re.search(CORRUPTED, capsys.readouterr().err) and not (tmp_path / "f.npz").exists()


def test_shard_checksums_are_computed_once_per_process(eval_data, tmp_path, monkeypatch):
    """A second read of a shard in the same process does not hash it again; a changed file is hashed again."""
    import shutil

    from brainjepa.data import shards
    from brainjepa.evaluate.tasks import read_split

    root, _ = eval_data
    copy = tmp_path / "shards"
    shutil.copytree(root / "shards", copy)
    hashed = []
    real = shards.check_shard_sha256
    monkeypatch.setattr(shards, "check_shard_sha256", lambda path, *a, **k: hashed.append(str(path)) or
                        real(path, *a, **k))
    manifest = copy / "val" / "manifest.json"
    first = read_split(manifest, "val", [], True)
    assert hashed == [str(copy / "val" / "shard-00000.parquet")]
    pd.testing.assert_frame_equal(read_split(manifest, "val", ["subject", "age"], False), first[["subject", "age"]])
    read_split(manifest, "val", [], True)
    assert len(hashed) == 1
    _corrupted_copy(eval_data, tmp_path / "again")  # not this copy: a fresh one for the flipped file's bytes
    (copy / "val" / "shard-00000.parquet").write_bytes((tmp_path / "again" / "shards" / "val" /
                                                         "shard-00000.parquet").read_bytes())
    with pytest.raises(InputError, match=CORRUPTED):  # rewritten in place: checked again
        read_split(manifest, "val", ["subject"], False)
    assert len(hashed) == 2


def test_a_one_class_training_split_is_named_with_its_task_split_and_counts(eval_data, tmp_path, capsys):
    """Every training subject male: each evaluate job failed with scikit-learn's raw `needs samples of at least 2
    classes in the data, but the data contains only one class: np.int64(1)`, naming neither task nor split. The
    check the workflow runs on the sheets at its start (tasks.task_split_problems) now names both, with counts."""
    from brainjepa.cli import main
    from brainjepa.evaluate.tasks import task_split_problems

    root, frame = eval_data
    frame = frame.copy()
    frame.loc[frame["split"] == "train", "sex"] = "M"
    stats = ScalingStats("subject_mean", tuple(f"roi{i}" for i in range(R)), np.zeros(R), np.ones(R), len(frame))
    for split in ("train", "val", "test"):
        build_shards(frame[frame["split"] == split], stats, tmp_path / "shards" / split, window=WINDOW,
                     label_columns={"age": "continuous", "sex": "categorical", "diagnosis": "binary"},
                     categories={"sex": ["F", "M"]}, flat=True, rows_per_row_group=8)
    expected = ("task sex: the training split holds 1 class of 'sex' ('M': 36 subjects), a classifier needs at "
                "least 2 ('F': 12, 'M': 48 in all splits); stratify the cohort's splits by the label "
                "(splits.stratify: {c: sex}) or add subjects")
    assert task_split_problems(SEX, frame) == [expected]
    with pytest.raises(InputError, match=re.escape(expected)):
        load_task(SEX, split_manifests(tmp_path / "shards"), WINDOW)
    task_json = json.dumps({"name": "sex", "cohorts": ["c"], "label": "sex", "kind": "binary", "positive": "M"})
    out = tmp_path / "sex.json"
    assert main(["evaluate", "--shards", str(tmp_path / "shards"), "--task", task_json, "--method", "fc_linear",
                 "--seed", "0", "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert expected in err and "np." not in err and not out.exists()
    # the other problems a task's splits can have, from the same function
    assert task_split_problems(AGE, frame[frame["split"] != "test"]) == [
        "task age: no labelled subject in split 'test' (labelled subjects of cohort(s) c: train 36, val 12, test 0)"]
    three = frame.assign(sex=["M", "F", "X"] * (len(frame) // 3))
    assert task_split_problems(SEX, three)[0].startswith(
        "task sex: a binary label needs exactly 2 values, 'sex' has 3 ('F': 20, 'M': 20, 'X': 20 subjects)")
    multi = TaskConfig.from_dict("sex3", {"cohorts": ["c"], "label": "sex", "kind": "multiclass"})
    stray = three.assign(sex=np.where((three["split"] == "train") & (three["sex"] == "X"), "F", three["sex"]))
    assert task_split_problems(multi, stray) == [
        "task sex3: value(s) of 'sex' without a training subject ('X': 8 subjects in val/test): a classifier "
        "cannot predict them"]
