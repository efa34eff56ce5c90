"""Training data as Parquet shards: scaled runs, one row per run, plus a manifest with checksums.

Layout of ``out_dir``::

    manifest.json                 format, shard_format, dtype, window, ROI names, scaling-statistics id, shard
                                  list, and ``tr``: {cohort: {effective TR (s): runs}} of the runs written
    excluded.tsv                  runs not written (shorter than the window): run_id, split, n_timepoints, reason
    <split>/shard-00000.parquet   one set per split, rows ordered by run_id

``shard_format="webdataset"`` writes the same runs into the same shards as WebDataset tar files instead
(``<split>/shard-00000.tar``, one sample per run: :mod:`brainjepa.data.tar_shards`), with the same manifest.
The manifest's format (its constants and :func:`load_manifest`, :func:`shard_file_problems`) is
:mod:`brainjepa.data.manifest`'s, which both formats share; its names are importable from here too.

Shard columns: ``run_id, cohort, subject, session, run, split`` (string), ``tr`` (float64), ``n_rois``,
``n_timepoints`` (int32), ``data`` (binary: the scaled R x T matrix, row-major, little-endian float16 or
float32 as the manifest's ``dtype`` says; runs may differ in T), then the label columns (float64 for continuous
and binary, string for categorical; null when missing). Any Parquet reader gets the matrix back with
``np.frombuffer(data, "<f2").reshape(n_rois, n_timepoints)`` (or :func:`read_shard`).

Why bytes and not a Parquet list of floats: decoding a list's repetition levels costs about 1 ms per 450 x 490
run, a binary value about 0.04 ms (measured with ``bench/loader.py``'s data); the loader must deliver more than
1,000 windows/s per worker. For the same reason the data column is stored uncompressed (zstd would save 8% of
float16 noise at 9x the decoding time).

Writer settings: zstd for every other column; dictionary encoding for the string identifier columns only; no
statistics for the data column; small row groups for random access.
Nothing that varies between runs (no timestamps) is written, so the same inputs give byte-identical files.
The whole set is written into a temporary folder beside ``out_dir`` and renamed onto it at the end, so a
failed build leaves nothing that looks done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from brainjepa import __version__, sheets
from brainjepa.data.manifest import (  # noqa: F401 (re-exported)
    DTYPES,
    FORMAT,
    ID_COLUMNS,
    LABEL_KINDS,
    MONITOR_SPLIT,
    PRETRAIN_SPLIT,
    SHARD_FORMATS,
    load_manifest,
    shard_file_problems,
)
from brainjepa.data.tar_shards import TarShardWriter, is_url, read_tar_shard, sha256_location
from brainjepa.errors import InputError
from brainjepa.group.scaling import ScalingStats
from brainjepa.group.splits import read_splits, run_file, unit_uniform
from brainjepa.io import (
    METADATA_KEY,
    atomic_path,
    honour_umask,
    read_timeseries,
    replace_dir,
    sha256_file,
    write_text_atomic,
    write_tsv_atomic,
)

REQUIRED_COLUMNS = ID_COLUMNS + ("path",)
SHORT_POLICIES = ("exclude", "error")
MISSING_TEXT = ("", "n/a", "NA")
SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MONITOR_MAX_SHARE = 5       # at most 1 in 5 pretraining subjects is held out for the monitors


@dataclass(frozen=True)
class _Run:
    """One run to write: its identifiers and labels (already typed), file and shape."""

    ids: dict
    labels: dict
    path: Path
    n_timepoints: int
    n_rois: int


def shard_schema(n_rois: int, dtype: str, label_columns: dict[str, str]) -> pa.Schema:
    """The Arrow schema of every shard of a set (label columns in the order given)."""
    fields = [pa.field(name, pa.string()) for name in ID_COLUMNS]
    fields += [pa.field("tr", pa.float64(), nullable=False), pa.field("n_rois", pa.int32(), nullable=False),
               pa.field("n_timepoints", pa.int32(), nullable=False),
               pa.field("data", pa.binary(), nullable=False)]
    fields += [pa.field(name, pa.string() if kind == "categorical" else pa.float64())
               for name, kind in label_columns.items()]
    return pa.schema(fields)


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() in MISSING_TEXT
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_id(value) -> str | None:
    """An identifier as text: None when missing; integral numbers without a trailing '.0'."""
    if value is None or (not isinstance(value, str) and _is_missing(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def _typed_label(value, kind: str, column: str, run_id: str):
    if _is_missing(value):
        return None
    if kind == "categorical":
        return _as_id(value).strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"run {run_id}: label '{column}': {value!r} is not a number (declared {kind})") from None
    if not np.isfinite(number):
        raise InputError(f"run {run_id}: label '{column}': {value!r} is not a finite number")
    if kind == "binary" and number not in (0.0, 1.0):
        raise InputError(f"run {run_id}: label '{column}': {value!r} is not 0 or 1 (declared binary)")
    return number


def _check_arguments(stats: ScalingStats, max_shard_bytes: int, dtype: str, window: int, short_policy: str,
                     rows_per_row_group: int, label_columns: dict[str, str], shard_format: str) -> None:
    if shard_format not in SHARD_FORMATS:
        raise InputError(f"shard format must be one of {sorted(SHARD_FORMATS)}, not {shard_format!r}")
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    if short_policy not in SHORT_POLICIES:
        raise InputError(f"short_policy must be one of {SHORT_POLICIES}, not {short_policy!r}")
    for name, value in (("max_shard_bytes", max_shard_bytes), ("window", window),
                        ("rows_per_row_group", rows_per_row_group)):
        if int(value) < 1:
            raise InputError(f"{name} must be a positive integer, not {value!r}")
    for name, kind in label_columns.items():
        if kind not in LABEL_KINDS:
            raise InputError(f"label '{name}': type must be one of {LABEL_KINDS}, not '{kind}'")
        if name in REQUIRED_COLUMNS or name in ("tr", "n_rois", "n_timepoints", "data"):
            raise InputError(f"label '{name}': the name is taken by a shard column")
    if not stats.rois:
        raise InputError("the scaling statistics list no ROIs")


def _check_rois(names: list[str], stats: ScalingStats, path: Path) -> None:
    expected = list(stats.rois)
    if names == expected:
        return
    if len(names) != len(expected):
        raise InputError(f"{path}: {len(names)} ROI columns, but the scaling statistics have {len(expected)} ROIs "
                         "(the time series and the statistics must come from the same atlas)")
    i = next(i for i, (a, b) in enumerate(zip(names, expected)) if a != b)
    raise InputError(f"{path}: ROI column {i} is '{names[i]}', but the scaling statistics have '{expected[i]}' "
                     "there (column names must equal the statistics' ROIs, in order)")


def _roi_columns(schema: pa.Schema) -> list[str]:
    """Column names of a time-series file, less a stored pandas index (which ``read_timeseries`` drops)."""
    index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    return [name for name in schema.names if name not in index]


def _plan_runs(runs: pd.DataFrame, stats: ScalingStats, label_columns: dict[str, str]) -> list[_Run]:
    """Validate the runs table and read each file's shape from its Parquet footer (no data is read)."""
    missing = [c for c in REQUIRED_COLUMNS + tuple(label_columns) if c not in runs.columns]
    if missing:
        raise InputError(f"runs table lacks column(s) {missing}")
    if runs.empty:
        raise InputError("runs table is empty: no runs to write")
    planned, seen = [], set()
    for rec in runs[list(REQUIRED_COLUMNS + tuple(label_columns))].to_dict("records"):
        ids = {name: _as_id(rec[name]) for name in ID_COLUMNS}
        run_id, split = ids["run_id"], ids["split"]
        if not run_id:
            raise InputError(f"runs table: a row has no run_id ({rec})")
        if run_id in seen:
            raise InputError(f"runs table: run_id '{run_id}' appears more than once")
        seen.add(run_id)
        if not split or not SPLIT_NAME.fullmatch(split):
            raise InputError(f"run {run_id}: split {rec['split']!r} is not a valid name (letters, digits, '_', "
                             "'-', '.'; it names a folder)")
        if _is_missing(rec["path"]):
            raise InputError(f"run {run_id}: no time-series path")
        path = Path(str(rec["path"]))
        try:
            meta = pq.read_metadata(path)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{path}: cannot read as Parquet time series (run {run_id}: {exc})") from exc
        names = _roi_columns(meta.schema.to_arrow_schema())
        _check_rois(names, stats, path)
        labels = {name: _typed_label(rec[name], kind, name, run_id) for name, kind in label_columns.items()}
        planned.append(_Run(ids, labels, path, int(meta.num_rows), len(names)))
    return planned


