"""The scaling stage: robust-scaling statistics of the pretraining set, their file, the methods."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainjepa.errors import InputError
from brainjepa.group import scaling, splits
from brainjepa.io import write_timeseries

from group_helpers import FRACTIONS, _samples, _write_runs


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


def test_roi_zscore_standardises_each_roi_over_time():
    stats = scaling.ScalingStats("roi_zscore", ("a", "b"), np.zeros(0), np.zeros(0), 3)
    x = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]])
    out = stats.apply(x)
    np.testing.assert_allclose(out[0], (x[0] - 2.5) / x[0].std(), rtol=1e-6)
    assert (out[1] == 0).all()  # a constant ROI stays finite


def test_run_demean_removes_each_runs_baseline_and_keeps_its_amplitude(tmp_path):
    rng = np.random.default_rng(2)
    table = splits.make_splits(_samples({"a": 8}), 0, FRACTIONS)
    _write_runs(tmp_path, table, rng)
    files = splits.run_files(table, tmp_path)
    stats = scaling.compute_scaling_stats(files, "run_demean")
    runs = [pd.read_parquet(p).to_numpy(np.float64) for k in sorted(files) for p in files[k]]
    allv = np.concatenate([r - r.mean(axis=0) for r in runs])
    tolerance = (allv.max(0) - allv.min(0)) / scaling.HISTOGRAM_BINS
    q1, q3 = np.percentile(allv, [25, 75], axis=0)
    assert np.all(np.abs(stats.iqr - (q3 - q1)) <= 2 * tolerance)
    x = runs[0].T
    shifted = stats.apply(x + 500.0)                                  # a run's baseline does not reach the output
    np.testing.assert_allclose(shifted, stats.apply(x), atol=1e-4)
    np.testing.assert_allclose(stats.apply(2 * x).std(axis=1), 2 * stats.apply(x).std(axis=1), rtol=1e-5)


def test_pretraining_runs_of_different_effective_trs_are_refused_or_warned(tmp_path, caplog):
    """Two sites of one pretraining cohort, TR 0.735 s and 2 s, strided to 2.205 s and 2 s: nothing checked that
    the aligned runs share one TR. Now the scaling stage (the first to pool them) refuses, naming each TR."""
    import logging

    from brainjepa.io import read_timeseries

    table = splits.make_splits(_samples({"a": 10}), 0, FRACTIONS, "a", 0.8)
    _write_runs(tmp_path / "runs", table, np.random.default_rng(0))
    pretrain = table[table["split"] == "pretrain"]["run_id"].tolist()
    for run_id in pretrain[:3]:                                        # the other site
        frame, _ = read_timeseries(tmp_path / "runs" / f"{run_id}.parquet")
        write_timeseries(frame.to_numpy(), list(frame.columns), tmp_path / "runs" / f"{run_id}.parquet", {"tr": 2.205})
    table.to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    args = (tmp_path / "splits.tsv", tmp_path / "runs", "run_demean", tmp_path / "stats.json")
    n = len(pretrain)
    with pytest.raises(InputError, match=rf"the pretraining set mixes effective TRs after alignment: a: 2 s "
                                         rf"\({n - 3} runs\), 2.205 s \(3 runs\)\. align_tr.method: resample"):
        scaling.run_scaling_stats(*args)
    assert not (tmp_path / "stats.json").exists()
    with caplog.at_level(logging.INFO, logger="brainjepa"):
        scaling.run_scaling_stats(*args, mixed_tr="warn")
    assert (tmp_path / "stats.json").exists() and "mixes effective TRs" in caplog.text
    for run_id in pretrain[:3]:                                        # within 1%: one TR
        frame, _ = read_timeseries(tmp_path / "runs" / f"{run_id}.parquet")
        write_timeseries(frame.to_numpy(), list(frame.columns), tmp_path / "runs" / f"{run_id}.parquet", {"tr": 2.01})
    scaling.run_scaling_stats(*args)
