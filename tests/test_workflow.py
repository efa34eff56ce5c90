"""The Snakemake workflow, run for real on a tiny demo configuration."""

from __future__ import annotations

import json
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
from PIL import Image

from brainjepa import batches
from brainjepa.io import read_timeseries
from brainjepa.simulate import cohorts_from_spec, write_demo_sheets

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config"  # the tiny test configuration: config.yaml, training configs and sheets
TINY_COHORTS = yaml.safe_load((REPO / ".test" / "demo_cohorts.yaml").read_text())  # the spec of its sheets
PER_RUN_STAGES = ("simulate_run", "parcellate", "align_tr")  # one rule per batch: <stage>_<cohort>_<b|h>NN


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}


def batch_jobs(counts: dict[str, int]) -> dict[str, list[str]]:
    """The batch jobs of the per-run stages among job counts: {stage: [batch rule suffix, ...]} (and removes them)."""
    jobs = {stage: sorted(r[len(stage) + 1:] for r in counts if r.startswith(f"{stage}_")) for stage in PER_RUN_STAGES}
    for stage, suffixes in jobs.items():
        for suffix in suffixes:
            assert counts.pop(f"{stage}_{suffix}") == 1
    return jobs


def write_tiny_project(work: Path) -> None:
    """The tiny test configuration (.test/config/: a demo config, training configs and sheets) in ``work``/config
    (every stage runs in about a minute)."""
    shutil.copytree(TEST_CONFIG, work / "config")


def test_the_tiny_test_config_is_the_demo_config_with_its_documented_changes(tmp_path):
    """.test/config/ follows config/: the demo's workflow and training configs with the changes its header names,
    and sheets written from .test/demo_cohorts.yaml."""
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    demo["demo"]["cohorts"] = {name: {k: spec[k] for k in ("tr", "n_volumes")} for name, spec in TINY_COHORTS.items()}
    demo["shards"]["window"] = 32
    demo["gradients"]["n_components"] = 5
    demo["pretrain"]["config"] = "config/pretrain.yaml"
    demo["evaluate"].update(tasks={}, capabilities={})
    demo["figures"]["attention"] = None
    assert yaml.safe_load((TEST_CONFIG / "config.yaml").read_text()) == demo
    for name in ("pretrain", "pretrain_mae"):
        train = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
        train["data"].update(batch_size=2)
        train["model"].update(patch_size=16)  # data.window: the shards' window (32): 2 time patches per window
        train["optim"].update(epochs=2, warmup_epochs=1)
        assert yaml.safe_load((TEST_CONFIG / f"{name}.yaml").read_text()) == train, name
    write_demo_sheets(tmp_path / "samples.tsv", tmp_path / "phenotypes.tsv", "resources/demo",
                      cohorts_from_spec(TINY_COHORTS), seed=0)
    for name in ("samples.tsv", "phenotypes.tsv"):
        assert (tmp_path / name).read_text() == (TEST_CONFIG / name).read_text(), name


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory) -> Path:
    """A working directory with a tiny demo config and sheets, after one full workflow run."""
    work = tmp_path_factory.mktemp("tiny")
    write_tiny_project(work)
    result = snakemake(work, "all")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return work


@pytest.mark.slow
def test_full_run_outputs(tiny_project):
    work = tiny_project
    table = pd.read_csv(work / "results/atlas/atlas_space-MNI152NLin6Asym_labels.tsv", sep="\t")
    assert len(table) == 64 and (table["network"][:8] == "Subcortical").all()
    frame, meta = read_timeseries(work / "results/align_tr/ukbsim/sub-ukbsim0001_ses-1_run-1.parquet")
    assert frame.shape == (34, 64) and meta["tr"] == pytest.approx(2.205) and meta["tr_source"] == "sheet"
    assert list(frame.columns) == table["name"].tolist()
    frame, meta = read_timeseries(work / "results/align_tr/adnisim/sub-adnisim0002_ses-1_run-1.parquet")
    assert frame.shape == (40, 64) and meta["tr"] == pytest.approx(2.0) and meta["tr_source"] == "sidecar"
    for run in ("ukbsim/sub-ukbsim0002_ses-1_run-1", "adnisim/sub-adnisim0001_ses-1_run-1"):
        qc = pd.read_csv(work / f"results/parcellate/{run}_qc.tsv", sep="\t")
        assert (qc["flag"] == "ok").all()
    # one log per batch job, naming each of its runs
    samples, _ = _sheets(work)
    runs = [f"{c}/sub-{s}_ses-{e}_run-{r}" for c, s, e, r in samples[["cohort", "subject", "session", "run"]].values]
    for stage in ("simulate", "parcellate", "align_tr"):
        logs = [p for p in (work / "logs" / stage).glob("*.log") if p.name != "atlas.log"]
        assert logs and all(re.fullmatch(r"(ukbsim-[bh]|adnisim-b)\d\d\.log", p.name) for p in logs)
        text = "".join(p.read_text() for p in logs)
        assert all(run in text for run in runs), stage
    # the layout: every rule writes under results/<stage>/ and logs to logs/<rule>/
    stages = ("atlas", "parcellate", "align_tr", "splits", "scaling", "group_fc", "gradients", "shards", "pretrain",
              "models", "figures", "report")
    assert sorted(p.name for p in (work / "results").iterdir() if p.is_dir()) == sorted(stages)
    rules = tuple(s for s in stages if s not in ("report", "models")) + ("split_balance", "simulate", "export_model")
    assert sorted(p.name for p in (work / "logs").iterdir()) == sorted(rules)


@pytest.mark.slow
def test_group_stage_and_shards(tiny_project):
    work = tiny_project / "results"
    table = pd.read_csv(work / "splits/splits.tsv", sep="\t", dtype=str)
    assert len(table) == 6 + 3 and set(table["split"]) <= {"pretrain", "train", "val", "test"}
    assert (table[table.cohort == "adnisim"]["split"] != "pretrain").all()
    stats = json.loads((work / "scaling/scaling_stats.json").read_text())
    assert stats["method"] == "run_demean" and len(stats["median"]) == 64
    assert stats["n_subjects"] == table[table.split == "pretrain"]["subject"].nunique()
    fc = np.load(work / "group_fc/group_fc.npy")
    assert fc.shape == (64, 64) and np.allclose(np.diag(fc), 1) and (work / "figures/group_fc.png").stat().st_size
    gradients = pd.read_csv(work / "gradients/gradients.tsv", sep="\t")
    assert list(gradients.columns) == ["name", "g1", "g2", "g3", "g4", "g5"] and len(gradients) == 64
    manifests = {s: json.loads((work / f"shards/{s}/manifest.json").read_text()) for s in set(table["split"])}
    assert all(m["scaling_stats_id"] == stats["id"] and m["window"] == 32 for m in manifests.values())
    assert all(list(m["splits"]) == [s] for s, m in manifests.items())  # one shard set per split
    assert len({json.dumps(m["label_categories"]) for m in manifests.values()}) == 1  # codes agree
    rows = {s: sum(e["rows"] for e in m["splits"][s]) for s, m in manifests.items()}
    assert sum(rows.values()) + sum(m["excluded"] for m in manifests.values()) == len(table)
    # the loader streams the pretraining shards in batches of [B, 1, R, window]
    from torch.utils.data import DataLoader

    from brainjepa.data.dataset import ShardDataset

    dataset = ShardDataset(work / "shards/pretrain/manifest.json", "pretrain", window=32, label_columns=["age"],
                           scaling_stats=str(work / "scaling/scaling_stats.json"))
    batches = list(DataLoader(dataset, batch_size=2))
    assert sum(len(x) for x, _ in batches) == rows["pretrain"]
    assert batches[0][0].shape[1:] == (1, 64, 32) and batches[0][1].shape[1] == 1
    balance = pd.read_csv(work / "splits/balance.tsv", sep="\t")
    assert set(balance["label"]) == {"sex", "diagnosis"}


