"""Dry-run cost of the workflow at UK Biobank scale: sheets of 1,000, 10,000 and 40,000 subjects.

For each size, a working folder gets a pre-parcellated cohort of that many subjects (one run each; the files
exist but are empty: a dry run only checks that inputs exist), a small downstream cohort, and the demo's config
with the demo off and a label-table atlas. Then ``snakemake -n all`` runs and this prints its wall time, peak
memory (max RSS of the Snakemake process), and the job counts: total, and those of the per-run stages
(parcellate_*, align_tr_*: one job per batch of subjects, config ``batching``). With ``--done``, a second dry
run follows on the same folder with the per-run stages finished (every batch's stamp and every run's parcellated,
QC and aligned file present, empty): what a rerun after adding a cohort costs.

    python bench/dag_scale.py                      # 1000 10000 40000 subjects, 100 batches for the big cohort
    python bench/dag_scale.py --subjects 40000 --batches 200
    python bench/dag_scale.py --subjects 40000 --done
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def make_project(work: Path, n_subjects: int, n_batches: int, n_rois: int = 450) -> None:
    (work / "config").mkdir(parents=True)
    data = work / "data"
    data.mkdir()
    names = [f"ROI{i:03d}" for i in range(n_rois)]
    pd.DataFrame({"name": names, "network": ["Default"] * n_rois}).to_csv(work / "config/labels.tsv", sep="\t",
                                                                          index=False)
    rows, phen = [], []
    for cohort, n in (("ukb", n_subjects), ("ext", 200)):
        for i in range(n):
            subject = f"{cohort}{i:06d}"
            path = data / f"sub-{subject}_timeseries.tsv"
            path.touch()
            rows.append({"cohort": cohort, "subject": subject, "session": "1", "run": "1", "timeseries": str(path),
                         "tr": "0.735" if cohort == "ukb" else "2.0"})
            phen.append({"cohort": cohort, "subject": subject, "age": 40 + i % 40})
    pd.DataFrame(rows).to_csv(work / "config/samples.tsv", sep="\t", index=False)
    pd.DataFrame(phen).to_csv(work / "config/phenotypes.tsv", sep="\t", index=False)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.pop("demo")
    config["atlas"] = {"labels": "config/labels.tsv"}
    config["labels"] = {"age": "continuous"}
    config["batching"] = {"default": 2, "cohorts": {"ukb": n_batches}}
    config["splits"].update(pretraining={"cohort": "ukb", "fraction": 0.8}, stratify={})
    config["evaluate"]["tasks"] = {"age": {"cohorts": ["ext"], "label": "age", "kind": "regression"}}
    config["evaluate"]["capabilities"] = {}   # the demo's name its cohorts; their jobs do not grow with subjects
    config["figures"]["attention"] = None
    for name in ("pretrain.yaml", "pretrain_mae.yaml"):
        (work / "config" / name).write_text((REPO / "config" / name).read_text())
    (work / "config/config.yaml").write_text(yaml.safe_dump(config))


def finish_per_run_stages(work: Path) -> int:
    """Create what the per-run stages leave behind: the batch stamps (named by a dry run) and every run's files."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow/Snakefile"), "--directory",
           str(work), "--cores", "2", "-n", "all"]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    files = set(re.findall(r"results/(?:parcellate|align_tr)/_batches/[\w-]+\.tsv", text))
    samples = pd.read_csv(work / "config/samples.tsv", sep="\t", dtype=str)
    for cohort, subject, session, run in zip(samples["cohort"], samples["subject"], samples["session"], samples["run"]):
        stem = f"{cohort}/sub-{subject}_ses-{session}_run-{run}"
        files.update({f"results/parcellate/{stem}.parquet", f"results/parcellate/{stem}_qc.tsv",
                      f"results/align_tr/{stem}.parquet"})
    for f in files:
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        (work / f).touch()
    return len(files)


def dry_run(work: Path) -> dict:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow/Snakefile"), "--directory",
           str(work), "--cores", "2", "-n", "--quiet", "rules", "all"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
    peak_mb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    text = result.stdout + result.stderr
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", text.split("Job stats:")[1], flags=re.M)}
    per_run = sum(n for rule, n in counts.items() if rule.startswith(("parcellate_", "align_tr_")))
    return {"seconds": seconds, "peak_mb": peak_mb, "jobs": counts.get("total", sum(counts.values())),
            "per_run_jobs": per_run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[1000, 10000, 40000])
    parser.add_argument("--batches", type=int, default=100, help="batches of the big cohort (config batching)")
    parser.add_argument("--done", action="store_true", help="also dry-run with the per-run stages finished")
    args = parser.parse_args()
    print("subjects  batches  state       dry-run s  peak MB  jobs  per-run-stage jobs")
    for n in args.subjects:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "dag"
            make_project(work, n, args.batches)
            states = [("fresh", None)] + ([("per-run done", finish_per_run_stages)] if args.done else [])
            for state, prepare in states:
                if prepare is not None:
                    prepare(work)
                r = dry_run(work)
                print(f"{n:8d}  {args.batches:7d}  {state:12s}  {r['seconds']:8.1f}  {r['peak_mb']:7.0f}  "
                      f"{r['jobs']:4d}  {r['per_run_jobs']:18d}", flush=True)


if __name__ == "__main__":
    main()
