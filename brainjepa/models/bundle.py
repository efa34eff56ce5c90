"""Model bundles: a pretrained encoder and everything needed to apply it to new data, in one folder.

A training checkpoint (``final.pt``) cannot leave its run folder: it holds the optimizer and generator states,
needs torch's pickle loader, and says neither how the input was scaled nor at which TR. A bundle is what others
can use (``brainjepa export-model``; the workflow writes one per pretraining run under ``results/models/``)::

    model.safetensors   encoder.* (the EMA target encoder, what evaluation uses), predictor.* on request
    config.json         format, the model config, and the input it expects: ROIs, window, patch size, TR after
                        alignment and the alignment method, scaling method, storage dtype, atlas identity
    rois.tsv            ROI names in model order, networks, and the gradients (or centroids) of the positions
    scaling.json        the scaling statistics themselves (brainjepa.group.scaling.ScalingStats)
    provenance.json     brainjepa version, commit, training config, sha256s of the data it trained on
    README.md           the model card

config.json, model.safetensors and README.md make it a Hugging Face model repository as it is
(``huggingface_hub.upload_folder``). :func:`read_bundle` and :func:`load_model` read JSON, TSV and safetensors
only (a header and raw tensors, no code): no other file of the folder is opened, so a pickle put there is never
read. Every writer builds the folder beside its destination and renames it into place, so a failure leaves no
partial bundle.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainjepa.errors import InputError
from brainjepa.io import replace_dir

FORMAT = "brainjepa-bundle/1"
WEIGHTS, CONFIG, ROIS, SCALING, PROVENANCE, CARD = ("model.safetensors", "config.json", "rois.tsv", "scaling.json",
                                                   "provenance.json", "README.md")
FILES = (WEIGHTS, CONFIG, ROIS, SCALING, PROVENANCE, CARD)
PREFIXES = {"encoder": "encoder.", "predictor": "predictor."}  # module -> key prefix in model.safetensors
TR_TOLERANCE = 0.01  # relative: an input's TR after alignment must be the bundle's within 1 % (check_one_tr's)
log = logging.getLogger("brainjepa.models")


@dataclass(frozen=True)
class InputSpec:
    """The input a bundle's encoder expects.

    Attributes:
        n_rois, window, patch_size: one sample is [n_rois, window] time steps, cut in patches of patch_size.
        tr: seconds between time steps after TR alignment (the effective TR of the training data).
        tr_alignment: how runs were brought to ``tr`` (brainjepa.preprocess.align_tr: stride | resample).
        target_tr: the alignment's target (for stride, ``tr`` is round(target / TR) x TR).
        scaling_method: brainjepa.group.scaling method; its statistics are scaling.json.
        scaling_source: where the statistics come from: ``training data`` (the run's own), ``supplied`` (a file a
            user gave, e.g. for the released checkpoint, whose statistics were never published) or ``method``
            (a per-sample method that needs none).
        dtype: the shards' storage dtype the model trained on (float16 | float32): scaled input is rounded to it.
    """

    n_rois: int
    window: int
    patch_size: int
    tr: float
    tr_alignment: str
    target_tr: float
    scaling_method: str
    scaling_stats_id: str
    scaling_source: str
    dtype: str = "float16"

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class Bundle:
    """A bundle read by :func:`read_bundle` (weights not loaded). rois, networks: [R]; positions: [R, K]."""

    path: Path
    model: Any                    # brainjepa.models.config.ModelConfig (resolved, runtime attention)
    input: InputSpec
    rois: tuple[str, ...]
    networks: tuple[str, ...]
    position_columns: tuple[str, ...]
    positions: np.ndarray
    scaling: Any                  # brainjepa.group.scaling.ScalingStats
    atlas: dict
    modules: tuple[str, ...]
    config: dict = field(repr=False)


# ----------------------------------------------------------------------------------------------- writing
def _git_commit() -> str | None:
    """The commit of the brainjepa checkout this code runs from, or None (installed package, no git)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _plain_tensors(state: dict, prefix: str) -> dict:
    """A state dict as contiguous CPU float tensors under ``prefix`` (safetensors refuses shared storage)."""
    return {prefix + k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _rois_table(rois: list[str], networks: list[str] | None, position_columns: list[str],
                positions: np.ndarray | None) -> str:
    import pandas as pd

    table = pd.DataFrame({"index": np.arange(1, len(rois) + 1), "name": rois,
                          "network": networks if networks is not None else ["n/a"] * len(rois)})
    for j, column in enumerate(position_columns):
        table[column] = np.asarray(positions)[:, j]
    return table.to_csv(sep="\t", index=False, float_format="%.10g")


def _positions(positional: str, encoder_state: dict) -> tuple[list[str], np.ndarray | None]:
    """The columns and values [R, G] (gradients) or [R, 3] (centroids) the encoder's positions were built from;
    none for the sin-cos positions."""
    if positional == "gradient":
        positions = encoder_state["pos_embed.gradients"].detach().cpu().numpy()
        return [f"gradient_{j + 1}" for j in range(positions.shape[1])], positions
    if positional == "centroid":
        return ["x", "y", "z"], encoder_state["pos_embed.centroids"].detach().cpu().numpy()
    return [], None


def write_bundle(out: str | Path, *, encoder_state: dict, model_config, rois: list[str], inputs: InputSpec,
                 scaling, atlas: dict, provenance: dict, card: str, networks: list[str] | None = None,
                 predictor_state: dict | None = None) -> Path:
    """Write a bundle folder at ``out`` (replacing one there) from an encoder's state dict and its context.

    The folder is built beside ``out`` and renamed into place: a failure leaves no partial bundle (and an older
    bundle at ``out`` as it was). ``model_config``: the resolved ModelConfig; ``scaling``: ScalingStats over
    ``rois``; ``atlas``: the atlas identity (JSON); ``provenance``: JSON. Returns ``out``.
    """
    from safetensors.torch import save_file

    from brainjepa import __version__
    from brainjepa.io import check_roi_names, honour_umask

    out = Path(out)
    cfg = model_config.resolved()
    if len(rois) != cfg.n_rois:
        raise InputError(f"{out}: {len(rois)} ROI names for a model of {cfg.n_rois} ROIs")
    check_roi_names(list(scaling.rois), list(rois), "the scaling statistics", "the model's ROIs")
    if networks is not None and len(networks) != len(rois):
        raise InputError(f"{out}: {len(networks)} networks for {len(rois)} ROIs")
    position_columns, positions = _positions(cfg.positional, encoder_state)
    tensors = _plain_tensors(encoder_state, PREFIXES["encoder"])
    modules = ["encoder"]
    if predictor_state is not None:
        tensors.update(_plain_tensors(predictor_state, PREFIXES["predictor"]))
        modules.append("predictor")
    config = {
        "format": FORMAT, "model_type": "brain-jepa", "library_name": "brainjepa", "brainjepa_version": __version__,
        "modules": modules, "encoder": "the EMA target encoder (as the paper evaluates)",
        "model": cfg.to_dict(),
        "positional": cfg.positional, "patch_size": cfg.patch_size, "window": cfg.n_timesteps,
        "n_rois": cfg.n_rois, "n_time_patches": cfg.n_time_patches, "embed_dim": cfg.embed_dim,
        "input": inputs.to_dict(), "atlas": atlas,
        "position_columns": position_columns,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        honour_umask(tmp, directory=True)
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "brainjepa": FORMAT,
                                                          "modules": ",".join(modules)})
        (tmp / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
        (tmp / ROIS).write_text(_rois_table(list(rois), networks, position_columns, positions))
        (tmp / SCALING).write_text(scaling.to_json())
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=1, default=str) + "\n")
        (tmp / CARD).write_text(card)
        for name in FILES:
            honour_umask(tmp / name)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def effective_tr(manifest: dict, source: str | Path) -> float:
    """The TR after alignment of a shard set's runs (its manifest's ``tr``: {cohort: {TR: runs}}): the TR of most
    runs; TRs more than 1 % apart are logged (the scaling stage refuses them unless align_tr.mixed_tr: warn)."""
    counts: dict[float, int] = {}
    for per_cohort in (manifest.get("tr") or {}).values():
        for tr, n in per_cohort.items():
            counts[float(tr)] = counts.get(float(tr), 0) + int(n)
    if not counts:
        raise InputError(f"{source}: the shard manifest records no TR (written by an older brainjepa: rebuild the "
                         "shards, or give the TR: export-model --tr SECONDS)")
    values = sorted(counts)
    if values[-1] > values[0] * (1 + TR_TOLERANCE):
        log.warning("%s: the training runs mix effective TRs %s; the bundle records the most common", source,
                    counts)
    return max(counts, key=lambda tr: (counts[tr], -tr))


