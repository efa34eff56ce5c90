"""Brain gradient positioning: diffusion-map gradients of a group functional-connectivity matrix.

Reproduces BrainSpace's ``GradientMaps(kernel="normalized_angle", approach="dm", alpha=0.5)``
(docs/reference.md section 2), with one change:
BrainSpace runs ARPACK's symmetric solver (``eigsh``) on the non-symmetric diffusion operator
``P = D^-1 W``, so its result is approximate and depends on the random seed. Here the symmetric
conjugate ``S = D^-1/2 W D^-1/2`` is solved exactly with a dense symmetric eigensolver and its
eigenvectors are mapped back to those of ``P`` (as BrainSpace's MATLAB code now does).
Everything else follows BrainSpace: the per-row sparsification (including its float rounding of
the kept count), the kernel, the anisotropic normalisation, the ``lambda / (1 - lambda)`` rescaling,
the scaling of the components by it and the sign rule.

Files: the gradients TSV has columns ``name, g1..gN`` (one row per ROI, in ROI order); the rescaled
eigenvalues go to ``<stem>_eigenvalues.tsv`` beside it (columns ``component, eigenvalue``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg

from brainjepa.errors import InputError
from brainjepa.io import atomic_path, check_roi_names
from brainjepa.preprocess.atlas import read_roi_names

SYMMETRY_RTOL = 1e-6
# More digits than io.write_tsv_atomic's 6, so that the exact solve survives the round trip.
FLOAT_FORMAT = "%.10g"


# ------------------------------------------------------------------------------------------------ input
def _read_matrix(path: Path) -> np.ndarray:
    """Read a .npy or header-less .csv/.tsv (optionally .gz) numeric matrix."""
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        if name.endswith((".csv", ".csv.gz")):
            return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        if name.endswith((".tsv", ".tsv.gz")):
            return np.loadtxt(path, delimiter="\t", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read the FC matrix ({exc})") from exc
    raise InputError(f"{path}: unknown FC matrix format (expected .npy, .csv or .tsv)")


def load_fc(path: str | Path) -> np.ndarray:
    """Load a group FC matrix and check it. Returns [R, R] float64.

    Errors (InputError naming the file): unreadable, not a 2-D square matrix, NaN/Inf (first
    location given), not symmetric to ``1e-6`` relative to the largest |value| (worst entry given).
    Positions in messages are 0-based (row, column).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: FC matrix file not found")
    fc = _read_matrix(path)
    if fc.ndim != 2 or fc.shape[0] != fc.shape[1] or fc.shape[0] == 0:
        raise InputError(f"{path}: FC matrix must be 2-D and square, got shape {fc.shape}")
    bad = np.argwhere(~np.isfinite(fc))
    if len(bad):
        i, j = bad[0]
        raise InputError(f"{path}: FC matrix has {len(bad)} NaN/Inf value(s), first at row {i}, column {j} "
                         f"(0-based): {fc[i, j]}")
    diff = np.abs(fc - fc.T)
    tol = SYMMETRY_RTOL * max(float(np.abs(fc).max()), np.finfo(float).tiny)
    if diff.max() > tol:
        i, j = np.unravel_index(int(diff.argmax()), diff.shape)
        raise InputError(f"{path}: FC matrix is not symmetric: [{i}, {j}] = {fc[i, j]:.8g} but "
                         f"[{j}, {i}] = {fc[j, i]:.8g} (0-based; tolerance {tol:.3g})")
    return fc


# --------------------------------------------------------------------------------------------- the maths
def sparsify_rows(fc: np.ndarray, sparsity: float = 0.9) -> np.ndarray:
    """Keep, per row, the ``int(C * (1 - sparsity))`` largest values; zero the rest. [R, C] -> [R, C].

    This is BrainSpace's ``dominant_set(fc, k=1 - sparsity)``, float arithmetic included:
    ``1 - 0.9`` is 0.09999999999999998, so 39 of 400 (44 of 450) values are kept, not 40 (45).
    The largest values are kept (not the largest |values|); ties are broken by ``np.argpartition``
    exactly as BrainSpace breaks them. ``sparsity=0`` keeps everything.
    """
    fc = np.asarray(fc, dtype=np.float64)
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    n_cols = fc.shape[1]
    keep = int(n_cols * (1 - sparsity))
    if keep < 1:
        raise ValueError(f"sparsity {sparsity} keeps no value of a row of {n_cols}")
    columns = np.argpartition(fc, n_cols - keep, axis=1)[:, -keep:]
    rows = np.arange(fc.shape[0])[:, None]
    out = np.zeros_like(fc)
    out[rows, columns] = fc[rows, columns]
    return out


