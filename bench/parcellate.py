"""Benchmark: brainjepa's streaming parcellation vs nilearn's NiftiLabelsMasker(strategy="mean"), and vs the
time it takes only to decompress the same file with ISA-L (``decompress``: igzip, one thread, 64 MB reads, the
bytes discarded): the floor of any parcellation that reads the whole gzip stream.

Data: a 91x109x91x490 float32 .nii.gz on the FSL MNI152 2 mm grid (UK Biobank-like run length), zero
outside a brain mask (the atlas dilated by 2 voxels), baseline + noise inside, as fMRIPrep writes them.
Atlas: the real Tian S3 + Schaefer-400 combination (450 ROIs) built from local files.
Each method runs in its own process (so peak RSS is its own); wall time and peak RSS are printed for every
repeat, and the outputs are compared (max relative difference).

    python bench/parcellate.py [--atlas-dir ../shared/data/atlases] [--out bench/out] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GRID = (91, 109, 91)
AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


def build_inputs(atlas_dir: Path, out: Path, n_volumes: int) -> tuple[Path, Path, Path]:
    import nibabel as nib
    from isal import igzip
    from scipy.ndimage import binary_dilation

    from brainjepa.preprocess.atlas import build_atlas

    atlas, labels = out / "atlas_space-MNI152NLin6Asym_dseg.nii.gz", out / "atlas_labels.tsv"
    if not atlas.exists():
        build_atlas("MNI152NLin6Asym", atlas, labels, out / "cache",
                    cortical_image=str(atlas_dir / "Schaefer2018_400Parcels_7Networks_order_FSLMNI152_2mm.nii.gz"),
                    cortical_labels=str(atlas_dir / "Schaefer2018_400Parcels_7Networks_order.txt"),
                    subcortical_image=str(atlas_dir / "Tian_Subcortex_S3_3T_MNI152NLin6Asym_1mm.nii.gz"),
                    subcortical_labels=str(atlas_dir / "Tian_Subcortex_S3_3T_labels.csv"))
    bold = out / f"sub-bench_space-MNI152NLin6Asym_desc-preproc_T{n_volumes}_bold.nii.gz"
    if not bold.exists():
        brain = binary_dilation(np.asarray(nib.load(atlas).dataobj) > 0, iterations=2).ravel(order="F")
        header = nib.Nifti1Header()
        header.set_data_shape(GRID + (n_volumes,))
        header.set_data_dtype(np.float32)
        header.set_qform(AFFINE, code=4)
        header.set_sform(AFFINE, code=4)
        header.set_xyzt_units("mm", "sec")
        header["pixdim"][4] = 0.735
        header["vox_offset"] = 352
        rng = np.random.default_rng(0)
        base = np.where(brain, 1000 + 200 * rng.random(brain.size), 0).astype(np.float32)
        tmp = bold.with_suffix(".tmp")
        with igzip.open(tmp, "wb", compresslevel=1) as fh:
            fh.write(header.binaryblock + b"\x00" * (352 - len(header.binaryblock)))
            for _ in range(n_volumes):
                vol = base + np.where(brain, rng.standard_normal(brain.size, dtype=np.float32) * 20, 0)
                fh.write(vol.astype("<f4").tobytes())
        os.replace(tmp, bold)
    return atlas, labels, bold


def run_method(method: str, atlas: Path, labels: Path, bold: Path, result: Path) -> None:
    """Executed in a child process: parcellate once and save the [T, R] result (decompress: read only), and the
    seconds of that work alone (after the imports) beside it."""
    start = time.perf_counter()
    _work(method, atlas, labels, bold, result)
    result.with_suffix(".seconds").write_text(f"{time.perf_counter() - start:.3f}")


def _work(method: str, atlas: Path, labels: Path, bold: Path, result: Path) -> None:
    if method == "decompress":
        from isal import igzip

        buffer = bytearray(64 << 20)
        with igzip.open(bold, "rb") as fh:
            while fh.readinto(buffer):
                pass
        return
    if method == "brainjepa":
        from brainjepa.preprocess.parcellate import Atlas, parcellate_bold

        loaded = Atlas.load(atlas, labels)
        ts, _, _ = parcellate_bold(bold, loaded)
    else:
        import warnings

        from nilearn.maskers import NiftiLabelsMasker

        warnings.simplefilter("ignore")
        ts = NiftiLabelsMasker(str(atlas), strategy="mean").fit_transform(str(bold))
    np.save(result, ts)


def measure(method: str, atlas: Path, labels: Path, bold: Path, out: Path) -> dict:
    result = out / f"result_{method}.npy"
    cmd = [sys.executable, __file__, "--child", method, str(atlas), str(labels), str(bold), str(result)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{method} failed with status {status}")
    work = float(result.with_suffix(".seconds").read_text())
    return {"method": method, "wall_s": round(wall, 2), "work_s": round(work, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--atlas-dir", type=Path, default=repo.parent / "shared" / "data" / "atlases")
    parser.add_argument("--out", type=Path, default=repo / "bench" / "out")
    parser.add_argument("--volumes", type=int, default=490)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, *paths = args.child
        run_method(method, *map(Path, paths))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    atlas, labels, bold = build_inputs(args.atlas_dir, args.out, args.volumes)
    print(f"input: {bold.name}, {bold.stat().st_size / 1e6:.0f} MB gzipped, {GRID + (args.volumes,)} float32")
    methods = ("decompress", "brainjepa", "nilearn")
    rows = [measure(m, atlas, labels, bold, args.out) for _ in range(args.repeats) for m in methods]
    for row in rows:
        print(json.dumps(row))
    ours = np.load(args.out / "result_brainjepa.npy")
    ref = np.load(args.out / "result_nilearn.npy")
    best = {m: min(r["wall_s"] for r in rows if r["method"] == m) for m in methods}
    work = {m: min(r["work_s"] for r in rows if r["method"] == m) for m in methods}
    rss = {m: max(r["peak_rss_mb"] for r in rows if r["method"] == m) for m in methods}
    print(json.dumps({
        "speedup_best_wall": round(best["nilearn"] / best["brainjepa"], 2),
        "brainjepa_over_decompress": round(best["brainjepa"] / best["decompress"], 2),
        "decompress_best_wall_s": best["decompress"],
        "brainjepa_over_decompress_work": round(work["brainjepa"] / work["decompress"], 2),
        "work_s": work,
        "brainjepa_best_wall_s": best["brainjepa"], "nilearn_best_wall_s": best["nilearn"],
        "brainjepa_peak_rss_mb": rss["brainjepa"], "nilearn_peak_rss_mb": rss["nilearn"],
        "max_rel_diff": float(np.max(np.abs(ours - ref) / np.abs(ref))), "shape": list(ours.shape),
    }))


if __name__ == "__main__":
    main()
