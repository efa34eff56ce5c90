# Pooled statistics: the splits, then statistics of the pretraining set only (scaling, group FC, gradients).
# One rule per stage; each writes under results/<stage>/.


rule splits:
    input:
        unpack(splits_inputs),
    output:
        SPLITS,
    log:
        f"{LOGS}/splits/splits.log",
    localrule: True
    conda:
        ENV
    params:
        options=splits_options,
    shell:
        "brainjepa splits --samples {input.samples:q} {params.options} --out {output:q} > {log:q} 2>&1"


# The runs of one split, for the stages that read that split alone (scaling and group FC: pretrain; the shards of
# each split). Its sheets are ancient inputs and the digest of the split's rows a parameter, so the job reruns when
# (and only when) the split's runs change: a new downstream subject leaves the pretraining stages alone. Not an
# ancient input of those stages: Snakemake then never looks at their other inputs in a run where this job reruns
# (snakemake/snakemake#4166), and a target requested alone after a sheet edit would be left stale.
rule split_table:
    input:
        unpack(lambda wildcards: {k: ancient(v) for k, v in splits_inputs(wildcards).items()}),
    output:
        SPLIT_RUNS,
    log:
        f"{LOGS}/splits/{{split}}.log",
    localrule: True
    conda:
        ENV
    params:
        options=splits_options,
        content=split_rows_digest,
    shell:
        "brainjepa splits --samples {input.samples:q} {params.options} --only {wildcards.split}"
        " --out {output:q} > {log:q} 2>&1"


rule split_balance:
    input:
        splits=SPLITS,
        phenotypes=config["phenotypes"],
    output:
        SPLIT_BALANCE,
    log:
        f"{LOGS}/split_balance/split_balance.log",
    localrule: True
    conda:
        ENV
    params:
        labels=json.dumps(config["labels"], sort_keys=True),
    shell:
        "brainjepa split-balance --splits {input.splits:q} --phenotypes {input.phenotypes:q}"
        " --label-types {params.labels:q} --out {output:q} > {log:q} 2>&1"


rule scaling:
    input:
        splits=SPLIT_RUNS.format(split="pretrain"),  # the pretraining set
        runs=run_stamps(ALIGN_TR_ROOT, PRETRAIN_RUN_IDS),  # their batches
    output:
        SCALING_STATS,
    log:
        f"{LOGS}/scaling/scaling.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        method=config["scaling"]["method"],
        mixed_tr=config["align_tr"]["mixed_tr"],
        runs_root=runs_root,
    shell:
        "brainjepa scaling --splits {input.splits:q} --runs-root {params.runs_root:q}"
        " --method {params.method} --mixed-tr {params.mixed_tr} --out {output:q} > {log:q} 2>&1"


rule group_fc:
    input:
        splits=SPLIT_RUNS.format(split="pretrain"),  # the pretraining set
        labels=ATLAS_LABELS,
        runs=run_stamps(ALIGN_TR_ROOT, PRETRAIN_RUN_IDS),  # their batches
    output:
        fc=GROUP_FC,
    log:
        f"{LOGS}/group_fc/group_fc.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        runs_root=runs_root,
    shell:
        "brainjepa group-fc --splits {input.splits:q} --runs-root {params.runs_root:q} --labels {input.labels:q}"
        " --out {output.fc:q} > {log:q} 2>&1"


rule gradients:
    input:
        unpack(gradients_inputs),
    output:
        GRADIENTS,
    log:
        f"{LOGS}/gradients/gradients.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        source=gradients_args,
    shell:
        "brainjepa gradients {params.source} --labels {input.labels:q} --out {output:q} > {log:q} 2>&1"
