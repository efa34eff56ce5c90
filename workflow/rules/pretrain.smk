# Brain-JEPA self-supervised pretraining on the pretraining shards (GPU rule on a cluster), into the training
# config's run.out_dir. Reruns continue from its latest.pt when a previous job died midway.


rule pretrain:
    input:
        train_config=config["pretrain"]["config"],
        manifest=SHARDS_MANIFEST,
        gradients=GRADIENTS,
        stats=SCALING_STATS,
        labels=ATLAS_LABELS,
    output:
        checkpoint=f"{PRETRAIN_DIR}/final.pt",
        log_csv=f"{PRETRAIN_DIR}/log.csv",
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
