# Config, sample-sheet and training-config validation (before any job runs), the results layout, and the
# input functions of the rules. Layout: every rule writes under <output_dir>/results/<stage>/ and logs to
# <output_dir>/logs/<rule>/ (output_dir: one per dataset; the demo's is the checkout, "results/" and "logs/").
import dataclasses
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path

import pandas as pd

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from brainjepa import batches, bids, sheets
from brainjepa.errors import InputError
from brainjepa.evaluate.capabilities import CAPABILITIES as CAPABILITY_SPECS
from brainjepa.group import splits
from brainjepa.simulate import demo_atlas_paths, demo_run_paths, demo_timeseries_path
from brainjepa.train import launch
from brainjepa.train.config import load_config

validate(config, schema="../schemas/config.schema.yaml")


def config_paths(cfg):
    """(key, path) of every path-valued entry of the workflow config."""
    atlas = cfg["atlas"]
    pairs = [
        ("output_dir", cfg["output_dir"]),
        ("samples", cfg["samples"]),
        ("phenotypes", cfg["phenotypes"]),
        ("demo.root", cfg["demo"]["root"]),
        ("pretrain.config", cfg["pretrain"]["config"]),
    ]
    pairs += [(f"atlas.{k}", atlas[k]) for k in ("labels", "cache_dir") if k in atlas]
    pairs += [
        (f"atlas.{kind}.{k}", atlas[kind][k])
        for kind in ("cortical", "subcortical")
        if kind in atlas
        for k in ("image", "labels")
    ]
    pairs += [(f"gradients.{k}", cfg["gradients"][k]) for k in ("file", "reference")]
    pairs += [
        (f"evaluate.encoders.{name}.{kind}", path)
        for name, spec in cfg["evaluate"]["encoders"].items()
        for kind, path in spec.items()
    ]
    return [(key, path) for key, path in pairs if path]


# Snakemake reads braces in a path as wildcards: such a path is refused now, naming its key, not by a WildcardError.
for _key, _path in config_paths(config):
    if "{" in _path or "}" in _path:
        raise WorkflowError(
            f"config {_key}: {_path!r} holds a brace, which Snakemake reads as a wildcard in a path; rename it"
        )

OUTPUT_DIR = os.path.normpath(config["output_dir"])
RESULTS = os.path.normpath(os.path.join(OUTPUT_DIR, "results"))
LOGS = os.path.normpath(os.path.join(OUTPUT_DIR, "logs"))


def output_path(path, source):
    """A path of the training configs' outputs (run.out_dir of the training config ``source``): a relative one lies
    under output_dir, as all outputs do, and one that leaves it (``..``) is refused; an absolute one is taken as
    it is."""
    if "{" in path or "}" in path:
        raise WorkflowError(
            f"{source}: run.out_dir {path!r} holds a brace, which Snakemake reads as a wildcard; rename it"
        )
    if os.path.isabs(path):
        return os.path.normpath(path)
    resolved = os.path.normpath(os.path.join(OUTPUT_DIR, path))
    if os.path.relpath(resolved, OUTPUT_DIR).split(os.sep)[0] == os.pardir:
        raise WorkflowError(
            f"{source}: run.out_dir {path!r} leaves output_dir ({OUTPUT_DIR}): a relative run folder lies under "
            f"output_dir (it resolves to {resolved}); give a folder inside it, e.g. results/pretrain/<name>, or an "
            "absolute path"
        )
    return resolved


# The output folder belongs to one dataset (its sample sheet): a config listing another sheet into the same
# output_dir is refused before any job, instead of overwriting the other dataset's outputs and models.
DATASET_MARKER = os.path.join(RESULTS, ".brainjepa-dataset.json")
DATASET = {
    "samples": os.path.normpath(config["samples"]),
    "configfiles": [os.path.relpath(str(f)) for f in workflow.configfiles],
}
if os.path.exists(DATASET_MARKER):
    _owner = json.loads(Path(DATASET_MARKER).read_text())
    if _owner.get("samples") != DATASET["samples"]:
        raise WorkflowError(
            f"{RESULTS}/ holds the outputs of another dataset: the runs of {_owner.get('samples')} (config "
            f"{', '.join(_owner.get('configfiles', [])) or '?'}), and this config lists {DATASET['samples']}. Give "
            f"this config an output_dir of its own (README: Your own data), or delete {DATASET_MARKER} to let "
            "this dataset take the folder over"
        )


def claim_output_dir():
    """Record which dataset the output folder holds (called when a run starts; not on dry runs)."""
    from brainjepa.io import atomic_path

    if not os.path.exists(DATASET_MARKER):
        os.makedirs(RESULTS, exist_ok=True)
        with atomic_path(DATASET_MARKER) as tmp:
            Path(tmp).write_text(json.dumps(DATASET, indent=1) + "\n")


# Every rule runs this checkout's command line. In a rule's shell, `brainjepa` is a shell function for
# `python -m brainjepa.cli` with the repository on PYTHONPATH, run by the rules' environment (ENV) under
# --sdm conda, else by the Python that runs Snakemake (a venv or the brainjepa conda env).
ENV = "../envs/brainjepa.yaml"
REPO_ROOT = os.path.normpath(os.path.join(workflow.basedir, ".."))
_CONDA = "conda" in {str(m).lower().split(".")[-1] for m in workflow.deployment_settings.deployment_method}
_PYTHON = "python" if _CONDA else shlex.quote(sys.executable)
_PREFIX = (
    "set -euo pipefail; "
    f'brainjepa_python() {{ PYTHONPATH={shlex.quote(REPO_ROOT)}${{PYTHONPATH:+:$PYTHONPATH}} {_PYTHON} "$@"; }}; '
    'brainjepa() { brainjepa_python -m brainjepa.cli "$@"; }; '
)
shell.prefix(_PREFIX.replace("{", "{{").replace("}", "}}"))  # the prefix is formatted like a command
# The same command as an executable, for srun (which cannot run a shell function) in jobs of several nodes.
BRAINJEPA_EXEC = f"env PYTHONPATH={shlex.quote(REPO_ROOT)}${{PYTHONPATH:+:$PYTHONPATH}} {_PYTHON} -m brainjepa.cli"
try:  # the training configuration is checked now, not when the pretrain job starts hours later
    TRAIN_CONFIG = load_config(config["pretrain"]["config"])
