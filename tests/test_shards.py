"""Parquet shards: round trip, splits, size cap, row groups, short runs, determinism, checksums, errors."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from brainjepa.data.dataset import ShardDataset
from brainjepa.data.shards import build_shards, check_scaling_stats, load_manifest
from brainjepa.errors import InputError
from brainjepa.group.scaling import ScalingStats
from brainjepa.io import write_timeseries

R = 8
ROIS = [f"roi{i}" for i in range(R)]
LABELS = {"age": "continuous", "sex": "binary", "site": "categorical"}


def make_stats(seed: int = 0) -> ScalingStats:
    rng = np.random.default_rng(seed)
    return ScalingStats("subject_mean", tuple(ROIS), rng.normal(100, 5, R), rng.uniform(0.5, 2.0, R), 10)


def make_runs(root: Path, lengths: dict[str, tuple[str, int]], seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Per-run files under ``root`` for {run_id: (split, T)}; returns the runs table and the raw [T, R] data."""
    rng = np.random.default_rng(seed)
    rows, raw = [], {}
    for i, (run_id, (split, n_time)) in enumerate(lengths.items()):
        data = rng.normal(100, 3, size=(n_time, R)).astype(np.float32)
        path = root / f"{run_id}.parquet"
        write_timeseries(data, ROIS, path, {"tr": 2.0})
        raw[run_id] = data
        rows.append({"run_id": run_id, "cohort": "c1", "subject": f"s{i:02d}", "session": "1", "run": 1,
                     "split": split, "path": str(path),
                     "age": np.nan if i % 4 == 1 else 20.0 + i, "sex": None if i % 4 == 2 else float(i % 2),
                     "site": "" if i % 4 == 3 else ("b" if i % 3 else "a")})
    return pd.DataFrame(rows), raw


def default_lengths(n: int = 10) -> dict[str, tuple[str, int]]:
    splits = ["train", "val", "test"]
    return {f"r{i:02d}": (splits[i % 3], 20 if i % 2 else 40) for i in range(n)}


def read_rows(out: Path, manifest: dict, split: str) -> list[dict]:
    rows = []
    for entry in manifest["splits"][split]:
        rows += pq.read_table(out / entry["path"]).to_pylist()
    return rows


@pytest.fixture
def cohort(tmp_path):
    runs, raw = make_runs(tmp_path / "runs", default_lengths())
    return runs, raw, make_stats()


def test_round_trip_values_types_and_labels(tmp_path, cohort):
    runs, raw, stats = cohort
    out = tmp_path / "shards"
    manifest = build_shards(runs, stats, out, window=16, label_columns=LABELS)
    assert manifest == load_manifest(out / "manifest.json")
    assert manifest["roi_names"] == ROIS and manifest["scaling_stats_id"] == stats.id
    assert manifest["dtype"] == "float16" and manifest["window"] == 16 and manifest["excluded"] == 0
    schema = pq.read_schema(out / manifest["splits"]["train"][0]["path"])
    assert str(schema.field("data").type) == "binary"
    assert [str(schema.field(c).type) for c in ("tr", "n_rois", "n_timepoints", "age", "sex", "site")] == \
        ["double", "int32", "int32", "double", "double", "string"]
    by_id = runs.set_index("run_id")
    seen = set()
    for split in manifest["splits"]:
        for row in read_rows(out, manifest, split):
            run_id = row["run_id"]
            seen.add(run_id)
            x = np.frombuffer(row["data"], "<f2").astype(np.float32).reshape(row["n_rois"], row["n_timepoints"])
            expected = stats.apply(raw[run_id].T)
            np.testing.assert_allclose(x, expected, rtol=1e-3, atol=1e-3)
            assert row["tr"] == 2.0 and row["subject"] == by_id.loc[run_id, "subject"] and row["run"] == "1"
            src = by_id.loc[run_id]
            assert row["age"] is None if pd.isna(src["age"]) else row["age"] == src["age"]
            assert row["sex"] is None if pd.isna(src["sex"]) else row["sex"] == src["sex"]
            assert row["site"] == (src["site"] or None)
    assert seen == set(runs["run_id"])
    assert manifest["label_categories"] == {"site": ["a", "b"]}