def _label_networks(labels: str | Path | None, rois: list[str]) -> tuple[list[str] | None, dict]:
    """Each ROI's network from an atlas label table (checked against the model's ROIs), and its identity."""
    if not labels:
        return None, {}
    from brainjepa.io import check_roi_names, sha256_file
    from brainjepa.preprocess.atlas import read_label_table

    table = read_label_table(labels)
    check_roi_names(table["name"].astype(str).tolist(), rois, labels, "the model's ROIs")
    networks = (table["network"].fillna("n/a").astype(str).tolist() if "network" in table.columns else None)
    return networks, {"labels": Path(labels).name, "labels_sha256": sha256_file(labels)}


def _atlas_identity(labels: str | Path | None, atlas_image: str | Path | None, rois: list[str],
                    ) -> tuple[list[str] | None, dict]:
    networks, ident = _label_networks(labels, rois)
    ident = {"n_rois": len(rois), **ident}
    if atlas_image:
        from brainjepa.io import sha256_file
        from brainjepa.preprocess.atlas import read_atlas_sidecar

        sidecar = read_atlas_sidecar(atlas_image)
        ident.update(image=Path(atlas_image).name, atlas_id=sidecar.get("atlas_id") or sha256_file(atlas_image)[:16],
                     space=sidecar.get("space"))
    return networks, ident