except InputError as exc:
    raise WorkflowError(f"invalid training config: {exc}")

DEMO_ROOT = Path(os.path.normpath(config["demo"]["root"]))


def produced_by_workflow(path):
    """Files the workflow itself creates: demo runs (the simulate_run rules) when the demo is enabled."""
    if not config["demo"]["enabled"]:
        return False
    ents = bids.entities(path)
    if not {"sub", "ses", "run"} <= set(ents):
        return False
    path = os.path.normpath(path)
    for cohort in config["demo"]["cohorts"]:
        ids = (str(DEMO_ROOT), cohort, ents["sub"], ents["ses"], ents["run"])
        bold, mask = demo_run_paths(*ids)
        if path in (bold, mask, str(bids.sidecar_path(bold)), demo_timeseries_path(*ids)):
            return True
    return False


try:
    SAMPLES = sheets.load_samples(config["samples"], produced=produced_by_workflow)
    PHENOTYPES = sheets.load_phenotypes(config["phenotypes"], config["labels"])
except InputError as exc:
    raise WorkflowError(f"invalid sample sheet: {exc}")
try:  # the split table is rebuilt by the splits job from the same config
    SPLIT_TABLE = splits.make_splits(
        SAMPLES,
        config["splits"]["seed"],
        config["splits"]["fractions"],
        config["splits"]["pretraining"]["cohort"],
        config["splits"]["pretraining"]["fraction"],
        config["splits"]["stratify"],
        PHENOTYPES,
    )
    PRETRAIN_RUN_IDS = list(splits.pretraining_runs(SPLIT_TABLE)["run_id"])
    # the checks of `brainjepa validate` (one code path): errors stop here, warnings are printed
    for _warning in sheets.check_sheets(SAMPLES, PHENOTYPES, config["samples"], config["phenotypes"]):
        print(f"brainjepa: warning: {_warning}", file=sys.stderr)
    for _warning in splits.split_warnings(SPLIT_TABLE):
        print(f"brainjepa: warning: {_warning}", file=sys.stderr)
except InputError as exc:  # the sheets' cross-checks, or the config's splits section
    raise WorkflowError(f"invalid sheets or splits config: {exc}")

RUN_IDS = list(SAMPLES["run_id"])
SAMPLE_ROWS = SAMPLES.to_dict("index")  # run_id -> its sheet row (a dict: fast lookups for 10^4 runs)
# The per-run stages run one job per batch of subjects (brainjepa/batches.py): {batch name: [run_id, ...]}.
BATCHES = batches.assign_batches(SPLIT_TABLE, config["batching"], config["splits"]["pretraining"]["cohort"])
BATCH_OF_RUN = {run_id: batch for batch, run_ids in BATCHES.items() for run_id in run_ids}
BATCH_DIGEST = {batch: batches.content_digest(sorted(run_ids))[:8] for batch, run_ids in BATCHES.items()}


DEMO_ATLAS = demo_atlas_paths(str(DEMO_ROOT))
# atlas.labels: a label table only (pre-parcellated cohorts), no image; else the combined atlas image + labels
LABEL_ONLY_ATLAS = "labels" in config["atlas"]
if LABEL_ONLY_ATLAS:
    ATLAS_IMAGE = None
    ATLAS_LABELS = f"{RESULTS}/atlas/atlas_labels.tsv"
else:
    ATLAS_IMAGE = f"{RESULTS}/atlas/atlas_space-{config['atlas']['space']}_dseg.nii.gz"
    ATLAS_LABELS = f"{RESULTS}/atlas/atlas_space-{config['atlas']['space']}_labels.tsv"
if LABEL_ONLY_ATLAS and (SAMPLES["bold"] != "").any():
    _first = SAMPLES[SAMPLES["bold"] != ""].iloc[0]
    raise WorkflowError(
        f"{config['samples']}: run {_first['run_id']} is a NIfTI run ('bold'), but atlas.labels gives a label table "
        "only; parcellating NIfTI runs needs an atlas image (atlas.cortical / atlas.subcortical)"
    )
PARCELLATE_ROOT = f"{RESULTS}/parcellate"  # <cohort>/<stem>.parquet (ROI time series), <stem>_qc.tsv (per ROI)
ALIGN_TR_ROOT = f"{RESULTS}/align_tr"  # <cohort>/<stem>.parquet at the target TR


def batch_stamp(root, batch):
    """The stamp of a per-run stage's batch job (brainjepa.batches.write_stamp): <root>/_batches/<batch>-<digest>.tsv,
    the digest that of the batch's run list, so that a run added to (or taken from) a batch names a new stamp and
    reruns the job.

    A batch job declares only its stamp; the runs' files are written beside it, and a rule per run (run_parcellate,
    run_align_tr) makes any one of them on its own, so each stays a target. Snakemake spends time on every declared
    file (it scans the producing rule's outputs to resolve an input, sorts all outputs, prints them): with the
    120,000 per-run files of a 40,000-run cohort declared, a dry run took 74 s, without them 9 s
    (bench/dag_scale.py)."""
    return f"{root}/_batches/{batch}-{BATCH_DIGEST[batch]}.tsv"


def stamp_stage_root(wildcards, output):
    """A batch job's stage folder, from its declared stamp (<root>/_batches/<batch>-<digest>.tsv): inferred from the
    output rather than a hard-coded prefix, so that it holds where the job's files are staged elsewhere."""
    return os.path.dirname(os.path.dirname(output.stamp))


def run_stage_root(wildcards, output):
    """A per-run job's stage folder, from its declared <root>/<cohort>/<stem>.parquet output."""
    return os.path.dirname(os.path.dirname(output[0]))


def batch_files(root, batch):
    """The per-run files that a batch job of the stage at ``root`` writes beside its stamp."""
    suffixes = (".parquet", "_qc.tsv") if root == PARCELLATE_ROOT else (".parquet",)
    return [f"{root}/{run_id}{suffix}" for run_id in BATCHES[batch] for suffix in suffixes]


_MISSING = {}


def missing_batch_files(root, batch):
    """The per-run files of a finished batch (one with its stamp) that do not exist: deleted since. `all` requests
    them, and the per-run rule remakes each (computed once per workflow start)."""
    key = (root, batch)
    if key not in _MISSING:  # without its stamp the batch runs anyway: no need to look
        done = os.path.exists(batch_stamp(root, batch))
        _MISSING[key] = [f for f in batch_files(root, batch) if not os.path.exists(f)] if done else []
    return _MISSING[key]


