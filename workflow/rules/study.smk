# The pretraining study (config study.config; docs/study.md): every training config of the study pretrained to its
# step budget, its checkpoints and at least five random initialisations probed by repeated cross-validation over
# the tasks' held-out labelled subjects, with paired bootstraps of (pretrained - random). One job: its runs, shards
# and caches under results/study/<name>/ are not declared (Snakemake would delete them), so it resumes.


if STUDY:

    rule pretraining_study:
        input:
            unpack(study_inputs),
        output:
            table=f"{STUDY_ROOT}/study.tsv",
            paired=f"{STUDY_ROOT}/paired.tsv",
            summary=report(f"{STUDY_ROOT}/study.md", caption="../report/study.rst", category=CAT_PRETRAIN),
            figure=report(f"{STUDY_ROOT}/study.png", caption="../report/study.rst", category=CAT_PRETRAIN),
        log:
            f"{LOGS}/study/{STUDY.name}.log",
        conda:
            ENV
        threads: config["study"]["threads"]
        resources:
            mem_mb=16000,
            runtime=config["study"]["runtime"],
        params:
            tasks=json.dumps({name: dataclasses.asdict(task) for name, task in EVAL_TASKS.items()}),
            out_dir=lambda wildcards, output: os.path.dirname(output.table),
            shards=os.path.dirname(os.path.dirname(SHARDS_MANIFEST)),
            fractions=lambda wildcards, input: (
                f"--splits {shlex.quote(input.splits)} --runs-root {shlex.quote(ALIGN_TR_ROOT)}"
                if "splits" in input.keys()
                else ""
            ),
        shell:
            "brainjepa pretraining-study --config {input.study:q} --pretrain-manifest {input.pretrain:q}"
            " --shards {params.shards:q} --tasks {params.tasks:q} --gradients {input.gradients:q}"
            " --labels {input.labels:q} --stats {input.stats:q} {params.fractions} --threads {threads}"
            " --out-dir {params.out_dir:q} > {log:q} 2>&1"
