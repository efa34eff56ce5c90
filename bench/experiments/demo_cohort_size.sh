#!/usr/bin/env bash
# Does the demo's downstream evaluation improve with more subjects? The demo DAG up to the age, sex and diagnosis
# tables on a copy of config/ whose sheets are rewritten for larger cohorts (brainjepa demo-sheets, the README's
# command with other n_subjects), pretraining epochs scaled so that the number of pretraining steps stays the
# demo's, and no capabilities. The checkout's results/ are left alone. Prints the three tables' rows.
# Usage: bench/experiments/demo_cohort_size.sh [UKBSIM_SUBJECTS] [ADNISIM_SUBJECTS] [WORKDIR]   (defaults 1000 220, a fresh
# temporary folder). Measured with 1000 / 220 on 2 cores: about 7 minutes.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
UKB=${1:-1000}
ADNI=${2:-220}
WORK=${3:-$(mktemp -d)}
mkdir -p "$WORK/config"
cp -r "$REPO/config/." "$WORK/config/"
rm -rf "$WORK/results" "$WORK/logs" "$WORK/resources" "$WORK/.snakemake"
cd "$WORK"
brainjepa demo-sheets --samples config/samples.tsv --phenotypes config/phenotypes.tsv --root resources/demo \
  --cohorts "{\"ukbsim\": {\"tr\": 0.735, \"n_volumes\": 490, \"n_subjects\": $UKB, \"age\": [45, 80], \"timeseries\": true},
              \"adnisim\": {\"tr\": 2.0, \"n_volumes\": 200, \"n_subjects\": $ADNI, \"age\": [55, 90], \"diagnosis\": true,
                            \"mask\": true}}"
python - "$UKB" <<'EOF'
import sys
import yaml
scale = int(sys.argv[1]) / 510                      # the demo's ukbsim: 510 subjects
for name in ("pretrain.yaml", "pretrain_mae.yaml"):
    path = f"config/{name}"
    cfg = yaml.safe_load(open(path))
    cfg["optim"]["epochs"] = max(1, round(cfg["optim"]["epochs"] / scale))
    yaml.safe_dump(cfg, open(path, "w"), sort_keys=False)
cfg = yaml.safe_load(open("config/config.yaml"))
cfg["evaluate"]["capabilities"] = {}
yaml.safe_dump(cfg, open("config/config.yaml", "w"), sort_keys=False)
EOF
start=$(date +%s.%N)
snakemake --snakefile "$REPO/workflow/Snakefile" --directory "$WORK" --cores 2 \
  results/tables/age.md results/tables/sex.md results/tables/diagnosis.md > "$WORK/snakemake.out" 2>&1 \
  || { tail -40 "$WORK/snakemake.out"; exit 1; }
end=$(date +%s.%N)
printf "ukbsim %s, adnisim %s subjects: %.0f s wall; workdir %s\n" "$UKB" "$ADNI" "$(echo "$end - $start" | bc)" "$WORK"
for task in age sex diagnosis; do
  head -1 "results/tables/$task.md"
  grep -E "^\| (fc_linear|jepa_finetune|mae_finetune|random_finetune|jepa_closed_form) " "results/tables/$task.md"
done