@pytest.mark.slow
def test_pretrain_rule(tiny_project):
    run = tiny_project / "results" / "pretrain" / "brainjepa_tiny"
    log = pd.read_csv(run / "log.csv")
    assert (run / "final.pt").exists() and log["step"].iloc[-1] >= 2 and np.isfinite(log["loss"]).all()


def _sheets(work: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    read = lambda name: pd.read_csv(work / "config" / name, sep="\t", dtype=str, keep_default_na=False)
    return read("samples.tsv"), read("phenotypes.tsv")


def _checkpoint_bits(path: Path) -> dict:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {f"{m}.{k}": v for m in ("encoder", "target_encoder", "predictor") for k, v in state[m].items()}


@pytest.mark.slow
def test_rerun_is_a_no_op_and_a_downstream_cohort_leaves_pretraining_alone(tiny_project):
    """A new cohort outside the pretraining set: only its runs and its splits' shards are made."""
    work = tiny_project
    dry = snakemake(work, "-n", "all")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    run_dir = work / "results/pretrain/brainjepa_tiny"
    before = {name: (run_dir / name).read_bytes() for name in ("final.pt", "log.csv")}
    samples, _ = _sheets(work)
    ts_file = work / "external" / "sub-7_timeseries.tsv"
    ts_file.parent.mkdir()
    pd.DataFrame(np.random.default_rng(0).normal(100, 1, size=(80, 64))).to_csv(ts_file, sep="\t", index=False,
                                                                                 header=False)
    external = {"cohort": "ext", "subject": "7", "session": "1", "run": "1", "bold": "", "mask": "",
                "timeseries": str(ts_file), "tr": "0.8"}
    pd.concat([samples, pd.DataFrame([external])], ignore_index=True).fillna("").to_csv(
        work / "config/samples.tsv", sep="\t", index=False)
    dry = snakemake(work, "-n", "all")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry.stdout)
    assert batch_jobs(counts) == {"simulate_run": [], "parcellate": ["ext_b00"], "align_tr": ["ext_b00"]}
    assert counts.pop("shards") == 1  # ext's split only
    # no scaling, FC, gradients, pretrain; the QC figures and the report's summary count the new runs
    assert set(counts) <= {"all", "splits", "split_table", "split_balance", "figure_qc", "report_summary"}, counts
    run = snakemake(work, "all")
    assert run.returncode == 0, run.stderr[-3000:]
    # the end of the run says what is in it: cohorts, splits, models and where the outputs are
    assert re.search(r"brainjepa: 10 runs of 10 subjects in 3 cohorts; 0 runs excluded", run.stderr), run.stderr
    assert "  ext: pretrain 0, " in run.stderr
    assert "model brainjepa_tiny: results/pretrain/brainjepa_tiny/final.pt" in run.stderr
    facts = json.loads((work / "results/report/summary.json").read_text())
    assert facts["runs"] == 10 and [c["cohort"] for c in facts["cohorts"]] == ["adnisim", "ext", "ukbsim"]
    # the effective TR of every cohort (stride: round(2.0 / TR) x TR), from the shards
    assert {c["cohort"]: c["tr"] for c in facts["cohorts"]} == {"adnisim": "2", "ext": "1.6", "ukbsim": "2.205"}
    assert "TR after alignment 2.205 s" in run.stderr
    frame, meta = read_timeseries(work / "results/align_tr/ext/sub-7_ses-1_run-1.parquet")
    assert frame.shape == (40, 64) and meta["tr"] == pytest.approx(1.6)
    assert {name: (run_dir / name).read_bytes() for name in before} == before


@pytest.mark.slow
def test_stages_after_a_batch_depend_on_its_stamp_and_a_deleted_run_file_is_remade(tiny_project, tmp_path):
    """A batch job declares only its stamp, and the stages after it read stamps (the 40,000-run DAG resolves 10^2
    files, not 10^5); a per-run file deleted behind the workflow's back is remade by `all`, on its own."""
    work = tmp_path / "copy"
    shutil.copytree(tiny_project, work, symlinks=True)
    stamps = sorted((work / "results/align_tr/_batches").glob("*.tsv"))
    assert stamps and all(pd.read_csv(p, sep="\t").columns.tolist() == ["file", "bytes"] for p in stamps)
    listed = pd.concat([pd.read_csv(p, sep="\t") for p in stamps])
    assert all((work / f).stat().st_size == b for f, b in zip(listed["file"], listed["bytes"]))
    qc = work / "results/parcellate/adnisim/sub-adnisim0001_ses-1_run-1_qc.tsv"
    qc.unlink()
    dry = snakemake(work, "-n", "-p", "all")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry.stdout)
    assert batch_jobs(counts)["parcellate"] == [] and counts["run_parcellate"] == 1   # the run alone
    forced = snakemake(work, "-n", "-p", "--forceall", "results/scaling/scaling_stats.json")
    assert forced.returncode == 0, forced.stderr[-3000:]
    scaling = forced.stdout.split("rule scaling:")[1].split("\n\n")[0]
    inputs = scaling.split("input: ")[1].split("\n")[0].split(", ")
    assert inputs[0] == "results/splits/split-pretrain.tsv"                      # the pretraining set's table
    stamp = r"results/align_tr/_batches/ukbsim-b\d+-[0-9a-f]{8}\.tsv"          # pretraining batches only
    assert inputs[1:] and all(re.fullmatch(stamp, f) for f in inputs[1:])
    assert "--runs-root results/align_tr " in scaling
    run = snakemake(work, "all")
    assert run.returncode == 0, run.stderr[-3000:]
    assert qc.exists()


@pytest.mark.slow
def test_a_per_run_target_builds_and_a_new_subject_reruns_only_its_batch(tiny_project, tmp_path):
    """Per-run files stay targets of their own; a new held-out subject reruns its batch's jobs and nothing that
    feeds the group statistics or the pretraining shards."""
    from brainjepa import batches
    from brainjepa.group import splits

    work = tmp_path / "copy"
    shutil.copytree(tiny_project, work, symlinks=True)  # mtimes and Snakemake's metadata kept
    target = "results/align_tr/adnisim/sub-adnisim0001_ses-1_run-1.parquet"
    (work / target).unlink()
    run = snakemake(work, target)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = job_counts(run.stdout + run.stderr)
    assert batch_jobs(counts) == {"simulate_run": [], "parcellate": [], "align_tr": []}
    assert counts == {"run_align_tr": 1}                                   # the run alone, not its batch
    assert read_timeseries(work / target)[0].shape == (40, 64)

    samples, phenotypes = _sheets(work)
    config = yaml.safe_load((work / "config/config.yaml").read_text())
    subject = next(s for s in (f"ukbsim{n:04d}" for n in range(7, 100))
                   if splits.assign_split(0, "ukbsim", s, config["splits"]["fractions"], 0.8) != "pretrain")
    new = samples.iloc[0].to_dict()
    new.update(subject=subject, timeseries=new["timeseries"].replace("ukbsim0001", subject))
    pd.concat([samples, pd.DataFrame([new])]).to_csv(work / "config/samples.tsv", sep="\t", index=False)
    pd.concat([phenotypes, pd.DataFrame([phenotypes.iloc[0].to_dict() | {"subject": subject}])]).to_csv(
        work / "config/phenotypes.tsv", sep="\t", index=False)
    dry = snakemake(work, "-n", "all", "--until", "shards")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry.stdout)
    held_out = batches.batch_name("ukbsim", batches.batch_of("ukbsim", subject, 4), 4, held_out=True)
    assert batch_jobs(counts) == {stage: [held_out.replace("-", "_")] for stage in PER_RUN_STAGES}
    assert set(counts) <= {"splits", "split_table", "split_balance", "shards"}, counts  # no scaling, FC, gradients
    assert "pretrain" not in re.findall(r"wildcards: split=(\w+)", dry.stdout)


