"""The torch dataset of the shards (brainjepa.data.dataset): exactly-once coverage over ranks and workers, windows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from brainjepa.data.dataset import ShardDataset, assign_units, window_starts
from brainjepa.data.shards import build_shards
from brainjepa.errors import InputError
from brainjepa.group.scaling import ScalingStats
from brainjepa.io import write_timeseries

R, WINDOW = 8, 16
ROIS = [f"roi{i}" for i in range(R)]
LABELS = {"age": "continuous", "sex": "binary", "site": "categorical"}


def make_stats() -> ScalingStats:
    rng = np.random.default_rng(0)
    return ScalingStats("subject_mean", tuple(ROIS), rng.normal(100, 5, R), rng.uniform(0.5, 2.0, R), 10)


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory) -> tuple[Path, dict, pd.DataFrame]:
    """23 runs (T 20 or 40; train 18, val 5), 2-run row groups, several shards; returns manifest path, data, runs."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    stats, rows, scaled = make_stats(), [], {}
    for i in range(23):
        run_id, n_time = f"c1/sub-{i:02d}_run-1", (40 if i % 3 else 20)
        data = rng.normal(100, 3, size=(n_time, R)).astype(np.float32)
        path = root / "runs" / f"{i:02d}.parquet"
        write_timeseries(data, ROIS, path, {"tr": 2.0})
        scaled[run_id] = stats.apply(data.T).astype(np.float16).astype(np.float32)
        rows.append({"run_id": run_id, "cohort": "c1", "subject": f"{i:02d}", "session": "1", "run": "1",
                     "split": "val" if i % 4 == 3 else "train", "path": str(path),
                     "age": np.nan if i % 5 == 0 else 30.0 + i, "sex": float(i % 2) if i % 7 else np.nan,
                     "site": ["x", "y", "z", ""][i % 4]})
    runs = pd.DataFrame(rows)
    build_shards(runs, stats, root / "shards", window=WINDOW, rows_per_row_group=2,
                 max_shard_bytes=R * 40 * 2 * 5, label_columns=LABELS)
    (root / "stats.json").write_text(stats.to_json())
    return root / "shards" / "manifest.json", scaled, runs


def collect(dataset: ShardDataset, rank: int, world: int, worker: int, workers: int) -> list[tuple[str, int]]:
    return [(run_id, start) for run_id, start, _, _ in dataset._samples(rank, world, worker, workers)]


def test_batches_through_dataloader(shard_set):
    manifest, _, _ = shard_set
    dataset = ShardDataset(manifest, "train", window=WINDOW)
    batches = list(DataLoader(dataset, batch_size=4))
    x, y = batches[0]
    assert x.shape == (4, 1, R, WINDOW) and x.dtype == torch.float32
    assert y.shape == (4, 3) and y.dtype == torch.float32
    assert sum(len(b[0]) for b in batches) == 18 == len(dataset)


def test_labels_and_missing_values(shard_set):
    manifest, _, runs = shard_set
    dataset = ShardDataset(manifest, "train", window=WINDOW, return_run_id=True)
    assert dataset.label_names == ["age", "sex", "site"] and dataset.categories == {"site": ["x", "y", "z"]}
    by_id = runs.set_index("run_id")
    seen = 0
    for _xs, ys, ids in DataLoader(dataset, batch_size=5):
        for y, run_id in zip(ys, ids):
            src = by_id.loc[run_id]
            for value, name in zip(y.tolist(), ("age", "sex")):
                assert np.isnan(value) if pd.isna(src[name]) else value == src[name]
            site = y[2].item()
            assert np.isnan(site) if src["site"] == "" else dataset.categories["site"][int(site)] == src["site"]
            seen += 1
    assert seen == 18
    only_age = ShardDataset(manifest, "val", window=WINDOW, label_columns=["age"])
    assert next(iter(only_age))[1].shape == (1,)
    assert next(iter(ShardDataset(manifest, "val", window=WINDOW, label_columns=[])))[1].shape == (0,)
    with pytest.raises(InputError, match="no label column"):
        ShardDataset(manifest, "val", window=WINDOW, label_columns=["height"])


