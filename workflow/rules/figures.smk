# Figures and the report: every figure of the run under results/figures/, each registered for the HTML report
# (`snakemake --report results/report.html`, or `make report`) with a caption in workflow/report/, grouped by stage;
# the report's first page (workflow/report/workflow.rst) includes the run summary that rule report_summary writes.


rule figure_fc:
    input:
        fc=GROUP_FC,
        labels=ATLAS_LABELS,
    output:
        report(f"{FIGURES}/group_fc.png", caption="../report/group_fc.rst", category=CAT_GROUP),
    log:
        f"{LOGS}/figures/group_fc.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "brainjepa figure-fc --fc {input.fc:q} --labels {input.labels:q} --out {output:q} > {log:q} 2>&1"


rule figure_gradients:
    input:
        unpack(
            lambda wildcards: {"gradients": GRADIENTS, "labels": ATLAS_LABELS}
            | ({"atlas": ATLAS_IMAGE} if ATLAS_IMAGE else {})
        ),
    output:
        **gradient_figures(),
    log:
        f"{LOGS}/figures/gradients.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        cortical=lambda wildcards: (
            "--cortical-only" if FIGURES_CONFIG.get("gradients", {}).get("cortical_only") else ""
        ),
        brain=lambda wildcards, input, output: (
            f"--atlas {shlex.quote(input.atlas)} --out-brain {shlex.quote(output.brain)}" if ATLAS_IMAGE else ""
        ),
    shell:
        "brainjepa figure-gradients --gradients {input.gradients:q} --labels {input.labels:q} {params.brain}"
        " --out-space {output.space:q} --out-eigenvalues {output.eigenvalues:q} {params.cortical} > {log:q} 2>&1"


rule figure_qc:
    input:
        qc=run_stamps(PARCELLATE_ROOT, RUN_IDS),  # every batch's <run_id>_qc.tsv
        labels=ATLAS_LABELS,
        samples=config["samples"],
        splits=SPLITS,
        balance=SPLIT_BALANCE,
        manifests=[SHARDS_MANIFEST.format(split=s) for s in SPLIT_NAMES],
    output:
        rois=report(f"{FIGURES}/qc_rois.png", caption="../report/qc_rois.rst", category=CAT_DATA),
        splits=report(f"{FIGURES}/qc_splits.png", caption="../report/qc_splits.rst", category=CAT_DATA),
        runs=report(f"{FIGURES}/qc_runs.tsv", caption="../report/qc_runs.rst", category=CAT_DATA),
    log:
        f"{LOGS}/figures/qc.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        excluded=lambda wildcards, input: excluded_tables(input.manifests),
        root=lambda wildcards: PARCELLATE_ROOT,  # <root>/<run_id>_qc.tsv: the qc inputs
    shell:
        "brainjepa figure-qc --parcellate-root {params.root:q} --labels {input.labels:q}"
        " --samples {input.samples:q} --splits {input.splits:q} --balance {input.balance:q}"
        " --excluded {params.excluded} --out-roi {output.rois:q} --out-splits {output.splits:q}"
        " --out-runs {output.runs:q} > {log:q} 2>&1"


rule figure_pretraining:
    input:
        [f"{r['out_dir']}/final.pt" for r in PRETRAIN_RUNS],  # log.csv beside each
    output:
        report(f"{FIGURES}/pretraining.png", caption="../report/pretraining.rst", category=CAT_PRETRAIN),
    log:
        f"{LOGS}/figures/pretraining.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        logs=named_options("--log", {os.path.basename(r["out_dir"]): f"{r['out_dir']}/log.csv" for r in PRETRAIN_RUNS}),
    shell:
        "brainjepa figure-pretraining {params.logs} --out {output:q} > {log:q} 2>&1"


rule figure_evaluation:
    input:
        metrics=METRICS,
    output:
        methods=report(
            f"{FIGURES}/evaluation_methods.png", caption="../report/evaluation_methods.rst", category=CAT_EVAL
        ),
        methods_svg=f"{FIGURES}/evaluation_methods.svg",
        versus=report(
            f"{FIGURES}/finetune_vs_linprobe.png", caption="../report/finetune_vs_linprobe.rst", category=CAT_EVAL
        ),
        versus_svg=f"{FIGURES}/finetune_vs_linprobe.svg",
    log:
        f"{LOGS}/figures/evaluation.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "brainjepa figure-evaluation --metrics {input.metrics:q} --out-methods {output.methods:q} {output.methods_svg:q}"
        " --out-finetune-vs-linprobe {output.versus:q} {output.versus_svg:q} > {log:q} 2>&1"


if SCALING_ENCODERS:  # pretrained encoders of more than one architecture

    rule figure_scaling:
        input:
            metrics=METRICS,
            checkpoints=[EVAL_ENCODERS[e]["checkpoint"] for e in SCALING_ENCODERS],
        output:
            report(f"{FIGURES}/scaling.png", caption="../report/scaling.rst", category=CAT_EVAL),
        log:
            f"{LOGS}/figures/scaling.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=4000,
            runtime=10,
        params:
            encoders=named_options("--encoder", {e: EVAL_ENCODERS[e]["checkpoint"] for e in SCALING_ENCODERS}),
        shell:
            "brainjepa figure-evaluation --metrics {input.metrics:q} --out-scaling {output:q} {params.encoders}"
            " > {log:q} 2>&1"


