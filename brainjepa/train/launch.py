"""How a training or evaluation job starts: the one place that maps its layout to a command line.

A job is laid out by its workflow config section (``pretrain`` or ``evaluate``): ``nodes`` machines, each with
``processes`` processes (one GPU each when ``gpus`` > 0, so then ``processes`` must equal ``gpus``:
:func:`section_layout`, checked when the workflow starts) and ``gpus`` GPUs. Then:

- 1 node, 1 process: ``python -m brainjepa.cli <command>`` (a laptop; what the rules always ran);
- 1 node, N processes: ``torch.distributed.run --standalone --nproc_per_node=N`` (one machine, any scheduler);
- several nodes: Slurm only. The rule starts one launcher per node (``srun --ntasks-per-node=1``, see
  :func:`rule_command`); each reads Slurm's environment of its task and runs torchrun, whose agents meet in a
  c10d rendezvous on the first host of the step's node list (:func:`launch_argv`). The rendezvous store is
  hosted by the launcher of node 0 (Slurm's ``SLURM_NODEID``, the first host), so a node name that does not
  match its machine's own hostname still works; the ranks follow the order in which the nodes join. Port:
  ``MASTER_PORT``, else ``29500 + SLURM_JOB_ID % 1000`` (two jobs sharing a first node meet on different
  ports); host: ``MASTER_ADDR`` (node 0's address, e.g. of its fast interface), else that first host.

The functions are pure (the environment is an argument); ``brainjepa launch`` (brainjepa/cli/train.py) calls
them and execs the result, so signals (Slurm's SIGTERM before the time limit) reach torchrun or the command.
"""

from __future__ import annotations

import math
import re
import shlex
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product

from brainjepa.errors import InputError

SECTIONS = ("pretrain", "evaluate")  # the workflow config sections that lay out a launched job
PORT_BASE = 29500  # torchrun's default port; several nodes use PORT_BASE + job id % PORT_SPAN
PORT_SPAN = 1000
NODELIST_VARIABLES = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")  # the step's hosts first


@dataclass(frozen=True)
class JobLayout:
    """One job's place on the cluster, from its workflow config section.

    nodes: machines; processes: processes per node (torchrun's nproc_per_node); gpus: GPUs per node (0: CPU);
    cpus_per_gpu: CPUs per GPU on GPU nodes; threads: CPUs per node of a CPU job (Snakemake's threads).
    """

    section: str
    nodes: int = 1
    processes: int = 1
    gpus: int = 0
    cpus_per_gpu: int = 8
    threads: int = 1

    def __post_init__(self) -> None:
        for key in ("nodes", "processes", "cpus_per_gpu", "threads"):
            if getattr(self, key) < 1:
                raise InputError(f"{self.section}.{key} must be at least 1, not {getattr(self, key)}")
        if self.gpus < 0:
            raise InputError(f"{self.section}.gpus must be at least 0, not {self.gpus}")

    def check_one_gpu_per_process(self) -> None:
        """A launched job with GPUs runs one process per GPU (process i drives ``cuda:i``): more processes than
        GPUs fail at start ("invalid device ordinal"), fewer leave GPUs idle. An error naming both keys."""
        if self.gpus and self.processes != self.gpus:
            fewer = self.processes > self.gpus
            raise InputError(
                f"{self.section}.processes: {self.processes} but {self.section}.gpus: {self.gpus}: each process of a "
                f"GPU job drives one GPU (process i takes GPU i of its node), so "
                + (f"{self.processes - self.gpus} process(es) would have none"
                   if fewer else f"{self.gpus - self.processes} GPU(s) would sit idle")
                + f"; set {self.section}.processes: {self.gpus} (or {self.section}.gpus: {self.processes})")

    @property
    def cpus_per_node(self) -> int:
        """CPUs that Slurm gives the job on each node (--cpus-per-gpu x GPUs, else --cpus-per-task=threads)."""
        return self.cpus_per_gpu * self.gpus if self.gpus else self.threads


def section_layout(section: str, cfg: Mapping, launched: bool = True, gpus: int | None = None) -> JobLayout:
    """A job's layout from its workflow config section ``cfg`` (keys nodes, processes, gpus, cpus_per_gpu, threads).

    launched: the job starts through the launcher (its section's nodes and processes); otherwise it runs as one
    process on one node. gpus: a count other than the section's (e.g. 0 for a job that runs on CPU). A launched
    job is checked: one process per GPU (:meth:`JobLayout.check_one_gpu_per_process`)."""
    layout = JobLayout(
        section,
        nodes=cfg["nodes"] if launched else 1,
        processes=cfg["processes"] if launched else 1,
        gpus=cfg["gpus"] if gpus is None else gpus,
        cpus_per_gpu=cfg["cpus_per_gpu"],
        threads=cfg["threads"],
    )
    if launched:
        layout.check_one_gpu_per_process()
    return layout


