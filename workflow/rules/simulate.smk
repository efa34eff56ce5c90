# The synthetic demo cohort (config "demo"): the demo atlas, and one job per sheet-listed demo run, so that
# adding demo rows simulates only the new runs.
if config["demo"]["enabled"]:

    rule simulate_atlas:
        output:
            **DEMO_ATLAS,
        log:
            "logs/simulate/atlas.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            root=lambda wildcards, output: Path(output.cortical_image).parent.parent,
            seed=config["demo"]["seed"],
        shell:
            "brainjepa simulate-atlas --root {params.root:q} --seed {params.seed} > {log} 2>&1"

    rule simulate_run:
        input:
            **DEMO_ATLAS,
        output:
            bold=f"{DEMO_FUNC}_desc-preproc_bold.nii.gz",
            sidecar=f"{DEMO_FUNC}_desc-preproc_bold.json",
            mask=f"{DEMO_FUNC}_desc-brain_mask.nii.gz",
        log:
            "logs/simulate/{cohort}/sub-{subject}_ses-{session}_run-{run}.log",
        wildcard_constraints:
            subject="[A-Za-z0-9]+",
            session="[A-Za-z0-9]+",
            run="[A-Za-z0-9]+",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            root=lambda wildcards, input: Path(input.cortical_image).parent.parent,
            seed=config["demo"]["seed"],
            tr=lambda wc: config["demo"]["cohorts"][wc.cohort]["tr"],
            n_volumes=lambda wc: config["demo"]["cohorts"][wc.cohort]["n_volumes"],
            phenotype=demo_phenotype,
        shell:
            "brainjepa simulate-run --root {params.root:q} --bold {output.bold:q} --mask {output.mask:q}"
            " --cohort {wildcards.cohort} --tr {params.tr} --n-volumes {params.n_volumes} --subject {wildcards.subject}"
            " --session {wildcards.session} --run {wildcards.run} --phenotype {params.phenotype:q}"
            " --seed {params.seed} > {log} 2>&1"
