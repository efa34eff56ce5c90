"""Sample sheets: schema validation with errors that name the line and column."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from brainjepa.cli import main
from brainjepa.errors import InputError
from brainjepa.sheets import load_phenotypes, load_samples


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def bold(tmp_path):
    path = tmp_path / "sub-1_bold.nii.gz"
    path.write_bytes(b"")
    return path


def test_valid_samples(tmp_path, bold):
    sheet = write(tmp_path / "s.tsv", f"cohort\tsubject\tsession\trun\tbold\ttr\nA\t1\t1\t1\t{bold}\t0.8\n"
                                      f"A\t1\t2\t1\t{bold}\t\n")
    frame = load_samples(sheet)
    assert list(frame["run_id"]) == ["A/sub-1_ses-1_run-1", "A/sub-1_ses-2_run-1"]
    assert frame["tr"].iloc[0] == 0.8 and pd.isna(frame["tr"].iloc[1])


@pytest.mark.parametrize("body,match", [
    ("A\t1\t1\t1\t{bold}\t\nA\t1\t1\t1\t{bold}\t\n", r"duplicate rows .* lines \[2, 3\]"),
    ("A\t1\t1\t1\t\t\n", "line 2: row: exactly one of 'bold' and 'timeseries'"),
    ("A\t1\t1\t1\t{bold}\tfast\n", "line 2: column 'tr': 'fast' is not of type 'number'"),
    ("A\t1\t1\t1\t{bold}\t-2\n", "line 2: column 'tr': -2.0 is less than or equal to the minimum"),
    ("A\tsub_01\t1\t1\t{bold}\t\n", "line 2: column 'subject': 'sub_01' does not match"),
    ("A\t1\t1\t1\tmissing_bold.nii.gz\t\n", "line 2: column 'bold': file missing_bold.nii.gz does not exist"),
    ("A\t1\t1\t1\tsub-{{x}}_bold.nii.gz\t\n", r"line 2: column 'bold': sub-\{x\}_bold.nii.gz: braces"),
])
def test_bad_samples(tmp_path, bold, body, match):
    sheet = write(tmp_path / "s.tsv", "cohort\tsubject\tsession\trun\tbold\ttr\n" + body.format(bold=bold))
    with pytest.raises(InputError, match=match) as info:
        load_samples(sheet)
    assert str(sheet) in str(info.value)


def test_unknown_column(tmp_path, bold):
    sheet = write(tmp_path / "s.tsv", f"cohort\tsubject\tsession\trun\tbold\tsite\nA\t1\t1\t1\t{bold}\tX\n")
    with pytest.raises(InputError, match=r"unknown column\(s\) \['site'\]"):
        load_samples(sheet)


def test_both_bold_and_timeseries(tmp_path, bold):
    sheet = write(tmp_path / "s.tsv", f"cohort\tsubject\tsession\trun\tbold\ttimeseries\nA\t1\t1\t1\t{bold}\t{bold}\n")
    with pytest.raises(InputError, match="exactly one of 'bold' and 'timeseries'"):
        load_samples(sheet)


def test_files_produced_by_a_rule_may_be_missing(tmp_path):
    sheet = write(tmp_path / "s.tsv", "cohort\tsubject\tsession\trun\tbold\nA\t1\t1\t1\tdemo/x_bold.nii.gz\n")
    assert len(load_samples(sheet, produced=lambda p: p.startswith("demo/"))) == 1


def test_phenotypes(tmp_path):
    good = write(tmp_path / "p.tsv", "cohort\tsubject\tage\tsex\nA\t1\t50.5\tF\nA\t2\t\tM\n")
    assert load_phenotypes(good).shape == (2, 4)
    dup = write(tmp_path / "d.tsv", "cohort\tsubject\tage\nA\t1\t50\nA\t1\t51\n")
    with pytest.raises(InputError, match="duplicate rows"):
        load_phenotypes(dup)
    bad = write(tmp_path / "b.tsv", "cohort\tsubject\tage group\nA\t1\t50\n")
    with pytest.raises(InputError, match="line 2"):
        load_phenotypes(bad)


def test_validate_cli_reports_error_without_traceback(tmp_path, bold, capsys):
    sheet = write(tmp_path / "s.tsv", f"cohort\tsubject\tsession\trun\tbold\nA\t1\t1\t1\t{bold}\nA\t1\t1\t1\t{bold}\n")
    assert main(["validate", "--samples", str(sheet)]) == 1
    err = capsys.readouterr().err
    assert "duplicate rows" in err and "Traceback" not in err


@pytest.mark.parametrize("body,match", [
    ("a\t1\tyoung\tF\t0\n", r"line 2: column 'age': 'young' is not a number \(declared continuous\)"),
    ("a\t1\t50\tF\t2\n", r"line 2: column 'diagnosis': '2' is not 0 or 1 \(declared binary\)"),
])
def test_phenotype_values_outside_their_type(tmp_path, body, match):
    path = tmp_path / "p.tsv"
    path.write_text("cohort\tsubject\tage\tsex\tdiagnosis\n" + body)
    types = {"age": "continuous", "sex": "categorical", "diagnosis": "binary"}
    with pytest.raises(InputError, match=match):
        load_phenotypes(path, types)


def test_phenotype_types_and_undeclared_column(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("cohort\tsubject\tage\tsex\tdiagnosis\na\t1\t50.5\tF\t\na\t2\t61\tM\t1\n")
    frame = load_phenotypes(path, {"age": "continuous", "sex": "categorical", "diagnosis": "binary"})
    assert frame["age"].tolist() == [50.5, 61.0] and np.isnan(frame["diagnosis"][0])
    with pytest.raises(InputError, match=r"\['sex', 'diagnosis'\] are not declared"):
        load_phenotypes(path, {"age": "continuous"})


# ------------------------------------------------------------------ checks across rows and sheets (validate = workflow)
HEADER = "cohort\tsubject\tsession\trun\tbold\ttimeseries\ttr\n"


def _validate(tmp_path, samples: str, phenotypes: str | None = None, config: str | None = None):
    args = ["validate", "--samples", str(write(tmp_path / "s.tsv", samples))]
    if phenotypes is not None:
        args += ["--phenotypes", str(write(tmp_path / "p.tsv", phenotypes))]
    if config is not None:
        args += ["--config", str(write(tmp_path / "c.yaml", config))]
    return main(args)


@pytest.mark.parametrize("body,match", [
    ("", "the sample sheet lists no runs"),
    ("A\t1\t1\t1\t\t{ts}\t\n", r"line 2: column 'tr': a 'timeseries' row needs its TR"),
    ("A\t1\t1\t1\t{bold}\t\t\nB\t1\t1\t1\t{bold}\t\t\n", r"subject '1' is listed in cohorts \['A', 'B'\]"),
])
def test_sheet_errors_across_rows(tmp_path, bold, capsys, body, match):
    ts = write(tmp_path / "ts.tsv", "a\n1\n")
    assert _validate(tmp_path, HEADER + body.format(bold=bold, ts=ts)) == 1
    err = capsys.readouterr().err
    assert re.search(match, err), err


CONFIG = """labels: {age: continuous, diagnosis: binary}
splits: {seed: 0, fractions: {train: 0.6, val: 0.2, test: 0.2}, pretraining: {cohort: A, fraction: 0.8},
         stratify: {}}
