"""Group stage: splits, phenotype types, robust scaling, group FC, and no test-subject leakage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainjepa import sheets
from brainjepa.group import group_fc as connectivity
from brainjepa.group import scaling
from brainjepa.group import splits
from brainjepa.cli import main
from brainjepa.errors import InputError
from brainjepa.io import write_timeseries

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _samples(cohorts: dict[str, int], runs: int = 1) -> pd.DataFrame:
    rows = [{"cohort": c, "subject": f"{c}{i:03d}", "session": "1", "run": str(r)}
            for c, n in cohorts.items() for i in range(n) for r in range(1, runs + 1)]
    frame = pd.DataFrame(rows)
    frame["run_id"] = [sheets.run_id(r) for r in rows]
    return frame


def test_split_fractions_and_pretraining_cohort():
    table = splits.make_splits(_samples({"big": 2000, "small": 1000}), 0, FRACTIONS, "big", 0.8)
    big = table[table.cohort == "big"]["split"].value_counts(normalize=True)
    small = table[table.cohort == "small"]["split"].value_counts(normalize=True)
    assert big["pretrain"] == pytest.approx(0.8, abs=0.03)
    assert big["train"] == pytest.approx(0.2 * 0.6, abs=0.03) and big["test"] == pytest.approx(0.04, abs=0.02)
    assert "pretrain" not in small and small["train"] == pytest.approx(0.6, abs=0.04)
    assert small["val"] == pytest.approx(0.2, abs=0.04)


def test_splits_are_stable_when_subjects_are_added():
    before = splits.make_splits(_samples({"a": 50, "b": 30}), 7, FRACTIONS, "a", 0.8)
    after = splits.make_splits(_samples({"a": 80, "b": 30, "c": 20}), 7, FRACTIONS, "a", 0.8)
    merged = before.merge(after, on="run_id", suffixes=("_before", "_after"))
    assert len(merged) == len(before) and (merged["split_before"] == merged["split_after"]).all()
    other_seed = splits.make_splits(_samples({"a": 50, "b": 30}), 8, FRACTIONS, "a", 0.8)
    assert (other_seed["split"] != before["split"]).any()


def test_every_run_of_a_subject_is_in_its_split():
    table = splits.make_splits(_samples({"a": 40}, runs=3), 0, FRACTIONS)
    assert (table.groupby("subject")["split"].nunique() == 1).all()


def test_subject_in_two_cohorts_is_an_error():
    samples = _samples({"a": 3, "b": 3})
    samples.loc[samples.index[-1], "subject"] = "a000"
    samples["run_id"] = [sheets.run_id(r) for r in samples.to_dict("records")]
    with pytest.raises(InputError, match=r"subject 'a000' has runs in several cohorts \['a', 'b'\]"):
        splits.make_splits(samples, 0, FRACTIONS)


def test_bad_fractions():
    with pytest.raises(InputError, match="sum to 1"):
        splits.make_splits(_samples({"a": 3}), 0, {"train": 0.6, "val": 0.2, "test": 0.3})


def test_split_balance_report():
    table = splits.make_splits(_samples({"a": 60}), 0, FRACTIONS)
    pheno = pd.DataFrame({"cohort": "a", "subject": [f"a{i:03d}" for i in range(60)], "dx": [0, 1] * 30})
    balance = splits.split_balance(table, pheno, "dx")
    assert balance.to_numpy().sum() == 60 and set(balance.columns) == {"train", "val", "test"}


@pytest.mark.parametrize("body,match", [
    ("a\t1\tyoung\tF\t0\n", r"line 2: column 'age': 'young' is not a number \(declared continuous\)"),
    ("a\t1\t50\tF\t2\n", r"line 2: column 'diagnosis': '2' is not 0 or 1 \(declared binary\)"),
])
def test_phenotype_values_outside_their_type(tmp_path, body, match):
    path = tmp_path / "p.tsv"
    path.write_text("cohort\tsubject\tage\tsex\tdiagnosis\n" + body)
    types = {"age": "continuous", "sex": "categorical", "diagnosis": "binary"}
    with pytest.raises(InputError, match=match):
        sheets.load_phenotypes(path, types)


def test_phenotype_types_and_undeclared_column(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("cohort\tsubject\tage\tsex\tdiagnosis\na\t1\t50.5\tF\t\na\t2\t61\tM\t1\n")
    frame = sheets.load_phenotypes(path, {"age": "continuous", "sex": "categorical", "diagnosis": "binary"})
    assert frame["age"].tolist() == [50.5, 61.0] and np.isnan(frame["diagnosis"][0])
    with pytest.raises(InputError, match=r"\['sex', 'diagnosis'\] are not declared"):
        sheets.load_phenotypes(path, {"age": "continuous"})


# ------------------------------------------------------------------------------------------- statistics
def _write_runs(root: Path, table: pd.DataFrame, rng: np.random.Generator, n_rois: int = 6) -> None:
    names = [f"roi{i}" for i in range(n_rois)]
    mixing = rng.normal(size=(n_rois, n_rois))
    for run_id in table["run_id"]:
        data = 100 + rng.normal(size=(50, n_rois)) @ mixing + rng.normal(0, 5, size=n_rois)
        write_timeseries(data.astype(np.float32), names, root / f"{run_id}.parquet", {"tr": 2.0})


def test_subject_mean_statistics_match_the_definition(tmp_path):
    rng = np.random.default_rng(0)
    table = splits.make_splits(_samples({"a": 12}, runs=2), 0, FRACTIONS)
    _write_runs(tmp_path, table, rng)
    files = splits.run_files(table, tmp_path)
    stats = scaling.compute_scaling_stats(files, "subject_mean")
    means = np.array([np.mean([pd.read_parquet(p).to_numpy(np.float64).mean(0) for p in files[k]], axis=0)
                      for k in sorted(files)])
    np.testing.assert_allclose(stats.median, np.median(means, axis=0))
    np.testing.assert_allclose(stats.iqr, np.subtract(*np.percentile(means, [75, 25], axis=0)))
    x = pd.read_parquet(files[sorted(files)[0]][0]).to_numpy().T
    np.testing.assert_allclose(stats.apply(x), (x - stats.median[:, None]) / stats.iqr[:, None], rtol=1e-5)


def test_timepoint_statistics_close_to_exact(tmp_path):
    rng = np.random.default_rng(1)
    table = splits.make_splits(_samples({"a": 8}), 0, FRACTIONS)
    _write_runs(tmp_path, table, rng)
    files = splits.run_files(table, tmp_path)
    stats = scaling.compute_scaling_stats(files, "timepoints")
    allv = np.concatenate([pd.read_parquet(p).to_numpy(np.float64) for k in sorted(files) for p in files[k]])
    tolerance = (allv.max(0) - allv.min(0)) / scaling.HISTOGRAM_BINS
    assert np.all(np.abs(stats.median - np.median(allv, axis=0)) <= tolerance)
    q1, q3 = np.percentile(allv, [25, 75], axis=0)
    assert np.all(np.abs(stats.iqr - (q3 - q1)) <= 2 * tolerance)


def test_zscore_scales_each_sample():
    stats = scaling.ScalingStats("zscore", ("a", "b"), np.zeros(0), np.zeros(0), 3)
    out = stats.apply(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert out.mean() == pytest.approx(0, abs=1e-6) and out.std() == pytest.approx(1, abs=1e-6)


def test_zero_iqr_names_the_roi(tmp_path):
    table = splits.make_splits(_samples({"a": 5}), 0, FRACTIONS)
    for i, run_id in enumerate(table["run_id"]):
        data = np.random.default_rng(i).normal(size=(20, 3))
        data[:, 1] = 7.0  # the same mean in every subject
        write_timeseries(data.astype(np.float32), ["x", "flat", "z"], tmp_path / f"{run_id}.parquet", {"tr": 2})
    with pytest.raises(InputError, match=r"zero interquartile range .*\['flat'\]"):
        scaling.compute_scaling_stats(splits.run_files(table, tmp_path), "subject_mean")


def test_scaling_stats_file_round_trip_and_tamper(tmp_path):
    stats = scaling.ScalingStats("subject_mean", ("a", "b"), np.array([1.0, 2.0]), np.array([0.5, 0.25]), 4)
    scaling.write_scaling_stats(stats, tmp_path / "s.json")
    assert scaling.ScalingStats.load(tmp_path / "s.json").id == stats.id
    text = (tmp_path / "s.json").read_text().replace("0.25", "0.3")
    (tmp_path / "s.json").write_text(text)
    with pytest.raises(InputError, match="does not match its id"):
        scaling.ScalingStats.load(tmp_path / "s.json")


def test_group_fc_is_fisher_z_mean_of_subject_means(tmp_path):
    rng = np.random.default_rng(2)
    table = splits.make_splits(_samples({"a": 4}, runs=2), 0, FRACTIONS)
    _write_runs(tmp_path, table, rng)
    files = splits.run_files(table, tmp_path)
    fc, names = connectivity.group_fc(files)
    z = [np.mean([np.arctanh(np.clip(np.corrcoef(pd.read_parquet(p).to_numpy(np.float64), rowvar=False),
                                     -connectivity.Z_CLIP, connectivity.Z_CLIP)) for p in files[k]], axis=0)
         for k in sorted(files)]
    expected = np.tanh(np.mean(z, axis=0))
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(fc, expected, atol=1e-12)
    assert names == [f"roi{i}" for i in range(6)] and np.allclose(fc, fc.T)


def test_constant_roi_in_fc_is_an_error():
    ts = np.random.default_rng(0).normal(size=(30, 4))
    ts[:, 2] = 1.0
    with pytest.raises(InputError, match=r"run-x: ROI column\(s\) \[2\] are constant"):
        connectivity.run_fc(ts, "run-x")


# ------------------------------------------------------------------------------------------- leakage
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_test_subject_reaches_group_statistics(tmp_path):
    """Changing only held-out (train/val/test) subjects' data leaves scaling, FC and gradients unchanged."""
    samples = _samples({"pre": 30, "down": 12})
    table = splits.make_splits(samples, 0, FRACTIONS, "pre", 0.8)
    assert {"pretrain", "test"} <= set(table["split"])
    runs_root, out = tmp_path / "aligned", tmp_path / "group"
    _write_runs(runs_root, table, np.random.default_rng(3), n_rois=12)
    table.to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    labels = pd.DataFrame({"index": range(1, 13), "name": [f"roi{i}" for i in range(12)],
                           "network": ["A"] * 6 + ["B"] * 6})
    labels.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)

    def group_outputs(tag: str) -> dict[str, str]:
        paths = {k: out / f"{tag}_{k}" for k in ("stats.json", "fc.npy", "gradients.tsv")}
        for method in ("subject_mean", "timepoints"):
            assert main(["scaling", "--splits", str(tmp_path / "splits.tsv"), "--runs-root", str(runs_root),
                         "--method", method, "--out", str(paths["stats.json"])]) == 0
        assert main(["group-fc", "--splits", str(tmp_path / "splits.tsv"), "--runs-root", str(runs_root),
                     "--labels", str(tmp_path / "labels.tsv"), "--out", str(paths["fc.npy"])]) == 0
        assert main(["gradients", "--fc", str(paths["fc.npy"]), "--n-components", "3", "--labels",
                     str(tmp_path / "labels.tsv"), "--out", str(paths["gradients.tsv"])]) == 0
        return {k: _sha(p) for k, p in paths.items()}

    before = group_outputs("before")
    held_out = table[table["split"] != "pretrain"]
    _write_runs(runs_root, held_out, np.random.default_rng(99), n_rois=12)  # only held-out subjects change
    assert group_outputs("after") == before
    pretrain = table[table["split"] == "pretrain"].iloc[:1]
    _write_runs(runs_root, pretrain, np.random.default_rng(100), n_rois=12)  # the test can fail
    assert group_outputs("changed")["fc.npy"] != before["fc.npy"]


