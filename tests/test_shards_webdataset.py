"""WebDataset tar shards (shards.format: webdataset): the Parquet shards' content, layout and manifest as tar
files; byte-identical reruns; the loader's streams equal to Parquet's; exactly once; streaming from URLs."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from brainjepa.data.dataset import ShardDataset
from brainjepa.data.shards import build_shards, load_manifest, read_shard, read_shard_columns
from brainjepa.data.tar_shards import TarShardReader, sample_key
from brainjepa.errors import InputError
from brainjepa.group.scaling import ScalingStats
from brainjepa.io import write_timeseries

R, WINDOW = 8, 16
ROIS = [f"roi{i}" for i in range(R)]
LABELS = {"age": "continuous", "sex": "binary", "site": "categorical"}
FORMATS = ("parquet", "webdataset")


def make_stats() -> ScalingStats:
    rng = np.random.default_rng(0)
    return ScalingStats("subject_mean", tuple(ROIS), rng.normal(100, 5, R), rng.uniform(0.5, 2.0, R), 10)


def make_runs(root: Path, n: int = 23) -> pd.DataFrame:
    """``n`` runs (T 20 or 40; about a quarter val), ids with '/' and '.', missing labels of every kind."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        path = root / f"{i:02d}.parquet"
        write_timeseries(rng.normal(100, 3, size=(40 if i % 3 else 20, R)).astype(np.float32), ROIS, path,
                         {"tr": 2.0})
        rows.append({"run_id": f"c1/sub-{i:02d}_ses-1.5_run-1", "cohort": "c1", "subject": f"{i:02d}",
                     "session": "1.5", "run": 1, "split": "val" if i % 4 == 3 else "train", "path": str(path),
                     "age": np.nan if i % 5 == 0 else 30.0 + i, "sex": float(i % 2) if i % 7 else np.nan,
                     "site": ["x", "y", "z", ""][i % 4]})
    return pd.DataFrame(rows)


def build(runs: pd.DataFrame, out: Path, shard_format: str, **kwargs) -> dict:
    kwargs = {"window": WINDOW, "rows_per_row_group": 2, "max_shard_bytes": R * 40 * 2 * 5,
              "label_columns": LABELS, **kwargs}
    return build_shards(runs, make_stats(), out, shard_format=shard_format, **kwargs)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    """The same runs as a Parquet and as a tar shard set (several shards, 2-run units): {format: manifest}."""
    root = tmp_path_factory.mktemp("twins")
    runs = make_runs(root / "runs")
    for shard_format in FORMATS:
        build(runs, root / shard_format, shard_format)
    return {f: root / f / "manifest.json" for f in FORMATS}


# ------------------------------------------------------------------------------------------------ writing
def test_same_runs_shards_and_manifest_as_parquet(twins):
    parquet, tar = (load_manifest(twins[f]) for f in FORMATS)
    assert parquet["shard_format"] == "parquet" and tar["shard_format"] == "webdataset"
    strip = lambda m: {k: v for k, v in m.items() if k not in ("shard_format", "splits")}  # noqa: E731
    assert strip(parquet) == strip(tar)
    assert list(parquet["splits"]) == list(tar["splits"]) == ["train", "val"]
    for split in parquet["splits"]:
        a, b = parquet["splits"][split], tar["splits"][split]
        assert len(a) == len(b) >= (2 if split == "train" else 1)  # the same size cap: the same shards
        for ea, eb in zip(a, b):
            assert eb["path"] == ea["path"].replace(".parquet", ".tar") and eb["path"].startswith(f"{split}/shard-")
            assert (ea["rows"], ea["row_groups"]) == (eb["rows"], eb["row_groups"])
            path = twins["webdataset"].parent / eb["path"]
            assert eb["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert eb["bytes"] == path.stat().st_size
            # read_shard gives the Parquet frame: same columns, types, values (the matrices bit for bit)
            fa, fb = read_shard(twins["parquet"].parent / ea["path"]), read_shard(path)
            pd.testing.assert_frame_equal(fa.drop(columns="data"), fb.drop(columns="data"))
            assert all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(fa["data"], fb["data"]))
            columns = ["site", "run_id", "n_timepoints", "absent"]
            pd.testing.assert_frame_equal(read_shard_columns(twins["parquet"].parent / ea["path"], columns),
                                          read_shard_columns(path, columns))


