"""A real single-node Slurm for the cluster-profile test: Debian's munge and slurm-wlm, started here as root.

``LocalSlurm`` writes its own slurm.conf (and gres.conf with fake GPU devices: character devices Slurm can
bind, so that GPU requests schedule on a machine without GPUs), starts munged, slurmctld and slurmd, waits for
the node, and stops exactly the daemons it started (by the PIDs it recorded). No accounting database: the
executor plugin then checks job status with squeue (MinJobAge keeps finished jobs visible for it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("munge", "slurm-wlm", "slurmctld", "slurmd", "slurm-client")
PARTITION = "cpu"


def install() -> str | None:
    """Install the Debian packages when missing (root and apt needed). Returns why not, or None when ready."""
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "Slurm is not installed and this is not a root Debian machine (apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    for cmd in (["apt-get", "update", "-qq"], install_cmd):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
        if result.returncode:
            return f"{' '.join(cmd)} failed: {result.stderr[-2000:]}"
    return None


class LocalSlurm:
    """munged + slurmctld + slurmd on this host; ``with LocalSlurm(gpus=2) as cluster: ...``."""

    def __init__(self, gpus: int = 2) -> None:
        self.gpus = gpus
        self.host = socket.gethostname().split(".")[0]
        self.pids: dict[str, int] = {}
        self.logs = {name: Path(f"/var/log/slurm/{name}.log") for name in ("slurmctld", "slurmd")}

    def _write_config(self) -> None:
        for folder in ("/etc/slurm", "/var/lib/slurm/slurmctld", "/var/lib/slurm/slurmd", "/var/log/slurm",
                       "/run/slurm", "/run/munge"):
            Path(folder).mkdir(parents=True, exist_ok=True)
        for folder in ("/var/lib/slurm", "/var/log/slurm", "/run/slurm"):
            shutil.chown(folder, "slurm", "slurm")
        for sub in Path("/var/lib/slurm").iterdir():
            shutil.chown(sub, "slurm", "slurm")
        memory = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.8)
        gres = ""
        if self.gpus:
            for i in range(self.gpus):
                if not Path(f"/dev/fakegpu{i}").exists():
                    os.mknod(f"/dev/fakegpu{i}", 0o666 | 0o020000, os.makedev(1, 3))  # like /dev/null
            Path("/etc/slurm/gres.conf").write_text(
                f"NodeName={self.host} Name=gpu Type=fake File=/dev/fakegpu[0-{self.gpus - 1}]\n")
            gres = f" Gres=gpu:fake:{self.gpus}"
        Path("/etc/slurm/slurm.conf").write_text(f"""ClusterName=brainjepa-test
SlurmctldHost={self.host}
AuthType=auth/munge
SlurmUser=slurm
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile={self.logs['slurmctld']}
SlurmdLogFile={self.logs['slurmd']}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
NodeName={self.host} CPUs={os.cpu_count()} RealMemory={memory}{gres} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, name: str, cmd: list[str], pidfile: str) -> None:
        Path(pidfile).unlink(missing_ok=True)
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        for _ in range(100):
            if Path(pidfile).exists() and Path(pidfile).read_text().strip():
                self.pids[name] = int(Path(pidfile).read_text())
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start (no {pidfile})\n{self.diagnostics()}")

    def __enter__(self) -> "LocalSlurm":
        self._write_config()
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
        shutil.chown("/run/munge", "munge", "munge")
        self._start("munged", ["runuser", "-u", "munge", "--", "munged"], "/run/munge/munged.pid")
        self._start("slurmctld", ["slurmctld"], "/run/slurm/slurmctld.pid")
        self._start("slurmd", ["slurmd"], "/run/slurm/slurmd.pid")
        for _ in range(120):
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the node did not come up (sinfo: {state!r})\n{self.diagnostics()}")

    def __exit__(self, *exc) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        time.sleep(1)

    def diagnostics(self) -> str:
        """The scheduler's logs (tail) and queue, for a failure message."""
        parts = []
        for path in self.logs.values():
            if path.exists():
                parts.append(f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        parts.append(subprocess.run(["squeue", "-a"], capture_output=True, text=True).stdout)
        return "\n".join(parts)

    def job(self, job_id: str) -> str:
        """``scontrol show job`` of a job (finished ones stay for MinJobAge)."""
        return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