def _read_scaled(run: _Run, stats: ScalingStats, dtype: str) -> tuple[np.ndarray, float]:
    """The run's scaled [R, T] matrix in ``dtype`` and its TR."""
    frame, meta = read_timeseries(run.path)
    _check_rois([str(c) for c in frame.columns], stats, run.path)
    if len(frame) != run.n_timepoints:
        raise InputError(f"{run.path}: changed while the shards were built ({len(frame)} time points, "
                         f"{run.n_timepoints} before)")
    try:
        tr = float(meta["tr"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{run.path}: metadata has no numeric 'tr'") from None
    scaled = stats.apply(frame.to_numpy(dtype=np.float64).T).astype(DTYPES[dtype])
    if not np.isfinite(scaled).all():
        r, t = np.argwhere(~np.isfinite(scaled))[0]
        raise InputError(f"{run.path}: run {run.ids['run_id']}: scaled value at ROI '{stats.rois[r]}', time point "
                         f"{int(t) + 1} (counted from 1) is not finite in {dtype} (missing data in the input, or "
                         "|value| too large)")
    return np.ascontiguousarray(scaled), tr


class _ShardWriter:
    """Writes one shard: rows are buffered one row group at a time."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_row_group: int, label_columns: dict[str, str]):
        self.path, self.schema, self.rows_per_row_group = path, schema, rows_per_row_group
        self.label_columns = label_columns
        self.rows, self.row_groups, self.payload = 0, 0, 0
        self._buffer: list[tuple[dict, dict, float, np.ndarray]] = []
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(path))
        string_columns = list(ID_COLUMNS)
        self._writer = self._stack.enter_context(pq.ParquetWriter(
            tmp, schema, compression={f.name: "none" if f.name == "data" else "zstd" for f in schema},
            use_dictionary=string_columns, write_statistics=[f.name for f in schema if f.name != "data"],
            store_schema=True))

    def add(self, run: _Run, data: np.ndarray, tr: float) -> None:
        self._buffer.append((run.ids, run.labels, tr, data))
        self.rows += 1
        self.payload += data.nbytes
        if len(self._buffer) == self.rows_per_row_group:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        ids, labels, trs, arrays = zip(*self._buffer)
        if sum(a.nbytes for a in arrays) >= 2**31:
            raise InputError(f"{self.path}: a row group of {len(arrays)} runs holds more than 2 GiB; "
                             "lower rows_per_row_group")
        columns = {name: pa.array([i[name] for i in ids], pa.string()) for name in ID_COLUMNS}
        columns["tr"] = pa.array(trs, pa.float64())
        columns["n_rois"] = pa.array([a.shape[0] for a in arrays], pa.int32())
        columns["n_timepoints"] = pa.array([a.shape[1] for a in arrays], pa.int32())
        little_endian = [np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes() for a in arrays]
        columns["data"] = pa.array(little_endian, pa.binary())
        for name, kind in self.label_columns.items():
            columns[name] = pa.array([lab[name] for lab in labels],
                                     pa.string() if kind == "categorical" else pa.float64())
        table = pa.Table.from_pydict(columns, schema=self.schema)
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self.row_groups += 1
        self._buffer.clear()

    def close(self) -> None:
        """Flush, close and rename the file into place."""
        self._flush()
        self._stack.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("shard build aborted"), None)


def _write_split(split: str, runs: list[_Run], stats: ScalingStats, root: Path, schema: pa.Schema, *,
                 max_shard_bytes: int, dtype: str, rows_per_row_group: int,
                 label_columns: dict[str, str], flat: bool = False,
                 trs: dict[str, dict[str, int]] | None = None, shard_format: str = "parquet") -> list[dict]:
    """Write one split's shards under ``root/split`` (``root`` when flat, but the monitor split's under
    ``root/monitor`` always); return their manifest entries.
    ``trs`` gathers {cohort: {effective TR (s, as text): runs}}."""
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    entries: list[dict] = []
    writer: _ShardWriter | TarShardWriter | None = None

    def start(path: Path) -> _ShardWriter | TarShardWriter:
        if shard_format == "webdataset":  # the Parquet schema's metadata, and the label kinds its types give
            header = {**json.loads(schema.metadata[METADATA_KEY]), "label_columns": label_columns}
            return TarShardWriter(path, rows_per_row_group, label_columns, header)
        return _ShardWriter(path, schema, rows_per_row_group, label_columns)

    def finish(w: _ShardWriter | TarShardWriter) -> None:
        w.close()
        entries.append({"path": w.path.relative_to(root).as_posix(), "rows": w.rows, "row_groups": w.row_groups,
                        "sha256": sha256_file(w.path), "bytes": w.path.stat().st_size})

    try:
        for run in runs:
            nbytes = run.n_rois * run.n_timepoints * itemsize
            if writer is not None and writer.payload + nbytes > max_shard_bytes:
                finish(writer)
                writer = None
            if writer is None:
                folder = root if flat and split != MONITOR_SPLIT else root / split
                path = folder / f"shard-{len(entries):05d}{SHARD_FORMATS[shard_format]}"
                writer = start(path)
            data, tr = _read_scaled(run, stats, dtype)
            writer.add(run, data, tr)
            if trs is not None:
                counts = trs.setdefault(run.ids["cohort"], {})
                counts[f"{tr:.4g}"] = counts.get(f"{tr:.4g}", 0) + 1
        if writer is not None:
            finish(writer)
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    return entries


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Remove what killed attempts of this shard set left beside it (``.<name>.*.tmp`` build folders and
    ``.<name>.old.*`` replaced folders; at UK Biobank scale gigabytes each). One job writes a shard set at a time,
    so whatever matches is stale. Returns the removed paths."""
    parent, name = out_dir.parent, out_dir.name
    stale = [*sorted(parent.glob(f".{name}.*.tmp")), *sorted(parent.glob(f".{name}.old.*"))]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def build_shards(runs: pd.DataFrame, stats: ScalingStats, out_dir: str | os.PathLike, *,
                 max_shard_bytes: int = 256 * 2**20, dtype: str = "float16", window: int = 160,
                 short_policy: str = "exclude", rows_per_row_group: int = 16,
                 label_columns: dict[str, str] | None = None, categories: dict[str, list] | None = None,
                 flat: bool = False, shard_format: str = "parquet") -> dict:
    """Scale every run with ``stats`` and write Parquet shards plus ``manifest.json`` into ``out_dir``.

    runs: one row per run with ``run_id, cohort, subject, session, run, split, path`` (a per-run ROI time
    series, :func:`brainjepa.io.read_timeseries`, whose columns must equal ``stats.rois``) and the label
    columns named in ``label_columns`` (name -> ``continuous`` | ``categorical`` | ``binary``; empty -> null).
    Runs with fewer than ``window`` time points are left out and listed in ``excluded.tsv``
    (``short_policy="exclude"``) or are an error (``"error"``). Each shard holds at most ``max_shard_bytes``
    of tensor payload (R * T * itemsize; a single larger run gets a shard of its own). One run is read at a
    time and at most one row group is buffered. Returns the manifest.

    categories: the values of each categorical label (default: those of the kept runs), so that codes agree
    between shard sets built apart (one per split). flat: the shards of a single split directly in ``out_dir``
    (runs of split ``monitor``, :func:`monitor_subjects`, beside them in ``out_dir/monitor``).
    shard_format: ``parquet``, or ``webdataset`` for the same runs in the same shards as tar files (one sample
    per run; a "row group" is then a group of ``rows_per_row_group`` consecutive samples).
    """
    label_columns = dict(label_columns or {})
    _check_arguments(stats, max_shard_bytes, dtype, window, short_policy, rows_per_row_group, label_columns,
                     shard_format)
    planned = _plan_runs(runs, stats, label_columns)
    excluded, by_split = _split_runs(planned, window, short_policy)
    if categories is None:
        kept = [r for runs_ in by_split.values() for r in runs_]
        categories = {name: sorted({r.labels[name] for r in kept if r.labels[name] is not None})
                      for name, kind in label_columns.items() if kind == "categorical"}
    if flat and len(set(by_split) - {MONITOR_SPLIT}) > 1:
        raise ValueError(f"flat shards hold one split (and its monitor windows), not {sorted(by_split)}")
    settings = {"dtype": dtype, "window": int(window), "rows_per_row_group": int(rows_per_row_group),
                "max_shard_bytes": int(max_shard_bytes)}
    return _write_shard_set(out_dir, by_split, excluded, stats, settings, label_columns, categories, flat,
                            shard_format)


def _split_runs(planned: list[_Run], window: int, short_policy: str) -> tuple[list[_Run], dict[str, list[_Run]]]:
    """(the runs shorter than ``window``, {split: its kept runs by run_id}). A short run is an error under
    ``short_policy="error"``; a split, or a cohort within it, with runs but none long enough always is."""
    excluded = [r for r in planned if r.n_timepoints < window]
    if excluded and short_policy == "error":
        r = excluded[0]
        raise InputError(f"run {r.ids['run_id']} ({r.path}): {r.n_timepoints} time points, shorter than the "
                         f"window of {window} (set short_policy 'exclude' to leave such runs out)")
    groups: dict[tuple, list[_Run]] = {}
    for r in planned:
        groups.setdefault((r.ids["split"], None), []).append(r)
        groups.setdefault((r.ids["split"], r.ids.get("cohort")), []).append(r)
    for (split, cohort), mine in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] is not None, str(kv[0][1]))):
        if all(r.n_timepoints < window for r in mine):
            longest = max(mine, key=lambda r: r.n_timepoints)
            where = f"split {split}" + (f", cohort {cohort}" if cohort is not None else "")
            raise InputError(f"{where}: all {len(mine)} runs are shorter than the window of {window} time steps "
                             f"(the longest, {longest.ids['run_id']}, has {longest.n_timepoints} at the target TR); "
                             "lower shards.window or check align_tr.target_tr")
    by_split: dict[str, list[_Run]] = {}
    for run in sorted(planned, key=lambda r: r.ids["run_id"]):
        by_split.setdefault(run.ids["split"], [])
        if run.n_timepoints >= window:
            by_split[run.ids["split"]].append(run)
    return excluded, by_split


