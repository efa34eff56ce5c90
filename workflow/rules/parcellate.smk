# Per run: ROI mean time series (streamed from the BOLD file) and per-ROI QC.


rule parcellate:
    input:
        unpack(parcellate_inputs),
    output:
        timeseries=f"{PARCELLATE}.parquet",
        qc=f"{PARCELLATE}_qc.tsv",
    log:
        "logs/parcellate/{cohort}/{stem}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    params:
        source=parcellate_args,
        empty_roi=config["parcellate"]["empty_roi"],
    shell:
        "brainjepa parcellate {params.source} --atlas {input.atlas:q} --labels {input.labels:q}"
        " --empty-roi {params.empty_roi} --qc {output.qc:q} --out {output.timeseries:q} > {log} 2>&1"