def _monitor_lines(monitors: str | Path | None) -> list[str]:
    if not monitors:
        return []
    from brainjepa.train.monitors import monitor_summary

    summary = monitor_summary(monitors, 0.5)
    if summary is None:
        return []
    lines = [f"Representation monitors at step {summary['step']} (`monitors.csv`: held-out pretraining subjects; "
             "step 0 in brackets):", "", "| monitor | final | step 0 |", "|---|---|---|"]
    for name, value in summary["values"].items():
        ref = summary["reference"].get(name)
        lines.append(f"| {name} | {value:.4g} | {'' if ref is None else f'{ref:.4g}'} |")
    if summary["narrowed"]:
        lines += ["", f"NARROWED (below half their step-0 value): {', '.join(map(str, summary['narrowed']))}."]
    return lines + [""]


def _evaluation_lines(metrics: str | Path | None, encoder: str | None) -> list[str]:
    """The test metrics of the encoder's methods (``<encoder>_<protocol>``) in a metrics.tsv, mean over seeds."""
    if not metrics or not encoder or not Path(metrics).exists():
        return []
    import pandas as pd

    table = pd.read_csv(metrics, sep="\t")
    if "method" not in table.columns or "task" not in table.columns:
        raise InputError(f"{metrics}: not an evaluation metrics table (no task/method columns)")
    mine = table[table["method"].astype(str).str.startswith(f"{encoder}_")]
    if mine.empty:
        return []
    tests = [c for c in mine.columns if c.startswith("test_") and pd.api.types.is_numeric_dtype(mine[c])
             and mine[c].notna().any()]   # the metrics of these rows only, not every task's and capability's
    lines = [f"Evaluation (`{Path(metrics).name}`, test metrics, mean over seeds):", "",
             "| task | method | seeds | " + " | ".join(c[5:] for c in tests) + " |",
             "|---|---|---|" + "---|" * len(tests)]
    for (task, method), rows in mine.groupby(["task", "method"], sort=True):
        cells = [("" if rows[c].isna().all() else f"{rows[c].mean():.4g}") for c in tests]
        lines.append(f"| {task} | {method} | {len(rows)} | " + " | ".join(cells) + " |")
    return lines + [""]


PRIMARY_METRICS = ("r", "balanced_accuracy")      # the paired table's headline metric of a regression / binary task


