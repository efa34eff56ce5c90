# Every run aligned to the target TR (paper stride or anti-aliased resampling): one job per batch of runs.
for batch, run_ids in BATCHES.items():

    rule:
        name:
            batches.rule_name("align_tr", batch)
        input:
            [f"{PARCELLATE_ROOT}/{run_id}.parquet" for run_id in run_ids],
        output:
            aligned_runs(run_ids),
        log:
            f"{LOGS}/align_tr/{batch}.log",
        conda:
            ENV
        threads: 1
        resources:
            **batch_resources(run_ids, seconds_per_run=1),
        params:
            target_tr=config["align_tr"]["target_tr"],
            method=config["align_tr"]["method"],
        shell:
            "brainjepa align-tr --in {input:q} --out {output:q} --target-tr {params.target_tr}"
            " --method {params.method} > {log:q} 2>&1"
