# Job layout and cluster resources (brainjepa/train/launch.py): nodes, processes and GPUs of the launched jobs
# (pretrain, evaluate), their Slurm resources, the host memory of a job from the data's and the model's shape, and
# the launcher words that start a `brainjepa` subcommand.


def job_layout(section, launched=True, gpus=None):
    """A job's nodes, processes and GPUs from its config section (pretrain or evaluate); one node and one process
    unless the job runs under the launcher (``launched``); ``gpus`` for a count other than the section's."""
    return launch.section_layout(section, config[section], launched, gpus)


def gpu_job_resources(section, gpus=None, launched=False):
    """The Slurm resources of a GPU-capable rule, declared once in the config (pretrain or evaluate): CPUs per GPU
    (used by the executor only for jobs that get GPUs) and the partition when set. With ``gpus`` (a count, or a
    function of the wildcards), also the GPUs and, for a rule that starts its command through ``launcher``
    (``launched``: a bool or a function of the wildcards), the nodes: brainjepa.train.launch.slurm_resources."""
    extra = {"slurm_partition": config[section]["partition"]} if config[section]["partition"] else {}
    if gpus is None:
        return {"cpus_per_gpu": config[section]["cpus_per_gpu"], **extra}

    def per_job(wildcards):
        on = launched(wildcards) if callable(launched) else launched
        return launch.slurm_resources(job_layout(section, on, gpus(wildcards) if callable(gpus) else gpus))

    if not callable(gpus) and not callable(launched):
        return {**per_job(None), **extra}
    # one function per resource (a resource of None is left out, e.g. nodes of a job on one node)
    return {key: (lambda wildcards, key=key: per_job(wildcards).get(key)) for key in launch.SLURM_RESOURCE_KEYS} | extra


WINDOWS_PER_RUN = 3  # the review's sizing (8,000 subjects x 3 windows): runs' lengths are known after parcellation
_ATLAS = config["atlas"]
_CORTICAL = _ATLAS.get("cortical") or {}
# ROIs at parse time: Schaefer's parcels + Tian S3's 50 when fetched; local label tables may not exist yet: the
# paper's 450 bound them
N_ROIS_BOUND = _CORTICAL["n_parcels"] + 50 if _CORTICAL and not _CORTICAL.get("labels") else 450


def memory_mb(stage, method=None):
    """A job's host memory (Slurm mem_mb) from the data's shape, the model and its processes:
    brainjepa.train.launch.job_memory_mb (features, evaluate, capability, pretrain)."""
    model = TRAIN_CONFIG.model.resolved()
    section = "pretrain" if stage == "pretrain" else "evaluate"
    protocol = None
    if method is not None:  # a frozen protocol on ROI tokens holds them as the attentive probe does
        from brainjepa.evaluate.run import parse_method_readout

        _, protocol, readout = parse_method_readout(method)
        protocol = "attentive" if readout not in (None, "mean") else protocol
    return launch.job_memory_mb(
        stage,
        n_rois=N_ROIS_BOUND,
        window=int(config["shards"]["window"]),
        n_windows=WINDOWS_PER_RUN * int((SPLIT_TABLE["split"] != splits.PRETRAIN).sum()),
        embed_dim=model.embed_dim,
        depth=model.depth,
        protocol=protocol,
        processes=int(config[section]["processes"]),
        num_workers=TRAIN_CONFIG.data.num_workers if stage == "pretrain" else 0,
    )


def launcher(section, launched=True):
    """The shell words that start a `brainjepa` subcommand with the section's layout (brainjepa.train.launch):
    `brainjepa launch` on one node, srun starting one launcher per node on several."""
    return launch.rule_command(job_layout(section, launched), "brainjepa", BRAINJEPA_EXEC)
