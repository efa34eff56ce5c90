#!/usr/bin/env bash
# CPU cost of SIGReg per optimizer step: the demo's JEPA config trained for EPOCHS epochs on a pool's pretraining
# shards (bench/pretraining_study.sh's WORKDIR), once without a regulariser and once per SIGReg slice count.
# Prints the seconds per step from each run's log.csv (elapsed_s at the last step / steps). Run on an idle machine.
# Usage: bench/sigreg_cost.sh WORKDIR [EPOCHS] [SLICES...]   (defaults: 1 epoch; 1024 256 64)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$1; EPOCHS=${2:-1}; shift $(( $# >= 2 ? 2 : 1 )); SLICES=${*:-1024 256 64}
OUT=$(mktemp -d)
run() {  # name, overrides...
  local name=$1; shift
  (cd "$WORK" && brainjepa pretrain --config "$REPO/config/pretrain.yaml" --set run.out_dir="$OUT/$name" \
     --set optim.epochs="$EPOCHS" --set run.progress=false --set run.monitor_every=100000 "$@" > "$OUT/$name.log" 2>&1)
  python - "$OUT/$name/log.csv" "$name" <<'PY'
import sys
import pandas as pd
log = pd.read_csv(sys.argv[1])
last = log.iloc[-1]
print(f"{sys.argv[2]:>14}: {int(last['step'])} steps, {last['elapsed_s']:.1f} s, {last['elapsed_s'] / last['step']:.3f} s/step")
PY
}
run none
for m in $SLICES; do
  run "sigreg_$m" --set optim.regularizer=sigreg --set optim.regularizer_weight=0.09 --set optim.sigreg_slices="$m"
done
rm -rf "$OUT"
