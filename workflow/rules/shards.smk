# Training data: the runs of each split scaled with the pretraining statistics, one shard set per split
# (results/shards/<split>/; Parquet, or WebDataset tar with shards.format), so that a new downstream cohort never
# rebuilds the pretraining shards.


rule shards:
    input:
        splits=SPLIT_RUNS,  # the split's runs
        stats=SCALING_STATS,
        phenotypes=ancient(config["phenotypes"]),  # the split's labels: params.content
        runs=split_stamps,
    output:
        manifest=SHARDS_MANIFEST,
    log:
        f"{LOGS}/shards/{{split}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
        runs_root=runs_root,
        labels=json.dumps(config["labels"], sort_keys=True),
        content=split_content,
        max_mb=config["shards"]["max_shard_mb"],
        dtype=config["shards"]["dtype"],
        window=config["shards"]["window"],
        short=config["shards"]["short_policy"],
        format=config["shards"]["format"],
        monitor=config["shards"]["monitor_subjects"],
    shell:
        "brainjepa shards --split {wildcards.split} --splits {input.splits:q} --runs-root {params.runs_root:q}"
        " --phenotypes {input.phenotypes:q} --label-types {params.labels:q} --stats {input.stats:q}"
        " --max-shard-mb {params.max_mb} --dtype {params.dtype} --window {params.window}"
        " --short-policy {params.short} --format {params.format} --monitor-subjects {params.monitor}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
