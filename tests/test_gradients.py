"""Diffusion-map gradients: validated against BrainSpace on its own HCP data, plus unit tests.

BrainSpace (installed with ``pip install --no-deps brainspace==0.3.0`` by the Makefile, so without
its VTK dependency) provides the real data, the HCP Schaefer-400 group FC it ships, and the reference
``GradientMaps`` output. Without it these tests skip locally and fail under CI.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from brainjepa.errors import InputError
from brainjepa.group.gradients import (
    diffusion_map_gradients,
    eigenvalues_path,
    load_fc,
    normalized_angle_affinity,
    procrustes_align,
    read_gradients,
    run_gradients,
    sparsify_rows,
    write_gradients,
)

HCP_FC = "datasets/matrices/main_group/schaefer_400_mean_connectivity_matrix.csv"
# exact dense solve; BrainSpace's ARPACK result (random_state=0) is 0.071830, 0.070695, 0.049178
EXPECTED_LAMBDAS = [0.07185, 0.07076, 0.04920]


def _brainspace():
    try:
        import brainspace.gradient as bs_gradient
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"brainspace not importable under CI ({exc}); the Makefile installs it with --no-deps")
        pytest.skip(f"brainspace not installed ({exc})")
    return bs_gradient


@pytest.fixture(scope="module")
def hcp_fc() -> np.ndarray:
    """BrainSpace's HCP Schaefer-400 group FC [400, 400], read from the package data (no VTK needed)."""
    _brainspace()
    from importlib.resources import files

    return np.loadtxt(files("brainspace") / HCP_FC, delimiter=",")


@pytest.fixture(scope="module")
def hcp_result(hcp_fc) -> tuple[np.ndarray, np.ndarray]:
    return diffusion_map_gradients(hcp_fc, n_components=10)


def canonical_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Canonical correlations between the column spaces of a [R, k] and b [R, k] (QR + SVD)."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    return np.linalg.svd(qa.T @ qb, compute_uv=False)


def synthetic_fc(n_rois: int = 60, seed: int = 0) -> np.ndarray:
    """A correlation matrix [R, R] with three blocks of shared signal, so the gradients are non-trivial."""
    rng = np.random.default_rng(seed)
    t = 300
    shared = rng.normal(size=(3, t))
    weights = rng.uniform(0.2, 1.5, size=n_rois)
    ts = rng.normal(size=(n_rois, t)) + weights[:, None] * shared[np.arange(n_rois) % 3]
    return np.corrcoef(ts)


def diffusion_degree(fc: np.ndarray) -> np.ndarray:
    """Degrees [R] of the alpha=0.5 normalised affinity, the weights of the eigenvectors' inner product."""
    a = normalized_angle_affinity(sparsify_rows(fc))
    d = a.sum(axis=1)
    return (a / np.sqrt(np.outer(d, d))).sum(axis=1)


# ------------------------------------------------------------------------------------- BrainSpace, real data
def test_hcp_eigenvalues(hcp_result):
    _, eigenvalues = hcp_result
    np.testing.assert_allclose(eigenvalues[:3], EXPECTED_LAMBDAS, atol=1e-4)


@pytest.mark.parametrize("n_components", [3, 10])
def test_hcp_span_matches_brainspace(hcp_fc, hcp_result, n_components):
    gm = _brainspace().GradientMaps(n_components=n_components, approach="dm", kernel="normalized_angle",
                                    random_state=0).fit(hcp_fc)
    ours = hcp_result[0][:, :3]
    corr = canonical_correlations(ours, gm.gradients_[:, :3])
    assert corr.min() >= 0.999, corr
    # BrainSpace's inexact solver shifts the eigenvalues only slightly
    np.testing.assert_allclose(hcp_result[1][:3], gm.lambdas_[:3], rtol=0.03)


def test_hcp_sparsify_and_affinity_match_brainspace(hcp_fc):
    from brainspace.gradient.kernels import compute_affinity

    kept = sparsify_rows(hcp_fc)
    assert np.array_equal(kept, compute_affinity(hcp_fc, kernel=None, sparsity=0.9))
    assert (np.count_nonzero(kept, axis=1) == 39).all()
    ours = normalized_angle_affinity(kept)
    theirs = compute_affinity(hcp_fc, kernel="normalized_angle", sparsity=0.9)
    # only the diagonal differs: BrainSpace's arccos turns cos = 1 - 1e-16 into 1 - 1e-8
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------------------------ units
@pytest.mark.parametrize(("n_cols", "kept"), [(400, 39), (450, 44), (100, 9), (60, 5)])
def test_sparsify_keeps_brainspace_count_of_largest(n_cols, kept):
    x = np.random.default_rng(1).normal(size=(7, n_cols))
    out = sparsify_rows(x)
    assert (np.count_nonzero(out, axis=1) == kept).all()
    for row, full in zip(out, x):
        np.testing.assert_array_equal(np.sort(row[row != 0]), np.sort(full)[-kept:])