def normalized_angle_affinity(x: np.ndarray) -> np.ndarray:
    """Normalized-angle kernel between the rows of x. x: [R, F] -> affinity [R, R], symmetric, in [0, 1].

    ``A(i, j) = 1 - arccos(cos_sim(x_i, x_j)) / pi``, negatives zeroed (BrainSpace's ``non_negative``).
    As in scikit-learn's ``cosine_similarity`` (BrainSpace's choice), an all-zero row has cosine 0
    with every row, itself included. The diagonal of a non-zero row is set to exactly 1: arccos
    turns a rounding error of 1e-16 in the cosine into 1e-8 in the angle.
    """
    x = np.asarray(x, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    nonzero = norms > 0
    unit = x / np.where(nonzero, norms, 1.0)[:, None]
    cos = unit @ unit.T
    cos = 0.5 * (cos + cos.T)  # the matrix product is symmetric only up to rounding
    cos[np.flatnonzero(nonzero), np.flatnonzero(nonzero)] = 1.0
    affinity = 1.0 - np.arccos(np.clip(cos, -1.0, 1.0)) / np.pi
    affinity[affinity < 0] = 0.0
    return affinity


def _diffusion_eigenpairs(affinity: np.ndarray, k: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenpairs of the diffusion operator ``P = D_W^-1 W``, ``W = D^-a A D^-a``.

    affinity: [R, R] symmetric, non-negative. Returns eigenvalues [k] (descending) and right
    eigenvectors of P [R, k] (unit Euclidean norm), from the exact dense solve of the symmetric
    conjugate ``S = D_W^-1/2 W D_W^-1/2`` (``psi = D_W^-1/2 u``). "Largest" is algebraic; BrainSpace
    asks ARPACK for largest magnitude, which differs only if a negative eigenvalue outweighs a kept one
    (the HCP Schaefer-400 spectrum is entirely positive).
    """
    degree = affinity.sum(axis=1)
    if np.any(degree <= 0):
        raise ValueError("affinity has a row without any positive entry")
    scale = degree ** -alpha
    w = affinity * scale[:, None] * scale[None, :]
    inv_sqrt = 1.0 / np.sqrt(w.sum(axis=1))
    s = w * inv_sqrt[:, None] * inv_sqrt[None, :]
    s = 0.5 * (s + s.T)
    n = s.shape[0]
    mu, u = scipy.linalg.eigh(s, subset_by_index=[n - k, n - 1])
    psi = u[:, ::-1] * inv_sqrt[:, None]
    return mu[::-1], psi / np.linalg.norm(psi, axis=0)


def _flip_signs(v: np.ndarray) -> np.ndarray:
    """BrainSpace's sign rule: flip each column of v [R, k] so its largest-|value| entry is positive."""
    peak = v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])]
    return v * np.where(peak < 0, -1.0, 1.0)[None, :]