def batch_targets(root, batch):
    """What `all` requests of a batch: its stamp, and any of its per-run files that are missing. Only `all`: the
    stages after a batch depend on its stamp alone (a remade file has the content it had)."""
    return [batch_stamp(root, batch), *missing_batch_files(root, batch)]


def run_stamps(root, run_ids):
    """The stamps of the batches holding ``run_ids`` (sorted, each once)."""
    return [batch_stamp(root, b) for b in sorted({BATCH_OF_RUN[r] for r in run_ids})]


SPLITS = f"{RESULTS}/splits/splits.tsv"
SPLIT_RUNS = f"{RESULTS}/splits/split-{{split}}.tsv"  # the rows of one split (rule split_table)
SPLIT_BALANCE = f"{RESULTS}/splits/balance.tsv"
SCALING_STATS = f"{RESULTS}/scaling/scaling_stats.json"
GROUP_FC = f"{RESULTS}/group_fc/group_fc.npy"
GRADIENTS = f"{RESULTS}/gradients/gradients.tsv"
SHARDS_MANIFEST = f"{RESULTS}/shards/{{split}}/manifest.json"  # one shard set per split
SPLIT_NAMES = sorted(set(SPLIT_TABLE["split"]))


def check_shard_sets():
    """Written shard sets must still be what their manifests list (Snakemake sees only the manifest): a deleted,
    resized or rewritten shard file stops the workflow before any job, naming the file and how to rebuild."""
    from brainjepa.data.shards import shard_file_problems

    for split in SPLIT_NAMES:
        manifest = SHARDS_MANIFEST.format(split=split)
        try:
            problems = shard_file_problems(manifest)
        except InputError as exc:
            problems = [str(exc)]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise WorkflowError(
                f"the {split} shards no longer match {manifest}: {'; '.join(problems[:3])}{more}. Delete "
                f"{manifest} and rerun: the {split} shards are rebuilt, and what reads them reruns"
            )


check_shard_sets()
PRETRAIN_DIR = output_path(
    TRAIN_CONFIG.run.out_dir, config["pretrain"]["config"]
)  # the training config's run folder (under output_dir)


def batch_resources(run_ids, seconds_per_run):
    """Cluster resources of one batch job: runtime (minutes) grows with its runs; memory is one run's."""
    return {"mem_mb": 1000, "runtime": 10 + math.ceil(len(run_ids) * seconds_per_run / 60)}


def sample_rows(run_ids, columns):
    """The sheet rows of some runs (the given columns, as text), for a batch's content digest."""
    return [{key: str(SAMPLE_ROWS[run_id][key]) for key in ("run_id", *columns)} for run_id in run_ids]


def parcellate_batch_inputs(run_ids):
    """Each run's BOLD (with its sidecar and mask when present) or time-series file, the atlas and the sheet.

    The sheet is an ancient input: the job reads its own rows from it, and the rows' digest (a parameter)
    reruns it when they change, so edits of other rows leave the batch alone.
    """
    inputs = {"labels": ATLAS_LABELS, "samples": ancient(config["samples"]), "data": []}
    if ATLAS_IMAGE:
        inputs["atlas"] = ATLAS_IMAGE
    inputs.update(sidecars=[], masks=[])
    for run_id in run_ids:
        row = SAMPLE_ROWS[run_id]
        inputs["data"].append(row["bold"] or row["timeseries"])
        if row["bold"]:
            sidecar = str(bids.sidecar_path(row["bold"]))
            if Path(sidecar).exists() or produced_by_workflow(sidecar):
                inputs["sidecars"].append(sidecar)
        if row["mask"]:
            inputs["masks"].append(row["mask"])
    return inputs


def run_of(wildcards):
    """The sheet's run of a per-run target (wildcards cohort, stem); a run the sheet lacks is an error naming it."""
    run_id = f"{wildcards.cohort}/{wildcards.stem}"
    if run_id not in SAMPLE_ROWS:
        raise WorkflowError(f"{run_id}: no such run in {config['samples']} (per-run targets are runs of the sheet)")
    return run_id


def parcellate_options(wildcards, input):
    """The `brainjepa parcellate` options shared by the batch and per-run rules (shell-quoted): the atlas (none
    with atlas.labels: the label table names the columns), the label table and the parcellate settings."""
    atlas = f"--atlas {shlex.quote(input.atlas)} " if "atlas" in input.keys() else ""
    return (
        f"{atlas}--labels {shlex.quote(input.labels)} --empty-roi {config['parcellate']['empty_roi']}"
        f" --unnamed-columns {config['parcellate'].get('unnamed_columns', 'error')}"
    )


def parcellate_run_inputs(wildcards):
    """parcellate_batch_inputs of the one run of a per-run target."""
    return parcellate_batch_inputs([run_of(wildcards)])


def demo_batches():
    """The demo runs of each batch of a demo cohort: {batch: (cohort, [run_id, ...])}, non-empty only."""
    demo = {}
    for batch, run_ids in BATCHES.items():
        cohort = SAMPLE_ROWS[run_ids[0]]["cohort"]
        if cohort in config["demo"]["cohorts"]:
            rows = [SAMPLE_ROWS[r] for r in run_ids]
            ids = [row["run_id"] for row in rows if produced_by_workflow(row["bold"] or row["timeseries"])]
            if ids:
                demo[batch] = (cohort, ids)
    return demo


def demo_batch_outputs(run_ids):
    """The files a demo batch writes: per run its BOLD, sidecar and mask (when listed), or its time series."""
    files = []
    for run_id in run_ids:
        row = SAMPLE_ROWS[run_id]
        if row["bold"]:
            files += [row["bold"], str(bids.sidecar_path(row["bold"]))] + ([row["mask"]] if row["mask"] else [])
        else:
            files.append(row["timeseries"])
    return files


