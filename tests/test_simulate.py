"""Tests of the synthetic demo cohort (brainjepa.simulate)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from brainjepa import simulate as sim

TINY = sim.DemoCohort(
    "tiny", tr=1.5, n_volumes=40, n_subjects=3, sessions=2, age=(50.0, 70.0), diagnosis=True, mask=True
)
PLAIN = sim.DemoCohort("plain", tr=0.8, n_volumes=40, n_subjects=3)


def _data(path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _roi_means(bold: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROI mean time series [64, T] of a 4-D run, computed directly from the demo ROI labels."""
    return np.stack([bold[labels == roi].mean(axis=0) for roi in range(1, 65)])


def _simulate(root, cohorts, seed):
    samples, phenotypes = sim.make_demo_sheets(str(root), cohorts, seed)
    sim.simulate(samples, phenotypes, str(root), cohorts, seed)
    return samples, phenotypes


# --- cohorts and sheets ------------------------------------------------------------------------


def test_cohorts_from_spec_parses_and_rejects_unknown_keys():
    spec = {"ukbsim": {"tr": 0.735, "n_volumes": 490, "n_subjects": 40, "age": [45, 80], "mask": True},
            "adnisim": {"tr": 2.0, "n_volumes": 200, "n_subjects": 12, "sessions": 2, "diagnosis": True}}
    ukb, adni = sim.cohorts_from_spec(spec)
    assert ukb == sim.DemoCohort("ukbsim", 0.735, 490, 40, age=(45, 80), mask=True)
    assert adni.sessions == 2 and adni.diagnosis and not adni.mask
    with pytest.raises(ValueError, match="n_voxels"):
        sim.cohorts_from_spec({"x": {"tr": 2.0, "n_volumes": 50, "n_subjects": 2, "n_voxels": 3}})
    with pytest.raises(ValueError, match="n_subjects"):
        sim.cohorts_from_spec({"x": {"tr": 2.0, "n_volumes": 50}})
    with pytest.raises(ValueError, match="tr"):
        sim.cohorts_from_spec({"x": {"tr": -1, "n_volumes": 50, "n_subjects": 2}})
    with pytest.raises(ValueError, match="age"):
        sim.cohorts_from_spec({"x": {"tr": 1, "n_volumes": 50, "n_subjects": 2, "age": [80, 45]}})


def test_sheets_layout(tmp_path):
    root = str(tmp_path / "demo")
    samples, phenotypes = sim.make_demo_sheets(root, [TINY, PLAIN], seed=3)
    assert list(samples.columns) == ["cohort", "subject", "session", "run", "bold", "mask"]
    assert list(phenotypes.columns) == ["cohort", "subject", "age", "sex", "diagnosis"]
    assert len(samples) == 3 * 2 + 3 and not samples.duplicated(["cohort", "subject", "session", "run"]).any()
    assert set(samples.loc[samples.cohort == "tiny", "subject"]) == {"tiny0001", "tiny0002", "tiny0003"}
    assert set(samples["run"]) == {"1"}
    assert set(samples.loc[samples.cohort == "tiny", "session"]) == {"1", "2"}
    assert all(p.startswith(f"{root}/derivatives/") for p in samples["bold"])
    row = samples.iloc[0]
    assert row["bold"] == (f"{root}/derivatives/tiny/sub-tiny0001/ses-1/func/"
                           "sub-tiny0001_ses-1_task-rest_run-1_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz")
    assert row["mask"] == row["bold"].replace("desc-preproc_bold", "desc-brain_mask")
    assert (samples.loc[samples.cohort == "plain", "mask"] == "").all()
    assert len(phenotypes) == 6 and not phenotypes.duplicated(["cohort", "subject"]).any()
    assert phenotypes["sex"].isin(["F", "M"]).all()
    tiny = phenotypes[phenotypes.cohort == "tiny"]
    assert tiny["age"].between(50, 70).all() and np.allclose(tiny["age"], tiny["age"].round(1))
    assert set(tiny["diagnosis"]) <= {0, 1}
    assert phenotypes.loc[phenotypes.cohort == "plain", "diagnosis"].isna().all()