def _paired_lines(paired: str | Path | None, encoder: str | None) -> list[str]:
    """Against random initialisation, from a paired.tsv (brainjepa.evaluate.summary.paired_table): per task and
    method of the encoder (``<encoder>_<protocol>``), its worst paired difference over the random encoder's
    initialisations (the table's rows with a ``versus_seed``; FC baselines have none) on the task's headline
    metric, with its 95 % interval, and whether it beats every initialisation (the interval above zero)."""
    if not paired or not encoder or not Path(paired).exists():
        return []
    import pandas as pd

    table = pd.read_csv(paired, sep="\t")
    missing = ({"task", "method", "versus", "versus_seed", "metric", "delta", "ci_low", "ci_high", "beats"}
               - set(table.columns))
    if missing:
        raise InputError(f"{paired}: not a paired-differences table (no {', '.join(sorted(missing))} column)")
    mine = table[table["method"].astype(str).str.startswith(f"{encoder}_") & table["metric"].isin(PRIMARY_METRICS)
                 & table["versus_seed"].notna()]
    if mine.empty:
        return []
    lines = [f"Pretrained minus random initialisation (`{Path(paired).name}`): the worst paired difference over the "
             "random encoder's initialisations on the same test subjects, with its 95 % bootstrap interval. "
             "\"beats all\": every interval lies above zero.", "",
             "| task | method | metric | versus | inits | worst Δ [95 % CI] | beats all |",
             "|---|---|---|---|---|---|---|"]
    wins = []
    for (task, method, metric, versus), rows in mine.groupby(["task", "method", "metric", "versus"], sort=True):
        worst = rows.loc[rows["delta"].idxmin()]
        beats = bool(rows["beats"].astype(str).str.lower().eq("true").all())
        wins += [f"{task} ({method})"] if beats else []
        lines.append(f"| {task} | {method} | {metric} | {versus} | {len(rows)} | {worst['delta']:+.3f} "
                     f"[{worst['ci_low']:+.3f}, {worst['ci_high']:+.3f}] | {'yes' if beats else 'no'} |")
    verdict = (f"It beats every random initialisation on: {', '.join(wins)}." if wins else
               "It beats every random initialisation on no task: on this evaluation, these features are not shown "
               "to be better than an untrained encoder's.")
    return lines + ["", verdict, ""]


def model_card(name: str, *, model_config, inputs: InputSpec, atlas: dict, training: dict,
               monitors: str | Path | None = None, metrics: str | Path | None = None,
               encoder_name: str | None = None, paired: str | Path | None = None) -> str:
    """The README.md of a bundle: what it is, its training data and steps, its monitors and evaluation (when
    given), how to use it, and its limits. ``training``: {"data": [lines], "steps": int | None, ...}."""
    cfg = model_config
    lines = ["---", "library_name: brainjepa", "tags:", "- fmri", "- brain-jepa", "- self-supervised", "---", "",
             f"# {name}", "",
             f"A Brain-JEPA encoder ({cfg.size}: {cfg.embed_dim} wide, {cfg.depth} blocks, {cfg.num_heads} heads; "
             f"positions: {cfg.positional}) for ROI time series of {inputs.n_rois} ROIs, in windows of "
             f"{inputs.window} time steps at a TR of {inputs.tr:g} s ({inputs.window * inputs.tr:g} s), patches of "
             f"{inputs.patch_size} steps. `model.safetensors` holds the EMA target encoder (`encoder.*`)"
             + (" and the predictor (`predictor.*`)" if training.get("with_predictor") else "") + ".", "",
             "## Training data", ""]
    lines += [f"- {line}" for line in training.get("data", [])] or ["- not recorded"]
    lines += [f"- input: TR aligned to {inputs.tr:g} s ({inputs.tr_alignment}, target {inputs.target_tr:g} s), "
              f"scaled with `{inputs.scaling_method}` (statistics: {inputs.scaling_source}, id "
              f"{inputs.scaling_stats_id}), stored as {inputs.dtype}",
              "- atlas: " + (", ".join(f"{k} {v}" for k, v in atlas.items() if v is not None) or "not recorded"),
              "", "## Training", ""]
    lines += [f"- {line}" for line in training.get("lines", [])] or ["- not recorded"]
    lines.append("")
    monitor_lines = _monitor_lines(monitors)
    if monitor_lines:
        lines += ["## Representation monitors", "", *monitor_lines]
    evaluation = _evaluation_lines(metrics, encoder_name) + _paired_lines(paired, encoder_name)
    lines += ["## Evaluation", "", *(evaluation or ["No evaluation summary was available when this bundle was "
                                                    "written (`brainjepa export-model --metrics metrics.tsv`).", ""])]
    lines += ["## Use", "",
              "    brainjepa embed --model THIS_FOLDER --timeseries run.parquet --out features.parquet",
              "", "```python", "import brainjepa", "encoder = brainjepa.load_model('THIS_FOLDER')   # eval mode, CPU",
              "tokens = encoder(x)   # x: [B, 1, R, T] scaled as scaling.json says -> [B, R * W, D]", "```", "",
              "`brainjepa embed` applies the TR alignment, the scaling and the windows recorded in `config.json`. "
              "The evaluation harness takes this folder as an encoder: `{\"kind\": \"bundle\", \"path\": ...}`, or "
              "`evaluate.encoders.<name>: {bundle: path}` in the workflow config.", "",
              "## Intended use and limits", "",
              "- Features of resting-state fMRI ROI time series for research: probes, fine-tuning, comparisons.",
              "- Input must be parcellated with the same atlas (the ROIs of `rois.tsv`, in any column order) and "
              "reach the TR above; other atlases and TRs are refused, not adapted.",
              "- The scaling statistics describe the training cohort; a cohort of other scanners or preprocessing "
              "may need its own (see docs/models.md).",
              "- Not a diagnostic device. Features carry cohort, site and scanner effects as well as biology.", ""]
    return "\n".join(lines)


