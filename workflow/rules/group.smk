# Group stage: splits, then statistics of the pretraining set only (scaling, FC, gradients).


rule splits:
    input:
        unpack(splits_inputs),
    output:
        f"{GROUP}/splits.tsv",
    params:
        stratify=lambda wildcards, input: (
            f"--stratify {shlex.quote(json.dumps(config['splits']['stratify']))} --phenotypes {input.phenotypes}"
            f" --label-types {shlex.quote(json.dumps(config['labels']))}"
            if config["splits"]["stratify"]
            else ""
        ),
        seed=config["splits"]["seed"],
        fractions=",".join(str(config["splits"]["fractions"][k]) for k in ("train", "val", "test")),
        cohort=config["splits"]["pretraining"]["cohort"],
        fraction=config["splits"]["pretraining"]["fraction"],
    log:
        "logs/group/splits.log",
    localrule: True
    shell:
        "brainjepa splits --samples {input.samples:q} --seed {params.seed} --fractions {params.fractions}"
        " --pretraining-cohort {params.cohort:q} --pretraining-fraction {params.fraction} {params.stratify}"
        " --out {output:q} > {log} 2>&1"


rule split_balance:
    input:
        splits=f"{GROUP}/splits.tsv",
        phenotypes=config["phenotypes"],
    output:
        f"{GROUP}/split_balance.tsv",
    params:
        labels=json.dumps(config["labels"], sort_keys=True),
    log:
        "logs/group/split_balance.log",
    localrule: True
    shell:
        "brainjepa split-balance --splits {input.splits:q} --phenotypes {input.phenotypes:q}"
        " --label-types {params.labels:q} --out {output:q} > {log} 2>&1"


rule scaling_stats:
    input:
        splits=f"{GROUP}/splits.tsv",
        runs=aligned_runs(PRETRAIN_RUN_IDS),
    output:
        f"{GROUP}/scaling_stats.json",
    params:
        method=config["scaling"]["method"],
    log:
        "logs/group/scaling_stats.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "brainjepa scaling-stats --splits {input.splits:q} --runs-root results/aligned"
        " --method {params.method} --out {output:q} > {log} 2>&1"


rule group_fc:
    input:
        splits=f"{GROUP}/splits.tsv",
        labels=ATLAS_LABELS,
        runs=aligned_runs(PRETRAIN_RUN_IDS),
    output:
        fc=f"{GROUP}/group_fc.npy",
        figure=f"{GROUP}/group_fc.png",
    log:
        "logs/group/group_fc.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "brainjepa group-fc --splits {input.splits:q} --runs-root results/aligned --labels {input.labels:q}"
        " --out {output.fc:q} --figure {output.figure:q} > {log} 2>&1"


if config["gradients"]["file"]:

    rule gradients:
        input:
            given=config["gradients"]["file"],
            labels=ATLAS_LABELS,
        output:
            f"{GROUP}/gradients.tsv",
        log:
            "logs/group/gradients.log",
        localrule: True
        shell:
            "brainjepa check-gradients --in {input.given:q} --labels {input.labels:q} --out {output:q} > {log} 2>&1"

else:

    rule gradients:
        input:
            unpack(gradients_inputs),
        output:
            f"{GROUP}/gradients.tsv",
        params:
            n=config["gradients"]["n_components"],
            reference=lambda wildcards, input: f"--reference {input.reference}" if "reference" in input.keys() else "",
        log:
            "logs/group/gradients.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        shell:
            "brainjepa gradients --fc {input.fc:q} --labels {input.labels:q} --n-components {params.n}"
            " {params.reference} --out {output:q} > {log} 2>&1"
