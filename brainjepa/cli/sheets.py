"""Subcommand of the sample sheets: validate."""

from __future__ import annotations

import argparse
import sys


def _validate(args: argparse.Namespace) -> None:
    from brainjepa.sheets import validate_sheets

    labels, split_config = None, None
    if args.config:
        import yaml

        from brainjepa.errors import InputError

        try:
            config = yaml.safe_load(open(args.config)) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{args.config}: cannot read the workflow config ({exc})") from None
        labels, split_config = config.get("labels"), config.get("splits")
        args.phenotypes = args.phenotypes or config.get("phenotypes")
        args.samples = args.samples or config.get("samples")
    if not args.samples:
        from brainjepa.errors import InputError

        raise InputError("validate: give --samples, or --config naming a workflow config with a samples sheet")
    summary, warnings = validate_sheets(args.samples, args.phenotypes, labels, split_config)
    for warning in warnings:
        print(f"brainjepa validate: warning: {warning}", file=sys.stderr)
    print(summary)


def register(sub) -> None:
    p = sub.add_parser("validate", help="validate the sample sheets (as the workflow does before any job)")
    p.add_argument("--samples", help="the sample sheet (default: the --config's samples)")
    p.add_argument("--phenotypes", help="the phenotypes sheet (default: the --config's phenotypes)")
    p.add_argument("--config", help="the workflow config: its sheets, label types and splits are checked")
    p.set_defaults(func=_validate)
