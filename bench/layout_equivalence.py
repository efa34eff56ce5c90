"""Check that two demo runs, one from before the stage-named layout and one after, hold the same outputs.

    python bench/layout_equivalence.py OLD_REPO NEW_REPO [--weights OLD.pt NEW.pt ...]

OLD_REPO/NEW_REPO: checkouts where `snakemake --cores 2 all` ran (the old layout: results/timeseries,
results/qc/parcellate, results/aligned, results/group; the new: results/<stage>). Prints, per output, whether
the bytes are equal; with --weights, compares the module state dicts of checkpoint pairs tensor by tensor
(bitwise) and prints the largest absolute difference. Exit status 1 if anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

# old path prefix -> new path prefix (relative to the repository), and file renames within
MOVES = [("results/timeseries/", "results/parcellate/", ".parquet", ".parquet"),
         ("results/qc/parcellate/", "results/parcellate/", ".tsv", "_qc.tsv"),
         ("results/aligned/", "results/align_tr/", ".parquet", ".parquet"),
         ("results/group/splits.tsv", "results/splits/splits.tsv", "", ""),
         ("results/group/split_balance.tsv", "results/splits/balance.tsv", "", ""),
         ("results/group/scaling_stats.json", "results/scaling/scaling_stats.json", "", ""),
         ("results/group/group_fc", "results/group_fc/group_fc", "", ""),
         ("results/group/gradients", "results/gradients/gradients", "", ""),
         ("results/atlas/", "results/atlas/", "", ""),
         ("results/shards/", "results/shards/", "", ""),
         ("resources/demo/", "resources/demo/", "", "")]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_path(rel: str) -> str | None:
    for old, new, old_ext, new_ext in MOVES:
        if rel.startswith(old):
            out = new + rel[len(old):]
            if old_ext and out.endswith(old_ext):
                out = out[: -len(old_ext)] + new_ext
            return out
    return None


def compare_files(old_repo: Path, new_repo: Path) -> int:
    differ = 0
    counts = {"equal": 0, "differ": 0, "missing": 0}
    for old in sorted(p for root in ("results", "resources/demo") for p in (old_repo / root).rglob("*") if p.is_file()):
        rel = str(old.relative_to(old_repo))
        target = new_path(rel)
        if target is None:
            continue  # pretrain: compared by weights
        new = new_repo / target
        if not new.exists():
            counts["missing"] += 1
            print(f"missing {target} (old {rel})")
        elif sha(old) != sha(new):
            counts["differ"] += 1
            print(f"differ  {rel} -> {target}")
        else:
            counts["equal"] += 1
    differ = counts["differ"] + counts["missing"]
    print(f"files: {counts}")
    return differ


def compare_weights(old: Path, new: Path) -> int:
    import torch

    a, b = (torch.load(p, map_location="cpu", weights_only=True) for p in (old, new))
    worst, unequal, n = 0.0, 0, 0
    for module in ("encoder", "target_encoder", "predictor"):
        for key, value in a[module].items():
            n += 1
            other = b[module][key]
            if not torch.equal(value, other):
                unequal += 1
                worst = max(worst, float((value.double() - other.double()).abs().max()))
    print(f"weights {old} vs {new}: step {a['step']} vs {b['step']}, {unequal} of {n} tensors differ, "
          f"max |diff| {worst:.3g}")
    return unequal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old_repo", type=Path)
    parser.add_argument("new_repo", type=Path)
    parser.add_argument("--weights", nargs=2, action="append", default=[], metavar=("OLD", "NEW"))
    args = parser.parse_args()
    bad = compare_files(args.old_repo, args.new_repo)
    for old, new in args.weights:
        bad += compare_weights(Path(old), Path(new))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
