"""WebDataset tar shards: the second training-data format, holding what the Parquet shards hold.

``build_shards(..., shard_format="webdataset")`` (:mod:`brainjepa.data.shards`) writes the same runs, in the same
order and the same shards (the same size cap), with the same ``manifest.json`` (``shard_format: webdataset``), as
``<split>/shard-00000.tar``. The first member, ``__brainjepa__``, is a JSON object describing the shard, as the
Parquet schema's metadata does (``format``, ``scaling_stats_id``, ``dtype``, and ``label_columns`` {name: kind},
which Parquet's column types give); WebDataset readers skip members named ``__*__``. Then one sample per run, two
members, written in this order:

    <key>.json   {"run_id", "cohort", "subject", "session", "run", "split", "tr", "n_rois", "n_timepoints",
                  <one entry per label column>}: the Parquet row less ``data`` (null where missing)
    <key>.npy    the scaled [n_rois, n_timepoints] matrix: NumPy .npy (format 1.0), little-endian float16 or
                 float32 as the manifest's ``dtype`` says

``key`` is :func:`sample_key` of the run id: every character outside ``[A-Za-z0-9_-]`` written as ``%XX`` (its
UTF-8 bytes), so a key has no ``.`` (WebDataset cuts the key from the extension at the first dot of a name), no
``/`` (no folders in the tar), and distinct run ids give distinct keys. The run id itself is in the JSON.

Why ``.npy`` and not raw ``.f16`` bytes: the member describes itself (dtype, shape), so ``wds.WebDataset(url)
.decode()`` or ``tar -x`` + ``np.load`` give the matrix with no code of ours, and the 128-byte header is nothing
beside a 450 x 490 run (430 KiB); the reader parses the header once per sample and views the data in place, as it
views Parquet's raw bytes. The tar is POSIX (pax), uncompressed (float16 noise does not compress, and the reader
must not pay for decompression), each member with mtime 0, uid/gid 0, user/group ``brainjepa`` and mode 0444, so
the same inputs give byte-identical shards.

Reading (:class:`TarShardReader`): the units of work are groups of ``rows_per_row_group`` consecutive samples,
the Parquet row groups' twins. A local file is indexed once (its member headers) and a group is one read; a URL
(``pipe:aws s3 cp s3://bucket/{path} -``, ``https://...``, any scheme ``webdataset.gopen`` opens) is one
sequential stream, continued when the next group wanted lies further on, reopened when it lies behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from brainjepa.data.manifest import DTYPES, ID_COLUMNS
from brainjepa.errors import InputError
from brainjepa.io import atomic_path, sha256_file

META, MATRIX = "json", "npy"
HEADER = "__brainjepa__"  # the shard's own description; WebDataset skips root members named __*__
_SAFE = re.compile(r"[A-Za-z0-9_-]")
_NPY_PEEK = 4096  # bytes holding a .npy header (ours are 128)
_OWNER = "brainjepa"


def sample_key(run_id: str) -> str:
    """The sample key of a run: ``run_id`` with every character outside ``[A-Za-z0-9_-]`` as ``%XX`` bytes."""
    return "".join(c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in run_id)


def is_url(location: str) -> bool:
    """True for ``scheme:...`` locations (``pipe:``, ``http(s)://``, ``file://``, ...), False for plain paths."""
    return len(urlparse(str(location)).scheme) > 1  # one letter: a Windows drive, not a scheme


def _split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name, cut as WebDataset cuts it (at the first dot of the base name)."""
    head, _, base = name.rpartition("/")
    key, dot, ext = base.partition(".")
    return (f"{head}/{key}" if head else key), (ext.lower() if dot else "")


# ------------------------------------------------------------------------------------------------- writing
def _member(name: str, payload: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = _OWNER
    return info, io.BytesIO(payload)


def npy_bytes(matrix: np.ndarray) -> bytes:
    """``matrix`` as a .npy file (format 1.0, little-endian, C order)."""
    matrix = np.ascontiguousarray(matrix, dtype=matrix.dtype.newbyteorder("<"))
    out = io.BytesIO()
    np.lib.format.write_array(out, matrix, version=(1, 0), allow_pickle=False)
    return out.getvalue()


class TarShardWriter:
    """Writes one tar shard, one sample per run (the interface of the Parquet shard writer)."""

    def __init__(self, path: Path, rows_per_group: int, label_columns: dict[str, str], header: dict):
        """header: what ``__brainjepa__`` holds (JSON-serialisable; written with sorted keys)."""
        self.path, self.rows_per_group, self.label_columns = path, rows_per_group, label_columns
        self.rows, self.payload = 0, 0
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(path))
        handle = self._stack.enter_context(open(tmp, "wb"))
        self._tar = self._stack.enter_context(tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT))
        self._tar.addfile(*_member(HEADER, json.dumps(header, sort_keys=True).encode()))

    @property
    def row_groups(self) -> int:
        """Groups of ``rows_per_group`` consecutive samples (the loader's units), the last one possibly short."""
        return math.ceil(self.rows / self.rows_per_group)

    def add(self, run, data: np.ndarray, tr: float) -> None:
        """Append the sample of ``run`` (a planned run of :mod:`brainjepa.data.shards`): [R, T] ``data``, TR (s)."""
        meta = {name: run.ids[name] for name in ID_COLUMNS}
        meta.update(tr=float(tr), n_rois=int(data.shape[0]), n_timepoints=int(data.shape[1]))
        meta.update({name: run.labels[name] for name in self.label_columns})
        key = sample_key(run.ids["run_id"])
        for ext, payload in ((META, json.dumps(meta, allow_nan=False).encode()), (MATRIX, npy_bytes(data))):
            self._tar.addfile(*_member(f"{key}.{ext}", payload))
        self.rows += 1
        self.payload += data.nbytes

    def close(self) -> None:
        """Finish the archive and rename the file into place."""
        self._stack.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("shard build aborted"), None)


# ------------------------------------------------------------------------------------------------- reading
Members = dict[str, memoryview]


class Digest(Protocol):
    """A ``hashlib`` object (``hashlib.sha256()``): what a reader feeds a shard's bytes to."""

    def update(self, data: bytes, /) -> None: ...


class _HashingReader:
    """A binary stream that feeds every byte read through it to ``digest``."""

    def __init__(self, raw: BinaryIO, digest: Digest):
        self._raw, self._digest = raw, digest

    def read(self, size: int = -1) -> bytes:
        block = self._raw.read(size)
        self._digest.update(block)
        return block

    def close(self) -> None:
        self._raw.close()


class _Stream:
    """A shard read front to back (any location ``webdataset.gopen`` opens); ``position``: samples passed.

    digest: a ``hashlib`` object fed every byte of the shard as it is read (:meth:`drain` reads what the tar
    reader leaves after the end of the archive), so that a shard read once is also hashed once."""

    def __init__(self, location: str, digest: Digest | None = None):
        from webdataset.gopen import gopen

        self.location, self.position = location, 0
        self._file = open(location, "rb") if digest is not None and not is_url(location) else gopen(location, "rb")
        if digest is not None:
            self._file = _HashingReader(self._file, digest)
        self._tar = tarfile.open(fileobj=self._file, mode="r|")
        self._pending: tarfile.TarInfo | None = None  # the next sample's first header, its data not yet read
        self._ended = False
        self.header: dict | None = None  # the __brainjepa__ member, once passed

    def next_sample(self, wanted: Callable[[str], bool]) -> tuple[str, Members] | None:
        """The next sample's key and the members whose extension is ``wanted`` (the others are skipped)."""
        key, members = None, {}
        while not self._ended:
            info, self._pending = self._pending or self._tar.next(), None
            self._tar.members = []  # keep no history of a stream
            if info is None:
                self._ended = True  # tarfile must not be asked again: it would seek back to the end marker
                break
            if not info.isreg():
                continue
            if info.name == HEADER:
                self.header = _json(self._tar.extractfile(info).read(), f"{self.location}: {HEADER}")
                continue
            name, ext = _split_name(info.name)
            if key is None:
                key = name
            elif name != key:
                self._pending = info
                break
            if wanted(ext):
                buffer = bytearray(info.size)
                if self._tar.extractfile(info).readinto(buffer) != info.size:
                    raise InputError(f"{self.location}: member {info.name} is truncated")
                members[ext] = memoryview(buffer)
        if key is None:
            return None
        self.position += 1
        return key, members

    def drain(self) -> None:
        """Read the rest of the file (what follows the archive's last member) without looking at it."""
        while self._file.read(2**20):
            pass

    def close(self) -> None:
        self._tar.close()
        self._file.close()


class _Index:
    """A local shard's members (offset, size) by sample, from one pass over its headers; groups read in one go."""

    def __init__(self, path: str):
        self.path = path
        self.samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
        self.header_span: tuple[int, int] | None = None
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                if info.name == HEADER:
                    self.header_span = (info.offset_data, info.size)
                    continue
                key, ext = _split_name(info.name)
                if not self.samples or self.samples[-1][0] != key:
                    self.samples.append((key, {}))
                self.samples[-1][1][ext] = (info.offset_data, info.size)
        self._file = open(path, "rb", buffering=0)  # closed in close()

    def read(self, first: int, count: int, wanted: Callable[[str], bool]) -> list[tuple[str, Members]]:
        """Samples ``first`` .. ``first + count - 1``: the bytes from the first wanted member to the last in one read
        (the members between them come along: a group's samples are adjacent)."""
        chosen = self.samples[first:first + count]
        spans = [span for _, members in chosen for ext, span in members.items() if wanted(ext)]
        if not spans:
            return [(key, {}) for key, _ in chosen]
        if len(spans) < sum(len(members) for _, members in chosen):  # some skipped: each member on its own
            return [(key, {ext: self._bytes(*span) for ext, span in members.items() if wanted(ext)})
                    for key, members in chosen]
        start, end = min(s for s, _ in spans), max(s + n for s, n in spans)
        view = self._bytes(start, end - start)
        return [(key, {ext: view[s - start:s - start + n] for ext, (s, n) in members.items() if wanted(ext)})
                for key, members in chosen]

    def header(self) -> dict | None:
        """The ``__brainjepa__`` member (None when the shard has none)."""
        return None if self.header_span is None else _json(self._bytes(*self.header_span), f"{self.path}: {HEADER}")

    def _bytes(self, start: int, size: int) -> memoryview:
        buffer = memoryview(bytearray(size))  # writable: tensors are made from views of it
        self._file.seek(start)
        done = 0
        while done < size:
            got = self._file.readinto(buffer[done:])
            if not got:
                raise InputError(f"{self.path}: ends inside a member (truncated shard)")
            done += got
        return buffer

    def close(self) -> None:
        self._file.close()


def _json(data: bytes | memoryview, where: str):
    try:
        return json.loads(bytes(data))
    except ValueError as exc:
        raise InputError(f"{where}: unreadable JSON ({exc})") from exc


def _npy_matrix(buffer: memoryview, where: str) -> np.ndarray:
    """A view of the array in a .npy member (the header parsed, the data left in place)."""
    head = io.BytesIO(buffer[:_NPY_PEEK].tobytes())
    try:
        version = np.lib.format.read_magic(head)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(head)
    except (ValueError, OSError) as exc:
        raise InputError(f"{where}: not a .npy matrix ({exc})") from exc
    count = math.prod(shape)
    if fortran or dtype.hasobject or head.tell() + count * dtype.itemsize != len(buffer):
        raise InputError(f"{where}: the .npy member's header ({shape}, {dtype}) does not match its "
                         f"{len(buffer)} bytes")
    return np.frombuffer(buffer, dtype, count=count, offset=head.tell()).reshape(shape)


def decode_sample(key: str, members: Members, where: str, dtype: np.dtype, n_rois: int | None = None
                  ) -> tuple[dict, np.ndarray | None]:
    """(metadata, [R, T] matrix view) of one sample; the matrix is None when its member was not read.

    Checks that the JSON's run id gives the key, and that the matrix has the JSON's shape and the manifest's dtype.
    """
    where = f"{where}: sample {key}"
    if META not in members:
        raise InputError(f"{where} has no .{META} member")
    meta = _json(members[META], f"{where}.{META}")
    if not isinstance(meta, dict) or sample_key(str(meta.get("run_id"))) != key:
        raise InputError(f"{where}: the .{META} member's run_id {meta.get('run_id')!r} does not give the key")
    if n_rois is not None and meta.get("n_rois") != n_rois:
        raise InputError(f"{where}: {meta.get('n_rois')} ROIs, the manifest lists {n_rois}")
    if MATRIX not in members:
        return meta, None
    matrix = _npy_matrix(members[MATRIX], f"{where}.{MATRIX}")
    if matrix.dtype != dtype or matrix.shape != (meta.get("n_rois"), meta.get("n_timepoints")):
        raise InputError(f"{where}: the matrix is {matrix.shape} {matrix.dtype}, its metadata say "
                         f"({meta.get('n_rois')}, {meta.get('n_timepoints')}) and the manifest {dtype}")
    return meta, matrix


class TarShardReader:
    """Groups of ``group_size`` samples of one tar shard, by group index.

    location: a local path (indexed: a group is one read) or a URL (one sequential stream; a group further on
    continues it, one behind reopens it). rows: the samples the manifest lists (checked; None: whatever the
    shard holds). ``where`` names the shard (and its manifest) in errors. digest: a ``hashlib`` object to feed
    every byte of the shard: the shard is then one stream read front to back, also a local one (no index, no
    reopening), and :meth:`read_all` reads it to the end of the file.
    """

    def __init__(self, location: str | os.PathLike, rows: int | None, group_size: int, where: str | None = None,
                 digest: Digest | None = None):
        self.location, self.group_size = str(location), int(group_size)
        self.rows = None if rows is None else int(rows)
        self.where = where or self.location
        self._index: _Index | None = None
        self._stream: _Stream | None = None
        self._digest = digest
        if not is_url(self.location) and digest is None:
            try:
                self._index = _Index(self.location)
            except (OSError, tarfile.TarError) as exc:
                raise InputError(f"{self.where}: cannot read tar shard ({exc})") from exc
            if self.rows is not None and len(self._index.samples) != self.rows:
                self._index.close()
                raise InputError(f"{self.where}: {len(self._index.samples)} samples, the manifest lists {self.rows}")

    def _samples(self, first: int, count: int | None, wanted: Callable[[str], bool]) -> list[tuple[str, Members]]:
        """Samples ``first`` .. ``first + count - 1`` (count None: to the end), the ``wanted`` members read."""
        if self._index is not None:
            return self._index.read(first, len(self._index.samples) if count is None else count, wanted)
        try:
            if self._stream is None or self._stream.position > first:
                if self._stream is not None and self._digest is not None:
                    raise ValueError(f"{self.where}: a hashed shard is read once, front to back")
                self._close_stream()
                self._stream = _Stream(self.location, self._digest)
            while self._stream.position < first and self._stream.next_sample(lambda ext: False) is not None:
                pass
            out = []
            while (count is None or len(out) < count) and (sample := self._stream.next_sample(wanted)) is not None:
                out.append(sample)
            if count is None and self._digest is not None:
                self._stream.drain()  # the end-of-archive blocks and padding are hashed too
        except (OSError, tarfile.TarError) as exc:
            raise InputError(f"{self.where}: cannot read tar shard ({exc})") from exc
        ended = count is None or len(out) < count
        if (count is not None and len(out) != count) or (ended and self.rows not in (None, self._stream.position)):
            raise InputError(f"{self.where}: ends after {self._stream.position} samples, the manifest lists "
                             f"{self.rows}")
        return out

    def read_group(self, group: int, dtype: np.dtype, n_rois: int | None = None) -> list[tuple[dict, np.ndarray]]:
        """(metadata, [R, T] matrix view) of each sample of group ``group``, in shard order."""
        first = group * self.group_size
        if self.rows is None or not 0 <= first < self.rows:
            raise InputError(f"{self.where}: no group {group} ({self.rows} samples, groups of {self.group_size})")
        count = min(self.group_size, self.rows - first)
        return [decode_sample(key, members, self.where, dtype, n_rois)
                for key, members in self._samples(first, count, lambda ext: ext in (META, MATRIX))]

    def read_all(self, dtype: np.dtype, matrices: bool = True) -> list[tuple[dict, np.ndarray | None]]:
        """(metadata, matrix view or None) of every sample, in order; ``matrices=False`` skips the matrices (a
        stream still reads through them)."""
        wanted = (lambda ext: ext in (META, MATRIX)) if matrices else (lambda ext: ext == META)
        return [decode_sample(key, members, self.where, dtype) for key, members in self._samples(0, None, wanted)]

    def header(self) -> dict | None:
        """The shard's ``__brainjepa__`` description (None if it has none; a stream reads its first member)."""
        if self._index is not None:
            return self._index.header()
        if self._stream is not None and self._stream.header is not None:
            return self._stream.header
        try:
            stream = _Stream(self.location)
            try:
                stream.next_sample(lambda ext: False)  # the header is the first member
                return stream.header
            finally:
                stream.close()
        except (OSError, tarfile.TarError) as exc:
            raise InputError(f"{self.where}: cannot read tar shard ({exc})") from exc

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        self._close_stream()
        if self._index is not None:
            self._index.close()


def sha256_location(location: str | os.PathLike, chunk: int = 4 * 2**20) -> str:
    """Hex SHA-256 of a local file or of what a URL streams."""
    if not is_url(str(location)):
        return sha256_file(location, chunk)
    from webdataset.gopen import gopen

    digest = hashlib.sha256()
    with gopen(str(location), "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_tar_shard(location: str | os.PathLike, dtype: str = "float16", columns: list[str] | None = None,
                   digest: Digest | None = None):
    """A tar shard as the frame :func:`brainjepa.data.shards.read_shard` gives for a Parquet one: a row per run,
    ``data`` decoded to [n_rois, n_timepoints] arrays. columns: only these (those present; without ``data`` the
    matrices are not decoded; in the order given). Column types as in a Parquet shard (a label holding no text is
    float64), converted to pandas as pyarrow converts the Parquet shard. digest: a ``hashlib`` object fed every
    byte of the file while it is read (one sequential pass, whatever ``columns``): the caller compares it."""
    with_data = columns is None or "data" in columns
    reader = TarShardReader(location, rows=None, group_size=1, digest=digest)
    try:
        rows = reader.read_all(DTYPES[dtype], matrices=with_data)
        kinds = (reader.header() or {}).get("label_columns", {})
    finally:
        reader.close()
    fixed = (*ID_COLUMNS, "tr", "n_rois", "n_timepoints")
    labels = [name for name in (rows[0][0] if rows else {}) if name not in fixed]
    order = [*fixed, *(["data"] if with_data else []), *labels]
    if columns is not None:  # in the order asked for, as pyarrow gives them
        order = [c for c in dict.fromkeys(columns) if c in order]
    # through Arrow with the Parquet shard's column types, so that pandas converts exactly as for Parquet
    types = {**dict.fromkeys(ID_COLUMNS, pa.string()), "tr": pa.float64(), "n_rois": pa.int32(),
             "n_timepoints": pa.int32()}
    for name in labels:  # the kind the shard's header gives, else text if any value is
        text = kinds.get(name) == "categorical" or (name not in kinds and any(isinstance(m.get(name), str)
                                                                              for m, _ in rows))
        types[name] = pa.string() if text else pa.float64()
    table = pa.table({name: pa.array([meta.get(name) for meta, _ in rows], types[name])
                      for name in order if name != "data"})
    frame = table.to_pandas()
    if with_data and "data" in order:
        frame.insert(order.index("data"), "data", [matrix.copy() for _, matrix in rows])
    return frame
