# Config and sample-sheet validation, and the input functions of the per-run rules.
import json
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from brainjepa import sheets
from brainjepa.errors import InputError


validate(config, schema="../schemas/config.schema.yaml")

DEMO_ROOT = Path(os.path.normpath(config["demo"]["root"]))


DEMO_FILE = re.compile(
    re.escape(str(DEMO_ROOT)) + r"/derivatives/(?P<cohort>[A-Za-z0-9]+)/sub-(?P<s>[A-Za-z0-9]+)/ses-(?P<ses>[A-Za-z0-9]+)"
    r"/func/sub-(?P=s)_ses-(?P=ses)_task-rest_run-[A-Za-z0-9]+_space-MNI152NLin6Asym"
    r"_(desc-preproc_bold\.nii\.gz|desc-preproc_bold\.json|desc-brain_mask\.nii\.gz)"
)


def produced_by_workflow(path):
    """Files the workflow itself creates: demo runs (rule simulate_run) when the demo is enabled."""
    if not config["demo"]["enabled"]:
        return False
    match = DEMO_FILE.fullmatch(os.path.normpath(path))
    return bool(match) and match["cohort"] in config["demo"]["cohorts"]


try:
    SAMPLES = sheets.load_samples(config["samples"], produced=produced_by_workflow)
    PHENOTYPES = sheets.load_phenotypes(config["phenotypes"])
except InputError as exc:
    raise WorkflowError(f"invalid sample sheet: {exc}")

RUN_IDS = list(SAMPLES["run_id"])


wildcard_constraints:
    cohort="[A-Za-z0-9]+",
    stem="sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+_run-[A-Za-z0-9]+",


ATLAS_IMAGE = f"results/atlas/atlas_space-{config['atlas']['space']}_dseg.nii.gz"
ATLAS_LABELS = f"results/atlas/atlas_space-{config['atlas']['space']}_labels.tsv"


def sample_row(wildcards):
    return SAMPLES.loc[f"{wildcards.cohort}/{wildcards.stem}"]


def parcellate_inputs(wildcards):
    """The run's BOLD (with its sidecar and mask when present) or time-series file, plus the atlas."""
    row = sample_row(wildcards)
    inputs = {"atlas": ATLAS_IMAGE, "labels": ATLAS_LABELS}
    if row["bold"]:
        inputs["data"] = row["bold"]
        sidecar = str(Path(row["bold"]).with_name(Path(row["bold"]).name.split(".nii")[0] + ".json"))
        if Path(sidecar).exists() or produced_by_workflow(sidecar):
            inputs["sidecar"] = sidecar
    else:
        inputs["data"] = row["timeseries"]
    if row["mask"]:
        inputs["mask"] = row["mask"]
    return inputs


def parcellate_args(wildcards, input):
    """Command-line arguments of `brainjepa parcellate` for one run (all shell-quoted)."""
    from shlex import quote

    row = sample_row(wildcards)
    args = ["--bold" if row["bold"] else "--timeseries", quote(input.data)]
    if row["mask"]:
        args += ["--mask", quote(input.mask)]
    if row["tr"] == row["tr"]:  # not NaN
        args += ["--tr", str(row["tr"])]
    return " ".join(args)


def get_final_outputs():
    return [ATLAS_IMAGE, ATLAS_LABELS] + [
        f"results/{stage}/{run_id}.{ext}"
        for run_id in RUN_IDS
        for stage, ext in (("aligned", "parquet"), ("qc/parcellate", "tsv"))
    ]