def test_members_keys_and_fixed_headers(twins):
    entry = load_manifest(twins["webdataset"])["splits"]["train"][0]
    with tarfile.open(twins["webdataset"].parent / entry["path"]) as tar:
        header, *members = tar.getmembers()
        described = json.loads(tar.extractfile(header).read())
        meta = json.loads(tar.extractfile(members[0]).read())
        matrix = np.load(io.BytesIO(tar.extractfile(members[1]).read()))
    manifest = load_manifest(twins["webdataset"])
    assert header.name == "__brainjepa__" and described == {"format": manifest["format"], "dtype": "float16",
                                                            "scaling_stats_id": manifest["scaling_stats_id"],
                                                            "label_columns": LABELS}
    assert len(members) == 2 * entry["rows"]
    assert [m.name.split(".", 1)[1] for m in members] == ["json", "npy"] * entry["rows"]
    assert members[0].name == "c1%2Fsub-00_ses-1%2E5_run-1.json"
    members.append(header)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "brainjepa",
                                                                                      "brainjepa", 0o444)}
    assert list(meta) == ["run_id", "cohort", "subject", "session", "run", "split", "tr", "n_rois",
                          "n_timepoints", "age", "sex", "site"]
    assert meta["run_id"] == "c1/sub-00_ses-1.5_run-1" and meta["run"] == "1" and meta["age"] is None
    assert matrix.dtype == np.dtype("<f2") and matrix.shape == (R, meta["n_timepoints"])


def test_sample_keys_are_safe_and_distinct():
    ids = ["a/b", "a_b", "a%2Fb", "a.b", "é/x y", "sub-01_ses-2"]
    keys = [sample_key(i) for i in ids]
    assert len(set(keys)) == len(keys)
    assert all("." not in k and "/" not in k and k.isascii() for k in keys)
    assert sample_key("sub-01_ses-2") == "sub-01_ses-2" and sample_key("a/b") == "a%2Fb"


def test_the_webdataset_library_reads_the_shards(twins):
    import webdataset as wds

    manifest = load_manifest(twins["webdataset"])
    expected = read_shard(twins["parquet"].parent / manifest["splits"]["val"][0]["path"].replace(".tar", ".parquet"))
    url = str(twins["webdataset"].parent / manifest["splits"]["val"][0]["path"])
    samples = list(wds.WebDataset(url, shardshuffle=False).decode())
    assert [s["json"]["run_id"] for s in samples] == expected["run_id"].tolist()
    assert all(np.array_equal(s["npy"], m) for s, m in zip(samples, expected["data"]))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_rebuild_is_byte_identical(tmp_path, dtype):
    runs = make_runs(tmp_path / "runs", n=9)
    first = build(runs, tmp_path / "a", "webdataset", dtype=dtype)
    second = build(runs.sample(frac=1.0, random_state=3), tmp_path / "b", "webdataset", dtype=dtype)
    assert first == second
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert any(f.suffix == ".tar" for f in files)
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_failed_build_leaves_no_output(tmp_path):
    runs = make_runs(tmp_path / "runs", n=9)
    bad = tmp_path / "nan.parquet"
    data = np.full((40, R), 100.0, np.float32)
    data[3, 1] = np.nan
    write_timeseries(data, ROIS, bad, {"tr": 2.0})
    runs.loc[len(runs) - 1, "path"] = str(bad)  # the last run: tar shards are written before it fails
    with pytest.raises(InputError, match=r"nan\.parquet.*roi1.*time point 4 \(counted from 1\).*not finite"):
        build(runs, tmp_path / "out" / "shards", "webdataset", max_shard_bytes=R * 40 * 2)
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(InputError, match="shard format must be one of"):
        build(runs, tmp_path / "out" / "shards", "tar")