@pytest.mark.slow
def test_a_new_pretraining_subject_retrains(tiny_project):
    """A subject added to the pretraining set changes statistics and gradients: a new run from step 1."""
    from brainjepa import sheets
    from brainjepa.group import splits

    work = tiny_project
    run_dir = work / "results/pretrain/brainjepa_tiny"
    old = _checkpoint_bits(run_dir / "final.pt")
    samples, phenotypes = _sheets(work)
    config = yaml.safe_load((work / "config/config.yaml").read_text())
    for n in range(90, 100):  # the first new id that the stable split puts in the pretraining set
        subject = f"ukbsim00{n}"
        key = sheets.run_id({"cohort": "ukbsim", "subject": subject, "session": "1", "run": "1"})
        table = splits.make_splits(pd.DataFrame([{"cohort": "ukbsim", "subject": subject, "session": "1", "run": "1",
                                                  "run_id": key}]), config["splits"]["seed"],
                                   config["splits"]["fractions"], "ukbsim", config["splits"]["pretraining"]["fraction"])
        if table["split"].iloc[0] == "pretrain":
            break
    new = samples.iloc[0].to_dict()
    new.update(subject=subject, timeseries=new["timeseries"].replace("ukbsim0001", subject))
    pd.concat([samples, pd.DataFrame([new])], ignore_index=True).to_csv(work / "config/samples.tsv", sep="\t",
                                                                         index=False)
    pheno = phenotypes.iloc[0].to_dict() | {"subject": subject}
    pd.concat([phenotypes, pd.DataFrame([pheno])]).to_csv(work / "config/phenotypes.tsv", sep="\t", index=False)
    run = snakemake(work, "all")
    assert run.returncode == 0, run.stderr[-3000:]
    assert job_counts(run.stdout + run.stderr)["pretrain"] == 1
    new_bits = _checkpoint_bits(run_dir / "final.pt")
    assert any(not np.array_equal(old[k].numpy(), new_bits[k].numpy()) for k in old)
    log = pd.read_csv(run_dir / "log.csv")
    assert log["step"].iloc[0] == 1 and log["step"].is_monotonic_increasing and log["step"].is_unique
    assert (work / "results/pretrain/brainjepa_tiny.replaced-1/latest.pt").exists()  # the old run, kept


@pytest.mark.slow
def test_forcerun_pretrain_retrains_from_step_0(tiny_project):
    work = tiny_project
    run_dir = work / "results/pretrain/brainjepa_tiny"
    run = snakemake(work, "--forcerun", "pretrain", "all")
    assert run.returncode == 0, run.stderr[-3000:]
    log = (work / "logs/pretrain/brainjepa_tiny.log").read_text()
    assert "a new run from step 0" in log and "resumed" not in log
    steps = pd.read_csv(run_dir / "log.csv")["step"]
    assert steps.iloc[0] == 1 and steps.is_unique
    assert (work / "results/pretrain/brainjepa_tiny.replaced-2").exists()
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(snakemake(work, "-n", "all"))


@pytest.mark.slow
def test_bad_sheet_fails_before_any_job(tiny_project, tmp_path):
    work = tmp_path / "bad"
    (work / "config").mkdir(parents=True)
    for name in ("config.yaml", "phenotypes.tsv", "pretrain.yaml"):
        (work / "config" / name).write_text((tiny_project / "config" / name).read_text())
    lines = (tiny_project / "config/samples.tsv").read_text().splitlines()
    (work / "config/samples.tsv").write_text("\n".join(lines + [lines[1]]) + "\n")
    result = snakemake(work, "all")
    assert result.returncode != 0
    assert re.search(r"samples.tsv: duplicate rows .* lines \[2, \d+\]", result.stdout + result.stderr)
    assert not (work / "results").exists()


