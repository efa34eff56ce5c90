"""Parcellation: equivalence with nilearn on the real atlas, QC, policies, output format, bad input."""

from __future__ import annotations

import gzip
import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import FSL_2MM, save_bold

from brainjepa.errors import InputError
from brainjepa.io import read_timeseries
from brainjepa.preprocess.parcellate import Atlas, parcellate_bold, run_parcellate


def nilearn_means(atlas_image, bold, mask=None):
    from nilearn.maskers import NiftiLabelsMasker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiLabelsMasker(str(atlas_image), mask_img=mask, strategy="mean", resampling_target="data")
        return masker.fit_transform(str(bold))


@pytest.mark.real_atlas
@pytest.mark.parametrize("grid", ["2mm", "3mm"])
def test_equals_nilearn_on_real_atlas(tmp_path, real_atlas, grid):
    image, labels = real_atlas
    if grid == "2mm":
        affine, shape = FSL_2MM, (91, 109, 91)
    else:  # a coarser grid: the atlas is resampled with nearest neighbour, as nilearn does
        affine, shape = np.array([[-3.0, 0, 0, 90], [0, 3, 0, -126], [0, 0, 3, -72], [0, 0, 0, 1]]), (61, 73, 61)
    rng = np.random.default_rng(1)
    data = (800 + 40 * rng.standard_normal(shape + (9,))).astype(np.float32)
    bold = save_bold(tmp_path / f"sub-1_space-MNI152NLin6Asym_res-{grid}_bold.nii.gz", data, affine, tr=0.735)
    ts, qc, meta = parcellate_bold(bold, Atlas.load(image, labels))
    ref = nilearn_means(image, bold)
    assert ts.shape == ref.shape == (9, 450)
    assert (qc["flag"] == "ok").all()
    np.testing.assert_allclose(ts, ref, rtol=1e-5)
    assert meta["tr"] == pytest.approx(0.735)


@pytest.mark.real_atlas
def test_equals_nilearn_with_mask_and_scaled_int16(tmp_path, real_atlas):
    image, labels = real_atlas
    rng = np.random.default_rng(2)
    raw = rng.integers(1000, 3000, size=(91, 109, 91, 5)).astype(np.int16)
    img = nib.Nifti1Image(raw, FSL_2MM)
    img.header.set_slope_inter(0.5, 10.0)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    bold = tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz"
    nib.save(img, bold)
    mask_data = np.zeros((91, 109, 91), dtype=np.uint8)
    mask_data[:, :60, :] = 1  # posterior half only: some ROIs lose voxels, none vanishes completely
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask_data, FSL_2MM), mask)
    atlas = Atlas.load(image, labels)
    ts, qc, _ = parcellate_bold(bold, atlas, mask=mask, empty_roi="zero")
    ok = (qc["flag"] == "ok").to_numpy()
    ref = nilearn_means(image, bold, mask=str(mask))
    assert ref.shape[1] == ok.sum()  # nilearn drops the ROIs that the mask empties; we flag them
    np.testing.assert_allclose(ts[:, ok], ref, rtol=1e-5)
    assert (ts[:, ~ok] == 0).all()
    assert set(qc.loc[~ok, "flag"]) == {"empty"}


def test_output_format(tmp_path, small_atlas, small_bold):
    image, labels = small_atlas
    out, qc_out = tmp_path / "out" / "ts.parquet", tmp_path / "out" / "qc.tsv"
    run_parcellate(out, image, labels, bold=small_bold, qc_out=qc_out)
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["A_1", "B_2", "C_3", "D_4"]
    assert frame.shape == (20, 4) and (frame.dtypes == np.float32).all()
    _, meta = read_timeseries(out)
    assert meta["tr"] == pytest.approx(0.8) and meta["tr_source"] == "sidecar"
    assert meta["source"].endswith("_bold.nii.gz") and meta["atlas_id"] and meta["pipeline_version"]
    qc = pd.read_csv(qc_out, sep="\t")
    assert list(qc.columns) == ["roi", "n_voxels", "frac_signal", "tsnr", "flag"]
    assert (qc["n_voxels"] == 80).all() and (qc["frac_signal"] == 1).all()
    assert qc["tsnr"].between(100, 1000).all()  # mean 500 / std(mean of 80 voxels of sd 10) ~ 450


