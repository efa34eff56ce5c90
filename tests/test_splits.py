"""The splits stage: fractions, stability, stratification, the balance report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainjepa import sheets
from brainjepa.errors import InputError
from brainjepa.group import splits

from group_helpers import FRACTIONS, _samples


def test_split_fractions_and_pretraining_cohort():
    table = splits.make_splits(_samples({"big": 2000, "small": 1000}), 0, FRACTIONS, "big", 0.8)
    big = table[table.cohort == "big"]["split"].value_counts(normalize=True)
    small = table[table.cohort == "small"]["split"].value_counts(normalize=True)
    assert big["pretrain"] == pytest.approx(0.8, abs=0.03)
    assert big["train"] == pytest.approx(0.2 * 0.6, abs=0.03) and big["test"] == pytest.approx(0.04, abs=0.02)
    assert "pretrain" not in small and small["train"] == pytest.approx(0.6, abs=0.04)
    assert small["val"] == pytest.approx(0.2, abs=0.04)


def test_splits_are_stable_when_subjects_are_added():
    before = splits.make_splits(_samples({"a": 50, "b": 30}), 7, FRACTIONS, "a", 0.8)
    after = splits.make_splits(_samples({"a": 80, "b": 30, "c": 20}), 7, FRACTIONS, "a", 0.8)
    merged = before.merge(after, on="run_id", suffixes=("_before", "_after"))
    assert len(merged) == len(before) and (merged["split_before"] == merged["split_after"]).all()
    other_seed = splits.make_splits(_samples({"a": 50, "b": 30}), 8, FRACTIONS, "a", 0.8)
    assert (other_seed["split"] != before["split"]).any()


def test_every_run_of_a_subject_is_in_its_split():
    table = splits.make_splits(_samples({"a": 40}, runs=3), 0, FRACTIONS)
    assert (table.groupby("subject")["split"].nunique() == 1).all()


def test_subject_in_two_cohorts_is_an_error():
    samples = _samples({"a": 3, "b": 3})
    samples.loc[samples.index[-1], "subject"] = "a000"
    samples["run_id"] = [sheets.run_id(r) for r in samples.to_dict("records")]
    with pytest.raises(InputError, match=r"subject 'a000' has runs in several cohorts \['a', 'b'\]"):
        splits.make_splits(samples, 0, FRACTIONS)


def test_bad_fractions():
    with pytest.raises(InputError, match="sum to 1"):
        splits.make_splits(_samples({"a": 3}), 0, {"train": 0.6, "val": 0.2, "test": 0.3})


def test_split_balance_report():
    table = splits.make_splits(_samples({"a": 60}), 0, FRACTIONS)
    pheno = pd.DataFrame({"cohort": "a", "subject": [f"a{i:03d}" for i in range(60)], "dx": [0, 1] * 30})
    balance = splits.split_balance(table, pheno, "dx")
    assert balance.to_numpy().sum() == 60 and set(balance.columns) == {"train", "val", "test"}


def _phenotypes(samples: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    subjects = samples.drop_duplicates("subject")[["cohort", "subject"]].reset_index(drop=True)
    subjects["dx"] = rng.integers(0, 2, size=len(subjects)).astype(float)
    return subjects


@pytest.mark.parametrize("n", [7, 12, 25, 60])
def test_stratified_cohort_is_exactly_balanced(n):
    samples = _samples({"down": n, "other": 40})
    pheno = _phenotypes(samples, np.random.default_rng(n))
    table = splits.make_splits(samples, 0, FRACTIONS, stratify={"down": "dx"}, phenotypes=pheno)
    merged = table.merge(pheno, on=["cohort", "subject"])
    for value, group in merged[merged.cohort == "down"].groupby("dx"):
        counts = group["split"].value_counts().reindex(list(splits.SPLITS), fill_value=0).tolist()
        assert counts == splits.stratum_counts(len(group), FRACTIONS), (value, counts)
    plain = splits.make_splits(samples, 0, FRACTIONS)
    assert (table[table.cohort == "other"]["split"].to_numpy() == plain[plain.cohort == "other"]["split"]).all()


def test_stratum_counts_largest_remainder():
    assert splits.stratum_counts(10, FRACTIONS) == [6, 2, 2]
    assert splits.stratum_counts(7, FRACTIONS) == [4, 2, 1]
    assert splits.stratum_counts(2, FRACTIONS) == [1, 1, 0]
    assert sum(splits.stratum_counts(13, FRACTIONS)) == 13


def test_stratified_growth_moves_few_subjects():
    before_samples = _samples({"down": 40})
    after_samples = _samples({"down": 44})
    pheno = _phenotypes(after_samples, np.random.default_rng(5))
    before = splits.make_splits(before_samples, 0, FRACTIONS, stratify={"down": "dx"}, phenotypes=pheno)
    after = splits.make_splits(after_samples, 0, FRACTIONS, stratify={"down": "dx"}, phenotypes=pheno)
    merged = before.merge(after, on="run_id", suffixes=("_before", "_after"))
    moved = (merged["split_before"] != merged["split_after"]).sum()
    assert moved <= 2 * 4 * 2  # at most the rank-boundary subjects of each stratum per added subject


def test_stratifying_the_pretraining_cohort_keeps_its_pretrain_set():
    samples = _samples({"big": 200})
    pheno = _phenotypes(samples, np.random.default_rng(1))
    plain = splits.make_splits(samples, 0, FRACTIONS, "big", 0.8)
    strat = splits.make_splits(samples, 0, FRACTIONS, "big", 0.8, stratify={"big": "dx"}, phenotypes=pheno)
    assert ((plain["split"] == "pretrain") == (strat["split"] == "pretrain")).all()


def test_stratify_by_unknown_label():
    samples = _samples({"down": 5})
    with pytest.raises(InputError, match="stratified by 'dx', which is not a phenotype column"):
        splits.make_splits(samples, 0, FRACTIONS, stratify={"down": "dx"},
                           phenotypes=samples[["cohort", "subject"]])