def test_windows_hold_the_scaled_data(shard_set):
    manifest, scaled, _ = shard_set
    for mode in ("train", "eval"):
        dataset = ShardDataset(manifest, "train", window=WINDOW, mode=mode)
        for run_id, start, x, _ in dataset._samples(0, 1, 0, 1):
            np.testing.assert_array_equal(x[0].numpy(), scaled[run_id][:, start:start + WINDOW])


def test_train_windows_vary_by_epoch_and_repeat_by_seed(shard_set):
    manifest, _, _ = shard_set

    def starts(seed, epoch):
        dataset = ShardDataset(manifest, "train", window=WINDOW, seed=seed)
        dataset.set_epoch(epoch)
        return collect(dataset, 0, 1, 0, 1)

    first = starts(0, 0)
    assert first == starts(0, 0)  # same (seed, epoch): same order and windows
    assert first != starts(0, 1) and first != starts(1, 0)
    assert dict(first) != dict(starts(0, 1))  # the windows themselves move, not just the order
    assert sorted(first) != first  # shuffled
    assert all(0 <= s <= (40 - WINDOW) for _, s in first)


def test_eval_windows_are_deterministic(shard_set):
    manifest, scaled, _ = shard_set
    dataset = ShardDataset(manifest, "train", window=WINDOW, mode="eval", seed=3)
    first = collect(dataset, 0, 1, 0, 1)
    dataset.set_epoch(4)
    assert collect(dataset, 0, 1, 0, 1) == first
    expected = [(run_id, s) for run_id in sorted(r for r in scaled if r in dict(first))
                for s in range(0, scaled[run_id].shape[1] // WINDOW * WINDOW, WINDOW)]
    assert first == expected
    assert window_starts(40, 16, mode="eval") == [0, 16] and window_starts(20, 16, mode="eval") == [0]
    assert len(dataset) == len(first)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_exactly_once_over_ranks_and_workers(shard_set, mode, world, workers):
    """Simulate every (rank, worker) consumer of one epoch: disjoint units, every sample exactly once."""
    manifest, _, _ = shard_set
    reference = ShardDataset(manifest, "train", window=WINDOW, mode=mode)
    reference.set_epoch(2)
    expected = collect(reference, 0, 1, 0, 1)
    assert len(set(expected)) == len(expected)
    n_workers = max(workers, 1)  # num_workers=0 is one consumer per rank (the main process)
    units, got = [], Counter()
    for rank in range(world):
        dataset = ShardDataset(manifest, "train", window=WINDOW, mode=mode, rank=rank, world_size=world)
        dataset.set_epoch(2)
        rank_samples = []
        for worker in range(n_workers):
            units.append(set(dataset.consumer_units(rank, world, worker, n_workers)))
            rank_samples += collect(dataset, rank, world, worker, n_workers)
        assert len(rank_samples) == len(dataset)  # __len__: this rank's samples over all its workers
        got.update(rank_samples)
    assert sum(len(u) for u in units) == len(set().union(*units)) == len(reference.units)  # disjoint, complete
    assert got == Counter(expected) and set(got.values()) == {1}


def test_assign_units_partitions(n_units=17):
    for world in (1, 2, 3):
        for workers in (1, 2, 3):
            parts = [assign_units(n_units, mode="train", seed=0, epoch=1, rank=r, world_size=world, worker=w,
                                  num_workers=workers) for r in range(world) for w in range(workers)]
            flat = [u for p in parts for u in p]
            assert sorted(flat) == list(range(n_units))


def test_real_dataloader_workers_cover_each_run_once(shard_set):
    manifest, _, _ = shard_set
    dataset = ShardDataset(manifest, "train", window=WINDOW, return_run_id=True)
    dataset.set_epoch(1)
    ids = [r for _, _, batch_ids in DataLoader(dataset, batch_size=3, num_workers=2) for r in batch_ids]
    assert Counter(ids) == Counter(r for r, _ in collect(dataset, 0, 1, 0, 1))
    assert set(Counter(ids).values()) == {1} and len(ids) == 18


def test_epoch_reaches_persistent_workers(shard_set):
    manifest, _, _ = shard_set

    def windows(loader):
        return {r: x for xs, _, ids in loader for x, r in zip(xs, ids)}

    dataset = ShardDataset(manifest, "train", window=WINDOW, return_run_id=True)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True)
    in_process = ShardDataset(manifest, "train", window=WINDOW, return_run_id=True)
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        in_process.set_epoch(epoch)
        got, want = windows(loader), windows(DataLoader(in_process, batch_size=4))
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got)
        if epoch == 0:
            first = got
    assert any(not torch.equal(first[k], got[k]) for k in got)


