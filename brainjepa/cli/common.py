"""Options shared by several subcommands, declared once (argparse parent parsers), and argument types."""

from __future__ import annotations

import argparse
import json


def json_object(text: str) -> dict:
    """An argument holding a JSON object, e.g. ``{"age": "continuous"}``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def fractions(text: str) -> dict[str, float]:
    """``train,val,test`` fractions, e.g. ``0.6,0.2,0.2``."""
    try:
        train, val, test = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers train,val,test, got {text!r}") from None
    return {"train": train, "val": val, "test": test}


def parent(*options: str) -> argparse.ArgumentParser:
    """A parent parser with the named shared options (see SHARED)."""
    p = argparse.ArgumentParser(add_help=False)
    for name in options:
        flags, kwargs = SHARED[name]
        p.add_argument(*flags, **kwargs)
    return p


SHARED: dict[str, tuple[tuple[str, ...], dict]] = {
    "splits": (("--splits",), {"required": True, "help": "the split table (splits.tsv)"}),
    "runs_root": (("--runs-root",), {"required": True,
                                     "help": "folder of <cohort>/<stem>.parquet: the align_tr stage's outputs"}),
    "phenotypes": (("--phenotypes",), {"required": True, "help": "phenotypes.tsv"}),
    "label_types": (("--label-types",), {"type": json_object, "required": True,
                                         "help": 'JSON label declarations, e.g. {"age": "continuous"}'}),
    "labels": (("--labels",), {"required": True, "help": "the atlas label table (ROI order and names)"}),
    "out": (("--out",), {"required": True, "help": "output file"}),
    "seed": (("--seed",), {"type": int, "default": 0}),
}
