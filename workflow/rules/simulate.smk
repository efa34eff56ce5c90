# The synthetic demo cohort: every sheet-listed file under demo.root, and the demo atlas.
from brainjepa.simulate import demo_atlas_paths


def demo_outputs():
    """All files `brainjepa simulate` writes for the rows of the sheet that lie under demo.root."""
    files = list(demo_atlas_paths(str(DEMO_ROOT)).values())
    for _, row in SAMPLES.iterrows():
        for column in ("bold", "mask"):
            if row[column] and produced_by_workflow(row[column]):
                files.append(row[column])
        if row["bold"] and produced_by_workflow(row["bold"]):
            files.append(row["bold"].split(".nii")[0] + ".json")
    return sorted(set(files))


if config["demo"]["enabled"]:

    rule simulate:
        input:
            samples=config["samples"],
            phenotypes=config["phenotypes"],
        output:
            demo_outputs(),
        params:
            root=str(DEMO_ROOT),
            seed=config["demo"]["seed"],
            cohorts=json.dumps(config["demo"]["cohorts"], sort_keys=True),
        log:
            "logs/simulate/simulate.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        shell:
            "brainjepa simulate --samples {input.samples:q} --phenotypes {input.phenotypes:q}"
            " --root {params.root:q} --seed {params.seed} --cohorts {params.cohorts:q} > {log} 2>&1"
