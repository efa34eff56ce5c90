"""The workflow's plan: which evaluation, capability, model-bundle, figure and study jobs a config implies.

Pure functions of the workflow config (a dict, as Snakemake reads config/config.yaml), the sample sheet and the
split table, called once when the workflow starts (workflow/rules/common.smk). Each checks its section against the
sheets and raises :class:`~brainjepa.errors.InputError` naming the key; the workflow reports it before any job.
Paths are built from the roots the workflow passes in (``<output_dir>/results/<stage>``).
"""

from __future__ import annotations

import os

import pandas as pd

from brainjepa.errors import InputError
from brainjepa.train.config import load_config

# The files of a model bundle (brainjepa.models.bundle), under <models_root>/<name>/.
MODEL_FILES = ("model.safetensors", "config.json", "rois.tsv", "scaling.json", "provenance.json", "README.md")
SPLITS_OF_A_TASK = ("train", "val", "test")


def run_folder(path: str, source: str, output_dir: str) -> str:
    """The folder of a training run (run.out_dir of the training config ``source``): a relative one lies under
    ``output_dir``, as all outputs do, and one that leaves it (``..``) is refused; an absolute one is taken as it
    is."""
    if "{" in path or "}" in path:
        raise InputError(
            f"{source}: run.out_dir {path!r} holds a brace, which Snakemake reads as a wildcard; rename it"
        )
    if os.path.isabs(path):
        return os.path.normpath(path)
    resolved = os.path.normpath(os.path.join(output_dir, path))
    if os.path.relpath(resolved, output_dir).split(os.sep)[0] == os.pardir:
        raise InputError(
            f"{source}: run.out_dir {path!r} leaves output_dir ({output_dir}): a relative run folder lies under "
            f"output_dir (it resolves to {resolved}); give a folder inside it, e.g. results/pretrain/<name>, or an "
            "absolute path"
        )
    return resolved


def split_subjects(split_table: pd.DataFrame, phenotypes: pd.DataFrame) -> pd.DataFrame:
    """One row per subject: its split (columns cohort, subject, split) and its labels (the phenotypes sheet)."""
    return split_table[["cohort", "subject", "split"]].drop_duplicates().merge(
        phenotypes, on=["cohort", "subject"], how="left"
    )


def evaluate_setup(
    config: dict, samples: pd.DataFrame, subjects: pd.DataFrame, pretrain_dir: str, output_dir: str, evaluate_root: str
) -> tuple[dict, object, dict, list[dict]]:
    """Tasks, protocol settings, encoders and the pretraining runs they need (config evaluate): each task has
    labelled subjects in train, val and test, and a classification two classes to train on.

    Returns ({task: TaskConfig}, ProtocolConfig, {encoder: {"checkpoint" | "bundle" | "random" [, "official"]}},
    [pretraining run: {"rule", "config", "out_dir" [, "encoders"]}]), the main run (pretrain.config, trained into
    ``pretrain_dir``) first. ``subjects``: :func:`split_subjects`."""
    from brainjepa.evaluate.config import ProtocolConfig
    from brainjepa.evaluate.tasks import Resampling, TaskConfig, task_split_problems

    section = config["evaluate"]
    try:
        tasks = {name: TaskConfig.from_dict(name, spec) for name, spec in section["tasks"].items()}
        protocols = ProtocolConfig.from_dict(section["settings"])
        Resampling.from_dict(section["resampling"])
    except InputError as exc:
        raise InputError(f"invalid evaluate config: {exc}") from exc
    cohorts = set(samples["cohort"])
    for task in tasks.values():
        missing = sorted(set(task.all_cohorts) - cohorts)
        if missing:
            raise InputError(f"evaluate.tasks.{task.name}: cohort(s) {missing} have no runs in {config['samples']}")
        if task.label not in config["labels"]:
            raise InputError(f"evaluate.tasks.{task.name}: label '{task.label}' is not declared in labels")
    problems = [p for task in tasks.values() for p in task_split_problems(task, subjects)]
    if problems:
        raise InputError(
            f"evaluate.tasks: {'; '.join(problems)} (the splits of {config['samples']} with the labels of "
            f"{config['phenotypes']}; `brainjepa validate --config` prints the splits' counts)"
        )
    runs = [{"rule": "pretrain", "config": config["pretrain"]["config"], "out_dir": pretrain_dir}]
    encoders = {
        name: _encoder_entry(name, spec, runs, output_dir, evaluate_root) for name, spec in section["encoders"].items()
    }
    return tasks, protocols, encoders, runs