def test_float32_option(tmp_path, cohort):
    runs, raw, stats = cohort
    manifest = build_shards(runs, stats, tmp_path / "s", window=16, dtype="float32")
    row = read_rows(tmp_path / "s", manifest, "val")[0]
    x = np.frombuffer(row["data"], "<f4").reshape(R, row["n_timepoints"])
    np.testing.assert_array_equal(x, stats.apply(raw[row["run_id"]].T))


def test_splits_are_separated_and_sorted(tmp_path, cohort):
    runs, _, stats = cohort
    out = tmp_path / "shards"
    manifest = build_shards(runs, stats, out, window=16)
    assert list(manifest["splits"]) == ["test", "train", "val"]
    for split, entries in manifest["splits"].items():
        assert all(e["path"].startswith(f"{split}/shard-") for e in entries)
        rows = read_rows(out, manifest, split)
        ids = [r["run_id"] for r in rows]
        assert ids == sorted(runs.loc[runs["split"] == split, "run_id"])
        assert {r["split"] for r in rows} == {split}


def test_shard_size_cap_gives_several_shards(tmp_path, cohort):
    runs, _, stats = cohort
    cap = R * 40 * 2 * 2  # two long runs of float16
    out = tmp_path / "shards"
    manifest = build_shards(runs, stats, out, window=16, max_shard_bytes=cap)
    entries = manifest["splits"]["train"]
    assert len(entries) >= 2
    assert [e["path"] for e in entries] == [f"train/shard-{i:05d}.parquet" for i in range(len(entries))]
    payloads = []
    for entry in entries:
        table = pq.read_table(out / entry["path"], columns=["n_rois", "n_timepoints"])
        payloads.append(sum(r * t * 2 for r, t in zip(*(c.to_pylist() for c in table.columns))))
        assert table.num_rows == entry["rows"]
    assert max(payloads) <= cap
    # a new shard starts only when the next run would not fit
    first_rows = [pq.read_table(out / e["path"], columns=["n_timepoints"]).column(0)[0].as_py() for e in entries]
    assert all(p + R * t * 2 > cap for p, t in zip(payloads[:-1], first_rows[1:]))


def test_row_groups_sized_as_asked(tmp_path):
    lengths = {f"r{i:02d}": ("train", 20) for i in range(11)}
    runs, _ = make_runs(tmp_path / "runs", lengths)
    out = tmp_path / "shards"
    manifest = build_shards(runs, make_stats(), out, window=16, rows_per_row_group=4)
    (entry,) = manifest["splits"]["train"]
    meta = pq.read_metadata(out / entry["path"])
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 4, 3]
    assert entry["row_groups"] == 3 and entry["rows"] == 11


def test_writer_settings(tmp_path, cohort):
    runs, _, stats = cohort
    out = tmp_path / "shards"
    manifest = build_shards(runs, stats, out, window=16, label_columns=LABELS)
    meta = pq.read_metadata(out / manifest["splits"]["train"][0]["path"])
    columns = {meta.row_group(0).column(j).path_in_schema: meta.row_group(0).column(j)
               for j in range(meta.num_columns)}
    data = columns["data"]
    assert data.compression == "UNCOMPRESSED" and columns["run_id"].compression == "ZSTD"
    assert "RLE_DICTIONARY" not in data.encodings
    assert not data.is_stats_set
    for name in ("run_id", "subject", "split"):
        assert "RLE_DICTIONARY" in columns[name].encodings
    assert "RLE_DICTIONARY" not in columns["site"].encodings
    assert columns["n_timepoints"].is_stats_set


