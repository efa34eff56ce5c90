"""Robust scaling of ROI time series: per-ROI median and interquartile range.

Methods (config switch, docs/reference.md section 1):
- ``subject_mean`` (the public Brain-JEPA code, default): for each training subject take each ROI's temporal
  mean (averaged over the subject's runs); the statistics are the median and IQR of those means across
  subjects, per ROI.
- ``timepoints`` (as BrainLM intends): median and IQR per ROI over all time points of all training runs.
  Computed in two streaming passes (range, then a 65,536-bin histogram per ROI), so memory does not grow
  with the cohort; each order statistic is exact to half a bin (1/131,072 of the ROI's range).
- ``zscore`` (the public HCP-Aging scripts): no group statistics; each sample is z-scored over all its values.
- ``run_demean``: each ROI of each run minus its temporal mean, then ``(x - median) / iqr`` with the median and
  IQR per ROI over all time points of the training runs so demeaned (``timepoints`` on the fluctuations).
  Removes per-run baselines like ``roi_zscore`` but keeps each run's fluctuation amplitude, which
  ``roi_zscore`` divides out. Measured on the demo (``subject_mean``): the spread across subjects of an ROI's
  scaled mean is 0.69 against 0.047 for the fluctuations within a window, so baselines dominate every token.
- ``roi_zscore``: no group statistics; each ROI of each run is z-scored over time (as nilearn's
  ``standardize="zscore"``: population std, ddof 0). Removes per-run baselines and gains, which otherwise
  dominate the token content (a run's global intensity is trivially predictable from any context token).

Scaling is ``(x - median) / iqr`` per ROI. The statistics file is JSON with a content hash (``id``) that
the shards record, so a shard set and its statistics cannot be mixed up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainjepa.errors import InputError
from brainjepa.io import read_timeseries, write_text_atomic

METHODS = ("subject_mean", "timepoints", "run_demean", "zscore", "roi_zscore")
PER_SAMPLE = ("zscore", "roi_zscore")
HISTOGRAM_BINS = 65536


@dataclass(frozen=True)
class ScalingStats:
    """Per-ROI statistics. median, iqr: [R] (empty for ``zscore``); rois: ROI names in order."""

    method: str
    rois: tuple[str, ...]
    median: np.ndarray
    iqr: np.ndarray
    n_subjects: int

    @property
    def id(self) -> str:
        """Content hash: method, ROI names and the statistics (rounded to float32)."""
        digest = hashlib.sha256(self.method.encode())
        digest.update("\n".join(self.rois).encode())
        digest.update(np.asarray(self.median, dtype="<f4").tobytes())
        digest.update(np.asarray(self.iqr, dtype="<f4").tobytes())
        return digest.hexdigest()[:16]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Scale one run. x: [R, T] (ROI-major) -> [R, T] float32."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] != len(self.rois):
            raise InputError(f"run has {x.shape[0]} ROIs, the scaling statistics {len(self.rois)}")
        if self.method == "zscore":
            std = x.std()
            return ((x - x.mean()) / (std if std > 0 else 1.0)).astype(np.float32)
        if self.method == "roi_zscore":
            std = x.std(axis=1, keepdims=True)
            return ((x - x.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)).astype(np.float32)
        if self.method == "run_demean":
            x = x - x.mean(axis=1, keepdims=True)
        return ((x - self.median[:, None]) / self.iqr[:, None]).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "method": self.method, "n_subjects": self.n_subjects,
                           "rois": list(self.rois), "median": [float(v) for v in self.median],
                           "iqr": [float(v) for v in self.iqr]}, indent=1) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "ScalingStats":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            stats = cls(raw["method"], tuple(raw["rois"]), np.asarray(raw["median"], dtype=np.float64),
                        np.asarray(raw["iqr"], dtype=np.float64), int(raw["n_subjects"]))
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: not a scaling-statistics file ({exc})") from exc
        if stats.id != raw.get("id"):
            raise InputError(f"{path}: content does not match its id {raw.get('id')} (edited or corrupted)")
        return stats


def _read_run(path: Path, rois: tuple[str, ...] | None, demean: bool = False) -> tuple[np.ndarray, tuple[str, ...]]:
    """One run as [T, R] float64 and its ROI names; every run must have the same ROIs in the same order.

    demean: subtract each ROI's temporal mean (``run_demean``)."""
    frame, _ = read_timeseries(path)
    names = tuple(map(str, frame.columns))
    if rois is not None and names != rois:
        raise InputError(f"{path}: ROI columns differ from the other runs' ({len(names)} vs {len(rois)} ROIs)")
    data = frame.to_numpy(dtype=np.float64)
    return (data - data.mean(axis=0) if demean else data), names


