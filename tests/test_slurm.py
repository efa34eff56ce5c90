"""`snakemake --profile slurm all`, as the README says, on a real single-node Slurm (tests/slurm_cluster.py).

Needs root on Debian (it installs munge and slurm-wlm when missing) and starts and stops its own daemons, so it
runs under `make test-slurm` (BRAINJEPA_SLURM=1; `.ci/run` calls it), and is skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from slurm_cluster import LocalSlurm, install
from test_workflow import REPO, write_tiny_project

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.mark.skipif(os.environ.get("BRAINJEPA_SLURM") != "1", reason="the real-Slurm test: make test-slurm")
def test_profile_slurm_runs_every_stage_and_the_gpu_request_reaches_sbatch(tmp_path):
    problem = install()
    assert problem is None, problem
    work = tmp_path / "tiny"
    work.mkdir()
    write_tiny_project(work)
    config = yaml.safe_load((work / "config/config.yaml").read_text())
    config["pretrain"].update(gpus=1, cpus_per_gpu=1, threads=1)  # the training rules ask for a (fake) GPU
    (work / "config/config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(work), "all"]
    with LocalSlurm(gpus=2) as cluster:
        try:
            result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"snakemake --profile slurm timed out\n{exc.stderr}\n{cluster.diagnostics()}")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-5000:] + cluster.diagnostics()
        # the results: every stage, both models
        for name in ("brainjepa_tiny", "mae_tiny"):
            assert (work / f"results/pretrain/{name}/final.pt").exists(), name
        facts = json.loads((work / "results/report/summary.json").read_text())
        assert facts["runs"] == 9
        # each pretraining job got its GPU from Slurm (the plugin's --gpus), and ran on the CPU here
        jobs = sorted((work / ".snakemake/slurm_logs").glob("rule_pretrain*/**/*.log"))
        assert len(jobs) == 2, jobs
        for log in jobs:
            job = cluster.job(log.stem)
            assert "gres/gpu=1" in job or "gpu:1" in job, job
        parcellate = sorted((work / ".snakemake/slurm_logs").glob("rule_parcellate_*/**/*.log"))
        assert parcellate, "the per-run stages ran as Slurm jobs"
