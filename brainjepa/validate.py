"""``brainjepa validate``: the checks the workflow runs before any job, on the sheets and the splits.

Above both the sheet readers (:mod:`brainjepa.sheets`) and the splits (:mod:`brainjepa.group.splits`, which reads
the sheets), so that neither imports the other's caller.
"""

from __future__ import annotations

from pathlib import Path

from brainjepa import sheets
from brainjepa.group import splits


def validate_sheets(samples_path: str | Path, phenotypes_path: str | Path | None = None,
                    label_types: dict[str, str] | None = None,
                    splits_config: dict | None = None) -> tuple[str, list[str]]:
    """``brainjepa validate``: the checks the workflow runs before any job, on the sheets (and, with the
    workflow config's ``labels`` and ``splits``, the label types and the splits). Returns a one-line summary and
    the warnings."""
    samples = sheets.load_samples(samples_path)
    phenotypes = sheets.load_phenotypes(phenotypes_path, label_types) if phenotypes_path else None
    warnings = sheets.check_sheets(samples, phenotypes, samples_path, phenotypes_path)
    if splits_config is not None:
        table = splits.make_splits(samples, splits_config["seed"], splits_config["fractions"],
                                   splits_config["pretraining"]["cohort"], splits_config["pretraining"]["fraction"],
                                   splits_config.get("stratify") or {}, phenotypes)
        warnings += splits.split_warnings(table)
    n_subjects = samples[["cohort", "subject"]].drop_duplicates().shape[0]
    return f"{samples_path}: {len(samples)} runs of {n_subjects} subjects: valid", warnings