def _sha256s_of_manifest(manifest_path: str | Path | None, manifest: dict | None) -> dict:
    if manifest_path is None or manifest is None:
        return {}
    from brainjepa.io import sha256_file

    return {"manifest": Path(manifest_path).name, "manifest_sha256": sha256_file(manifest_path),
            "shards_sha256": {split: [e["sha256"] for e in entries] for split, entries in manifest["splits"].items()}}


def _training_statistics(checkpoint: Path, state: dict, path: str | Path | None, configured: str | None):
    """The ScalingStats at ``path``, which must be the ones the checkpoint trained on (its id); ``configured``:
    the file its training config names (for the message when there is none)."""
    from brainjepa.group.scaling import ScalingStats

    if not path or not Path(path).exists():
        raise InputError(f"{checkpoint}: the scaling statistics it trained on are needed (id "
                         f"{state.get('scaling_stats_id')}): give export-model --scaling-stats FILE "
                         f"(the training config names {configured!r})")
    stats = ScalingStats.load(path)
    if state.get("scaling_stats_id") and stats.id != state["scaling_stats_id"]:
        raise InputError(f"{path}: scaling statistics {stats.id}, but {checkpoint} trained on "
                         f"{state['scaling_stats_id']}: give the statistics of its shards")
    return stats


def _training_summary(state: dict, manifest_path, manifest: dict | None, n_subjects: int, n_rois: int,
                      with_predictor: bool) -> dict:
    """The model card's training section: {"data": [lines], "lines": [lines], "with_predictor"}."""
    config = state.get("config") or {}
    data, optim = dict(config.get("data") or {}), config.get("optim") or {}
    runs = sum(e.get("rows", 0) for e in (manifest or {}).get("splits", {}).get(data.get("split", "pretrain"), []))
    trs = (manifest or {}).get("tr") or {}
    data_lines = [f"{runs} pretraining runs ({', '.join(f'{c}: {sum(v.values())}' for c, v in trs.items())})"
                  if manifest else f"shards {manifest_path} (not found when exported)",
                  f"{n_rois} ROIs; scaling statistics from {n_subjects} training subjects"]
    return {"data": data_lines, "with_predictor": with_predictor,
            "lines": [f"objective {config.get('objective', 'jepa')}, {state.get('step')} optimizer steps "
                      f"({state.get('epoch')} epochs of {optim.get('epochs')})",
                      f"batch {data.get('batch_size')} per process, lr {optim.get('lr')}, EMA {optim.get('ema')}, "
                      f"loss {optim.get('loss')}, masks {(config.get('mask') or {}).get('mode')}"]}


