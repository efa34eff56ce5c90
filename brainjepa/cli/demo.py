"""Subcommands of the bundled demo cohort: simulate-atlas, simulate-run, demo-sheets."""

from __future__ import annotations

import argparse

from brainjepa.cli.common import json_object, parent


def _simulate_atlas(args: argparse.Namespace) -> None:
    from brainjepa.simulate import write_demo_atlas

    write_demo_atlas(args.root, args.seed)


def _simulate_run(args: argparse.Namespace) -> None:
    from brainjepa.simulate import simulate_one_run

    simulate_one_run(args.root, args.bold, args.mask or "", args.cohort, args.tr, args.n_volumes, args.subject,
                     args.session, args.run, args.phenotype, args.seed)


def _demo_sheets(args: argparse.Namespace) -> None:
    from brainjepa.simulate import cohorts_from_spec, write_demo_sheets

    write_demo_sheets(args.samples, args.phenotypes, args.root, cohorts_from_spec(args.cohorts), args.seed)


def register(sub) -> None:
    p = sub.add_parser("simulate-atlas", parents=[parent("seed")],
                       help="write the synthetic demo atlas (cortical + subcortical)")
    p.add_argument("--root", required=True)
    p.set_defaults(func=_simulate_atlas)

    p = sub.add_parser("simulate-run", parents=[parent("seed")],
                       help="write one simulated demo run (BOLD, sidecar, brain mask)")
    p.add_argument("--root", required=True, help="demo root (holds the demo atlas)")
    p.add_argument("--bold", required=True)
    p.add_argument("--mask", help="also write the brain mask here")
    p.add_argument("--cohort", required=True)
    p.add_argument("--tr", type=float, required=True, help="seconds")
    p.add_argument("--n-volumes", type=int, required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--session", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--phenotype", type=json_object, required=True,
                   help='JSON, e.g. {"age": 61.5, "sex": "F", "diagnosis": 0}')
    p.set_defaults(func=_simulate_run)

    p = sub.add_parser("demo-sheets", parents=[parent("seed")],
                       help="write samples.tsv and phenotypes.tsv of demo cohorts (see README: the demo)")
    p.add_argument("--samples", required=True)
    p.add_argument("--phenotypes", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--cohorts", type=json_object, required=True,
                   help='JSON {name: {tr, n_volumes, n_subjects, sessions, age, diagnosis, mask}}')
    p.set_defaults(func=_demo_sheets)
