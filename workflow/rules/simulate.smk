# The synthetic demo cohort (config "demo"): the demo atlas, and one job per batch of sheet-listed demo runs
# (config "batching"), so that adding demo rows simulates only the batches that gain them.
if config["demo"]["enabled"]:

    rule simulate_atlas:
        output:
            **DEMO_ATLAS,
        log:
            f"{LOGS}/simulate/atlas.log",
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
            "brainjepa simulate-atlas --root {params.root:q} --seed {params.seed} > {log:q} 2>&1"

    for batch, (cohort, run_ids) in demo_batches().items():

        rule:
            name:
                batches.rule_name("simulate_run", batch)
            input:
                **DEMO_ATLAS,
                samples=ancient(config["samples"]),
                phenotypes=ancient(config["phenotypes"]),
            output:
                demo_batch_outputs(run_ids),
            log:
                f"{LOGS}/simulate/{batch}.log",
            conda:
                ENV
            threads: 1
            resources:
                **batch_resources(run_ids, seconds_per_run=2),
            params:
                root=lambda wildcards, input: Path(input.cortical_image).parent.parent,
                cohort=cohort,
                runs=run_ids,
                content=demo_batch_content(run_ids),  # the runs' rows and labels: a change reruns this batch
                seed=config["demo"]["seed"],
                tr=config["demo"]["cohorts"][cohort]["tr"],
                n_volumes=config["demo"]["cohorts"][cohort]["n_volumes"],
            shell:
                "brainjepa simulate-run --samples {input.samples:q} --phenotypes {input.phenotypes:q}"
                " --root {params.root:q} --cohort {params.cohort} --tr {params.tr} --n-volumes {params.n_volumes}"
                " --seed {params.seed} --runs {params.runs:q} > {log:q} 2>&1"
