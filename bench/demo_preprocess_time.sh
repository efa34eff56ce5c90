#!/usr/bin/env bash
# Wall time of the demo's preprocessing from a clean working directory: every job before pretraining (simulate ->
# parcellate -> align_tr -> splits -> scaling -> group_fc -> gradients -> shards), i.e.
#     snakemake --cores 2 --until shards gradients
# on a copy of config/ (so the checkout's results/ are left alone). Prints the wall time and the jobs run.
# Usage: bench/demo_preprocess_time.sh [CORES] [WORKDIR] [SNAKEMAKE ARGS...]   (defaults: 2 cores, a fresh
# temporary folder), e.g. ... 2 /tmp/w --config 'batching={default: 1, cohorts: {ukbsim: 2, adnisim: 2}}'.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CORES=${1:-2}
WORK=${2:-$(mktemp -d)}
shift $(($# < 2 ? $# : 2))
mkdir -p "$WORK/config"
cp -r "$REPO/config/." "$WORK/config/"
rm -rf "$WORK/results" "$WORK/logs" "$WORK/resources" "$WORK/.snakemake"
start=$(date +%s.%N)
snakemake --snakefile "$REPO/workflow/Snakefile" --directory "$WORK" --cores "$CORES" --until shards gradients "$@" \
  > "$WORK/snakemake.out" 2>&1 || { tail -40 "$WORK/snakemake.out"; exit 1; }
end=$(date +%s.%N)
jobs=$(grep -c "^localrule \|^rule " "$WORK/snakemake.out" || true)
runs=$(($(wc -l < "$WORK/config/samples.tsv") - 1))
printf "demo preprocessing (--until shards gradients, %s cores, %s runs): %.1f s wall, %s jobs; workdir %s\n" \
  "$CORES" "$runs" "$(echo "$end - $start" | bc)" "$jobs" "$WORK"
