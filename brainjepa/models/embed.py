"""``brainjepa embed``: a model bundle applied to anyone's ROI time series, the way it was trained.

Per run, with the package's own stages: read (:func:`brainjepa.preprocess.parcellate.read_timeseries_file`: tsv,
csv, npy or Parquet, columns matched to the bundle's ROIs by name), TR alignment to the bundle's TR
(:func:`brainjepa.preprocess.align_tr.align_tr`, the bundle's method), scaling with the bundle's statistics
(:meth:`ScalingStats.apply`, rounded to the training shards' dtype), every non-overlapping window from time 0
(:func:`brainjepa.data.schedule.window_starts`, ``mode="eval"``, as the evaluation stage), the frozen encoder's
features (:func:`brainjepa.evaluate.features.extract`). On a run of the training pipeline (already aligned and with
the same statistics) this gives the evaluation stage's features of the same windows.

Output (Parquet, one row per window, written atomically): ``run_id`` (the sheet's run id, or the file),
``source`` (the file), ``window`` (index within the run), ``start`` (time step at the bundle's TR), ``start_s``,
``tr`` (the run's TR after alignment), ``pooled`` (list of D float32: the mean over the window's tokens) and, on
request, ``roi_embeddings`` (list of R x D float32, ROI-major: each ROI's tokens averaged over its time patches).
Its ``brainjepa`` metadata holds the bundle's config, the ROI names and the shapes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainjepa.errors import InputError

log = logging.getLogger("brainjepa.embed")
OUTPUT_FORMAT = "brainjepa-embeddings/1"


@dataclass(frozen=True)
class RunInput:
    """One run to embed: its id in the output, its file, and its TR when the file does not carry one."""

    run_id: str
    path: Path
    tr: float | None = None


def runs_from_sheet(sheet: str | Path) -> list[RunInput]:
    """The ``timeseries`` rows of a sample sheet (brainjepa.sheets.load_samples: run ids, files, TRs)."""
    import math

    from brainjepa.sheets import load_samples

    frame = load_samples(sheet)
    bold = frame[frame["timeseries"].astype(str) == ""]
    if len(bold):
        raise InputError(f"{sheet}: run(s) {list(bold['run_id'])[:5]} have a BOLD file, not a parcellated time "
                         "series: parcellate them first (brainjepa parcellate), then list the time series")
    return [RunInput(str(r["run_id"]), Path(str(r["timeseries"])), None if math.isnan(r["tr"]) else float(r["tr"]))
            for r in frame.to_dict("records")]


def prepare_run(run: RunInput, bundle, unnamed_columns: str = "error",
                tr_alignment: str | None = None) -> tuple[np.ndarray, float]:
    """A run as the encoder takes it: [R, T'] float32, aligned to the bundle's TR and scaled; and its TR.

    Refused, naming the file: ROIs that are not the bundle's (the missing and the extra ones), a TR that the
    alignment cannot bring to the bundle's (within 1 %), a run shorter than one window after alignment."""
    from brainjepa.data.shards import DTYPES
    from brainjepa.models.bundle import TR_TOLERANCE
    from brainjepa.preprocess.align_tr import align_tr
    from brainjepa.preprocess.parcellate import read_timeseries_file

    spec = bundle.input
    method = tr_alignment or spec.tr_alignment
    if run.tr is None and not str(run.path).lower().endswith(".parquet"):
        raise InputError(f"{run.path}: no TR: give it (embed --tr SECONDS, or the sheet's 'tr' column); only "
                         "brainjepa Parquet files carry their own")
    data, meta = read_timeseries_file(run.path, list(bundle.rois), run.tr, unnamed_columns,
                                      against=f"the model's ROIs ({bundle.path / 'rois.tsv'})")
    tr = float(meta["tr"])
    aligned, actual = align_tr(data.astype(np.float64), tr, spec.tr, method, run.path)
    if abs(actual - spec.tr) > TR_TOLERANCE * spec.tr:
        raise InputError(f"{run.path}: TR {tr:g} s becomes {actual:g} s with '{method}' alignment, not the model's "
                         f"{spec.tr:g} s (within {TR_TOLERANCE:.0%}); "
                         + ("'stride' keeps every round(target/TR)-th volume: use --tr-alignment resample"
                            if method == "stride" else "check the run's TR"))
    if len(aligned) < spec.window:
        raise InputError(f"{run.path}: {len(aligned)} time points at TR {actual:g} s ({len(data)} at {tr:g} s before "
                         f"alignment), shorter than the model's window of {spec.window} time steps "
                         f"({spec.window * spec.tr:g} s)")
    scaled = bundle.scaling.apply(aligned.T)                                           # [R, T']
    scaled = scaled.astype(DTYPES.get(spec.dtype, np.float32)).astype(np.float32)     # as the training shards
    if not np.isfinite(scaled).all():
        r, t = np.argwhere(~np.isfinite(scaled))[0]
        raise InputError(f"{run.path}: scaled value at ROI '{bundle.rois[r]}', time point {int(t) + 1} is not finite "
                         f"in {spec.dtype}")
    return scaled, actual


def _schema(embed_dim: int, n_rois: int, roi_embeddings: bool, metadata: dict):
    import pyarrow as pa

    from brainjepa.io import METADATA_KEY

    fields = [pa.field("run_id", pa.string()), pa.field("source", pa.string()), pa.field("window", pa.int32()),
              pa.field("start", pa.int64()), pa.field("start_s", pa.float64()), pa.field("tr", pa.float64()),
              pa.field("pooled", pa.list_(pa.float32(), embed_dim))]
    if roi_embeddings:
        fields.append(pa.field("roi_embeddings", pa.list_(pa.float32(), n_rois * embed_dim)))
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})


