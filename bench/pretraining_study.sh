#!/usr/bin/env bash
# The pretraining study on a simulated pool larger than the demo: the demo's config and model on a copy of config/
# whose sheets are rewritten for UKBSIM subjects of ukbsim (pre-parcellated, cheap) beside the demo's adnisim, no
# capabilities, and study.config set to STUDY (default bench/study/objectives_pool.yaml). Runs the workflow up to the
# study's outputs (preprocessing, shards, the study itself); the checkout's results/ are left alone. Resumable: run
# it again with the same WORKDIR to continue. Prints the study's table.
# Usage: bench/pretraining_study.sh [UKBSIM_SUBJECTS] [STUDY] [WORKDIR]   (defaults 1500, the pool study, a fresh
# temporary folder).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
UKB=${1:-1500}
STUDY=${2:-$REPO/bench/study/objectives_pool.yaml}
WORK=${3:-$(mktemp -d)}
mkdir -p "$WORK/config/study"
if [ ! -e "$WORK/config/samples.tsv" ]; then
  cp -r "$REPO/config/." "$WORK/config/"
  (cd "$WORK" && brainjepa demo-sheets --samples config/samples.tsv --phenotypes config/phenotypes.tsv \
    --root resources/demo --cohorts "{\"ukbsim\": {\"tr\": 0.735, \"n_volumes\": 490, \"n_subjects\": $UKB,
      \"age\": [45, 80], \"timeseries\": true}, \"adnisim\": {\"tr\": 2.0, \"n_volumes\": 200, \"n_subjects\": 110,
      \"age\": [55, 90], \"diagnosis\": true, \"mask\": true}}")
fi
cp "$STUDY" "$WORK/config/study/study.yaml"
NAME=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$STUDY")
# The workflow config is taken from the checkout at every call, so a resumed study runs with the code's config keys.
python - "$WORK" "$REPO" <<'PY'
import sys
import yaml
work, repo = sys.argv[1:3]
cfg = yaml.safe_load(open(f"{repo}/config/config.yaml"))
cfg["evaluate"]["capabilities"] = {}
cfg["study"] = {"config": "config/study/study.yaml", "threads": 2}
yaml.safe_dump(cfg, open(f"{work}/config/config.yaml", "w"), sort_keys=False)
PY
start=$(date +%s)
snakemake --snakefile "$REPO/workflow/Snakefile" --directory "$WORK" --cores 2 "results/study/$NAME/study.md" \
  > "$WORK/snakemake.out" 2>&1 || { tail -40 "$WORK/snakemake.out"; exit 1; }
echo "ukbsim $UKB subjects, study $NAME: $(( $(date +%s) - start )) s wall (this call); workdir $WORK"
cat "$WORK/results/study/$NAME/study.md"
