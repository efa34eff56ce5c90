"""Parcellation: the mean BOLD signal of every atlas ROI at every volume, streamed from disk.

The image is never loaded whole. NIfTI stores each volume as one contiguous block after the header, so the
file is read as one sequential (gzip) stream a few volumes at a time; each chunk is reduced to ROI means by a
sparse averaging operator built once per (atlas, grid). Memory stays at a few volumes whatever the run length.
The result equals nilearn's ``NiftiLabelsMasker(strategy="mean")`` (float64 accumulation) on the same grid.

Speed (``bench/parcellate.py``): a large ``.nii.gz`` (from ``THREADED_MIN_BYTES``) is inflated by ISA-L in a
background thread (it releases the GIL) while the main thread reduces the previous chunk, so a run costs
about its decompression time. Only the atlas' voxels are looked at: they are gathered once per chunk,
non-finite values are found from the same per-voxel minima and maxima that tell which voxels vary (NaN and
Inf survive a min/max), and a chunk is read into one reused buffer. A non-finite value outside every ROI is
not read, so it is not an error.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from brainjepa import bids
from brainjepa.errors import InputError
from brainjepa.io import read_timeseries_metadata, write_timeseries, write_tsv_atomic
from brainjepa.preprocess.atlas import read_atlas
from brainjepa.preprocess.grid import resample_nearest

try:  # ISA-L inflates about 2x faster than zlib; same stream format
    from isal import igzip as _gzip
    from isal import igzip_threaded as _gzip_threaded
except ImportError:  # pragma: no cover - isal is a declared dependency
    import gzip as _gzip

    _gzip_threaded = None

EMPTY_ROI_POLICIES = ("error", "zero")
MIN_FOV_COVERAGE = 0.5  # fraction of atlas voxels (world coordinates) a BOLD field of view must contain
CHUNK_VOLUMES = 8
# Inflate in a background thread from this compressed size on: its fixed ~10 MB of buffers (ISA-L's reader and
# queue) pay only for real runs (a UK Biobank-sized run is ~350 MB gzipped); small files are read in line.
THREADED_MIN_BYTES = 16 * 1024 * 1024
# Its hand-over block: 8 MB measured fastest on a 359 MB UK Biobank-sized run (1 MB 2.1 s, 4 MB 1.9 s, 8 MB 1.6 s,
# 32 MB 2.3 s; bench/parcellate.py's input); the reader then holds about 90 MB of buffers.
THREADED_BLOCK_BYTES = 8 * 1024 * 1024


@dataclass
class ParcelOperator:
    """Sparse ROI-averaging operator for one atlas on one voxel grid.

    voxels: [V] F-order flat indices of labelled voxels; matrix: [R, V] with 1/n_voxels weights;
    counts: [R] voxels per ROI (0 for an ROI absent from this grid).
    """

    voxels: np.ndarray
    roi_of_voxel: np.ndarray
    counts: np.ndarray
    matrix: sp.csr_matrix

    @classmethod
    def from_labels(cls, labels: np.ndarray, values: np.ndarray, mask: np.ndarray | None = None) -> "ParcelOperator":
        """labels: [X, Y, Z] integer label image on the BOLD grid; values: [R] label values in ROI order."""
        flat = labels.ravel(order="F")
        keep = np.isin(flat, values)
        if mask is not None:
            keep &= mask.ravel(order="F") > 0
        voxels = np.flatnonzero(keep)
        roi = np.searchsorted(values, flat[voxels])
        counts = np.bincount(roi, minlength=len(values))
        weights = 1.0 / counts[roi]
        matrix = sp.csr_matrix((weights, (roi, np.arange(len(voxels)))), shape=(len(values), len(voxels)))
        return cls(voxels, roi, counts, matrix)


@dataclass
class BoldInfo:
    """What the header says about a 4-D BOLD file."""

    path: Path
    shape: tuple[int, int, int, int]
    affine: np.ndarray
    dtype: np.dtype
    offset: int
    slope: float
    inter: float


def read_bold_header(path: str | Path) -> BoldInfo:
    """Read and check a BOLD header: a readable 4-D NIfTI with a known data layout."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: BOLD file does not exist")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{path}: not a readable NIfTI file ({exc})") from exc
    shape = img.shape
    if len(shape) != 4:
        raise InputError(f"{path}: BOLD image must be 4-D (x, y, z, time), got shape {shape}")
    slope, inter = img.dataobj.slope, img.dataobj.inter
    return BoldInfo(path, tuple(int(s) for s in shape), img.affine, img.header.get_data_dtype(),
                    int(img.dataobj.offset), 1.0 if not np.isfinite(slope) or slope == 0 else float(slope),
                    0.0 if not np.isfinite(inter) else float(inter))


