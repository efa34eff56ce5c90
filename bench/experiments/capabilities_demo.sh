#!/usr/bin/env bash
# BrainLM's forecasting and reconstruction on the finished demo (results/, read only): every method x seed 0, 1.
# Records in ${OUT:-/tmp/cap/forecasting}/<capability>/<method>/seed<k>.json, wall times (s, whole command) in times.tsv.
# Each job holds /tmp/brainjepa-timing.lock so that timings on the shared machine are not contended.
set -euo pipefail
OUT=${OUT:-/tmp/cap/forecasting}
THREADS=${THREADS:-1}
SETTINGS="{\"threads\": $THREADS}"
RANDOM_SPEC='{"kind": "random", "config": "config/pretrain.yaml", "gradients": "results/gradients/gradients.tsv", "labels": "results/atlas/atlas_space-MNI152NLin6Asym_labels.tsv"}'
declare -A SPECS=(
  [jepa_finetune]='{"kind": "checkpoint", "path": "results/pretrain/brainjepa_tiny/final.pt"}'
  [mae_finetune]='{"kind": "checkpoint", "path": "results/pretrain/mae_tiny/final.pt"}'
  [random_finetune]="$RANDOM_SPEC"
)
mkdir -p "$OUT"
printf 'capability\tmethod\tseed\tseconds\n' > "$OUT/times.tsv"
job() {  # capability method seed command...
  local cap=$1 method=$2 seed=$3; shift 3
  mkdir -p "$OUT/$cap/$method"
  # the clock starts once the lock is held: waiting for other timings is not counted
  flock /tmp/brainjepa-timing.lock bash -c 't0=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $t0" | bc' _ \
    "$@" --method "$method" --seed "$seed" --shards results/shards --cohorts ukbsim --settings "$SETTINGS" \
    --out "$OUT/$cap/$method/seed$seed.json" 2> "$OUT/$cap/$method/seed$seed.log" \
    | xargs printf '%s\t%s\t%s\t%.1f\n' "$cap" "$method" "$seed" >> "$OUT/times.tsv"
}
for seed in 0 1; do
  for method in jepa_finetune mae_finetune random_finetune; do
    job forecast "$method" "$seed" python -m brainjepa.cli forecast --encoder "${SPECS[$method]}"
  done
  for method in persistence ar lstm; do
    job forecast "$method" "$seed" python -m brainjepa.cli forecast
  done
  job reconstruction mae "$seed" python -m brainjepa.cli reconstruction --encoder "${SPECS[mae_finetune]}"
done
cat "$OUT/times.tsv"
