"""The pretraining study: repeated-CV probes, paired bootstraps, data fractions, label counts, and a tiny study end
to end (every output, a rerun that neither trains nor extracts)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainjepa.data.shards import build_shards, load_manifest, monitor_subjects_of
from brainjepa.errors import InputError
from brainjepa.evaluate import crossval
from brainjepa.evaluate.crossval import cv_folds, first_labelled, oof_predictions, paired_bootstrap
from brainjepa.evaluate.study import StudyConfig, StudyInputs, fraction_subjects, run_study
from brainjepa.group.gradients import write_gradients
from brainjepa.group.scaling import ScalingStats, write_scaling_stats
from brainjepa.io import write_timeseries

R, T, WINDOW = 8, 64, 32
MODEL = ("model:\n  size: tiny\n  embed_dim: 32\n  depth: 2\n  num_heads: 4\n  predictor_dim: 16\n"
         "  predictor_depth: 1\n  patch_size: 16\ndata:\n  batch_size: 8\n  num_workers: 0\n"
         "optim:\n  epochs: 6\n  warmup_epochs: 1\nrun:\n  log_every: 1\n  monitor_every: 2\n")
TASKS = {"age": {"cohorts": ["c"], "label": "age", "kind": "regression"},
         "sex": {"cohorts": ["c"], "label": "sex", "kind": "binary", "positive": "M"},
         # a transfer task (external test cohort): not cross-validated by the study, skipped
         "agetransfer": {"cohorts": ["c"], "label": "age", "kind": "regression", "test_cohorts": ["x"]}}
STUDY = {"name": "tiny", "budget_steps": 4, "checkpoints": 2, "seeds": [0], "random_seeds": [0, 1],
         "data_fractions": [0.5, 1.0], "label_counts": ["all", 8], "readouts": ["mean", "roi", "cross_roi"],
         "cv": {"folds": 3, "repeats": 2}, "bootstrap": 200}


# ------------------------------------------------------------------------------------------------- config
def test_study_config_names_unknown_and_bad_keys(tmp_path):
    ok = StudyConfig.from_dict({**STUDY, "configs": {"jepa": {"config": "x.yaml", "set": ["optim.lr=1e-3"]}}})
    assert ok.label_counts == (8, "all") and ok.data_fractions == (0.5, 1.0) and ok.first == "jepa"
    assert ok.cv.folds == 3 and ok.cv.selection == "log_loss"
    bad = [({"epochs": 3}, "unknown key.*epochs"),
           ({"configs": {"jepa": {"config": "x.yaml", "sets": []}}}, r"configs\.jepa\.sets"),
           ({"cv": {"folds": 3, "shuffle": True}}, r"cv\.shuffle"),
           ({"label_counts": [0, "all"]}, "label_counts"),
           ({"data_fractions": [0.0, 1.0]}, "data_fractions"),
           ({"readouts": ["mean", "cls"]}, "readouts"),
           ({"configs": {"random": {"config": "x.yaml"}}}, "configs.random"),
           ({"configs": {"jepa": {"config": "x.yaml", "set": ["optim.lr"]}}}, "section.key=value")]
    for change, message in bad:
        tree = {**STUDY, "configs": {"jepa": {"config": "x.yaml"}}, **change}
        with pytest.raises(InputError, match=message):
            StudyConfig.from_dict(tree, "study.yaml")
    with pytest.raises(InputError, match="missing key.*configs"):
        StudyConfig.from_dict({"name": "x"})


def test_example_study_configs_parse_and_their_training_configs_load():
    from brainjepa.evaluate.study import load_study
    from brainjepa.train.config import load_config

    for name in ("objectives", "ablations"):
        study = load_study(f"config/study/{name}.yaml")
        assert len(study.random_seeds) >= 5 and study.label_counts[-1] == "all"
        for spec in study.configs.values():
            try:
                load_config(spec.config, list(spec.set))
            except InputError as exc:   # a setting another change adds (optim.regularizer) is not there yet
                assert "regularizer" in str(exc), exc


# ------------------------------------------------------------------------------------------------- probes
def test_cv_folds_depend_on_the_targets_and_settings_only_and_stratify():
    y = np.array([0] * 12 + [1] * 6)
    a, b = cv_folds(y, "binary", 3, 2), cv_folds(y.copy(), "binary", 3, 2)
    assert len(a) == 2 and all(len(r) == 3 for r in a)
    for ra, rb in zip(a, b):
        for (tra, tea), (trb, teb) in zip(ra, rb):
            assert np.array_equal(tra, trb) and np.array_equal(tea, teb)
    for folds in a:
        assert np.array_equal(np.sort(np.concatenate([te for _, te in folds])), np.arange(18))  # each once
        assert all(np.bincount(y[te]).tolist() == [4, 2] for _, te in folds)                  # stratified
    assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a[0], a[1]))                  # repeats differ


def test_label_counts_cut_training_folds_by_a_stable_hash_and_keep_classes():
    subjects = np.array([f"c/s{i:02d}" for i in range(30)])
    y = np.array([0] * 20 + [1] * 10)
    train = np.r_[0:16, 20:28]                                  # 16 of class 0, 8 of class 1
    cut = first_labelled(train, subjects, y, "binary", 6, seed=0)
    assert len(cut) == 6 and set(cut) <= set(train) and sorted(np.bincount(y[cut]).tolist()) == [2, 4]
    assert np.array_equal(cut, first_labelled(train, subjects, y, "binary", 6, seed=0))          # stable
    assert not np.array_equal(cut, first_labelled(train, subjects, y, "binary", 6, seed=1))      # by repeat
    assert set(first_labelled(train, subjects, y, "binary", 2, seed=0)) and len(
        set(y[first_labelled(train, subjects, y, "binary", 2, seed=0)])) == 2                     # both classes
    assert np.array_equal(first_labelled(train, subjects, y, "binary", None, 0), train)
    assert np.array_equal(first_labelled(train, subjects, y, "binary", 100, 0), train)
    small = first_labelled(train, subjects, y.astype(float), "regression", 5, 0)
    assert set(small) <= set(first_labelled(train, subjects, y.astype(float), "regression", 10, 0))   # nested
    # the test folds stay whole: every subject gets a prediction with few labels
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)) + y[:, None]
    pred = oof_predictions(x, y, "binary", 2, cv_folds(y, "binary", 3, 2), subjects, label_count=6)
    assert pred.shape == (30, 2) and np.allclose(pred.sum(axis=1), 1)


def test_paired_bootstrap_separates_a_better_predictor_and_gives_zero_for_identical_ones():
    rng = np.random.default_rng(0)
    y = rng.normal(size=150)
    good = y + 0.3 * rng.normal(size=150)
    poor = y + 2.0 * rng.normal(size=150)
    result = paired_bootstrap("regression", y, good, poor, "r", n_boot=500, seed=0)
    assert result["delta"] > 0.3 and result["ci_low"] > 0 and result["p"] == 0.0
    assert crossval.beats(result, "r") and not crossval.beats(
        paired_bootstrap("regression", y, poor, good, "r", n_boot=500), "r")
    same = paired_bootstrap("regression", y, good, good.copy(), "r", n_boot=500)
    assert same["delta"] == 0 and same["ci_low"] == same["ci_high"] == 0 and same["p"] == 1.0
    labels = (y > 0).astype(int)
    prob = np.stack([1 - (good > 0) * 0.8 - 0.1, (good > 0) * 0.8 + 0.1], axis=1)
    flat = np.full((150, 2), 0.5)
    auroc = paired_bootstrap("binary", labels, prob, flat, "auroc", n_boot=500)
    assert auroc["ci_low"] > 0.2
    assert paired_bootstrap("regression", y, good, poor, "mae", n_boot=200)["p"] == 0.0   # lower is better


def test_readouts_of_the_encoder_tokens():
    from brainjepa.evaluate.features import readout_features

    rng = np.random.default_rng(0)
    pooled, rois = rng.normal(size=(3, 16)), rng.normal(size=(3, 5, 16)).astype(np.float16)
    assert readout_features(pooled, rois, "mean").shape == (3, 16)
    assert np.array_equal(readout_features(pooled, rois, "roi")[1, 16:32], rois[1, 1].astype(np.float32))
    cross = readout_features(pooled, rois, "cross_roi")
    assert cross.shape == (3, 10)                               # R (R - 1) / 2 ROI pairs
    expected = np.arctanh(np.corrcoef(rois[2].astype(np.float64))[0, 1])
    assert cross[2, 0] == pytest.approx(expected, abs=1e-5)    # correlation over the feature dimension, Fisher z
    with pytest.raises(InputError, match="unknown readout"):
        readout_features(pooled, rois, "cls")


def test_fraction_subjects_are_nested():
    subjects = [("c", f"{i:03d}") for i in range(40)]
    quarter, half, full = (fraction_subjects(subjects, f) for f in (0.25, 0.5, 1.0))
    assert len(quarter) == 10 and len(half) == 20 and full == set(subjects)
    assert quarter < half < full
    assert fraction_subjects(subjects + [("c", "new")], 0.5) & half >= half - {next(iter(half))}


# ------------------------------------------------------------------------------------------------- end to end
def _make_data(root):
    """Pretraining runs (cohort p: 16 trained on, 4 monitor subjects) as aligned runs + a split table + shards,
    and labelled train/val/test shard sets of cohort c (age in the ROI 0-3 coupling, sex in ROI 4-5 amplitude)."""
    rng = np.random.default_rng(0)
    names = [f"roi{i}" for i in range(R)]
    stats = ScalingStats("subject_mean", tuple(names), np.zeros(R), np.ones(R), 10)
    write_scaling_stats(stats, root / "stats.json")
    rows = []
    for i in range(20):
        run_id = f"p/sub-{i:02d}_ses-1_run-1"
        path = root / "align_tr" / f"{run_id}.parquet"
        write_timeseries(rng.normal(size=(T, R)).astype(np.float32), names, path, {"tr": 2.0})
        rows.append({"run_id": run_id, "cohort": "p", "subject": f"{i:02d}", "session": "1", "run": "1",
                     "split": "pretrain", "path": str(path)})
    table = pd.DataFrame(rows)
    table.drop(columns="path").to_csv(root / "split-pretrain.tsv", sep="\t", index=False)
    held = monitor_subjects_of(table, 4)
    table.loc[[("p", s) in held for s in table["subject"]], "split"] = "monitor"
    build_shards(table, stats, root / "shards" / "pretrain", window=WINDOW, flat=True, rows_per_row_group=4)
    labelled = []
    for i in range(36):
        age = float(rng.uniform(45, 80))
        sex = "M" if i % 2 else "F"
        coupling = 0.2 + 0.6 * (age - 45) / 35
        data = rng.normal(size=(T, R))
        data[:, :4] = np.sqrt(coupling) * rng.normal(size=(T, 1)) + np.sqrt(1 - coupling) * data[:, :4]
        data[:, 4:6] *= 1.5 if sex == "M" else 0.7
        path = root / "align_tr" / "c" / f"s{i:02d}.parquet"
        write_timeseries(data.astype(np.float32), names, path, {"tr": 2.0})
        labelled.append({"run_id": f"c/sub-s{i:02d}_ses-1_run-1", "cohort": "c", "subject": f"s{i:02d}",
                         "session": "1", "run": "1", "split": ("train", "train", "val", "test")[i % 4],
                         "path": str(path), "age": round(age, 1), "sex": sex})
    frame = pd.DataFrame(labelled)
    for split in ("train", "val", "test"):
        build_shards(frame[frame["split"] == split], stats, root / "shards" / split, window=WINDOW,
                     label_columns={"age": "continuous", "sex": "categorical"}, categories={"sex": ["F", "M"]},
                     flat=True, rows_per_row_group=8)
    write_gradients(rng.normal(size=(R, 4)), np.linspace(1, 0.5, 4), names, root / "gradients.tsv")
    (root / "model.yaml").write_text(MODEL)
    (root / "study.yaml").write_text(json.dumps({**STUDY, "configs": {"jepa": {
        "config": str(root / "model.yaml"), "set": ["optim.lr=5e-4"]}}}))
    return StudyInputs(pretrain_manifest=str(root / "shards" / "pretrain" / "manifest.json"),
                       shards=str(root / "shards"), tasks=TASKS, gradients=str(root / "gradients.tsv"),
                       stats=str(root / "stats.json"), splits=str(root / "split-pretrain.tsv"),
                       runs_root=str(root / "align_tr"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny study run once, with the CV folds each probe got recorded."""
    root = tmp_path_factory.mktemp("study")
    inputs = _make_data(root)
    folds: list[tuple[bytes, list]] = []
    original = crossval.oof_predictions

    def spy(features, target, kind, n_classes, splits, *args, **kwargs):
        folds.append((np.asarray(target).tobytes(), splits))
        return original(features, target, kind, n_classes, splits, *args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(crossval, "oof_predictions", spy)
    try:
        paths = run_study(root / "study.yaml", inputs, root / "out", threads=1)
    finally:
        patch.undo()
    return root, inputs, paths, folds


def test_a_tiny_study_writes_every_output_with_its_rows(study):
    root, _, paths, _ = study
    assert all(p.exists() for p in paths.values())
    table = pd.read_csv(paths["study"], sep="\t", dtype={"label_count": str})
    per_encoder = 2 * 3 * 2                                     # tasks x readouts x label counts
    assert (table["encoder"] == "random").sum() == 2 * per_encoder
    assert (table["encoder"] == "pretrained").sum() == 2 * 3 * per_encoder   # fractions x (init + 2 checkpoints)
    assert (table["encoder"] == "fc").sum() == 2 and set(table.loc[table["encoder"] == "fc", "readout"]) == {"fc"}
    pre = table[table["encoder"] == "pretrained"]
    assert sorted(set(zip(pre["data_fraction"], pre["step"]))) == [(0.5, 0), (0.5, 2), (0.5, 4), (1.0, 0),
                                                                  (1.0, 2), (1.0, 4)]
    assert table["n_subjects"].eq(36).all() and set(table["label_count"]) == {"8", "all"}
    assert table.loc[table["kind"] == "regression", "r"].notna().all()
    assert table.loc[table["kind"] == "binary", ["balanced_accuracy", "auroc"]].notna().all().all()
    assert table.loc[table["encoder"] != "fc", "rankme_pooled"].notna().all()
    fc = table[(table["encoder"] == "fc") & (table["task"] == "age")]
    assert float(fc["r"].iloc[0]) > 0.5                          # the planted coupling: FC finds it
    paired = pd.read_csv(paths["paired"], sep="\t", dtype={"label_count": str})
    assert len(paired) == 6 * 3 * 2 * (1 + 2) * 2   # encoders x readouts x labels x (r; bacc, auroc) x seeds
    assert set(paired["metric"]) == {"r", "balanced_accuracy", "auroc"}
    # step 0 is the initialisation, the same weights as random seed 0: a zero paired difference
    init = paired[(paired["step"] == 0) & (paired["random_seed"] == 0)]
    assert np.allclose(init["delta"], 0) and np.allclose(init[["ci_low", "ci_high"]], 0)
    text = paths["markdown"].read_text()
    assert "| jepa | age | mean | r |" in text and "| FC (input) | sex | fc | auroc |" in text
    # the data fraction's shards: half the trained-on subjects, the same monitor windows
    half = load_manifest(root / "out" / "shards" / "d0.5" / "manifest.json")
    full = load_manifest(root / "shards" / "pretrain" / "manifest.json")
    assert sum(e["rows"] for e in half["splits"]["pretrain"]) == 8
    assert sum(e["rows"] for e in full["splits"]["pretrain"]) == 16
    assert sum(e["rows"] for e in half["splits"]["monitor"]) == sum(e["rows"] for e in full["splits"]["monitor"])
    assert (root / "out" / "runs" / "jepa_s0_d0.5" / "epoch-0002.pt").exists()
    assert (root / "out" / "runs" / "jepa_s0_d1" / "final.pt").exists()


def test_every_encoder_is_probed_on_the_same_folds(study):
    _, _, _, folds = study
    by_task: dict[bytes, list] = {}
    for target, splits in folds:
        by_task.setdefault(target, []).append(splits)
    assert len(by_task) == 2 and len(folds) >= 6 * 2 * 3 * 2
    for runs in by_task.values():
        for splits in runs[1:]:
            assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                       for ra, rb in zip(runs[0], splits) for a, b in zip(ra, rb))


def test_a_rerun_through_the_cli_neither_pretrains_nor_extracts(study, monkeypatch):
    import brainjepa.evaluate.features as features
    import brainjepa.train.pretrain as training
    from brainjepa.cli import main

    root, inputs, paths, _ = study
    before = {name: p.read_bytes() for name, p in paths.items() if name != "figure"}
    calls = {"pretrain": 0, "extract": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(training, "pretrain", counted("pretrain", training.pretrain))
    monkeypatch.setattr(features, "extract", counted("extract", features.extract))
    code = main(["pretraining-study", "--config", str(root / "study.yaml"), "--pretrain-manifest",
                 inputs.pretrain_manifest, "--shards", inputs.shards, "--tasks", json.dumps(TASKS), "--gradients",
                 inputs.gradients, "--stats", inputs.stats, "--splits", inputs.splits, "--runs-root",
                 inputs.runs_root, "--threads", "1", "--out-dir", str(root / "out")])
    assert code == 0 and calls == {"pretrain": 0, "extract": 0}
    assert {name: p.read_bytes() for name, p in paths.items() if name != "figure"} == before
