"""Evaluation you can believe: repeated subject-level splits, readouts, external test cohorts, paired differences."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainjepa.data.shards import build_shards
from brainjepa.errors import InputError
from brainjepa.evaluate.tasks import Resampling, TaskConfig, load_task, resample_splits, split_manifests
from brainjepa.group.scaling import ScalingStats
from brainjepa.io import write_timeseries

R, T, WINDOW = 6, 64, 32
AGE = TaskConfig.from_dict("age", {"cohorts": ["c"], "label": "age", "kind": "regression"})
SEX = TaskConfig.from_dict("sex", {"cohorts": ["c"], "label": "sex", "kind": "binary", "positive": "M"})
TRANSFER = TaskConfig.from_dict("transfer", {"cohorts": ["c"], "test_cohorts": ["d"], "label": "age",
                                             "kind": "regression"})


def _make_two_cohorts(root, n: dict[str, int]):
    """Train/val/test shard sets of cohorts c and d, age planted as the coupling of ROIs 0-2 and sex as the
    amplitude of ROIs 3-4 (two windows per run)."""
    rng = np.random.default_rng(1)
    names = [f"roi{i}" for i in range(R)]
    rows = []
    for cohort, count in n.items():
        for i in range(count):
            age = float(rng.uniform(45, 80))
            sex = "M" if i % 2 else "F"
            coupling = 0.1 + 0.8 * (age - 45) / 35
            data = rng.normal(size=(T, R))
            data[:, :3] = np.sqrt(coupling) * rng.normal(size=(T, 1)) + np.sqrt(1 - coupling) * data[:, :3]
            data[:, 3:5] *= 1.5 if sex == "M" else 0.7
            path = root / "runs" / f"{cohort}{i:03d}.parquet"
            write_timeseries(data.astype(np.float32), names, path, {"tr": 2.0})
            split = ("train", "val", "test")[0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)]
            rows.append({"run_id": f"{cohort}/sub-{i:03d}_ses-1_run-1", "cohort": cohort, "subject": f"{i:03d}",
                         "session": "1", "run": "1", "split": split, "path": str(path), "age": round(age, 1),
                         "sex": sex})
    frame = pd.DataFrame(rows)
    stats = ScalingStats("subject_mean", tuple(names), np.zeros(R), np.ones(R), len(frame))
    for split in ("train", "val", "test"):
        build_shards(frame[frame["split"] == split], stats, root / "shards" / split, window=WINDOW,
                     label_columns={"age": "continuous", "sex": "categorical"}, categories={"sex": ["F", "M"]},
                     flat=True)
    return root, frame


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    return _make_two_cohorts(tmp_path_factory.mktemp("resampling"), {"c": 50, "d": 20})


@pytest.mark.parametrize("cfg", [Resampling("kfold", folds=5, repeats=3), Resampling("random", splits=6)])
@pytest.mark.parametrize("task", [AGE, SEX])
def test_repeated_splits_never_put_a_subject_in_two_parts(cohorts, cfg, task):
    root, frame = cohorts
    w = load_task(task, split_manifests(root / "shards"), WINDOW)
    subjects = set(w.subject)
    splits = resample_splits(w, cfg)
    assert len(splits) == cfg.count and len({name for name, _ in splits}) == cfg.count
    tested_per_repeat: dict[str, list[str]] = {}
    for name, split in splits:
        per_subject = pd.Series(split).groupby(w.subject).nunique()
        assert (per_subject == 1).all()                       # every window of a subject in one part
        parts = {p: set(w.subject[split == p]) for p in ("train", "val", "test")}
        assert parts["train"] and parts["val"] and parts["test"]
        assert parts["train"].isdisjoint(parts["val"]) and parts["train"].isdisjoint(parts["test"])
        assert parts["val"].isdisjoint(parts["test"])
        assert parts["train"] | parts["val"] | parts["test"] == subjects
        if task.kind == "binary":                             # stratified: both classes in every part
            for p in parts.values():
                assert len(set(w.target[np.isin(w.subject, list(p))])) == 2
        tested_per_repeat.setdefault(name.split("f")[0], []).extend(parts["test"])
    if cfg.scheme == "kfold":                                 # each repeat tests every subject exactly once
        for tested in tested_per_repeat.values():
            assert sorted(tested) == sorted(subjects)
    again = resample_splits(w, cfg)                           # a pure function of the subjects and settings
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


def test_resampling_settings_are_checked():
    with pytest.raises(InputError, match="evaluate.resampling.folds"):
        Resampling.from_dict({"scheme": "kfold", "folds": 1})
    with pytest.raises(InputError, match="val_fraction"):
        Resampling.from_dict({"val_fraction": 1.5})
    with pytest.raises(InputError, match="evaluate.resampling.*sheme"):
        Resampling.from_dict({"sheme": "kfold"})


def test_external_test_cohorts_test_every_subject_of_theirs_and_nothing_else(cohorts):
    from brainjepa.evaluate.tasks import task_split_problems

    root, frame = cohorts
    w = load_task(TRANSFER, split_manifests(root / "shards"), WINDOW)
    tested = set(w.subject[w.mask("test")])
    assert tested == {f"d/{s}" for s in frame.query("cohort == 'd'")["subject"]}     # every d subject, any split
    trained = set(w.subject[w.mask("train") | w.mask("val")])
    assert trained == {f"c/{s}" for s in frame.query("cohort == 'c' and split != 'test'")["subject"]}
    c_train = frame.query("cohort == 'c' and split == 'train'")["age"]
    assert w.mean == pytest.approx(c_train.mean())                                     # scaled by c's training set
    for name, split in resample_splits(w, Resampling("kfold", folds=4, repeats=2)):
        assert set(w.subject[split == "test"]) == tested, name                         # always the external cohort
        assert not set(w.subject[split != "test"]) & tested
    subjects = frame.drop_duplicates(["cohort", "subject"])
    assert task_split_problems(TRANSFER, subjects) == []
    assert "test: every subject of test cohort(s) d" in task_split_problems(
        TRANSFER, subjects[~((subjects["cohort"] == "c") & (subjects["split"] == "val"))])[0]
    with pytest.raises(InputError, match="in both cohorts and test_cohorts"):
        TaskConfig.from_dict("bad", {"cohorts": ["c"], "test_cohorts": ["c"], "label": "age", "kind": "regression"})


def test_a_resampled_evaluation_predicts_every_subject_once_through_the_cli(cohorts, tmp_path):
    from brainjepa.cli import main

    root, frame = cohorts
    resampling = {"scheme": "kfold", "folds": 5, "repeats": 2}
    task = {"name": "age", "cohorts": ["c"], "label": "age", "kind": "regression"}
    out = tmp_path / "fc.json"
    assert main(["evaluate", "--task", json.dumps(task), "--method", "fc_linear", "--seed", "0", "--shards",
                 str(root / "shards"), "--resampling", json.dumps(resampling), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    c = frame.query("cohort == 'c'")
    assert len(record["splits"]) == 10 and record["resampling"]["scheme"] == "kfold"
    assert sorted(p["subject"] for p in record["predictions"]) == sorted("c/" + c["subject"])
    assert record["n_subjects"]["test"] == len(c)
    assert record["test"]["r"] > 0.5                          # the planted coupling, from FC
    labels = dict(zip("c/" + c["subject"], c["age"]))
    assert all(p["label"] == pytest.approx(labels[p["subject"]]) for p in record["predictions"])
    # the external task: trained on c, every split tests d
    transfer = {"name": "transfer", "cohorts": ["c"], "test_cohorts": ["d"], "label": "age", "kind": "regression"}
    assert main(["evaluate", "--task", json.dumps(transfer), "--method", "fc_linear", "--seed", "0", "--shards",
                 str(root / "shards"), "--resampling", json.dumps(resampling), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["test_cohorts"] == ["d"] and len(record["predictions"]) == 20
    assert record["test"]["r"] > 0.3


def test_readouts_of_cached_features(cohorts, tmp_path):
    """closed_form_roi and closed_form_cross_roi read the ROI tokens of the feature cache: R x D and
    R (R - 1) / 2 features (the cross-ROI readout of the FC shape)."""
    from brainjepa.evaluate.features import readout_features, write_features
    from brainjepa.evaluate.run import evaluate_windows, parse_method_readout

    root, _ = cohorts
    w = load_task(SEX, split_manifests(root / "shards"), WINDOW)
    rng = np.random.default_rng(0)
    n, d = len(w.run_id), 4
    tokens = rng.normal(size=(n, R, d)).astype(np.float16)
    tokens[:, 3:5] += np.where(w.raw == "M", 1.5, 0.0)[:, None, None].astype(np.float16)   # sex: ROIs 3-4
    write_features(tmp_path / "f.npz", w.run_id, w.start, tokens.astype(np.float32).mean(1), tokens,
                   {"source": {"kind": "checkpoint"}, "window": WINDOW})
    assert readout_features(tokens.mean(1), tokens, "roi").shape == (n, R * d)
    assert readout_features(tokens.mean(1), tokens, "cross_roi").shape == (n, R * (R - 1) // 2)
    assert parse_method_readout("jepa_closed_form_cross_roi") == ("jepa", "closed_form", "cross_roi")
    assert parse_method_readout("my_enc_linprobe_roi") == ("my_enc", "linprobe", "roi")
    assert parse_method_readout("jepa_attentive") == ("jepa", "attentive", "tokens")
    record = evaluate_windows(w, "jepa_closed_form_roi", 0, features=[tmp_path / "f.npz"],
                              resampling=Resampling("kfold", folds=5, repeats=1))
    assert record["readout"] == "roi" and record["test"]["auroc"] > 0.9


def _record(method: str, seed: int, kind: str, subjects, labels, predictions, encoder=None, source=None):
    rows = [{"subject": s, "label": y, **({"prediction": p} if kind == "regression" else {"probabilities": p})}
            for s, y, p in zip(subjects, labels, predictions)]
    out = {"task": "t", "kind": kind, "label": "y", "cohorts": ["c"], "method": method, "seed": seed,
           "encoder": encoder, "source": source, "predictions": rows, "n_subjects": {"train": 1, "val": 1, "test": 1},
           "test": {}, "val": {}}
    if kind == "regression":
        out["target"] = {"mean": 10.0, "std": 2.0}
    else:
        out["classes"] = ["0", "1"]
    return out


def test_paired_differences_match_a_direct_computation():
    """The summary's paired rows equal a direct loop: the same bootstrap resamples of the subjects, Pearson r of
    each predictor on each, the percentile interval of the differences; the pretrained method against each seed of
    the random encoder with the same protocol and against the FC baseline (its seed mean)."""
    from brainjepa.evaluate.crossval import resamples
    from brainjepa.evaluate.summary import paired_table

    rng = np.random.default_rng(3)
    n = 40
    subjects = [f"c/{i:02d}" for i in range(n)]
    truth = rng.normal(10, 2, n)
    good = truth + rng.normal(0, 1.0, n)
    records = [_record("jepa_closed_form", 0, "regression", subjects, truth, good, "jepa", {"kind": "checkpoint"})]
    noisy = {}
    for seed in range(3):
        noisy[seed] = truth + rng.normal(0, 3.0, n)
        order = rng.permutation(n)          # another subject order: pairing is by subject name
        records.append(_record("random_closed_form", seed, "regression", [subjects[i] for i in order],
                               truth[order], noisy[seed][order], "random", {"kind": "random", "seed": seed}))
    fc = [truth + rng.normal(0, 2.0, n) for _ in range(2)]
    records += [_record("fc_linear", s, "regression", subjects, truth, fc[s]) for s in range(2)]
    records.append(_record("fc_svm", 0, "regression", subjects, truth, fc[0]))    # a seedless baseline: one seed
    records.append(_record("random_finetune", 0, "regression", subjects, truth, truth, "random", {"kind": "random"}))
    table = paired_table(records, n_boot=300, seed=5)
    assert set(table["versus"]) == {"random_closed_form", "fc_linear", "fc_svm"}     # same protocol or FC only
    fc_rows = table[table["versus"].str.startswith("fc_")]
    assert fc_rows["versus_seed"].isna().all()          # an FC baseline is no random initialisation, one seed or two
    idx = resamples(n, 300, 5)

    def r(pred, rows):
        return np.array([np.corrcoef(truth[i], pred[i])[0, 1] for i in rows])

    for _, row in table.iterrows():
        if row["versus"] == "random_closed_form":
            other = noisy[int(row["versus_seed"])]
        else:
            other = np.mean(fc, axis=0) if row["versus"] == "fc_linear" else fc[0]
        diff = r(good, idx) - r(other, idx)
        assert row["delta"] == pytest.approx(np.corrcoef(truth, good)[0, 1] - np.corrcoef(truth, other)[0, 1])
        assert row["ci_low"] == pytest.approx(np.percentile(diff, 2.5))
        assert row["ci_high"] == pytest.approx(np.percentile(diff, 97.5))
        assert row["p"] == pytest.approx((diff <= 0).mean())
        assert row["beats"] == (row["ci_low"] > 0) and row["n_subjects"] == n
    assert len(table) == 5 and table.query("versus == 'random_closed_form'")["beats"].all()