def test_read_shard_decodes_matrices(tmp_path, cohort):
    from brainjepa.data.shards import read_shard

    runs, raw, stats = cohort
    manifest = build_shards(runs, stats, tmp_path / "s", window=16)
    frame = read_shard(tmp_path / "s" / manifest["splits"]["val"][0]["path"])
    for run_id, data in zip(frame["run_id"], frame["data"]):
        assert data.shape == (R, raw[run_id].shape[0])
        np.testing.assert_allclose(data, stats.apply(raw[run_id].T), rtol=1e-3, atol=1e-3)


def test_short_runs_excluded_and_listed(tmp_path):
    lengths = {"a": ("train", 40), "b": ("train", 15), "c": ("val", 10), "d": ("val", 16)}
    runs, _ = make_runs(tmp_path / "runs", lengths)
    out = tmp_path / "shards"
    manifest = build_shards(runs, make_stats(), out, window=16)
    assert manifest["excluded"] == 2
    excluded = pd.read_csv(out / "excluded.tsv", sep="\t")
    assert list(excluded.columns) == ["run_id", "split", "n_timepoints", "reason"]
    assert excluded[["run_id", "split", "n_timepoints"]].values.tolist() == [["b", "train", 15], ["c", "val", 10]]
    assert [r["run_id"] for r in read_rows(out, manifest, "train")] == ["a"]
    assert [r["run_id"] for r in read_rows(out, manifest, "val")] == ["d"]


def test_short_runs_error_policy(tmp_path):
    runs, _ = make_runs(tmp_path / "runs", {"a": ("train", 40), "short-run": ("train", 12)})
    with pytest.raises(InputError, match=r"short-run.*12 time points"):
        build_shards(runs, make_stats(), tmp_path / "shards", window=16, short_policy="error")
    assert not (tmp_path / "shards").exists()


def test_rebuild_is_byte_identical(tmp_path, cohort):
    runs, _, stats = cohort
    kwargs = dict(window=16, max_shard_bytes=R * 40 * 2 * 2, rows_per_row_group=2, label_columns=LABELS)
    first = build_shards(runs, stats, tmp_path / "a", **kwargs)
    second = build_shards(runs.sample(frac=1.0, random_state=1), stats, tmp_path / "b", **kwargs)
    assert first == second
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_manifest_checksums_and_sizes(tmp_path, cohort):
    runs, _, stats = cohort
    out = tmp_path / "shards"
    manifest = build_shards(runs, stats, out, window=16, max_shard_bytes=R * 40 * 2 * 2)
    for entries in manifest["splits"].values():
        for entry in entries:
            path = out / entry["path"]
            assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert entry["bytes"] == path.stat().st_size
            assert entry["rows"] == pq.read_metadata(path).num_rows
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_rebuild_replaces_existing_folder(tmp_path, cohort):
    runs, _, stats = cohort
    out = tmp_path / "shards"
    build_shards(runs, stats, out, window=16)
    (out / "stale.txt").write_text("old")
    manifest = build_shards(runs[runs["split"] == "train"], stats, out, window=16)
    assert list(manifest["splits"]) == ["train"] and not (out / "val").exists() and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "shards"]  # no temporary folders left


def test_roi_column_mismatch_names_the_file(tmp_path, cohort):
    runs, _, stats = cohort
    bad = tmp_path / "bad.parquet"
    write_timeseries(np.zeros((40, R), np.float32), ROIS[:3] + ["other"] + ROIS[4:], bad, {"tr": 2.0})
    runs.loc[2, "path"] = str(bad)
    with pytest.raises(InputError, match=r"bad\.parquet: ROI column 3 is 'other'.*'roi3'"):
        build_shards(runs, stats, tmp_path / "shards", window=16)
    write_timeseries(np.zeros((40, R - 1), np.float32), ROIS[:-1], bad, {"tr": 2.0})
    with pytest.raises(InputError, match=r"bad\.parquet: 7 ROI columns.*8 ROIs"):
        build_shards(runs, stats, tmp_path / "shards", window=16)