def test_sheets_are_deterministic_and_written_with_empty_na(tmp_path):
    a = sim.make_demo_sheets("r", [TINY, PLAIN], seed=5)
    b = sim.make_demo_sheets("r", [TINY, PLAIN], seed=5)
    pd.testing.assert_frame_equal(a[1], b[1])
    pd.testing.assert_frame_equal(a[0], b[0])
    assert not a[1].equals(sim.make_demo_sheets("r", [TINY, PLAIN], seed=6)[1])
    sim.write_demo_sheets(tmp_path / "s.tsv", tmp_path / "p.tsv", "r", [TINY, PLAIN], seed=5)
    lines = (tmp_path / "p.tsv").read_text().splitlines()
    assert lines[0] == "cohort\tsubject\tage\tsex\tdiagnosis"
    assert lines[-1].startswith("plain\tplain0003\t") and lines[-1].endswith("\t")  # empty diagnosis
    back = pd.read_csv(tmp_path / "s.tsv", sep="\t", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(back, a[0])
    assert not list(tmp_path.glob(".*tmp*"))


def test_diagnosis_rate_in_a_larger_cohort():
    cohort = sim.DemoCohort("big", tr=2.0, n_volumes=40, n_subjects=50, age=(55.0, 90.0), diagnosis=True)
    pheno = sim.make_demo_sheets("r", [cohort], seed=0)[1]
    assert pheno["diagnosis"].sum() == 20
    assert pheno.loc[pheno.diagnosis == 1, "age"].mean() > pheno.loc[pheno.diagnosis == 0, "age"].mean()
    assert (pheno["sex"] == "F").sum() == 25


# --- atlas -------------------------------------------------------------------------------------


def test_demo_grid():
    shape, affine = sim.demo_grid()
    assert shape == (23, 28, 23)
    assert np.array_equal(affine, [[-8, 0, 0, 90], [0, 8, 0, -126], [0, 0, 8, -72], [0, 0, 0, 1]])


def test_atlas(tmp_path):
    sim.write_demo_atlas(str(tmp_path), seed=0)
    paths = sim.demo_atlas_paths(str(tmp_path))
    cortex_img, sub_img = nib.load(paths["cortical_image"]), nib.load(paths["subcortical_image"])
    cortex, sub = _data(paths["cortical_image"]), _data(paths["subcortical_image"])
    assert cortex.dtype == np.int16 and sub.dtype == np.int16 and cortex.shape == (23, 28, 23)
    assert int(cortex_img.header["qform_code"]) == 4 and int(sub_img.header["sform_code"]) == 4
    assert cortex_img.header.get_xyzt_units() == ("mm", "sec")
    counts = np.bincount(cortex.ravel(), minlength=57)
    assert cortex.max() == 56 and (counts[1:] >= 20).all()
    assert sub.max() == 8 and (np.bincount(sub.ravel(), minlength=9)[1:] > 0).all()
    assert not np.any((cortex > 0) & (sub > 0))
    assert not np.any(((cortex > 0) | (sub > 0)) & ~sim.demo_brain_mask())
    x = nib.affines.apply_affine(cortex_img.affine, np.argwhere(np.ones(cortex.shape, bool)))[:, 0]
    x = x.reshape(cortex.shape)
    assert (x[(cortex >= 1) & (cortex <= 28)] < 0).all() and (x[cortex >= 29] > 0).all()
    assert (x[(sub >= 1) & (sub <= 4)] > 0).all() and (x[sub >= 5] < 0).all()  # Tian: right first
    table = pd.read_csv(paths["cortical_labels"], sep="\t")
    assert list(table.columns) == ["index", "name", "color"] and list(table["index"]) == list(range(1, 57))
    names = list(table["name"])
    assert names[0] == "7Networks_LH_Vis_1" and names[27] == "7Networks_LH_Default_4"
    assert names[28] == "7Networks_RH_Vis_1" and names[55] == "7Networks_RH_Default_4"
    assert table["color"].str.match(r"^#[0-9A-F]{6}$").all()
    lines = open(paths["subcortical_labels"]).read().splitlines()
    assert lines[0] == "1,HIP-rh" and lines[7] == "8,CAU-lh" and len(lines) == 8


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_atlas_networks_and_parcels_are_contiguous(tmp_path, seed):
    sim.write_demo_atlas(str(tmp_path), seed=seed)
    paths = sim.demo_atlas_paths(str(tmp_path))
    cortex, sub = _data(paths["cortical_image"]), _data(paths["subcortical_image"])
    network_hemi = np.where(cortex > 0, (cortex - 1) // 4 + 1, 0)  # 1..14: network x hemisphere
    for volume, n_labels in ((cortex, 56), (network_hemi, 14), (sub, 8)):
        for label in range(1, n_labels + 1):
            n_pieces = ndimage.label(volume == label, structure=np.ones((3, 3, 3)))[1]
            assert n_pieces == 1, f"label {label} has {n_pieces} pieces"
    assert np.bincount(cortex.ravel(), minlength=57)[1:].min() >= 20


# --- runs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    samples, phenotypes = _simulate(root, [TINY, PLAIN], seed=11)
    return root, samples, phenotypes


def test_run_files_and_headers(tiny_demo):
    root, samples, _ = tiny_demo
    brain = sim.demo_brain_mask()
    for row in samples.itertuples():
        img = nib.load(row.bold)
        data = np.asarray(img.dataobj)
        cohort = TINY if row.cohort == "tiny" else PLAIN
        assert data.dtype == np.float32 and data.shape == (23, 28, 23, cohort.n_volumes)
        assert np.isfinite(data).all() and not data[~brain].any()
        mean = data[brain].mean(axis=1)
        assert 450 < mean.min() and mean.max() < 1100
        assert img.header.get_zooms()[3] == pytest.approx(cohort.tr)
        assert img.header.get_xyzt_units() == ("mm", "sec") and int(img.header["sform_code"]) == 4
        sidecar = json.loads(open(row.bold.replace(".nii.gz", ".json")).read())
        assert sidecar == {"RepetitionTime": cohort.tr, "TaskName": "rest", "SkullStripped": False}
        if cohort.mask:
            mask = nib.load(row.mask)
            assert mask.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(mask.dataobj) > 0, brain)
    assert len(list(root.rglob("*_desc-brain_mask.nii.gz"))) == (samples["mask"] != "").sum()


def test_temporal_snr_is_realistic(tiny_demo):
    _, samples, _ = tiny_demo
    data = _data(samples["bold"].iloc[0])[sim.demo_brain_mask()]
    tsnr = data.mean(axis=1) / data.std(axis=1)
    assert 40 < np.median(tsnr) < 110


def test_same_seed_same_data_different_seed_different(tiny_demo, tmp_path):
    root, samples, _ = tiny_demo
    _simulate(tmp_path, [TINY], seed=11)
    _simulate(tmp_path / "other", [TINY], seed=12)
    first = samples["bold"].iloc[1]
    again = first.replace(str(root), str(tmp_path))
    assert np.array_equal(_data(first), _data(again))
    assert not np.array_equal(_data(first), _data(again.replace(str(tmp_path), str(tmp_path / "other"))))
    # runs of one subject differ, as do subjects
    assert not np.array_equal(_data(samples["bold"].iloc[0]), _data(samples["bold"].iloc[1]))


def test_simulate_ignores_rows_outside_root_and_needs_phenotypes(tmp_path):
    samples, phenotypes = sim.make_demo_sheets(str(tmp_path / "demo"), [PLAIN], seed=0)
    elsewhere = samples.iloc[[0]].assign(cohort="real", bold=str(tmp_path / "real" / "bold.nii.gz"))
    sim.simulate(pd.concat([samples, elsewhere]), phenotypes, str(tmp_path / "demo"), [PLAIN], seed=0)
    assert not (tmp_path / "real").exists()
    assert all(nib.load(path).shape == (23, 28, 23, PLAIN.n_volumes) for path in samples["bold"])
    with pytest.raises(ValueError, match="plain.*0002"):
        sim.simulate(samples, phenotypes[phenotypes.subject != "plain0002"], str(tmp_path / "demo"), [PLAIN], 0)


def test_latent_dynamics_are_defined_in_seconds():
    """The autocorrelation at a 4 s lag is the same whatever the TR."""
    def autocorr(tr, lag_s):
        x = sim._bold_like_noise(np.random.default_rng(0), 20, 4000, tr)
        lag = round(lag_s / tr)
        return np.mean([np.corrcoef(s[:-lag], s[lag:])[0, 1] for s in x]), x.var()
    (slow, var_slow), (fast, var_fast) = autocorr(2.0, 4.0), autocorr(0.5, 4.0)
    assert slow == pytest.approx(fast, abs=0.05) and 0.2 < fast < 0.6
    assert var_slow == pytest.approx(1, abs=0.1) and var_fast == pytest.approx(1, abs=0.1)


# --- planted phenotypes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aging_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("aging")
    cohort = sim.DemoCohort("aging", tr=2.0, n_volumes=300, n_subjects=12, age=(45.0, 90.0))
    samples, phenotypes = _simulate(root, [cohort], seed=2024)
    labels = sim.load_demo_atlas(str(root))
    rois = [_roi_means(_data(bold), labels) for bold in samples["bold"]]
    return phenotypes, rois


def test_age_lowers_within_network_correlation(aging_demo):
    phenotypes, rois = aging_demo
    network = np.concatenate([np.full(8, 7), np.arange(56) % 28 // 4])
    within = []
    for ts in rois:
        corr = np.corrcoef(ts)
        per_net = [corr[np.ix_(network == n, network == n)][np.triu_indices(8, 1)].mean() for n in range(7)]
        within.append(np.mean(per_net))
    assert np.corrcoef(phenotypes["age"], within)[0, 1] < -0.5


def test_sex_changes_sommot_to_vis_amplitude(aging_demo):
    phenotypes, rois = aging_demo
    network = np.concatenate([np.full(8, 7), np.arange(56) % 28 // 4])
    ratio = np.array([np.log(ts[network == 1].std(axis=1).mean() / ts[network == 0].std(axis=1).mean())
                      for ts in rois])
    male = (phenotypes["sex"] == "M").to_numpy()
    assert ratio[male].mean() - ratio[~male].mean() > 0.04  # planted: +0.08 SomMot, -0.08 Vis (log)