def _open_stream(path: Path):
    """The image file as a binary stream; a gzip one inflated in a background thread (ISA-L) when available."""
    if not path.name.endswith(".gz"):
        return open(path, "rb")
    if _gzip_threaded is not None and path.stat().st_size >= THREADED_MIN_BYTES:
        return _gzip_threaded.open(path, "rb", threads=1, block_size=THREADED_BLOCK_BYTES)
    return _gzip.open(path, "rb")


def iter_volume_chunks(info: BoldInfo, chunk: int = CHUNK_VOLUMES) -> Iterator[tuple[int, np.ndarray]]:
    """Stream volumes from disk. Yields (first volume index, [k, X*Y*Z] float32 array in F order).

    The array is a view of a buffer reused for the next chunk: use it before asking for the next one."""
    n_vox = int(np.prod(info.shape[:3]))
    vol_bytes = n_vox * info.dtype.itemsize
    n_vol = info.shape[3]
    buffer = bytearray(min(chunk, n_vol) * vol_bytes)
    view = memoryview(buffer)
    try:
        with _open_stream(info.path) as fh:
            _read_exact(fh, info.offset)
            for start in range(0, n_vol, chunk):
                k = min(chunk, n_vol - start)
                want = k * vol_bytes
                got = 0
                while got < want:
                    n = fh.readinto(view[got:want])
                    if not n:
                        break
                    got += n
                if got < want:
                    raise InputError(f"{info.path}: truncated: the header promises {n_vol} volumes, "
                                     f"the file holds {start + got // vol_bytes}")
                data = np.frombuffer(buffer, dtype=info.dtype, count=k * n_vox).reshape(k, n_vox)
                data = data.astype(np.float32, copy=False)
                if info.slope != 1.0 or info.inter != 0.0:
                    data = data * np.float32(info.slope) + np.float32(info.inter)
                yield start, data
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise InputError(f"{info.path}: corrupt or truncated image data ({exc})") from exc


def _read_exact(fh, n: int) -> None:
    if len(fh.read(n)) < n:
        raise InputError(f"{getattr(fh, 'name', 'file')}: truncated before the image data")


def check_space(info: BoldInfo, atlas_img: nib.Nifti1Image, atlas_space: str | None) -> None:
    """Refuse a BOLD file whose ``space-`` entity or affine says it is not in the atlas's space."""
    bold_space = bids.entities(info.path).get("space")
    if atlas_space and bold_space and bold_space != atlas_space:
        raise InputError(f"{info.path}: BOLD is in space '{bold_space}' but the atlas is in '{atlas_space}'; "
                         "use the atlas of that space (no silent resampling across spaces)")
    rotation = np.abs(info.affine[:3, :3] / np.linalg.norm(info.affine[:3, :3], axis=0))
    if not np.allclose(rotation.max(axis=0), 1.0, atol=1e-3):  # each voxel axis along one world axis
        raise InputError(f"{info.path}: oblique affine (not a standard-space grid); "
                         f"the atlas is in '{atlas_space or 'template'}' space")
    coverage = fov_coverage(info, atlas_img)
    if coverage < MIN_FOV_COVERAGE:
        raise InputError(f"{info.path}: field of view covers {coverage:.0%} of the atlas's labelled voxels "
                         f"(minimum {MIN_FOV_COVERAGE:.0%}); is the image in '{atlas_space or 'atlas'}' space?")


