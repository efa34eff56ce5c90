# BrainLM's capabilities in the evaluation harness (config evaluate.capabilities; brainjepa/evaluate/capabilities.py):
# forecasting, functional-network identification and masked reconstruction (rule capability), and in-silico
# perturbation (rule perturbation, with its per-ROI and per-network tables). One job per capability x method x seed;
# the results join the tasks' in results/metrics.tsv and results/tables/.


rule capability:
    input:
        unpack(capability_inputs),
    output:
        f"{CAPABILITIES_ROOT}/{{capability}}/{{method}}/seed{{seed}}.json",
    log:
        f"{LOGS}/capabilities/{{capability}}/{{method}}/seed{{seed}}.log",
    wildcard_constraints:
        capability="forecast|network_id|reconstruction",
    conda:
        ENV
    threads: config["evaluate"]["threads"]
    resources:
        **gpu_job_resources("evaluate", gpus=capability_gpus),
        mem_mb=memory_mb("capability"),
        runtime=config["evaluate"]["runtime"],
    params:
        command=lambda wildcards: CAPABILITY_COMMANDS[wildcards.capability],
        args=capability_args,
        shards=os.path.dirname(os.path.dirname(SHARDS_MANIFEST)),
    shell:
        "brainjepa {params.command} {params.args} --method {wildcards.method:q} --seed {wildcards.seed:q}"
        " --shards {params.shards:q} --out {output:q} > {log:q} 2>&1"


rule perturbation:
    input:
        unpack(capability_inputs),
    output:
        json=f"{CAPABILITIES_ROOT}/{{capability}}/{{method}}/seed{{seed}}.json",
        rois=f"{CAPABILITIES_ROOT}/{{capability}}/{{method}}/seed{{seed}}.rois.tsv",
        networks=f"{CAPABILITIES_ROOT}/{{capability}}/{{method}}/seed{{seed}}.networks.tsv",
    log:
        f"{LOGS}/capabilities/{{capability}}/{{method}}/seed{{seed}}.log",
    wildcard_constraints:
        capability="perturbation",
    conda:
        ENV
    threads: config["evaluate"]["threads"]
    resources:
        **gpu_job_resources("evaluate", gpus=capability_gpus),
        mem_mb=memory_mb("capability"),
        runtime=config["evaluate"]["runtime"],
    params:
        args=capability_args,
        shards=os.path.dirname(os.path.dirname(SHARDS_MANIFEST)),
    shell:
        "brainjepa perturbation {params.args} --method {wildcards.method:q} --seed {wildcards.seed:q}"
        " --shards {params.shards:q} --out {output.json:q} > {log:q} 2>&1"
