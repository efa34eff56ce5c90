"""Subcommands of self-supervised pretraining: pretrain, and launch (how the training and evaluation commands
start: in place, under torchrun on one node, or on each node of a Slurm job)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys

log = logging.getLogger("brainjepa")


def _pretrain(args: argparse.Namespace) -> None:
    from brainjepa.train.config import load_config
    from brainjepa.train.pretrain import pretrain

    path = pretrain(load_config(args.config, args.set), restart=args.restart)
    log.info("checkpoint: %s", path)


def register(sub) -> None:
    """The training subcommands on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`): ``pretrain``, and
    ``launch`` and ``check-distributed`` (:func:`register_launch`)."""
    p = sub.add_parser("pretrain", help="Brain-JEPA self-supervised pretraining (resumes from latest.pt)")
    p.add_argument("--config", help="training config YAML (sections model, data, mask, optim, run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set optim.epochs=10 --set model.size=small (repeatable)")
    p.add_argument("--restart", action="store_true",
                   help="train from step 0 even if run.out_dir holds this run, finished (the old folder is moved "
                        "aside)")
    p.set_defaults(func=_pretrain)
    register_launch(sub)


def _slurm_hostnames(nodelist: str) -> list[str]:
    """Slurm's host list expanded by ``scontrol show hostnames`` when it is installed, else in Python."""
    from brainjepa.train.launch import expand_nodelist

    if shutil.which("scontrol"):
        result = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                timeout=30)
        if result.returncode == 0 and result.stdout.split():
            return result.stdout.split()
    return expand_nodelist(nodelist)


def _launch(args: argparse.Namespace) -> None:
    from brainjepa.errors import InputError
    from brainjepa.train.launch import launch_argv, require_slurm

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.check:  # the batch shell of a job on several nodes, before its srun
        if args.nodes > 1:
            require_slurm(args.nodes, os.environ, args.section)
            if not shutil.which("srun"):
                raise InputError(f"{args.section}.nodes is {args.nodes}, but srun is not on PATH here")
        return
    if not command:
        raise InputError("nothing to launch: give the brainjepa command after --, e.g. launch -- pretrain ...")
    argv = launch_argv(command, args.nodes, args.processes, os.environ, section=args.section,
                       python=sys.executable, hostnames=_slurm_hostnames)
    log.info("launch: %s", " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # signals (Slurm's SIGTERM) then reach torchrun or the command itself


def _check_distributed(args: argparse.Namespace) -> None:
    import json

    from brainjepa.train.runtime import check_distributed

    print(json.dumps(check_distributed(args.device, args.expect_world_size)), flush=True)


def register_launch(sub) -> None:
    """The ``launch`` subcommand (a training or evaluation command started in place, under torchrun on one node, or
    under torchrun on each node of a Slurm job) and ``check-distributed`` (a process group's smoke test) on ``sub``."""
    from brainjepa.train.launch import SECTIONS

    p = sub.add_parser("launch", help="start a training or evaluation command with its layout: in place, torchrun "
                                      "on one node, or torchrun on each node of a Slurm job (one launcher per node)")
    p.add_argument("--section", choices=SECTIONS, default="pretrain",
                   help="the workflow config section of the layout, named in errors (default: pretrain)")
    p.add_argument("--nodes", type=int, default=1, help="machines (several: under Slurm, one launcher per node)")
    p.add_argument("--processes", type=int, default=1, help="processes per node (one GPU each on GPU nodes)")
    p.add_argument("--check", action="store_true",
                   help="only check that this job can start its nodes (under Slurm, srun found), and exit")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the brainjepa subcommand and its options, e.g. -- pretrain --config config/pretrain.yaml")
    p.set_defaults(func=_launch)
    p = sub.add_parser("check-distributed",
                       help="join the process group and all-reduce a number (a job's smoke test: brainjepa launch "
                            "--nodes N --processes P -- check-distributed); every rank prints a JSON line")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="cpu: Gloo; cuda: NCCL, one GPU per process; auto: cuda when a GPU is visible")
    p.add_argument("--expect-world-size", type=int, help="fail unless the job has this many processes")
    p.set_defaults(func=_check_distributed)