def test_without_label_table_columns_are_label_values(tmp_path, small_atlas, small_bold):
    out = tmp_path / "ts.parquet"
    run_parcellate(out, small_atlas[0], None, bold=small_bold)
    assert list(pd.read_parquet(out).columns) == ["1", "2", "3", "4"]


def test_volume_chunks(small_atlas, small_bold):
    """Streaming: the image is read a chunk at a time (never the whole 4-D array)."""
    from brainjepa.preprocess import parcellate as P

    info = P.read_bold_header(small_bold)
    chunks = list(P.iter_volume_chunks(info, chunk=3))
    assert [len(c) for _, c in chunks] == [3] * 6 + [2]
    assert chunks[0][1].shape == (3, 10 * 12 * 10)


def test_peak_memory_does_not_grow_with_run_length(tmp_path, small_atlas):
    """Python-heap peak (tracemalloc, numpy included) of parcellating 40 vs 1200 volumes of the same grid."""
    import tracemalloc

    from brainjepa.preprocess.parcellate import Atlas, parcellate_bold

    atlas = Atlas.load(*small_atlas)
    rng = np.random.default_rng(1)
    peaks = {}
    for n in (40, 1200):
        data = (500 + rng.normal(0, 10, size=(10, 12, 10, n))).astype(np.float32)
        path = save_bold(tmp_path / f"n{n}" / "sub-01_space-MNI152NLin6Asym_bold.nii.gz", data, FSL_2MM, tr=2.0)
        del data
        parcellate_bold(path, atlas)  # warm the atlas's operator cache
        tracemalloc.start()
        parcellate_bold(path, atlas)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    whole_image = 10 * 12 * 10 * 1200 * 4  # bytes of the 1200-volume float32 array: 5.8 MB
    # measured here: 0.78 MB at 40 volumes, 0.79 MB at 400 (reading the whole 400-volume image: 4.0 MB)
    assert peaks[1200] < whole_image / 4 and peaks[1200] < 1.5 * peaks[40], peaks


def test_empty_roi_policy(tmp_path, small_atlas):
    image, labels = small_atlas
    rng = np.random.default_rng(0)
    data = (500 + rng.normal(0, 10, size=(10, 12, 10, 6))).astype(np.float32)
    data[5:9, 1:6, 1:5, :] = 0.0  # ROI B_2 masked out by the preprocessing: no signal
    bold = save_bold(tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz", data, FSL_2MM)
    out = tmp_path / "ts.parquet"
    with pytest.raises(InputError, match=r"B_2 \(no_signal\)"):
        run_parcellate(out, image, labels, bold=bold)
    assert not out.exists()
    run_parcellate(out, image, labels, bold=bold, qc_out=tmp_path / "qc.tsv", empty_roi="zero")
    assert (pd.read_parquet(out)["B_2"] == 0).all()
    qc = pd.read_csv(tmp_path / "qc.tsv", sep="\t")
    assert qc.set_index("roi").loc["B_2", "flag"] == "no_signal"


@pytest.mark.parametrize("suffix,sep,header", [(".tsv", "\t", True), (".csv", ",", False)])
def test_timeseries_input_delimited(tmp_path, small_atlas, suffix, sep, header):
    image, labels = small_atlas
    data = np.random.default_rng(0).normal(size=(30, 4))
    frame = pd.DataFrame(data, columns=["D_4", "C_3", "B_2", "A_1"])  # named columns are matched by name
    path = tmp_path / f"ts{suffix}"
    frame.to_csv(path, sep=sep, index=False, header=header)
    out = tmp_path / "out.parquet"
    run_parcellate(out, image, labels, timeseries=path, tr=2.0, unnamed_columns="error" if header else "label_order")
    got = pd.read_parquet(out)
    expected = frame[["A_1", "B_2", "C_3", "D_4"]].to_numpy() if header else data
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-6)


