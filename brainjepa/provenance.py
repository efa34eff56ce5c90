"""Provenance of every output: which brainjepa, which settings, which input files (by checksum) made it.

A record is a JSON object::

    {"brainjepa_version": "0.1.0", "command": "group-fc",
     "settings": {...}, "settings_sha256": "<sha256 of the canonical JSON of command + settings>",
     "inputs": {"splits": [{"path": "results/splits/splits.tsv", "bytes": 1234, "sha256": "..."}], ...}}

Where it lives:

- ROI time series (Parquet, one file per run: parcellate, align_tr) carry it in their ``brainjepa`` metadata
  (no sidecar per run: 10^4-10^5 runs);
- training checkpoints carry their run identity (config, data content, version) already;
- every other file a ``brainjepa`` command writes (``--out``-style options) gets ``<file>.provenance.json`` beside
  it, with the output's own sha256, written after the command succeeded (and removed before it starts, so a
  failed command leaves none behind).

No times or host names: reruns give the same bytes. Inputs larger than :data:`HASH_LIMIT_BYTES` (e.g. 500 MB
BOLD runs, read once more only to hash them) are recorded by size and modification time instead
(``"sha256": null``); ``BRAINJEPA_PROVENANCE_HASH_MB`` changes the limit. ``brainjepa provenance PATH`` prints a
record and checks the output against it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from brainjepa.errors import InputError

SIDECAR_SUFFIX = ".provenance.json"
HASH_LIMIT_BYTES = int(float(os.environ.get("BRAINJEPA_PROVENANCE_HASH_MB", 256)) * 2**20)
# argparse destinations that name outputs (files a command writes)
OUTPUT_DESTS = ("out", "json", "qc", "tables")
NOT_SETTINGS = ("func", "verbose", "command")


def _is_output(dest: str) -> bool:
    return dest in OUTPUT_DESTS or dest.startswith("out_")


def file_record(path: str | os.PathLike) -> dict:
    """{"path", "bytes", "sha256"} of one input (sha256 null above the hash limit: size and mtime instead); a
    folder input (e.g. a UK Biobank subject folder): {"path", "files": [the record of each file in it]}."""
    from brainjepa.io import sha256_file

    path = Path(path)
    if path.is_dir():
        return {"path": str(path), "files": [file_record(f) for f in sorted(path.iterdir()) if f.is_file()]}
    stat = path.stat()
    if stat.st_size > HASH_LIMIT_BYTES:
        return {"path": str(path), "bytes": stat.st_size, "sha256": None, "mtime_ns": stat.st_mtime_ns}
    return {"path": str(path), "bytes": stat.st_size, "sha256": sha256_file(path)}


def settings_sha256(command: str, settings: dict) -> str:
    """Hex SHA-256 of the canonical JSON (sorted keys; values JSON cannot hold as their ``str``) of ``command`` and
    ``settings``: a record's ``settings_sha256``."""
    text = json.dumps({"command": command, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def make_record(command: str, settings: dict, inputs: dict[str, list[str | os.PathLike]]) -> dict:
    """A provenance record: version, settings and their hash, and each input file's checksum."""
    from brainjepa import __version__

    return {"brainjepa_version": __version__, "command": command, "settings": settings,
            "settings_sha256": settings_sha256(command, settings),
            "inputs": {role: [file_record(p) for p in paths] for role, paths in sorted(inputs.items()) if paths}}


def _values(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_file(value) -> bool:
    """Whether an argument names an existing file; a value no file could have (a JSON setting longer than the
    file-name limit, a NUL byte) is not one."""
    try:
        return Path(str(value)).is_file()
    except (OSError, ValueError):
        return False


def split_arguments(args: argparse.Namespace) -> tuple[dict, dict, list[Path]]:
    """A parsed command line -> (settings, input files by option, output files)."""
    settings, inputs, outputs = {}, {}, []
    for dest, value in sorted(vars(args).items()):
        if dest in NOT_SETTINGS or value is None:
            continue
        if _is_output(dest):
            outputs += [Path(str(v)) for v in _values(value) if isinstance(v, (str, os.PathLike))]
            continue
        files = [v for v in _values(value) if isinstance(v, (str, os.PathLike)) and _is_file(v)]
        if files and len(files) == len(_values(value)):
            inputs[dest] = files
        elif isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            inputs[dest] = [v[1] for v in value if _is_file(v[1])]   # name=path options
            settings[dest] = [v[0] for v in value]
        else:
            settings[dest] = value if isinstance(value, (int, float, bool, str, list, dict)) else str(value)
    return settings, inputs, outputs


def sidecar(path: str | os.PathLike) -> Path:
    """The provenance record beside an output: ``<path>.provenance.json``."""
    return Path(f"{path}{SIDECAR_SUFFIX}")


def remove_sidecars(args: argparse.Namespace) -> None:
    """Before a command runs: its outputs' old sidecars go (a failed command leaves none that looks complete)."""
    for path in split_arguments(args)[2]:
        sidecar(path).unlink(missing_ok=True)
        if path.is_dir():
            sidecar(path / "manifest.json").unlink(missing_ok=True)


def write_sidecars(args: argparse.Namespace) -> list[Path]:
    """After a command succeeded: ``<output>.provenance.json`` beside each file it wrote (a folder output: its
    ``manifest.json``, the shard sets). Returns the sidecars written."""
    from brainjepa.io import atomic_path, sha256_file

    settings, inputs, outputs = split_arguments(args)
    files = [p for p in outputs if p.is_file() and p.suffix != ".parquet"]  # time series embed their own
    files += [p / "manifest.json" for p in outputs if p.is_dir() and (p / "manifest.json").is_file()]
    if not files:
        return []
    record = make_record(args.command, settings, inputs)
    written = []
    for path in files:
        if path.name.endswith(SIDECAR_SUFFIX):
            continue
        entry = {**record, "output": {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}}
        with atomic_path(sidecar(path)) as tmp:
            Path(tmp).write_text(json.dumps(entry, indent=1, sort_keys=True, default=str) + "\n")
        written.append(sidecar(path))
    return written


def read_provenance(path: str | os.PathLike) -> tuple[dict, list[str]]:
    """The provenance of an output and what no longer matches it (the output's or an input's checksum).

    Parquet time series: their embedded record; checkpoints: their run identity; anything else: its sidecar.
    """
    from brainjepa.io import sha256_file

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".parquet":
        from brainjepa.io import read_timeseries_file_metadata

        record = read_timeseries_file_metadata(path)
        if record is not None and "provenance" in record:
            return record, _stale_inputs(record["provenance"])
    if path.suffix == ".pt" and not sidecar(path).exists():
        from brainjepa.models.weights import read_torch_file

        state = read_torch_file(path, "checkpoint")
        if isinstance(state, dict) and "format" in state:
            keys = ("format", "identity", "model_config", "source", "scaling_stats_id", "step", "total_steps")
            return {k: state[k] for k in keys if k in state}, []
    if not sidecar(path).exists():
        raise InputError(f"{path}: no provenance recorded (no {sidecar(path).name} beside it, none embedded)")
    try:
        record = json.loads(sidecar(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{sidecar(path)}: cannot read ({exc})") from None
    problems = _stale_inputs(record)
    output = record.get("output", {})
    if output.get("sha256") and sha256_file(path) != output["sha256"]:
        problems.insert(0, f"{path}: changed since it was written (sha256 differs from its provenance)")
    return record, problems


def _stale_inputs(record: dict) -> list[str]:
    """Inputs whose file changed (or went) since the record was written."""
    from brainjepa.io import sha256_file

    problems = []
    entries = [e for group in record.get("inputs", {}).values() for e in group]
    entries += [f for e in entries for f in e.get("files", [])]
    for entry in entries:
        path = Path(entry["path"])
        if not path.exists():
            problems.append(f"input {path}: no longer there")
        elif "files" in entry:  # a folder: its files are checked one by one
            continue
        elif entry.get("sha256") and sha256_file(path) != entry["sha256"]:
            problems.append(f"input {path}: changed since (sha256 differs)")
        elif entry.get("sha256") is None and path.stat().st_mtime_ns != entry.get("mtime_ns"):
            problems.append(f"input {path}: modified since (size and time recorded, not hashed)")
    return problems
