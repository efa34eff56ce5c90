"""The shard set's format, whatever the shards' file format: its constants and the manifest's readers.

A shard set (:mod:`brainjepa.data.shards` builds it) is a folder holding ``manifest.json`` (``format``
:data:`FORMAT`, ``shard_format`` one of :data:`SHARD_FORMATS`, ``dtype`` one of :data:`DTYPES`, the window, the
ROI names, the scaling-statistics id, the label columns and the shard list per split) and the shards, Parquet
(:mod:`brainjepa.data.shards`) or WebDataset tar (:mod:`brainjepa.data.tar_shards`). Both shard writers and every
reader of a manifest import from here, so the two formats share one definition and neither imports the other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from brainjepa.errors import InputError

FORMAT = "brainjepa-shards/1"
ID_COLUMNS = ("run_id", "cohort", "subject", "session", "run", "split")
LABEL_KINDS = ("continuous", "categorical", "binary")
DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
SHARD_FORMATS = {"parquet": ".parquet", "webdataset": ".tar"}  # manifest "shard_format" -> file suffix
PRETRAIN_SPLIT = "pretrain"
MONITOR_SPLIT = "monitor"   # pretraining subjects held out of training: the windows a run's monitors read


def load_manifest(path: str | os.PathLike) -> dict:
    """Read and check a shard manifest (``manifest.json``, or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the shard manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise InputError(f"{path}: not a shard manifest of format '{FORMAT}' (found {found!r})")
    needed = ("dtype", "window", "roi_names", "scaling_stats_id", "splits", "label_columns")
    lacking = [key for key in needed if key not in manifest]
    if lacking:
        raise InputError(f"{path}: shard manifest lacks {lacking}")
    manifest.setdefault("shard_format", "parquet")  # manifests written before the tar format
    if manifest["shard_format"] not in SHARD_FORMATS:
        raise InputError(f"{path}: shard_format {manifest['shard_format']!r} is not one of {sorted(SHARD_FORMATS)}")
    for split, shards in manifest["splits"].items():
        for entry in shards:
            if not {"path", "rows", "row_groups", "sha256", "bytes"} <= set(entry):
                raise InputError(f"{path}: split '{split}': shard entry {entry} lacks path/rows/row_groups/sha256/"
                                 "bytes")
    return manifest


def shard_file_problems(manifest_path: str | os.PathLike) -> list[str]:
    """What no longer matches a written manifest, cheaply (no data read): shard files that are missing, of
    another size than recorded, or modified after the manifest was written. [] when intact (or no manifest).
    The sha256s are checked where the data are read (pretraining and evaluation)."""
    manifest_path = Path(manifest_path)
    if not manifest_path.exists():
        return []
    manifest = load_manifest(manifest_path)
    written = manifest_path.stat().st_mtime
    problems = []
    for entries in manifest["splits"].values():
        for entry in entries:
            path = manifest_path.parent / entry["path"]
            if not path.exists():
                problems.append(f"{path}: missing")
            elif path.stat().st_size != entry["bytes"]:
                problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
            elif path.stat().st_mtime > written + 1:
                problems.append(f"{path}: modified after its manifest was written")
    return problems