@pytest.mark.slow
def test_unknown_config_key_is_an_error(tiny_project, tmp_path):
    work = tmp_path / "badcfg"
    (work / "config").mkdir(parents=True)
    config = yaml.safe_load((tiny_project / "config/config.yaml").read_text())
    config["align_tr"]["targettr"] = 2.0
    (work / "config/config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "-n", "all")
    assert result.returncode != 0 and "targettr" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_splits_config_error_is_named_as_config_not_as_a_sheet(tiny_project, tmp_path):
    work = tmp_path / "badsplits"
    (work / "config").mkdir(parents=True)
    for name in ("samples.tsv", "phenotypes.tsv", "pretrain.yaml", "pretrain_mae.yaml"):
        shutil.copy(tiny_project / "config" / name, work / "config" / name)
    config = yaml.safe_load((tiny_project / "config/config.yaml").read_text())
    config["splits"]["pretraining"]["cohort"] = "nosuch"
    (work / "config/config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "-n", "all")
    message = result.stdout + result.stderr
    assert result.returncode != 0 and "invalid sample sheet" not in message, message[-2000:]
    assert "invalid sheets or splits config: splits.pretraining.cohort: 'nosuch' has no runs" in message


def test_dry_run_of_default_demo_config():
    """The shipped config and sheets parse; one job per batch of runs per per-run stage."""
    result = snakemake(REPO, "-n", "--forceall", "all")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    samples = pd.read_csv(REPO / "config/samples.tsv", sep="\t")
    assert dict(samples["cohort"].value_counts()) == {"ukbsim": 510, "adnisim": 110}
    expected = sorted([f"ukbsim_{p}0{k}" for p in "bh" for k in range(4)] + ["adnisim_b00", "adnisim_b01"])
    assert batch_jobs(counts) == {stage: expected for stage in PER_RUN_STAGES}
    assert counts["atlas"] == counts["simulate_atlas"] == 1
    figures = {"figure_fc", "figure_gradients", "figure_qc", "figure_pretraining", "figure_evaluation",
               "network_attention", "figure_capabilities", "report_summary"}
    assert all(counts[rule] == 1 for rule in figures) and "figure_scaling" not in counts  # one encoder size
    # BrainLM's capabilities, x 2 seeds: forecast (3 fine-tuned encoders + 3 baselines), MAE reconstruction and
    # network identification (3 encoders x 2 feature kinds + raw); perturbation (3 encoders), a figure per encoder
    assert counts["capability"] == (6 + 1 + 7) * 2
    assert counts["perturbation"] == 3 * 2 and counts["figure_perturbation"] == 3


def test_the_demo_evaluation_plan_resamples_with_five_random_inits_and_an_external_task():
    """Every random encoder's frozen protocol runs once per initialisation (evaluate.random_seeds), each reading the
    feature cache of its own init; seedless methods (closed-form of a pretrained encoder, FC) run one seed; frozen
    and FC jobs get the resampling, fine-tuning the fixed split; an external task reads both cohorts' features."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["evaluate"]
    result = snakemake(REPO, "-n", "-p", "--forceall", "all")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dry_run_jobs(result.stdout)
    evaluate = {out: job for out, job in jobs.items() if job["rule"] == "evaluate"}
    inits = config["random_seeds"]
    assert len(inits) >= 5
    for seed in inits:
        job = evaluate[f"results/evaluate/age/random_closed_form/seed{seed}.json"]
        assert f"results/evaluate/features/random/init{seed}/ukbsim.npz" in job["shell"]
        assert f"results/evaluate/features/random/init{seed}/ukbsim.npz" in jobs
    assert "results/evaluate/age/jepa_closed_form/seed0.json" in evaluate
    assert "results/evaluate/age/jepa_closed_form/seed1.json" not in evaluate      # seedless: one seed
    assert "results/evaluate/age/fc_linear/seed1.json" not in evaluate
    assert all(f"results/evaluate/age/jepa_linprobe/seed{s}.json" in evaluate for s in config["seeds"])
    assert "--resampling" in evaluate["results/evaluate/age/fc_linear/seed0.json"]["shell"]
    assert "--resampling" not in evaluate["results/evaluate/age/jepa_finetune/seed0.json"]["shell"]
    external = [t for t, spec in config["tasks"].items() if spec.get("test_cohorts")]
    assert external
    shell = evaluate[f"results/evaluate/{external[0]}/jepa_closed_form/seed0.json"]["shell"]
    assert "features/jepa/ukbsim.npz" in shell and "features/jepa/adnisim.npz" in shell


def dry_run_jobs(output: str) -> dict[str, dict[str, str]]:
    """The jobs of `snakemake -n -p`: {first output: {"rule", "resources", "shell"}}."""
    jobs = {}
    for block in output.split("\n\n"):
        rule = re.search(r"^(?:local)?rule (\w+):$", block, flags=re.M)
        fields = dict(re.findall(r"^\s*(output|resources|Shell command): (.*)$", block, flags=re.M))
        if rule and "output" in fields:
            jobs[fields["output"].split(", ")[0]] = {"rule": rule[1], "resources": fields.get("resources", ""),
                                                     "shell": fields.get("Shell command", "")}
    return jobs


def test_jobs_on_several_nodes_start_one_launcher_per_node_with_srun(tmp_path):
    """pretrain / evaluate `nodes: 2`: the training jobs ask Slurm for 2 nodes (the executor plugin's nodes, tasks,
    mpi; GPUs per node as gres) and their shell starts a launcher on each with srun; closed-form jobs stay on one."""
    overlay = tmp_path / "nodes.yaml"
    overlay.write_text(yaml.safe_dump({"pretrain": {"nodes": 2, "processes": 4, "gpus": 4},
                                       "evaluate": {"nodes": 2, "processes": 2, "gpus": 2}}))
    pretrain, finetune, closed = ("results/pretrain/brainjepa_tiny/final.pt", "results/evaluate/sex/jepa_finetune/"
                                  "seed0.json", "results/evaluate/sex/jepa_closed_form/seed0.json")
    result = snakemake(REPO, "-n", "-p", "--forceall", pretrain, finetune, closed,
                       "--configfile", str(REPO / "config/config.yaml"), str(overlay))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dry_run_jobs(result.stdout)
    job = jobs[pretrain]
    assert job["rule"] == "pretrain"
    resources = dict(item.split("=", 1) for item in job["resources"].split(", "))
    assert {k: resources.get(k) for k in ("nodes", "tasks", "mpi", "gres", "gpu")} == {
        "nodes": "2", "tasks": "2", "mpi": "srun", "gres": "gpu:4", "gpu": None}, resources
    check, run = job["shell"].split(" && ")
    assert check == "brainjepa launch --section pretrain --nodes 2 --processes 4 --check"
    assert run.startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=32 ")  # 4 GPUs x 8 CPUs
    assert "-m brainjepa.cli launch --section pretrain --nodes 2 --processes 4 -- pretrain --config" in run
    assert "nodes=2" in jobs[finetune]["resources"] and "srun --nodes=2" in jobs[finetune]["shell"]
    assert "nodes=" not in jobs[closed]["resources"] and "srun" not in jobs[closed]["shell"]
    assert jobs[closed]["shell"].startswith("brainjepa launch --section evaluate --nodes 1 --processes 1 -- evaluate")


@pytest.mark.slow  # 21-43 s in make test's --durations (2026-12-07)
def test_encoders_of_two_sizes_add_the_scaling_figure_and_bad_attention_settings_fail(tmp_path):
    work = tmp_path / "sizes"
    _copy_demo_config(work)
    (work / "config" / "pretrain_mae.yaml").write_text((REPO / "config" / "pretrain_mae.yaml").read_text())
    small = yaml.safe_load((REPO / "config" / "pretrain.yaml").read_text())
    small["model"].update(embed_dim=32)
    small["run"]["out_dir"] = "results/pretrain/brainjepa_small"
    (work / "config" / "pretrain_small.yaml").write_text(yaml.safe_dump(small))
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    config["evaluate"]["encoders"]["small"] = {"pretrained": "config/pretrain_small.yaml"}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "-n", "all")
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout)["figure_scaling"] == 1
    for attention, message in (({"encoder": "nope", "task": "diagnosis"}, "figures.attention.encoder: 'nope'"),
                               ({"encoder": "jepa", "task": "age"}, "'age' is a regression task"),
                               ({"encoder": "jepa", "task": "sex", "direction": "sideways"}, "direction")):
        config["figures"]["attention"] = attention
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
        result = snakemake(work, "-n", "all")
        assert result.returncode != 0 and message in result.stdout + result.stderr, message


def _copy_demo_config(work: Path) -> None:
    (work / "config").mkdir(parents=True)
    for name in ("config.yaml", "samples.tsv", "phenotypes.tsv", "pretrain.yaml"):
        (work / "config" / name).write_text((REPO / "config" / name).read_text())


@pytest.mark.parametrize("typo, key", [("optim:\n  lrr: 0.1\n", "optim.lrr"),
                                       ("model:\n  size: huge\n", "model.size"),
                                       ("mask:\n  alpha_roi: [0.6, 0.4]\n", "alpha_roi")])
def test_training_config_typo_fails_the_dry_run(tmp_path, typo, key):
    """A bad config/pretrain.yaml stops `snakemake -n` (before any job) with a message naming the key."""
    work = tmp_path / "typo"
    _copy_demo_config(work)
    path = work / "config" / "pretrain.yaml"
    train = yaml.safe_load(path.read_text())
    train.update(yaml.safe_load(typo))
    path.write_text(yaml.safe_dump(train))
    result = snakemake(work, "-n", "all")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "invalid training config" in output and key in output, output[-2000:]
    assert not (work / "results").exists()


@pytest.mark.slow
def test_report_has_every_figure_and_opens_in_a_real_browser(tiny_project, tmp_path):
    """`snakemake --report`: the run summary on its first page, every figure of results/figures/ inside it; then
    headless Chromium (Debian's package) opens it with every image decoded and no console error, and saves a
    screenshot. Without Chromium the browser part is skipped, unless BRAINJEPA_REQUIRE_BROWSER=1 (CI)."""
    from browser_check import ChromiumNotFoundError, check_report

    work = tiny_project
    figures = sorted(p.name for p in (work / "results/figures").glob("*.png"))
    assert {"group_fc.png", "gradients_space.png", "gradients_brain.png", "gradients_eigenvalues.png",
            "qc_rois.png", "qc_splits.png", "pretraining.png"} <= set(figures)
    for name in figures:
        with Image.open(work / "results/figures" / name) as img:
            assert img.format == "PNG" and min(img.size) >= 300, name
    summary = (work / "results/report/summary.rst").read_text()
    assert "Models pretrained" in summary and r"brainjepa\_tiny" in summary and "ukbsim" in summary
    result = snakemake(work, "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (work / "results/report.html").read_text()
    assert "Subjects per split" in html and all(name in html for name in figures)
    try:
        problems = check_report(work / "results/report.html", tmp_path / "report.png",
                                figure_screenshot_path=tmp_path / "figure.png")
    except ChromiumNotFoundError as exc:
        if os.environ.get("BRAINJEPA_REQUIRE_BROWSER") == "1":
            raise
        pytest.skip(f"no headless browser: {exc}")
    assert problems == []
    shots = os.environ.get("BRAINJEPA_SCREENSHOTS")  # CI keeps the screenshots there
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        for name in ("report.png", "figure.png"):
            shutil.copy(tmp_path / name, Path(shots) / name)
    with Image.open(tmp_path / "report.png") as img:
        assert img.size == (1400, 900)


@pytest.mark.slow
def test_a_pre_parcellated_cohort_with_a_label_table_only(tmp_path):
    """94 ROIs with non-Schaefer names and a network column, no atlas image, no Schaefer keys: every stage runs,
    and the label table's networks reach the FC heatmap's order and the gradient figure; a NIfTI row is refused."""
    work = tmp_path / "aal"
    (work / "config").mkdir(parents=True)
    rng = np.random.default_rng(0)
    nets = ["Frontal", "Temporal", "Parietal", "Occipital", "Cingulate", "Deep"]
    names = [f"AAL2_R{i:02d}_{'L' if i % 2 else 'R'}" for i in range(94)]
    network = [nets[(i // 2) % len(nets)] for i in range(94)]           # interleaved: ordering by network matters
    hemisphere = ["L" if i % 2 else "R" for i in range(94)]
    pd.DataFrame({"name": names, "network": network, "hemisphere": hemisphere}).to_csv(
        work / "config" / "aal2.tsv", sep="\t", index=False)
    rows, phen = [], []
    for s in range(8):
        latent = rng.normal(size=(120, len(nets)))
        data = 100 + latent[:, [nets.index(n) for n in network]] + 0.7 * rng.normal(size=(120, 94))
        order = rng.permutation(94)                                       # columns shuffled, matched by name
        path = work / "data" / f"sub-{s}.tsv"
        path.parent.mkdir(exist_ok=True)
        pd.DataFrame(data[:, order], columns=[names[i] for i in order]).to_csv(path, sep="\t", index=False)
        rows.append({"cohort": "aal", "subject": f"{s}", "session": "1", "run": "1", "bold": "",
                     "timeseries": str(path), "tr": "2.0"})
        phen.append({"cohort": "aal", "subject": f"{s}", "age": 50 + s})
    pd.DataFrame(rows).to_csv(work / "config" / "samples.tsv", sep="\t", index=False)
    pd.DataFrame(phen).to_csv(work / "config" / "phenotypes.tsv", sep="\t", index=False)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["demo"]["enabled"] = False
    config["atlas"] = {"labels": "config/aal2.tsv"}
    config["labels"] = {"age": "continuous"}
    config["splits"].update(pretraining={"cohort": "aal", "fraction": 0.8}, stratify={})
    config["batching"] = {"default": 1, "cohorts": {}}
    config["shards"]["window"] = 32
    config["gradients"]["n_components"] = 5
    config["evaluate"].update(tasks={}, capabilities={}, encoders={"jepa": {"pretrained": "config/pretrain.yaml"}})
    config["figures"]["attention"] = None
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    train = yaml.safe_load((REPO / "config" / "pretrain.yaml").read_text())
    train["data"].update(batch_size=2)
    train["model"].update(patch_size=16)
    train["optim"].update(epochs=1, warmup_epochs=1)
    (work / "config" / "pretrain.yaml").write_text(yaml.safe_dump(train))
    result = snakemake(work, "all")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(work / "results/atlas/atlas_labels.tsv", sep="\t")
    assert table["name"].tolist() == names and table["network"].tolist() == network
    assert table["hemisphere"].tolist() == hemisphere
    assert not list((work / "results/atlas").glob("*.nii.gz"))
    assert len(pd.read_csv(work / "results/gradients/gradients.tsv", sep="\t")) == 94
    for name in ("group_fc.png", "gradients_space.png", "gradients_eigenvalues.png", "qc_rois.png"):
        assert (work / "results/figures" / name).stat().st_size > 10_000, name
    assert not (work / "results/figures/gradients_brain.png").exists()  # no image: no brain view
    log = (work / "logs/figures/gradients.log").read_text()
    silhouette = float(re.search(r"gradient 1-3 space: (-?[0-9.]+)", log)[1])
    assert silhouette > 0.3, log                                          # the label table's networks, found again
    # a NIfTI row with a label-table-only atlas stops the DAG, naming the run
    samples = pd.read_csv(work / "config" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    bold = work / "data" / "sub-9_bold.nii.gz"
    bold.write_bytes(b"")
    extra = {**rows[0], "subject": "9", "bold": str(bold), "timeseries": "", "tr": ""}
    pd.concat([samples, pd.DataFrame([extra])]).to_csv(work / "config" / "samples.tsv", sep="\t", index=False)
    result = snakemake(work, "-n", "all")
    assert result.returncode != 0 and "aal/sub-9_ses-1_run-1 is a NIfTI run" in result.stdout + result.stderr


def write_study(work: Path, n_subjects: int = 60, n_time: int = 40, seed: int = 0) -> list[str]:
    """A pre-parcellated study at config/mystudy.yaml's paths (what the README's "Your own data" asks a user for):
    the atlas's label table, both sheets, and one T x R TSV per run with the ROI names as its header."""
    rng = np.random.default_rng(seed)
    nets = ["Visual", "Motor", "Attention", "Default", "Control"]
    names = [f"{net}_{hemi}{k}" for net in nets for hemi in "LR" for k in range(4)]
    network = [n.split("_")[0] for n in names]
    (work / "config" / "mystudy").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"name": names, "network": network, "hemisphere": [n.split("_")[1][0] for n in names]}).to_csv(
        work / "config/mystudy/atlas_labels.tsv", sep="\t", index=False)
    rows, phen = [], []
    for s in range(n_subjects):
        subject = f"{s + 1:03d}"
        latent = rng.normal(size=(n_time, len(nets)))
        data = 50 + latent[:, [nets.index(n) for n in network]] + 0.8 * rng.normal(size=(n_time, len(names)))
        path = Path(f"data/mystudy/sub-{subject}/ses-1/func/sub-{subject}_ses-1_task-rest_timeseries.tsv")
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(data, columns=names).to_csv(work / path, sep="\t", index=False)
        rows.append({"cohort": "mystudy", "subject": subject, "session": "1", "run": "1", "bold": "", "mask": "",
                     "timeseries": str(path), "tr": "2.0"})
        phen.append({"cohort": "mystudy", "subject": subject, "age": round(float(rng.uniform(20, 80)), 1),
                     "sex": "MF"[s % 2]})
    pd.DataFrame(rows).to_csv(work / "config/mystudy/samples.tsv", sep="\t", index=False)
    pd.DataFrame(phen).to_csv(work / "config/mystudy/phenotypes.tsv", sep="\t", index=False)
    return names


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for f in folders for p in f.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_second_dataset_beside_the_demo_leaves_the_demo_untouched(tiny_project):
    """README "Your own data": `snakemake --configfile config/mystudy.yaml` reads that config alone (not merged into
    the demo's), writes under its output_dir, and leaves every demo output and model as it was; a config naming
    the demo's folder for another sheet is refused before any job."""
    work = tiny_project
    shutil.copy(REPO / "config" / "mystudy.yaml", work / "config" / "mystudy.yaml")
    names = write_study(work)
    # layered on the example (README: list both): the tiny project's sizes, one closed-form method
    fast = {"shards": {"window": 32}, "gradients": {"n_components": 5}, "figures": {"attention": None},
            "evaluate": {"seeds": [0], "protocols": ["closed_form"], "baselines": []}}
    (work / "config" / "fast.yaml").write_text(yaml.safe_dump(fast))
    demo = _snapshot(work / "results", work / "logs")
    assert any("pretrain/brainjepa_tiny/final.pt" in p for p in demo)
    result = snakemake(work, "--configfile", str(work / "config/mystudy.yaml"), str(work / "config/fast.yaml"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    study = work / "studies" / "mystudy"
    labels = pd.read_csv(study / "results/atlas/atlas_labels.tsv", sep="\t")
    assert labels["name"].tolist() == names
    assert (study / "results/pretrain/brainjepa_tiny/final.pt").exists()       # the same training config, its own model
    assert (study / "logs/pretrain/brainjepa_tiny.log").exists()
    metrics = pd.read_csv(study / "results/metrics.tsv", sep="\t")
    assert set(metrics["task"]) == {"age", "sex"}
    facts = json.loads((study / "results/report/summary.json").read_text())
    assert facts["outputs"]["results"] == "studies/mystudy/results"
    assert "--configfile config/mystudy.yaml config/fast.yaml --report studies/mystudy/results/report.html" in (
        facts["outputs"]["report"])
    assert "report: studies/mystudy/results/report.html" in result.stderr               # the end-of-run summary
    assert _snapshot(work / "results", work / "logs") == demo                              # nothing of the demo moved
    again = snakemake(work, "-n")                                                          # the demo is still complete
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]
    # the HTML report of the study, from its own folder
    report = snakemake(work, "--configfile", str(work / "config/mystudy.yaml"), str(work / "config/fast.yaml"),
                       "--report", "studies/mystudy/results/report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    assert (study / "results/report.html").stat().st_size > 100_000
    # another dataset's config pointed at the demo's folder: refused before any job, naming both sheets
    clash = yaml.safe_load((work / "config/mystudy.yaml").read_text()) | {"output_dir": "."}
    (work / "config" / "clash.yaml").write_text(yaml.safe_dump(clash))
    refused = snakemake(work, "-n", "--configfile", str(work / "config/clash.yaml"), str(work / "config/fast.yaml"))
    message = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "results/ holds the outputs of another dataset" in message, message[-2000:]
    assert "config/samples.tsv" in message and "config/mystudy/samples.tsv" in message
    assert _snapshot(work / "results", work / "logs") == demo


ODD = "o d'd \"q\" $(touch PWNED1) `touch PWNED2`; touch PWNED3 &"   # a shell-hostile name (no braces, no slash)


@pytest.mark.slow
def test_shell_hostile_paths_in_every_configurable_path_run_nothing(tiny_project, tmp_path):
    """Spaces, quotes, $(), backticks, ; and & in the working folder, every config path (output_dir, sheets, demo
    root and so the sheet's run paths, atlas files and cache, training configs and their run folder, the gradient
    reference) and the --configfile: every job succeeds, nothing of the names runs. Braces are refused by key."""
    from brainjepa.simulate import demo_atlas_paths

    work = tmp_path / f"work {ODD}"
    (work / "config").mkdir(parents=True)
    config = yaml.safe_load((tiny_project / "config/config.yaml").read_text())
    root = f"res {ODD}/demo"
    atlas = demo_atlas_paths(root)
    config.update(output_dir=f"out {ODD}", samples=f"config/samples {ODD}.tsv", phenotypes=f"config/phen {ODD}.tsv")
    config["demo"]["root"] = root
    config["atlas"]["cache_dir"] = f"cache {ODD}"
    for kind in ("cortical", "subcortical"):
        config["atlas"][kind].update(image=atlas[f"{kind}_image"], labels=atlas[f"{kind}_labels"])
    shutil.copy(tiny_project / "results/gradients/gradients.tsv", work / "config" / f"ref {ODD}.tsv")
    config["gradients"]["reference"] = f"config/ref {ODD}.tsv"
    for name, key in (("pretrain", "jepa"), ("pretrain_mae", "mae")):
        train = yaml.safe_load((tiny_project / "config" / f"{name}.yaml").read_text())
        train["run"]["out_dir"] = f"results/pretrain/{name} {ODD}"
        (work / "config" / f"{name} {ODD}.yaml").write_text(yaml.safe_dump(train))
        config["evaluate"]["encoders"][key] = {"pretrained": f"config/{name} {ODD}.yaml"}
    config["evaluate"]["encoders"]["random"] = {"random": f"config/pretrain {ODD}.yaml"}
    config["pretrain"]["config"] = f"config/pretrain {ODD}.yaml"
    configfile = work / "config" / f"study {ODD}.yaml"
    configfile.write_text(yaml.safe_dump(config))
    write_demo_sheets(work / config["samples"], work / config["phenotypes"], root, cohorts_from_spec(TINY_COHORTS),
                      seed=0)
    result = snakemake(work, "--configfile", str(configfile))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert not [p for folder in (tmp_path, REPO, Path.cwd()) for p in folder.rglob("PWNED*")]  # nothing ran
    out = work / f"out {ODD}" / "results"
    assert all((out / f"pretrain/{name} {ODD}/final.pt").exists() for name in ("pretrain", "pretrain_mae"))
    assert len(list((work / root / "derivatives").rglob("*timeseries.npy"))) == 6      # the sheet's odd run paths
    facts = json.loads((out / "report/summary.json").read_text())
    assert facts["runs"] == 9 and ODD in facts["outputs"]["report"]
    # a brace in a config path is refused before any job, naming the key
    config["output_dir"] = "out {x}"
    configfile.write_text(yaml.safe_dump(config))
    refused = snakemake(work, "-n", "--configfile", str(configfile))
    assert refused.returncode != 0 and "config output_dir: 'out {x}' holds a brace" in refused.stdout + refused.stderr


@pytest.mark.slow
def test_a_deleted_or_changed_shard_is_noticed_before_any_job(tiny_project):
    """Snakemake sees only the manifest: a deleted shard used to pass (`all`: nothing to be done) until pretraining
    read it. Now the workflow stops before any job, naming the file and the fix; the rebuild gives the same bytes."""
    work = tiny_project
    manifest = work / "results/shards/pretrain/manifest.json"
    entry = json.loads(manifest.read_text())["splits"]["pretrain"][0]
    shard = manifest.parent / entry["path"]
    content = shard.read_bytes()
    shard.unlink()
    result = snakemake(work, "-n", "all")
    message = result.stdout + result.stderr
    expected = (f"the pretrain shards no longer match results/shards/pretrain/manifest.json: "
                f"results/shards/pretrain/{entry['path']}: missing")
    assert result.returncode != 0 and expected in message, message[-2000:]
    shard.write_bytes(content + b"x")                                                    # rewritten in place
    result = snakemake(work, "-n", "all")
    message = result.stdout + result.stderr
    assert result.returncode != 0 and f"{len(content) + 1} bytes, the manifest says {len(content)}" in message
    assert "Delete results/shards/pretrain/manifest.json and rerun" in message
    manifest.unlink()
    rebuilt = snakemake(work, "all")
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert job_counts(rebuilt.stdout + rebuilt.stderr)["shards"] == 1                      # that split alone
    assert shard.read_bytes() == content                                                   # deterministic bytes
    again = snakemake(work, "-n", "all")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


CORPUS_TS = {  # pre-parcellated runs (TSV, the atlas's ROI names as header) -> what the message must say
    "nan": "non-finite value nan at time point 6 (line 7)", "empty": "an empty cell at time point 3 (line 4)",
    "constant": "no signal", "headeronly": "no time points", "wrongnames": "Vis_typo",
    "text": "non-numeric value 'abc"}
CORPUS_BOLD = {  # NIfTI runs
    "truncated": "corrupt or truncated", "corrupt": "not a readable NIfTI", "threed": "must be 4-D",
    "fov": "ROIs have no signal (no voxels, or constant over the run: outside the image's brain or field of view?)",
    "lying": "truncated: the header promises 40 volumes, the file holds 39",
    "otherspace": "space 'MNI152NLin2009cAsym' but the atlas is in 'MNI152NLin6Asym'"}


def _write_corpus(work: Path) -> dict[str, Path]:
    """A cohort `bad` of one broken run per case, plus two good runs (a time series and a BOLD), beside the tiny
    demo's cohorts. Returns each case's file."""
    import gzip

    import nibabel as nib

    names = pd.read_csv(work / "results/atlas/atlas_space-MNI152NLin6Asym_labels.tsv", sep="\t")["name"].tolist()
    rng = np.random.default_rng(0)
    folder = work / "corpus"
    folder.mkdir()
    files = {}
    for case in [*CORPUS_TS, "goodts"]:
        data = pd.DataFrame(100 + rng.normal(size=(40, len(names))), columns=names)
        if case in ("nan", "empty"):
            data.iloc[5 if case == "nan" else 2, 3] = np.nan
        elif case == "constant":
            data[names[7]] = 100.0
        elif case == "headeronly":
            data = data.iloc[:0]
        elif case == "wrongnames":
            data = data.rename(columns={names[2]: "Vis_typo"})
        files[case] = folder / f"sub-{case}_timeseries.tsv"
        data.to_csv(files[case], sep="\t", index=False, na_rep="NaN" if case == "nan" else "")
        if case == "text":
            files[case].write_text(files[case].read_text().replace("\n1", "\nabc", 1))
    good = next((work / "resources/demo/derivatives/adnisim").rglob("*_bold.nii.gz"))
    img = nib.load(good)
    for case in [*CORPUS_BOLD, "goodbold"]:
        space = "MNI152NLin2009cAsym" if case == "otherspace" else "MNI152NLin6Asym"
        suffix = ".nii" if case == "lying" else ".nii.gz"
        files[case] = folder / f"sub-{case}_ses-1_task-rest_run-1_space-{space}_desc-preproc_bold{suffix}"
        if case == "lying":                                                   # its header promises more volumes
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), files[case])
            files[case].write_bytes(files[case].read_bytes()[:-5000])
        elif case == "truncated":
            files[case].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        elif case == "corrupt":
            files[case].write_bytes(gzip.compress(b"\x00" * 100)[:20] + b"not a gzip stream" * 50)
        elif case == "threed":
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), files[case])
        elif case == "fov":
            affine = img.affine.copy()
            affine[:3, 3] += 40.0                                              # shifted: outside the atlas
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine, img.header), files[case])
        else:
            files[case].write_bytes(good.read_bytes())
    return files