def fov_coverage(info: BoldInfo, atlas_img: nib.Nifti1Image) -> float:
    """Fraction of the atlas's labelled voxel centres that fall inside the BOLD grid's bounding box."""
    ijk = np.argwhere(np.asarray(atlas_img.dataobj) > 0)
    world = nib.affines.apply_affine(atlas_img.affine, ijk)
    vox = nib.affines.apply_affine(np.linalg.inv(info.affine), world)
    inside = np.all((vox > -0.5) & (vox < np.array(info.shape[:3]) - 0.5), axis=1)
    return float(inside.mean()) if len(inside) else 0.0


def load_mask(path: str | Path, info: BoldInfo) -> np.ndarray:
    """A brain mask on the BOLD grid (resampled with nearest neighbour when its grid differs)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: mask file does not exist")
    try:
        img = nib.load(path)
        data = np.squeeze(np.asanyarray(img.dataobj))
    except Exception as exc:
        raise InputError(f"{path}: cannot read mask ({exc})") from exc
    if data.ndim != 3:
        raise InputError(f"{path}: mask must be 3-D, got shape {data.shape}")
    img = nib.Nifti1Image((data > 0).astype(np.int32), img.affine)
    return np.asarray(resample_nearest(img, info.shape[:3], info.affine).dataobj) > 0


@dataclass
class Atlas:
    """A loaded atlas with its ROI order; caches its resampled operator per BOLD grid for batch jobs."""

    image: nib.Nifti1Image | None          # None: a label table only (pre-parcellated runs)
    values: np.ndarray | None
    names: list[str]
    space: str | None
    identifier: str
    _operators: dict

    @classmethod
    def load(cls, path: str | Path | None, labels: str | Path | None = None) -> "Atlas":
        """An atlas image with its label table; ``path`` None: the label table only (pre-parcellated runs)."""
        if path is None:
            if labels is None:
                raise InputError("an atlas needs an image or a label table")
            from brainjepa.io import sha256_file
            from brainjepa.preprocess.atlas import read_roi_names

            return cls(None, None, read_roi_names(labels), None, sha256_file(labels)[:16], {})
        atlas = read_atlas(path, labels)
        return cls(atlas.image, atlas.values, atlas.names, atlas.space, atlas.identifier, {})

    def operator(self, info: BoldInfo, mask: np.ndarray | None = None) -> ParcelOperator:
        """The averaging operator on the BOLD grid (atlas resampled with nearest neighbour if needed)."""
        key = (info.shape[:3], info.affine.round(5).tobytes())
        if key not in self._operators:
            grid = resample_nearest(self.image, info.shape[:3], info.affine)
            self._operators[key] = np.asarray(grid.dataobj)
        labels = self._operators[key]
        return ParcelOperator.from_labels(labels, self.values, mask)


def extract_roi_means(info: BoldInfo, op: ParcelOperator) -> tuple[np.ndarray, np.ndarray]:
    """Stream the image through ``op``.

    Returns the ROI means [T, R] (float64 accumulation) and, per ROI voxel, whether its signal varies
    over time [V] (bool).
    """
    n_t = info.shape[3]
    out = np.empty((n_t, op.matrix.shape[0]), dtype=np.float64)
    vmin = np.full(len(op.voxels), np.inf, dtype=np.float32)
    vmax = np.full(len(op.voxels), -np.inf, dtype=np.float32)
    for start, chunk in iter_volume_chunks(info):
        sel = chunk[:, op.voxels]                                         # [k, V]
        cmin, cmax = sel.min(axis=0, initial=np.inf), sel.max(axis=0, initial=-np.inf)
        if not (np.isfinite(cmin).all() and np.isfinite(cmax).all()):
            bad = ~np.isfinite(sel)
            vol, vox = np.argwhere(bad)[0]
            ijk = np.unravel_index(op.voxels[vox], info.shape[:3], order="F")
            raise InputError(f"{info.path}: {int(bad.sum())} NaN/Inf values in the atlas' voxels in time points "
                             f"{start + 1}-{start + len(chunk)} (first at time point {start + int(vol) + 1}, "
                             f"voxel {tuple(map(int, ijk))} counted from 0)")
        np.minimum(vmin, cmin, out=vmin)
        np.maximum(vmax, cmax, out=vmax)
        out[start:start + len(chunk)] = (op.matrix @ sel.T.astype(np.float64)).T
    return out, vmax > vmin


def roi_qc(ts: np.ndarray, op: ParcelOperator, varying: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Per-ROI QC: voxel count, fraction of voxels whose signal varies, temporal SNR, flag.

    ts: [T, R]; varying: [V]. Flags: ``empty`` (no voxels on this grid/mask), ``no_signal`` (no voxel varies).
    """
    n_varying = np.bincount(op.roi_of_voxel, weights=varying.astype(float), minlength=len(names))
    frac = np.divide(n_varying, op.counts, out=np.zeros(len(names)), where=op.counts > 0)
    mean, std = ts.mean(axis=0), ts.std(axis=0)
    tsnr = np.divide(np.abs(mean), std, out=np.zeros(len(names)), where=std > 0)
    flag = np.where(op.counts == 0, "empty", np.where(n_varying == 0, "no_signal", "ok"))
    return pd.DataFrame({"roi": names, "n_voxels": op.counts, "frac_signal": frac.round(4),
                         "tsnr": tsnr.round(3), "flag": flag})


