"""Subcommands of the bundled demo cohort: simulate-atlas, simulate-run, demo-sheets."""

from __future__ import annotations

import argparse
import logging

from brainjepa.cli.common import json_object, parent

log = logging.getLogger("brainjepa")


def _simulate_atlas(args: argparse.Namespace) -> None:
    from brainjepa.simulate import write_demo_atlas

    write_demo_atlas(args.root, args.seed)


def _simulate_run(args: argparse.Namespace) -> None:
    from brainjepa.errors import InputError
    from brainjepa.simulate import simulate_batch, simulate_one_run

    per_run = [f"--{name}" for name in ("bold", "mask", "subject", "session", "run", "phenotype")
               if getattr(args, name) is not None]
    if args.samples:
        if per_run or not args.phenotypes:
            raise InputError(f"--samples takes each run from the sheet; drop {', '.join(per_run)}" if per_run
                             else "--samples needs --phenotypes (the subjects' planted labels)")
        n = simulate_batch(args.samples, args.phenotypes, args.root, args.cohort, args.tr, args.n_volumes,
                           args.seed, args.runs)
        log.info("%d runs of %s simulated", n, args.cohort)
        return
    missing = [f"--{name}" for name in ("bold", "subject", "session", "run", "phenotype")
               if getattr(args, name) is None]
    if missing or args.runs or args.phenotypes:
        raise InputError(f"one run needs {', '.join(missing)}" if missing
                         else "--runs and --phenotypes go with --samples")
    simulate_one_run(args.root, args.bold, args.mask or "", args.cohort, args.tr, args.n_volumes, args.subject,
                     args.session, args.run, args.phenotype, args.seed)


def _demo_sheets(args: argparse.Namespace) -> None:
    from brainjepa.simulate import cohorts_from_spec, write_demo_sheets

    write_demo_sheets(args.samples, args.phenotypes, args.root, cohorts_from_spec(args.cohorts), args.seed)


def register(sub) -> None:
    """The demo's subcommands on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`): ``simulate-atlas`` (the
    synthetic atlas), ``simulate-run`` (simulated runs) and ``demo-sheets`` (the demo cohorts' sample and phenotype
    sheets)."""
    p = sub.add_parser("simulate-atlas", parents=[parent("seed")],
                       help="write the synthetic demo atlas (cortical + subcortical)")
    p.add_argument("--root", required=True)
    p.set_defaults(func=_simulate_atlas)

    p = sub.add_parser("simulate-run", parents=[parent("seed")],
                       help="write simulated demo runs: one (BOLD, sidecar, brain mask) or a sheet's (--samples)")
    p.add_argument("--root", required=True, help="demo root (holds the demo atlas)")
    p.add_argument("--cohort", required=True)
    p.add_argument("--tr", type=float, required=True, help="seconds")
    p.add_argument("--n-volumes", type=int, required=True)
    p.add_argument("--samples", help="a sample sheet: write its runs of --cohort (--runs, default all) that lie "
                   "under --root (BOLD + sidecar + mask, or time series), each subject's labels from --phenotypes")
    p.add_argument("--phenotypes", help="with --samples: the phenotypes sheet")
    p.add_argument("--runs", nargs="+", metavar="RUN_ID", help="with --samples: these runs (<cohort>/sub-..._run-..)")
    p.add_argument("--bold", help="one run: write the BOLD here")
    p.add_argument("--mask", help="one run: also write the brain mask here")
    p.add_argument("--subject")
    p.add_argument("--session")
    p.add_argument("--run")
    p.add_argument("--phenotype", type=json_object,
                   help='one run: JSON, e.g. {"age": 61.5, "sex": "F", "diagnosis": 0}')
    p.set_defaults(func=_simulate_run)

    p = sub.add_parser("demo-sheets", parents=[parent("seed")],
                       help="write samples.tsv and phenotypes.tsv of demo cohorts (see README: the demo)")
    p.add_argument("--samples", required=True)
    p.add_argument("--phenotypes", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--cohorts", type=json_object, required=True,
                   help='JSON {name: {tr, n_volumes, n_subjects, sessions, age, diagnosis, mask, timeseries}}')
    p.set_defaults(func=_demo_sheets)
