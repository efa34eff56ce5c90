# Model bundles (docs/models.md): every pretraining run's encoder as a folder others can use, results/models/<name>/
# (<name>: the run folder's name): model.safetensors, config.json, rois.tsv, scaling.json, provenance.json and a
# model card README.md (brainjepa.models.bundle). The run's monitors.csv goes into the card when it is there (it is
# not an input: the pretraining rule does not declare it).
import re

MODELS_ROOT = f"{RESULTS}/models"
MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "rois.tsv",
    "scaling.json",
    "provenance.json",
    "README.md",
)


def _model_runs():
    """{bundle name: pretraining run}: one bundle per run of PRETRAIN_RUNS, named after its run folder."""
    runs = {}
    for run in PRETRAIN_RUNS:
        name = os.path.basename(run["out_dir"])
        if name in runs:
            raise WorkflowError(
                f"the pretraining runs {runs[name]['out_dir']} and {run['out_dir']} end in the same folder name "
                f"'{name}', which names their model bundle under {MODELS_ROOT}: give one of them another run.out_dir"
            )
        runs[name] = run
    return runs


MODEL_RUNS = _model_runs()


def model_bundle(name):
    """The files of the bundle ``name`` under results/models/."""
    return [f"{MODELS_ROOT}/{name}/{f}" for f in MODEL_FILES]


def export_model_args(wildcards, input):
    """The atlas image (its id and space go into config.json) when the workflow builds one."""
    return f"--atlas-image {shlex.quote(input.atlas_image)}" if "atlas_image" in input.keys() else ""


rule export_model:
    input:
        unpack(
            lambda wildcards: {
                "checkpoint": f"{MODEL_RUNS[wildcards.model]['out_dir']}/final.pt",
                "manifest": SHARDS_MANIFEST.format(split="pretrain"),
                "stats": SCALING_STATS,
                "labels": ATLAS_LABELS,
                **({"atlas_image": ATLAS_IMAGE} if ATLAS_IMAGE else {}),
            }
        ),
    output:
        [f"{MODELS_ROOT}/{{model}}/{f}" for f in MODEL_FILES],
    log:
        f"{LOGS}/export_model/{{model}}.log",
    wildcard_constraints:
        model="|".join(re.escape(name) for name in MODEL_RUNS),
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
