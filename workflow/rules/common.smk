# Config and sample-sheet validation, and the input functions of the per-run rules.
import json
import shlex
import os
from pathlib import Path

import pandas as pd

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from brainjepa import bids, sheets, splits
from brainjepa.simulate import demo_atlas_paths, demo_run_paths
from brainjepa.errors import InputError


validate(config, schema="../schemas/config.schema.yaml")

DEMO_ROOT = Path(os.path.normpath(config["demo"]["root"]))


def produced_by_workflow(path):
    """Files the workflow itself creates: demo runs (rule simulate_run) when the demo is enabled."""
    if not config["demo"]["enabled"]:
        return False
    ents = bids.entities(path)
    if not {"sub", "ses", "run"} <= set(ents):
        return False
    path = os.path.normpath(path)
    for cohort in config["demo"]["cohorts"]:
        bold, mask = demo_run_paths(str(DEMO_ROOT), cohort, ents["sub"], ents["ses"], ents["run"])
        if path in (bold, mask, str(bids.sidecar_path(bold))):
            return True
    return False


try:
    SAMPLES = sheets.load_samples(config["samples"], produced=produced_by_workflow)
    PHENOTYPES = sheets.load_phenotypes(config["phenotypes"], config["labels"])
    SPLITS = splits.make_splits(
        SAMPLES,
        config["splits"]["seed"],
        config["splits"]["fractions"],
        config["splits"]["pretraining"]["cohort"],
        config["splits"]["pretraining"]["fraction"],
        config["splits"]["stratify"],
        PHENOTYPES,
    )
    PRETRAIN_RUN_IDS = list(splits.pretraining_runs(SPLITS)["run_id"])
except InputError as exc:
    raise WorkflowError(f"invalid sample sheet: {exc}")

RUN_IDS = list(SAMPLES["run_id"])


wildcard_constraints:
    cohort="[A-Za-z0-9]+",
    stem="sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+_run-[A-Za-z0-9]+",


DEMO_ATLAS = demo_atlas_paths(str(DEMO_ROOT))
DEMO_FUNC = os.path.join(
    str(DEMO_ROOT),
    "derivatives/{cohort}/sub-{subject}/ses-{session}/func",
    "sub-{subject}_ses-{session}_task-rest_run-{run}_space-MNI152NLin6Asym",
)
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


def demo_phenotype(wildcards):
    """The subject's planted labels as JSON (a change reruns only that subject's runs)."""
    key = (PHENOTYPES["cohort"] == wildcards.cohort) & (PHENOTYPES["subject"] == wildcards.subject)
    if not key.any():
        raise WorkflowError(f"demo run {wildcards.cohort}/sub-{wildcards.subject} has no row in {config['phenotypes']}")
    row = PHENOTYPES.loc[key].iloc[0]
    values = {k: row[k] for k in ("age", "sex", "diagnosis") if k in row and pd.notna(row[k]) and row[k] != ""}
    values["age"] = float(values["age"])
    if "diagnosis" in values:
        values["diagnosis"] = int(values["diagnosis"])
    return json.dumps(values, sort_keys=True)


def atlas_inputs(wildcards):
    """Local atlas files, when configured (else the rule fetches from TemplateFlow / the pinned URL)."""
    files = {}
    for kind in ("cortical", "subcortical"):
        for key in ("image", "labels"):
            if config["atlas"][kind][key]:
                files[f"{kind}_{key}"] = config["atlas"][kind][key]
    return files


def atlas_args(wildcards, input):
    """`brainjepa atlas` options for the local atlas files (shell-quoted)."""
    from shlex import quote

    return " ".join(f"--{name.replace('_', '-')} {quote(path)}" for name, path in input.items())


GROUP = "results/group"


def aligned_runs(run_ids):
    return [f"results/aligned/{run_id}.parquet" for run_id in run_ids]


def splits_inputs(wildcards):
    """The sample sheet, and the phenotypes when a cohort is stratified by a label."""
    inputs = {"samples": config["samples"]}
    if config["splits"]["stratify"]:
        inputs["phenotypes"] = config["phenotypes"]
    return inputs


def gradients_inputs(wildcards):
    inputs = {"fc": f"{GROUP}/group_fc.npy", "labels": ATLAS_LABELS}
    if config["gradients"]["reference"]:
        inputs["reference"] = config["gradients"]["reference"]
    return inputs


def pretrain_launcher(wildcards):
    """`brainjepa` for one process; torchrun (one process per GPU, or per CPU slot) for several."""
    n = config["pretrain"]["processes"]
    if n == 1:
        return "brainjepa"
    return f"torchrun --standalone --nproc_per_node={n} -m brainjepa.cli"


def get_final_outputs():
    group = [f"{GROUP}/{name}" for name in ("splits.tsv", "split_balance.tsv", "scaling_stats.json", "group_fc.npy", "group_fc.png")]
    pretrained = f"results/pretrain/{config['pretrain']['name']}/final.pt"
    return [ATLAS_IMAGE, ATLAS_LABELS, f"{GROUP}/gradients.tsv", "results/shards/manifest.json", pretrained] + group + [
        f"results/{stage}/{run_id}.{ext}"
        for run_id in RUN_IDS
        for stage, ext in (("aligned", "parquet"), ("qc/parcellate", "tsv"))
    ]
