# Config, sample-sheet and training-config validation (before any job runs), the results layout, and the plan of
# the jobs (brainjepa/plan.py). Layout: every rule writes under <output_dir>/results/<stage>/ and logs to
# <output_dir>/logs/<rule>/ (output_dir: one per dataset; the demo's is the checkout, "results/" and "logs/").
# The batch stamps are in batches.smk, job resources in resources.smk, the rules' input functions in inputs.smk.
import dataclasses
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from brainjepa import batches, bids, plan, sheets
from brainjepa.errors import InputError
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
    """The run folder (run.out_dir) of the training config ``source``: under output_dir unless absolute
    (brainjepa.plan.run_folder)."""
    try:
        return plan.run_folder(path, source, OUTPUT_DIR)
    except InputError as exc:
        raise WorkflowError(str(exc))


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
# the training config's run folder (under output_dir)
PRETRAIN_DIR = output_path(TRAIN_CONFIG.run.out_dir, config["pretrain"]["config"])
try:  # when the workflow starts: one process per GPU in each launched section (before any job)
    launch.check_sections(config)
except InputError as exc:
    raise WorkflowError(f"invalid config: {exc}")

EVALUATE_ROOT = f"{RESULTS}/evaluate"  # <task>/<method>/seed<k>.json; features/<encoder>/<cohort>.npz
METRICS = f"{RESULTS}/metrics.tsv"
TABLES = f"{RESULTS}/tables"  # <task>.md and summary.md
MODELS_ROOT = f"{RESULTS}/models"  # <name>/: a model bundle (brainjepa/models/bundle.py)
CAPABILITIES_ROOT = f"{RESULTS}/capabilities"  # <capability>/<method>/seed<k>.json (+ tables beside perturbation's)
FIGURES = f"{RESULTS}/figures"
CAT_DATA = "1. Data and quality control"  # the report's categories, one per stage group
CAT_GROUP = "2. Group statistics"
CAT_PRETRAIN = "3. Pretraining"
CAT_EVAL = "4. Evaluation"
CAT_INTERPRET = "5. Interpretation"
REPORT_SUMMARY = f"{RESULTS}/report/summary.rst"
REPORT_SUMMARY_JSON = f"{RESULTS}/report/summary.json"  # the same facts, printed when a run ends (Snakefile onsuccess)

# The plan, checked when the workflow starts (brainjepa/plan.py): evaluation tasks, encoders and the pretraining
# runs they need; model bundles; BrainLM's capabilities; the figures; the pretraining study.
try:
    SPLIT_SUBJECTS = plan.split_subjects(SPLIT_TABLE, PHENOTYPES)  # one row per subject: split and labels
    EVAL_TASKS, EVAL_PROTOCOLS, EVAL_ENCODERS, PRETRAIN_RUNS = plan.evaluate_setup(
        config, SAMPLES, SPLIT_SUBJECTS, PRETRAIN_DIR, OUTPUT_DIR, EVALUATE_ROOT
    )
    EVAL_METHODS = plan.eval_methods(config, EVAL_ENCODERS)
    EVAL_RESULTS = plan.eval_results(EVALUATE_ROOT, EVAL_TASKS, EVAL_METHODS, config, EVAL_ENCODERS)
    MODEL_RUNS = plan.model_runs(PRETRAIN_RUNS, MODELS_ROOT)
    EVAL_CAPABILITIES = plan.capabilities_setup(config, SAMPLES, EVAL_ENCODERS, EVAL_TASKS, SPLIT_SUBJECTS)
    CAPABILITY_RESULTS = plan.capability_results(CAPABILITIES_ROOT, EVAL_CAPABILITIES, config["evaluate"]["seeds"])
    FIGURES_CONFIG = config.get("figures", {})
    ATTENTION = plan.attention_setup(FIGURES_CONFIG, EVAL_ENCODERS, EVAL_TASKS)
    SCALING_ENCODERS = plan.scaling_encoders(config, EVAL_ENCODERS)
    STUDY = plan.study_setup(config, EVAL_TASKS)
except InputError as exc:
    raise WorkflowError(str(exc))
ALL_RESULTS = EVAL_RESULTS + CAPABILITY_RESULTS
# the capabilities figure reads forecasting, network identification and reconstruction; perturbation has its own
CAPABILITY_FIGURE_RESULTS = [p for p in CAPABILITY_RESULTS if not p.startswith(f"{CAPABILITIES_ROOT}/perturbation/")]
PERTURBATION_METHODS = EVAL_CAPABILITIES["perturbation"].methods() if "perturbation" in EVAL_CAPABILITIES else []
STUDY_ROOT = f"{RESULTS}/study/{STUDY.name}" if STUDY else None
STUDY_OUTPUTS = plan.study_outputs(STUDY_ROOT) if STUDY else []


def figure_outputs():
    """Every figure and table of the report (and its first page)."""
    return plan.figure_outputs(
        FIGURES,
        atlas_image=ATLAS_IMAGE,
        pretrain_runs=PRETRAIN_RUNS,
        eval_results=EVAL_RESULTS,
        scaling=SCALING_ENCODERS,
        attention=ATTENTION,
        capability_figure_results=CAPABILITY_FIGURE_RESULTS,
        perturbation_methods=PERTURBATION_METHODS,
        summary=[REPORT_SUMMARY, REPORT_SUMMARY_JSON],
    )


def get_final_outputs():
    """The targets of `all`: every stage's outputs (a batch's per-run files only where deleted, batch_targets)."""
    group = [SPLITS, SPLIT_BALANCE, SCALING_STATS, GROUP_FC, GRADIENTS]
    per_run = [f for root in (PARCELLATE_ROOT, ALIGN_TR_ROOT) for batch in BATCHES for f in batch_targets(root, batch)]
    shards = [SHARDS_MANIFEST.format(split=s) for s in SPLIT_NAMES]
    pretrained = [f"{r['out_dir']}/final.pt" for r in PRETRAIN_RUNS]
    pretrained += [f for name in MODEL_RUNS for f in plan.model_bundle(MODELS_ROOT, name)]  # their bundles
    evaluation = [METRICS, f"{TABLES}/summary.md"] if ALL_RESULTS else []
    atlas = [ATLAS_IMAGE, ATLAS_LABELS] if ATLAS_IMAGE else [ATLAS_LABELS]
    return [*atlas, *group, *shards, *pretrained, *per_run, *evaluation, *figure_outputs(), *STUDY_OUTPUTS]