@pytest.mark.slow
def test_a_bad_input_corpus_through_the_dag_fails_each_job_alone(tiny_project, tmp_path):
    """The real DAG with --keep-going: each broken run fails its own job with one message naming its file and the
    problem, leaves no output, and the good runs beside it (and every other cohort) are processed."""
    work = tmp_path / "corpus_project"
    shutil.copytree(tiny_project, work, symlinks=True)
    files = _write_corpus(work)
    cases = [*CORPUS_TS, *CORPUS_BOLD, "goodts", "goodbold"]
    n = next(n for n in range(len(cases), 400) if len({batches.batch_of("bad", c, n) for c in cases}) == len(cases))
    config = yaml.safe_load((work / "config/config.yaml").read_text())
    config["batching"]["cohorts"]["bad"] = n                               # one run per job
    (work / "config/config.yaml").write_text(yaml.safe_dump(config))
    samples = pd.read_csv(work / "config/samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    rows = [{**{k: "" for k in samples.columns}, "cohort": "bad", "subject": c, "session": "1", "run": "1",
             "tr": "2.0", ("bold" if c in CORPUS_BOLD or c == "goodbold" else "timeseries"): str(files[c])}
            for c in cases]
    pd.concat([samples, pd.DataFrame(rows)]).to_csv(work / "config/samples.tsv", sep="\t", index=False)
    phenotypes = pd.read_csv(work / "config/phenotypes.tsv", sep="\t", dtype=str, keep_default_na=False)
    extra = pd.DataFrame([{**{k: "" for k in phenotypes.columns}, "cohort": "bad", "subject": c, "age": "60"}
                          for c in cases])
    pd.concat([phenotypes, extra]).to_csv(work / "config/phenotypes.tsv", sep="\t", index=False)
    result = snakemake(work, "--keep-going", "all")
    assert result.returncode != 0
    logs = {p.stem: p.read_text() for p in (work / "logs/parcellate").glob("bad-*.log")}
    wrong = {}
    for case, expected in {**CORPUS_TS, **CORPUS_BOLD}.items():
        log = logs[f"bad-b{batches.batch_of('bad', case, n):0{max(2, len(str(n - 1)))}d}"]
        errors = [line for line in log.splitlines() if "error:" in line]
        if not (len(errors) == 1 and str(files[case]) in errors[0] and expected in errors[0]) or "Traceback" in log:
            wrong[case] = log[-600:]
        assert not (work / f"results/parcellate/bad/sub-{case}_ses-1_run-1.parquet").exists()
        assert not (work / f"results/parcellate/bad/sub-{case}_ses-1_run-1_qc.tsv").exists()
    assert not wrong, wrong
    for case in ("goodts", "goodbold"):                                     # beside them: done
        assert (work / f"results/align_tr/bad/sub-{case}_ses-1_run-1.parquet").exists(), case
    assert (work / "results/shards/pretrain/manifest.json").exists()       # the other cohorts' stages stand


