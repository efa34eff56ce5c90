# The synthetic demo cohort (config "demo"): the demo atlas, and one job per sheet-listed demo run, so that
# adding demo rows simulates only the new runs.
from brainjepa.simulate import demo_atlas_paths

DEMO_ATLAS = demo_atlas_paths(str(DEMO_ROOT))
DEMO_FUNC = (
    str(DEMO_ROOT) + "/derivatives/{cohort}/sub-{subject}/ses-{session}/func/"
    "sub-{subject}_ses-{session}_task-rest_run-{run}_space-MNI152NLin6Asym"
)


def demo_phenotype(wildcards):
    """The subject's planted labels as JSON (a change reruns only that subject's runs)."""
    key = (PHENOTYPES["cohort"] == wildcards.cohort) & (PHENOTYPES["subject"] == wildcards.subject)
    if not key.any():
        raise WorkflowError(f"demo run {wildcards.cohort}/sub-{wildcards.subject} has no row in {config['phenotypes']}")
    row = PHENOTYPES.loc[key].iloc[0]
    values = {k: row[k] for k in ("age", "sex", "diagnosis") if k in row and row[k] not in ("", "n/a")}
    values["age"] = float(values["age"])
    if "diagnosis" in values:
        values["diagnosis"] = int(values["diagnosis"])
    return json.dumps(values, sort_keys=True)


if config["demo"]["enabled"]:

    rule simulate_atlas:
        output:
            **DEMO_ATLAS,
        params:
            root=str(DEMO_ROOT),
            seed=config["demo"]["seed"],
        log:
            "logs/simulate/atlas.log",
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        shell:
            "brainjepa simulate-atlas --root {params.root:q} --seed {params.seed} > {log} 2>&1"

    rule simulate_run:
        input:
            **DEMO_ATLAS,
        output:
            bold=DEMO_FUNC + "_desc-preproc_bold.nii.gz",
            sidecar=DEMO_FUNC + "_desc-preproc_bold.json",
            mask=DEMO_FUNC + "_desc-brain_mask.nii.gz",
        params:
            root=str(DEMO_ROOT),
            seed=config["demo"]["seed"],
            spec=lambda wc: json.dumps(config["demo"]["cohorts"][wc.cohort], sort_keys=True),
            phenotype=demo_phenotype,
        log:
            "logs/simulate/{cohort}/sub-{subject}_ses-{session}_run-{run}.log",
        wildcard_constraints:
            subject="[A-Za-z0-9]+",
            session="[A-Za-z0-9]+",
            run="[A-Za-z0-9]+",
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        shell:
            "brainjepa simulate-run --root {params.root:q} --bold {output.bold:q} --mask {output.mask:q}"
            " --cohort {wildcards.cohort} --cohort-spec {params.spec:q} --subject {wildcards.subject}"
            " --session {wildcards.session} --run {wildcards.run} --phenotype {params.phenotype:q}"
            " --seed {params.seed} > {log} 2>&1"
