"""The sample sheets: ``samples.tsv`` (one row per run) and ``phenotypes.tsv`` (one row per subject).

Both are validated against JSON schemas (``brainjepa/schemas``) before any job runs; every error names the
file, the line and the column, and one error lists every invalid value of a sheet (up to MAX_PROBLEMS).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import yaml

from brainjepa.errors import InputError

KEY = ["cohort", "subject", "session", "run"]
PATH_COLUMNS = ("bold", "timeseries", "mask")


def load_schema(name: str) -> dict:
    """The JSON schema of a sheet (``samples`` or ``phenotypes``), read from the package's
    ``schemas/<name>.schema.yaml``."""
    return yaml.safe_load(resources.files("brainjepa.schemas").joinpath(f"{name}.schema.yaml").read_text())


# At most this many problems of one sheet are listed in its error (then "(and N more)").
MAX_PROBLEMS = 10


def _read_tsv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: sample sheet does not exist")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    except UnicodeDecodeError:
        raise InputError(_not_utf8(path)) from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{path}: not a valid TSV ({exc})") from exc
    frame.columns = [c.strip() for c in frame.columns]
    return frame.apply(lambda col: col.str.strip())


def _not_utf8(path: Path) -> str:
    """Where a sheet stops being UTF-8: line and column (1-based) of the first undecodable byte, its TSV column,
    the bytes around it, and what they read as in Windows-1252 (the usual culprit: a sheet saved by Excel)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        start, end = exc.start, exc.end
    else:  # pandas decoded in chunks and failed, yet the whole file decodes: report what it can
        return f"{path}: not UTF-8 text; save the file as UTF-8"
    line_start = raw.rfind(b"\n", 0, start) + 1
    line_end = len(raw) if raw.find(b"\n", start) < 0 else raw.find(b"\n", start)
    before = raw[line_start:start].decode("utf-8")
    line, column = raw.count(b"\n", 0, start) + 1, len(before) + 1
    header = raw[:max(raw.find(b"\n"), 0)].decode("utf-8", errors="replace").rstrip("\r").split("\t")
    field = before.count("\t")
    in_column = f" (in column '{header[field].strip()}')" if line > 1 and field < len(header) else ""
    bad = raw[start:end]
    shown = raw[max(line_start, start - 20):min(line_end, start + 8)]
    try:
        as_1252 = f"; in Windows-1252 {' '.join(f'0x{b:02x}' for b in bad)} is {bad.decode('cp1252')!r}"
    except UnicodeDecodeError:
        as_1252 = ""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return f"{path}: not UTF-8 text: the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8"
    return (f"{path}: not UTF-8 text: line {line}, column {column}{in_column}: byte "
            f"{' '.join(f'0x{b:02x}' for b in bad)} ({shown!r}){as_1252}; save the file as UTF-8 (e.g. "
            "iconv -f CP1252 -t UTF-8)")


def _raise_problems(path: Path, problems: list[tuple[int, str]]) -> None:
    """One InputError listing a sheet's problems ``(line, text)`` in line order: the first MAX_PROBLEMS, then how
    many more. A single problem reads ``<path>: line L: <text>``."""
    if not problems:
        return
    problems = sorted(problems, key=lambda p: p[0])
    shown = "; ".join(f"line {line}: {text}" for line, text in problems[:MAX_PROBLEMS])
    more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
    count = f"{len(problems)} problems: " if len(problems) > 1 else ""
    raise InputError(f"{path}: {count}{shown}{more}")


def _records(frame: pd.DataFrame, numeric: tuple[str, ...]) -> list[dict]:
    """Rows as dicts without empty cells; ``numeric`` columns parsed to float where possible."""
    out = []
    for row in frame.to_dict("records"):
        rec = {}
        for key, value in row.items():
            if value in ("", "n/a", "NA"):
                continue
            if key in numeric:
                try:
                    value = float(value)
                except ValueError:
                    pass  # the schema reports it as not a number
            rec[key] = value
        out.append(rec)
    return out