def _write_study_project(work: Path, n_subjects: int) -> list[str]:
    """config/mystudy.yaml's study (pre-parcellated runs, a label table) at the tiny project's sizes, no tasks."""
    (work / "config").mkdir(parents=True, exist_ok=True)
    write_study(work, n_subjects=n_subjects, n_time=80)
    config = yaml.safe_load((REPO / "config" / "mystudy.yaml").read_text())
    config["shards"]["window"] = 32
    config["gradients"]["n_components"] = 5
    config["evaluate"].update(tasks={}, capabilities={}, encoders={"jepa": {"pretrained": "config/pretrain.yaml"}})
    config["figures"]["attention"] = None
    train = yaml.safe_load((REPO / "config" / "pretrain.yaml").read_text())
    train["data"].update(batch_size=2)
    train["model"].update(patch_size=16)
    train["optim"].update(epochs=1, warmup_epochs=1)
    (work / "config" / "pretrain.yaml").write_text(yaml.safe_dump(train))
    (work / "config" / "mystudy.yaml").write_text(yaml.safe_dump(config))
    return [f"{s + 1:03d}" for s in range(n_subjects)]


def _subject_in(split: str, taken: set[str]) -> str:
    """A new subject ID of config/mystudy.yaml's study that its hash split sends to ``split``."""
    from brainjepa.group.splits import assign_split

    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    return next(s for s in (f"{k:03d}" for k in range(100, 999))
                if s not in taken and assign_split(0, "mystudy", s, fractions, 0.8) == split)