def export_model(checkpoint: str | Path, out: str | Path, *, manifest: str | Path | None = None,
                 scaling_stats: str | Path | None = None, labels: str | Path | None = None,
                 atlas_image: str | Path | None = None, tr_alignment: str = "stride", target_tr: float | None = None,
                 tr: float | None = None, with_predictor: bool = False, monitors: str | Path | None = None,
                 metrics: str | Path | None = None, encoder_name: str | None = None,
                 paired: str | Path | None = None, name: str | None = None) -> Path:
    """``export-model``: a training checkpoint -> a bundle at ``out``.

    Paths not given come from the checkpoint's training config (``data.manifest``, ``data.scaling_stats``,
    ``data.labels``) and its run folder (``monitors.csv``). The statistics must be the ones the run trained on
    (their id is the checkpoint's); the effective TR is the shard manifest's (or ``tr``), the alignment method
    ``tr_alignment`` with target ``target_tr`` (default: the effective TR). ``metrics``: a metrics.tsv whose rows
    of ``<encoder_name>_*`` methods go into the model card, and ``paired`` (a paired.tsv) its differences from
    random initialisation.
    """
    from brainjepa import __version__
    from brainjepa.data.shards import load_manifest
    from brainjepa.models.config import ModelConfig
    from brainjepa.preprocess.align_tr import METHODS as ALIGN_METHODS
    from brainjepa.train.checkpoint import load_checkpoint

    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    data = dict((state.get("config") or {}).get("data") or {})
    manifest_path = manifest or data.get("manifest")
    manifest_dict = load_manifest(manifest_path) if manifest_path and Path(manifest_path).exists() else None
    stats = _training_statistics(checkpoint, state, scaling_stats or data.get("scaling_stats"),
                                 data.get("scaling_stats"))
    rois = [str(n) for n in state.get("roi_names") or stats.rois]
    if tr_alignment not in ALIGN_METHODS:
        raise InputError(f"tr_alignment must be one of {', '.join(ALIGN_METHODS)}, not {tr_alignment!r}")
    if tr is None:
        if manifest_dict is None:
            raise InputError(f"{checkpoint}: no shard manifest to read the effective TR from ({manifest_path!r}): "
                             "give --manifest or --tr")
        tr = effective_tr(manifest_dict, manifest_path)
    cfg = ModelConfig.from_checkpoint(state["model_config"], f"{checkpoint}: model_config").resolved()
    labels = labels or data.get("labels")
    networks, atlas = _atlas_identity(labels if labels and Path(labels).exists() else None, atlas_image, rois)
    inputs = InputSpec(n_rois=cfg.n_rois, window=cfg.n_timesteps, patch_size=cfg.patch_size, tr=float(tr),
                       tr_alignment=tr_alignment, target_tr=float(target_tr if target_tr is not None else tr),
                       scaling_method=stats.method, scaling_stats_id=stats.id, scaling_source="training data",
                       dtype=(manifest_dict or {}).get("dtype", "float16"))
    name = name or Path(out).name
    monitors = monitors if monitors is not None else checkpoint.parent / "monitors.csv"
    training = _training_summary(state, manifest_path, manifest_dict, stats.n_subjects, len(rois), with_predictor)
    provenance = {"brainjepa_version": __version__, "commit": _git_commit(), "exported_from": str(checkpoint),
                  "step": state.get("step"), "epoch": state.get("epoch"), "training_config": state.get("config") or {},
                  "identity": state.get("identity"), "scaling_stats_id": stats.id,
                  "data": _sha256s_of_manifest(manifest_path, manifest_dict)}
    card = model_card(name, model_config=cfg, inputs=inputs, atlas=atlas, training=training, monitors=monitors,
                      metrics=metrics, encoder_name=encoder_name, paired=paired)
    return write_bundle(out, encoder_state=state["target_encoder"], model_config=cfg, rois=rois, inputs=inputs,
                        scaling=stats, atlas=atlas, provenance=provenance, card=card, networks=networks,
                        predictor_state=state["predictor"] if with_predictor else None)


