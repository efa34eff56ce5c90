"""Network identification and in-silico perturbation on the finished demo (results/, read only), every job timed.

Jobs: ``network-id`` for the jepa, mae and random encoders (embedding and attention features) and the raw
baseline, on ukbsim and on adnisim, seeds 0 and 1; ``perturb`` diagnosis 0 -> 1 on adnisim for jepa, mae and
random, seeds 0 and 1, each with its figure. Every job is its own process (imports included in its wall time),
run under ``flock /tmp/brainjepa-timing.lock`` so timings do not overlap with other measurements, on the threads
given (2 by default: the demo machine). Writes ``<out>/<capability>/<cohort>/<method>/seed<k>.json`` (and the
perturbation tables and figures) and ``<out>/summary.tsv`` (one row per job: headline metrics and wall seconds).

    python bench/experiments/networks_demo.py [--results results] [--out /tmp/cap/demo] [--threads 2]
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

LOCK = "/tmp/brainjepa-timing.lock"
ENCODERS = ("jepa", "mae", "random")


def encoder_specs(results: Path) -> dict[str, dict]:
    labels = str(results / "atlas" / "atlas_space-MNI152NLin6Asym_labels.tsv")
    return {"jepa": {"kind": "checkpoint", "path": str(results / "pretrain" / "brainjepa_tiny" / "final.pt")},
            "mae": {"kind": "checkpoint", "path": str(results / "pretrain" / "mae_tiny" / "final.pt")},
            "random": {"kind": "random", "config": "config/pretrain.yaml",
                       "gradients": str(results / "gradients" / "gradients.tsv"), "labels": labels}}


def jobs(results: Path, out: Path, threads: int) -> list[tuple[str, list[str], Path]]:
    """(name, the command's argv after ``brainjepa``, its JSON) of every job."""
    labels = str(results / "atlas" / "atlas_space-MNI152NLin6Asym_labels.tsv")
    specs = encoder_specs(results)
    out_jobs = []
    for cohort in ("ukbsim", "adnisim"):
        methods = [(f"{e}_{f}", f, specs[e]) for e in ENCODERS for f in ("embedding", "attention")]
        for method, features, spec in [*methods, ("raw", "raw", None)]:
            for seed in (0, 1):
                path = out / "network_id" / cohort / method / f"seed{seed}.json"
                argv = ["network-id", "--features", features, "--method", method, "--seed", str(seed),
                        "--shards", str(results / "shards"), "--cohorts", cohort, "--labels", labels,
                        "--out", str(path), "--settings", json.dumps({"threads": threads})]
                out_jobs.append((f"network_id/{cohort}/{method}/seed{seed}", argv + (
                    ["--encoder", json.dumps(spec)] if spec else []), path))
    settings = {"label": "diagnosis", "source": "0", "target": "1", "threads": threads}
    for encoder in ENCODERS:
        for seed in (0, 1):
            path = out / "perturbation" / "adnisim" / encoder / f"seed{seed}.json"
            argv = ["perturbation", "--method", encoder, "--seed", str(seed), "--shards", str(results / "shards"),
                    "--cohorts", "adnisim", "--labels", labels, "--out", str(path), "--encoder",
                    json.dumps(specs[encoder]), "--settings", json.dumps(settings)]
            out_jobs.append((f"perturbation/adnisim/{encoder}/seed{seed}", argv, path))
    return out_jobs


def run_job(argv: list[str]) -> None:
    """One command in this process (brainjepa.cli.capabilities.register, as ``brainjepa`` will), then its wall time."""
    import logging

    from brainjepa.cli.capabilities import register

    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(prog="brainjepa")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)
    print(f"WALL {time.perf_counter() - START:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default="/tmp/cap/demo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--job", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        run_job(args.job)
        return
    import pandas as pd

    results, out = Path(args.results), Path(args.out)
    rows = []
    for name, argv, path in jobs(results, out, args.threads):
        done = subprocess.run(["flock", LOCK, sys.executable, __file__, "--job", *argv], capture_output=True,
                              text=True)
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        wall = float(done.stdout.strip().splitlines()[-1].split()[1])
        record = json.loads(path.read_text())
        row = {"job": name, "wall_s": wall, "seconds": record["seconds"]}
        if record["kind"] == "network_id":
            row.update(accuracy=record["test"]["accuracy"], balanced_accuracy=record["test"]["balanced_accuracy"],
                       C=record["selected"]["C"], position_only=(record["details"]["position_only"] or {}).get(
                           "accuracy"))
        else:
            d = record["details"]
            row.update(closed_share=record["test"]["closed_share"],
                       projected_share=record["test"]["projected_share"],
                       control_closed_share=record["test"]["control_closed_share"],
                       top=d["top_network"], rank_Default=record["test"]["rank_Default"],
                       ranking=",".join(d["ranking"]), control_ranking=",".join(d["control_ranking"]))
            figure = path.with_suffix(".png")
            subprocess.run([sys.executable, __file__, "--job", "figure-perturbation", "--rois",
                            str(path.with_suffix("")) + ".rois.tsv", "--labels",
                            str(results / "atlas" / "atlas_space-MNI152NLin6Asym_labels.tsv"), "--atlas",
                            str(results / "atlas" / "atlas_space-MNI152NLin6Asym_dseg.nii.gz"), "--out", str(figure),
                            "--title", f"{name}: diagnosis 0 -> 1"],
                           check=True, capture_output=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    pd.DataFrame(rows).to_csv(out / "summary.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main()