def demo_batch_content(run_ids):
    """A digest of what a demo batch's runs depend on in the sheets: their rows and their subjects' labels."""
    keys = SAMPLES.loc[run_ids, ["cohort", "subject"]].drop_duplicates()
    labels = keys.merge(PHENOTYPES, on=["cohort", "subject"], how="left", indicator=True)
    orphan = labels[labels["_merge"] == "left_only"]
    if len(orphan):
        raise WorkflowError(
            f"demo run {orphan['cohort'].iloc[0]}/sub-{orphan['subject'].iloc[0]} has no row in {config['phenotypes']}"
        )
    columns = ["cohort", "subject"] + [k for k in ("age", "sex", "diagnosis") if k in PHENOTYPES]
    phenotypes = labels[columns].astype(str).to_dict("records")
    return batches.content_digest(sample_rows(run_ids, ["bold", "mask", "timeseries"]), phenotypes)


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


def runs_root(wildcards, input):
    """The align_tr stage's folder, from the declared batch stamps (<root>/_batches/<batch>-<digest>.tsv)."""
    return os.path.dirname(os.path.dirname(input.runs[0])) if input.runs else ALIGN_TR_ROOT


def split_stamps(wildcards):
    """The align_tr stamps of the batches holding one split's runs (the split table of the workflow's start)."""
    return run_stamps(ALIGN_TR_ROOT, SPLIT_TABLE.loc[SPLIT_TABLE["split"] == wildcards.split, "run_id"])


