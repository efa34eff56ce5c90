"""BIDS/fMRIPrep file conventions: filename entities, JSON sidecars, repetition time."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib

from brainjepa.errors import InputError

_ENTITY = re.compile(r"(?:^|_)([a-zA-Z0-9]+)-([a-zA-Z0-9]+)")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def entities(path: str | Path) -> dict[str, str]:
    """BIDS key-value entities of a filename, e.g. ``{"sub": "01", "space": "MNI152NLin6Asym"}``."""
    name = Path(path).name
    for suffix in _NIFTI_SUFFIXES + (".json", ".tsv"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return {key: value for key, value in _ENTITY.findall(name)}


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar beside a NIfTI file (same name, ``.json`` extension)."""
    path = Path(path)
    for suffix in _NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


_TIME_UNIT_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def repetition_time(bold: str | Path, tr: float | None = None) -> tuple[float, str]:
    """The TR of a BOLD run in seconds, and where it came from.

    Order: an explicit ``tr`` (the sample sheet), the sidecar's ``RepetitionTime``, then the NIfTI
    header's 4th zoom when its time unit is set. Anything else is not trustworthy and is an error.
    """
    bold = Path(bold)
    if tr is not None:
        if not tr > 0:
            raise InputError(f"{bold}: TR {tr} from the sample sheet is not positive")
        return float(tr), "sheet"
    sidecar = sidecar_path(bold)
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{sidecar}: invalid JSON ({exc})") from exc
        value = meta.get("RepetitionTime")
        if value is not None:
            if not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"{sidecar}: RepetitionTime {value!r} is not a positive number")
            return float(value), "sidecar"
    try:
        header = nib.load(bold).header
    except Exception as exc:  # nibabel raises several types for unreadable headers
        raise InputError(f"{bold}: cannot read NIfTI header ({exc})") from exc
    zooms = header.get_zooms()
    unit = header.get_xyzt_units()[1]
    if len(zooms) >= 4 and zooms[3] > 0 and unit in _TIME_UNIT_SECONDS:
        return round(float(zooms[3]) * _TIME_UNIT_SECONDS[unit], 6), "header"
    raise InputError(
        f"{bold}: no trustworthy TR: no 'tr' in the sample sheet, no RepetitionTime in {sidecar.name}, "
        f"and the NIfTI header's time step is {zooms[3] if len(zooms) >= 4 else 'missing'} "
        f"with time unit '{unit}'"
    )
