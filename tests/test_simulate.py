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
SERIES = sim.DemoCohort("series", tr=0.735, n_volumes=60, n_subjects=3, timeseries=True)


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
    (series,) = sim.cohorts_from_spec({"s": {"tr": 0.735, "n_volumes": 50, "n_subjects": 2, "timeseries": True}})
    assert series.timeseries and not series.mask
    with pytest.raises(ValueError, match="no brain masks"):
        sim.cohorts_from_spec({"s": {"tr": 1, "n_volumes": 50, "n_subjects": 2, "timeseries": True, "mask": True}})


def test_sheets_layout(tmp_path):
    root = str(tmp_path / "demo")
    samples, phenotypes = sim.make_demo_sheets(root, [TINY, PLAIN, SERIES], seed=3)
    assert list(samples.columns) == ["cohort", "subject", "session", "run", "bold", "mask", "timeseries", "tr"]
    assert list(phenotypes.columns) == ["cohort", "subject", "age", "sex", "diagnosis"]
    series = samples[samples.cohort == "series"]
    assert (series["bold"] == "").all() and (series["mask"] == "").all() and (series["tr"] == "0.735").all()
    assert series["timeseries"].iloc[0] == (f"{root}/derivatives/series/sub-series0001/ses-1/func/"
                                            "sub-series0001_ses-1_task-rest_run-1_space-MNI152NLin6Asym"
                                            "_atlas-Demo_timeseries.npy")
    samples, phenotypes = samples[samples.cohort != "series"], phenotypes[phenotypes.cohort != "series"]
    assert ((samples["timeseries"] == "") & (samples["tr"] == "")).all()
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


def test_age_lowers_roi_fluctuation_amplitude(aging_demo):
    phenotypes, rois = aging_demo
    amplitude = [np.log(ts.std(axis=1) / ts.mean(axis=1)).mean() for ts in rois]  # log % fluctuation, mean ROI
    assert np.corrcoef(phenotypes["age"], amplitude)[0, 1] < -0.3


# --- parcellated (time-series) cohorts ---------------------------------------------------------


def _series_demo(root, cohort, seed=0):
    samples, phenotypes = _simulate(root, [cohort], seed)
    return samples, phenotypes, [np.load(path).T for path in samples["timeseries"]]  # each [64, T]


def test_timeseries_runs(tmp_path):
    samples, _, rois = _series_demo(tmp_path, SERIES, seed=4)
    assert not list((tmp_path / "derivatives").rglob("*.nii.gz"))
    for path, ts in zip(samples["timeseries"], rois):
        data = np.load(path)
        assert data.dtype == np.float32 and data.shape == (SERIES.n_volumes, 64) and np.isfinite(data).all()
        assert 450 < ts.mean(axis=1).min() and ts.mean(axis=1).max() < 1100  # scanner units, like ROI means
        assert 0.2 < np.median(100 * ts.std(axis=1) / ts.mean(axis=1)) < 3  # about 1 % fluctuation
    again, _, rois_again = _series_demo(tmp_path / "again", SERIES, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(rois, rois_again))
    assert not np.array_equal(rois[0], rois[1])


def test_timeseries_run_is_the_parcellated_nifti_model(tmp_path):
    """Same identifiers: the same ROI signal as the NIfTI run's ROI means; only the thermal noise differs."""
    sim.write_demo_atlas(str(tmp_path), seed=0)
    labels = sim.load_demo_atlas(str(tmp_path))
    cohort = sim.DemoCohort("same", tr=2.0, n_volumes=150, n_subjects=1)
    phenotype = {"age": 70.0, "sex": "F", "diagnosis": 1}
    sim.simulate_run(tmp_path / "b_bold.nii.gz", "", cohort, "same0001", "1", "1", phenotype, 0, labels)
    sim.simulate_timeseries_run(tmp_path / "ts.npy", cohort, "same0001", "1", "1", phenotype, 0, labels)
    voxel = _roi_means(_data(tmp_path / "b_bold.nii.gz"), labels)
    series = np.load(tmp_path / "ts.npy").T
    assert np.allclose(series.mean(axis=1), voxel.mean(axis=1), rtol=2e-3)
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(series, voxel)]
    assert min(corr) > 0.9
    assert np.allclose(series.std(axis=1), voxel.std(axis=1), rtol=0.15)


def test_timeseries_cohort_parses_through_the_workflow_parcellate_path(tmp_path):
    from brainjepa.io import read_timeseries
    from brainjepa.preprocess.atlas import build_atlas
    from brainjepa.preprocess.parcellate import parcellate_runs

    root = tmp_path / "demo"
    samples, _, rois = _series_demo(root, SERIES)
    paths = sim.demo_atlas_paths(str(root))
    image, labels = tmp_path / "atlas_space-MNI152NLin6Asym_dseg.nii.gz", tmp_path / "labels.tsv"
    build_atlas("MNI152NLin6Asym", image, labels, tmp_path / "cache", cortical_image=paths["cortical_image"],
                cortical_labels=paths["cortical_labels"], subcortical_image=paths["subcortical_image"],
                subcortical_labels=paths["subcortical_labels"])
    samples.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    # the demo writes its .npy files in label-table order, as its config declares (parcellate.unnamed_columns)
    assert parcellate_runs(tmp_path / "samples.tsv", tmp_path / "out", image, labels,
                           unnamed_columns="label_order") == len(samples)
    names = pd.read_csv(labels, sep="\t")["name"].tolist()
    for rid, ts in zip(("series/sub-series0001_ses-1_run-1", "series/sub-series0002_ses-1_run-1"), rois):
        frame, meta = read_timeseries(tmp_path / "out" / f"{rid}.parquet")
        assert list(frame.columns) == names and names[0] == "HIP-rh" and names[8] == "7Networks_LH_Vis_1"
        assert meta["tr"] == pytest.approx(0.735) and meta["tr_source"] == "sheet"
        assert np.array_equal(frame.to_numpy().T, ts)
        qc = pd.read_csv(tmp_path / "out" / f"{rid}_qc.tsv", sep="\t")
        assert (qc["flag"] == "ok").all()