@pytest.mark.slow
def test_a_stage_requested_alone_after_a_sheet_edit_rebuilds_what_it_depends_on(tmp_path):
    """After subjects are added to or removed from the sheets, or a failed batch's bad row is removed, a target
    requested alone (shards, scaling, gradients, the pretrained model) plans and runs everything it depends on in
    the same invocation. It used to run only the `splits` job and exit 0, leaving the old subject set in outputs
    that looked complete (Snakemake skips the other inputs of a job whose only input from a rerunning job is
    ancient: snakemake/snakemake#4166)."""
    from brainjepa.data.shards import load_manifest, read_shard_columns

    work = tmp_path / "study"
    subjects = _write_study_project(work, 24)
    study = ["--configfile", str(work / "config/mystudy.yaml")]
    results = "studies/mystudy/results"
    shards = [f"{results}/shards/{s}/manifest.json" for s in ("pretrain", "train", "val", "test")]
    done = snakemake(work, *shards, *study)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    samples, phenotypes = work / "config/mystudy/samples.tsv", work / "config/mystudy/phenotypes.tsv"
    first = "data/mystudy/sub-001/ses-1/func/sub-001_ses-1_task-rest_timeseries.tsv"

    def add(subject: str, path: str = first) -> None:
        with samples.open("a") as f:
            f.write(f"mystudy\t{subject}\t1\t1\t\t\t{path}\t2.0\n")
        with phenotypes.open("a") as f:
            f.write(f"mystudy\t{subject}\t55.0\tM\n")

    def remove(subject: str) -> None:
        for sheet in (samples, phenotypes):
            table = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
            table[table["subject"] != subject].to_csv(sheet, sep="\t", index=False)

    def planned(*targets: str) -> dict[str, int]:
        result = snakemake(work, "-n", *targets, *study)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        counts = job_counts(result.stdout)
        return {"batches": {r for r in counts if r.startswith(("parcellate_", "align_tr_"))}, **counts}

    def shard_subjects(split: str) -> set[str]:
        folder = work / f"{results}/shards/{split}"
        return {s for f in folder.glob("shard-*.parquet") for s in read_shard_columns(f, ["subject"])["subject"]}

    new = _subject_in("pretrain", set(subjects))
    add(new)
    stages = {**{m: {"scaling": 1, "shards": 1} for m in shards},
              f"{results}/scaling/scaling_stats.json": {"scaling": 1},
              f"{results}/gradients/gradients.tsv": {"group_fc": 1, "gradients": 1},
              f"{results}/pretrain/brainjepa_tiny/final.pt": {"scaling": 1, "shards": 1, "group_fc": 1, "pretrain": 1}}
    for target, jobs in stages.items():
        plan = planned(target)
        assert {"parcellate_mystudy_b00", "align_tr_mystudy_b00"} <= plan["batches"], (target, plan)
        assert {rule: plan.get(rule) for rule in jobs} == jobs, (target, plan)
    before = load_manifest(work / shards[0])["scaling_stats_id"]
    run = snakemake(work, *shards, *study)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert new in shard_subjects("pretrain")
    assert load_manifest(work / shards[0])["scaling_stats_id"] != before          # the new subject's statistics
    again = snakemake(work, "-n", *shards, *study)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]

    # a held-out subject added: the held-out batch's splits (one batch: train, val, test), not the pretraining stages
    held_out = _subject_in("test", set(subjects) | {new})
    add(held_out)
    plan = planned(*shards)
    assert plan.get("shards") == 3 and "scaling" not in plan and plan["batches"] == {
        "parcellate_mystudy_h00", "align_tr_mystudy_h00"}, plan

    # a pretraining subject removed: the pretraining stages again
    remove(subjects[0])
    plan = planned(f"{results}/scaling/scaling_stats.json")
    assert plan.get("scaling") == 1 and {"parcellate_mystudy_b00", "align_tr_mystudy_b00"} <= plan["batches"], plan

    # a failed batch (a bad run), then the bad row removed: the same command builds every shard set
    bad = work / "data/mystudy/bad.tsv"
    table = pd.read_csv(work / first, sep="\t")
    table.iloc[5, 3] = np.nan
    table.to_csv(bad, sep="\t", index=False)
    add(_subject_in("pretrain", set(subjects) | {new, held_out}), "data/mystudy/bad.tsv")
    failed = snakemake(work, *shards, "--keep-going", *study)
    assert failed.returncode != 0 and "bad.tsv: an empty cell" in (
        work / "studies/mystudy/logs/parcellate/mystudy-b00.log").read_text()
    remove(pd.read_csv(samples, sep="\t", dtype=str)["subject"].iloc[-1])
    rerun = snakemake(work, *shards, *study)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert all((work / m).exists() for m in shards)
    assert new in shard_subjects("pretrain") and subjects[0] not in shard_subjects("pretrain")
    assert held_out in shard_subjects("test")
    assert "Nothing to be done" in snakemake(work, "-n", *shards, *study).stdout


