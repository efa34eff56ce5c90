# The batch jobs of the per-run stages (brainjepa/batches.py; docs/scale.md): each declares only its stamp,
# <root>/_batches/<batch>-<digest>.tsv, and writes its runs' files beside it; a rule per run (run_parcellate,
# run_align_tr) makes any one of them on its own. Stamp paths, the per-run files `all` requests again when one was
# deleted, and a batch job's resources.
#
# The batch rules (parcellate.smk, align_tr.smk, simulate.smk) are generated in Python loops, one rule per batch,
# not as one with a {batch} wildcard: the stamp design was measured for DAG cost (bench/dag_scale.py,
# docs/benchmarks.md), the wildcard form has not been, and the loops stay until it is.


def batch_stamp(root, batch):
    """The stamp of a per-run stage's batch job (brainjepa.batches.write_stamp): <root>/_batches/<batch>-<digest>.tsv,
    the digest that of the batch's run list, so that a run added to (or taken from) a batch names a new stamp and
    reruns the job.

    A batch job declares only its stamp; the runs' files are written beside it, and a rule per run (run_parcellate,
    run_align_tr) makes any one of them on its own, so each stays a target. Snakemake spends time on every declared
    file (it scans the producing rule's outputs to resolve an input, sorts all outputs, prints them): with the
    120,000 per-run files of a 40,000-run cohort declared, a dry run took 74 s, without them 9 s
    (bench/dag_scale.py)."""
    return f"{root}/_batches/{batch}-{BATCH_DIGEST[batch]}.tsv"


def stamp_stage_root(wildcards, output):
    """A batch job's stage folder, from its declared stamp (<root>/_batches/<batch>-<digest>.tsv): inferred from the
    output rather than a hard-coded prefix, so that it holds where the job's files are staged elsewhere."""
    return os.path.dirname(os.path.dirname(output.stamp))


def run_stage_root(wildcards, output):
    """A per-run job's stage folder, from its declared <root>/<cohort>/<stem>.parquet output."""
    return os.path.dirname(os.path.dirname(output[0]))


def runs_root(wildcards, input):
    """The align_tr stage's folder, from the declared batch stamps (<root>/_batches/<batch>-<digest>.tsv)."""
    return os.path.dirname(os.path.dirname(input.runs[0])) if input.runs else ALIGN_TR_ROOT


def batch_files(root, batch):
    """The per-run files that a batch job of the stage at ``root`` writes beside its stamp."""
    suffixes = (".parquet", "_qc.tsv") if root == PARCELLATE_ROOT else (".parquet",)
    return [f"{root}/{run_id}{suffix}" for run_id in BATCHES[batch] for suffix in suffixes]


_MISSING = {}


def missing_batch_files(root, batch):
    """The per-run files of a finished batch (one with its stamp) that do not exist: deleted since. `all` requests
    them, and the per-run rule remakes each (computed once per workflow start)."""
    key = (root, batch)
    if key not in _MISSING:  # without its stamp the batch runs anyway: no need to look
        done = os.path.exists(batch_stamp(root, batch))
        _MISSING[key] = [f for f in batch_files(root, batch) if not os.path.exists(f)] if done else []
    return _MISSING[key]


def batch_targets(root, batch):
    """What `all` requests of a batch: its stamp, and any of its per-run files that are missing. Only `all`: the
    stages after a batch depend on its stamp alone (a remade file has the content it had)."""
    return [batch_stamp(root, batch), *missing_batch_files(root, batch)]


def run_stamps(root, run_ids):
    """The stamps of the batches holding ``run_ids`` (sorted, each once)."""
    return [batch_stamp(root, b) for b in sorted({BATCH_OF_RUN[r] for r in run_ids})]


def batch_resources(run_ids, seconds_per_run):
    """Cluster resources of one batch job: runtime (minutes) grows with its runs; memory is one run's."""
    return {"mem_mb": 1000, "runtime": 10 + math.ceil(len(run_ids) * seconds_per_run / 60)}


def sample_rows(run_ids, columns):
    """The sheet rows of some runs (the given columns, as text), for a batch's content digest."""
    return [{key: str(SAMPLE_ROWS[run_id][key]) for key in ("run_id", *columns)} for run_id in run_ids]


def run_of(wildcards):
    """The sheet's run of a per-run target (wildcards cohort, stem); a run the sheet lacks is an error naming it."""
    run_id = f"{wildcards.cohort}/{wildcards.stem}"
    if run_id not in SAMPLE_ROWS:
        raise WorkflowError(f"{run_id}: no such run in {config['samples']} (per-run targets are runs of the sheet)")
    return run_id
