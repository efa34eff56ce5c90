"""brainjepa.plan: the jobs a workflow config implies, on the demo config and small tables (no Snakemake)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from brainjepa import plan, sheets
from brainjepa.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("pretrain", "train", "val", "test")
ROOT = "out/results"


def subject_table(tmp_path: Path, labels: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(samples, split table, phenotypes) of two small cohorts: ukbsim (4 subjects per split, age and sex) and
    adnisim (4 per split but pretrain, age and diagnosis 0/1), the phenotypes read as the workflow reads them."""
    runs, phenotypes = [], []
    for cohort, splits_of in (("ukbsim", SPLITS), ("adnisim", SPLITS[1:])):
        for split in splits_of:
            for k in range(4):
                subject = f"{cohort}{split}{k}"
                runs.append({"run_id": f"{cohort}/sub-{subject}_ses-1_run-1", "cohort": cohort, "subject": subject,
                             "split": split})
                row = {"cohort": cohort, "subject": subject, "age": 50 + k, "sex": "MF"[k % 2], "diagnosis": ""}
                if cohort == "adnisim":
                    row.update(sex="", diagnosis=str(k % 2))
                phenotypes.append(row)
    path = tmp_path / "phenotypes.tsv"
    pd.DataFrame(phenotypes).to_csv(path, sep="\t", index=False)
    split_table = pd.DataFrame(runs)
    return split_table[["run_id", "cohort", "subject"]], split_table, sheets.load_phenotypes(path, labels)


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """The demo config (config/config.yaml, with the schema's defaults it relies on) and small tables; the working
    directory is the checkout (the config's training configs are relative to it)."""
    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.setdefault("study", {"config": None})
    samples, split_table, phenotypes = subject_table(tmp_path, config["labels"])
    return config, samples, plan.split_subjects(split_table, phenotypes)


def evaluate(config, samples, subjects):
    return plan.evaluate_setup(config, samples, subjects, f"{ROOT}/pretrain/main", "out", f"{ROOT}/evaluate")


def test_split_subjects_has_one_row_per_subject_with_its_split_and_labels(demo):
    _, _, subjects = demo
    assert len(subjects) == 4 * 4 + 4 * 3 and not subjects.duplicated(["cohort", "subject"]).any()
    assert {"split", "age", "sex", "diagnosis"} <= set(subjects.columns)


def test_the_demo_plan_has_its_tasks_encoders_and_one_extra_pretraining_run(demo):
    config, samples, subjects = demo
    tasks, protocols, encoders, runs = evaluate(config, samples, subjects)
    assert list(tasks) == list(config["evaluate"]["tasks"])
    assert protocols is not None
    # jepa trains with the main run (pretrain.config), mae with a run of its own (rule pretrain_mae)
    assert [r["rule"] for r in runs] == ["pretrain", "pretrain_mae"]
    assert runs[0] == {"rule": "pretrain", "config": "config/pretrain.yaml", "out_dir": f"{ROOT}/pretrain/main",
                       "encoders": ["jepa"]}
    assert runs[1]["out_dir"] == "out/results/pretrain/mae_tiny" and runs[1]["encoders"] == ["mae"]
    assert encoders == {"jepa": {"checkpoint": f"{ROOT}/pretrain/main/final.pt"},
                        "mae": {"checkpoint": "out/results/pretrain/mae_tiny/final.pt"},
                        "random": {"random": "config/pretrain.yaml"}}


def test_method_seeds_random_inits_for_a_random_encoders_frozen_protocols_one_seed_for_seedless(demo):
    config, samples, subjects = demo
    tasks, _, encoders, _ = evaluate(config, samples, subjects)
    seeds, inits = config["evaluate"]["seeds"], config["evaluate"]["random_seeds"]
    assert plan.method_seeds("random_closed_form", config, encoders) == inits
    assert plan.method_seeds("random_linprobe", config, encoders) == inits
    assert plan.method_seeds("random_finetune", config, encoders) == seeds   # not frozen: the seeds
    assert plan.method_seeds("jepa_closed_form", config, encoders) == seeds[:1]
    assert plan.method_seeds("fc_linear", config, encoders) == seeds[:1]
    assert plan.method_seeds("jepa_linprobe", config, encoders) == seeds
    methods = plan.eval_methods(config, encoders)
    assert methods[:2] == ["jepa_finetune", "jepa_linprobe"] and methods[-2:] == config["evaluate"]["baselines"]
    results = plan.eval_results(f"{ROOT}/evaluate", tasks, methods, config, encoders)
    assert len(results) == len(tasks) * sum(len(plan.method_seeds(m, config, encoders)) for m in methods)
    assert f"{ROOT}/evaluate/age/random_closed_form/seed4.json" in results
    assert f"{ROOT}/evaluate/age/jepa_closed_form/seed1.json" not in results