def embed(model: str | Path, runs: list[RunInput], out: str | Path, *, roi_embeddings: bool = False,
          device: str = "auto", batch_size: int = 32, precision: str = "auto", unnamed_columns: str = "error",
          tr_alignment: str | None = None, progress: bool = True) -> int:
    """Embed every window of ``runs`` with the bundle ``model``; write ``out`` (Parquet). Returns the windows.

    Runs are read one at a time (memory: one run and its windows); a refused run stops the command and leaves no
    ``out``. Progress (windows done, rate) goes to stderr, in steps of 8 batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from brainjepa.data.schedule import window_starts
    from brainjepa.evaluate.features import extract
    from brainjepa.io import atomic_path
    from brainjepa.models.bundle import load_bundle
    from brainjepa.train.runtime import autocast_for, setup_distributed

    if not runs:
        raise InputError("embed: no time series given (--timeseries FILE... or --sheet FILE)")
    if batch_size < 1:
        raise InputError(f"embed: --batch-size must be a positive integer, not {batch_size}")
    ids = [r.run_id for r in runs]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise InputError(f"embed: run(s) listed twice: {repeated[:5]}")
    _, dev = setup_distributed(device)
    encoder, bundle = load_bundle(model, str(dev))
    spec, dim, n_rois = bundle.input, bundle.model.embed_dim, len(bundle.rois)
    metadata = {"format": OUTPUT_FORMAT, "model": str(model), "bundle_config": bundle.config,
                "roi_names": list(bundle.rois), "embed_dim": dim,
                "roi_embeddings_shape": [n_rois, dim] if roi_embeddings else None}
    schema = _schema(dim, n_rois, roi_embeddings, metadata)
    chunk = 8 * batch_size
    total = 0
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer, \
            tqdm(unit="window", desc="embed", disable=not progress) as bar:
        for i, run in enumerate(runs):
            scaled, tr = prepare_run(run, bundle, unnamed_columns, tr_alignment)       # [R, T'] at the bundle's TR
            starts = window_starts(scaled.shape[1], spec.window, mode="eval")
            bar.set_postfix_str(f"run {i + 1}/{len(runs)}")
            for c0 in range(0, len(starts), chunk):
                part = starts[c0:c0 + chunk]
                windows = np.stack([scaled[:, s:s + spec.window] for s in part])      # [N, R, window]
                pooled, rois = extract(encoder, windows, bundle.model.n_time_patches, dev, batch_size,
                                       lambda: autocast_for(dev, precision))
                columns = {"run_id": [run.run_id] * len(part), "source": [str(run.path)] * len(part),
                           "window": np.arange(c0, c0 + len(part), dtype=np.int32),
                           "start": np.asarray(part, np.int64), "start_s": np.asarray(part, np.float64) * tr,
                           "tr": np.full(len(part), tr), "pooled": _fixed_list(pooled, dim)}
                if roi_embeddings:
                    columns["roi_embeddings"] = _fixed_list(rois.reshape(len(part), -1), n_rois * dim)
                writer.write_table(pa.table(columns, schema=schema))
                bar.update(len(part))
            total += len(starts)
            log.debug("%s: %d windows", run.path, len(starts))
    log.info("%s: %d windows of %d run(s) through %s", out, total, len(runs), model)
    return total


def _fixed_list(values: np.ndarray, width: int):
    """[N, width] -> an Arrow fixed-size list array of float32."""
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def read_embeddings(path: str | Path) -> tuple[dict, dict]:
    """An embed output as arrays: ``{"run_id", "source", "window", "start", "start_s", "tr", "pooled" [N, D],
    "roi_embeddings" [N, R, D] (when written)}`` and its metadata."""
    import pyarrow.parquet as pq

    from brainjepa.io import read_timeseries_metadata

    table = pq.read_table(path)
    meta = read_timeseries_metadata(table) or {}
    if meta.get("format") != OUTPUT_FORMAT:
        raise InputError(f"{path}: not an embed output (format {meta.get('format')!r})")
    out = {name: table[name].to_numpy() for name in ("run_id", "source", "window", "start", "start_s", "tr")}
    n, d = table.num_rows, int(meta["embed_dim"])
    out["pooled"] = table["pooled"].combine_chunks().flatten().to_numpy().reshape(n, d)
    if "roi_embeddings" in table.column_names:
        out["roi_embeddings"] = table["roi_embeddings"].combine_chunks().flatten().to_numpy().reshape(n, -1, d)
    return out, meta