def test_sparsify_zero_keeps_all():
    x = synthetic_fc(20)
    np.testing.assert_array_equal(sparsify_rows(x, sparsity=0.0), x)


def test_affinity_symmetric_unit_interval_unit_diagonal():
    a = normalized_angle_affinity(sparsify_rows(synthetic_fc()))
    np.testing.assert_array_equal(a, a.T)
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(np.diag(a), 1.0)


def test_affinity_values_orthogonal_and_opposite():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    a = normalized_angle_affinity(x)
    np.testing.assert_allclose(a, [[1, 0.5, 0], [0.5, 1, 0.5], [0, 0.5, 1]], atol=1e-15)


def test_gradients_shape_orthogonality_scaling():
    fc = synthetic_fc()
    g, lam = diffusion_map_gradients(fc, n_components=8)
    assert g.shape == (60, 8) and lam.shape == (8,)
    gram = g.T @ (g * diffusion_degree(fc)[:, None])
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-12 * np.abs(np.diag(gram)).max()
    # unit-RMS components scaled by the rescaled eigenvalues, D-orthogonal to the constant vector
    np.testing.assert_allclose(np.sqrt((g ** 2).mean(axis=0)), lam, rtol=1e-10)
    np.testing.assert_allclose(diffusion_degree(fc) @ g, 0, atol=1e-12)


def test_eigenvalues_descending_positive():
    _, lam = diffusion_map_gradients(synthetic_fc(), n_components=20)
    assert (np.diff(lam) <= 0).all() and (lam > 0).all()


def test_sign_rule_largest_magnitude_positive():
    for seed in range(4):
        g, _ = diffusion_map_gradients(synthetic_fc(seed=seed), n_components=6)
        assert (g[np.abs(g).argmax(axis=0), np.arange(6)] > 0).all()


def test_leading_components_independent_of_n_components():
    fc = synthetic_fc()
    g3, lam3 = diffusion_map_gradients(fc, n_components=3)
    g10, lam10 = diffusion_map_gradients(fc, n_components=10)
    np.testing.assert_allclose(g10[:, :3], g3, atol=1e-12)
    np.testing.assert_allclose(lam10[:3], lam3, rtol=1e-12)


def test_n_components_too_large():
    with pytest.raises(ValueError, match="n_components"):
        diffusion_map_gradients(synthetic_fc(10), n_components=10)


def test_procrustes_recovers_rotation():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(50, 4))
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    aligned = procrustes_align(reference @ rotation, reference)
    np.testing.assert_allclose(aligned, reference, atol=1e-12)


# ------------------------------------------------------------------------------------------------ files
def test_write_read_round_trip(tmp_path):
    g, lam = diffusion_map_gradients(synthetic_fc(), n_components=5)
    names = [f"ROI_{i}" for i in range(60)]
    out = tmp_path / "group" / "gradients.tsv"
    write_gradients(g, lam, names, out)
    read_names, read_g = read_gradients(out)
    assert read_names == names
    np.testing.assert_allclose(read_g, g, rtol=1e-9, atol=1e-15)
    values = pd.read_csv(eigenvalues_path(out), sep="\t")
    assert eigenvalues_path(out).name == "gradients_eigenvalues.tsv"
    assert list(values.columns) == ["component", "eigenvalue"]
    assert list(values["component"]) == ["g1", "g2", "g3", "g4", "g5"]
    np.testing.assert_allclose(values["eigenvalue"], lam, rtol=1e-9)
    assert sorted(p.name for p in out.parent.iterdir()) == ["gradients.tsv", "gradients_eigenvalues.tsv"]


