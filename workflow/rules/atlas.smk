# The combined atlas (subcortical first, then cortical) and its label table.


def atlas_inputs(wildcards):
    """Local atlas files, when configured (else the rule fetches from TemplateFlow / the pinned URL)."""
    files = {}
    for kind in ("cortical", "subcortical"):
        for key in ("image", "labels"):
            if config["atlas"][kind][key]:
                files[f"{kind}_{key}"] = config["atlas"][kind][key]
    return files


def atlas_args(wildcards, input):
    from shlex import quote

    return " ".join(f"--{name.replace('_', '-')} {quote(path)}" for name, path in input.items())


rule atlas:
    input:
        unpack(atlas_inputs),
    output:
        image=ATLAS_IMAGE,
        labels=ATLAS_LABELS,
        sidecar=ATLAS_IMAGE.replace(".nii.gz", ".json"),
    params:
        sources=atlas_args,
        space=config["atlas"]["space"],
        overlap=config["atlas"]["overlap"],
        cache=config["atlas"]["cache_dir"],
        n_parcels=config["atlas"]["cortical"]["n_parcels"],
        networks=config["atlas"]["cortical"]["networks"],
        resolution=config["atlas"]["cortical"]["resolution"],
    log:
        "logs/atlas/atlas.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "brainjepa atlas --space {params.space} --overlap {params.overlap} --cache-dir {params.cache:q}"
        " --n-parcels {params.n_parcels} --networks {params.networks} --resolution {params.resolution}"
        " {params.sources} --out-image {output.image:q} --out-labels {output.labels:q} > {log} 2>&1"
