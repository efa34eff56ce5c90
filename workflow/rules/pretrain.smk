# Self-supervised pretraining on the pretraining shards (GPU rules on a cluster), one rule per training config:
# `pretrain` for the main model (config pretrain.config) and `pretrain_<encoder>` for every evaluate.encoders
# entry pretrained by another config (the MAE baseline). Each trains into its config's run.out_dir (a relative one
# lies under output_dir). A rerun resumes an unfinished run of the same identity (config + data content) from
# latest.pt; a finished one is trained again from step 0 (the rule reruns only when an input changed, or on
# --forcerun), the old folder kept as <out_dir>.replaced-<n>.

for _run in PRETRAIN_RUNS:

    rule:
        name:
            _run["rule"]
        input:
            train_config=_run["config"],
            manifest=SHARDS_MANIFEST.format(split="pretrain"),
            gradients=GRADIENTS,
            stats=SCALING_STATS,
            labels=ATLAS_LABELS,
        output:
            checkpoint=f"{_run['out_dir']}/final.pt",  # log.csv is not an output: Snakemake would delete its history
        log:
            f"{LOGS}/pretrain/{os.path.basename(_run['out_dir'])}.log",
        conda:
            ENV
        threads: config["pretrain"]["threads"]
        resources:
            **gpu_job_resources("pretrain", gpus=config["pretrain"]["gpus"], launched=True),
            mem_mb=memory_mb("pretrain"),
            runtime=config["pretrain"]["runtime"],
        params:
            launcher=launcher("pretrain"),
            out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
        shell:
            "{params.launcher} pretrain --config {input.train_config:q} --set data.manifest={input.manifest:q}"
            " --set data.gradients={input.gradients:q} --set data.scaling_stats={input.stats:q}"
            " --set data.labels={input.labels:q} --set run.out_dir={params.out_dir:q} --set run.progress=false"
            " > {log:q} 2>&1"