def _encoder_entry(name: str, spec: dict, runs: list[dict], output_dir: str, evaluate_root: str) -> dict:
    """The entry of one evaluate.encoders item; a pretrained one by another training config adds its run to
    ``runs`` (rule pretrain_<name>), and names the encoders that evaluate it (its bundle's card quotes them)."""
    if "pretrained" not in spec:
        if "official" in spec:
            return {"checkpoint": f"{evaluate_root}/encoders/{name}.pt", "official": spec["official"]}
        if "bundle" in spec:  # a model bundle folder (brainjepa export-model; docs/models.md)
            return {"bundle": os.path.normpath(spec["bundle"])}
        return {"random": spec["random"]}
    path = spec["pretrained"]
    known = {r["config"]: r for r in runs}
    if path not in known:
        try:
            train = load_config(path)
        except InputError as exc:
            raise InputError(f"evaluate.encoders.{name}: invalid training config: {exc}") from exc
        out_dir = run_folder(train.run.out_dir, path, output_dir)
        if out_dir in {r["out_dir"] for r in runs}:
            raise InputError(
                f"evaluate.encoders.{name}: {path} trains into {out_dir}, as another training config does; give it "
                "its own run.out_dir"
            )
        known[path] = {"rule": f"pretrain_{name}", "config": path, "out_dir": out_dir}
        runs.append(known[path])
    known[path].setdefault("encoders", []).append(name)
    return {"checkpoint": f"{known[path]['out_dir']}/final.pt"}


def eval_methods(config: dict, encoders: dict) -> list[str]:
    """The evaluation methods: <encoder>_<protocol> of every encoder and protocol, then the FC baselines."""
    methods = [f"{e}_{p}" for e in encoders for p in config["evaluate"]["protocols"]]
    return methods + list(config["evaluate"]["baselines"])


def method_seeds(method: str, config: dict, encoders: dict) -> list[int]:
    """The seeds of an evaluation method: a random encoder's frozen protocols run evaluate.random_seeds (seed k:
    the encoder initialised from seed k, its features and its probe), closed-form heads one seed, every other
    method evaluate.seeds."""
    from brainjepa.evaluate.run import FROZEN, SEEDLESS, parse_method

    encoder, protocol = parse_method(method)
    if encoder is not None and "random" in encoders[encoder] and protocol in FROZEN:
        return config["evaluate"]["random_seeds"]
    if protocol in SEEDLESS:
        return config["evaluate"]["seeds"][:1]
    return config["evaluate"]["seeds"]


def eval_results(evaluate_root: str, tasks: dict, methods: list[str], config: dict, encoders: dict) -> list[str]:
    """Every evaluation result: <evaluate_root>/<task>/<method>/seed<k>.json."""
    return [
        f"{evaluate_root}/{task}/{method}/seed{seed}.json"
        for task in tasks
        for method in methods
        for seed in method_seeds(method, config, encoders)
    ]


def model_runs(pretrain_runs: list[dict], models_root: str) -> dict[str, dict]:
    """{bundle name: pretraining run}: one bundle per run, named after its run folder."""
    runs = {}
    for run in pretrain_runs:
        name = os.path.basename(run["out_dir"])
        if name in runs:
            raise InputError(
                f"the pretraining runs {runs[name]['out_dir']} and {run['out_dir']} end in the same folder name "
                f"'{name}', which names their model bundle under {models_root}: give one of them another run.out_dir"
            )
        runs[name] = run
    return runs


def model_bundle(models_root: str, name: str) -> list[str]:
    """The files of the bundle ``name`` under ``models_root``."""
    return [f"{models_root}/{name}/{f}" for f in MODEL_FILES]


def model_evaluation(
    run: dict, tasks: dict, encoders: dict, models_root: str, metrics: str, tables: str
) -> dict[str, str] | None:
    """The evaluation tables the card of a pretraining run's bundle quotes ({"metrics", "paired"}), when the
    workflow evaluates the run as an encoder: the bundle then waits for the evaluation. None when it is not
    evaluated, or when an evaluation encoder is itself a bundle under ``models_root`` (its card would wait on its
    own evaluation: a cycle)."""
    if not run.get("encoders") or not tasks:
        return None
    root = os.path.abspath(models_root)
    bundles = [os.path.abspath(e["bundle"]) for e in encoders.values() if "bundle" in e]
    if any(os.path.commonpath([bundle, root]) == root for bundle in bundles):
        return None
    return {"metrics": metrics, "paired": f"{tables}/paired.tsv"}


def capabilities_setup(config: dict, samples: pd.DataFrame, encoders: dict, tasks: dict, subjects: pd.DataFrame):
    """evaluate.capabilities, checked: names, cohorts (with subjects in train, val and test), encoders, methods.
    Returns {capability: CapabilityConfig}."""
    from brainjepa.evaluate.capabilities import CapabilityConfig

    out = {}
    cohorts = set(samples["cohort"])
    for name, spec in config["evaluate"].get("capabilities", {}).items():
        try:
            cap = CapabilityConfig.from_dict(name, spec, list(encoders))
        except InputError as exc:
            raise InputError(f"invalid evaluate config: {exc}") from exc
        missing = sorted(set(cap.cohorts) - cohorts)
        if missing:
            raise InputError(f"evaluate.capabilities.{name}: cohort(s) {missing} have no runs in {config['samples']}")
        if name in tasks:
            raise InputError(f"evaluate.tasks.{name}: a task may not share the name of a capability")
        rows = subjects[subjects["cohort"].isin(cap.cohorts)]
        counts = {split: int((rows["split"] == split).sum()) for split in SPLITS_OF_A_TASK}
        if not all(counts.values()):
            empty = [split for split, n in counts.items() if not n]
            raise InputError(
                f"evaluate.capabilities.{name}: no subject of cohort(s) {', '.join(cap.cohorts)} in split(s) "
                f"{', '.join(empty)} (subjects: {', '.join(f'{k} {n}' for k, n in counts.items())}); the capability "
                "trains, selects and tests on the train, val and test splits (splits.fractions)"
            )
        out[name] = cap
    return out