def test_timeseries_input_npy_and_parquet(tmp_path, small_atlas):
    image, labels = small_atlas
    data = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    np.save(tmp_path / "ts.npy", data)
    run_parcellate(tmp_path / "a.parquet", image, labels, timeseries=tmp_path / "ts.npy", tr=0.72,
                   unnamed_columns="label_order")
    # a brainjepa Parquet carries its TR: no sheet TR needed
    run_parcellate(tmp_path / "b.parquet", image, labels, timeseries=tmp_path / "a.parquet")
    frame, meta = read_timeseries(tmp_path / "b.parquet")
    np.testing.assert_array_equal(frame.to_numpy(), data)
    assert meta["tr"] == pytest.approx(0.72)


# ------------------------------------------------------------------------------------------- bad input
def _assert_fails_cleanly(tmp_path, match, **kwargs):
    out = tmp_path / "out" / "ts.parquet"
    with pytest.raises(InputError, match=match) as info:
        run_parcellate(out, qc_out=tmp_path / "out" / "qc.tsv", **kwargs)
    assert not out.exists() and not (tmp_path / "out" / "qc.tsv").exists()
    leftovers = list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else []
    assert leftovers == [], leftovers
    return str(info.value)


def test_bad_truncated_gzip(tmp_path, small_atlas, small_bold):
    raw = small_bold.read_bytes()
    bad = tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    msg = _assert_fails_cleanly(tmp_path, "truncated|corrupt", atlas_path=small_atlas[0], labels=small_atlas[1],
                                bold=bad, tr=2.0)
    assert str(bad) in msg


def test_threaded_inflation_gives_the_same_means_and_errors(tmp_path, small_atlas, small_bold, monkeypatch):
    """Large .nii.gz files are inflated in a background thread: same result, same truncation error."""
    from brainjepa.preprocess import parcellate as P

    atlas = P.Atlas.load(*small_atlas)
    inline, _, _ = P.parcellate_bold(small_bold, atlas)
    monkeypatch.setattr(P, "THREADED_MIN_BYTES", 0)
    opened = []
    real_open = P._gzip_threaded.open
    monkeypatch.setattr(P._gzip_threaded, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    threaded, _, _ = P.parcellate_bold(small_bold, atlas)
    assert opened == [small_bold]
    np.testing.assert_array_equal(threaded, inline)
    raw = small_bold.read_bytes()
    bad = tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    msg = _assert_fails_cleanly(tmp_path, "truncated|corrupt", atlas_path=small_atlas[0], labels=small_atlas[1],
                                bold=bad, tr=2.0)
    assert str(bad) in msg and len(opened) == 2


def test_bad_truncated_uncompressed(tmp_path, small_atlas, small_bold):
    img = nib.load(small_bold)
    nii = tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), nii)
    nii.write_bytes(nii.read_bytes()[:-5000])
    msg = _assert_fails_cleanly(tmp_path, "truncated", atlas_path=small_atlas[0], labels=small_atlas[1], bold=nii,
                                tr=2.0)
    assert "promises 20 volumes" in msg


def test_bad_corrupt_gzip(tmp_path, small_atlas):
    bad = tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz"
    bad.write_bytes(gzip.compress(b"\x00" * 100)[:20] + b"this is not a gzip stream" * 50)
    msg = _assert_fails_cleanly(tmp_path, "not a readable NIfTI|corrupt", atlas_path=small_atlas[0], bold=bad,
                                tr=2.0)
    assert str(bad) in msg


def test_bad_3d_image(tmp_path, small_atlas):
    path = tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 12, 10), np.float32), FSL_2MM), path)
    _assert_fails_cleanly(tmp_path, "must be 4-D", atlas_path=small_atlas[0], bold=path, tr=2.0)


def test_bad_other_space_entity(tmp_path, small_atlas, small_bold):
    other = tmp_path / "sub-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    other.write_bytes(small_bold.read_bytes())
    msg = _assert_fails_cleanly(tmp_path, "space 'MNI152NLin2009cAsym' but the atlas is in 'MNI152NLin6Asym'",
                                atlas_path=small_atlas[0], bold=other, tr=2.0)
    assert str(other) in msg


