"""Which pretraining objective makes the demo's JEPA beat random init, as the demo's evaluation measures it?

On a demo workdir (after `make demo`, or any run that made the shards, the scaling statistics and the gradients),
pretrains the demo's training config (config/pretrain.yaml) once per objective of ``--objectives`` (``name=key=value,
key=value``; ``paper`` = no override), extracts its frozen features, and evaluates every task of the workflow config
with the workflow's own resampling and protocol settings for the frozen ``--protocols``, against the random
encoder's initialisations ``evaluate.random_seeds``. Prints the paired table (pretrained - each random init, worst
shown) and writes every record under ``--out``. Resumable: finished runs, caches and records are kept.

    python bench/demo_objectives.py --workdir . --out /tmp/demo_objectives \\
        --objectives paper sigreg=optim.regularizer=sigreg,optim.regularizer_weight=0.09

Run it on an otherwise idle machine when its times matter (it prints each run's pretraining seconds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml


def sh(args: list[str], cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("."))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--objectives", nargs="+", default=["paper"])
    p.add_argument("--protocols", nargs="+", default=["closed_form", "closed_form_cross_roi"])
    args = p.parse_args()
    work, out = args.workdir.resolve(), args.out.resolve()
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    ev = config["evaluate"]
    shards = work / "results" / "shards"
    data = ["--set", f"data.manifest={shards}/pretrain/manifest.json",
            "--set", f"data.gradients={work}/results/gradients/gradients.tsv",
            "--set", f"data.scaling_stats={work}/results/scaling/scaling_stats.json",
            "--set", f"data.labels={next((work / 'results' / 'atlas').glob('*_labels.tsv'))}"]
    cohorts = sorted({c for t in ev["tasks"].values() for c in (*t["cohorts"], *t.get("test_cohorts", []))})
    common = ["--protocols", json.dumps(ev["settings"]), "--shards", str(shards)]
    encoders: dict[str, tuple[dict, list[int]]] = {}
    for item in args.objectives:
        name, _, sets = item.partition("=")
        run = out / "runs" / name
        if not (run / "final.pt").exists():
            overrides = [a for s in filter(None, sets.split(",")) for a in ("--set", s)]
            t0 = time.perf_counter()
            sh(["brainjepa", "pretrain", "--config", str(work / "config" / "pretrain.yaml"), *data, *overrides,
                "--set", f"run.out_dir={run}", "--set", "run.progress=false"], work)
            print(f"{name}: pretrained in {time.perf_counter() - t0:.0f} s", flush=True)
        encoders[name] = ({"kind": "checkpoint", "path": str(run / "final.pt")}, [0])
    random = {"kind": "random", "config": str(work / "config" / "pretrain.yaml"),
              "gradients": str(work / "results" / "gradients" / "gradients.tsv")}
    encoders["random"] = (random, list(ev["random_seeds"]))
    records = []
    for name, (spec, seeds) in encoders.items():
        for seed in seeds:
            folder = out / "features" / name / f"init{seed}"
            for cohort in cohorts:
                if not (folder / f"{cohort}.npz").exists():
                    sh(["brainjepa", "features", "--encoder", json.dumps(spec), "--cohort", cohort, "--seed",
                        str(seed), "--out", str(folder / f"{cohort}.npz"), *common], work)
            for task_name, task in ev["tasks"].items():
                for protocol in args.protocols:
                    method = f"{name}_{protocol}"
                    record = out / "evaluate" / task_name / method / f"seed{seed}.json"
                    if not record.exists():
                        feats = [str(folder / f"{c}.npz") for c in (*task["cohorts"], *task.get("test_cohorts", []))]
                        sh(["brainjepa", "evaluate", "--task", json.dumps({"name": task_name, **task}), "--method",
                            method, "--seed", str(seed), "--features", *feats, "--resampling",
                            json.dumps(ev["resampling"]), "--out", str(record), *common], work)
                    records.append(str(record))
    sh(["brainjepa", "metrics", "--results", *records, "--out", str(out / "metrics.tsv"), "--tables",
        str(out / "tables")], work)
    print((out / "tables" / "summary.md").read_text().split("## Does pretraining help?")[-1])


if __name__ == "__main__":
    sys.exit(main())
