"""config/paper/: the paper's recipe as a workflow config and a training config, dry-run on sheets of its shape.

The sheets are synthetic: 40,000 UK Biobank subjects (pre-parcellated runs, empty files: a dry run only checks that
inputs exist), 656 HCP-Aging and 189 ADNI subjects (fMRIPrep BOLD runs), with the labels of the paper's tasks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from brainjepa.evaluate.config import ProtocolConfig
from brainjepa.evaluate.run import FROZEN, SEEDLESS, parse_method
from brainjepa.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper"
SUBJECTS = {"ukb": 40_000, "hcpa": 656, "adni": 189}  # the paper: ~40,000 UKB, HCP-Aging 656, ADNI 189
TR = {"ukb": 0.735, "hcpa": 0.8, "adni": 3.0}


def write_paper_sheets(work: Path, subjects: dict[str, int] = SUBJECTS, seed: int = 0) -> None:
    """config/paper/ copied into ``work`` with its two sheets filled: one run per subject, ukb pre-parcellated
    (timeseries), hcpa and adni as fMRIPrep BOLD runs in the atlas's space; every file exists, empty."""
    rng = np.random.default_rng(seed)
    shutil.copytree(PAPER, work / "config" / "paper")
    rows, phenotypes = [], []
    for cohort, n in subjects.items():
        folder = work / "data" / cohort
        folder.mkdir(parents=True)
        for i in range(n):
            subject = f"{cohort}{i:05d}"
            row = {"cohort": cohort, "subject": subject, "session": "1", "run": "1", "bold": "", "mask": "",
                   "timeseries": "", "tr": str(TR[cohort])}
            if cohort == "ukb":
                row["timeseries"] = f"data/{cohort}/sub-{subject}_timeseries.parquet"
            else:
                row["bold"] = (f"data/{cohort}/sub-{subject}_ses-1_task-rest_run-1_space-MNI152NLin6Asym_"
                               "desc-preproc_bold.nii.gz")
            (work / (row["timeseries"] or row["bold"])).touch()
            rows.append(row)
            labels = {"age": round(float(rng.uniform(36, 100)), 1), "sex": str(rng.choice(["F", "M"]))}
            if cohort == "hcpa":
                labels.update(neuroticism=int(rng.integers(0, 48)), flanker=round(float(rng.normal(100, 15)), 1))
            if cohort == "adni":  # the paper's 189: 100 CN (with amyloid status), 89 MCI
                cn = i < round(n * 100 / 189)
                labels.update(diagnosis="CN" if cn else "MCI", amyloid=int(rng.integers(0, 2)) if cn else "")
            phenotypes.append({"cohort": cohort, "subject": subject, **labels})
    columns = (PAPER / "phenotypes.tsv").read_text().split()
    pd.DataFrame(rows).to_csv(work / "config/paper/samples.tsv", sep="\t", index=False)
    pd.DataFrame(phenotypes).reindex(columns=columns).to_csv(work / "config/paper/phenotypes.tsv", sep="\t",
                                                             index=False)