def capability_results(capabilities_root: str, capabilities: dict, seeds: list[int]) -> list[str]:
    """Every capability result: <capabilities_root>/<capability>/<method>/seed<k>.json."""
    return [
        f"{capabilities_root}/{name}/{method}/seed{seed}.json"
        for name, cap in capabilities.items()
        for method in cap.methods()
        for seed in seeds
    ]


def capability_commands() -> dict[str, str]:
    """{capability: its `brainjepa` subcommand}."""
    from brainjepa.evaluate.capabilities import CAPABILITIES as CAPABILITY_SPECS

    return {name: spec.command for name, spec in CAPABILITY_SPECS.items()}


def attention_setup(figures: dict, encoders: dict, tasks: dict):
    """figures.attention, checked: its encoder and task exist and the task has groups (classification). Returns an
    AttentionConfig, or None when the figure is not configured."""
    from brainjepa.evaluate.attention import AttentionConfig

    spec = figures.get("attention")
    if not spec:
        return None
    try:
        cfg = AttentionConfig.from_dict(spec)
    except InputError as exc:
        raise InputError(f"invalid figures.attention: {exc}") from exc
    if cfg.encoder not in encoders:
        raise InputError(
            f"figures.attention.encoder: '{cfg.encoder}' is not one of evaluate.encoders ({', '.join(encoders)})"
        )
    if cfg.task not in tasks:
        raise InputError(f"figures.attention.task: '{cfg.task}' is not one of evaluate.tasks ({', '.join(tasks)})")
    if tasks[cfg.task].kind == "regression":
        raise InputError(
            f"figures.attention.task: '{cfg.task}' is a regression task; network attention compares the groups of a "
            "binary or multiclass task"
        )
    return cfg


def scaling_encoders(config: dict, encoders: dict) -> list[str]:
    """The encoders of the scaling figure: the pretrained ones (not converted official checkpoints), drawn when
    they come in more than one architecture (embed_dim, depth, heads, patch size); else none."""
    sizes = {}
    for name, entry in encoders.items():
        if "checkpoint" in entry and "official" not in entry:
            model = load_config(config["evaluate"]["encoders"][name]["pretrained"]).model.resolved()
            sizes[name] = (model.embed_dim, model.depth, model.num_heads, model.patch_size)
    return sorted(sizes) if len(set(sizes.values())) > 1 else []


def figure_outputs(
    figures_root: str,
    *,
    atlas_image: str | None,
    pretrain_runs: list[dict],
    eval_results: list[str],
    scaling: list[str],
    attention: object | None,
    capability_figure_results: list[str],
    perturbation_methods: list[str],
    summary: list[str],
) -> list[str]:
    """Every figure and table of the report under ``figures_root``, then the report's first page (``summary``)."""
    names = ["group_fc.png", "gradients_space.png", "gradients_eigenvalues.png", "qc_rois.png", "qc_splits.png"]
    files = [f"{figures_root}/{name}" for name in [*names, "qc_runs.tsv"]]
    files += [f"{figures_root}/gradients_brain.png"] if atlas_image else []  # the brain view needs the image
    if pretrain_runs:
        files.append(f"{figures_root}/pretraining.png")
    if eval_results:
        files += [f"{figures_root}/evaluation_methods.png", f"{figures_root}/finetune_vs_linprobe.png"]
        files += [f"{figures_root}/scaling.png"] if scaling else []
    if attention is not None and eval_results:
        files += [f"{figures_root}/network_attention.png", f"{figures_root}/network_attention.tsv"]
    files += [f"{figures_root}/capabilities.png"] if capability_figure_results else []
    files += [f"{figures_root}/perturbation_{method}.png" for method in perturbation_methods]
    return files + list(summary)


def study_setup(config: dict, tasks: dict):
    """study.config, checked: the study and the training configs it names. Returns the Study, or None when there is
    no study."""
    from brainjepa.evaluate.study import load_study

    path = config["study"]["config"]
    if not path:
        return None
    try:
        study = load_study(path)
        for spec in study.configs.values():
            load_config(spec.config, list(spec.set))
    except InputError as exc:
        raise InputError(f"invalid study config: {exc}") from exc
    if not tasks:
        raise InputError(f"study.config {path}: the study probes the tasks of evaluate.tasks, and there are none")
    return study


def study_outputs(study_root: str) -> list[str]:
    """The pretraining study's outputs under ``study_root``."""
    return [f"{study_root}/{name}" for name in ("study.tsv", "paired.tsv", "study.md", "study.png")]
