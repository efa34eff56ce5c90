# Every run aligned to the target TR (paper stride or anti-aliased resampling): one job per batch of runs, declaring
# only its stamp (its runs' files are written beside it); rule run_align_tr makes any one run's file on its own.
for batch, run_ids in BATCHES.items():

    rule:
        name:
            batches.rule_name("align_tr", batch)
        input:
            batch_stamp(PARCELLATE_ROOT, batch),  # the batch's parcellated runs: params.runs
        output:
            stamp=batch_stamp(ALIGN_TR_ROOT, batch),
        log:
            f"{LOGS}/align_tr/{batch}.log",
        conda:
            ENV
        threads: 1
        resources:
            **batch_resources(run_ids, seconds_per_run=1),
        params:
            runs=[f"{PARCELLATE_ROOT}/{run_id}.parquet" for run_id in run_ids],
            out=aligned_runs(run_ids),
            target_tr=config["align_tr"]["target_tr"],
            method=config["align_tr"]["method"],
        shell:
            "brainjepa align-tr --in {params.runs:q} --out {params.out:q} --target-tr {params.target_tr}"
            " --method {params.method} --stamp {output.stamp:q} > {log:q} 2>&1"


rule run_align_tr:
    input:
        f"{PARCELLATE_ROOT}/{{cohort}}/{{stem}}.parquet",
    output:
        f"{ALIGN_TR_ROOT}/{{cohort}}/{{stem}}.parquet",
    log:
        f"{LOGS}/align_tr/runs/{{cohort}}/{{stem}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        run=run_of,  # a run of the sheet
        target_tr=config["align_tr"]["target_tr"],
        method=config["align_tr"]["method"],
    shell:
        "brainjepa align-tr --in {input:q} --out {output:q} --target-tr {params.target_tr}"
        " --method {params.method} > {log:q} 2>&1"