def test_bad_tables_are_input_errors(tmp_path, cohort):
    runs, _, stats = cohort
    with pytest.raises(InputError, match="lacks column"):
        build_shards(runs.drop(columns="split"), stats, tmp_path / "s", window=16)
    with pytest.raises(InputError, match="more than once"):
        build_shards(pd.concat([runs, runs.iloc[:1]]), stats, tmp_path / "s", window=16)
    bad = runs.copy()
    bad.loc[0, "split"] = "../x"
    with pytest.raises(InputError, match="not a valid name"):
        build_shards(bad, stats, tmp_path / "s", window=16)
    bad = runs.copy()
    bad["sex"] = bad["sex"].astype(object)
    bad.loc[0, "sex"] = 2.0
    with pytest.raises(InputError, match="r00.*'sex'.*not 0 or 1"):
        build_shards(bad, stats, tmp_path / "s", window=16, label_columns=LABELS)
    bad = runs.copy()
    bad.loc[0, "path"] = str(tmp_path / "missing.parquet")
    with pytest.raises(InputError, match="missing.parquet"):
        build_shards(bad, stats, tmp_path / "s", window=16)
    assert not (tmp_path / "s").exists()


def test_scaling_stats_mismatch(tmp_path, cohort):
    runs, _, stats = cohort
    manifest = build_shards(runs, stats, tmp_path / "shards", window=16)
    good, other = tmp_path / "good.json", tmp_path / "other.json"
    good.write_text(stats.to_json())
    other.write_text(make_stats(seed=5).to_json())
    check_scaling_stats(manifest, good)
    check_scaling_stats(tmp_path / "shards" / "manifest.json", good)
    with pytest.raises(InputError) as err:
        check_scaling_stats(tmp_path / "shards" / "manifest.json", other)
    message = str(err.value)
    assert "other.json" in message and "manifest.json" in message
    assert stats.id in message and make_stats(seed=5).id in message
    with pytest.raises(InputError, match="other.json"):
        ShardDataset(tmp_path / "shards" / "manifest.json", "train", window=16, scaling_stats=other)


