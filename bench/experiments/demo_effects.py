"""What the demo plants, as measured on its parcellated runs: the realised effect sizes and the task sizes.

Reads the workflow's ROI time series (``results/parcellate/<cohort>/*.parquet``: the data as the pipeline
sees it, before TR alignment and scaling), the phenotypes sheet and the split table, and prints per cohort:

- age: Pearson r of age with the subject's fluctuation amplitude (mean over ROIs of log(std / mean), i.e.
  of the percent signal fluctuation) and with the mean within-network correlation;
- sex: the difference (M - F) of log(SomMot / Vis amplitude) and of the SomMot minus Default within-network
  correlation;
- diagnosis: the difference (1 - 0) of the Default network's log amplitude relative to the other networks,
  with Cohen's d, and of the Default within-network correlation;
- the labelled subjects of each downstream task outside the pretraining set, per split.

    python bench/experiments/demo_effects.py [--workdir .]   # after bench/demo_preprocess_time.sh
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from brainjepa.simulate import NETWORKS


def subject_measures(path: Path) -> dict[str, float]:
    """Amplitude and correlation summaries of one run [T, 64] (demo ROI order: 8 subcortical, 56 cortical)."""
    ts = pd.read_parquet(path).to_numpy(dtype=np.float64)
    network = np.concatenate([np.full(8, len(NETWORKS)), np.arange(56) % 28 // 4])
    log_amp = np.log(ts.std(axis=0) / ts.mean(axis=0))
    corr = np.corrcoef(ts.T)
    within = [corr[np.ix_(network == n, network == n)][np.triu_indices(8, 1)].mean() for n in range(len(NETWORKS))]
    default = NETWORKS.index("Default")
    return {
        "amplitude": log_amp.mean(),
        "within": float(np.mean(within)),
        "sommot_vis": log_amp[network == NETWORKS.index("SomMot")].mean() - log_amp[network == 0].mean(),
        "default_amplitude": log_amp[network == default].mean() - log_amp[network != default].mean(),
        "sommot_default_within": within[NETWORKS.index("SomMot")] - within[default],
        "default_within": within[default],
    }


def cohen_d(a: pd.Series, b: pd.Series) -> float:
    return float((a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=".", help="the workflow's working directory (results/, config/)")
    args = parser.parse_args()
    work = Path(args.workdir)
    phenotypes = pd.read_csv(work / "config/phenotypes.tsv", sep="\t", dtype={"subject": str})
    splits = pd.read_csv(work / "results/splits/splits.tsv", sep="\t", dtype=str)
    rows = []
    for path in sorted((work / "results/parcellate").glob("*/*.parquet")):
        subject = path.name.split("_ses-")[0].removeprefix("sub-")
        rows.append({"cohort": path.parent.name, "subject": subject, **subject_measures(path)})
    runs = pd.DataFrame(rows).groupby(["cohort", "subject"], as_index=False).mean(numeric_only=True)
    data = runs.merge(phenotypes, on=["cohort", "subject"])
    for cohort, group in data.groupby("cohort"):
        print(f"{cohort}: {len(group)} subjects, ages {group['age'].min():.1f}-{group['age'].max():.1f}")
        print(f"  age: r(age, log amplitude) = {np.corrcoef(group['age'], group['amplitude'])[0, 1]:+.3f}, "
              f"r(age, within-network correlation) = {np.corrcoef(group['age'], group['within'])[0, 1]:+.3f}")
        male, female = group[group["sex"] == "M"], group[group["sex"] == "F"]
        sex = male["sommot_vis"].mean() - female["sommot_vis"].mean()
        fc = male["sommot_default_within"].mean() - female["sommot_default_within"].mean()
        print(f"  sex: log(SomMot/Vis amplitude) M - F = {sex:+.3f}; SomMot - Default within-network "
              f"correlation M - F = {fc:+.3f}")
        if group["diagnosis"].notna().any():
            ill, well = group[group["diagnosis"] == 1], group[group["diagnosis"] == 0]
            print(f"  diagnosis ({len(ill)} of {len(group)}): Default log amplitude (relative) 1 - 0 = "
                  f"{ill['default_amplitude'].mean() - well['default_amplitude'].mean():+.3f} "
                  f"(d = {cohen_d(ill['default_amplitude'], well['default_amplitude']):+.2f}); Default within-"
                  f"network correlation 1 - 0 = {ill['default_within'].mean() - well['default_within'].mean():+.3f}")
    subjects = splits.drop_duplicates(["cohort", "subject"])
    counts = subjects.groupby(["cohort", "split"]).size().unstack(fill_value=0)
    counts["held out"] = counts.drop(columns="pretrain", errors="ignore").sum(axis=1)
    print("subjects per split:\n" + counts.to_string())


if __name__ == "__main__":
    main()
