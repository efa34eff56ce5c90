# Brain-JEPA self-supervised pretraining on the pretraining shards (GPU rule on a cluster), into the training
# config's run.out_dir. A rerun resumes an unfinished run of the same identity (config + data content) from
# latest.pt; a finished one is trained again from step 0 (the rule reruns only when an input changed, or on
# --forcerun pretrain), the old folder kept as <out_dir>.replaced-<n>.


rule pretrain:
    input:
        train_config=config["pretrain"]["config"],
        manifest=SHARDS_MANIFEST.format(split="pretrain"),
        gradients=GRADIENTS,
        stats=SCALING_STATS,
        labels=ATLAS_LABELS,
    output:
        checkpoint=f"{PRETRAIN_DIR}/final.pt",  # log.csv is not an output: Snakemake would delete its history
    log:
        f"logs/pretrain/{os.path.basename(PRETRAIN_DIR)}.log",
    conda:
        ENV
    threads: config["pretrain"]["threads"]
    resources:
        gpu=config["pretrain"]["gpus"],
        mem_mb=16000,
        runtime=config["pretrain"]["runtime"],
    params:
        launcher=pretrain_launcher,
    shell:
        "{params.launcher} pretrain --config {input.train_config:q} --set data.manifest={input.manifest:q}"
        " --set data.gradients={input.gradients:q} --set data.scaling_stats={input.stats:q}"
        " --set data.labels={input.labels:q} --set run.progress=false > {log} 2>&1"
