# ROI mean time series (streamed from the BOLD file) and per-ROI QC of every run: one job per batch of runs
# (config "batching"). A batch job declares only its stamp (written last; the stages after it depend on it) and
# writes its runs' files beside it; rule run_parcellate makes any one run's files, so each is a target of its own.
for batch, run_ids in BATCHES.items():

    rule:
        name:
            batches.rule_name("parcellate", batch)
        input:
            **parcellate_batch_inputs(run_ids),
        output:
            stamp=batch_stamp(PARCELLATE_ROOT, batch),
        log:
            f"{LOGS}/parcellate/{batch}.log",
        conda:
            ENV
        threads: 1
        resources:
            **batch_resources(run_ids, seconds_per_run=10),
        params:
            runs=run_ids,
            content=batches.content_digest(sample_rows(run_ids, ["bold", "timeseries", "mask", "tr"])),
            out_root=stamp_stage_root,
            options=parcellate_options,
        shell:
            "brainjepa parcellate --samples {input.samples:q} --runs {params.runs:q} {params.options}"
            " --out-root {params.out_root:q} --stamp {output.stamp:q} > {log:q} 2>&1"


rule run_parcellate:
    input:
        unpack(parcellate_run_inputs),
    output:
        timeseries=f"{PARCELLATE_ROOT}/{{cohort}}/{{stem}}.parquet",
        qc=f"{PARCELLATE_ROOT}/{{cohort}}/{{stem}}_qc.tsv",
    log:
        f"{LOGS}/parcellate/runs/{{cohort}}/{{stem}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        run=run_of,
        out_root=run_stage_root,
        options=parcellate_options,
    shell:
        "brainjepa parcellate --samples {input.samples:q} --runs {params.run:q} {params.options}"
        " --out-root {params.out_root:q} > {log:q} 2>&1"