def split_content(wildcards):
    """A digest of what one split's shards hold besides the run files: its runs' labels and the categories.

    The shards rule reads the phenotypes sheet as an ancient input (its edits for other cohorts must not rebuild
    this split); this parameter reruns it when its own labels change.
    """
    import hashlib

    table = SPLIT_TABLE[SPLIT_TABLE["split"] == wildcards.split][["run_id", "cohort", "subject"]]
    rows = table.merge(PHENOTYPES, on=["cohort", "subject"], how="left").astype(str)
    kinds = config["labels"]
    categories = {k: sorted(set(PHENOTYPES[k].astype(str))) for k, v in kinds.items() if v == "categorical"}
    text = rows.sort_values("run_id").to_csv(index=False) + json.dumps([kinds, categories], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def aligned_runs(run_ids):
    return [str(splits.run_file(ALIGN_TR_ROOT, run_id)) for run_id in run_ids]


def split_rows_digest(wildcards):
    """A digest of one split's rows of the split table (the workflow's start computes the same table as the splits
    job): a parameter of rule split_table, which reruns it when the split's runs change."""
    import hashlib

    rows = SPLIT_TABLE[SPLIT_TABLE["split"] == wildcards.split].sort_values("run_id")
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()[:16]


def splits_options(wildcards, input):
    """The `brainjepa splits` options of the config's splits section (shell-quoted), beside --samples and --out."""
    section = config["splits"]
    fractions = ",".join(str(section["fractions"][k]) for k in ("train", "val", "test"))
    options = (
        f"--seed {section['seed']} --fractions {fractions} --pretraining-cohort "
        f"{shlex.quote(section['pretraining']['cohort'])} --pretraining-fraction {section['pretraining']['fraction']}"
    )
    if section["stratify"]:
        options += (
            f" --stratify {shlex.quote(json.dumps(section['stratify']))} --phenotypes {shlex.quote(input.phenotypes)}"
            f" --label-types {shlex.quote(json.dumps(config['labels']))}"
        )
    return options


def splits_inputs(wildcards):
    """The sample sheet, and the phenotypes when a cohort is stratified by a label."""
    inputs = {"samples": config["samples"]}
    if config["splits"]["stratify"]:
        inputs["phenotypes"] = config["phenotypes"]
    return inputs


def gradients_inputs(wildcards):
    """A given gradients file (config gradients.file), else the group FC and an optional reference."""
    if config["gradients"]["file"]:
        return {"given": config["gradients"]["file"], "labels": ATLAS_LABELS}
    inputs = {"fc": GROUP_FC, "labels": ATLAS_LABELS}
    if config["gradients"]["reference"]:
        inputs["reference"] = config["gradients"]["reference"]
    return inputs


def gradients_args(wildcards, input):
    """`brainjepa gradients` source options: a given gradients file, or the group FC (+ reference)."""
    if "given" in input.keys():
        return f"--given {shlex.quote(input.given)}"
    args = f"--fc {shlex.quote(input.fc)} --n-components {config['gradients']['n_components']}"
    if "reference" in input.keys():
        args += f" --reference {shlex.quote(input.reference)}"
    return args


def job_layout(section, launched=True, gpus=None):
    """A job's nodes, processes and GPUs from its config section (pretrain or evaluate); one node and one process
    unless the job runs under the launcher (``launched``); ``gpus`` for a count other than the section's."""
    return launch.section_layout(section, config[section], launched, gpus)


try:  # when the workflow starts: one process per GPU in each launched section (before any job)
    launch.check_sections(config)
except InputError as exc:
    raise WorkflowError(f"invalid config: {exc}")


def gpu_job_resources(section, gpus=None, launched=False):
    """The Slurm resources of a GPU-capable rule, declared once in the config (pretrain or evaluate): CPUs per GPU
    (used by the executor only for jobs that get GPUs) and the partition when set. With ``gpus`` (a count, or a
    function of the wildcards), also the GPUs and, for a rule that starts its command through ``launcher``
    (``launched``: a bool or a function of the wildcards), the nodes: brainjepa.train.launch.slurm_resources."""
    extra = {"slurm_partition": config[section]["partition"]} if config[section]["partition"] else {}
    if gpus is None:
        return {"cpus_per_gpu": config[section]["cpus_per_gpu"], **extra}

    def per_job(wildcards):
        on = launched(wildcards) if callable(launched) else launched
        return launch.slurm_resources(job_layout(section, on, gpus(wildcards) if callable(gpus) else gpus))

    if not callable(gpus) and not callable(launched):
        return {**per_job(None), **extra}
    # one function per resource (a resource of None is left out, e.g. nodes of a job on one node)
    return {key: (lambda wildcards, key=key: per_job(wildcards).get(key)) for key in launch.SLURM_RESOURCE_KEYS} | extra


WINDOWS_PER_RUN = 3  # the review's sizing (8,000 subjects x 3 windows): runs' lengths are known after parcellation
_ATLAS = config["atlas"]
_CORTICAL = _ATLAS.get("cortical") or {}
# ROIs at parse time: Schaefer's parcels + Tian S3's 50 when fetched; local label tables may not exist yet: the
# paper's 450 bound them
N_ROIS_BOUND = _CORTICAL["n_parcels"] + 50 if _CORTICAL and not _CORTICAL.get("labels") else 450


def memory_mb(stage, method=None):
    """A job's host memory (Slurm mem_mb) from the data's shape, the model and its processes:
    brainjepa.train.launch.job_memory_mb (features, evaluate, capability, pretrain)."""
    model = TRAIN_CONFIG.model.resolved()
    section = "pretrain" if stage == "pretrain" else "evaluate"
    protocol = None
    if method is not None:  # a frozen protocol on ROI tokens holds them as the attentive probe does
        from brainjepa.evaluate.run import parse_method_readout

        _, protocol, readout = parse_method_readout(method)
        protocol = "attentive" if readout not in (None, "mean") else protocol
    return launch.job_memory_mb(
        stage,
        n_rois=N_ROIS_BOUND,
        window=int(config["shards"]["window"]),
        n_windows=WINDOWS_PER_RUN * int((SPLIT_TABLE["split"] != splits.PRETRAIN).sum()),
        embed_dim=model.embed_dim,
        depth=model.depth,
        protocol=protocol,
        processes=int(config[section]["processes"]),
        num_workers=TRAIN_CONFIG.data.num_workers if stage == "pretrain" else 0,
    )


def launcher(section, launched=True):
    """The shell words that start a `brainjepa` subcommand with the section's layout (brainjepa.train.launch):
    `brainjepa launch` on one node, srun starting one launcher per node on several."""
    return launch.rule_command(job_layout(section, launched), "brainjepa", BRAINJEPA_EXEC)


def get_final_outputs():
    group = [SPLITS, SPLIT_BALANCE, SCALING_STATS, GROUP_FC, GRADIENTS]
    per_run = [f for root in (PARCELLATE_ROOT, ALIGN_TR_ROOT) for batch in BATCHES for f in batch_targets(root, batch)]
    shards = [SHARDS_MANIFEST.format(split=s) for s in SPLIT_NAMES]
    pretrained = [f"{r['out_dir']}/final.pt" for r in PRETRAIN_RUNS]
    pretrained += [f for name in MODEL_RUNS for f in model_bundle(name)]  # their bundles (rules/models.smk)
    evaluation = [METRICS, f"{TABLES}/summary.md"] if ALL_RESULTS else []
    atlas = [ATLAS_IMAGE, ATLAS_LABELS] if ATLAS_IMAGE else [ATLAS_LABELS]
    return [*atlas, *group, *shards, *pretrained, *per_run, *evaluation, *figure_outputs(), *STUDY_OUTPUTS]


# -- downstream evaluation (rules/evaluate.smk) -----------------------------------------------------------------
EVALUATE_ROOT = f"{RESULTS}/evaluate"  # <task>/<method>/seed<k>.json; features/<encoder>/<cohort>.npz
METRICS = f"{RESULTS}/metrics.tsv"
TABLES = f"{RESULTS}/tables"  # <task>.md and summary.md


# One row per subject: its split (the split table of the workflow's start) and its labels (phenotypes sheet).
SPLIT_SUBJECTS = (
    SPLIT_TABLE[["cohort", "subject", "split"]]
    .drop_duplicates()
    .merge(PHENOTYPES, on=["cohort", "subject"], how="left")
)


def _evaluate_setup():
    """Tasks, protocol settings, encoders and the pretraining runs they need, checked when the workflow starts:
    each task has labelled subjects in train, val and test, and a classification two classes to train on."""
    from brainjepa.evaluate.config import ProtocolConfig
    from brainjepa.evaluate.tasks import Resampling, TaskConfig, task_split_problems

    section = config["evaluate"]
    try:
        tasks = {name: TaskConfig.from_dict(name, spec) for name, spec in section["tasks"].items()}
        protocols = ProtocolConfig.from_dict(section["settings"])
        Resampling.from_dict(section["resampling"])
    except InputError as exc:
        raise WorkflowError(f"invalid evaluate config: {exc}")
    cohorts = set(SAMPLES["cohort"])
    for task in tasks.values():
        missing = sorted(set(task.all_cohorts) - cohorts)
        if missing:
            raise WorkflowError(f"evaluate.tasks.{task.name}: cohort(s) {missing} have no runs in {config['samples']}")
        if task.label not in config["labels"]:
            raise WorkflowError(f"evaluate.tasks.{task.name}: label '{task.label}' is not declared in labels")
    problems = [p for task in tasks.values() for p in task_split_problems(task, SPLIT_SUBJECTS)]
    if problems:
        raise WorkflowError(
            f"evaluate.tasks: {'; '.join(problems)} (the splits of {config['samples']} with the labels of "
            f"{config['phenotypes']}; `brainjepa validate --config` prints the splits' counts)"
        )
    runs = [{"rule": "pretrain", "config": config["pretrain"]["config"], "out_dir": PRETRAIN_DIR}]
    encoders = {}
    for name, spec in section["encoders"].items():
        if "pretrained" in spec:
            path = spec["pretrained"]
            known = {r["config"]: r for r in runs}
            if path not in known:
                try:
                    out_dir = output_path(load_config(path).run.out_dir, path)
                except InputError as exc:
                    raise WorkflowError(f"evaluate.encoders.{name}: invalid training config: {exc}")
                if out_dir in {r["out_dir"] for r in runs}:
                    raise WorkflowError(
                        f"evaluate.encoders.{name}: {path} trains into {out_dir}, as another "
                        "training config does; give it its own run.out_dir"
                    )
                known[path] = {"rule": f"pretrain_{name}", "config": path, "out_dir": out_dir}
                runs.append(known[path])
            known[path].setdefault("encoders", []).append(name)  # its bundle's card quotes their evaluation
            encoders[name] = {"checkpoint": f"{known[path]['out_dir']}/final.pt"}
        elif "official" in spec:
            encoders[name] = {"checkpoint": f"{EVALUATE_ROOT}/encoders/{name}.pt", "official": spec["official"]}
        elif "bundle" in spec:  # a model bundle folder (brainjepa export-model; docs/models.md)
            encoders[name] = {"bundle": os.path.normpath(spec["bundle"])}
        else:
            encoders[name] = {"random": spec["random"]}
    return tasks, protocols, encoders, runs


EVAL_TASKS, EVAL_PROTOCOLS, EVAL_ENCODERS, PRETRAIN_RUNS = _evaluate_setup()
EVAL_METHODS = [f"{e}_{p}" for e in EVAL_ENCODERS for p in config["evaluate"]["protocols"]]
EVAL_METHODS += list(config["evaluate"]["baselines"])


def method_seeds(method):
    """The seeds of an evaluation method: a random encoder's frozen protocols run evaluate.random_seeds (seed k:
    the encoder initialised from seed k, its features and its probe), every other method evaluate.seeds."""
    from brainjepa.evaluate.run import FROZEN, SEEDLESS, parse_method

    encoder, protocol = parse_method(method)
    if encoder is not None and "random" in EVAL_ENCODERS[encoder] and protocol in FROZEN:
        return config["evaluate"]["random_seeds"]
    if protocol in SEEDLESS:
        return config["evaluate"]["seeds"][:1]
    return config["evaluate"]["seeds"]


EVAL_RESULTS = [
    f"{EVALUATE_ROOT}/{task}/{method}/seed{seed}.json"
    for task in EVAL_TASKS
    for method in EVAL_METHODS
    for seed in method_seeds(method)
]


# -- model bundles (rules/models.smk; brainjepa/models/bundle.py) ----------------------------------------------
MODELS_ROOT = f"{RESULTS}/models"
MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "rois.tsv",
    "scaling.json",
    "provenance.json",
    "README.md",
)


