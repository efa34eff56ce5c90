"""Subcommands that inspect inputs and outputs: validate (the sample sheets), provenance (of an output)."""

from __future__ import annotations

import argparse
import sys


def _validate(args: argparse.Namespace) -> None:
    from brainjepa.validate import validate_sheets

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


def _provenance(args: argparse.Namespace) -> None:
    import json

    from brainjepa.errors import InputError
    from brainjepa.provenance import read_provenance

    record, problems = read_provenance(args.path)
    print(json.dumps(record, indent=1, sort_keys=True, default=str))
    for problem in problems:
        print(f"brainjepa provenance: {problem}", file=sys.stderr)
    if problems and args.check:
        raise InputError(f"{args.path}: {len(problems)} of its recorded files changed (listed above)")


def register(sub) -> None:
    """The sheet subcommands on ``sub`` (the subparsers of :func:`brainjepa.cli.build_parser`): ``validate`` (the sample
    sheets, as the workflow checks them) and ``provenance`` (an output's record, ``--check``: whether it still
    holds)."""
    p = sub.add_parser("validate", help="validate the sample sheets (as the workflow does before any job)")
    p.add_argument("--samples", help="the sample sheet (default: the --config's samples)")
    p.add_argument("--phenotypes", help="the phenotypes sheet (default: the --config's phenotypes)")
    p.add_argument("--config", help="the workflow config: its sheets, label types and splits are checked")
    p.set_defaults(func=_validate)

    p = sub.add_parser("provenance", help="how an output was made: version, settings (hash) and input checksums")
    p.add_argument("path", help="an output: a time series .parquet, a checkpoint, or any file with a sidecar")
    p.add_argument("--check", action="store_true", help="exit 1 when the output or an input changed since")
    p.set_defaults(func=_provenance)
