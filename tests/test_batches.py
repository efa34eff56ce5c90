"""Batches of runs for the per-run stages: stable assignment, naming, digests and per-run error context."""

from __future__ import annotations

import pandas as pd
import pytest

from brainjepa import batches
from brainjepa.errors import InputError
from brainjepa.group.splits import make_splits
from brainjepa.sheets import run_id

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
BATCHING = {"default": 1, "cohorts": {"big": 4, "small": 2}}


def _split_table(subjects: dict[str, int], sessions: int = 1) -> pd.DataFrame:
    """The split table of cohorts {name: n_subjects} ("big" is the pretraining cohort)."""
    rows = [{"cohort": c, "subject": f"{c}{i:04d}", "session": str(s), "run": "1"}
            for c, n in subjects.items() for i in range(1, n + 1) for s in range(1, sessions + 1)]
    samples = pd.DataFrame(rows)
    samples["run_id"] = [run_id(r) for r in rows]
    return make_splits(samples, 0, FRACTIONS, "big", 0.8)


def test_batch_of_is_a_stable_balanced_hash():
    indices = [batches.batch_of("big", f"big{i:04d}", 4) for i in range(2000)]
    assert set(indices) == {0, 1, 2, 3}
    assert all(400 < indices.count(k) < 600 for k in range(4))
    assert indices == [batches.batch_of("big", f"big{i:04d}", 4) for i in range(2000)]
    assert batches.batch_of("big", "big0001", 1) == 0
    other = [batches.batch_of("other", f"big{i:04d}", 4) for i in range(2000)]
    assert other != indices  # the cohort enters the hash
    with pytest.raises(ValueError, match="positive integer"):
        batches.batch_of("big", "big0001", 0)


def test_batch_names_and_rule_names():
    assert batches.batch_name("ukbsim", 3, 4) == "ukbsim-b03"
    assert batches.batch_name("ukbsim", 1, 4, held_out=True) == "ukbsim-h01"
    assert batches.batch_name("ukb", 7, 400) == "ukb-b007"
    assert batches.BATCH_NAME.match("ukbsim-h01")["cohort"] == "ukbsim"
    assert batches.rule_name("parcellate", "ukbsim-b03") == "parcellate_ukbsim_b03"
    assert batches.n_batches_of("small", BATCHING) == 2 and batches.n_batches_of("other", BATCHING) == 1


def test_assignment_keeps_every_run_when_subjects_are_added():
    before = batches.assign_batches(_split_table({"big": 120, "small": 30}, sessions=2), BATCHING, "big")
    after = batches.assign_batches(_split_table({"big": 200, "small": 45, "new": 5}, sessions=2), BATCHING, "big")
    where = {r: name for name, runs in after.items() for r in runs}
    assert all(where[r] == name for name, runs in before.items() for r in runs)
    assert set(after) - set(before) <= {"new-b00"} | {f"big-{p}0{k}" for p in "bh" for k in range(4)}
    assert len(after["new-b00"]) == 5 * 2  # a new cohort: one batch (default), both sessions
    # all runs (sessions) of a subject share a batch
    subject_batches = pd.Series(where).groupby(lambda r: r.split("_ses-")[0]).nunique()
    assert (subject_batches == 1).all()


def test_pretraining_cohort_held_out_subjects_are_batched_apart():
    table = _split_table({"big": 300, "small": 20})
    assigned = batches.assign_batches(table, BATCHING, "big")
    split_of = dict(zip(table["run_id"], table["split"]))
    assert sorted(assigned) == [f"big-{p}0{k}" for p in "bh" for k in range(4)] + ["small-b00", "small-b01"]
    for name, runs in assigned.items():
        assert runs == sorted(runs)
        if name.startswith("big-b"):
            assert {split_of[r] for r in runs} == {"pretrain"}
        else:
            assert "pretrain" not in {split_of[r] for r in runs}
    assert sum(map(len, assigned.values())) == len(table)


def test_content_digest():
    rows = [{"run_id": "a/sub-1_ses-1_run-1", "bold": "x.nii.gz"}]
    assert batches.content_digest(rows) == batches.content_digest([dict(rows[0])])
    assert len(batches.content_digest(rows)) == 16
    assert batches.content_digest(rows) != batches.content_digest([{**rows[0], "bold": "y.nii.gz"}])


def test_select_runs_and_errors_naming_the_run():
    samples = pd.DataFrame({"run_id": ["a/sub-1_ses-1_run-1", "a/sub-2_ses-1_run-1"]}).set_index("run_id", drop=False)
    assert list(batches.select_runs(samples, ["a/sub-2_ses-1_run-1"], "s.tsv")["run_id"]) == ["a/sub-2_ses-1_run-1"]
    assert batches.select_runs(samples, None, "s.tsv") is samples
    with pytest.raises(InputError, match=r"s.tsv: no row for run a/sub-3_ses-1_run-1 \(and 1 more\)"):
        batches.select_runs(samples, ["a/sub-3_ses-1_run-1", "a/sub-4_ses-1_run-1"], "s.tsv")
    with pytest.raises(InputError, match=r"^run a/sub-1_ses-1_run-1: x.nii.gz: bad"):
        with batches.naming_run("a/sub-1_ses-1_run-1"):
            raise InputError("x.nii.gz: bad")
    seen = []

    def process(item: int) -> None:
        if item == 2:
            raise ValueError("broken")
        seen.append(item)

    with pytest.raises(RuntimeError, match=r"^run r2: ValueError: broken"):
        batches.for_each_run([("r1", 1), ("r2", 2), ("r3", 3)], process, "test")
    assert seen == [1, 3]                      # a bad run stops no other run of its batch

    def process_many(item: int) -> None:
        if item % 2 == 0:
            raise InputError(f"f{item}.nii.gz: bad")
        seen.append(item)

    with pytest.raises(InputError, match=r"^7 of 14 runs failed \(test\): run r2: f2.nii.gz: bad; run r4: f4.nii.gz: "
                                         r"bad; .*run r10: f10.nii.gz: bad; and 2 more$"):
        batches.for_each_run([(f"r{k}", k) for k in range(1, 15)], process_many, "test")


def test_a_stamp_lists_the_batch_files_and_replaces_the_batch_older_stamps(tmp_path):
    from brainjepa.batches import write_stamp

    files = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for i, f in enumerate(files):
        f.write_bytes(b"x" * (i + 3))
    stamps = tmp_path / "_batches"
    stamps.mkdir()
    old, other = stamps / "c-b00-0123abcd.tsv", stamps / "c-b01-0123abcd.tsv"
    old.write_text("file\tbytes\n")
    other.write_text("file\tbytes\n")
    write_stamp(stamps / "c-b00-89abcdef.tsv", files)
    table = pd.read_csv(stamps / "c-b00-89abcdef.tsv", sep="\t")
    assert table.to_dict("list") == {"file": [str(f) for f in files], "bytes": [3, 4]}
    assert not old.exists() and other.exists()                 # another batch's stamp stays
    with pytest.raises(InputError, match=r"c-b01-00000000.tsv: the batch did not write 1 of its files, e.g. .*gone"):
        write_stamp(stamps / "c-b01-00000000.tsv", [files[0], tmp_path / "gone.parquet"])
    assert not (stamps / "c-b01-00000000.tsv").exists() and other.exists()