"""


@pytest.mark.parametrize("phenotypes,match", [
    ("cohort\tsubject\tage\nA\t1\tyoung\n", r"line 2: column 'age': 'young' is not a number"),
    ("cohort\tsubject\tdiagnosis\nA\t1\t2\n", r"'2' is not 0 or 1"),
    ("cohort\tsubject\tmood\nA\t1\t3\n", r"label column\(s\) \['mood'\] are not declared"),
])
def test_validate_with_the_config_checks_label_types(tmp_path, bold, capsys, phenotypes, match):
    assert _validate(tmp_path, HEADER + f"A\t1\t1\t1\t{bold}\t\t\n", phenotypes, CONFIG) == 1
    assert re.search(match, capsys.readouterr().err)


def test_validate_warns_of_unlabelled_subjects_and_of_cohorts_without_val_or_test(tmp_path, bold, capsys):
    rows = "".join(f"A\t{i}\t1\t1\t{bold}\t\t\n" for i in range(1, 11)) + f"B\t99\t1\t1\t{bold}\t\t\n"
    phenotypes = "cohort\tsubject\tage\n" + "".join(f"A\t{i}\t50\n" for i in range(1, 10))
    assert _validate(tmp_path, HEADER + rows, phenotypes, CONFIG) == 0
    captured = capsys.readouterr()
    assert "11 runs of 11 subjects: valid" in captured.out
    assert "2 subject(s)" in captured.err and "'A/10'" in captured.err and "'B/99'" in captured.err
    assert "cohort B: no " in captured.err and "train " in captured.err      # one subject cannot fill 3 splits


# ------------------------------------------------------------------ every problem of a sheet at once, and its encoding
def test_validate_reports_every_phenotype_value_error(tmp_path, bold, capsys):
    """Only the first error was reported: a `2` in a binary column showed only once `seventy` was fixed."""
    rows = "".join(f"A\t{i}\t5{i}\t0\n" for i in range(1, 7)) + "A\t7\tseventy\t1\nA\t8\t60\t2\nA\t9\tsixty\tyes\n"
    samples = HEADER + "".join(f"A\t{i}\t1\t1\t{bold}\t\t\n" for i in range(1, 10))
    assert _validate(tmp_path, samples, "cohort\tsubject\tage\tdiagnosis\n" + rows, CONFIG) == 1
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'p.tsv'}: 4 problems: line 8: column 'age': 'seventy' is not a number (declared continuous); "
            "line 9: column 'diagnosis': '2' is not 0 or 1 (declared binary); line 10: column 'age': 'sixty' is not a "
            "number (declared continuous); line 10: column 'diagnosis': 'yes' is not 0 or 1 (declared binary)") in err


def test_every_sample_row_error_is_reported_in_the_same_style(tmp_path, bold):
    rows = (f"A\t1\t1\t1\t{bold}\t\t\n" + f"A\tsub_2\t1\t1\t{bold}\t\t\n" + "A\t3\t1\t1\t\t\t\n"
            + f"A\t4\t1\t1\t{bold}\t\tfast\n" + "A\t5\t1\t1\tmissing_bold.nii.gz\t\t\n")
    with pytest.raises(InputError) as info:
        load_samples(write(tmp_path / "s.tsv", HEADER + rows))
    assert str(info.value) == (
        f"{tmp_path / 's.tsv'}: 4 problems: line 3: column 'subject': 'sub_2' does not match '^[A-Za-z0-9]+$'; "
        "line 4: row: exactly one of 'bold' and 'timeseries' must be given; line 5: column 'tr': 'fast' is not of "
        "type 'number'; line 6: column 'bold': file missing_bold.nii.gz does not exist and no rule produces it")


def test_many_problems_are_capped(tmp_path):
    rows = "".join(f"A\t{i}\told\n" for i in range(1, 16))
    path = write(tmp_path / "p.tsv", "cohort\tsubject\tage\n" + rows)
    with pytest.raises(InputError) as info:
        load_phenotypes(path, {"age": "continuous"})
    message = str(info.value)
    assert message.startswith(f"{path}: 15 problems: line 2: column 'age': 'old' is not a number")
    assert message.count("is not a number") == 10 and message.endswith("line 11: column 'age': 'old' is not a number "
                                                                        "(declared continuous) (and 5 more)")


def test_a_column_name_error_is_reported_once(tmp_path):
    path = write(tmp_path / "p.tsv", "cohort\tsubject\tage group\nA\t1\t50\nA\t2\t51\n")
    with pytest.raises(InputError, match=r"p.tsv: line 2: row: 'age group' does not match") as info:
        load_phenotypes(path)
    assert "problems" not in str(info.value)


@pytest.mark.parametrize("sheet", ["phenotypes", "samples"])
def test_a_windows_1252_sheet_names_the_line_and_column_of_the_first_bad_byte(tmp_path, bold, sheet):
    """`not a valid TSV ('utf-8' codec can't decode byte 0xfc in position 1: ...)`: a position in pandas' chunk."""
    if sheet == "phenotypes":
        text = "cohort\tsubject\tcity\tsex\nA\t1\tBern\tF\nA\t2\tZürich café\tMännlich\n"
        where = r"line 3, column 6 \(in column 'city'\): byte 0xfc \(b'A\\t2\\tZ\\xfcrich ca'\)"
        load = load_phenotypes
    else:
        text = HEADER + f"A\t1\t1\t1\t{bold}\t\t\nA\t2\t1\t1\t{tmp_path}/München.nii.gz\t\t\n"
        where = r"line 3, column \d+ \(in column 'bold'\): byte 0xfc"
        load = load_samples
    path = tmp_path / f"cp1252_{sheet}.tsv"
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(InputError, match=f"cp1252_{sheet}.tsv: not UTF-8 text: {where}") as info:
        load(path)
    message = str(info.value)
    assert "position" not in message and "save the file as UTF-8" in message
    assert "Windows-1252" in message and "'ü'" in message
