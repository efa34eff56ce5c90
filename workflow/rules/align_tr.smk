# Every run aligned to the target TR (paper stride or anti-aliased resampling): one job per batch of runs.
for batch, run_ids in BATCHES.items():

    rule:
        name:
            batches.rule_name("align_tr", batch)
        input:
            batch_stamp(PARCELLATE_ROOT, batch),  # the batch's parcellated runs: params.runs
        output:
            stamp=batch_stamp(ALIGN_TR_ROOT, batch),
            runs=aligned_runs(run_ids),
        log:
            f"{LOGS}/align_tr/{batch}.log",
        conda:
            ENV
        threads: 1
        resources:
            **batch_resources(run_ids, seconds_per_run=1),
        params:
            runs=[f"{PARCELLATE_ROOT}/{run_id}.parquet" for run_id in run_ids],
            target_tr=config["align_tr"]["target_tr"],
            method=config["align_tr"]["method"],
        shell:
            "brainjepa align-tr --in {params.runs:q} --out {output.runs:q} --target-tr {params.target_tr}"
            " --method {params.method} --stamp {output.stamp:q} > {log:q} 2>&1"