@pytest.mark.slow  # 21-43 s in make test's --durations (2026-12-07)
def test_task_splits_that_cannot_train_select_or_test_stop_the_workflow_before_any_job(tmp_path):
    """Knowable from the sheets, so refused when the workflow starts (they failed in each evaluate job after
    pretraining): a task split without a labelled subject (test: 0), a classification whose training split holds
    one class (sklearn's raw `needs samples of at least 2 classes ... np.int64(1)` before), and a capability
    without subjects in a split; each message names the task, the split and the counts."""
    work = tmp_path / "tasks"
    _copy_demo_config(work)
    (work / "config" / "pretrain_mae.yaml").write_text((REPO / "config" / "pretrain_mae.yaml").read_text())
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())

    def dry_run(cfg: dict) -> str:
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
        result = snakemake(work, "-n", "all")
        assert result.returncode != 0, result.stdout[-2000:]
        assert not (work / "results").exists()
        return result.stdout + result.stderr

    no_test = json.loads(json.dumps(config))
    no_test["splits"]["fractions"] = {"train": 0.95, "val": 0.05, "test": 0.0}
    output = dry_run(no_test)
    assert re.search(r"task age: no labelled subject in split 'test' \(labelled subjects of cohort\(s\) ukbsim: "
                     r"train \d+, val \d+, test 0\)", output), output[-2000:]
    no_test["evaluate"]["tasks"] = {}
    assert "evaluate.capabilities.forecast: no subject of cohort(s) ukbsim in split(s) test" in dry_run(no_test)

    # every training subject of ukbsim male: the sex task cannot train
    from brainjepa.group.splits import make_splits
    from brainjepa.sheets import load_phenotypes, load_samples

    samples = load_samples(work / "config/samples.tsv", produced=lambda p: True)
    table = make_splits(samples, config["splits"]["seed"], config["splits"]["fractions"], "ukbsim",
                        config["splits"]["pretraining"]["fraction"], config["splits"]["stratify"],
                        load_phenotypes(work / "config/phenotypes.tsv", config["labels"]))
    train = set(table.loc[(table["split"] == "train") & (table["cohort"] == "ukbsim"), "subject"])
    assert train
    phenotypes = pd.read_csv(work / "config/phenotypes.tsv", sep="\t", dtype=str, keep_default_na=False)
    phenotypes.loc[phenotypes["subject"].isin(train), "sex"] = "M"
    phenotypes.to_csv(work / "config/phenotypes.tsv", sep="\t", index=False)
    output = dry_run(config)
    assert re.search(r"task sex: the training split holds 1 class of 'sex' \('M': \d+ subjects\), a classifier needs "
                     r"at least 2 \('F': \d+, 'M': \d+ in all splits\); stratify", output), output[-2000:]
    assert "np." not in output


@pytest.mark.slow  # 21-43 s in make test's --durations (2026-12-07)
def test_a_relative_run_folder_that_leaves_output_dir_is_refused(tmp_path):
    """A training config's relative run.out_dir lies under output_dir; `../../escape` used to be accepted, and the
    pretrain rule wrote ../../escape/final.pt outside the dataset's folder."""
    work = tmp_path / "escape"
    _copy_demo_config(work)
    (work / "config" / "pretrain_mae.yaml").write_text((REPO / "config" / "pretrain_mae.yaml").read_text())
    train = yaml.safe_load((work / "config" / "pretrain.yaml").read_text())
    train["run"]["out_dir"] = "../../escape"
    (work / "config" / "pretrain_escape.yaml").write_text(yaml.safe_dump(train))
    overlay = work / "config" / "escape.yaml"
    overlay.write_text(yaml.safe_dump({"pretrain": {"config": "config/pretrain_escape.yaml"}}))
    result = snakemake(work, "-n", "all", "--configfile", str(work / "config/config.yaml"), str(overlay))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and ("config/pretrain_escape.yaml: run.out_dir '../../escape' leaves output_dir "
                                       "(.)") in output, output[-2000:]
    assert "escape/final.pt" not in output
    # inside output_dir (even through ..) it is taken
    train["run"]["out_dir"] = "results/pretrain/../pretrain/inside"
    (work / "config" / "pretrain_escape.yaml").write_text(yaml.safe_dump(train))
    result = snakemake(work, "-n", "all", "--configfile", str(work / "config/config.yaml"), str(overlay))
    assert result.returncode == 0 and "results/pretrain/inside/final.pt" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow  # 21-43 s in make test's --durations (2026-12-07)
def test_the_pretraining_study_is_one_job_when_configured_and_its_config_is_checked(tmp_path):
    """Off in the demo; `study.config` adds one pretraining_study job (its outputs in `all`); a bad study config
    stops the dry run naming the key."""
    work = tmp_path / "study_dag"
    _copy_demo_config(work)
    (work / "config" / "pretrain_mae.yaml").write_text((REPO / "config" / "pretrain_mae.yaml").read_text())
    shutil.copytree(REPO / "config" / "study", work / "config" / "study")
    assert "pretraining_study" not in job_counts(snakemake(work, "-n", "all").stdout)
    overlay = work / "config" / "study_on.yaml"
    overlay.write_text(yaml.safe_dump({"study": {"config": "config/study/objectives.yaml"}}))
    result = snakemake(work, "-n", "-p", "all", "--configfile", str(work / "config/config.yaml"), str(overlay))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout)["pretraining_study"] == 1
    job = dry_run_jobs(result.stdout)["results/study/objectives/study.tsv"]
    assert job["shell"].startswith("brainjepa pretraining-study --config config/study/objectives.yaml "
                                   "--pretrain-manifest results/shards/pretrain/manifest.json --shards results/shards")
    bad = yaml.safe_load((work / "config/study/objectives.yaml").read_text()) | {"budget_stepz": 10}
    (work / "config/study/objectives.yaml").write_text(yaml.safe_dump(bad))
    refused = snakemake(work, "-n", "all", "--configfile", str(work / "config/config.yaml"), str(overlay))
    assert refused.returncode != 0 and "invalid study config" in refused.stdout + refused.stderr
    assert "budget_stepz" in refused.stdout + refused.stderr