def _row_problems(records: list[dict], schema: dict) -> list[tuple[int, str]]:
    """Every row against the sheet's schema: ``(line, "column 'c': problem")`` for each error of each invalid row.
    An error of the header (a column name) is reported once, at the first row.

    The rows are screened by a compiled validator (fastjsonschema: about 30x faster than jsonschema, which
    matters at 40,000 rows a sheet since the workflow validates at every start); a row it rejects is validated
    again by jsonschema, whose errors name the column. Both read the same schema (draft-7 keywords only)."""
    import fastjsonschema

    screen = fastjsonschema.compile({k: v for k, v in schema.items() if k != "$schema"})
    validator = None
    problems, seen_header = [], set()
    for i, rec in enumerate(records):
        try:
            screen(rec)
            continue
        except fastjsonschema.JsonSchemaException:
            pass
        validator = validator or jsonschema.Draft202012Validator(schema)
        for err in sorted(validator.iter_errors(rec), key=lambda e: list(e.path)):
            column = err.path[0] if err.path else None
            where = f"column '{column}'" if column else "row"
            message = err.message
            if err.validator == "additionalProperties":
                message = f"unknown column(s): {err.message}"
            elif err.validator == "oneOf":
                message = "exactly one of 'bold' and 'timeseries' must be given"
            if err.validator == "additionalProperties" or "propertyNames" in err.schema_path:  # the header's: once
                if message in seen_header:
                    continue
                seen_header.add(message)
            problems.append((i + 2, f"{where}: {message}"))
    return problems


def _check_duplicates(frame: pd.DataFrame, key: list[str], path: Path) -> None:
    dup = frame.duplicated(subset=key, keep=False)
    if dup.any():
        lines = (frame.index[dup] + 2).tolist()
        first = frame.loc[dup, key].iloc[0].to_dict()
        raise InputError(f"{path}: duplicate rows for {first} at lines {lines}")


def load_samples(path: str | Path, produced: Callable[[str], bool] = lambda p: False) -> pd.DataFrame:
    """Read and validate ``samples.tsv``.

    ``produced(path)`` says whether a rule of the workflow creates a file; any other listed file that does
    not exist is an error. Returns one row per run with ``run_id`` and numeric ``tr`` (NaN when absent).
    """
    path = Path(path)
    frame = _read_tsv(path)
    unknown = [c for c in frame.columns if c not in load_schema("samples")["properties"]]
    if unknown:
        raise InputError(f"{path}: unknown column(s) {unknown}; allowed: "
                         f"{list(load_schema('samples')['properties'])}")
    problems = _row_problems(_records(frame, ("tr",)), load_schema("samples"))
    for column in PATH_COLUMNS:
        if column not in frame:
            frame[column] = ""
    for i, row in enumerate(frame[list(PATH_COLUMNS)].itertuples(index=False, name=None)):
        for column, value in zip(PATH_COLUMNS, row):
            if "{" in value or "}" in value:  # Snakemake reads braces in a file name as a wildcard
                problems.append((i + 2, f"column '{column}': {value}: braces {{ }} in a file path cannot go through "
                                        "the workflow (Snakemake takes them for wildcards); rename the file or link "
                                        "it under another name"))
            elif value and not Path(value).exists() and not produced(value):
                problems.append((i + 2, f"column '{column}': file {value} does not exist and no rule produces it"))
    _raise_problems(path, problems)
    _check_duplicates(frame, KEY, path)
    frame["tr"] = pd.to_numeric(frame["tr"], errors="coerce") if "tr" in frame else float("nan")
    frame["run_id"] = [run_id(r) for r in frame[KEY].to_dict("records")]
    return frame.set_index("run_id", drop=False)


LABEL_TYPES = ("continuous", "binary", "categorical")


def load_phenotypes(path: str | Path, label_types: dict[str, str] | None = None) -> pd.DataFrame:
    """Read and validate ``phenotypes.tsv``: one row per (cohort, subject), then label columns.

    ``label_types`` declares each label column: ``continuous`` (a number), ``binary`` (0 or 1) or
    ``categorical`` (any text). With it, an undeclared column or a value outside its type is an error.
    Continuous and binary columns come back numeric (NaN when empty).
    """
    path = Path(path)
    frame = _read_tsv(path)
    label_columns = tuple(c for c in frame.columns if c not in ("cohort", "subject"))
    if label_types is not None:
        undeclared = [c for c in label_columns if c not in label_types]
        if undeclared:
            raise InputError(f"{path}: label column(s) {undeclared} are not declared in the config's 'labels'")
        for column, kind in label_types.items():
            if kind not in LABEL_TYPES:
                raise InputError(f"label '{column}': type must be one of {LABEL_TYPES}, not '{kind}'")
    problems = _row_problems(_records(frame, label_columns), load_schema("phenotypes"))
    for column, kind in (label_types or {}).items():
        if column in frame and kind != "categorical":
            frame[column], bad = _typed_column(frame[column], kind, column)
            problems += bad
    _raise_problems(path, problems)
    _check_duplicates(frame, ["cohort", "subject"], path)
    return frame