def test_read_gradients_rejects_bad_columns_and_values(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("name\tg1\tg3\nA\t1\t2\n")
    with pytest.raises(InputError, match="bad.tsv.*columns"):
        read_gradients(path)
    path.write_text("name\tg1\nA\t1\nB\tn/a\n")
    with pytest.raises(InputError, match="bad.tsv.*'B'"):
        read_gradients(path)


def test_run_gradients_with_labels_and_reference(tmp_path):
    fc = synthetic_fc()
    np.save(tmp_path / "fc.npy", fc)
    labels = tmp_path / "labels.tsv"
    pd.DataFrame({"index": range(1, 61), "name": [f"R{i}" for i in range(60)], "network": "x"}).to_csv(
        labels, sep="\t", index=False)
    g, lam = diffusion_map_gradients(fc, n_components=4)
    rotation, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(4, 4)))
    reference = tmp_path / "reference.tsv"
    write_gradients(np.hstack([g @ rotation, np.ones((60, 1))]), np.r_[lam, 0.0], [f"R{i}" for i in range(60)],
                    reference)
    out = tmp_path / "out.tsv"
    run_gradients(tmp_path / "fc.npy", out, n_components=4, labels_path=labels, reference_path=reference)
    names, aligned = read_gradients(out)
    assert names[:2] == ["R0", "R1"]
    np.testing.assert_allclose(aligned, g @ rotation, atol=1e-8)


def test_run_gradients_default_names_csv(tmp_path):
    fc_path = tmp_path / "fc.csv"
    np.savetxt(fc_path, synthetic_fc(30), delimiter=",")
    run_gradients(fc_path, tmp_path / "g.tsv", n_components=3)
    names, g = read_gradients(tmp_path / "g.tsv")
    assert names[0] == "roi_1" and names[-1] == "roi_30" and g.shape == (30, 3)


# ------------------------------------------------------------------------------------------- bad input
def test_load_fc_tsv(tmp_path):
    fc = synthetic_fc(12)
    path = tmp_path / "fc.tsv"
    np.savetxt(path, fc, delimiter="\t")
    np.testing.assert_allclose(load_fc(path), fc, rtol=1e-15)


def test_load_fc_not_square(tmp_path):
    path = tmp_path / "rect.npy"
    np.save(path, np.zeros((4, 5)))
    with pytest.raises(InputError, match=r"rect\.npy.*square.*\(4, 5\)"):
        load_fc(path)


def test_load_fc_not_symmetric(tmp_path):
    fc = synthetic_fc(12)
    fc[2, 7] += 0.01
    path = tmp_path / "asym.csv"
    np.savetxt(path, fc, delimiter=",")
    with pytest.raises(InputError, match=r"asym\.csv.*not symmetric.*\[(2, 7|7, 2)\]"):
        load_fc(path)


def test_load_fc_nan(tmp_path):
    fc = synthetic_fc(12)
    fc[3, 5] = fc[5, 3] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, fc)
    with pytest.raises(InputError, match=r"nan\.npy.*2 NaN/Inf.*row 3, column 5"):
        load_fc(path)


def test_load_fc_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"missing\.npy.*not found"):
        load_fc(tmp_path / "missing.npy")


def test_load_fc_unreadable(tmp_path):
    path = tmp_path / "junk.csv"
    path.write_text("a,b\nc,d\n")
    with pytest.raises(InputError, match=r"junk\.csv.*cannot read"):
        load_fc(path)


def test_label_count_mismatch(tmp_path):
    np.save(tmp_path / "fc.npy", synthetic_fc(20))
    labels = tmp_path / "labels.tsv"
    pd.DataFrame({"index": range(1, 20), "name": [f"R{i}" for i in range(19)]}).to_csv(labels, sep="\t", index=False)
    with pytest.raises(InputError, match=r"labels\.tsv.*19 labels.*fc\.npy.*20 ROIs"):
        run_gradients(tmp_path / "fc.npy", tmp_path / "out.tsv", n_components=3, labels_path=labels)
    assert not (tmp_path / "out.tsv").exists()


def test_reference_names_mismatch(tmp_path):
    fc = synthetic_fc(20)
    np.save(tmp_path / "fc.npy", fc)
    g, lam = diffusion_map_gradients(fc, n_components=3)
    write_gradients(g, lam, [f"other_{i}" for i in range(20)], tmp_path / "ref.tsv")
    with pytest.raises(InputError, match=r"ref\.tsv.*names"):
        run_gradients(tmp_path / "fc.npy", tmp_path / "out.tsv", n_components=3, reference_path=tmp_path / "ref.tsv")
