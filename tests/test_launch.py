"""How training and evaluation jobs start (brainjepa/train/launch.py): the argv of each layout, Slurm's host
lists, the errors, the cluster resources, and two "nodes" on this machine meeting in a real c10d rendezvous."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from brainjepa.errors import InputError
from brainjepa.train.launch import (
    JobLayout,
    check_sections,
    expand_nodelist,
    launch_argv,
    rule_command,
    section_layout,
    slurm_resources,
    srun_argv,
)

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["pretrain", "--config", "config/pretrain.yaml"]
CLI = ["-m", "brainjepa.cli", *COMMAND]


def slurm_env(node: int, nodes: int = 2, nodelist: str = "gpu[003-004]", job_id: str = "4242", **extra) -> dict:
    """Slurm's environment of one task of `srun --nodes=N --ntasks-per-node=1` (the variables the launcher reads)."""
    return {"SLURM_JOB_ID": job_id, "SLURM_NNODES": str(nodes), "SLURM_NTASKS": str(nodes),
            "SLURM_NODEID": str(node), "SLURM_PROCID": str(node), "SLURM_JOB_NODELIST": nodelist, **extra}


def test_one_process_on_one_node_runs_the_command_itself():
    assert launch_argv(COMMAND, 1, 1, {}, python="py") == ["py", *CLI]
    assert launch_argv(COMMAND, 1, 1, slurm_env(0), python="py") == ["py", *CLI]  # Slurm or not


def test_several_processes_on_one_node_run_standalone_torchrun():
    argv = launch_argv(COMMAND, 1, 4, {}, python="py")
    assert argv == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", *CLI]


@pytest.mark.parametrize("node", [0, 1])
def test_two_nodes_under_slurm_meet_at_the_first_host(node):
    argv = launch_argv(COMMAND, 2, 4, slurm_env(node), section="pretrain", python="py")
    assert argv == ["py", "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
                    "--rdzv_endpoint=gpu003:29742", "--rdzv_id=4242",  # 29500 + 4242 % 1000
                    f"--rdzv_conf=is_host={'true' if node == 0 else 'false'}", *CLI]


@pytest.mark.parametrize("nodelist, first", [("gpu[003-004]", "gpu003"), ("a1,a2", "a1"), ("node[1,3-4]", "node1"),
                                             ("rack2-[08-09]", "rack2-08")])
def test_the_rendezvous_host_is_the_first_of_the_host_list(nodelist, first):
    nodes = len(expand_nodelist(nodelist))
    argv = launch_argv(COMMAND, nodes, 1, slurm_env(1, nodes, nodelist), python="py")
    assert f"--rdzv_endpoint={first}:29742" in argv


def test_the_step_host_list_comes_first_and_master_addr_and_port_override():
    env = slurm_env(0, SLURM_STEP_NODELIST="b[7-8]")
    assert "--rdzv_endpoint=b7:29742" in launch_argv(COMMAND, 2, 1, env)
    env.update(MASTER_ADDR="10.0.0.7", MASTER_PORT="31000")
    assert "--rdzv_endpoint=10.0.0.7:31000" in launch_argv(COMMAND, 2, 1, env)
    assert "--rdzv_endpoint=a:29500" in launch_argv(COMMAND, 2, 1, slurm_env(0, nodelist="a,b", job_id="7000"))


def test_the_host_list_can_come_from_scontrol():
    argv = launch_argv(COMMAND, 2, 1, slurm_env(0, nodelist="odd"), hostnames=lambda text: ["x1", "x2"])
    assert "--rdzv_endpoint=x1:29742" in argv


