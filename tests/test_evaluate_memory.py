"""Host memory of the evaluation stage: its peak does not grow with the number of subjects (issue 28), and the
rules' mem_mb arithmetic (brainjepa.train.launch.job_memory_mb)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from brainjepa.train.launch import job_memory_mb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def test_evaluation_peak_memory_does_not_grow_with_the_cohort(tmp_path):
    """bench/evaluate_memory.py at 40 and 240 subjects (128 ROIs, 2 windows of 160 per run: 39 MB of float32
    windows at 240): the features stage and a fine-tuning job read their windows from the shards batch by batch,
    so the peak of their allocations grows by the readers' bounded cache at most. Measured with the bench at 40 ->
    400 subjects (tracemalloc, MB): features 22 -> 129 and fine-tuning 90 -> 174 before; 22 -> 28 and 84 -> 94
    now (the test uses 240 to keep the suite's time)."""
    import evaluate_memory

    out = evaluate_memory.main(["--sizes", "40", "240", "--stages", "features", "finetune", "--root",
                                str(tmp_path)])
    peak = {(p["stage"], p["subjects"]): p["traced_mb"] for p in out["peaks"]}
    for stage in ("features", "finetune"):
        assert peak[stage, 240] < peak[stage, 40] + 16, (stage, peak)


def test_streamed_windows_equal_the_stored_ones(tmp_path):
    """The streamed windows are the stored matrices cut to the window, in the task's order, in any index order."""
    import evaluate_memory

    from brainjepa.evaluate.tasks import TaskConfig, load_task, read_split, split_manifests

    root = evaluate_memory.make_cohort(tmp_path, 30, 8, 64, 32, shard_bytes=4096)
    manifests = split_manifests(root / "shards")
    w = load_task(TaskConfig.from_dict("age", {"cohorts": ["c"], "label": "age", "kind": "regression"}),
                  manifests, 32, with_data=True)
    runs = {r: m for s in ("train", "val", "test") for r, m in
            zip(*(lambda f: (f["run_id"], f["data"]))(read_split(manifests[s], s, [], True)))}
    expected = np.stack([runs[r][:, s0:s0 + 32] for r, s0 in zip(w.run_id, w.start)]).astype(np.float32)
    assert len(w.data.shards) > 3                                   # several shards, several row groups each
    np.testing.assert_array_equal(np.asarray(w.data), expected)
    order = np.random.default_rng(0).permutation(len(expected))
    np.testing.assert_array_equal(w.data[order], expected[order])
    np.testing.assert_array_equal(w.data.take(w.mask("val"))[:], expected[w.mask("val")])
    np.testing.assert_array_equal(w.runs[3], runs[w.run_id[3]].astype(np.float32))


def test_job_memory_follows_the_data_and_the_processes():
    paper = {"n_rois": 450, "window": 160, "embed_dim": 768, "depth": 12}
    small, large = (job_memory_mb("features", n_windows=n, **paper) for n in (4_800, 24_000))
    assert small == large == 4000                       # the windows stream: the cohort's size hardly matters
    fc = [job_memory_mb("evaluate", n_windows=n, protocol="fc_linear", **paper) for n in (4_800, 24_000)]
    assert fc[1] > 2 * fc[0] > 8000                     # FC values per window are kept (101,025 at 450 ROIs)
    one, four = (job_memory_mb("pretrain", n_windows=0, processes=p, num_workers=2, **paper) for p in (1, 4))
    assert four >= 4 * one - 3000 and one > 5000
    with pytest.raises(ValueError, match="stage"):
        job_memory_mb("train", n_windows=1, **paper)