def _supplied_scaling(scaling_stats: str | Path | None, scaling_method: str | None, names) -> tuple[Any, str]:
    """(ScalingStats, what the bundle records as their source) for a released checkpoint, whose statistics were
    never published: a statistics file the user supplies, or a per-sample method that needs none."""
    from brainjepa.group.scaling import METHODS, PER_SAMPLE, ScalingStats
    from brainjepa.io import sha256_file

    if scaling_stats is not None:
        source = f"supplied: {Path(scaling_stats).name} (sha256 {sha256_file(scaling_stats)}), not the release's"
        return ScalingStats.load(scaling_stats), source
    if scaling_method not in PER_SAMPLE:
        needs = [m for m in METHODS if m not in PER_SAMPLE]
        raise InputError(f"--scaling-method {scaling_method!r}: only per-sample methods ({', '.join(PER_SAMPLE)}) "
                         f"work without statistics; {', '.join(needs)} need --scaling-stats FILE")
    stats = ScalingStats(scaling_method, tuple(names), np.zeros(0), np.zeros(0), 0)
    return stats, f"method: {scaling_method} (per sample, no statistics)"


def convert_official_bundle(official: str | Path, gradients: str | Path, out: str | Path, *, tr: float,
                            scaling_stats: str | Path | None = None, scaling_method: str | None = None,
                            tr_alignment: str = "stride", target_tr: float | None = None,
                            labels: str | Path | None = None, num_heads: int | None = None,
                            with_predictor: bool = False, dtype: str = "float32") -> Path:
    """``convert-checkpoint --bundle``: the released Brain-JEPA ``.pth`` -> a bundle.

    Its scaling statistics were never published: give a statistics file (``scaling_stats``, over the gradients'
    ROIs; e.g. ``brainjepa scaling`` on your cohort) or a per-sample ``scaling_method`` (zscore, roi_zscore), and
    the bundle records which (``input.scaling_source``). ``tr``: the TR its training data had after alignment
    (2.205 s for the release: UK Biobank's 0.735 s, every third volume).
    """
    import torch

    from brainjepa import __version__
    from brainjepa.group.gradients import read_gradients
    from brainjepa.group.scaling import PER_SAMPLE
    from brainjepa.io import sha256_file
    from brainjepa.models.convert import config_from_official, from_official
    from brainjepa.models.weights import read_torch_file
    from brainjepa.preprocess.align_tr import METHODS as ALIGN_METHODS

    if (scaling_stats is None) == (scaling_method is None):
        raise InputError("the released checkpoint's scaling statistics were never published: give either "
                         "--scaling-stats FILE (statistics over the gradients' ROIs) or --scaling-method "
                         f"({' | '.join(PER_SAMPLE)}: per-sample methods that need none)")
    if tr_alignment not in ALIGN_METHODS:
        raise InputError(f"tr_alignment must be one of {', '.join(ALIGN_METHODS)}, not {tr_alignment!r}")
    if not tr > 0:
        raise InputError(f"--tr must be a positive number of seconds, not {tr!r}")
    names, grads = read_gradients(gradients)
    stats, source = _supplied_scaling(scaling_stats, scaling_method, names)
    state = read_torch_file(official, "official checkpoint")
    cfg = config_from_official(state, len(names), num_heads)
    states = from_official(state, torch.tensor(grads, dtype=torch.float32), cfg)
    if "target_encoder" not in states:
        raise InputError(f"{official}: no target_encoder to export")
    if with_predictor and "predictor" not in states:
        raise InputError(f"{official}: no predictor to export (--with-predictor)")
    networks, atlas = _atlas_identity(labels, None, list(names))
    inputs = InputSpec(n_rois=cfg.n_rois, window=cfg.n_timesteps, patch_size=cfg.patch_size, tr=float(tr),
                       tr_alignment=tr_alignment, target_tr=float(target_tr if target_tr is not None else tr),
                       scaling_method=stats.method, scaling_stats_id=stats.id, scaling_source=source, dtype=dtype)
    provenance = {"brainjepa_version": __version__, "commit": _git_commit(), "converted_from": str(official),
                  "official_sha256": sha256_file(official), "gradients": Path(gradients).name,
                  "gradients_sha256": sha256_file(gradients), "scaling": source}
    training = {"data": ["the released Brain-JEPA checkpoint (UK Biobank pretraining, per its paper)",
                         f"scaling: {source}"],
                "lines": ["not recorded in the release; see the Brain-JEPA paper"], "with_predictor": with_predictor}
    card = model_card(Path(out).name, model_config=cfg, inputs=inputs, atlas=atlas, training=training)
    return write_bundle(out, encoder_state=states["target_encoder"], model_config=cfg, rois=list(names),
                        inputs=inputs, scaling=stats, atlas=atlas, provenance=provenance, card=card,
                        networks=networks, predictor_state=states.get("predictor") if with_predictor else None)