def _subject_means(subjects: dict[str, list[Path]]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per subject, each ROI's temporal mean averaged over the subject's runs: [S, R]."""
    rois, means = None, []
    for key in sorted(subjects):
        run_means = []
        for path in subjects[key]:
            data, rois = _read_run(path, rois)
            run_means.append(data.mean(axis=0))
        means.append(np.mean(run_means, axis=0))
    return np.asarray(means), rois


def _timepoint_quantiles(paths: list[Path], qs: tuple[float, ...], demean: bool = False
                         ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Quantiles per ROI over all time points of all runs (each run demeaned first if ``demean``), in two
    streaming passes. Returns [len(qs), R]."""
    rois, lo, hi = None, None, None
    for path in paths:
        data, rois = _read_run(path, rois, demean)
        lo = data.min(axis=0) if lo is None else np.minimum(lo, data.min(axis=0))
        hi = data.max(axis=0) if hi is None else np.maximum(hi, data.max(axis=0))
    width = np.where(hi > lo, hi - lo, 1.0) / HISTOGRAM_BINS
    counts = np.zeros((len(lo), HISTOGRAM_BINS), dtype=np.int64)
    offsets = np.arange(len(lo))[None, :] * HISTOGRAM_BINS
    for path in paths:
        data, _ = _read_run(path, rois, demean)
        bins = np.clip(((data - lo) / width).astype(np.int64), 0, HISTOGRAM_BINS - 1)
        counts += np.bincount((bins + offsets).ravel(), minlength=counts.size).reshape(counts.shape)
    cumulative = np.cumsum(counts, axis=1)
    rows = np.arange(len(lo))

    def order_statistic(k: np.ndarray) -> np.ndarray:
        """Value of the k-th smallest element per ROI (to half a bin): the centre of the bin holding it."""
        b = np.array([np.searchsorted(cumulative[r], k[r], side="right") for r in rows])
        return lo + (b + 0.5) * width

    out = np.empty((len(qs), len(lo)))
    for i, q in enumerate(qs):
        rank = q * (cumulative[:, -1] - 1)  # numpy's default (linear) percentile definition
        below, frac = np.floor(rank), rank - np.floor(rank)
        out[i] = (1 - frac) * order_statistic(below) + frac * order_statistic(np.ceil(rank))
    return out, rois


def compute_scaling_stats(subjects: dict[str, list[Path]], method: str) -> ScalingStats:
    """Statistics from the runs of the given (training) subjects: {subject key: [run files]}."""
    if method not in METHODS:
        raise InputError(f"scaling method must be one of {METHODS}, not {method!r}")
    if not subjects:
        raise InputError("no training subjects to compute scaling statistics from")
    if method == "subject_mean":
        means, rois = _subject_means(subjects)
        q1, median, q3 = np.percentile(means, [25, 50, 75], axis=0)
    else:
        paths = [p for key in sorted(subjects) for p in subjects[key]]
        if method in PER_SAMPLE:
            _, rois = _read_run(paths[0], None)
            return ScalingStats(method, rois, np.zeros(0), np.zeros(0), len(subjects))
        (q1, median, q3), rois = _timepoint_quantiles(paths, (0.25, 0.5, 0.75), demean=method == "run_demean")
    iqr = q3 - q1
    flat = [rois[i] for i in np.flatnonzero(~(iqr > 0))]
    if flat:
        raise InputError(f"ROIs with zero interquartile range across the {len(subjects)} training subjects "
                         f"({method}): {flat[:10]}; robust scaling would divide by zero")
    return ScalingStats(method, rois, median, iqr, len(subjects))


def write_scaling_stats(stats: ScalingStats, path: str | Path) -> None:
    """``stats`` written at ``path`` as its JSON (:meth:`ScalingStats.to_json`), atomically."""
    write_text_atomic(path, stats.to_json())


def run_scaling_stats(splits_path: str | Path, runs_root: str | Path, method: str, out: str | Path,
                      mixed_tr: str = "error") -> ScalingStats:
    """The ``scaling`` stage: the pretraining set's runs (from the splits table) -> scaling statistics JSON.

    First the pretraining runs' effective TRs (after alignment) are logged per cohort and must agree
    (``mixed_tr``: error | warn; :func:`brainjepa.preprocess.align_tr.check_one_tr`)."""
    import logging

    from brainjepa.group.splits import pretraining_runs, read_splits, run_file, run_files
    from brainjepa.preprocess.align_tr import check_one_tr, describe_trs, effective_trs

    runs = pretraining_runs(read_splits(splits_path))
    trs = effective_trs({c: [run_file(runs_root, r) for r in rows["run_id"]] for c, rows in runs.groupby("cohort")})
    log = logging.getLogger("brainjepa")
    log.info("pretraining set, effective TR per cohort: %s", describe_trs(trs))
    warning = check_one_tr(trs, "the pretraining set", mixed_tr)
    if warning:
        log.warning(warning)
    stats = compute_scaling_stats(run_files(runs, runs_root), method)
    write_scaling_stats(stats, out)
    return stats
