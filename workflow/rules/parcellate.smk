# ROI mean time series (streamed from the BOLD file) and per-ROI QC of every run: one job per batch of runs
# (config "batching"), each declaring its runs' files, so every per-run file is still a target of its own, and its
# stamp (written last), which the stages after it depend on.
for batch, run_ids in BATCHES.items():

    rule:
        name:
            batches.rule_name("parcellate", batch)
        input:
            **parcellate_batch_inputs(run_ids),
        output:
            **parcellate_batch_outputs(batch, run_ids),
        log:
            f"{LOGS}/parcellate/{batch}.log",
        conda:
            ENV
        threads: 1
        resources:
            **batch_resources(run_ids, seconds_per_run=10),
        params:
            runs=run_ids,
            content=batches.content_digest(sample_rows(run_ids, ["bold", "timeseries", "mask", "tr"])),
            out_root=lambda wildcards, output: os.path.dirname(os.path.dirname(output.timeseries[0])),
            empty_roi=config["parcellate"]["empty_roi"],
            unnamed=config["parcellate"].get("unnamed_columns", "error"),
            atlas=lambda wildcards, input: (  # none with atlas.labels: the label table names the columns
                f"--atlas {shlex.quote(input.atlas)}" if "atlas" in input.keys() else ""
            ),
        shell:
            "brainjepa parcellate --samples {input.samples:q} --runs {params.runs:q} {params.atlas}"
            " --labels {input.labels:q} --empty-roi {params.empty_roi} --unnamed-columns {params.unnamed}"
            " --out-root {params.out_root:q} --stamp {output.stamp:q} > {log:q} 2>&1"