# ------------------------------------------------------------------------------------------- stratification
def _phenotypes(samples: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    subjects = samples.drop_duplicates("subject")[["cohort", "subject"]].reset_index(drop=True)
    subjects["dx"] = rng.integers(0, 2, size=len(subjects)).astype(float)
    return subjects


@pytest.mark.parametrize("n", [7, 12, 25, 60])
def test_stratified_cohort_is_exactly_balanced(n):
    samples = _samples({"down": n, "other": 40})
    pheno = _phenotypes(samples, np.random.default_rng(n))
    table = splits.make_splits(samples, 0, FRACTIONS, stratify={"down": "dx"}, phenotypes=pheno)
    merged = table.merge(pheno, on=["cohort", "subject"])
    for value, group in merged[merged.cohort == "down"].groupby("dx"):
        counts = group["split"].value_counts().reindex(list(splits.SPLITS), fill_value=0).tolist()
        assert counts == splits.stratum_counts(len(group), FRACTIONS), (value, counts)
    plain = splits.make_splits(samples, 0, FRACTIONS)
    assert (table[table.cohort == "other"]["split"].to_numpy() == plain[plain.cohort == "other"]["split"]).all()


def test_stratum_counts_largest_remainder():
    assert splits.stratum_counts(10, FRACTIONS) == [6, 2, 2]
    assert splits.stratum_counts(7, FRACTIONS) == [4, 2, 1]
    assert splits.stratum_counts(2, FRACTIONS) == [1, 1, 0]
    assert sum(splits.stratum_counts(13, FRACTIONS)) == 13


def test_stratified_growth_moves_few_subjects():
    before_samples = _samples({"down": 40})
    after_samples = _samples({"down": 44})
    pheno = _phenotypes(after_samples, np.random.default_rng(5))
    before = splits.make_splits(before_samples, 0, FRACTIONS, stratify={"down": "dx"}, phenotypes=pheno)
    after = splits.make_splits(after_samples, 0, FRACTIONS, stratify={"down": "dx"}, phenotypes=pheno)
    merged = before.merge(after, on="run_id", suffixes=("_before", "_after"))
    moved = (merged["split_before"] != merged["split_after"]).sum()
    assert moved <= 2 * 4 * 2  # at most the rank-boundary subjects of each stratum per added subject


def test_stratifying_the_pretraining_cohort_keeps_its_pretrain_set():
    samples = _samples({"big": 200})
    pheno = _phenotypes(samples, np.random.default_rng(1))
    plain = splits.make_splits(samples, 0, FRACTIONS, "big", 0.8)
    strat = splits.make_splits(samples, 0, FRACTIONS, "big", 0.8, stratify={"big": "dx"}, phenotypes=pheno)
    assert ((plain["split"] == "pretrain") == (strat["split"] == "pretrain")).all()


def test_stratify_by_unknown_label():
    samples = _samples({"down": 5})
    with pytest.raises(InputError, match="stratified by 'dx', which is not a phenotype column"):
        splits.make_splits(samples, 0, FRACTIONS, stratify={"down": "dx"},
                           phenotypes=samples[["cohort", "subject"]])


def test_roi_zscore_standardises_each_roi_over_time():
    stats = scaling.ScalingStats("roi_zscore", ("a", "b"), np.zeros(0), np.zeros(0), 3)
    x = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]])
    out = stats.apply(x)
    np.testing.assert_allclose(out[0], (x[0] - 2.5) / x[0].std(), rtol=1e-6)
    assert (out[1] == 0).all()  # a constant ROI stays finite