def apply_empty_roi_policy(ts: np.ndarray, qc: pd.DataFrame, policy: str, source: Path) -> np.ndarray:
    """``error``: refuse a run with empty/no-signal ROIs (naming them); ``zero``: set them to 0 (flagged in QC)."""
    if policy not in EMPTY_ROI_POLICIES:
        raise ValueError(f"empty-ROI policy must be one of {EMPTY_ROI_POLICIES}, not {policy!r}")
    bad = qc["flag"].to_numpy() != "ok"
    if not bad.any():
        return ts
    if policy == "error":
        listing = ", ".join(f"{r} ({f})" for r, f in zip(qc["roi"][bad][:10], qc["flag"][bad][:10]))
        raise InputError(f"{source}: {int(bad.sum())} ROIs have no signal (no voxels, or constant over the run: "
                         f"outside the image's brain or field of view?): {listing}; set the empty-ROI policy to "
                         "'zero' to keep the run with those ROIs zeroed")
    ts = ts.copy()
    ts[:, bad] = 0.0
    return ts


def parcellate_bold(bold: str | Path, atlas: Atlas, mask: str | Path | None = None, tr: float | None = None,
                    empty_roi: str = "error") -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Parcellate one BOLD run. Returns ROI means [T, R] float32, the QC table and the metadata."""
    info = read_bold_header(bold)
    if atlas.image is None:
        raise InputError(f"{info.path}: a NIfTI run needs an atlas image, but the atlas is a label table only "
                         "(atlas.labels: for pre-parcellated 'timeseries' runs)")
    check_space(info, atlas.image, atlas.space)
    tr_value, tr_source = bids.repetition_time(info.path, tr)
    mask_data = load_mask(mask, info) if mask else None
    op = atlas.operator(info, mask_data)
    ts, varying = extract_roi_means(info, op)
    qc = roi_qc(ts, op, varying, atlas.names)
    ts = apply_empty_roi_policy(ts, qc, empty_roi, info.path)
    meta = {"tr": tr_value, "tr_source": tr_source, "atlas_id": atlas.identifier, "source": str(info.path),
            "space": atlas.space, "n_volumes": int(info.shape[3])}
    return ts.astype(np.float32), qc, meta


UNNAMED_COLUMNS = ("error", "label_order")


def read_timeseries_file(path: str | Path, names: list[str], tr: float | None,
                         unnamed_columns: str = "error", against: str = "the atlas label table"
                         ) -> tuple[np.ndarray, dict]:
    """Read an already-parcellated T x R file (tsv, csv, npy or parquet) in the atlas's ROI order.

    ``path`` may also be a subject folder of the public code's UK Biobank layout (:func:`read_ukb_folder`).
    Columns with ROI names (a text header, Parquet column names) are matched to the label table by name, in
    any order; a header that is not exactly the label table's names is an error listing the unknown and the
    missing ones. Columns without names (``.npy``, a header-less text file, or a numbered header ``0..R-1`` /
    ``1..R`` such as ``DataFrame.to_csv(index=False)`` writes) are never guessed: ``unnamed_columns``
    ``label_order`` declares them to be in the label table's order, ``error`` (the default) refuses them.
    The TR comes from ``tr`` or, for a brainjepa Parquet file, its metadata; either is held to
    (0, ``bids.MAX_TR_S``] seconds. Messages number time points from 1 (and give a text file's line). ``against``:
    what ``names`` are, in messages (named columns that differ from them, in number too, are listed as unknown and
    missing).
    """
    if unnamed_columns not in UNNAMED_COLUMNS:
        raise InputError(f"unnamed_columns must be one of {', '.join(UNNAMED_COLUMNS)}, not {unnamed_columns!r}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: time-series file does not exist")
    frame, named, meta_tr, first_line = _read_frame(path)
    if frame.ndim != 2 or (frame.shape[1] != len(names) and not named):
        raise InputError(f"{path}: {frame.shape[1] if frame.ndim == 2 else '?'} columns, but the atlas has "
                         f"{len(names)} ROIs (expected a T x {len(names)} matrix, one column per ROI)")
    frame = _in_label_order(path, frame, names, named, unnamed_columns, against)
    data = frame.to_numpy(dtype=np.float64)
    if len(data) == 0:
        raise InputError(f"{path}: no time points (a header only?)")
    if not np.isfinite(data).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(data))[0])
        line = f" (line {row + first_line})" if first_line is not None else ""
        raise InputError(f"{path}: non-finite value {float(data[row, col])} at time point {row + 1}{line}, "
                         f"ROI {names[col]!r}")
    if tr is not None:
        tr, tr_source = bids.check_tr(tr, path, bids.SHEET_TR_SOURCE, "give the run's tr in seconds"), "sheet"
    elif meta_tr is not None:
        tr, tr_source = bids.check_tr(meta_tr, path, "its time-series metadata 'tr'",
                                      "give the run's tr in the sample sheet"), "metadata"
    else:
        raise InputError(f"{path}: no TR: give the 'tr' column in the sample sheet for time-series rows")
    return data.astype(np.float32), {"tr": tr, "tr_source": tr_source,
                                     "source": str(path), "n_volumes": int(len(data)),
                                     "columns": "by name" if named else "label_order (declared)"}


def _read_frame(path: Path) -> tuple[pd.DataFrame, bool, float | None, int | None]:
    """A time-series file (or UK Biobank folder) as read: (frame, whether its columns carry ROI names, the TR of
    a brainjepa Parquet file's metadata, the text line of time point 1)."""
    meta_tr = first_line = None
    name = path.name.lower()
    try:
        if path.is_dir():
            frame, named = read_ukb_folder(path), True
        elif name.endswith(".npy"):
            frame, named = pd.DataFrame(np.load(path, allow_pickle=False)), False
        elif name.endswith(".parquet"):
            table = pq.read_table(path)
            meta_tr = (read_timeseries_metadata(table) or {}).get("tr")
            frame = table.to_pandas()
            named = not _numbered(list(map(str, frame.columns)))
        elif name.endswith((".tsv", ".csv", ".tsv.gz", ".csv.gz")):
            frame, named, first_line = _read_delimited(path, sep="\t" if ".tsv" in name else ",")
        else:
            raise InputError(f"{path}: unknown time-series format (use .tsv, .csv, .npy or .parquet)")
    except InputError:  # already names the file and the problem
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read time series ({exc})") from exc
    return frame, named, meta_tr, first_line


def _in_label_order(path: Path, frame: pd.DataFrame, names: list[str], named: bool, unnamed_columns: str,
                    against: str) -> pd.DataFrame:
    """The frame's columns in the order of ``names``: named columns matched by name (unknown, missing or
    duplicated ones refused), unnamed ones only when declared to be in label order."""
    if named:
        header = [str(c).strip() for c in frame.columns]
        unknown = [c for c in header if c not in set(names)]
        missing = [n for n in names if n not in set(header)]
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if unknown or missing or duplicated:
            raise InputError(f"{path}: the header's ROI names are not {against}'s: "
                             f"{len(unknown)} unknown {unknown[:10]}, {len(missing)} missing {missing[:10]}"
                             + (f", duplicated {duplicated[:10]}" if duplicated else "")
                             + " (columns are matched by name, in any order)")
        frame.columns = header
        return frame[names]
    if unnamed_columns == "error":
        raise InputError(f"{path}: its {len(names)} columns have no ROI names (a .npy, a header-less or a numbered "
                         "header text file), so their order cannot be checked; write the label table's ROI names as "
                         "the header, or declare the columns to be in the label table's order with "
                         "parcellate.unnamed_columns: label_order (brainjepa parcellate --unnamed-columns label_order)")
    return frame


UKB_CORTICAL = "fMRI.Schaefer*.csv.gz"          # the public Brain-JEPA loader's UK Biobank files, one folder per
UKB_SUBCORTICAL = "fMRI.Tian_Subcortex_*.csv.gz"  # subject: ROI x time, first column label_name


def read_ukb_folder(folder: Path) -> pd.DataFrame:
    """A subject folder of the public code's UK Biobank layout -> a T x R frame named by ROI, subcortical ROIs
    first (the combined atlas's order). Each file is ROI x time with a ``label_name`` first column; the names
    are then matched to the atlas label table like any header."""
    files = {}
    for kind, pattern in (("subcortical", UKB_SUBCORTICAL), ("cortical", UKB_CORTICAL)):
        found = sorted(folder.glob(pattern))
        if len(found) != 1:
            raise InputError(f"{folder}: expected one {pattern} file of the UK Biobank layout (ROI x time, first "
                             f"column label_name), found {len(found)}")
        files[kind] = found[0]
    blocks = []
    for kind, path in files.items():
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"{path}: cannot read the {kind} time series ({exc})") from exc
        if frame.columns[0] != "label_name" or frame.shape[1] < 2:
            raise InputError(f"{path}: the UK Biobank layout has ROI rows with a first column 'label_name', then one "
                             f"column per time point; got columns {list(frame.columns[:3])}...")
        values = frame.iloc[:, 1:].apply(pd.to_numeric, errors="coerce")
        if values.isna().to_numpy().any():
            row, col = (int(i) for i in np.argwhere(values.isna().to_numpy())[0])
            cell = str(frame.iloc[row, col + 1]).strip()[:40]
            raise InputError(f"{path}: non-numeric value {cell!r} for ROI {str(frame.iloc[row, 0])!r} at time point "
                             f"{col + 1} (line {row + 2}, column {col + 2})")
        blocks.append(pd.DataFrame(values.to_numpy(dtype=np.float64).T, columns=frame["label_name"].astype(str)))
    if len(blocks[0]) != len(blocks[1]):
        raise InputError(f"{folder}: the subcortical file has {len(blocks[0])} time points, the cortical one "
                         f"{len(blocks[1])}")
    return pd.concat(blocks, axis=1)


def _numbered(cells: list[str]) -> bool:
    """A header of positions, 0..R-1 or 1..R (what a frame without column names writes): no ROI names."""
    try:
        values = [float(c) for c in cells]
    except ValueError:
        return False
    return values in (list(map(float, range(len(cells)))), list(map(float, range(1, len(cells) + 1))))


def _read_delimited(path: Path, sep: str) -> tuple[pd.DataFrame, bool, int]:
    """A delimited matrix, whether its columns are named, and the file line (from 1) of its first time point.
    First row: ROI names (any non-numeric cell), a numbered header (dropped, unnamed), or data (no header,
    unnamed)."""
    frame = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False)
    first = [str(c).strip() for c in frame.iloc[0].tolist()] if len(frame) else []
    try:
        [float(c) for c in first]
        numeric = True
    except ValueError:
        numeric = False
    offset = 1  # file line of data row 0
    if not numeric or _numbered(first):
        frame = frame.iloc[1:].reset_index(drop=True)
        frame.columns = first
        offset = 2
    try:
        return frame.astype(float), not numeric, offset
    except ValueError:
        for column in frame.columns:
            bad = pd.to_numeric(frame[column], errors="coerce").isna() & ~frame[column].str.strip().str.lower().isin(
                ["nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "-infinity"])
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                cell = str(frame[column].iloc[row])
                what = "an empty cell" if not cell.strip() else f"non-numeric value {cell.strip()[:40]!r}"
                where = f"column {frame.columns.get_loc(column) + 1}" if numeric else f"ROI {str(column)!r}"
                raise InputError(f"{path}: {what} at time point {row + 1} (line {row + offset}), {where}: "
                                 "every cell of the time series must be a number") from None
        raise


def run_parcellate(out: str | Path, atlas_path: str | Path, labels: str | Path | None = None,
                   bold: str | Path | None = None, timeseries: str | Path | None = None,
                   mask: str | Path | None = None, tr: float | None = None, qc_out: str | Path | None = None,
                   empty_roi: str = "error", atlas: Atlas | None = None, unnamed_columns: str = "error") -> None:
    """The ``parcellate`` stage for one run: BOLD (or a parcellated file) -> ROI time-series Parquet (+ QC)."""
    if (bold is None) == (timeseries is None):
        raise ValueError("give exactly one of bold or timeseries")
    atlas = atlas or Atlas.load(atlas_path, labels)
    if bold is not None:
        ts, qc, meta = parcellate_bold(bold, atlas, mask, tr, empty_roi)
    else:
        ts, meta = read_timeseries_file(timeseries, atlas.names, tr, unnamed_columns)
        std = ts.std(axis=0)
        qc = pd.DataFrame({"roi": atlas.names, "n_voxels": -1, "frac_signal": np.nan,
                           "tsnr": np.divide(np.abs(ts.mean(0)), std, out=np.zeros(len(std)), where=std > 0).round(3),
                           "flag": np.where(std > 0, "ok", "no_signal")})
        ts = apply_empty_roi_policy(ts, qc, empty_roi, Path(timeseries))
        meta.update(atlas_id=atlas.identifier, space=atlas.space)
    if qc_out is not None:
        write_tsv_atomic(qc, qc_out)
    from brainjepa.provenance import make_record

    settings = {"empty_roi": empty_roi, "unnamed_columns": unnamed_columns, "tr": tr, "atlas_id": atlas.identifier}
    meta["provenance"] = make_record("parcellate", settings, {
        "bold": [bold] if bold else [], "timeseries": [timeseries] if timeseries else [],
        "mask": [mask] if mask else [], "atlas": [atlas_path] if atlas_path else [],
        "labels": [labels] if labels else []})
    write_timeseries(ts, atlas.names, out, meta)


def parcellate_runs(samples_path: str | Path, out_root: str | Path, atlas_path: str | Path,
                    labels: str | Path | None = None, run_ids: list[str] | None = None,
                    empty_roi: str = "error", unnamed_columns: str = "error", stamp: str | Path | None = None) -> int:
    """The ``parcellate`` stage for many runs of a sample sheet in one process (the workflow's batch jobs).

    Each listed run (default: every run of the sheet) is parcellated from its row (``bold`` with ``mask`` and
    ``tr``, or ``timeseries``) with the atlas loaded once, to ``<out_root>/<run_id>.parquet`` and
    ``<out_root>/<run_id>_qc.tsv``. An error names the run. With ``stamp``, the batch's stamp
    (:func:`brainjepa.batches.write_stamp`) is written last. Returns the number of runs written.
    """
    from brainjepa import sheets
    from brainjepa.batches import for_each_run, select_runs, write_stamp

    samples = sheets.load_samples(samples_path, produced=lambda p: True)  # a missing file fails with its run
    rows = select_runs(samples, run_ids, str(samples_path))
    atlas = Atlas.load(atlas_path, labels)
    root = Path(out_root)

    def parcellate_row(row: dict) -> None:
        run_parcellate(root / f"{row['run_id']}.parquet", atlas_path, labels, bold=row["bold"] or None,
                       timeseries=row["timeseries"] or None, mask=row["mask"] or None,
                       tr=None if pd.isna(row["tr"]) else float(row["tr"]),
                       qc_out=root / f"{row['run_id']}_qc.tsv", empty_roi=empty_roi, atlas=atlas,
                       unnamed_columns=unnamed_columns)

    for_each_run([(row["run_id"], row) for row in rows.to_dict("records")], parcellate_row, "parcellate")
    if stamp is not None:
        write_stamp(stamp, [root / f"{r}{suffix}" for r in rows["run_id"] for suffix in (".parquet", "_qc.tsv")])
    return len(rows)
