# Downstream evaluation: every task x method x seed of config "evaluate", one job each (GPU jobs on a cluster for
# the gradient-trained methods), frozen features cached once per (encoder, cohort), then metrics.tsv and the
# paper-style tables. Methods are <encoder>_<protocol> and the FC baselines (brainjepa/evaluate/run.py).


rule convert_official:
    input:
        official=lambda wildcards: EVAL_ENCODERS[wildcards.encoder]["official"],
        gradients=GRADIENTS,
    output:
        f"{EVALUATE_ROOT}/encoders/{{encoder}}.pt",
    log:
        f"{LOGS}/convert_official/{{encoder}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "brainjepa convert-checkpoint --official {input.official:q} --gradients {input.gradients:q}"
        " --out {output:q} > {log:q} 2>&1"


rule features:
    input:
        unpack(features_inputs),
    output:
        features_path("{encoder}", "{cohort}"),
    log:
        f"{LOGS}/features/{{encoder}}/{{cohort}}.log",
    conda:
        ENV
    threads: config["evaluate"]["threads"]
    resources:
        **gpu_job_resources("evaluate"),
        gpu=config["evaluate"]["gpus"],
        mem_mb=memory_mb("features"),
        runtime=config["evaluate"]["runtime"],
    params:
        encoder=lambda wildcards: json.dumps(encoder_spec(wildcards.encoder)),
        protocols=json.dumps(config["evaluate"]["settings"]),
        seed=TRAIN_CONFIG.run.seed,  # a random encoder's features: the pretraining run's own starting point
        shards=os.path.dirname(os.path.dirname(SHARDS_MANIFEST)),
    shell:
        "brainjepa features --encoder {params.encoder:q} --cohort {wildcards.cohort:q} --shards {params.shards:q}"
        " --protocols {params.protocols:q} --seed {params.seed} --out {output:q} > {log:q} 2>&1"


# A random encoder's features per initialisation (evaluate.random_seeds): its frozen protocols' seed k reads init k.
use rule features as features_random_init with:
    output:
        f"{EVALUATE_ROOT}/features/{{encoder}}/init{{seed}}/{{cohort}}.npz",
    log:
        f"{LOGS}/features/{{encoder}}/init{{seed}}/{{cohort}}.log",
    params:
        encoder=lambda wildcards: json.dumps(encoder_spec(wildcards.encoder)),
        protocols=json.dumps(config["evaluate"]["settings"]),
        seed=lambda wildcards: int(wildcards.seed),
        shards=os.path.dirname(os.path.dirname(SHARDS_MANIFEST)),


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        f"{EVALUATE_ROOT}/{{task}}/{{method}}/seed{{seed}}.json",
    log:
        f"{LOGS}/evaluate/{{task}}/{{method}}/seed{{seed}}.log",
    conda:
        ENV
    threads: config["evaluate"]["threads"]
    resources:
        **gpu_job_resources("evaluate", gpus=evaluate_gpus, launched=evaluate_launched),
        mem_mb=lambda wildcards: memory_mb("evaluate", wildcards.method),
        runtime=config["evaluate"]["runtime"],
    params:
        args=evaluate_args,
        launcher=lambda wildcards: launcher("evaluate", evaluate_launched(wildcards)),
        shards=os.path.dirname(os.path.dirname(SHARDS_MANIFEST)),
    shell:
        "{params.launcher} evaluate {params.args} --method {wildcards.method:q} --seed {wildcards.seed:q}"
        " --shards {params.shards:q} --out {output:q} > {log:q} 2>&1"


rule metrics:
    input:
        ALL_RESULTS,
    output:
        tsv=report(METRICS, caption="../report/metrics.rst", category=CAT_EVAL),
        summary=f"{TABLES}/summary.md",
        paired=f"{TABLES}/paired.tsv",
        tables=[f"{TABLES}/{name}.md" for name in [*EVAL_TASKS, *EVAL_CAPABILITIES]],
    log:
        f"{LOGS}/metrics/metrics.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        tables=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "brainjepa metrics --results {input:q} --out {output.tsv:q} --tables {params.tables:q} > {log:q} 2>&1"