# ----------------------------------------------------------------------------------------------- reading
def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: {what} is missing (not a model bundle folder?)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read {what} ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: {what} is not a JSON object")
    return value


def read_bundle(path: str | Path) -> Bundle:
    """A bundle's config, ROIs and scaling statistics (JSON and TSV only; the weights are not read)."""
    import pandas as pd

    from brainjepa.group.scaling import ScalingStats
    from brainjepa.io import check_roi_names
    from brainjepa.models.config import ModelConfig

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a model bundle folder (no such folder)")
    config = _read_json(path / CONFIG, "config.json")
    if config.get("format") != FORMAT:
        raise InputError(f"{path / CONFIG}: format {config.get('format')!r}, not {FORMAT!r}")
    try:
        model = ModelConfig.from_checkpoint(config["model"], f"{path / CONFIG}: model").resolved()
        inputs = InputSpec(**config["input"])
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path / CONFIG}: lacks or misnames a key ({exc})") from None
    try:
        table = pd.read_csv(path / ROIS, sep="\t", dtype={"name": str, "network": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path / ROIS}: cannot read the ROI table ({exc})") from None
    if "name" not in table.columns or len(table) != model.n_rois:
        raise InputError(f"{path / ROIS}: expected {model.n_rois} rows with a 'name' column, found {len(table)} "
                         f"rows and columns {list(table.columns)}")
    rois = tuple(table["name"].astype(str))
    columns = tuple(config.get("position_columns") or ())
    positions = table[list(columns)].to_numpy(dtype=np.float64) if columns else np.zeros((len(rois), 0))
    scaling = ScalingStats.load(path / SCALING)
    check_roi_names(list(scaling.rois), list(rois), path / SCALING, path / ROIS)
    if scaling.id != inputs.scaling_stats_id:
        raise InputError(f"{path / SCALING}: statistics {scaling.id}, config.json records {inputs.scaling_stats_id}")
    return Bundle(path, model, inputs, rois, tuple(table["network"].astype(str)) if "network" in table else (),
                  columns, positions, scaling, dict(config.get("atlas") or {}), tuple(config.get("modules", [])),
                  config)


def read_weights(path: str | Path, module: str = "encoder") -> dict:
    """The state dict of ``module`` (encoder | predictor) from a bundle's model.safetensors (safetensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path) / WEIGHTS
    if not file.exists():
        raise InputError(f"{file}: the bundle's weights are missing")
    try:
        tensors = load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{file}: cannot read the weights ({exc})") from None
    prefix = PREFIXES[module]
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise InputError(f"{file}: holds no {module} (keys {prefix}*)")
    return state


def load_model(path: str | Path, device: str = "cpu", drop_path: float = 0.0):
    """The encoder of a bundle, in eval mode on ``device``, ready for inference: x [B, 1, R, T] -> [B, R*W, D].

    Reads config.json, rois.tsv, scaling.json and model.safetensors only. The returned module has ``bundle``
    (the :class:`Bundle`: ROIs, TR, window, scaling statistics) as an attribute."""
    return load_bundle(path, device, drop_path)[0]


def load_bundle(path: str | Path, device: str = "cpu", drop_path: float = 0.0):
    """(encoder, :class:`Bundle`) of a bundle folder; see :func:`load_model`."""
    import dataclasses

    from brainjepa.models.weights import build_modules

    bundle = read_bundle(path)
    cfg = dataclasses.replace(bundle.model, drop_path=drop_path)
    encoder = build_modules(cfg, {"encoder": read_weights(path, "encoder")}, Path(path) / WEIGHTS,
                            fits="config.json's model")["encoder"]
    encoder.bundle = bundle
    return encoder.to(device).eval(), bundle