def check_sections(config: Mapping) -> None:
    """Every launcher section of the workflow config (:data:`SECTIONS`) lays out a valid launched job; the workflow
    calls it when it starts, so a bad layout stops it before any job."""
    for section in SECTIONS:
        section_layout(section, config[section])


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compact host list -> the hosts, in order, as ``scontrol show hostnames`` prints them.

    ``gpu[003-004]`` -> gpu003, gpu004; ``a1,a2``; ``node[1,3-4]`` -> node1, node3, node4; several bracket groups
    in one name expand as their product (``r[1-2]n[1-2]``). Zero padding follows the range's first number.
    """
    hosts: list[str] = []
    for name in _split_top_level(nodelist):
        parts = re.split(r"(\[[^\[\]]*\])", name)
        if any(c in part for part in parts[::2] for c in "[]"):
            raise InputError(f"host list {nodelist!r}: unbalanced brackets in {name!r}")
        choices = [[part] if i % 2 == 0 else _expand_range(part[1:-1], nodelist) for i, part in enumerate(parts)]
        hosts += ["".join(p) for p in product(*choices)]
    if not hosts:
        raise InputError(f"host list {nodelist!r} names no host")
    return hosts


def _split_top_level(nodelist: str) -> list[str]:
    """Split at the commas outside brackets."""
    names, depth, start = [], 0, 0
    for i, c in enumerate(nodelist):
        depth += (c == "[") - (c == "]")
        if depth < 0 or depth > 1:
            raise InputError(f"host list {nodelist!r}: unbalanced brackets")
        if c == "," and depth == 0:
            names.append(nodelist[start:i])
            start = i + 1
    if depth:
        raise InputError(f"host list {nodelist!r}: unbalanced brackets")
    names.append(nodelist[start:])
    return [n.strip() for n in names if n.strip()]


def _expand_range(spec: str, nodelist: str) -> list[str]:
    """``1,3-4`` -> 1, 3, 4; ``003-004`` -> 003, 004."""
    out = []
    for item in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise InputError(f"host list {nodelist!r}: {item!r} is not a number or an increasing range a-b")
        lo, hi = match[1], match[2] or match[1]
        out += [f"{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1)]
    return out


def rendezvous_port(env: Mapping[str, str], job_id: str) -> int:
    """MASTER_PORT when set, else PORT_BASE + job id % PORT_SPAN (the same on every node of the job)."""
    if env.get("MASTER_PORT"):
        port = env["MASTER_PORT"]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"MASTER_PORT is {port!r}, not a TCP port (1-65535)")
        return int(port)
    number = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    return PORT_BASE + number % PORT_SPAN


def launch_argv(
    command: Sequence[str],
    nodes: int,
    processes: int,
    env: Mapping[str, str],
    *,
    section: str = "pretrain",
    python: str = "python",
    hostnames: Callable[[str], list[str]] = expand_nodelist,
) -> list[str]:
    """The argv that runs ``brainjepa <command>`` as ``nodes`` x ``processes`` processes; on several nodes, this
    node's share (one launcher per node, in a Slurm job step: ``env`` is its environment).

    ``section`` (pretrain | evaluate) names the config keys in errors; ``hostnames`` expands a Slurm host list.
    """
    JobLayout(section, nodes, processes)
    cli = ["-m", "brainjepa.cli", *command]
    if nodes == 1 and processes == 1:
        return [python, *cli]
    torchrun = [python, "-m", "torch.distributed.run"]
    if nodes == 1:
        return [*torchrun, "--standalone", f"--nproc_per_node={processes}", *cli]
    job_id, node_rank, host = slurm_node(nodes, env, section, hostnames)
    endpoint = f"{env.get('MASTER_ADDR') or host}:{rendezvous_port(env, job_id)}"
    return [
        *torchrun,
        f"--nnodes={nodes}",  # no --node_rank: c10d ranks the nodes as they join (torchrun ignores it)
        f"--nproc_per_node={processes}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={endpoint}",
        f"--rdzv_id={job_id}",
        f"--rdzv_conf=is_host={str(node_rank == 0).lower()}",
        *cli,
    ]


def slurm_node(
    nodes: int, env: Mapping[str, str], section: str, hostnames: Callable[[str], list[str]] = expand_nodelist
) -> tuple[str, int, str]:
    """This launcher's (job id, node rank, first host of the step) from Slurm's environment of its task, checked
    against the configured ``nodes``."""
    job_id = require_slurm(nodes, env, section)
    started = f"start one launcher per node: srun --nodes={nodes} --ntasks-per-node=1 ... brainjepa launch"
    count = env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES")
    if not count:
        raise InputError(f"{section}.nodes is {nodes}, but this Slurm task does not say its node count "
                         f"(no SLURM_NNODES): {started}")
    if not count.isdigit() or int(count) != nodes:
        raise InputError(f"{section}.nodes is {nodes}, but Slurm gave this job step {count} node(s) "
                         f"(SLURM_NNODES={count}): ask Slurm for {nodes} nodes (the rule's resources do), or set "
                         f"{section}.nodes: {count}")
    tasks = env.get("SLURM_NTASKS")
    if tasks and tasks != count:
        raise InputError(f"{section}.nodes is {nodes}, and this job step has {tasks} tasks (SLURM_NTASKS); "
                         f"{started}")
    rank = env.get("SLURM_NODEID", env.get("SLURM_PROCID", ""))
    if not rank.isdigit() or int(rank) >= nodes:
        raise InputError(f"SLURM_NODEID is {rank!r}, not a node number below {section}.nodes ({nodes}): {started}")
    variable = next((v for v in NODELIST_VARIABLES if env.get(v)), None)
    if variable is None:
        raise InputError(f"{section}.nodes is {nodes}, but Slurm's host list is not set ({NODELIST_VARIABLES[1]}): "
                         f"{started}")
    return job_id, int(rank), hostnames(env[variable])[0]


def require_slurm(nodes: int, env: Mapping[str, str], section: str) -> str:
    """The Slurm job id, which a job on several nodes needs (else an error naming ``<section>.nodes``)."""
    job_id = env.get("SLURM_JOB_ID", "")
    if not job_id:
        raise InputError(
            f"{section}.nodes is {nodes}: a job on several nodes runs under Slurm (snakemake --profile slurm, or "
            f"inside an allocation of {nodes} nodes), and this one is not (no SLURM_JOB_ID). Set {section}.nodes: 1 "
            f"to run on this machine ({section}.processes sets its number of processes)"
        )
    return job_id


def srun_argv(layout: JobLayout) -> list[str]:
    """srun's options that start one launcher on each node of the job, with all the node's CPUs (its GPUs: a
    job step gets all of the job's by default)."""
    return [
        "srun",
        f"--nodes={layout.nodes}",
        f"--ntasks={layout.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={layout.cpus_per_node}",
        "--kill-on-bad-exit=1",  # one node failing stops the others (no wait for the rendezvous timeout)
    ]


def rule_command(layout: JobLayout, cli: str, executable_cli: str) -> str:
    """The shell words a rule puts before ``<subcommand> <options>`` to start it with this layout.

    ``cli``: how the rule's shell runs ``brainjepa`` (a shell function will do); ``executable_cli``: the same as an
    executable command line, for srun on several nodes. There the launcher first checks (in the batch shell) that
    the job runs under Slurm, so a laptop gets an error naming ``<section>.nodes``, not "srun: command not found".
    """
    options = f"launch --section {layout.section} --nodes {layout.nodes} --processes {layout.processes}"
    if layout.nodes == 1:
        return f"{cli} {options} --"
    srun = " ".join(map(shlex.quote, srun_argv(layout)))
    return f"{cli} {options} --check && {srun} {executable_cli} {options} --"


def slurm_resources(layout: JobLayout) -> dict[str, int | str]:
    """The executor plugin's resources of a job (snakemake-executor-plugin-slurm 2.x).

    One node: ``gpu`` (sbatch --gpus=N) and ``cpus_per_gpu``, as always. Several nodes: ``nodes`` (--nodes),
    ``tasks`` (--ntasks: one per node) and ``mpi``, which makes the plugin run the rule's shell in the batch step
    rather than inside a one-task srun, so that the rule's own srun reaches every node. GPUs per node through
    ``gres`` (--gres=gpu:N is per node; --gpus is per job and could leave a node short); ``tasks_per_gpu: 0``
    keeps the plugin from turning ``tasks`` into --ntasks-per-gpu.
    """
    if layout.nodes == 1:
        return {"gpu": layout.gpus, "cpus_per_gpu": layout.cpus_per_gpu}
    resources: dict[str, int | str] = {"nodes": layout.nodes, "tasks": layout.nodes, "mpi": "srun",
                                       "cpus_per_gpu": layout.cpus_per_gpu}
    if layout.gpus:
        resources.update(gres=f"gpu:{layout.gpus}", tasks_per_gpu=0)
    return resources


SLURM_RESOURCE_KEYS = ("gpu", "cpus_per_gpu", "nodes", "tasks", "mpi", "gres", "tasks_per_gpu")


# ---------------------------------------------------------------------------------------------- host memory
PROCESS_MB = 3000          # a torch process's own host memory (interpreter, torch, CUDA context and kernels)
WORKER_MB = 1000           # a DataLoader worker (a forked torch process, its decoded row groups)
STREAM_MB = 64             # the evaluation readers' decoded row groups (tasks.WINDOW_CACHE_BYTES) and a batch
MEMORY_STAGES = ("features", "evaluate", "capability", "pretrain")


def job_memory_mb(stage: str, *, n_rois: int, window: int, n_windows: int, embed_dim: int, depth: int,
                  protocol: str | None = None, processes: int = 1, num_workers: int = 0) -> int:
    """The host memory (MB, Slurm's ``mem_mb``) of one job of ``stage``, from the data's shape and the model.

    n_rois x window: a window; n_windows: the windows of the evaluation cohorts (an upper bound for one job);
    embed_dim x depth: the encoder (about 12 depth D^2 parameters); protocol (``evaluate``): the method's
    protocol (``finetune``, ``linprobe``, ``attentive``, ``closed_form``, ``fc_linear``, ``fc_svm``; None: the
    largest); processes, num_workers: ranks of the job and DataLoader workers per rank (``pretrain``).

    - ``features``: the windows stream from the shards and the ROI tokens to the cache, so the job holds
      :data:`PROCESS_MB`, the model, :data:`STREAM_MB` and the pooled features (D float32 per window).
    - ``evaluate``: fine-tuning streams its batches (model, gradients, AdamW and the selected state: 20 bytes a
      parameter); the frozen protocols hold their features per window (the pooled ones; for ``attentive`` and
      the ROI readouts also the R x D tokens, float16 as cached and float32 and float64 copies: 16 bytes a
      value); the FC baselines R (R - 1) / 2 values per window, float32 and the scaler's float64 copy.
    - ``capability``: forecasting, network identification, reconstruction and perturbation still hold their
      cohorts' windows as float32 (with one copy).
    - ``pretrain``: per rank :data:`PROCESS_MB`, the model and its EMA target with AdamW (24 bytes a parameter),
      a checkpoint's copy, and its workers; times ``processes``.

    Rounded up to the next 1,000 MB, at least 2,000."""
    if stage not in MEMORY_STAGES:
        raise ValueError(f"job_memory_mb: stage {stage!r}; one of {', '.join(MEMORY_STAGES)}")
    mb = 2**20
    params = 12 * depth * embed_dim**2 + n_rois * embed_dim            # blocks, and the positional table
    window_bytes = 4 * n_rois * window
    if stage == "features":
        total = PROCESS_MB + (4 * params + n_windows * (4 * embed_dim + 256)) / mb + STREAM_MB
    elif stage == "evaluate":
        tokens = 16 * n_rois * embed_dim                                 # a window's ROI tokens and their copies
        fc = n_rois * (n_rois - 1) // 2 * (4 + 8)
        per_window = {"finetune": 256, "linprobe": 12 * embed_dim, "closed_form": 12 * embed_dim,
                      "attentive": tokens + 12 * embed_dim, "fc_linear": fc, "fc_svm": fc}
        kept = per_window.get(protocol, max(per_window.values()) if protocol is None else tokens + 12 * embed_dim)
        total = PROCESS_MB + (20 * params + n_windows * kept) / mb + STREAM_MB
    elif stage == "capability":
        total = PROCESS_MB + (4 * params + 2 * n_windows * window_bytes) / mb
    else:
        per_rank = PROCESS_MB + num_workers * WORKER_MB + 2 * 28 * params / mb
        total = per_rank * max(1, processes)
    return int(max(2000, math.ceil(total / 1000) * 1000))