def dry_run(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory",
           str(work), "--cores", "2", "-n", "--quiet", "rules", "all", "--configfile",
           str(work / "config/paper/config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}


@pytest.fixture(scope="module")
def paper_project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("paper")
    write_paper_sheets(work)
    return work



def test_the_paper_training_config_is_the_papers_recipe():
    """ViT-B, paper masks, 300 epochs with 40 of warm-up, LR 5e-5 -> 1e-3 -> 1e-6, weight decay 0.04 -> 0.4, EMA
    0.996 -> 1, MSE, bf16; the global batch 16 per GPU x 4 GPUs (the workflow config's) x 8 accumulation = 512."""
    cfg = load_config(PAPER / "pretrain.yaml")
    config = yaml.safe_load((PAPER / "config.yaml").read_text())
    assert (cfg.objective, cfg.model.size, cfg.model.patch_size, cfg.model.positional) == ("jepa", "base", 16,
                                                                                          "gradient")
    assert (cfg.mask.mode, cfg.mask.alpha_roi, cfg.mask.beta_gamma_time) == ("paper", (0.45, 0.6), (0.0, 0.4))
    o = cfg.optim
    assert (o.epochs, o.warmup_epochs, o.start_lr, o.lr, o.final_lr) == (300, 40, 5e-5, 1e-3, 1e-6)
    assert (o.weight_decay, o.final_weight_decay, o.betas, o.ema, o.loss) == (0.04, 0.4, (0.9, 0.999),
                                                                              (0.996, 1.0), "mse")
    assert cfg.run.precision == "bf16" and cfg.run.checkpoint_every == 10
    layout = config["pretrain"]
    assert layout["processes"] == layout["gpus"] == 4 and layout["nodes"] == 1
    assert cfg.data.batch_size * layout["processes"] * o.accumulation_steps == 512
    assert config["shards"]["window"] == cfg.model.patch_size * 10 and config["gradients"]["n_components"] == 30
    settings = ProtocolConfig.from_dict(config["evaluate"]["settings"])
    ft, lp = settings.finetune, settings.linprobe
    assert (ft.epochs, ft.batch_size, ft.base_lr, ft.weight_decay, ft.layer_decay, ft.drop_path) == (
        50, 16, 1e-3, 0.05, 0.75, 0.1)
    assert (lp.recipe, lp.epochs, lp.batch_size, lp.base_lr, lp.weight_decay) == ("paper", 50, 64, 0.01, 0.0)
    assert config["evaluate"]["resampling"] == {"scheme": "fixed"} and len(config["evaluate"]["seeds"]) == 5


def test_the_sheets_to_fill_are_header_only_and_the_readme_explains_every_column():
    readme = (PAPER / "README.md").read_text()
    for name in ("samples.tsv", "phenotypes.tsv"):
        lines = (PAPER / name).read_text().splitlines()
        assert len(lines) == 1, name
        for column in lines[0].split("\t"):
            assert f"`{column}`" in readme, (name, column)


@pytest.mark.slow
def test_the_paper_config_plans_on_sheets_of_the_papers_shape(paper_project):
    """`snakemake -n all` on 40,000 UKB + 656 HCP-A + 189 ADNI subjects: it plans, with the jobs the config implies:
    one per batch per per-run stage (UKB's 100 pretraining and 100 held-out batches, 4 and 2 of the others), one
    ViT-B pretraining, features per (encoder, cohort) for the probes (one per initialisation of the random encoder),
    and task x method x seed evaluations (closed-form and FC: one seed; a random encoder's probes: its inits)."""
    config = yaml.safe_load((PAPER / "config.yaml").read_text())
    result = dry_run(paper_project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    batching = config["batching"]["cohorts"]
    for stage in ("parcellate", "align_tr"):
        batches = sorted(rule[len(stage) + 1:] for rule in counts if rule.startswith(f"{stage}_"))
        expected = sorted([f"ukb_{p}{k:02d}" for p in "bh" for k in range(batching["ukb"])]
                          + [f"{c}_b{k:02d}" for c in ("hcpa", "adni") for k in range(batching[c])])
        assert batches == expected, stage
        assert all(counts[f"{stage}_{b}"] == 1 for b in batches)
    evaluate = config["evaluate"]
    methods = [f"{e}_{p}" for e in evaluate["encoders"] for p in evaluate["protocols"]] + evaluate["baselines"]

    def seeds(method: str) -> list[int]:
        encoder, protocol = parse_method(method)
        if encoder is not None and "random" in evaluate["encoders"][encoder] and protocol in FROZEN:
            return evaluate["random_seeds"]
        return evaluate["seeds"][:1] if protocol in SEEDLESS else evaluate["seeds"]

    tasks = evaluate["tasks"]
    assert len(tasks) == 8
    assert counts["evaluate"] == len(tasks) * sum(len(seeds(m)) for m in methods) == 8 * (5 + 5 + 5 + 5 + 1)
    cohorts = {c for task in tasks.values() for c in task["cohorts"]}
    assert cohorts == set(SUBJECTS)
    assert counts["features"] == len(cohorts)                                          # jepa on ukb, hcpa, adni
    assert counts["features_random_init"] == len(evaluate["random_seeds"]) * len(cohorts)
    assert counts["pretrain"] == counts["metrics"] == counts["atlas"] == counts["gradients"] == 1
    assert "pretrain_mae" not in counts and not any(rule.startswith("simulate") for rule in counts)
    assert counts["network_attention"] == 1 and "capability" not in counts
    assert counts["total"] == sum(n for rule, n in counts.items() if rule != "total")


@pytest.mark.slow
def test_a_typo_in_the_paper_training_config_fails_the_dry_run(paper_project, tmp_path):
    """A misspelt key in the training config stops `snakemake -n` before any job, with a message naming it."""
    train = yaml.safe_load((PAPER / "pretrain.yaml").read_text())
    train["optim"]["warmup_epoch"] = train["optim"].pop("warmup_epochs")
    (paper_project / "config/paper/typo.yaml").write_text(yaml.safe_dump(train))
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({"pretrain": {"config": "config/paper/typo.yaml"}}))
    result = dry_run(paper_project, str(path))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "optim.warmup_epoch" in output, output[-3000:]
    assert not (paper_project / "studies").exists()


@pytest.mark.parametrize("section, change, message", [
    ("settings", {"linprobe": {"recipe": "paper", "epoch": 50}}, "linprobe.epoch"),
    ("resampling", {"scheme": "fixd"}, "fixd"),
    ("layout", {"processes": 2}, "pretrain.processes: 2 but pretrain.gpus: 4"),
])
def test_typos_in_the_paper_workflow_config_are_named(section, change, message):
    """The checks the workflow runs when it starts (the same functions; the dry run of a training-config typo above
    and tests/test_launch.py's dry run show them stopping the workflow) name a misspelt evaluation setting, a bad
    resampling scheme and a layout with fewer GPUs than processes."""
    from brainjepa.errors import InputError
    from brainjepa.evaluate.tasks import Resampling
    from brainjepa.train.launch import check_sections

    config = yaml.safe_load((PAPER / "config.yaml").read_text())
    with pytest.raises(InputError, match=re.escape(message)):
        if section == "settings":
            ProtocolConfig.from_dict({**config["evaluate"]["settings"], **change})
        elif section == "resampling":
            Resampling.from_dict({**config["evaluate"].get("resampling", {}), **change})
        else:
            check_sections({**config, "pretrain": {**config["pretrain"], **change}})