def diffusion_map_gradients(fc: np.ndarray, n_components: int = 30, sparsity: float = 0.9,
                            alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion-map gradients of an FC matrix, as BrainSpace's GradientMaps (dm, normalized_angle).

    fc: [R, R]. Returns gradients [R, n_components] and rescaled eigenvalues [n_components]
    (``lambda / (1 - lambda)``, descending; BrainSpace's ``lambdas_``). The trivial (constant)
    eigenvector is dropped; each component has unit RMS and is then multiplied by its rescaled
    eigenvalue (multi-scale diffusion map, diffusion time 0) and sign-flipped by BrainSpace's rule.
    """
    fc = np.asarray(fc, dtype=np.float64)
    if not 1 <= n_components < fc.shape[0]:
        raise ValueError(f"n_components must be in [1, {fc.shape[0] - 1}] for {fc.shape[0]} ROIs, "
                         f"got {n_components}")
    affinity = normalized_angle_affinity(sparsify_rows(fc, sparsity))
    mu, psi = _diffusion_eigenpairs(affinity, n_components + 1, alpha)
    mu = mu[1:] / mu[0]
    if mu[0] >= 1 - 1e-10:
        raise ValueError("the affinity graph is disconnected (diffusion eigenvalue 1 is repeated)")
    eigenvalues = mu / (1 - mu)
    # BrainSpace divides by the trivial eigenvector, which makes each unit-norm column unit-RMS
    unit_rms = psi[:, 1:] * np.sqrt(fc.shape[0])
    return _flip_signs(unit_rms * eigenvalues[None, :]), eigenvalues


def procrustes_align(gradients: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rotate gradients [R, k] onto reference [R, k] (orthogonal Procrustes, no centring or scaling).

    Returns gradients @ Q [R, k], with Q [k, k] orthogonal minimising ||gradients @ Q - reference||_F.
    """
    gradients = np.asarray(gradients, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if gradients.shape != reference.shape:
        raise ValueError(f"gradients {gradients.shape} and reference {reference.shape} differ in shape")
    rotation, _ = scipy.linalg.orthogonal_procrustes(gradients, reference)
    return gradients @ rotation


# ---------------------------------------------------------------------------------------------- files
def eigenvalues_path(out_path: str | Path) -> Path:
    """The sibling eigenvalue file of a gradients TSV: ``<stem>_eigenvalues.tsv``."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.name.split('.')[0]}_eigenvalues.tsv")


def write_gradients(gradients: np.ndarray, eigenvalues: np.ndarray, names: list[str],
                    out_path: str | Path) -> None:
    """Write gradients [R, N] as a TSV (name, g1..gN) and eigenvalues [N] beside it, both atomically."""
    gradients = np.asarray(gradients, dtype=np.float64)
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    if gradients.ndim != 2 or gradients.shape[0] != len(names) or eigenvalues.shape != gradients.shape[1:]:
        raise ValueError(f"gradients {gradients.shape}, eigenvalues {eigenvalues.shape} and "
                         f"{len(names)} names do not match")
    table = pd.DataFrame(gradients, columns=[f"g{i + 1}" for i in range(gradients.shape[1])])
    table.insert(0, "name", list(names))
    values = pd.DataFrame({"component": table.columns[1:], "eigenvalue": eigenvalues})
    for frame, path in ((values, eigenvalues_path(out_path)), (table, Path(out_path))):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, sep="\t", index=False, float_format=FLOAT_FORMAT)


def read_gradients(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a gradients TSV: ROI names [R] and gradients [R, N]. Checks name, g1..gN, finite numbers."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype={"name": str}, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read gradients TSV ({exc})") from exc
    expected = ["name"] + [f"g{i + 1}" for i in range(len(table.columns) - 1)]
    if list(table.columns) != expected or len(expected) < 2:
        raise InputError(f"{path}: gradients TSV needs columns name, g1..gN in order, got {list(table.columns)}")
    names = [str(n) for n in table["name"]]
    if len(names) == 0 or any(not n for n in names) or len(set(names)) != len(names):
        raise InputError(f"{path}: ROI names must be non-empty and unique ({len(names)} rows)")
    values = table.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        i, j = bad[0]
        raise InputError(f"{path}: non-numeric or non-finite value for ROI {names[i]!r}, column g{j + 1}")
    return names, values


# ----------------------------------------------------------------------------------------------- stage
def run_gradients(fc_path: str | Path, out_path: str | Path, n_components: int = 30,
                  labels_path: str | Path | None = None, reference_path: str | Path | None = None) -> None:
    """The ``gradients`` stage: FC matrix file -> gradients TSV (+ eigenvalues TSV).

    ROI names come from the label table when given (its row count must equal the FC size), else
    ``roi_1..roi_R``. With a reference gradients TSV (same names in the same order, at least
    n_components columns) the gradients are Procrustes-rotated onto its first n_components columns;
    the eigenvalues are written unrotated.
    """
    fc = load_fc(fc_path)
    n_rois = fc.shape[0]
    if not 1 <= n_components < n_rois:
        raise InputError(f"{fc_path}: {n_rois} ROIs allow 1 to {n_rois - 1} gradients, not {n_components}")
    names = [f"roi_{i + 1}" for i in range(n_rois)]
    if labels_path is not None:
        names = read_roi_names(labels_path)
        if len(names) != n_rois:
            raise InputError(f"{labels_path}: {len(names)} labels, but the FC matrix {fc_path} has {n_rois} ROIs")
    gradients, eigenvalues = diffusion_map_gradients(fc, n_components)
    if reference_path is not None:
        gradients = procrustes_align(gradients, _reference_columns(Path(reference_path), names, n_components))
    write_gradients(gradients, eigenvalues, names, out_path)


def _reference_columns(path: Path, names: list[str], n_components: int) -> np.ndarray:
    """The first n_components columns [R, n] of a reference gradients TSV whose names match ``names``."""
    ref_names, reference = read_gradients(path)
    check_roi_names(ref_names, names, path, "the FC's ROIs")
    if reference.shape[1] < n_components:
        raise InputError(f"{path}: reference has {reference.shape[1]} gradients, {n_components} needed")
    return reference[:, :n_components]


def use_gradients_file(given_path: str | Path, labels_path: str | Path, out_path: str | Path) -> None:
    """Adopt a ready-made gradients TSV (e.g. the official Brain-JEPA file) as the ``gradients`` output.

    Its ROI names must equal the atlas label table's, in order; it is rewritten in our format (no eigenvalues
    file: none are known).
    """
    names, gradients = read_gradients(given_path)
    check_roi_names(names, read_roi_names(labels_path), given_path, f"the atlas labels {labels_path}")
    frame = pd.DataFrame(gradients, columns=[f"g{i + 1}" for i in range(gradients.shape[1])])
    frame.insert(0, "name", names)
    with atomic_path(out_path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format=FLOAT_FORMAT)
