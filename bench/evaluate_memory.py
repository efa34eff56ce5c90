"""Host memory of the evaluation stage at two cohort sizes: does its peak grow with the number of subjects?

Builds a synthetic cohort (one run of ``--timepoints`` steps per subject, ``--rois`` ROIs, float16 Parquet shards
of 1 MB split 60/20/20 by subject) for each size, then runs, each in a fresh process, the ``features`` stage
(:func:`brainjepa.evaluate.features.run_features`, a random tiny encoder) and one fine-tuning job
(:func:`brainjepa.evaluate.run.run_evaluation`, ``<encoder>_finetune``, one epoch) and the FC baseline
(``fc_linear``, whose R (R - 1) / 2 values per window it keeps by design), and measures:

- ``traced_mb``: the peak of Python's and numpy's allocations (``tracemalloc``) during the stage, where the windows
  of the cohort would be held;
- ``rss_mb``: the process's peak resident memory (``ru_maxrss``), torch and the interpreter included.

    python bench/evaluate_memory.py                         # 40 and 400 subjects, 128 ROIs, 2 windows of 160
    python bench/evaluate_memory.py --sizes 40 400 --stages features finetune --json out.json

Prints one line per (stage, subjects) and a JSON summary; ``tests/test_evaluate_memory.py`` asserts on it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

STAGES = ("features", "finetune", "fc_linear")
MODEL = ("model:\n  size: tiny\n  embed_dim: 32\n  depth: 1\n  num_heads: 4\n  predictor_dim: 16\n"
         "  predictor_depth: 1\n  patch_size: 32\n")


def make_cohort(root: Path, n_subjects: int, n_rois: int, timepoints: int, window: int,
                shard_bytes: int = 2**20) -> Path:
    """Shards (train/val/test, of about ``shard_bytes``: many shards, as a real cohort has) of one cohort ``c`` of
    ``n_subjects`` with an ``age`` label, a gradients table and a tiny model config under ``root``; returns
    ``root``."""
    import numpy as np
    import pandas as pd

    from brainjepa.data.shards import build_shards
    from brainjepa.group.gradients import write_gradients
    from brainjepa.group.scaling import ScalingStats
    from brainjepa.io import write_timeseries

    rng = np.random.default_rng(0)
    names = [f"roi{i}" for i in range(n_rois)]
    rows = []
    for i in range(n_subjects):
        path = root / "runs" / f"s{i:04d}.parquet"
        write_timeseries(rng.normal(size=(timepoints, n_rois)).astype(np.float32), names, path, {"tr": 2.0})
        split = ("train", "val", "test")[0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)]
        rows.append({"run_id": f"c/sub-s{i:04d}_ses-1_run-1", "cohort": "c", "subject": f"s{i:04d}",
                     "session": "1", "run": "1", "split": split, "path": str(path),
                     "age": round(float(rng.uniform(45, 80)), 1)})
    frame = pd.DataFrame(rows)
    stats = ScalingStats("subject_mean", tuple(names), np.zeros(n_rois), np.ones(n_rois), n_subjects)
    for split in ("train", "val", "test"):
        build_shards(frame[frame["split"] == split], stats, root / "shards" / split, window=window,
                     label_columns={"age": "continuous"}, flat=True, rows_per_row_group=8,
                     max_shard_bytes=shard_bytes)
    write_gradients(rng.normal(size=(n_rois, 4)), np.linspace(1, 0.5, 4), names, root / "gradients.tsv")
    (root / "model.yaml").write_text(MODEL)
    return root


def _stage(root: str, stage: str) -> dict:
    """Run one stage on the cohort at ``root`` in this process; its peak memory (module docstring)."""
    import resource
    import tracemalloc

    import torch

    from brainjepa.evaluate.config import ProtocolConfig
    from brainjepa.evaluate.features import run_features
    from brainjepa.evaluate.run import run_evaluation
    from brainjepa.evaluate.tasks import TaskConfig

    torch.set_num_threads(1)
    base = Path(root)
    spec = {"kind": "random", "config": str(base / "model.yaml"), "gradients": str(base / "gradients.tsv")}
    task = TaskConfig.from_dict("age", {"cohorts": ["c"], "label": "age", "kind": "regression"})
    settings = ProtocolConfig.from_dict({"finetune": {"epochs": 1, "batch_size": 8, "head_init": "random"},
                                         "device": "cpu", "precision": "fp32"})
    tracemalloc.start()
    if stage == "features":
        run_features(spec, base / "shards", ["c"], base / "features.npz", device_kind="cpu", precision="fp32")
    else:
        method = "random_finetune" if stage == "finetune" else stage
        run_evaluation(task, method, 0, base / "shards", base / f"{stage}.json", settings,
                       encoder_spec=spec if stage == "finetune" else None)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"traced_mb": traced / 2**20, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(root: Path, stage: str) -> dict:
    """:func:`_stage` in a fresh interpreter (so that the peaks are the stage's own)."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import evaluate_memory as m; "
            f"print(json.dumps(m._stage({str(root)!r}, {stage!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{stage} on {root} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 400], help="subjects per cohort")
    parser.add_argument("--rois", type=int, default=128)
    parser.add_argument("--timepoints", type=int, default=320, help="steps per run (2 windows of 160)")
    parser.add_argument("--window", type=int, default=160)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--root", type=Path, help="where the cohorts go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    out: dict = {"rois": args.rois, "timepoints": args.timepoints, "window": args.window, "peaks": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            root = (args.root or Path(tmp)) / f"cohort-{n}"
            make_cohort(root, n, args.rois, args.timepoints, args.window)
            for stage in args.stages:
                peak = {"stage": stage, "subjects": n, **measure(root, stage)}
                print(f"{stage:10s} {n:6d} subjects: traced peak {peak['traced_mb']:8.1f} MB, "
                      f"peak RSS {peak['rss_mb']:8.1f} MB", flush=True)
                out["peaks"].append(peak)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
