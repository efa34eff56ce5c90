# Model bundles (docs/models.md): every pretraining run's encoder as a folder others can use, results/models/<name>/
# (<name>: the run folder's name): model.safetensors, config.json, rois.tsv, scaling.json, provenance.json and a
# model card README.md (brainjepa.models.bundle). The run's monitors.csv goes into the card when it is there (it is
# not an input: the pretraining rule does not declare it). When the run is an evaluated encoder, the card quotes its
# evaluation (metrics.tsv and tables/paired.tsv), and the bundle waits for it. Its plan (MODEL_RUNS, model_bundle,
# model_evaluation) is brainjepa/plan.py's; its input functions are in inputs.smk.


rule export_model:
    input:
        unpack(export_model_inputs),
    output:
        [f"{MODELS_ROOT}/{{model}}/{f}" for f in plan.MODEL_FILES],
    log:
        f"{LOGS}/export_model/{{model}}.log",
    wildcard_constraints:
        model="|".join(map(re.escape, MODEL_RUNS)),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        out=lambda wildcards: f"{MODELS_ROOT}/{wildcards.model}",
        atlas=export_model_args,
        target_tr=config["align_tr"]["target_tr"],
        method=config["align_tr"]["method"],
    shell:
        "brainjepa export-model --checkpoint {input.checkpoint:q} --manifest {input.manifest:q}"
        " --scaling-stats {input.stats:q} --labels {input.labels:q} {params.atlas}"
        " --tr-alignment {params.method} --target-tr {params.target_tr} --out {params.out:q} > {log:q} 2>&1"