@pytest.mark.parametrize("nodelist, hosts", [
    ("gpu[003-004]", ["gpu003", "gpu004"]),
    ("a1,a2", ["a1", "a2"]),
    ("node[1,3-4]", ["node1", "node3", "node4"]),
    ("n[08-10]", ["n08", "n09", "n10"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("c01,gpu[1-2],login", ["c01", "gpu1", "gpu2", "login"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("localhost", ["localhost"]),
])
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["gpu[1-2", "gpu1-2]", "gpu[2-1]", "gpu[a-b]", "", "n[[1]]"])
def test_a_malformed_host_list_is_an_error_naming_it(nodelist):
    with pytest.raises(InputError, match="host list"):
        expand_nodelist(nodelist)


@pytest.mark.parametrize("section", ["pretrain", "evaluate"])
def test_several_nodes_outside_slurm_name_the_config_key(section):
    with pytest.raises(InputError, match=rf"{section}\.nodes is 2: .*Slurm.*no SLURM_JOB_ID.*{section}\.nodes: 1"):
        launch_argv(COMMAND, 2, 4, {"SLURM_NNODES": "2"}, section=section)


def test_a_node_count_other_than_slurms_names_both():
    with pytest.raises(InputError, match=r"evaluate\.nodes is 2, but Slurm gave this job step 3 node.*SLURM_NNODES=3"):
        launch_argv(COMMAND, 2, 1, slurm_env(0, nodes=3), section="evaluate")


@pytest.mark.parametrize("change, message", [
    ({"SLURM_NNODES": None}, "no SLURM_NNODES"),
    ({"SLURM_NTASKS": "8"}, "8 tasks"),                   # several launchers per node: one per node
    ({"SLURM_NODEID": "2", "SLURM_PROCID": "2"}, "SLURM_NODEID is '2'"),
    ({"SLURM_JOB_NODELIST": None}, "host list is not set"),
    ({"MASTER_PORT": "http"}, "MASTER_PORT"),
])
def test_a_slurm_environment_that_cannot_start_the_nodes_is_an_error(change, message):
    env = {k: v for k, v in {**slurm_env(0), **change}.items() if v is not None}
    with pytest.raises(InputError, match=message):
        launch_argv(COMMAND, 2, 1, env)


@pytest.mark.parametrize("nodes, processes, key", [(0, 1, "pretrain.nodes"), (1, 0, "pretrain.processes")])
def test_counts_below_one_are_errors(nodes, processes, key):
    with pytest.raises(InputError, match=key):
        launch_argv(COMMAND, nodes, processes, {})


SECTION = {"nodes": 1, "processes": 1, "gpus": 0, "cpus_per_gpu": 8, "threads": 2}


@pytest.mark.parametrize("section, processes, gpus, message", [
    ("pretrain", 4, 1, "pretrain.processes: 4 but pretrain.gpus: 1: .*3 process\\(es\\) would have none; set "
                       "pretrain.processes: 1 \\(or pretrain.gpus: 4\\)"),
    ("evaluate", 1, 4, "evaluate.processes: 1 but evaluate.gpus: 4: .*3 GPU\\(s\\) would sit idle"),
])
def test_a_launched_gpu_job_runs_one_process_per_gpu(section, processes, gpus, message):
    """processes > gpus: ranks without a GPU died in torch.cuda.set_device ("invalid device ordinal"); processes <
    gpus: GPUs paid for and idle. Both are refused from the config, naming both keys."""
    cfg = {**SECTION, "processes": processes, "gpus": gpus}
    with pytest.raises(InputError, match=message):
        section_layout(section, cfg)
    with pytest.raises(InputError, match=message):
        check_sections({"pretrain": SECTION, "evaluate": SECTION, section: cfg})
    # a job that runs as one process (features, closed-form heads) takes the section's GPUs: not a launched layout
    assert section_layout(section, cfg, launched=False) == JobLayout(section, 1, 1, gpus, 8, 2)
    assert section_layout(section, {**cfg, "processes": gpus}).processes == gpus
    assert section_layout(section, {**cfg, "gpus": 0}).gpus == 0  # CPU: any number of processes (Gloo)
    check_sections({"pretrain": {**SECTION, "nodes": 2, "processes": 4, "gpus": 4}, "evaluate": SECTION})


def test_the_workflow_refuses_more_processes_than_gpus_before_any_job(tmp_path):
    """`snakemake -n` with `pretrain: {processes: 4, gpus: 1}` stops when the workflow starts, naming both keys."""
    overlay = tmp_path / "layout.yaml"
    overlay.write_text("pretrain: {processes: 4, gpus: 1}\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory",
           str(REPO), "--cores", "1", "-n", "all", "--configfile", str(REPO / "config" / "config.yaml"), str(overlay)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "invalid config: pretrain.processes: 4 but pretrain.gpus: 1" in output, output[-2000:]


def test_slurm_resources_of_one_node_and_of_several():
    assert slurm_resources(JobLayout("pretrain", gpus=2, cpus_per_gpu=4)) == {"gpu": 2, "cpus_per_gpu": 4}
    gpu = JobLayout("pretrain", nodes=2, processes=4, gpus=4, cpus_per_gpu=8)
    assert slurm_resources(gpu) == {"nodes": 2, "tasks": 2, "mpi": "srun", "cpus_per_gpu": 8, "gres": "gpu:4",
                                    "tasks_per_gpu": 0}  # per node: --gres; --gpus would count the whole job
    cpu = JobLayout("evaluate", nodes=3, processes=2, threads=6)
    assert slurm_resources(cpu) == {"nodes": 3, "tasks": 3, "mpi": "srun", "cpus_per_gpu": 8}
    assert srun_argv(gpu)[1:] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=32",
                                  "--kill-on-bad-exit=1"]
    assert "--cpus-per-task=6" in srun_argv(cpu)


def test_the_rule_command_of_one_node_and_of_several():
    assert rule_command(JobLayout("pretrain", processes=4), "brainjepa", "X") == (
        "brainjepa launch --section pretrain --nodes 1 --processes 4 --")
    several = rule_command(JobLayout("evaluate", nodes=2, processes=4, gpus=4), "brainjepa", "env P=1 py -m cli")
    check, run = several.split(" && ")
    assert check == "brainjepa launch --section evaluate --nodes 2 --processes 4 --check"
    assert run.startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=32 ")
    assert run.endswith(" env P=1 py -m cli launch --section evaluate --nodes 2 --processes 4 --")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_rendezvous_and_all_reduce(tmp_path):
    """Two launchers with the Slurm environments of two nodes (MASTER_ADDR: both on this machine), one CPU
    process each: torchrun's agents meet, and the two ranks all-reduce."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "TORCHELASTIC_"))}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO)
    cmd = [sys.executable, "-m", "brainjepa.cli", "launch", "--section", "pretrain", "--nodes", "2", "--processes",
           "1", "--", "check-distributed", "--device", "cpu", "--expect-world-size", "2"]
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env={**env, **slurm_env(node, nodelist="node[01-02]"), **common}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (1, 0)]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads(line) for out, _ in outputs for line in out.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert all(r["world_size"] == 2 and r["sum"] == 3.0 for r in reports), reports
    assert all("--rdzv_endpoint=127.0.0.1:" in err and "--nnodes=2" in err for _, err in outputs)


class _Resources(dict):
    __getattr__ = dict.__getitem__


@pytest.mark.parametrize("layout, wanted, unwanted", [
    (JobLayout("pretrain", nodes=2, processes=4, gpus=4, cpus_per_gpu=8, threads=2),
     ["--nodes=2", "--ntasks=2", "--cpus-per-gpu=8", "--gres=gpu:4"], ["--gpus", "--ntasks-per-gpu"]),
    (JobLayout("evaluate", nodes=3, threads=6), ["--nodes=3", "--ntasks=3", "--cpus-per-task=6"], ["--gpus", "gres"]),
    (JobLayout("pretrain", gpus=2, cpus_per_gpu=4), ["--gpus=2", "--cpus-per-gpu=4"], ["--nodes", "--ntasks-per-gpu"]),
])
def test_the_slurm_executor_plugin_turns_the_resources_into_these_sbatch_options(layout, wanted, unwanted):
    """snakemake-executor-plugin-slurm 2.x's own sbatch line for the resources (per node: --gres, not --gpus)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = type("Job", (), {"resources": _Resources(slurm_resources(layout), mem_mb=1000, runtime=60),
                           "threads": layout.threads})()
    params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "c", "account": "", "partition": "",
              "workdir": ""}
    call = get_submit_command(job, params).split() + set_gres_string(job).split()
    assert all(option in call for option in wanted), call
    assert not any(option in word for option in unwanted for word in call), call
