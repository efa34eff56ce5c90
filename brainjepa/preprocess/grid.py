"""Voxel grids: nearest-neighbour regridding of integer images (atlas labels, brain masks)."""

from __future__ import annotations

import nibabel as nib
import numpy as np


def resample_nearest(img: nib.Nifti1Image, shape: tuple[int, ...], affine: np.ndarray) -> nib.Nifti1Image:
    """Nearest-neighbour resampling of an integer image onto a grid (a no-op when the grid is the same).

    img: 3-D integer image; shape: target [X, Y, Z] (extra dimensions ignored); affine: target 4 x 4 (mm).
    """
    if img.shape[:3] == tuple(shape[:3]) and np.allclose(img.affine, affine, atol=1e-4):
        return img
    from nilearn.image import resample_img

    out = resample_img(img, target_affine=affine, target_shape=tuple(shape[:3]), interpolation="nearest",
                       force_resample=True, copy_header=True)
    return nib.Nifti1Image(np.asarray(out.dataobj).round().astype(np.int32), affine)
