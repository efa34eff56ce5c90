"""BIDS conventions: the TR of a run and the plausible range every TR source is held to."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import FSL_2MM, save_bold

from brainjepa import bids
from brainjepa.errors import InputError
from brainjepa.sheets import load_schema


def test_the_tr_bound_is_the_sample_sheets():
    """One plausible range for a TR, whatever its source: the samples schema's 'tr' bounds are MAX_TR_S's."""
    tr = load_schema("samples")["properties"]["tr"]
    assert tr["maximum"] == bids.MAX_TR_S and tr["exclusiveMinimum"] == 0


def _bold(tmp_path, tr, unit="sec"):
    img = nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), FSL_2MM)
    img.header.set_zooms((2, 2, 2, tr))
    img.header.set_xyzt_units("mm", unit)
    path = tmp_path / "sub-01_task-rest_bold.nii.gz"
    nib.save(img, path)
    return path


def test_a_header_tr_in_milliseconds_labelled_seconds_is_refused(tmp_path):
    path = _bold(tmp_path, 2000)
    with pytest.raises(InputError) as info:
        bids.repetition_time(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "NIfTI header pixdim[4]" in msg and "2000" in msg
    assert "2000 looks like milliseconds: 2 s?" in msg and "sample sheet" in msg and "np." not in msg
    assert bids.repetition_time(_bold(tmp_path, 2000, "msec")) == (2.0, "header")   # a declared msec unit: kept
    assert bids.repetition_time(_bold(tmp_path, 30)) == (30.0, "header")             # the bound itself: kept


def test_a_sidecar_tr_in_milliseconds_is_refused(tmp_path):
    path = save_bold(tmp_path / "sub-01_task-rest_bold.nii.gz", np.ones((4, 4, 4, 3), np.float32), FSL_2MM, tr=2.0)
    sidecar = tmp_path / "sub-01_task-rest_bold.json"
    sidecar.write_text(json.dumps({"RepetitionTime": 2000}))
    with pytest.raises(InputError) as info:
        bids.repetition_time(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "sidecar sub-01_task-rest_bold.json RepetitionTime" in msg
    assert "2000 looks like milliseconds: 2 s?" in msg
    for bad in (True, "2.0", float("nan")):   # a JSON true is not 1 s
        sidecar.write_text(json.dumps({"RepetitionTime": bad}))
        with pytest.raises(InputError, match="RepetitionTime .* is not a positive number"):
            bids.repetition_time(path)


def test_a_sheet_tr_beyond_the_bound_is_refused(tmp_path):
    path = save_bold(tmp_path / "sub-01_task-rest_bold.nii.gz", np.ones((4, 4, 4, 3), np.float32), FSL_2MM, tr=2.0)
    with pytest.raises(InputError) as info:
        bids.repetition_time(path, 1e6)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "--tr (the sample sheet)" in msg and "1000000" in msg
    assert bids.repetition_time(path, 0.72) == (0.72, "sheet")
    with pytest.raises(InputError, match="is not a positive number"):
        bids.repetition_time(path, 0.0)