@pytest.fixture(scope="module")
def series_cohort(tmp_path_factory):
    """A larger parcellated cohort (ages 45-90, diagnosis), cheap because no NIfTI is written."""
    cohort = sim.DemoCohort("many", tr=2.0, n_volumes=150, n_subjects=160, age=(45.0, 90.0), diagnosis=True,
                            timeseries=True)
    samples, phenotypes, rois = _series_demo(tmp_path_factory.mktemp("many"), cohort, seed=5)
    return phenotypes, rois


def test_age_lowers_amplitude_in_a_larger_cohort(series_cohort):
    phenotypes, rois = series_cohort
    amplitude = [np.log(ts.std(axis=1) / ts.mean(axis=1)).mean() for ts in rois]
    r = np.corrcoef(phenotypes["age"], amplitude)[0, 1]
    assert -0.7 < r < -0.3  # planted at the order reported for real data (about -0.4 at ages 45-80)


def test_diagnosis_lowers_default_amplitude(series_cohort):
    phenotypes, rois = series_cohort
    network = np.concatenate([np.full(8, 7), np.arange(56) % 28 // 4])
    default = sim.NETWORKS.index("Default")
    log_amp = [np.log(ts.std(axis=1) / ts.mean(axis=1)) for ts in rois]
    relative = np.array([a[network == default].mean() - a[network != default].mean() for a in log_amp])
    diagnosed = (phenotypes["diagnosis"] == 1).to_numpy()
    difference = relative[diagnosed].mean() - relative[~diagnosed].mean()
    assert -0.3 < difference < -0.08  # planted: log(0.85) = -0.16


def test_planted_amplitude_model():
    """The subject model itself: every network x exp(-0.30 a), Default x 0.85 with the diagnosis."""
    def amplitude(age, diagnosis):  # the same subject draws (rng) at another age or diagnosis
        return sim._log_amplitude(sim._age_fraction(age), 1, diagnosis, np.random.default_rng(7))
    young, old = amplitude(45.0, 0), amplitude(90.0, 0)
    assert np.allclose(young - old, sim.AGE_LOG_AMPLITUDE)
    difference = amplitude(60.0, 1) - amplitude(60.0, 0)
    default = sim.NETWORKS.index("Default")
    assert difference[default] == pytest.approx(np.log(0.85))
    assert np.allclose(np.delete(difference, default), 0)


def test_simulate_run_cli_batch_form(tmp_path, capsys):
    from brainjepa.cli import main

    root = tmp_path / "demo"
    sim.write_demo_atlas(str(root), seed=0)
    samples, phenotypes = sim.make_demo_sheets(str(root), [TINY, SERIES], seed=0)
    samples.to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    phenotypes.to_csv(tmp_path / "p.tsv", sep="\t", index=False, na_rep="")
    common = ["simulate-run", "--samples", str(tmp_path / "s.tsv"), "--phenotypes", str(tmp_path / "p.tsv"),
              "--root", str(root), "--seed", "0"]
    chosen = ["tiny/sub-tiny0002_ses-2_run-1", "tiny/sub-tiny0003_ses-1_run-1"]
    assert main([*common, "--cohort", "tiny", "--tr", "1.5", "--n-volumes", "40", "--runs", *chosen]) == 0
    written = sorted(p.name for p in root.rglob("*_bold.nii.gz"))
    assert written == ["sub-tiny0002_ses-2_task-rest_run-1_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz",
                       "sub-tiny0003_ses-1_task-rest_run-1_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"]
    assert len(list(root.rglob("*_desc-brain_mask.nii.gz"))) == 2 and len(list(root.rglob("*_bold.json"))) == 2
    assert main([*common, "--cohort", "series", "--tr", "0.735", "--n-volumes", "60"]) == 0  # all its runs
    assert len(list(root.rglob("*_timeseries.npy"))) == 3
    capsys.readouterr()
    assert main([*common, "--cohort", "series", "--tr", "0.735", "--n-volumes", "60", "--runs", chosen[0]]) == 1
    assert "run tiny/sub-tiny0002_ses-2_run-1 is of cohort 'tiny', not 'series'" in capsys.readouterr().err
    assert main([*common, "--cohort", "tiny", "--tr", "1.5", "--n-volumes", "40", "--bold", "x.nii.gz"]) == 1
    assert "drop --bold" in capsys.readouterr().err
