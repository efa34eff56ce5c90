# The input functions and argument builders of the rules, a section per stage (the rules files hold rules only,
# as `snakemake --lint` asks): each reads the workflow's start (common.smk) and returns a rule's inputs, or the
# shell-quoted options of its command.


# -- the demo cohort (simulate.smk) --------------------------------------------------------------------------------
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


# -- the atlas (atlas.smk) -----------------------------------------------------------------------------------------
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


# -- parcellation and TR alignment (parcellate.smk, align_tr.smk) --------------------------------------------------
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


def aligned_runs(run_ids):
    return [str(splits.run_file(ALIGN_TR_ROOT, run_id)) for run_id in run_ids]


# -- splits, group statistics (group.smk) and shards (shards.smk) --------------------------------------------------
def splits_inputs(wildcards):
    """The sample sheet, and the phenotypes when a cohort is stratified by a label."""
    inputs = {"samples": config["samples"]}
    if config["splits"]["stratify"]:
        inputs["phenotypes"] = config["phenotypes"]
    return inputs


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


def split_rows_digest(wildcards):
    """A digest of one split's rows of the split table (the workflow's start computes the same table as the splits
    job): a parameter of rule split_table, which reruns it when the split's runs change."""
    import hashlib

    rows = SPLIT_TABLE[SPLIT_TABLE["split"] == wildcards.split].sort_values("run_id")
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()[:16]


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


# -- model bundles (models.smk) ------------------------------------------------------------------------------------
def model_evaluation(name):
    """The evaluation tables the card of bundle ``name`` quotes, or None (brainjepa.plan.model_evaluation)."""
    return plan.model_evaluation(MODEL_RUNS[name], EVAL_TASKS, EVAL_ENCODERS, MODELS_ROOT, METRICS, TABLES)


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
        args += [
            f"--metrics {shlex.quote(input.metrics)} --paired {shlex.quote(input.paired)}",
            f"--encoder-name {shlex.quote(encoder)}",
        ]
    return " ".join(args)


# -- evaluation (evaluate.smk) -------------------------------------------------------------------------------------
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


# -- BrainLM's capabilities (capabilities.smk) ---------------------------------------------------------------------
CAPABILITY_COMMANDS = plan.capability_commands()  # {capability: its `brainjepa` subcommand}


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


# -- figures and the report (figures.smk) --------------------------------------------------------------------------
# the HTML report of this dataset, and the command that makes it (with this run's --configfile, if any)
_CONFIG_ARGS = [shlex.quote(os.path.relpath(str(f))) for f in workflow.overwrite_configfiles]
REPORT_COMMAND = " ".join(
    ["snakemake", *(["--configfile", *_CONFIG_ARGS] if _CONFIG_ARGS else []), "--report", f"{RESULTS}/report.html"]
)


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


# -- the pretraining study (study.smk) -----------------------------------------------------------------------------
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
