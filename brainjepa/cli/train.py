"""Subcommand of self-supervised pretraining: pretrain."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("brainjepa")


def _pretrain(args: argparse.Namespace) -> None:
    from brainjepa.train.config import load_config
    from brainjepa.train.pretrain import pretrain

    path = pretrain(load_config(args.config, args.set), restart=args.restart)
    log.info("checkpoint: %s", path)


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="Brain-JEPA self-supervised pretraining (resumes from latest.pt)")
    p.add_argument("--config", help="training config YAML (sections model, data, mask, optim, run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set optim.epochs=10 --set model.size=small (repeatable)")
    p.add_argument("--restart", action="store_true",
                   help="train from step 0 even if run.out_dir holds this run, finished (the old folder is moved "
                        "aside)")
    p.set_defaults(func=_pretrain)
