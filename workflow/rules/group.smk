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
        stratify=lambda wildcards, input: (
            f"--stratify {shlex.quote(json.dumps(config['splits']['stratify']))}"
            f" --phenotypes {shlex.quote(input.phenotypes)}"
            f" --label-types {shlex.quote(json.dumps(config['labels']))}"
            if config["splits"]["stratify"]
            else ""
        ),
        seed=config["splits"]["seed"],
        fractions=",".join(str(config["splits"]["fractions"][k]) for k in ("train", "val", "test")),
        cohort=config["splits"]["pretraining"]["cohort"],
        fraction=config["splits"]["pretraining"]["fraction"],
    shell:
        "brainjepa splits --samples {input.samples:q} --seed {params.seed} --fractions {params.fractions}"
        " --pretraining-cohort {params.cohort:q} --pretraining-fraction {params.fraction} {params.stratify}"
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
        splits=ancient(SPLITS),  # what matters of it is the pretraining set: the runs below
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
        splits=ancient(SPLITS),  # what matters of it is the pretraining set: the runs below
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
