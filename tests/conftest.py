"""Shared fixtures: the real atlases (../shared/data/atlases, for CI) and small synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_ATLASES = Path(os.environ.get("BRAINJEPA_TEST_ATLASES", REPO.parent / "shared" / "data" / "atlases"))
FSL_2MM = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])

os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")


def require_real_atlases() -> Path:
    if not (SHARED_ATLASES / "Schaefer2018_400Parcels_7Networks_order_FSLMNI152_2mm.nii.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"real atlases missing at {SHARED_ATLASES} (CI must have ../shared beside the clone)")
        pytest.skip(f"real atlases not found at {SHARED_ATLASES}")
    return SHARED_ATLASES


@pytest.fixture(scope="session")
def real_atlas(tmp_path_factory) -> tuple[Path, Path]:
    """The combined Tian S3 + Schaefer-400 (7 networks) atlas, built from the real files in local mode."""
    from brainjepa.preprocess.atlas import build_atlas

    src = require_real_atlases()
    out = tmp_path_factory.mktemp("real_atlas")
    image = out / "atlas_space-MNI152NLin6Asym_dseg.nii.gz"
    labels = out / "atlas_space-MNI152NLin6Asym_labels.tsv"
    build_atlas(
        "MNI152NLin6Asym", image, labels, out / "cache",
        cortical_image=str(src / "Schaefer2018_400Parcels_7Networks_order_FSLMNI152_2mm.nii.gz"),
        cortical_labels=str(src / "Schaefer2018_400Parcels_7Networks_order.txt"),
        subcortical_image=str(src / "Tian_Subcortex_S3_3T_MNI152NLin6Asym_1mm.nii.gz"),
        subcortical_labels=str(src / "Tian_Subcortex_S3_3T_labels.csv"))
    return image, labels


def save_bold(path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None = 2.0,
              sidecar: bool = False) -> Path:
    """Write a 4-D image with the TR in the header (time unit seconds) or no TR at all (tr=None)."""
    img = nib.Nifti1Image(data, affine)
    if tr is None:
        img.header.set_xyzt_units("mm", "unknown")
        img.header["pixdim"][4] = 1.0
    else:
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = tr
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    if sidecar and tr is not None:
        path.with_name(path.name.split(".nii")[0] + ".json").write_text(f'{{"RepetitionTime": {tr}}}')
    return path


@pytest.fixture
def small_atlas(tmp_path) -> tuple[Path, Path]:
    """A 4-ROI label image on a 10x12x10 grid at 2 mm in MNI152NLin6Asym, with its label table."""
    data = np.zeros((10, 12, 10), dtype=np.int16)
    data[1:5, 1:6, 1:5] = 1
    data[5:9, 1:6, 1:5] = 2
    data[1:5, 6:11, 5:9] = 3
    data[5:9, 6:11, 5:9] = 4
    affine = FSL_2MM.copy()
    image = tmp_path / "atlas" / "atlas_space-MNI152NLin6Asym_dseg.nii.gz"
    image.parent.mkdir()
    nib.save(nib.Nifti1Image(data, affine), image)
    labels = tmp_path / "atlas" / "labels.tsv"
    labels.write_text("index\tname\tnetwork\n1\tA_1\tSubcortical\n2\tB_2\tSubcortical\n3\tC_3\tSubcortical\n"
                      "4\tD_4\tSubcortical\n")
    return image, labels


@pytest.fixture
def small_bold(tmp_path, small_atlas):
    """A 20-volume float32 BOLD on the small atlas's grid, with a JSON sidecar (TR 0.8 s)."""
    rng = np.random.default_rng(0)
    data = (500 + rng.normal(0, 10, size=(10, 12, 10, 20))).astype(np.float32)
    path = tmp_path / "bids" / "sub-01_task-rest_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"
    return save_bold(path, data, FSL_2MM, tr=0.8, sidecar=True)
