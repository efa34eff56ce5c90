# Brain-JEPA self-supervised pretraining on the pretraining shards (GPU rule on a cluster).
# Reruns continue from results/pretrain/<name>/latest.pt when a previous job died midway.


rule pretrain:
    input:
        train_config=config["pretrain"]["config"],
        manifest="results/shards/manifest.json",
        gradients=f"{GROUP}/gradients.tsv",
        stats=f"{GROUP}/scaling_stats.json",
    output:
        checkpoint=f"results/pretrain/{config['pretrain']['name']}/final.pt",
        log_csv=f"results/pretrain/{config['pretrain']['name']}/log.csv",
    params:
        launcher=pretrain_launcher,
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
    log:
        f"logs/pretrain/{config['pretrain']['name']}.log",
    threads: config["pretrain"]["threads"]
    resources:
        gpu=config["pretrain"]["gpus"],
        mem_mb=16000,
        runtime=config["pretrain"]["runtime"],
    shell:
        "{params.launcher} pretrain --config {input.train_config:q} --set data.manifest={input.manifest:q}"
        " --set data.gradients={input.gradients:q} --set data.scaling_stats={input.stats:q}"
        " --set run.out_dir={params.out_dir:q} --set run.progress=false > {log} 2>&1"