@pytest.mark.parametrize("change, message", [
    (lambda e: e["tasks"]["age"].update(cohorts=["nosuch"]), "evaluate.tasks.age: cohort(s) ['nosuch'] have no runs"),
    (lambda e: e["tasks"]["age"].update(label="height"), "label 'height' is not declared in labels"),
    (lambda e: e["tasks"]["age"].update(kind="sideways"), "invalid evaluate config: "),
    (lambda e: e["tasks"]["diagnosis"].update(cohorts=["ukbsim"]),
     "task diagnosis: no labelled subject in split 'train'"),
    (lambda e: e["encoders"].update(mae={"pretrained": "config/nosuch.yaml"}),
     "evaluate.encoders.mae: invalid training config: "),
])
def test_evaluate_setup_names_the_key_of_a_bad_evaluate_section(demo, change, message):
    config, samples, subjects = demo
    config = copy.deepcopy(config)
    change(config["evaluate"])
    with pytest.raises(InputError) as info:
        evaluate(config, samples, subjects)
    assert message in str(info.value)


def test_two_training_configs_into_one_run_folder_are_refused(demo, tmp_path):
    config, samples, subjects = demo
    twin = yaml.safe_load((REPO / "config" / "pretrain_mae.yaml").read_text())
    twin["run"]["out_dir"] = "results/pretrain/mae_tiny"
    (tmp_path / "twin.yaml").write_text(yaml.safe_dump(twin))
    config["evaluate"]["encoders"]["twin"] = {"pretrained": str(tmp_path / "twin.yaml")}
    with pytest.raises(InputError, match="evaluate.encoders.twin: .* trains into out/results/pretrain/mae_tiny, as "
                                         "another training config does"):
        evaluate(config, samples, subjects)


def test_run_folder_lies_under_output_dir_unless_absolute():
    assert plan.run_folder("results/pretrain/x", "a.yaml", "out") == "out/results/pretrain/x"
    assert plan.run_folder("results/../results/x", "a.yaml", ".") == "results/x"
    assert plan.run_folder("/abs/run", "a.yaml", "out") == "/abs/run"
    with pytest.raises(InputError, match=r"a.yaml: run.out_dir '../../escape' leaves output_dir \(out\)"):
        plan.run_folder("../../escape", "a.yaml", "out")
    with pytest.raises(InputError, match="holds a brace"):
        plan.run_folder("results/{x}", "a.yaml", "out")


def test_model_runs_bundles_and_the_evaluation_a_card_quotes(demo):
    config, samples, subjects = demo
    tasks, _, encoders, runs = evaluate(config, samples, subjects)
    models = plan.model_runs(runs, f"{ROOT}/models")
    assert list(models) == ["main", "mae_tiny"]
    assert plan.model_bundle(f"{ROOT}/models", "main") == [f"{ROOT}/models/main/{f}" for f in plan.MODEL_FILES]
    quoted = {"metrics": f"{ROOT}/metrics.tsv", "paired": f"{ROOT}/tables/paired.tsv"}
    args = (encoders, f"{ROOT}/models", f"{ROOT}/metrics.tsv", f"{ROOT}/tables")
    assert plan.model_evaluation(models["main"], tasks, *args) == quoted
    assert plan.model_evaluation({"out_dir": "x"}, tasks, *args) is None             # not an evaluated encoder
    assert plan.model_evaluation(models["main"], {}, *args) is None                  # no tasks
    # an encoder that is a bundle of this workflow: its card would wait on its own evaluation
    cyclic = {**encoders, "b": {"bundle": os.path.normpath(f"{ROOT}/models/main")}}
    assert plan.model_evaluation(models["main"], tasks, cyclic, *args[1:]) is None
    with pytest.raises(InputError, match="end in the same folder name 'x'"):
        plan.model_runs([{"out_dir": "a/x"}, {"out_dir": "b/x"}], f"{ROOT}/models")


def test_the_demo_capabilities_and_their_results(demo):
    config, samples, subjects = demo
    tasks, _, encoders, _ = evaluate(config, samples, subjects)
    capabilities = plan.capabilities_setup(config, samples, encoders, tasks, subjects)
    assert list(capabilities) == list(config["evaluate"]["capabilities"])
    results = plan.capability_results(f"{ROOT}/capabilities", capabilities, [0, 1])
    per_capability = {name: sum(r.split("/")[3] == name for r in results) for name in capabilities}
    # forecast: 3 encoders + 3 baselines; reconstruction: mae; network_id: 3 encoders x 2 features + raw;
    # perturbation: 3 encoders; each x 2 seeds
    assert per_capability == {"forecast": 12, "reconstruction": 2, "network_id": 14, "perturbation": 6}
    assert set(plan.capability_commands()) == set(capabilities)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(forecast={**c["forecast"], "cohorts": ["nosuch"]}),
     "evaluate.capabilities.forecast: cohort(s) ['nosuch'] have no runs"),
    (lambda c: c.update(forecast={**c["forecast"], "encoders": ["nosuch"]}), "invalid evaluate config: "),
])
def test_capabilities_setup_names_the_key_of_a_bad_capability(demo, change, message):
    config, samples, subjects = demo
    tasks, _, encoders, _ = evaluate(config, samples, subjects)
    config = copy.deepcopy(config)
    change(config["evaluate"]["capabilities"])
    with pytest.raises(InputError) as info:
        plan.capabilities_setup(config, samples, encoders, tasks, subjects)
    assert message in str(info.value)


