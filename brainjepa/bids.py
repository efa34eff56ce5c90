"""BIDS/fMRIPrep file conventions: filename entities, JSON sidecars, repetition time."""

from __future__ import annotations

import json
import numbers
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
# The most a repetition time may be, in seconds, from any source (sample sheet, sidecar, NIfTI header, a time
# series' metadata): the samples schema's 'tr' maximum (schemas/samples.schema.yaml; a test keeps them equal).
# No fMRI protocol samples slower; a larger value is a unit slip (milliseconds given as seconds).
MAX_TR_S = 30.0
SHEET_TR_SOURCE = "--tr (the sample sheet)"


def _seconds(value: float) -> str:
    """A number of seconds for a message: plain digits (2000, 0.735, 1000000), never a numpy repr."""
    return f"{float(value):.10g}"


def check_tr(value: object, path: str | Path, source: str, fix: str) -> float:
    """``value`` as a TR in seconds if it is a plausible one: a number in (0, ``MAX_TR_S``] seconds.

    ``path``: the run's file; ``source``: where the value was read (e.g. "the NIfTI header pixdim[4]");
    ``fix``: what the user should do. Anything else is an :class:`InputError` naming them, with the likely unit
    mistake when the value is one in milliseconds or microseconds.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0 or value != value:
        shown = _seconds(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else repr(value)
        raise InputError(f"{path}: {source} {shown} is not a positive number of seconds; {fix}")
    tr = float(value)
    if tr <= MAX_TR_S:
        return tr
    guess = next((f"{_seconds(tr)} looks like {unit}: {_seconds(tr * scale)} s? "
                  for unit, scale in (("milliseconds", 1e-3), ("microseconds", 1e-6)) if tr * scale <= MAX_TR_S), "")
    raise InputError(f"{path}: TR {_seconds(tr)} s from {source} is not a plausible repetition time (at most "
                     f"{_seconds(MAX_TR_S)} s, as the sample sheet's 'tr'); {guess}{fix}")


def repetition_time(bold: str | Path, tr: float | None = None) -> tuple[float, str]:
    """The TR of a BOLD run in seconds, and where it came from.

    Order: an explicit ``tr`` (the sample sheet), the sidecar's ``RepetitionTime``, then the NIfTI
    header's 4th zoom when its time unit is set. Anything else is not trustworthy and is an error, and so is a
    TR outside (0, ``MAX_TR_S``] seconds from any of them (:func:`check_tr`).
    """
    bold = Path(bold)
    if tr is not None:
        return check_tr(tr, bold, SHEET_TR_SOURCE, "give the run's tr in seconds"), "sheet"
    sidecar = sidecar_path(bold)
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{sidecar}: invalid JSON ({exc})") from exc
        value = meta.get("RepetitionTime")
        if value is not None:
            return check_tr(value, bold, f"sidecar {sidecar.name} RepetitionTime",
                            "fix the sidecar (RepetitionTime is in seconds) or give the run's tr in the sample "
                            "sheet"), "sidecar"
    try:
        header = nib.load(bold).header
    except Exception as exc:  # nibabel raises several types for unreadable headers
        raise InputError(f"{bold}: cannot read NIfTI header ({exc})") from exc
    zooms = header.get_zooms()
    unit = header.get_xyzt_units()[1]
    if len(zooms) >= 4 and zooms[3] > 0 and unit in _TIME_UNIT_SECONDS:
        return check_tr(round(float(zooms[3]) * _TIME_UNIT_SECONDS[unit], 6), bold,
                        f"the NIfTI header pixdim[4] (time unit '{unit}')",
                        "fix the header (its time step or its xyzt time unit) or give the run's tr in the sample "
                        "sheet"), "header"
    raise InputError(
        f"{bold}: no trustworthy TR: no 'tr' in the sample sheet, no RepetitionTime in {sidecar.name}, "
        f"and the NIfTI header's time step is {_seconds(zooms[3]) if len(zooms) >= 4 else 'missing'} "
        f"with time unit '{unit}'"
    )
