"""Subcommand of the sample sheets: validate."""

from __future__ import annotations

import argparse


def _validate(args: argparse.Namespace) -> None:
    from brainjepa.sheets import validate_sheets

    print(validate_sheets(args.samples, args.phenotypes))


def register(sub) -> None:
    p = sub.add_parser("validate", help="validate the sample sheets")
    p.add_argument("--samples", required=True)
    p.add_argument("--phenotypes")
    p.set_defaults(func=_validate)