def _typed_column(values: pd.Series, kind: str, column: str) -> tuple[pd.Series, list[tuple[int, str]]]:
    """A continuous or binary column as floats (NaN when empty), and ``(line, problem)`` for each value outside its
    type."""
    numeric = pd.to_numeric(values.replace({"": None, "n/a": None, "NA": None}), errors="coerce")
    given = ~values.isin(["", "n/a", "NA"])
    bad = given & (numeric.isna() | (kind == "binary") & ~numeric.isin([0, 1]))
    expected = "0 or 1" if kind == "binary" else "a number"
    problems = [(int(i) + 2, f"column '{column}': {str(v)!r} is not {expected} (declared {kind})")
                for i, v in zip(np.flatnonzero(bad.to_numpy()), values[bad])]
    return numeric.astype(float), problems


def run_id(row: dict) -> str:
    """Stable identifier and relative output path stem of a run: ``<cohort>/sub-<s>_ses-<s>_run-<r>``."""
    return f"{row['cohort']}/sub-{row['subject']}_ses-{row['session']}_run-{row['run']}"


def shared_subjects(samples: pd.DataFrame) -> dict[str, list[str]]:
    """Subjects listed in more than one cohort: {subject: sorted cohorts}, in order of the subject's first row
    (vectorised: a group-by over 40,000 subjects took seconds at every workflow start)."""
    pairs = samples[["cohort", "subject"]].drop_duplicates()
    repeated = pairs[pairs["subject"].duplicated(keep=False)]
    out: dict[str, list[str]] = {}
    for subject, cohort in zip(repeated["subject"], repeated["cohort"]):
        out.setdefault(subject, []).append(cohort)
    return {k: sorted(v) for k, v in out.items()}


def check_sheets(samples: pd.DataFrame, phenotypes: pd.DataFrame | None, samples_path: str | Path,
                 phenotypes_path: str | Path | None = None) -> list[str]:
    """What no single row shows, checked the same way by ``brainjepa validate`` and the workflow.

    Errors (InputError): an empty sample sheet; a ``timeseries`` row without a TR (a brainjepa ``.parquet``
    may carry it in its metadata); a subject ID in two cohorts (subject IDs label people: the splits and the
    label lookup key on (cohort, subject), and one person in two cohorts would leak across splits).
    Returned warnings: runs whose subject has no row in the phenotypes sheet (they stay unlabelled: they can
    pretrain but count in no task).
    """
    if len(samples) == 0:
        raise InputError(f"{samples_path}: the sample sheet lists no runs")
    series = (samples["timeseries"] if "timeseries" in samples else pd.Series("", index=samples.index)).fillna("")
    tr = samples["tr"] if "tr" in samples else pd.Series(float("nan"), index=samples.index)
    lacking = ((series.astype(str) != "") & tr.isna() & ~series.astype(str).str.lower().str.endswith(".parquet"))
    if lacking.any():
        line = int(np.flatnonzero(lacking.to_numpy())[0]) + 2
        raise InputError(f"{samples_path}: line {line}: column 'tr': a 'timeseries' row needs its TR in seconds "
                         "(only a brainjepa .parquet carries one)")
    shared = shared_subjects(samples)
    if shared:
        subject, names = next(iter(shared.items()))
        raise InputError(f"{samples_path}: subject '{subject}' is listed in cohorts {names} "
                         f"({len(shared)} subject(s) in more than one cohort); give each person one cohort, or "
                         "distinct subject IDs")
    warnings = []
    if phenotypes is not None:
        keys = samples[["cohort", "subject"]].drop_duplicates()
        known = set(zip(phenotypes["cohort"].astype(str), phenotypes["subject"].astype(str)))
        orphans = [f"{c}/{s}" for c, s in zip(keys["cohort"], keys["subject"]) if (str(c), str(s)) not in known]
        if orphans:
            warnings.append(f"{len(orphans)} subject(s) of {samples_path} have no row in {phenotypes_path}, e.g. "
                            f"{orphans[:5]}: they are unlabelled (pretraining only, in no task)")
    return warnings