def _write_shard_set(out_dir: str | os.PathLike, by_split: dict[str, list[_Run]], excluded: list[_Run],
                     stats: ScalingStats, settings: dict, label_columns: dict[str, str], categories: dict,
                     flat: bool, shard_format: str) -> dict:
    """Write the shards of every split, ``excluded.tsv`` and ``manifest.json`` into a temporary folder beside
    ``out_dir`` and swap it into place (nothing partial is left on failure). ``settings``: dtype, window,
    rows_per_row_group, max_shard_bytes. Returns the manifest."""
    dtype, window = settings["dtype"], settings["window"]
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    honour_umask(tmp, directory=True)  # mkdtemp makes 0700; the shard folder is renamed from it
    try:
        schema = shard_schema(len(stats.rois), dtype, label_columns).with_metadata({METADATA_KEY: json.dumps(
            {"format": FORMAT, "scaling_stats_id": stats.id, "dtype": dtype}, sort_keys=True).encode()})
        splits, trs = {}, {}
        for split in sorted(by_split):
            splits[split] = _write_split(split, by_split[split], stats, tmp, schema,
                                         max_shard_bytes=settings["max_shard_bytes"], dtype=dtype,
                                         rows_per_row_group=settings["rows_per_row_group"],
                                         label_columns=label_columns, flat=flat, trs=trs, shard_format=shard_format)
        table = pd.DataFrame({"run_id": [r.ids["run_id"] for r in excluded],
                              "split": [r.ids["split"] for r in excluded],
                              "n_timepoints": [r.n_timepoints for r in excluded],
                              "reason": [f"shorter than the window ({window})"] * len(excluded)})
        write_tsv_atomic(table.sort_values("run_id", kind="stable"), tmp / "excluded.tsv")
        manifest = {"format": FORMAT, "shard_format": shard_format, "brainjepa_version": __version__,
                    "dtype": dtype, "window": window, "rows_per_row_group": settings["rows_per_row_group"],
                    "max_shard_bytes": settings["max_shard_bytes"], "roi_names": list(stats.rois),
                    "scaling_stats_id": stats.id, "scaling_method": stats.method, "splits": splits,
                    "label_columns": label_columns, "label_categories": categories, "excluded": len(excluded),
                    "tr": {c: dict(sorted(counts.items())) for c, counts in sorted(trs.items())}}
        write_text_atomic(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def run_shards(splits_path: str | os.PathLike, runs_root: str | os.PathLike, phenotypes_path: str | os.PathLike,
               label_types: dict[str, str], stats_path: str | os.PathLike, out_dir: str | os.PathLike, *,
               max_shard_mb: float = 256, dtype: str = "float16", window: int = 160,
               short_policy: str = "exclude", split: str | None = None, shard_format: str = "parquet",
               monitor_subjects: int = 0) -> dict:
    """The ``shards`` stage: every run of the split table, with its subject's labels, scaled -> shards + manifest.

    Run files are ``<runs_root>/<run_id>.parquet`` (the align_tr stage's outputs); labels come from the
    phenotypes sheet (declared kinds in ``label_types``). With ``split``, only that split's runs, its shards
    directly in ``out_dir`` (the workflow builds one shard set per split, so a new downstream cohort leaves the
    pretraining shards alone); categorical codes then come from every subject of the sheet.

    ``monitor_subjects`` (split ``pretrain`` only): that many pretraining subjects (:func:`monitor_subjects`) go to
    the split ``monitor`` of the same manifest instead, windows never trained on that a pretraining run watches
    its representations on (:mod:`brainjepa.train.monitors`).
    """
    table = read_splits(splits_path)
    phenotypes = sheets.load_phenotypes(phenotypes_path, label_types)
    categories = None
    if split is not None:
        if split not in set(table["split"]):
            raise InputError(f"{splits_path}: no run is in split '{split}'")
        table = table[table["split"] == split].copy()
        categories = sheet_categories(phenotypes, label_types)
        if split == PRETRAIN_SPLIT and monitor_subjects:
            held = monitor_subjects_of(table, monitor_subjects)
            table.loc[[(c, s) in held for c, s in zip(table["cohort"], table["subject"])], "split"] = MONITOR_SPLIT
    runs = table.merge(phenotypes, on=["cohort", "subject"], how="left")
    runs["path"] = [str(run_file(runs_root, r)) for r in runs["run_id"]]
    return build_shards(runs, ScalingStats.load(stats_path), out_dir, max_shard_bytes=int(max_shard_mb * 2**20),
                        dtype=dtype, window=window, short_policy=short_policy, label_columns=label_types,
                        categories=categories, flat=split is not None, shard_format=shard_format)


def monitor_subjects_of(table: pd.DataFrame, n: int) -> set[tuple[str, str]]:
    """The (cohort, subject) pairs of the pretraining set held out of training for the representation monitors: the
    ``n`` subjects with the smallest stable hash (:func:`brainjepa.group.splits.unit_uniform` of "monitor",
    cohort, subject), at most a fifth of the set, and none unless that is 2 or more (10 subjects). A pure function
    of the subjects: the same set on every rebuild, and a new subject takes a place only if its hash is among the
    ``n`` smallest."""
    subjects = sorted(set(zip(table["cohort"], table["subject"])))
    n = min(n, len(subjects) // MONITOR_MAX_SHARE)
    if n < 2:  # the monitors compare windows: one subject's are no set
        return set()
    return set(sorted(subjects, key=lambda cs: unit_uniform(0, "monitor", *cs))[:n])


def sheet_categories(phenotypes: pd.DataFrame, label_types: dict[str, str]) -> dict[str, list[str]]:
    """The values of each categorical label over every subject of the phenotypes sheet, sorted."""
    return {name: sorted({_typed_label(v, kind, name, "") for v in phenotypes[name] if not _is_missing(v)})
            for name, kind in label_types.items() if kind == "categorical" and name in phenotypes}


def check_scaling_stats(manifest: dict | str | os.PathLike, stats_path: str | os.PathLike) -> None:
    """InputError if the statistics file at ``stats_path`` is not the one the shards were scaled with.

    ``manifest``: the manifest dict or its path (a path is named in the message).
    """
    where = "the shard manifest"
    if not isinstance(manifest, dict):
        where = str(manifest)
        manifest = load_manifest(manifest)
    stats = ScalingStats.load(stats_path)
    if stats.id != manifest["scaling_stats_id"]:
        raise InputError(f"{stats_path}: scaling statistics {stats.id} differ from those the shards were built "
                         f"with ({where}: scaling_stats_id {manifest['scaling_stats_id']}); rebuild the shards or "
                         "use the matching statistics file")


def _is_tar(path: str | os.PathLike) -> bool:
    return str(path).endswith(SHARD_FORMATS["webdataset"])


def read_shard(path: str | os.PathLike, dtype: str = "float16") -> pd.DataFrame:
    """A shard as a frame with ``data`` decoded to [n_rois, n_timepoints] arrays (``dtype``: the manifest's).

    Parquet or tar (by the name's suffix), the same frame. Its sha256 is not checked: readers of a manifest's
    shards use :func:`read_listed_shard`."""
    if _is_tar(path):
        return read_tar_shard(path, dtype)
    return _parquet_frame(path, dtype)


def read_shard_columns(path: str | os.PathLike, columns: list[str]) -> pd.DataFrame:
    """The named columns a shard has (Parquet or tar, by the name's suffix), without the matrices (sha256 not
    checked, as :func:`read_shard`)."""
    columns = [c for c in columns if c != "data"]
    if _is_tar(path):
        return read_tar_shard(path, columns=columns)
    return _parquet_columns(path, columns)


def _arrow_source(source: str | os.PathLike | pa.Buffer) -> str | os.PathLike | pa.BufferReader:
    """What pyarrow reads: the path, or a reader over the buffer (a new one per call: readers keep a position)."""
    return pa.BufferReader(source) if isinstance(source, pa.Buffer) else source


def _parquet_frame(source: str | os.PathLike | pa.Buffer, dtype: str) -> pd.DataFrame:
    """:func:`read_shard` of a Parquet shard, from a path or an Arrow buffer holding the file."""
    frame = pq.read_table(_arrow_source(source)).to_pandas()
    frame["data"] = [np.frombuffer(b, DTYPES[dtype]).reshape(r, t)
                     for b, r, t in zip(frame["data"], frame["n_rois"], frame["n_timepoints"])]
    return frame


def _parquet_columns(source: str | os.PathLike | pa.Buffer, columns: list[str]) -> pd.DataFrame:
    """:func:`read_shard_columns` of a Parquet shard, from a path or an Arrow buffer holding the file (``data``
    left out)."""
    present = set(pq.read_schema(_arrow_source(source)).names)
    return pq.read_table(_arrow_source(source), columns=[c for c in columns if c in present and c != "data"]
                         ).to_pandas()


# ------------------------------------------------------------------------------------------------- checksums
_VERIFIED_SHARDS: set[tuple] = set()
"""The shards whose sha256 matched their manifest in this process, by :func:`_shard_identity`."""


def _shard_identity(location: str | os.PathLike, expected: str) -> tuple:
    """What the once-per-process check keys a shard by: a local file's resolved path, device, inode, size,
    mtime_ns and ctime_ns (rewriting or replacing the file changes them, so it is checked again) with the digest
    its manifest expects; a URL's text with that digest. OSError when a local file cannot be stat'ed."""
    if is_url(str(location)):
        return (str(location), expected)
    path = Path(location)
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, expected)


def check_shard_sha256(location: str | os.PathLike, digest: str, expected: str,
                       manifest_path: str | os.PathLike) -> None:
    """InputError unless ``digest`` (hex SHA-256 of the shard's bytes) is ``expected`` (its manifest entry's).

    The one message of every shard reader: the shard, both digests, the manifest and what to do."""
    if digest != expected:
        raise InputError(f"{location}: sha256 {digest} does not match {expected} in {manifest_path}; "
                         "the shard is corrupted or was replaced (rebuild the shards)")


def verify_shard(location: str | os.PathLike, expected: str, manifest_path: str | os.PathLike) -> None:
    """Check a shard's sha256 against ``expected`` (its manifest entry's) once per process: one full read of a
    local file or of what a URL (``pipe:``, ``https://``, ...) streams, skipped when this process already
    verified the same file (:func:`_shard_identity`). For readers that read the shard lazily (the pretraining
    loader); :func:`read_listed_shard` hashes the bytes it reads anyway."""
    try:
        identity = _shard_identity(location, expected)
        if identity in _VERIFIED_SHARDS:
            return
        digest = sha256_location(location)
    except (OSError, InputError) as exc:
        raise InputError(f"{location}: cannot read shard ({exc}); listed in {manifest_path}") from exc
    check_shard_sha256(location, digest, expected, manifest_path)
    _VERIFIED_SHARDS.add(identity)


def read_listed_shard(manifest_path: str | os.PathLike, entry: dict, dtype: str = "float16",
                      columns: list[str] | None = None) -> pd.DataFrame:
    """One shard a manifest lists (``entry``: its manifest entry, path relative to the manifest's folder), its
    sha256 checked against the entry's the first time this process reads it (:func:`verify_shard`'s record).

    columns None: every column, ``data`` decoded to [n_rois, n_timepoints] arrays of ``dtype`` (:func:`read_shard`);
    else the named columns present, without the matrices (:func:`read_shard_columns`): the whole file is
    verified all the same. The check costs no second read: a Parquet shard is read into memory once, hashed, and
    its table parsed from that buffer; a tar shard is hashed as it streams. A corrupted shard gets the checksum
    message also when it no longer parses."""
    path = Path(manifest_path).parent / entry["path"]
    expected = entry["sha256"]
    try:
        identity = _shard_identity(path, expected)
    except OSError as exc:
        raise InputError(f"{path}: cannot read shard ({exc}); listed in {manifest_path}") from exc
    if identity in _VERIFIED_SHARDS:
        return read_shard(path, dtype) if columns is None else read_shard_columns(path, columns)
    if _is_tar(path):
        digest = hashlib.sha256()
        try:
            frame = read_tar_shard(path, dtype, columns if columns is None else [c for c in columns if c != "data"],
                                   digest=digest)
        except InputError:  # unreadable: a corrupted shard is named as such (a second pass, on this path only)
            check_shard_sha256(path, sha256_location(path), expected, manifest_path)
            raise
        check_shard_sha256(path, digest.hexdigest(), expected, manifest_path)
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read shard ({exc}); listed in {manifest_path}") from exc
        check_shard_sha256(path, hashlib.sha256(data).hexdigest(), expected, manifest_path)
        buffer = pa.py_buffer(data)
        frame = _parquet_frame(buffer, dtype) if columns is None else _parquet_columns(buffer, columns)
    _VERIFIED_SHARDS.add(identity)
    return frame
