# Training data: every run scaled with the pretraining statistics, in Parquet shards per split.


rule shards:
    input:
        splits=f"{GROUP}/splits.tsv",
        stats=f"{GROUP}/scaling_stats.json",
        phenotypes=config["phenotypes"],
        runs=aligned_runs(RUN_IDS),
    output:
        manifest="results/shards/manifest.json",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
        labels=json.dumps(config["labels"], sort_keys=True),
        max_mb=config["shards"]["max_shard_mb"],
        dtype=config["shards"]["dtype"],
        window=config["shards"]["window"],
        short=config["shards"]["short_policy"],
    log:
        "logs/shards/shards.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "brainjepa shards --splits {input.splits:q} --runs-root results/aligned --phenotypes {input.phenotypes:q}"
        " --label-types {params.labels:q} --stats {input.stats:q} --max-shard-mb {params.max_mb}"
        " --dtype {params.dtype} --window {params.window} --short-policy {params.short}"
        " --out-dir {params.out_dir:q} > {log} 2>&1"