def _model_runs():
    """{bundle name: pretraining run}: one bundle per run of PRETRAIN_RUNS, named after its run folder."""
    runs = {}
    for run in PRETRAIN_RUNS:
        name = os.path.basename(run["out_dir"])
        if name in runs:
            raise WorkflowError(
                f"the pretraining runs {runs[name]['out_dir']} and {run['out_dir']} end in the same folder name "
                f"'{name}', which names their model bundle under {MODELS_ROOT}: give one of them another run.out_dir"
            )
        runs[name] = run
    return runs


MODEL_RUNS = _model_runs()


def model_bundle(name):
    """The files of the bundle ``name`` under results/models/."""
    return [f"{MODELS_ROOT}/{name}/{f}" for f in MODEL_FILES]


def model_evaluation(name):
    """The evaluation tables the card of bundle ``name`` quotes ({"metrics", "paired"}), when the workflow evaluates
    its run as an encoder: the bundle then waits for the evaluation. None when it is not evaluated, or when an
    evaluation encoder is itself a bundle of this workflow (its card would wait on its own evaluation: a cycle)."""
    if not MODEL_RUNS[name].get("encoders") or not EVAL_TASKS:
        return None
    if any(os.path.commonpath([os.path.abspath(e["bundle"]), os.path.abspath(MODELS_ROOT)]) == os.path.abspath(MODELS_ROOT)
           for e in EVAL_ENCODERS.values() if "bundle" in e):
        return None
    return {"metrics": METRICS, "paired": f"{TABLES}/paired.tsv"}


def export_model_inputs(wildcards):
    run = MODEL_RUNS[wildcards.model]
    inputs = {
        "checkpoint": f"{run['out_dir']}/final.pt",
        "manifest": SHARDS_MANIFEST.format(split="pretrain"),
        "stats": SCALING_STATS,
        "labels": ATLAS_LABELS,
    }
    if ATLAS_IMAGE:
        inputs["atlas_image"] = ATLAS_IMAGE
    return {**inputs, **(model_evaluation(wildcards.model) or {})}


def export_model_args(wildcards, input):
    """The atlas image (its id and space go into config.json) when the workflow builds one; the evaluation tables
    and the encoder's name in them (model_evaluation)."""
    args = [f"--atlas-image {shlex.quote(input.atlas_image)}"] if "atlas_image" in input.keys() else []
    if "metrics" in input.keys():
        encoder = MODEL_RUNS[wildcards.model]["encoders"][0]
        args += [f"--metrics {shlex.quote(input.metrics)} --paired {shlex.quote(input.paired)}",
                 f"--encoder-name {shlex.quote(encoder)}"]
    return " ".join(args)


# -- BrainLM's capabilities (rules/capabilities.smk; brainjepa/evaluate/capabilities.py) ---------------------------
CAPABILITIES_ROOT = f"{RESULTS}/capabilities"  # <capability>/<method>/seed<k>.json (+ tables beside perturbation's)


def _capabilities_setup():
    """evaluate.capabilities, checked when the workflow starts: names, cohorts, encoders, methods."""
    from brainjepa.evaluate.capabilities import CapabilityConfig

    out = {}
    cohorts = set(SAMPLES["cohort"])
    for name, spec in config["evaluate"].get("capabilities", {}).items():
        try:
            cap = CapabilityConfig.from_dict(name, spec, list(EVAL_ENCODERS))
        except InputError as exc:
            raise WorkflowError(f"invalid evaluate config: {exc}")
        missing = sorted(set(cap.cohorts) - cohorts)
        if missing:
            raise WorkflowError(
                f"evaluate.capabilities.{name}: cohort(s) {missing} have no runs in {config['samples']}"
            )
        if name in EVAL_TASKS:
            raise WorkflowError(f"evaluate.tasks.{name}: a task may not share the name of a capability")
        rows = SPLIT_SUBJECTS[SPLIT_SUBJECTS["cohort"].isin(cap.cohorts)]
        counts = {split: int((rows["split"] == split).sum()) for split in ("train", "val", "test")}
        if not all(counts.values()):
            empty = [split for split, n in counts.items() if not n]
            raise WorkflowError(
                f"evaluate.capabilities.{name}: no subject of cohort(s) {', '.join(cap.cohorts)} in split(s) "
                f"{', '.join(empty)} (subjects: {', '.join(f'{k} {n}' for k, n in counts.items())}); the capability "
                "trains, selects and tests on the train, val and test splits (splits.fractions)"
            )
        out[name] = cap
    return out


EVAL_CAPABILITIES = _capabilities_setup()
CAPABILITY_RESULTS = [
    f"{CAPABILITIES_ROOT}/{name}/{method}/seed{seed}.json"
    for name, cap in EVAL_CAPABILITIES.items()
    for method in cap.methods()
    for seed in config["evaluate"]["seeds"]
]
ALL_RESULTS = EVAL_RESULTS + CAPABILITY_RESULTS
# the capabilities figure reads forecasting, network identification and reconstruction; perturbation has its own
CAPABILITY_FIGURE_RESULTS = [p for p in CAPABILITY_RESULTS if not p.startswith(f"{CAPABILITIES_ROOT}/perturbation/")]
PERTURBATION_METHODS = EVAL_CAPABILITIES["perturbation"].methods() if "perturbation" in EVAL_CAPABILITIES else []
CAPABILITY_COMMANDS = {name: spec.command for name, spec in CAPABILITY_SPECS.items()}


