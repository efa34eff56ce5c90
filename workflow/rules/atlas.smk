# The combined atlas (subcortical first, then cortical) and its label table; or, with atlas.labels (pre-parcellated
# cohorts), the label table alone (networks and hemispheres from its columns, else parsed from Schaefer/Tian names).


if LABEL_ONLY_ATLAS:

    rule atlas:
        input:
            labels=config["atlas"]["labels"],
        output:
            labels=ATLAS_LABELS,
        log:
            f"{LOGS}/atlas/atlas.log",
        localrule: True
        conda:
            ENV
        shell:
            "brainjepa atlas --labels-only {input.labels:q} --out-labels {output.labels:q} > {log:q} 2>&1"

else:

    rule atlas:
        input:
            unpack(atlas_inputs),
        output:
            image=ATLAS_IMAGE,
            labels=ATLAS_LABELS,
            sidecar=ATLAS_IMAGE.replace(".nii.gz", ".json"),
        log:
            f"{LOGS}/atlas/atlas.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            sources=atlas_args,
            space=config["atlas"]["space"],
            overlap=config["atlas"]["overlap"],
            cache=config["atlas"]["cache_dir"],
            n_parcels=config["atlas"]["cortical"]["n_parcels"],
            networks=config["atlas"]["cortical"]["networks"],
            resolution=config["atlas"]["cortical"]["resolution"],
        shell:
            "brainjepa atlas --space {params.space} --overlap {params.overlap} --cache-dir {params.cache:q}"
            " --n-parcels {params.n_parcels} --networks {params.networks} --resolution {params.resolution}"
            " {params.sources} --out-image {output.image:q} --out-labels {output.labels:q} > {log:q} 2>&1"