def test_bad_field_of_view(tmp_path, small_atlas):
    far = FSL_2MM.copy()
    far[:3, 3] += 500.0  # 50 cm away: no overlap with the atlas
    path = save_bold(tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz",
                     np.ones((10, 12, 10, 4), np.float32), far)
    _assert_fails_cleanly(tmp_path, "field of view covers 0%", atlas_path=small_atlas[0], bold=path)


def test_bad_oblique_affine(tmp_path, small_atlas):
    angle = 0.2
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = FSL_2MM.copy()
    affine[:3, :3] = rot @ affine[:3, :3]
    path = save_bold(tmp_path / "sub-1_bold.nii.gz", np.ones((10, 12, 10, 4), np.float32), affine)
    _assert_fails_cleanly(tmp_path, "oblique", atlas_path=small_atlas[0], bold=path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_bad_non_finite_voxels(tmp_path, small_atlas, value):
    data = np.full((10, 12, 10, 12), 100.0, np.float32) + np.arange(12, dtype=np.float32)
    data[3, 3, 3, 10] = value
    path = save_bold(tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz", data, FSL_2MM)
    msg = _assert_fails_cleanly(tmp_path, "NaN/Inf", atlas_path=small_atlas[0], bold=path)
    assert "time points 9-12 (first at time point 11, voxel (3, 3, 3) counted from 0)" in msg, msg


def test_bad_no_tr(tmp_path, small_atlas):
    path = save_bold(tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz",
                     np.ones((10, 12, 10, 4), np.float32), FSL_2MM, tr=None)
    msg = _assert_fails_cleanly(tmp_path, "no trustworthy TR", atlas_path=small_atlas[0], bold=path)
    assert str(path) in msg


def test_bad_sidecar_tr(tmp_path, small_atlas, small_bold):
    small_bold.with_name(small_bold.name.replace(".nii.gz", ".json")).write_text(json.dumps({"RepetitionTime": 0}))
    _assert_fails_cleanly(tmp_path, "RepetitionTime 0 is not a positive", atlas_path=small_atlas[0], bold=small_bold)


def test_bad_timeseries_columns(tmp_path, small_atlas):
    path = tmp_path / "ts.tsv"
    pd.DataFrame(np.zeros((10, 3))).to_csv(path, sep="\t", index=False, header=False)
    msg = _assert_fails_cleanly(tmp_path, "3 columns, but the atlas has 4 ROIs", atlas_path=small_atlas[0],
                                labels=small_atlas[1], timeseries=path, tr=2.0)
    assert str(path) in msg


def test_unnamed_columns_are_refused_unless_declared(tmp_path, small_atlas):
    """A .npy, a header-less file and a numbered header (DataFrame.to_csv(index=False)) carry no ROI names: refused
    with a message saying how to declare the order; declared, they are read in label-table order, and a numbered
    header is a header, not a time point."""
    image, labels = small_atlas
    data = np.random.default_rng(0).normal(100, 1, size=(20, 4))
    np.save(tmp_path / "ts.npy", data)
    pd.DataFrame(data).to_csv(tmp_path / "numbered.tsv", sep="\t", index=False)          # header 0 1 2 3
    pd.DataFrame(data).to_csv(tmp_path / "bare.csv", index=False, header=False)
    pq_path = tmp_path / "numbered.parquet"
    pd.DataFrame(data, columns=[str(i) for i in range(4)]).to_parquet(pq_path)
    for path in (tmp_path / "ts.npy", tmp_path / "numbered.tsv", tmp_path / "bare.csv", pq_path):
        msg = _assert_fails_cleanly(tmp_path, "have no ROI names", atlas_path=image, labels=labels, timeseries=path,
                                    tr=2.0)
        assert str(path) in msg and "unnamed_columns: label_order" in msg
        out = tmp_path / f"{path.stem}-{path.suffix[1:]}.parquet"
        run_parcellate(out, image, labels, timeseries=path, tr=2.0, unnamed_columns="label_order")
        got = pd.read_parquet(out)
        assert got.shape == (20, 4) and list(got.columns) == ["A_1", "B_2", "C_3", "D_4"]
        np.testing.assert_allclose(got.to_numpy(), data, rtol=1e-6)


def test_a_header_with_wrong_roi_names_is_an_error_listing_them(tmp_path, small_atlas):
    """One misspelt name among shuffled columns: never a fallback to file order."""
    path = tmp_path / "ts.tsv"
    pd.DataFrame(np.ones((10, 4)) + np.arange(4), columns=["D_4", "C_3", "B_2", "A_l"]).to_csv(path, sep="\t",
                                                                                               index=False)
    msg = _assert_fails_cleanly(tmp_path, "not the atlas label table's", atlas_path=small_atlas[0],
                                labels=small_atlas[1], timeseries=path, tr=2.0, unnamed_columns="label_order")
    assert "1 unknown ['A_l']" in msg and "1 missing ['A_1']" in msg and str(path) in msg
    pd.DataFrame(np.ones((0, 4)), columns=["A_1", "B_2", "C_3", "D_4"]).to_csv(path, sep="\t", index=False)
    _assert_fails_cleanly(tmp_path, "no time points", atlas_path=small_atlas[0], labels=small_atlas[1],
                          timeseries=path, tr=2.0)


def test_bad_missing_files(tmp_path, small_atlas):
    _assert_fails_cleanly(tmp_path, "does not exist", atlas_path=small_atlas[0], bold=tmp_path / "nope_bold.nii.gz")
    _assert_fails_cleanly(tmp_path, "does not exist", atlas_path=small_atlas[0], timeseries=tmp_path / "nope.tsv",
                          tr=2.0)


def test_cli_bad_input_exits_1_with_message(tmp_path, small_atlas, capsys):
    from brainjepa.cli import main

    out = tmp_path / "ts.parquet"
    code = main(["parcellate", "--bold", str(tmp_path / "absent_bold.nii.gz"), "--atlas", str(small_atlas[0]),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "absent_bold.nii.gz: BOLD file does not exist" in err and "Traceback" not in err
    assert not out.exists()


def test_axis_permuted_grid_is_not_oblique(tmp_path, small_atlas):
    """A grid stored with swapped axes is still a standard-space grid (not an error)."""
    from brainjepa.preprocess.parcellate import check_space, read_bold_header

    affine = np.array([[0, -2.0, 0, 90], [2, 0, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    path = save_bold(tmp_path / "sub-1_space-MNI152NLin6Asym_bold.nii.gz", np.ones((12, 10, 10, 3), np.float32),
                     affine)
    atlas = Atlas.load(*small_atlas)
    check_space(read_bold_header(path), atlas.image, atlas.space)


def test_cli_batch_form_parcellates_a_sheets_runs(tmp_path, small_atlas, small_bold, capsys):
    """`parcellate --samples`: many runs of a sheet in one call, outputs under --out-root, errors naming the run."""
    from brainjepa.cli import main

    image, labels = small_atlas
    np.save(tmp_path / "ts.npy", np.random.default_rng(0).normal(100, 1, size=(30, 4)).astype(np.float32))
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("cohort\tsubject\tsession\trun\tbold\ttimeseries\ttr\n"
                     f"A\t1\t1\t1\t{small_bold}\t\t\nA\t2\t1\t1\t\t{tmp_path / 'ts.npy'}\t0.8\n"
                     f"B\t3\t1\t1\t{tmp_path / 'absent_bold.nii.gz'}\t\t\n")
    common = ["parcellate", "--samples", str(sheet), "--atlas", str(image), "--labels", str(labels),
              "--out-root", str(tmp_path / "out"), "--unnamed-columns", "label_order"]
    assert main([*common, "--runs", "A/sub-1_ses-1_run-1", "A/sub-2_ses-1_run-1"]) == 0
    for run, n in (("A/sub-1_ses-1_run-1", 20), ("A/sub-2_ses-1_run-1", 30)):
        frame, meta = read_timeseries(tmp_path / "out" / f"{run}.parquet")
        assert frame.shape == (n, 4) and meta["tr"] == pytest.approx(0.8)
        assert len(pd.read_csv(tmp_path / "out" / f"{run}_qc.tsv", sep="\t")) == 4
    assert not (tmp_path / "out" / "B").exists()
    capsys.readouterr()
    assert main(common) == 1  # every run of the sheet: the third fails, named
    assert "run B/sub-3_ses-1_run-1: " in capsys.readouterr().err
    assert main([*common, "--runs", "C/sub-9_ses-1_run-1"]) == 1
    assert "no row for run C/sub-9_ses-1_run-1" in capsys.readouterr().err
    assert main([*common, "--tr", "2"]) == 1 and "drop --tr" in capsys.readouterr().err
    assert main(common[:-2] + ["--out", str(tmp_path / "x.parquet")]) == 1
    assert "drop --out" in capsys.readouterr().err


def test_the_public_uk_biobank_layout_is_read_by_roi_name(tmp_path, small_atlas):
    """A subject folder with fMRI.Schaefer17n*p.csv.gz (cortical) and fMRI.Tian_Subcortex_*_3T.csv.gz (subcortical),
    ROI x time with a label_name column, listed in the sheet's timeseries column: combined in the atlas's order."""
    image, labels = small_atlas
    names = pd.read_csv(labels, sep="\t")["name"].tolist()
    rng = np.random.default_rng(0)
    data = rng.normal(100, 1, size=(30, 4))
    folder = tmp_path / "time_series" / "1000001"
    folder.mkdir(parents=True)
    for file, cols in (("fMRI.Schaefer17n400p.csv.gz", [3, 0]), ("fMRI.Tian_Subcortex_S3_3T.csv.gz", [2, 1])):
        block = pd.DataFrame(data[:, cols].T, columns=[str(t) for t in range(30)])
        block.insert(0, "label_name", [names[c] for c in cols])
        block.to_csv(folder / file, index=False)
    out = tmp_path / "ukb.parquet"
    run_parcellate(out, image, labels, timeseries=folder, tr=0.735)
    got = pd.read_parquet(out)
    assert list(got.columns) == names
    np.testing.assert_allclose(got.to_numpy(), data, rtol=1e-6)
    (folder / "fMRI.Tian_Subcortex_S3_3T.csv.gz").unlink()
    msg = _assert_fails_cleanly(tmp_path, "expected one fMRI.Tian_Subcortex", atlas_path=image, labels=labels,
                                timeseries=folder, tr=0.735)
    assert str(folder) in msg


def test_a_label_table_alone_parcellates_time_series_and_refuses_nifti(tmp_path, small_atlas, small_bold):
    _, labels = small_atlas
    path = tmp_path / "ts.tsv"
    data = np.random.default_rng(0).normal(100, 1, size=(20, 4))
    pd.DataFrame(data, columns=["A_1", "B_2", "C_3", "D_4"]).to_csv(path, sep="\t", index=False)
    run_parcellate(tmp_path / "a.parquet", None, labels, timeseries=path, tr=2.0)
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "a.parquet").to_numpy(), data, rtol=1e-6)
    _assert_fails_cleanly(tmp_path, "needs an atlas image, but the atlas is a label table only", atlas_path=None,
                          labels=labels, bold=small_bold)


# ------------------------------------------------------------------------------------------- TR bound
def test_cli_refuses_a_header_tr_in_milliseconds_labelled_seconds(tmp_path, small_atlas, capsys):
    """pixdim[4] = 2000 with time unit 'sec' was taken as a 2000 s TR (exit 0, align-tr then made 200,000 points)."""
    from brainjepa.cli import main

    data = (500 + np.random.default_rng(0).normal(0, 10, size=(10, 12, 10, 6))).astype(np.float32)
    bold = save_bold(tmp_path / "sub-01_space-MNI152NLin6Asym_bold.nii.gz", data, FSL_2MM, tr=2000)
    out = tmp_path / "ts.parquet"
    args = ["parcellate", "--bold", str(bold), "--atlas", str(small_atlas[0]), "--labels", str(small_atlas[1]),
            "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{bold}: TR 2000 s from the NIfTI header pixdim[4]" in err and "looks like milliseconds: 2 s?" in err
    assert not out.exists()
    assert main(args + ["--tr", "1e6"]) == 1
    err = capsys.readouterr().err
    assert "TR 1000000 s from --tr (the sample sheet)" in err and "at most 30 s" in err and not out.exists()
    assert main(args + ["--tr", "2"]) == 0 and read_timeseries(out)[1]["tr"] == 2.0


def test_a_time_series_tr_is_bounded_whatever_its_source(tmp_path, small_atlas):
    """The TR a brainjepa Parquet carries in its metadata, and a sheet TR for a text file, are bounded like a
    NIfTI's."""
    from brainjepa.io import write_timeseries

    image, labels = small_atlas
    data = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    src = tmp_path / "ms.parquet"
    write_timeseries(data, ["A_1", "B_2", "C_3", "D_4"], src, {"tr": 720.0})
    msg = _assert_fails_cleanly(tmp_path, "time-series metadata 'tr'", atlas_path=image, labels=labels,
                                timeseries=src)
    assert msg.startswith(f"{src}: TR 720 s") and "720 looks like milliseconds: 0.72 s?" in msg
    run_parcellate(tmp_path / "ok.parquet", image, labels, timeseries=src, tr=0.72)   # the sheet's TR wins
    assert read_timeseries(tmp_path / "ok.parquet")[1]["tr_source"] == "sheet"
    tsv = tmp_path / "ts.tsv"
    pd.DataFrame(data, columns=["A_1", "B_2", "C_3", "D_4"]).to_csv(tsv, sep="\t", index=False)
    _assert_fails_cleanly(tmp_path, r"TR 1000000 s from --tr \(the sample sheet\)", atlas_path=image, labels=labels,
                          timeseries=tsv, tr=1e6)


# ------------------------------------------------------------------------------------------- time points
def test_time_points_are_numbered_from_1_and_text_files_name_the_line(tmp_path, small_atlas):
    """One numbering in every message: 'time point' counts from 1 (the first volume or data row is time point 1);
    a text file's cell is also given by its file line (the header is line 1)."""
    image, labels = small_atlas
    header = "A_1\tB_2\tC_3\tD_4\n"
    rows = ["1\t2\t3\t4\n"] * 20
    for name, cell in (("nan.tsv", "nan"), ("empty_cell.tsv", "")):
        path = tmp_path / name
        path.write_text(header + "".join(rows[:15]) + f"1\t2\t3\t{cell}\n" + "".join(rows[16:]))
        msg = _assert_fails_cleanly(tmp_path, "time point", atlas_path=image, labels=labels, timeseries=path,
                                    tr=2.0)
        assert "time point 16 (line 17), ROI 'D_4'" in msg, msg
    data = np.ones((20, 4))
    data[15, 3] = np.inf
    np.save(tmp_path / "inf.npy", data)
    msg = _assert_fails_cleanly(tmp_path, "time point", atlas_path=image, labels=labels,
                                timeseries=tmp_path / "inf.npy", tr=2.0, unnamed_columns="label_order")
    assert msg == f"{tmp_path / 'inf.npy'}: non-finite value inf at time point 16, ROI 'D_4'"
    folder = tmp_path / "ukb"
    folder.mkdir()
    for file, rois in (("fMRI.Schaefer17n400p.csv.gz", ["C_3", "D_4"]), ("fMRI.Tian_Subcortex_S3_3T.csv.gz",
                                                                          ["A_1", "B_2"])):
        block = pd.DataFrame(np.ones((2, 20)), columns=[str(t) for t in range(20)]).astype(object)
        if file.startswith("fMRI.Schaefer"):
            block.iloc[1, 15] = "x"
        block.insert(0, "label_name", rois)
        block.to_csv(folder / file, index=False)
    msg = _assert_fails_cleanly(tmp_path, "non-numeric", atlas_path=image, labels=labels, timeseries=folder, tr=2.0)
    assert "non-numeric value 'x' for ROI 'D_4' at time point 16 (line 3, column 17)" in msg, msg
