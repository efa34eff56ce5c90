"""Torch loading of the shards written by :mod:`brainjepa.data.shards`, Parquet or WebDataset tar.

:class:`ShardDataset` is an ``IterableDataset`` that yields ``(x, y)``:

- ``x``: float32 tensor ``[1, R, window]``, one window of a scaled run (the default ``collate_fn`` makes
  ``[B, 1, R, window]``);
- ``y``: float32 tensor ``[n_labels]`` in the order of ``dataset.label_names``; NaN where a label is missing.
  Continuous and binary labels are their value; a categorical label is the index of its value in
  ``manifest["label_categories"][name]`` (sorted values; the workflow's per-split shard sets take them from
  every subject of the phenotypes sheet, so codes agree across splits). With ``return_run_id=True`` it yields
  ``(x, y, run_id)``.

Units of work are (shard file, row group); in a tar shard (the manifest's ``shard_format: webdataset``) a "row
group" is a group of the manifest's ``rows_per_row_group`` consecutive samples, so a tar set has the units of its
Parquet twin, and the same stream below (the row order of a unit is seeded by the Parquet shard's name in both
formats). Each rank takes every ``world_size``-th unit, and each DataLoader
worker of a rank every ``num_workers``-th of those, so within one epoch every sample appears exactly once
across all ranks and workers (ranks may get a few samples more or fewer than others: a DDP training loop
must tolerate uneven ends, e.g. by stopping at the smallest rank's count). A rank's share does not depend
on its number of workers.

``train`` mode: the units are shuffled from (seed, epoch) and the rows of each unit from (seed, epoch,
unit); each run gives one window whose start is drawn from (seed, epoch, crc32(run_id)). ``eval`` mode: fixed
order, and every non-overlapping window starting at time 0 (floor(T / window) per run).

With ``batch_size`` B (the pretraining loader), train mode yields whole batches only, cut from one global
stream: the units in their shuffled order (as for a single rank), rows shuffled within each unit. Global batch
``k`` is positions ``[k G, (k + 1) G)`` with ``G = B x world_size`` (the last partial one dropped); rank ``r``
takes its slice ``[k G + r B, k G + (r + 1) B)``. So every rank runs the same number of batches, and
``world_size`` processes with batch B train on the samples one process with batch G would. DataLoader worker
``w`` of ``n`` makes batches ``start + w``, ``start + w + n``, ... (``start``: :meth:`set_epoch`'s
``start_batch``), the order in which a DataLoader takes them from its workers: an epoch has the same batches,
in the same order, whatever the number of workers (each worker reads only the units its batches need), and a
resumed epoch starts at its batch without reading the ones before.

Call :meth:`ShardDataset.set_epoch` before each epoch. The epoch lives in shared memory, so it reaches
DataLoader workers also with ``persistent_workers=True`` (recommended: each consumer process checks the
sha256 of a shard the first time it opens it, and persistent workers do that once rather than every epoch; the
check is :func:`brainjepa.data.shards.verify_shard`, whose record of verified files a process shares with its
other datasets and the evaluation readers, and a forked worker inherits from its parent).

Reading cost (bench/loader.py): a row group is decoded once (the matrices are raw little-endian bytes, see
``brainjepa.data.shards``) and every window of it is copied out as float32. A local tar shard is indexed once
per process (its member headers) and a group is one read; tar shards in object storage are streamed
(``shard_url``, :mod:`brainjepa.data.tar_shards`).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from brainjepa.data.schedule import _ROWS, assign_units, stable_hash, window_starts  # noqa: F401 (re-exported)
from brainjepa.data.shards import DTYPES, SHARD_FORMATS, check_scaling_stats, load_manifest, verify_shard
from brainjepa.data.tar_shards import TarShardReader, is_url
from brainjepa.errors import InputError

MODES = ("train", "eval")
OPEN_FILES = 16
OPEN_STREAMS = 4  # open remote tar streams per process (each may hold a download process)


def _row_seed_name(path: str) -> str:
    """The name that seeds a unit's row order: the Parquet shard's name in either format (same stream)."""
    stem, dot, suffix = path.rpartition(".")
    return f"{stem}{SHARD_FORMATS['parquet']}" if dot and f".{suffix}" in SHARD_FORMATS.values() else path


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardDataset(torch.utils.data.IterableDataset):
    """Windows of the scaled runs of one split of a shard set (module docstring: output and order).

    manifest_path: ``manifest.json`` or its folder. window: at most the shards' window. label_columns: the
    labels in ``y`` (default: all in the manifest; ``[]``: none). rank/world_size: default torch.distributed's
    when initialised, else 0/1. scaling_stats: a statistics file to check against the manifest.
    shard_url: tar shards only: where the shard files are, ``{path}`` standing for a manifest entry's ``path``
    (``pipe:aws s3 cp s3://bucket/shards/pretrain/{path} -``, ``https://host/shards/pretrain/{path}``, or a local
    folder: ``/scratch/pretrain/{path}``); default: beside the manifest.
    """

    def __init__(self, manifest_path: str | os.PathLike, split: str, *, window: int = 160, mode: str = "train",
                 seed: int = 0, label_columns: list[str] | None = None, rank: int | None = None,
                 world_size: int | None = None, verify_checksums: bool = True,
                 scaling_stats: str | os.PathLike | None = None, return_run_id: bool = False,
                 batch_size: int | None = None, shard_url: str | None = None):
        super().__init__()
        path = Path(manifest_path)
        self.manifest_path = path / "manifest.json" if path.is_dir() else path
        self.manifest = load_manifest(self.manifest_path)
        self.root = self.manifest_path.parent
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if split not in self.manifest["splits"]:
            raise InputError(f"{self.manifest_path}: no split '{split}' (splits: {sorted(self.manifest['splits'])})")
        if not 1 <= int(window) <= int(self.manifest["window"]):
            raise InputError(f"window {window}: must be between 1 and the shards' window {self.manifest['window']} "
                             f"({self.manifest_path}; runs shorter than that were left out)")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, not {seed}")
        if batch_size is not None and (mode != "train" or int(batch_size) < 1):
            raise ValueError(f"batch_size {batch_size}: whole batches are for train mode, at least 1 sample")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if rank is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        kinds = self.manifest["label_columns"]
        names = list(kinds) if label_columns is None else list(label_columns)
        unknown = [n for n in names if n not in kinds]
        if unknown:
            raise InputError(f"{self.manifest_path}: no label column(s) {unknown} (available: {list(kinds)})")
        if scaling_stats is not None:
            check_scaling_stats(self.manifest_path, scaling_stats)
        self.shard_format = self.manifest["shard_format"]
        if shard_url is not None and self.shard_format != "webdataset":
            raise InputError(f"{self.manifest_path}: shard_url streams tar shards (shard_format webdataset); these "
                             f"are {self.shard_format}")
        if shard_url is not None and "{path}" not in shard_url:
            raise ValueError(f"shard_url {shard_url!r} has no '{{path}}' (where a shard's path goes)")
        self.shard_url = shard_url
        self.group_size = int(self.manifest["rows_per_row_group"]) if self.shard_format == "webdataset" else None
        self.split, self.window, self.mode, self.seed = split, int(window), mode, int(seed)
        self.label_names = names
        self.label_kinds = {n: kinds[n] for n in names}
        self.categories = {n: list(self.manifest.get("label_categories", {}).get(n, []))
                           for n in names if kinds[n] == "categorical"}
        self.n_rois = len(self.manifest["roi_names"])
        self.value_dtype = DTYPES[self.manifest["dtype"]]  # little-endian bytes of the scaled matrices
        self.itemsize = self.value_dtype.itemsize
        self.verify_checksums, self.return_run_id = verify_checksums, return_run_id
        self.shards = self.manifest["splits"][split]
        self.units = [(s, g) for s, entry in enumerate(self.shards) for g in range(int(entry["row_groups"]))]
        self._explicit_ranks = None if rank is None else (int(rank), int(world_size))
        self._ranks = self._explicit_ranks or _distributed()
        self.batch_size = None if batch_size is None else int(batch_size)
        self._epoch = torch.zeros(2, dtype=torch.int64).share_memory_()  # [epoch, first batch]
        self._files: OrderedDict[int, pq.ParquetFile | TarShardReader] = OrderedDict()
        self._verified: set[int] = set()
        self._pid = os.getpid()
        self._windows_per_unit: list[int] | None = None

    # -- epoch and consumers --------------------------------------------------------------------------------
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (seeds the shuffles and windows in train mode). Call before each epoch.

        start_batch: with ``batch_size``, the first batch to make (resuming mid-epoch); 0 otherwise.
        """
        if int(epoch) < 0 or int(start_batch) < 0:
            raise ValueError(f"epoch and start_batch must be non-negative, not {epoch}, {start_batch}")
        if start_batch and self.batch_size is None:
            raise ValueError("start_batch needs a dataset made with batch_size")
        self._epoch[0], self._epoch[1] = int(epoch), int(start_batch)
        self._refresh_ranks()

    def _refresh_ranks(self) -> tuple[int, int]:
        """(rank, world_size): explicit, else torch.distributed's (which may have started since __init__).

        Only the main process asks torch.distributed; workers keep what their dataset copy carries."""
        if self._explicit_ranks is None and torch.utils.data.get_worker_info() is None:
            self._ranks = _distributed()
        return self._ranks

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def _consumer(self) -> tuple[int, int, int, int]:
        info = torch.utils.data.get_worker_info()
        rank, world = self._refresh_ranks()
        return (rank, world, 0, 1) if info is None else (rank, world, info.id, info.num_workers)

    def consumer_units(self, rank: int, world_size: int, worker: int = 0, num_workers: int = 1,
                       epoch: int | None = None) -> list[tuple[int, int]]:
        """(shard index, row group) units one consumer reads in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        picked = assign_units(len(self.units), mode=self.mode, seed=self.seed, epoch=epoch, rank=rank,
                              world_size=world_size, worker=worker, num_workers=num_workers)
        return [self.units[u] for u in picked]

    # -- reading ----------------------------------------------------------------------------------------------
    def _shard_path(self, shard: int) -> Path | str:
        """The shard's file (a local path), or its URL for tar shards given ``shard_url``."""
        if self.shard_url is not None:
            location = self.shard_url.replace("{path}", self.shards[shard]["path"])
            return location if is_url(location) else Path(location)
        return self.root / self.shards[shard]["path"]

    def _open(self, shard: int, verify: bool = True) -> pq.ParquetFile | TarShardReader:
        if self._pid != os.getpid():  # a forked DataLoader worker: its own handles and its own checks
            self._files, self._verified, self._pid = OrderedDict(), set(), os.getpid()
        path = self._shard_path(shard)
        if verify and self.verify_checksums and shard not in self._verified:
            verify_shard(path, self.shards[shard]["sha256"], self.manifest_path)  # once per process and file
            self._verified.add(shard)
        if shard in self._files:
            self._files.move_to_end(shard)
            return self._files[shard]
        try:
            if self.shard_format == "webdataset":
                handle = TarShardReader(path, self.shards[shard]["rows"], self.group_size,
                                        where=f"{path} (listed in {self.manifest_path})")
            else:
                try:
                    handle = pq.ParquetFile(path)
                except (OSError, pa.ArrowException) as exc:
                    raise InputError(f"{path}: cannot read shard ({exc}); listed in {self.manifest_path}") from exc
        except InputError:  # unreadable (also unverified, sizes only): a corrupted shard is named as such
            if self.verify_checksums:
                verify_shard(path, self.shards[shard]["sha256"], self.manifest_path)
            raise
        self._files[shard] = handle
        limit = OPEN_STREAMS if isinstance(path, str) else OPEN_FILES
        while len(self._files) > limit:
            self._files.popitem(last=False)[1].close()
        return handle

    def _label_matrix(self, n_rows: int, columns: dict[str, list | np.ndarray]) -> np.ndarray:
        """[rows, n_labels] float32, NaN for missing; categorical values as indices into their category list.

        columns: each label's values (categorical: text or None; others: numbers, None or NaN)."""
        out = np.full((n_rows, len(self.label_names)), np.nan, dtype=np.float32)
        for j, name in enumerate(self.label_names):
            values = columns[name]
            if self.label_kinds[name] == "categorical":
                index = {value: float(i) for i, value in enumerate(self.categories[name])}
                out[:, j] = [np.nan if v is None else index.get(v, np.nan) for v in values]
            else:
                out[:, j] = np.asarray([np.nan if v is None else v for v in values] if isinstance(values, list)
                                       else values, dtype=np.float32)
        return out

    def _read_unit(self, shard: int, row_group: int):
        """Run ids, per-run [R, T] tensor views (over one decoded buffer) and labels of one unit."""
        if self.shard_format == "webdataset":
            return self._read_tar_unit(shard, row_group)
        return self._read_parquet_unit(shard, row_group)

    def _read_tar_unit(self, shard: int, group: int):
        """:meth:`_read_unit` of a tar shard: the group's samples read in one go, the matrices viewed in place."""
        samples = self._open(shard).read_group(group, self.value_dtype, self.n_rois)
        labels = self._label_matrix(len(samples), {name: [meta.get(name) for meta, _ in samples]
                                                   for name in self.label_names})
        return [meta["run_id"] for meta, _ in samples], [torch.from_numpy(m) for _, m in samples], labels

    def _read_parquet_unit(self, shard: int, row_group: int):
        """:meth:`_read_unit` of a Parquet shard (the views are over one decoded Arrow buffer)."""
        path = self._shard_path(shard)
        handle = self._open(shard)
        columns = ["run_id", "n_rois", "n_timepoints", "data", *self.label_names]
        try:
            table = handle.read_row_group(row_group, columns=columns, use_threads=False)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{path}: cannot read row group {row_group} ({exc})") from exc
        data = table.column("data")
        data = data.chunk(0) if data.num_chunks == 1 else data.combine_chunks()
        n_rois = table.column("n_rois").to_numpy()
        n_time = table.column("n_timepoints").to_numpy()
        _, offsets, payload = data.buffers()
        offsets = np.frombuffer(offsets, np.int32, count=len(data) + 1, offset=4 * data.offset)
        sizes = n_rois.astype(np.int64) * n_time * self.itemsize
        if (n_rois != self.n_rois).any() or (np.diff(offsets) != sizes).any():
            raise InputError(f"{path}: row group {row_group}: data length does not match n_rois x n_timepoints "
                             f"({self.n_rois} ROIs in {self.manifest_path})")
        values = np.frombuffer(payload, self.value_dtype, count=(offsets[-1] - offsets[0]) // self.itemsize,
                               offset=int(offsets[0]))
        with warnings.catch_warnings():  # a read-only view of the Arrow buffer: windows are copied out of it
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            flat = torch.from_numpy(values)
        starts = (offsets - offsets[0]) // self.itemsize
        mats = [flat[starts[i]:starts[i + 1]].view(int(n_rois[i]), int(n_time[i])) for i in range(table.num_rows)]
        labels = {name: (table.column(name).to_pylist() if self.label_kinds[name] == "categorical"
                         else table.column(name).to_numpy(zero_copy_only=False)) for name in self.label_names}
        return table.column("run_id").to_pylist(), mats, self._label_matrix(table.num_rows, labels)

    def _row_order(self, epoch: int, shard: int, row_group: int, n_rows: int) -> list[int]:
        """Train mode: the shuffled order of a unit's rows, from (seed, epoch, shard name, row group)."""
        unit_seed = [self.seed, epoch, _ROWS, stable_hash(_row_seed_name(self.shards[shard]["path"])), row_group]
        return np.random.default_rng(unit_seed).permutation(n_rows).tolist()

    def _samples(self, rank: int, world_size: int, worker: int, num_workers: int
                 ) -> Iterator[tuple[str, int, torch.Tensor, torch.Tensor]]:
        """(run_id, window start, x [1, R, window], y [n_labels]) of one consumer in the current epoch."""
        epoch = self.epoch
        for shard, row_group in self.consumer_units(rank, world_size, worker, num_workers, epoch):
            run_ids, mats, labels = self._read_unit(shard, row_group)
            order = range(len(run_ids))
            if self.mode == "train":
                order = self._row_order(epoch, shard, row_group, len(run_ids))
            for i in order:
                mat = mats[i]
                for start in window_starts(mat.shape[1], self.window, mode=self.mode, seed=self.seed,
                                           epoch=epoch, run_id=run_ids[i]):
                    x = torch.empty((1, mat.shape[0], self.window), dtype=torch.float32)
                    x[0].copy_(mat[:, start:start + self.window])  # copy out of Arrow, float16 -> float32
                    yield run_ids[i], start, x, torch.from_numpy(labels[i].copy())
            del mats, labels

    def _batched_samples(self, rank: int, world_size: int, worker: int, num_workers: int
                         ) -> Iterator[tuple[str, int, torch.Tensor, torch.Tensor]]:
        """Like :meth:`_samples`, for the batches of one worker (module docstring: whole batches)."""
        epoch, first, size = self.epoch, int(self._epoch[1]), self.batch_size
        picked = assign_units(len(self.units), mode=self.mode, seed=self.seed, epoch=epoch, rank=0,
                              world_size=1, worker=0, num_workers=1)  # the global stream
        units, counts = [self.units[u] for u in picked], self._unit_windows()
        rows = [counts[u] for u in picked]
        ends = np.cumsum(rows)  # one window per row in train mode: samples = rows
        cached: tuple[int, list, list, np.ndarray, list[int]] | None = None
        step = size * world_size  # a global batch
        for batch in range(first + worker, int(ends[-1]) // step if len(ends) else 0, num_workers):
            for position in range(batch * step + rank * size, batch * step + (rank + 1) * size):
                j = int(np.searchsorted(ends, position, side="right"))
                if cached is None or cached[0] != j:
                    shard, row_group = units[j]
                    run_ids, mats, labels = self._read_unit(shard, row_group)
                    order = self._row_order(epoch, shard, row_group, len(run_ids))
                    cached = (j, run_ids, mats, labels, order)
                _, run_ids, mats, labels, order = cached
                i = order[position - (int(ends[j - 1]) if j else 0)]
                (start,) = window_starts(mats[i].shape[1], self.window, mode="train", seed=self.seed, epoch=epoch,
                                         run_id=run_ids[i])
                x = torch.empty((1, mats[i].shape[0], self.window), dtype=torch.float32)
                x[0].copy_(mats[i][:, start:start + self.window])
                yield run_ids[i], start, x, torch.from_numpy(labels[i].copy())

    def __iter__(self):
        samples = self._batched_samples if self.batch_size is not None else self._samples
        for run_id, _start, x, y in samples(*self._consumer()):
            yield (x, y, run_id) if self.return_run_id else (x, y)

    # -- sizes ---------------------------------------------------------------------------------------------------
    def _unit_windows(self) -> list[int]:
        """Windows per unit (train: rows; eval: sum of floor(T / window)), read from the shards' small columns."""
        if self._windows_per_unit is None and self.shard_format == "webdataset":
            self._windows_per_unit = self._tar_unit_windows()
        if self._windows_per_unit is None:
            counts = []
            for shard, row_group in self.units:
                handle = self._open(shard, verify=False)
                if self.mode == "train":
                    counts.append(handle.metadata.row_group(row_group).num_rows)
                else:
                    n_time = handle.read_row_group(row_group, columns=["n_timepoints"]).column(0).to_numpy()
                    counts.append(int((n_time // self.window).sum()))
            self._windows_per_unit = counts
        return self._windows_per_unit

    def _tar_unit_windows(self) -> list[int]:
        """:meth:`_unit_windows` of tar shards: train mode from the manifest's row counts; eval mode from every
        sample's metadata (a stream reads the whole shard once, skipping nothing but the decoding)."""
        counts, lengths = [], {}
        for shard, group in self.units:
            rows = min(self.group_size, int(self.shards[shard]["rows"]) - group * self.group_size)
            if self.mode == "train":
                counts.append(rows)
                continue
            if shard not in lengths:
                meta = self._open(shard, verify=False).read_all(self.value_dtype, matrices=False)
                lengths[shard] = [int(m["n_timepoints"]) for m, _ in meta]
            first = group * self.group_size
            counts.append(sum(t // self.window for t in lengths[shard][first:first + rows]))
        return counts

    def __len__(self) -> int:
        """Samples this rank yields in the current epoch, over all its DataLoader workers (with ``batch_size``:
        in whole batches, from batch 0)."""
        rank, world = self._refresh_ranks()
        counts = self._unit_windows()
        if self.batch_size is not None:  # this rank's slices of the whole global batches
            return sum(counts) // (self.batch_size * world) * self.batch_size
        order = assign_units(len(self.units), mode=self.mode, seed=self.seed, epoch=self.epoch, rank=rank,
                             world_size=world, worker=0, num_workers=1)
        return sum(counts[u] for u in order)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"] = OrderedDict()  # open files are per process
        state["_verified"] = set()  # every consumer checks the shards it opens
        state["_pid"] = None
        return state
