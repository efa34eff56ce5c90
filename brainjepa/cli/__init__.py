"""The ``brainjepa`` command line: one subcommand per pipeline stage, each parsing its options and calling one
library function (the Snakemake rules run these same commands).

Subcommands are registered per stage group (:data:`GROUPS`: :mod:`.preprocess`, :mod:`.group`, :mod:`.data`,
:mod:`.train`, :mod:`.evaluate`, :mod:`.capabilities`, ...). Error policy: bad input, whatever exception the library
raises for it, reaches the user as one line (``brainjepa <command>: error: ...``) and exit status 1; ``-v`` adds
the traceback. An interrupt exits with status 130; pretraining stopped by SIGTERM/SIGINT after writing its
checkpoint exits with status 75.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from brainjepa import __version__
from brainjepa.errors import InputError, Preempted, TrainingError

GROUPS = ("preprocess", "group", "data", "train", "evaluate", "capabilities", "figures", "models", "demo", "sheets",
          "study")


def build_parser() -> argparse.ArgumentParser:
    """The ``brainjepa`` argument parser: ``--version``, ``-v`` and the subcommands that each module of :data:`GROUPS`
    registers."""
    import importlib

    parser = argparse.ArgumentParser(prog="brainjepa", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"brainjepa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"brainjepa.cli.{group}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The exit status of one command line (``argv``; None: ``sys.argv[1:]``) run under the error policy of the module
    docstring: 0, 1 on an error, 130 on an interrupt, 75 when pretraining stopped after its checkpoint. Provenance
    sidecars of the outputs are removed before the command runs and written after it succeeds."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from brainjepa import provenance

    try:
        provenance.remove_sidecars(args)
        args.func(args)
        provenance.write_sidecars(args)
    except Preempted as exc:  # a signal stopped training after a checkpoint: the job may be requeued
        print(f"brainjepa {args.command}: stopped: {_one_line(exc)}", file=sys.stderr)
        return Preempted.exit_code
    except KeyboardInterrupt:
        print(f"brainjepa {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the error policy: one line per failure, traceback with -v
        if args.verbose:
            traceback.print_exc()
        print(f"brainjepa {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    """The message of an error on one line; errors that are not ours also name their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (InputError, TrainingError)):
        return text
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: no such file"
    return f"{text} ({type(exc).__name__}; rerun with -v for the traceback)"