def capability_encoder(wildcards):
    """The encoder name of a capability job, or None (a baseline)."""
    return EVAL_CAPABILITIES[wildcards.capability].parse_method(wildcards.method)[0]


def capability_inputs(wildcards):
    """The shards and the atlas label table, plus the job's encoder (checkpoint, or config and gradients)."""
    inputs = {**eval_manifests(), "atlas_labels": ATLAS_LABELS}
    encoder = capability_encoder(wildcards)
    if encoder is not None:
        inputs.update(encoder_inputs(encoder))
    return inputs


def capability_args(wildcards):
    """The options of one capability job (shell-quoted) beside --method, --seed, --shards and --out."""
    from shlex import quote

    cap = EVAL_CAPABILITIES[wildcards.capability]
    encoder, feature = cap.parse_method(wildcards.method)
    args = ["--cohorts", *map(quote, cap.cohorts), "--settings", quote(json.dumps(cap.settings, sort_keys=True))]
    if encoder is not None:
        args += ["--encoder", quote(json.dumps(encoder_spec(encoder)))]
    if feature is not None:
        args += ["--features", feature]
    if wildcards.capability in ("network_id", "perturbation"):
        args += ["--labels", quote(ATLAS_LABELS)]
    return " ".join(args)


def capability_gpus(wildcards):
    """GPUs of a capability job: those that run an encoder or train a network (not persistence, AR, raw)."""
    method = wildcards.method
    return 0 if method in ("persistence", "ar", "raw") else config["evaluate"]["gpus"]


def encoder_spec(name):
    """The JSON encoder spec of an evaluate.encoders entry (brainjepa.evaluate.encoders)."""
    entry = EVAL_ENCODERS[name]
    if "random" in entry:
        return {"kind": "random", "config": entry["random"], "gradients": GRADIENTS, "labels": ATLAS_LABELS}
    if "bundle" in entry:
        return {"kind": "bundle", "path": entry["bundle"]}
    return {"kind": "checkpoint", "path": entry["checkpoint"]}


def encoder_inputs(name):
    """What an encoder needs: its checkpoint, its bundle's files (what brainjepa.models.bundle.load_model reads), or
    (random init) its training config and the gradients."""
    entry = EVAL_ENCODERS[name]
    if "random" in entry:
        return {"train_config": entry["random"], "gradients": GRADIENTS, "labels": ATLAS_LABELS}
    if "bundle" in entry:
        files = ("config.json", "model.safetensors", "rois.tsv", "scaling.json")
        return {f"bundle_{f.split('.')[0]}": f"{entry['bundle']}/{f}" for f in files}
    return {"checkpoint": entry["checkpoint"]}


def eval_manifests():
    return {f"manifest_{s}": SHARDS_MANIFEST.format(split=s) for s in ("train", "val", "test")}


def features_inputs(wildcards):
    return {**eval_manifests(), **encoder_inputs(wildcards.encoder)}


def features_path(encoder, cohort, seed=None):
    """The feature cache of an encoder on a cohort: one per initialisation (``seed``) for a random encoder."""
    if seed is not None and "random" in EVAL_ENCODERS.get(encoder, {}):
        return f"{EVALUATE_ROOT}/features/{encoder}/init{seed}/{cohort}.npz"
    return f"{EVALUATE_ROOT}/features/{encoder}/{cohort}.npz"


def evaluate_inputs(wildcards):
    """The shards, plus the encoder (fine-tuning) or its feature caches of the task's cohorts (probes)."""
    from brainjepa.evaluate.run import parse_method

    encoder, protocol = parse_method(wildcards.method)
    inputs = eval_manifests()
    if protocol == "finetune":
        inputs.update(encoder_inputs(encoder))
    elif encoder is not None:
        inputs["features"] = [features_path(encoder, c, wildcards.seed) for c in EVAL_TASKS[wildcards.task].all_cohorts]
    return inputs


def evaluate_args(wildcards, input):
    """`brainjepa evaluate` options of one job (shell-quoted): task, protocol settings, encoder or features."""
    import dataclasses
    from shlex import quote

    from brainjepa.evaluate.run import parse_method

    task = dataclasses.asdict(EVAL_TASKS[wildcards.task])
    args = ["--task", quote(json.dumps(task)), "--protocols", quote(json.dumps(config["evaluate"]["settings"]))]
    encoder, protocol = parse_method(wildcards.method)
    if protocol == "finetune":
        args += ["--encoder", quote(json.dumps(encoder_spec(encoder)))]
    elif encoder is not None:
        args += ["--features", *map(quote, input.features)]
    if protocol != "finetune":
        args += ["--resampling", quote(json.dumps(config["evaluate"]["resampling"]))]
    return " ".join(args)


def evaluate_launched(wildcards):
    """Whether an evaluation job trains by gradient (fine-tune, probes): those start through the launcher, with
    evaluate's GPUs, nodes and processes; closed-form and FC heads run as one process on CPU."""
    from brainjepa.evaluate.run import parse_method

    _, protocol = parse_method(wildcards.method)
    return protocol in ("finetune", "linprobe", "attentive")


def evaluate_gpus(wildcards):
    """GPUs of one evaluation job: the gradient-trained methods only (closed-form and FC heads run on CPU)."""
    return config["evaluate"]["gpus"] if evaluate_launched(wildcards) else 0


# -- figures and the report (rules/figures.smk) ------------------------------------------------------------------
FIGURES = f"{RESULTS}/figures"
CAT_DATA = "1. Data and quality control"  # the report's categories, one per stage group
CAT_GROUP = "2. Group statistics"
CAT_PRETRAIN = "3. Pretraining"
CAT_EVAL = "4. Evaluation"
CAT_INTERPRET = "5. Interpretation"
REPORT_SUMMARY = f"{RESULTS}/report/summary.rst"
REPORT_SUMMARY_JSON = f"{RESULTS}/report/summary.json"  # the same facts, printed when a run ends (Snakefile onsuccess)
# the HTML report of this dataset, and the command that makes it (with this run's --configfile, if any)
_CONFIG_ARGS = [shlex.quote(os.path.relpath(str(f))) for f in workflow.overwrite_configfiles]
REPORT_COMMAND = " ".join(
    ["snakemake", *(["--configfile", *_CONFIG_ARGS] if _CONFIG_ARGS else []), "--report", f"{RESULTS}/report.html"]
)
FIGURES_CONFIG = config.get("figures", {})


