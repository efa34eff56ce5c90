"""The group_fc stage, and the group stages' guarantee: no held-out subject reaches scaling, FC or gradients."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainjepa.cli import main
from brainjepa.errors import InputError
from brainjepa.group import group_fc as connectivity
from brainjepa.group import splits

from group_helpers import FRACTIONS, _samples, _write_runs


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
