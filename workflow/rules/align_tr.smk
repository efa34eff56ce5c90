# Per run: align the time series to the target TR (paper stride or anti-aliased resampling).


rule align_tr:
    input:
        f"{PARCELLATE}.parquet",
    output:
        f"{ALIGN_TR_ROOT}/{{cohort}}/{{stem}}.parquet",
    log:
        "logs/align_tr/{cohort}/{stem}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        target_tr=config["align_tr"]["target_tr"],
        method=config["align_tr"]["method"],
    shell:
        "brainjepa align-tr --in {input:q} --out {output:q} --target-tr {params.target_tr}"
        " --method {params.method} > {log} 2>&1"
