"""Atomic file output, the ROI time-series Parquet format and ROI-order checks (docs/formats.md)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from brainjepa import __version__
from brainjepa.errors import InputError

METADATA_KEY = b"brainjepa"


def sha256_file(path: str | os.PathLike, chunk: int = 4 * 2**20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process's umask (read by setting and restoring it; Python has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by ``tempfile`` (always 0600, or 0700 for a folder) the mode any tool would have made
    under the user's umask (0666 or 0777 minus it), so that a lab group can read shared results."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failure (any exception) removes the temporary file, so nothing that looks finished is left.
    The temporary name keeps the final suffixes so that writers that dispatch on them still work. The file
    gets the mode the user's umask gives new files (not ``mkstemp``'s 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            honour_umask(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Rename the folder ``tmp`` onto ``out_dir``, replacing an existing folder (or the empty one Snakemake makes
    for a rule's outputs): moved aside first, put back if the rename fails, removed after."""
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
        os.replace(out_dir, old / "previous")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old / "previous", out_dir)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``text`` written to ``path`` through :func:`atomic_path`: the file appears complete or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tsv_atomic(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """``df`` written to ``path`` as TSV through :func:`atomic_path`: no index, missing values as ``n/a``, floats with 6
    significant digits."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")


def write_timeseries(
    data: np.ndarray, columns: list[str], path: str | os.PathLike, metadata: dict
) -> None:
    """Write a T x R float32 ROI time series as Parquet, one column per ROI, atomically.

    data: [T, R]. ``metadata`` must hold ``tr`` (seconds); it is stored as JSON under the
    ``brainjepa`` key of the file's key-value metadata, with the pipeline version added.
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != len(columns):
        raise ValueError(f"time series of shape {data.shape} does not match {len(columns)} column names")
    if "tr" not in metadata:
        raise ValueError("time-series metadata needs 'tr'")
    meta = {**metadata, "tr": float(metadata["tr"]), "pipeline_version": __version__}
    table = pa.table({name: data[:, i] for i, name in enumerate(columns)})
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_timeseries(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Read a file written by :func:`write_timeseries`: a T x R frame and its metadata dict."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read as Parquet time series ({exc})") from exc
    meta = read_timeseries_metadata(table)
    if meta is None:
        raise InputError(f"{path}: not a brainjepa time series (no '{METADATA_KEY.decode()}' metadata)")
    return table.to_pandas(), meta


def read_timeseries_metadata(table: pa.Table | pa.Schema) -> dict | None:
    """The brainjepa metadata of a Parquet table or schema (TR, atlas id, source, ...), or None for a foreign
    file."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else None


def read_timeseries_file_metadata(path: str | os.PathLike) -> dict | None:
    """:func:`read_timeseries_metadata` of a file, from its schema alone (no data read)."""
    try:
        return read_timeseries_metadata(pq.read_schema(path))
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise InputError(f"{path}: cannot read as Parquet ({exc})") from None


def check_roi_names(names: list[str], expected: list[str], source: str | os.PathLike, against: str) -> None:
    """Refuse ``names`` (read from ``source``) unless they equal ``expected`` (from ``against``) in order.

    The message names the first ROI where they differ, so a wrong atlas or a reordered file is found fast.
    """
    names, expected = [str(n) for n in names], [str(n) for n in expected]
    if names == expected:
        return
    if len(names) != len(expected):
        raise InputError(f"{source}: ROI names/order differ from {against} ({len(names)} vs {len(expected)} ROIs)")
    i = next(i for i, (a, b) in enumerate(zip(names, expected)) if a != b)
    raise InputError(f"{source}: ROI names/order differ from {against} (ROI {i + 1} is '{names[i]}', there "
                     f"'{expected[i]}')")
