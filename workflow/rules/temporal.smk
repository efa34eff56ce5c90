# Per run: align the time series to the target TR (paper stride or anti-aliased resampling).


rule align_tr:
    input:
        "results/timeseries/{cohort}/{stem}.parquet",
    output:
        "results/aligned/{cohort}/{stem}.parquet",
    params:
        target_tr=config["temporal"]["target_tr"],
        method=config["temporal"]["method"],
    log:
        "logs/align_tr/{cohort}/{stem}.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    shell:
        "brainjepa align-tr --in {input:q} --out {output:q} --target-tr {params.target_tr}"
        " --method {params.method} > {log} 2>&1"