def test_construction_checks(shard_set):
    manifest, _, _ = shard_set
    with pytest.raises(InputError, match="no split 'test'"):
        ShardDataset(manifest, "test")
    with pytest.raises(InputError, match="window 32"):
        ShardDataset(manifest, "train", window=32)
    ShardDataset(manifest, "train", window=WINDOW, scaling_stats=manifest.parents[1] / "stats.json")
    smaller = ShardDataset(manifest, "train", window=8, mode="eval")
    assert all(s % 8 == 0 for _, s in collect(smaller, 0, 1, 0, 1))


@pytest.mark.parametrize("world,workers,batch", [(1, 2, 4), (2, 2, 3), (3, 1, 2), (2, 3, 2)])
def test_whole_batches_are_slices_of_one_global_stream(shard_set, world, workers, batch):
    """With batch_size: rank r's batch k is slice r of global batch k of the single-process stream, whatever the
    ranks and workers; every sample of the whole global batches once; a start batch skips exactly the ones before."""
    manifest, _, _ = shard_set
    single = collect(ShardDataset(manifest, "train", window=WINDOW, mode="train", seed=3), 0, 1, 0, 1)
    size = batch * world
    n_batches = len(single) // size
    for start in (0, 1):
        got = {}
        for rank in range(world):
            dataset = ShardDataset(manifest, "train", window=WINDOW, seed=3, rank=rank, world_size=world,
                                   batch_size=batch)
            dataset.set_epoch(0, start_batch=start)
            assert len(dataset) == n_batches * batch
            for worker in range(workers):
                samples = [(r, s) for r, s, _, _ in dataset._batched_samples(rank, world, worker, workers)]
                for j, k in enumerate(range(start + worker, n_batches, workers)):
                    got[(k, rank)] = samples[j * batch:(j + 1) * batch]
        flat = [s for k in range(start, n_batches) for rank in range(world) for s in got[(k, rank)]]
        assert flat == single[start * size:n_batches * size]


def test_whole_batches_through_dataloader_workers(shard_set):
    """A DataLoader with 2 workers yields the batches of 0 workers, in order (18 samples, batch 4: 4 batches)."""
    manifest, _, _ = shard_set
    def batches(workers):
        dataset = ShardDataset(manifest, "train", window=WINDOW, seed=1, batch_size=4, return_run_id=True)
        dataset.set_epoch(2)
        return [list(b[2]) for b in DataLoader(dataset, batch_size=4, num_workers=workers)]
    assert batches(2) == batches(0) and len(batches(0)) == 4


def test_a_shard_is_hashed_once_per_process(shard_set, monkeypatch):
    """Datasets of one process share the checksum check: a second dataset (or epoch) does not hash again."""
    from brainjepa.data import shards

    manifest_path, _, _ = shard_set
    hashed = []
    real = shards.check_shard_sha256
    monkeypatch.setattr(shards, "check_shard_sha256", lambda path, *a, **k: hashed.append(str(path)) or
                        real(path, *a, **k))
    monkeypatch.setattr(shards, "_VERIFIED_SHARDS", set())  # whatever earlier tests verified
    n_shards = len(shards.load_manifest(manifest_path)["splits"]["val"])
    first = [x for x, _ in ShardDataset(manifest_path, "val", window=WINDOW, mode="eval")]
    assert len(hashed) == n_shards
    second = [x for x, _ in ShardDataset(manifest_path, "val", window=WINDOW, mode="eval")]
    assert len(hashed) == n_shards and all(torch.equal(a, b) for a, b in zip(first, second))
