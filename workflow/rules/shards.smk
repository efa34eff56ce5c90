# Training data: every run scaled with the pretraining statistics, in Parquet shards per split.


rule shards:
    input:
        splits=SPLITS,
        stats=SCALING_STATS,
        phenotypes=config["phenotypes"],
        runs=aligned_runs(RUN_IDS),
    output:
        manifest=SHARDS_MANIFEST,
    log:
        "logs/shards/shards.log",
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
        max_mb=config["shards"]["max_shard_mb"],
        dtype=config["shards"]["dtype"],
        window=config["shards"]["window"],
        short=config["shards"]["short_policy"],
    shell:
        "brainjepa shards --splits {input.splits:q} --runs-root {params.runs_root:q}"
        " --phenotypes {input.phenotypes:q} --label-types {params.labels:q} --stats {input.stats:q}"
        " --max-shard-mb {params.max_mb} --dtype {params.dtype} --window {params.window}"
        " --short-policy {params.short} --out-dir {params.out_dir:q} > {log} 2>&1"