def _attention_setup():
    """figures.attention, checked now: its encoder and task exist and the task has groups (classification)."""
    from brainjepa.evaluate.attention import AttentionConfig

    spec = FIGURES_CONFIG.get("attention")
    if not spec:
        return None
    try:
        cfg = AttentionConfig.from_dict(spec)
    except InputError as exc:
        raise WorkflowError(f"invalid figures.attention: {exc}")
    if cfg.encoder not in EVAL_ENCODERS:
        raise WorkflowError(
            f"figures.attention.encoder: '{cfg.encoder}' is not one of evaluate.encoders "
            f"({', '.join(EVAL_ENCODERS)})"
        )
    if cfg.task not in EVAL_TASKS:
        raise WorkflowError(
            f"figures.attention.task: '{cfg.task}' is not one of evaluate.tasks ({', '.join(EVAL_TASKS)})"
        )
    if EVAL_TASKS[cfg.task].kind == "regression":
        raise WorkflowError(
            f"figures.attention.task: '{cfg.task}' is a regression task; network attention compares "
            "the groups of a binary or multiclass task"
        )
    return cfg


ATTENTION = _attention_setup()
# Encoders by size: the scaling figure is drawn when the pretrained encoders come in more than one architecture.
_SIZES = {}
for _name, _entry in EVAL_ENCODERS.items():
    if "checkpoint" in _entry and "official" not in _entry:
        _model = load_config(config["evaluate"]["encoders"][_name]["pretrained"]).model.resolved()
        _SIZES[_name] = (_model.embed_dim, _model.depth, _model.num_heads, _model.patch_size)
SCALING_ENCODERS = sorted(_SIZES) if len(set(_SIZES.values())) > 1 else []


def figure_outputs():
    """Every figure and table of the report (and its first page)."""
    files = [
        f"{FIGURES}/{name}"
        for name in (
            "group_fc.png",
            "gradients_space.png",
            "gradients_eigenvalues.png",
            "qc_rois.png",
            "qc_splits.png",
            "qc_runs.tsv",
        )
    ]
    files += [f"{FIGURES}/gradients_brain.png"] if ATLAS_IMAGE else []  # the brain view needs the image
    if PRETRAIN_RUNS:
        files.append(f"{FIGURES}/pretraining.png")
    if EVAL_RESULTS:
        files += [f"{FIGURES}/evaluation_methods.png", f"{FIGURES}/finetune_vs_linprobe.png"]
        files += [f"{FIGURES}/scaling.png"] if SCALING_ENCODERS else []
    if ATTENTION is not None and EVAL_RESULTS:
        files += [f"{FIGURES}/network_attention.png", f"{FIGURES}/network_attention.tsv"]
    files += [f"{FIGURES}/capabilities.png"] if CAPABILITY_FIGURE_RESULTS else []
    files += [f"{FIGURES}/perturbation_{method}.png" for method in PERTURBATION_METHODS]
    return files + [REPORT_SUMMARY, REPORT_SUMMARY_JSON]


def named_options(flag, paths):
    """Repeated `flag name=path` options (shell-quoted) of {name: path}."""
    return " ".join(f"{flag} {shlex.quote(f'{name}={path}')}" for name, path in paths.items())


def excluded_tables(manifests):
    """The shards' excluded.tsv beside each split's manifest (shell-quoted)."""
    return " ".join(shlex.quote(os.path.join(os.path.dirname(m), "excluded.tsv")) for m in manifests)


def gradient_figures():
    """The gradient figures: in gradient space and the eigenvalues, and on the brain when there is an atlas image."""
    out = {
        "space": report(f"{FIGURES}/gradients_space.png", caption="../report/gradients_space.rst", category=CAT_GROUP),
        "eigenvalues": report(
            f"{FIGURES}/gradients_eigenvalues.png", caption="../report/gradients_eigenvalues.rst", category=CAT_GROUP
        ),
    }
    if ATLAS_IMAGE:
        out["brain"] = report(
            f"{FIGURES}/gradients_brain.png", caption="../report/gradients_brain.rst", category=CAT_GROUP
        )
    return out


# -- the pretraining study (rules/study.smk; brainjepa/evaluate/study.py) ------------------------------------------
def _study_setup():
    """config study.config, checked when the workflow starts: the study and the training configs it names."""
    from brainjepa.evaluate.study import load_study

    path = config["study"]["config"]
    if not path:
        return None
    try:
        study = load_study(path)
        for name, spec in study.configs.items():
            load_config(spec.config, list(spec.set))
    except InputError as exc:
        raise WorkflowError(f"invalid study config: {exc}")
    if not EVAL_TASKS:
        raise WorkflowError(f"study.config {path}: the study probes the tasks of evaluate.tasks, and there are none")
    return study


STUDY = _study_setup()
STUDY_ROOT = f"{RESULTS}/study/{STUDY.name}" if STUDY else None
STUDY_OUTPUTS = (
    [f"{STUDY_ROOT}/{name}" for name in ("study.tsv", "paired.tsv", "study.md", "study.png")] if STUDY else []
)


def study_inputs(wildcards):
    """The study config and its training configs; the shards, gradients, atlas labels and statistics; and for a
    data fraction below 1, the pretraining split's table and aligned runs (the study rebuilds shards of a subset)."""
    inputs = {
        "study": config["study"]["config"],
        "train_configs": sorted({spec.config for spec in STUDY.configs.values()}),
        **eval_manifests(),
        "pretrain": SHARDS_MANIFEST.format(split="pretrain"),
        "gradients": GRADIENTS,
        "labels": ATLAS_LABELS,
        "stats": SCALING_STATS,
    }
    if min(STUDY.data_fractions) < 1:
        inputs["splits"] = SPLIT_RUNS.format(split="pretrain")
        inputs["runs"] = run_stamps(ALIGN_TR_ROOT, PRETRAIN_RUN_IDS)
    return inputs