def test_load_manifest_checks_format(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": "something-else/2"}))
    with pytest.raises(InputError, match=r"manifest.json: not a shard manifest"):
        load_manifest(path)
    with pytest.raises(InputError, match="cannot read"):
        load_manifest(tmp_path / "absent.json")


def test_corrupted_shard_is_reported_at_load(tmp_path, cohort):
    runs, _, stats = cohort
    out = tmp_path / "shards"
    manifest = build_shards(runs, stats, out, window=16)
    path = out / manifest["splits"]["train"][0]["path"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    dataset = ShardDataset(out / "manifest.json", "train", window=16)  # construction does not read shards
    with pytest.raises(InputError, match=r"train/shard-00000\.parquet: sha256 .* does not match"):
        list(dataset)
    with pytest.raises(InputError, match=r"train/shard-00000\.parquet: sha256"):  # also from a worker process
        list(DataLoader(dataset, batch_size=2, num_workers=1))
    assert len(list(ShardDataset(out / "manifest.json", "val", window=16))) == 3  # other shards still load


def test_failed_build_leaves_no_output(tmp_path, cohort):
    runs, _, stats = cohort
    bad = tmp_path / "nan.parquet"
    data = np.full((40, R), 100.0, np.float32)
    data[5, 2] = np.nan
    write_timeseries(data, ROIS, bad, {"tr": 2.0})
    runs.loc[len(runs) - 1, "path"] = str(bad)  # the last run: several shards are written before it fails
    out = tmp_path / "out" / "shards"
    with pytest.raises(InputError, match=r"nan\.parquet.*roi2.*time point 6 \(counted from 1\).*not finite"):
        build_shards(runs, stats, out, window=16, max_shard_bytes=R * 40 * 2)
    assert not out.exists()
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_honour_the_umask(tmp_path, cohort, umask):
    """Files written atomically and the shard folder get the modes any tool would give under the user's umask
    (mkstemp / mkdtemp alone give 0600 / 0700, unreadable by a lab group)."""
    from brainjepa.io import write_text_atomic

    runs, _, stats = cohort
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "a" / "note.txt", "x")
        build_shards(runs, stats, tmp_path / "shards", window=16, label_columns=LABELS)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a" / "note.txt") == 0o666 & ~umask
    assert mode(tmp_path / "shards") == 0o777 & ~umask
    files = [p for p in (tmp_path / "shards").rglob("*") if p.is_file()]
    assert files and all(mode(p) == 0o666 & ~umask for p in files), {str(p): oct(mode(p)) for p in files}


def test_a_split_whose_runs_are_all_shorter_than_the_window_is_an_error(tmp_path):
    """Before: rc 0 and an empty shard set (every run in excluded.tsv), found only at pretraining."""
    runs, _ = make_runs(tmp_path / "runs", {"a": ("train", 40), "b": ("val", 12), "c": ("val", 15)})
    with pytest.raises(InputError, match=r"split val: all 2 runs are shorter than the window of 16 .*c, has 15"):
        build_shards(runs, make_stats(), tmp_path / "shards", window=16)
    assert not (tmp_path / "shards").exists() and not list(tmp_path.glob(".shards.*"))
    # one cohort of a split, all too short, beside one that is fine
    runs, _ = make_runs(tmp_path / "runs2", {"a": ("train", 40), "b": ("train", 12), "c": ("train", 40)})
    runs.loc[runs["run_id"] == "b", "cohort"] = "short"
    with pytest.raises(InputError, match=r"split train, cohort short: all 1 runs are shorter"):
        build_shards(runs, make_stats(), tmp_path / "shards", window=16)


def test_a_killed_attempt_leaves_no_temporary_folder_after_the_rerun(tmp_path, cohort):
    runs, _, stats = cohort
    stale = [tmp_path / ".shards.k1ll3d.tmp", tmp_path / ".shards.old.x9"]
    for path in stale:
        (path / "train").mkdir(parents=True)
        (path / "train" / "shard-00000.parquet").write_bytes(b"partial")
    other = tmp_path / ".other.abc.tmp"                  # another shard set's: not ours to remove
    other.mkdir()
    build_shards(runs, stats, tmp_path / "shards", window=16, label_columns=LABELS)
    assert not any(p.exists() for p in stale) and other.exists()
    assert (tmp_path / "shards" / "manifest.json").exists()


def test_evaluation_and_pretraining_readers_give_one_checksum_message(tmp_path, cohort):
    """read_split (evaluation) and ShardDataset (pretraining) check a shard's sha256 with the same message, for a
    byte flipped in the data or in the Parquet footer (where the file no longer parses)."""
    from brainjepa.evaluate.tasks import read_split

    runs, _, stats = cohort
    out = tmp_path / "shards"
    manifest = build_shards(runs, stats, out, window=16)
    path = out / manifest["splits"]["val"][0]["path"]
    raw = bytearray(path.read_bytes())
    for offset in (len(raw) // 3, len(raw) - 12):
        flipped = bytearray(raw)
        flipped[offset] ^= 0x01
        path.write_bytes(bytes(flipped))
        messages = []
        for read in (lambda: read_split(out / "manifest.json", "val", ["run_id"], False),
                     lambda: read_split(out / "manifest.json", "val", [], True),
                     lambda: list(ShardDataset(out / "manifest.json", "val", window=16))):
            with pytest.raises(InputError) as caught:
                read()
            messages.append(str(caught.value))
        digest = hashlib.sha256(bytes(flipped)).hexdigest()
        assert messages == [f"{path}: sha256 {digest} does not match {manifest['splits']['val'][0]['sha256']} in "
                            f"{out / 'manifest.json'}; the shard is corrupted or was replaced (rebuild the shards)"] * 3
    path.write_bytes(bytes(raw))
    assert len(read_split(out / "manifest.json", "val", [], True)) == 3
