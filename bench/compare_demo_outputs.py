"""Compare two demo runs' outputs (a refactor's before and after): which deterministic outputs are byte-equal, and
where the evaluation metrics differ.

Usage: python bench/compare_demo_outputs.py BEFORE_DIR AFTER_DIR
(each a checkout or clone where `snakemake --cores 2 all` ran, i.e. holding results/).

Reports:
- the shard sets: every shard's sha256 in each split's manifest.json, and the manifests' other keys;
- the group outputs (splits, scaling statistics, group FC, gradients), by sha256 of the file;
- results/metrics.tsv: rows matched on (task, method, seed); for each numeric column, how many rows differ and the
  largest absolute difference; rows only in one run;
- the model bundles' weights (model.safetensors), by sha256.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_shards(before: Path, after: Path) -> list[str]:
    lines = []
    for manifest in sorted((before / "results" / "shards").glob("*/manifest.json")):
        other = after / manifest.relative_to(before)
        if not other.exists():
            lines.append(f"shards {manifest.parent.name}: only before")
            continue
        a, b = json.loads(manifest.read_text()), json.loads(other.read_text())
        sha_a = [e["sha256"] for entries in a["splits"].values() for e in entries]
        sha_b = [e["sha256"] for entries in b["splits"].values() for e in entries]
        keys = sorted(k for k in set(a) | set(b) if k not in ("splits", "brainjepa_version") and a.get(k) != b.get(k))
        differ = sum(x != y for x, y in zip(sha_a, sha_b)) + abs(len(sha_a) - len(sha_b))
        lines.append(f"shards {manifest.parent.name}: {len(sha_a)} shards, "
                     + ("sha256 equal" if not differ else f"sha256 DIFFER ({differ})")
                     + (f"; manifest keys differ: {keys}" if keys else ""))
    return lines


def compare_files(before: Path, after: Path, patterns: list[str]) -> list[str]:
    lines = []
    for pattern in patterns:
        for path in sorted(before.glob(pattern)):
            other = after / path.relative_to(before)
            state = "only before" if not other.exists() else ("equal" if sha256(path) == sha256(other) else "DIFFER")
            lines.append(f"{path.relative_to(before)}: {state}")
    return lines


def compare_metrics(before: Path, after: Path) -> list[str]:
    a = pd.read_csv(before / "results" / "metrics.tsv", sep="\t")
    b = pd.read_csv(after / "results" / "metrics.tsv", sep="\t")
    key = ["task", "method", "seed"]
    merged = a.merge(b, on=key, how="outer", suffixes=("_before", "_after"), indicator=True)
    lines = [f"metrics.tsv: {len(a)} rows before, {len(b)} after, {int((merged['_merge'] == 'both').sum())} matched; "
             f"only before: {int((merged['_merge'] == 'left_only').sum())}, only after: "
             f"{int((merged['_merge'] == 'right_only').sum())}"]
    both = merged[merged["_merge"] == "both"]
    for column in a.columns:
        if column in key or column not in b.columns or not pd.api.types.is_numeric_dtype(a[column]):
            continue
        x, y = both[f"{column}_before"], both[f"{column}_after"]
        differ = ~((x == y) | (x.isna() & y.isna()))
        if differ.any():
            largest = float((x - y).abs().max())
            lines.append(f"  {column}: {int(differ.sum())} rows differ, largest |diff| {largest:.3g}")
    if len(lines) == 1:
        lines.append("  every numeric column equal in every matched row")
    return lines


def main(before: str, after: str) -> None:
    a, b = Path(before), Path(after)
    for line in (compare_shards(a, b)
                 + compare_files(a, b, ["results/splits/*.tsv", "results/scaling/scaling_stats.json",
                                        "results/group_fc/group_fc.npy", "results/gradients/gradients.tsv",
                                        "results/models/*/model.safetensors", "results/pretrain/*/final.pt"])
                 + compare_metrics(a, b)):
        print(line)


if __name__ == "__main__":
    main(*sys.argv[1:3])