if ATTENTION is not None and EVAL_RESULTS:

    rule network_attention:
        input:
            **eval_manifests(),
            **encoder_inputs(ATTENTION.encoder),
            labels=ATLAS_LABELS,
        output:
            networks=report(
                f"{FIGURES}/network_attention.tsv",
                caption="../report/network_attention_table.rst",
                category=CAT_INTERPRET,
            ),
            rois=f"{FIGURES}/network_attention_rois.tsv",
            figure=report(
                f"{FIGURES}/network_attention.png", caption="../report/network_attention.rst", category=CAT_INTERPRET
            ),
        log:
            f"{LOGS}/figures/network_attention.log",
        conda:
            ENV
        threads: config["evaluate"]["threads"]
        resources:
            **gpu_job_resources("evaluate"),
            gpu=config["evaluate"]["gpus"],
            mem_mb=16000,
            runtime=config["evaluate"]["runtime"],
        params:
            encoder=json.dumps(encoder_spec(ATTENTION.encoder)),
            task=json.dumps(dataclasses.asdict(EVAL_TASKS[ATTENTION.task])),
            settings=json.dumps(dataclasses.asdict(ATTENTION)),
            seed=TRAIN_CONFIG.run.seed,  # a random encoder: the pretraining run's own starting point
            shards=lambda wildcards, input: os.path.dirname(os.path.dirname(input.manifest_train)),
            threads=config["evaluate"]["threads"],
        shell:
            "brainjepa network-attention --encoder {params.encoder:q} --task {params.task:q} --shards {params.shards:q}"
            " --settings {params.settings:q} --labels {input.labels:q} --seed {params.seed} --threads {params.threads}"
            " --out-networks {output.networks:q} --out-rois {output.rois:q} --figure {output.figure:q} > {log:q} 2>&1"


if CAPABILITY_FIGURE_RESULTS:

    rule figure_capabilities:
        input:
            CAPABILITY_FIGURE_RESULTS,
        output:
            png=report(f"{FIGURES}/capabilities.png", caption="../report/capabilities.rst", category=CAT_EVAL),
            svg=f"{FIGURES}/capabilities.svg",
        log:
            f"{LOGS}/figures/capabilities.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        shell:
            "brainjepa figure-capabilities --results {input:q} --out {output.png:q} {output.svg:q} > {log:q} 2>&1"


if PERTURBATION_METHODS:

    rule figure_perturbation:
        input:
            unpack(
                lambda wildcards: {
                    "rois": [
                        f"{CAPABILITIES_ROOT}/perturbation/{wildcards.method}/seed{seed}.rois.tsv"
                        for seed in config["evaluate"]["seeds"]
                    ],
                    "labels": ATLAS_LABELS,
                }
                | ({"atlas": ATLAS_IMAGE} if ATLAS_IMAGE else {})
            ),
        output:
            report(
                f"{FIGURES}/perturbation_{{method}}.png", caption="../report/perturbation.rst", category=CAT_INTERPRET
            ),
        log:
            f"{LOGS}/figures/perturbation_{{method}}.log",
        wildcard_constraints:
            method="|".join(PERTURBATION_METHODS),
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=4000,
            runtime=10,
        params:
            atlas=lambda wildcards, input: f"--atlas {shlex.quote(input.atlas)}" if ATLAS_IMAGE else "",
            title=lambda wildcards: f"In-silico perturbation: {wildcards.method}",
        shell:
            "brainjepa figure-perturbation --rois {input.rois:q} --labels {input.labels:q} {params.atlas}"
            " --title {params.title:q} --out {output:q} > {log:q} 2>&1"


rule report_summary:
    input:
        samples=config["samples"],
        splits=SPLITS,
        manifests=[SHARDS_MANIFEST.format(split=s) for s in SPLIT_NAMES],
        checkpoints=[f"{r['out_dir']}/final.pt" for r in PRETRAIN_RUNS],
        metrics=[METRICS] if ALL_RESULTS else [],
    output:
        rst=REPORT_SUMMARY,
        json=REPORT_SUMMARY_JSON,
    log:
        f"{LOGS}/figures/report_summary.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        excluded=lambda wildcards, input: excluded_tables(input.manifests),
        runs=named_options("--run", {os.path.basename(r["out_dir"]): r["out_dir"] for r in PRETRAIN_RUNS}),
        metrics=lambda wildcards, input: f"--metrics {shlex.quote(input.metrics[0])}" if input.metrics else "",
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.rst)),
        report_command=REPORT_COMMAND,
    shell:
        "brainjepa report-summary --samples {input.samples:q} --splits {input.splits:q} --excluded {params.excluded}"
        " --manifests {input.manifests:q}"
        " {params.runs} {params.metrics} --out {output.rst:q} --json {output.json:q} --results-dir {params.results:q}"
        " --report-command {params.report_command:q} > {log:q} 2>&1"