def test_manifest_shard_format_is_checked(tmp_path, twins):
    manifest = json.loads(twins["parquet"].read_text())
    del manifest["shard_format"]  # written before the tar format: Parquet
    (tmp_path / "old.json").write_text(json.dumps(manifest))
    assert load_manifest(tmp_path / "old.json")["shard_format"] == "parquet"
    manifest["shard_format"] = "zip"
    (tmp_path / "bad.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"bad\.json: shard_format 'zip'"):
        load_manifest(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------------------ loading
def stream(manifest: Path, **kwargs) -> list[tuple[str, int, torch.Tensor, torch.Tensor]]:
    """One consumer's (run_id, start, x, y), as ``ShardDataset._samples`` / ``_batched_samples`` make them."""
    consumer = kwargs.pop("consumer", (0, 1, 0, 1))
    epoch = kwargs.pop("epoch", 0)
    dataset = ShardDataset(manifest, "train", window=WINDOW, rank=consumer[0], world_size=consumer[1], **kwargs)
    dataset.set_epoch(epoch)
    samples = dataset._batched_samples if dataset.batch_size else dataset._samples
    return list(samples(*consumer))


def assert_same_stream(a, b) -> None:
    assert [(r, s) for r, s, _, _ in a] == [(r, s) for r, s, _, _ in b] and a
    for (_, _, xa, ya), (_, _, xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya.isnan(), yb.isnan())
        assert torch.equal(ya.nan_to_num(), yb.nan_to_num())


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("seed,epoch", [(0, 0), (3, 2)])
@pytest.mark.parametrize("consumer", [(0, 1, 0, 1), (1, 2, 0, 1), (0, 2, 1, 2), (2, 3, 1, 2)])
def test_streams_equal_parquet(twins, mode, seed, epoch, consumer):
    """(run_id, window start, x, y) of every consumer (rank of world, worker of workers) equal Parquet's."""
    a, b = (stream(twins[f], mode=mode, seed=seed, epoch=epoch, consumer=consumer) for f in FORMATS)
    assert_same_stream(a, b)


@pytest.mark.parametrize("consumer,batch", [((0, 1, 0, 1), 4), ((1, 2, 0, 2), 3), ((0, 2, 1, 2), 2)])
def test_whole_batches_equal_parquet(twins, consumer, batch):
    for epoch, start in ((0, 0), (1, 1)):
        streams = []
        for f in FORMATS:
            dataset = ShardDataset(twins[f], "train", window=WINDOW, seed=1, rank=consumer[0],
                                   world_size=consumer[1], batch_size=batch)
            dataset.set_epoch(epoch, start_batch=start)
            streams.append((len(dataset), list(dataset._batched_samples(*consumer))))
        assert streams[0][0] == streams[1][0]
        assert_same_stream(streams[0][1], streams[1][1])


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kwargs", [{"mode": "train"}, {"mode": "eval"}, {"mode": "train", "batch_size": 3}])
def test_dataloader_batches_equal_parquet(twins, workers, kwargs):
    """Through a real DataLoader (worker processes), the batches of both formats are equal, as are len()s."""
    out = []
    for f in FORMATS:
        dataset = ShardDataset(twins[f], "train", window=WINDOW, seed=2, return_run_id=True, **kwargs)
        dataset.set_epoch(1)
        batches = list(DataLoader(dataset, batch_size=kwargs.get("batch_size", 4), num_workers=workers))
        out.append((len(dataset), batches))
    (len_a, a), (len_b, b) = out
    assert len_a == len_b == sum(len(batch[2]) for batch in a)
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b, strict=True):
        assert list(ia) == list(ib) and torch.equal(xa, xb) and torch.equal(ya.nan_to_num(-1), yb.nan_to_num(-1))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_exactly_once_over_two_ranks_and_two_workers(twins, mode):
    """Two ranks, each a DataLoader with two worker processes: every window of the epoch exactly once."""
    got = Counter()
    for rank in range(2):
        dataset = ShardDataset(twins["webdataset"], "train", window=WINDOW, mode=mode, rank=rank, world_size=2,
                               return_run_id=True)
        dataset.set_epoch(3)
        mine = [(r, x[0, :, 0].numpy().tobytes()) for xs, _, ids in DataLoader(dataset, batch_size=3, num_workers=2)
                for x, r in zip(xs, ids)]
        assert len(mine) == len(dataset)
        got.update(mine)
    single = ShardDataset(twins["parquet"], "train", window=WINDOW, mode=mode)
    single.set_epoch(3)
    expected = Counter((r, x[0, :, 0].numpy().tobytes()) for r, _, x, _ in single._samples(0, 1, 0, 1))
    assert got == expected and set(got.values()) == {1}


@pytest.mark.parametrize("template", ["pipe:cat {root}/{{path}}", "file://{root}/{{path}}", "{root}/{{path}}"])
def test_shards_stream_from_urls(tmp_path, twins, template):
    """shard_url: the same streams from a pipe, a file:// URL or another folder (object storage works alike)."""
    copy = tmp_path / "elsewhere"
    for entry in load_manifest(twins["webdataset"])["splits"]["train"]:
        (copy / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        (copy / entry["path"]).write_bytes((twins["webdataset"].parent / entry["path"]).read_bytes())
    url = template.format(root=copy)
    for mode in ("train", "eval"):
        assert_same_stream(stream(twins["parquet"], mode=mode, epoch=1),
                           stream(twins["webdataset"], mode=mode, epoch=1, shard_url=url))
    dataset = ShardDataset(twins["webdataset"], "train", window=WINDOW, mode="eval", shard_url=url)
    assert len(dataset) == len(ShardDataset(twins["parquet"], "train", window=WINDOW, mode="eval"))


def test_a_stream_reads_groups_in_any_order(twins):
    entry = load_manifest(twins["webdataset"])["splits"]["train"][0]
    path = twins["webdataset"].parent / entry["path"]
    local = TarShardReader(path, entry["rows"], 2)
    remote = TarShardReader(f"pipe:cat {path}", entry["rows"], 2)
    for group in (1, 2, 0, 2, 2, 1):  # further on: the stream goes on; behind: it is reopened
        a, b = local.read_group(group, np.dtype("<f2"), R), remote.read_group(group, np.dtype("<f2"), R)
        assert [m for m, _ in a] == [m for m, _ in b] and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    local.close()
    remote.close()


def test_corrupted_or_truncated_tar_shards_are_reported(tmp_path):
    runs = make_runs(tmp_path / "runs", n=9)
    manifest = build(runs, tmp_path / "shards", "webdataset")
    path = tmp_path / "shards" / manifest["splits"]["train"][0]["path"]
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF
    path.write_bytes(bytes(raw))
    dataset = ShardDataset(tmp_path / "shards", "train", window=WINDOW)
    with pytest.raises(InputError, match=r"train/shard-00000\.tar: sha256 .* does not match"):
        list(dataset)
    url = ShardDataset(tmp_path / "shards", "train", window=WINDOW, shard_url=f"pipe:cat {tmp_path}/shards/{{path}}")
    with pytest.raises(InputError, match=r"pipe:cat .*shard-00000\.tar: sha256 .* does not match"):
        list(DataLoader(url, batch_size=2, num_workers=1))
    path.write_bytes(bytes(raw[:2048]))  # a truncated shard, checksums off: its sample count is wrong
    unchecked = ShardDataset(tmp_path / "shards", "train", window=WINDOW, verify_checksums=False)
    with pytest.raises(InputError, match=r"shard-00000\.tar"):
        list(unchecked)


def test_shard_url_is_for_tar_shards(twins):
    with pytest.raises(InputError, match="shard_url streams tar shards"):
        ShardDataset(twins["parquet"], "train", window=WINDOW, shard_url="pipe:cat /x/{path}")
    with pytest.raises(ValueError, match=r"no '\{path\}'"):
        ShardDataset(twins["webdataset"], "train", window=WINDOW, shard_url="https://host/shards/")


@pytest.mark.slow  # two pretraining runs: by far the slowest of tests/test_shards*.py in --durations
def test_pretraining_on_tar_shards_equals_parquet(tmp_path):
    """The pretraining loop on tar shards streamed through a pipe trains the model Parquet shards train (CPU)."""
    from brainjepa.group.gradients import write_gradients
    from brainjepa.group.scaling import write_scaling_stats
    from brainjepa.train import checkpoint as ckpt
    from brainjepa.train.config import load_config
    from brainjepa.train.pretrain import pretrain

    runs = make_runs(tmp_path / "runs", n=12)
    runs["split"] = "pretrain"
    write_gradients(np.random.default_rng(0).normal(size=(R, 4)), np.linspace(1, 0.5, 4), ROIS,
                    tmp_path / "gradients.tsv")
    write_scaling_stats(make_stats(), tmp_path / "stats.json")
    states = []
    for f in FORMATS:
        build(runs, tmp_path / f, f, label_columns={}, rows_per_row_group=4)
        extra = [f"data.shard_url=pipe:cat {tmp_path / f}/{{path}}"] if f == "webdataset" else []
        cfg = load_config(None, [f"data.manifest={tmp_path / f / 'manifest.json'}",
                                 f"data.gradients={tmp_path / 'gradients.tsv'}",
                                 f"data.scaling_stats={tmp_path / 'stats.json'}", f"run.out_dir={tmp_path / f}-run",
                                 f"data.window={WINDOW}", "data.batch_size=4", "data.num_workers=0",
                                 "optim.epochs=2", "optim.warmup_epochs=1", "model.size=tiny",
                                 "run.progress=false", *extra])
        states.append(ckpt.load_checkpoint(pretrain(cfg)))
    for module in ckpt.MODULES:
        assert states[0][module].keys() == states[1][module].keys()
        assert all(torch.equal(states[0][module][k], states[1][module][k]) for k in states[0][module]), module


@pytest.mark.parametrize("flag,expected", [([], "parquet"), (["--format", "webdataset"], "webdataset")])
def test_cli_format_option_reaches_the_writer(tmp_path, monkeypatch, flag, expected):
    """`brainjepa shards --format` (the rule passes shards.format) is the writer's shard_format; parquet by default."""
    import brainjepa.data.shards as shards
    from brainjepa.cli import build_parser

    seen = {}
    monkeypatch.setattr(shards, "run_shards", lambda *a, **kw: seen.update(kw) or {"splits": {}})
    args = build_parser().parse_args(["shards", "--splits", "s.tsv", "--runs-root", ".", "--phenotypes", "p.tsv",
                                      "--label-types", "{}", "--stats", "x.json", "--max-shard-mb", "1", "--dtype",
                                      "float16", "--window", "16", "--short-policy", "exclude", "--out-dir",
                                      str(tmp_path), *flag])
    args.func(args)
    assert seen["shard_format"] == expected
    with pytest.raises(SystemExit):
        build_parser().parse_args(["shards", "--format", "zip"])


def test_evaluation_reads_verify_tar_shards_once(tmp_path, monkeypatch):
    """read_split (what evaluation, features, capabilities read) checks a tar shard's sha256 while reading it,
    once per process; a same-size byte flip, in a matrix or in a tar header, gives the checksum message."""
    from brainjepa.data import shards
    from brainjepa.evaluate.tasks import read_split

    runs = make_runs(tmp_path / "runs", n=9)
    out = tmp_path / "shards"
    manifest = build(runs, out, "webdataset")
    build(runs, tmp_path / "parquet", "parquet")
    expected = read_split(tmp_path / "parquet" / "manifest.json", "val", [], True)
    hashed = []
    real = shards.check_shard_sha256
    monkeypatch.setattr(shards, "check_shard_sha256", lambda path, *a, **k: hashed.append(str(path)) or
                        real(path, *a, **k))
    clean = read_split(out / "manifest.json", "val", [], True)
    pd.testing.assert_frame_equal(clean.drop(columns="data"), expected.drop(columns="data"))
    assert all(np.array_equal(a, b) for a, b in zip(clean["data"], expected["data"]))
    assert hashed == [str(out / manifest["splits"]["val"][0]["path"])]
    read_split(out / "manifest.json", "val", ["subject"], False)
    assert len(hashed) == 1  # the second read in this process: no second hash
    path = out / manifest["splits"]["val"][0]["path"]
    raw = bytearray(path.read_bytes())
    message = (r"val/shard-00000\.tar: sha256 [0-9a-f]{64} does not match [0-9a-f]{64} in \S*manifest\.json; "
               r"the shard is corrupted or was replaced \(rebuild the shards\)")
    for offset in (len(raw) // 3, 100):  # a third in: a matrix; 100: the mode field of the first tar header
        flipped = bytearray(raw)
        flipped[offset] ^= 0x01
        path.write_bytes(bytes(flipped))
        for columns, with_data in ((["subject", "age"], False), ([], True)):
            with pytest.raises(InputError, match=message):
                read_split(out / "manifest.json", "val", columns, with_data)