def test_a_capability_needs_subjects_in_train_val_and_test_and_a_name_of_its_own(demo):
    config, samples, subjects = demo
    tasks, _, encoders, _ = evaluate(config, samples, subjects)
    with pytest.raises(InputError, match="evaluate.tasks.forecast: a task may not share the name of a capability"):
        plan.capabilities_setup(config, samples, encoders, {**tasks, "forecast": tasks["age"]}, subjects)
    subjects = subjects[~((subjects["cohort"] == "ukbsim") & (subjects["split"] == "val"))]
    with pytest.raises(InputError, match=r"no subject of cohort\(s\) ukbsim in split\(s\) val"):
        plan.capabilities_setup(config, samples, encoders, tasks, subjects)


def test_attention_setup_checks_its_encoder_and_a_classification_task(demo):
    config, samples, subjects = demo
    tasks, _, encoders, _ = evaluate(config, samples, subjects)
    attention = plan.attention_setup(config["figures"], encoders, tasks)
    assert (attention.encoder, attention.task) == ("jepa", "diagnosis")
    assert plan.attention_setup({"attention": None}, encoders, tasks) is None
    assert plan.attention_setup({}, encoders, tasks) is None
    for spec, message in (({"encoder": "nope", "task": "diagnosis"}, "figures.attention.encoder: 'nope'"),
                          ({"encoder": "jepa", "task": "nope"}, "figures.attention.task: 'nope'"),
                          ({"encoder": "jepa", "task": "age"}, "'age' is a regression task"),
                          ({"encoder": "jepa", "task": "sex", "direction": "sideways"}, "invalid figures.attention")):
        with pytest.raises(InputError) as info:
            plan.attention_setup({"attention": spec}, encoders, tasks)
        assert message in str(info.value)


def test_the_scaling_figure_needs_pretrained_encoders_of_two_sizes(demo, tmp_path):
    config, samples, subjects = demo
    _, _, encoders, _ = evaluate(config, samples, subjects)
    assert plan.scaling_encoders(config, encoders) == []       # jepa and mae: one architecture
    small = yaml.safe_load((REPO / "config" / "pretrain.yaml").read_text())
    small["model"].update(embed_dim=32)
    small["run"]["out_dir"] = "results/pretrain/brainjepa_small"
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    config["evaluate"]["encoders"]["small"] = {"pretrained": str(tmp_path / "small.yaml")}
    _, _, encoders, _ = evaluate(config, samples, subjects)
    assert plan.scaling_encoders(config, encoders) == ["jepa", "mae", "small"]


def test_figure_outputs_follow_what_the_run_has():
    none = dict(atlas_image=None, pretrain_runs=[], eval_results=[], scaling=[], attention=None,
                capability_figure_results=[], perturbation_methods=[], summary=["s.rst", "s.json"])
    base = plan.figure_outputs("f", **none)
    assert base == [f"f/{n}" for n in ("group_fc.png", "gradients_space.png", "gradients_eigenvalues.png",
                                       "qc_rois.png", "qc_splits.png", "qc_runs.tsv")] + ["s.rst", "s.json"]
    full = plan.figure_outputs("f", **{**none, "atlas_image": "a.nii.gz", "pretrain_runs": [{}], "eval_results": ["r"],
                                       "scaling": ["a", "b"], "attention": object(),
                                       "capability_figure_results": ["c"], "perturbation_methods": ["jepa", "mae"]})
    assert set(full) - set(base) == {f"f/{n}" for n in (
        "gradients_brain.png", "pretraining.png", "evaluation_methods.png", "finetune_vs_linprobe.png", "scaling.png",
        "network_attention.png", "network_attention.tsv", "capabilities.png", "perturbation_jepa.png",
        "perturbation_mae.png")}
    # attention and scaling are drawn from evaluation results only
    assert plan.figure_outputs("f", **{**none, "scaling": ["a", "b"], "attention": object()}) == base


def test_the_study_plan(demo, tmp_path):
    config, samples, subjects = demo
    tasks, _, _, _ = evaluate(config, samples, subjects)
    assert plan.study_setup(config, tasks) is None
    config["study"] = {"config": str(tmp_path / "nosuch.yaml")}
    with pytest.raises(InputError, match="invalid study config: "):
        plan.study_setup(config, tasks)
    assert plan.study_outputs("s") == ["s/study.tsv", "s/paired.tsv", "s/study.md", "s/study.png"]
