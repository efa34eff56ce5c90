"""Benchmark: ShardDataset through a DataLoader, windows per second with 0, 1 and 2 workers, per shard format.

Data (synthetic, built into a temporary folder): (a) demo-sized, 64 ROIs x 164 time points, 200 runs;
(b) UK Biobank-sized, 450 ROIs x 490 time points, 300 runs. Per-run files are written with
``brainjepa.io.write_timeseries`` and packed with ``build_shards`` (float16, 16-run row groups / sample groups),
scaled with a ScalingStats of zero medians and unit IQRs, once per format from the same files: ``parquet``,
``webdataset`` (tar shards read from the local folder) and ``webdataset-pipe`` (the same tar shards streamed
through ``shard_url="pipe:cat .../{path}"``, the code path of object storage, without the network).
Each configuration runs a warm-up epoch, then ``--repeats`` full epochs (batch size 32, train mode, window 160,
``set_epoch`` each time); the best epoch is reported. Workers are persistent, so worker start-up and the sha256
checks are paid in the warm-up epoch. One JSON line per (format, data, workers).

    python bench/loader.py [--repeats 3] [--workers 0 1 2] [--datasets demo ukb] [--mode train]
                           [--format parquet webdataset webdataset-pipe] [--max-shard-mb 256]

A train-mode unit streamed from a URL is read from its shard's start (the units come in shuffled order), so
``webdataset-pipe`` reads on average half a shard per unit; ``--max-shard-mb`` about one unit's size (16 runs:
7 MB for the UK Biobank-sized runs) makes each unit one whole shard, read once per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATASETS = {"demo": (64, 164, 200), "ukb": (450, 490, 300)}
FORMATS = {"parquet": "parquet", "webdataset": "webdataset", "webdataset-pipe": "webdataset"}  # -> shard format


def build(root: Path, n_rois: int, n_time: int, n_runs: int, formats: list[str], max_shard_mb: float
          ) -> dict[str, tuple[Path, float]]:
    """Per-run files and one shard set per shard format under ``root``: {format: (manifest path, build time (s))}."""
    from brainjepa.data.shards import build_shards
    from brainjepa.group.scaling import ScalingStats
    from brainjepa.io import write_timeseries

    rois = [f"roi{i:03d}" for i in range(n_rois)]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_runs):
        path = root / "runs" / f"run{i:04d}.parquet"
        write_timeseries(rng.standard_normal((n_time, n_rois), dtype=np.float32), rois, path, {"tr": 2.0})
        rows.append({"run_id": f"bench/sub-{i:04d}_run-1", "cohort": "bench", "subject": f"{i:04d}",
                     "session": "1", "run": "1", "split": "train", "path": str(path)})
    stats = ScalingStats("subject_mean", tuple(rois), np.zeros(n_rois), np.ones(n_rois), n_runs)
    built = {}
    for shard_format in sorted({FORMATS[f] for f in formats}):
        start = time.perf_counter()
        build_shards(pd.DataFrame(rows), stats, root / shard_format, shard_format=shard_format,
                     max_shard_bytes=int(max_shard_mb * 2**20))
        built[shard_format] = (root / shard_format / "manifest.json", time.perf_counter() - start)
    return {f: built[FORMATS[f]] for f in formats}


def measure(manifest: Path, num_workers: int, repeats: int, mode: str, batch_size: int = 32,
            shard_url: str | None = None) -> dict:
    from torch.utils.data import DataLoader

    from brainjepa.data.dataset import ShardDataset

    dataset = ShardDataset(manifest, "train", window=160, mode=mode, shard_url=shard_url)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        persistent_workers=num_workers > 0)
    times, windows = [], 0
    for epoch in range(repeats + 1):  # epoch 0 is the warm-up
        dataset.set_epoch(epoch)
        start = time.perf_counter()
        windows = sum(len(x) for x, _ in loader)
        if epoch:
            times.append(time.perf_counter() - start)
    best = min(times)
    return {"num_workers": num_workers, "batch_size": batch_size, "mode": mode, "windows": windows,
            "epoch_s": [round(t, 4) for t in times], "best_s": round(best, 4),
            "windows_per_s": round(windows / best, 1),
            "windows_per_s_per_worker": round(windows / best / max(num_workers, 1), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--mode", default="train", choices=["train", "eval"])
    parser.add_argument("--format", nargs="+", default=["parquet", "webdataset"], choices=list(FORMATS),
                        dest="formats", help="shard formats to measure, each on the same runs")
    parser.add_argument("--max-shard-mb", type=float, default=256, help="shards.max_shard_mb of the shard sets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="brainjepa-bench-loader-") as tmp:
        for name in args.datasets:
            n_rois, n_time, n_runs = DATASETS[name]
            built = build(Path(tmp) / name, n_rois, n_time, n_runs, args.formats, args.max_shard_mb)
            for shard_format in args.formats:
                manifest, build_s = built[shard_format]
                shards = json.loads(manifest.read_text())["splits"]["train"]
                url = f"pipe:cat {manifest.parent}/{{path}}" if shard_format.endswith("-pipe") else None
                for workers in args.workers:
                    result = measure(manifest, workers, args.repeats, args.mode, shard_url=url)
                    print(json.dumps({"format": shard_format, "data": name, "n_rois": n_rois, "n_timepoints": n_time,
                                      "runs": n_runs, "shards": len(shards),
                                      "shard_bytes": sum(e["bytes"] for e in shards), "build_s": round(build_s, 2),
                                      "cpus": os.cpu_count(), **result}), flush=True)


if __name__ == "__main__":
    main()
