"""TR alignment: bring every run to one sampling interval before windows are cut.

``stride``: the paper's integer decimation, stride = round(target / TR) (3 for UK Biobank's 0.735 s, giving
2.205 s), no filtering, as Brain-JEPA does. ``resample``: anti-aliased polyphase resampling
(``scipy.signal.resample_poly``) by the rational factor TR / target, so the output has exactly the target TR
whenever that ratio is rational with a small denominator (all scanner TRs in practice).

Every TR read from a run file is held to (0, ``bids.MAX_TR_S``] seconds, the sample sheet's range, and
resampling refuses an output longer than its bounds (:func:`check_resampled_length`) before allocating it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from brainjepa import bids
from brainjepa.errors import InputError
from brainjepa.io import read_timeseries, write_timeseries

METHODS = ("stride", "resample")
MAX_DENOMINATOR = 1000
# Resampling only interpolates between a run's samples. Real TR pairs up-sample by a few times at most (a 3 s run
# to a 0.72 s target: 4.2x); MAX_UPSAMPLING = 30 admits a run at the longest plausible TR (bids.MAX_TR_S, 30 s)
# to a 1 s target. More output time points per input one is a unit slip in a TR or in the target TR.
MAX_UPSAMPLING = 30
# 100,000 time points: 55 hours at 2 s, 2.8 hours at 0.1 s, far beyond any fMRI run (the longest public runs hold a
# few thousand volumes); with 450 ROIs the float64 output is 360 MB.
MAX_RESAMPLED_TIMEPOINTS = 100_000


def stride_for(tr: float, target_tr: float) -> int:
    """The integer decimation factor closest to target / TR (at least 1)."""
    return max(1, int(round(target_tr / tr)))


def align_stride(ts: np.ndarray, tr: float, target_tr: float) -> tuple[np.ndarray, float]:
    """Keep every k-th time point, k = round(target / TR). ts: [T, R]. Returns ([ceil(T/k), R], k * TR)."""
    k = stride_for(tr, target_tr)
    return ts[::k], tr * k


def _where(source: str | Path | None) -> str:
    return f"{source}: " if source is not None else ""


def check_resampled_length(n_in: int, n_out: int, tr: float, target_tr: float,
                           source: str | Path | None = None) -> None:
    """Refuse a resampled run of ``n_out`` time points (from ``n_in`` at ``tr`` seconds, to ``target_tr`` seconds)
    longer than ``MAX_UPSAMPLING`` times its input or than ``MAX_RESAMPLED_TIMEPOINTS``."""
    if n_out <= min(MAX_UPSAMPLING * n_in, MAX_RESAMPLED_TIMEPOINTS):
        return
    bound = (f"at most {MAX_UPSAMPLING} times the input's time points" if n_out > MAX_UPSAMPLING * n_in
             else f"no more than {MAX_RESAMPLED_TIMEPOINTS} time points")
    raise InputError(f"{_where(source)}resampling from TR {tr:.10g} s to the target TR {target_tr:.10g} s would turn "
                     f"{n_in} time points into {n_out}; a TR alignment gives {bound}. Check the units of the run's "
                     "TR and of align_tr.target_tr (--target-tr), both in seconds")


def align_resample(ts: np.ndarray, tr: float, target_tr: float,
                   source: str | Path | None = None) -> tuple[np.ndarray, float]:
    """Polyphase resampling by up/down = TR/target (anti-aliasing FIR, linear end padding).

    ts: [T, R] -> [ceil(T * up / down), R] (~T * TR / target); returns the series and the TR it actually has
    (seconds). An output beyond :func:`check_resampled_length`'s bounds is an error, raised before allocating it.
    """
    from scipy.signal import resample_poly  # imported here: 1 s, and stride needs none

    ratio = Fraction(tr / target_tr).limit_denominator(MAX_DENOMINATOR)
    up, down = ratio.numerator, ratio.denominator
    if up == down:
        return ts.copy(), tr
    check_resampled_length(len(ts), -(-len(ts) * up // down), tr, target_tr, source)
    out = resample_poly(ts.astype(np.float64), up, down, axis=0, padtype="line")
    return out, tr * down / up


def align_tr(ts: np.ndarray, tr: float, target_tr: float, method: str,
             source: str | Path | None = None) -> tuple[np.ndarray, float]:
    """Align a [T, R] series sampled every ``tr`` seconds to ``target_tr``; returns (series, actual TR).

    ``source``: the run's file, named by errors."""
    if method not in METHODS:
        raise ValueError(f"TR alignment method must be one of {METHODS}, not {method!r}")
    if not (tr > 0 and target_tr > 0):
        raise InputError(f"{_where(source)}TR {float(tr):.10g} s and target TR {float(target_tr):.10g} s must be "
                         "positive")
    if method == "stride":
        if target_tr < tr * (1 - 1e-3):   # decimation cannot shorten the TR: it would silently keep the run as is
            raise InputError(f"{_where(source)}TR {tr:g} s is longer than the target TR {target_tr:g} s: the "
                             "'stride' method only "
                             "drops time points (it cannot make the TR shorter); use align_tr.method 'resample', "
                             "or a target TR of at least every run's TR")
        return align_stride(ts, tr, target_tr)
    return align_resample(ts, tr, target_tr, source)


def run_align_tr(in_path: str | Path, out_path: str | Path, target_tr: float, method: str) -> float:
    """The ``align-tr`` stage for one run file; returns the TR the output has."""
    frame, meta = read_timeseries(in_path)
    tr = bids.check_tr(meta.get("tr"), in_path, "its metadata 'tr'", "rerun parcellate with the run's tr (seconds) "
                       "in the sample sheet")
    out, actual = align_tr(frame.to_numpy(dtype=np.float64), tr, target_tr, method, in_path)
    from brainjepa.provenance import make_record

    meta = {**meta, "tr": actual, "source_tr": tr, "target_tr": float(target_tr),
            "tr_alignment": method, "n_volumes": int(len(out)),
            "provenance": {**make_record("align-tr", {"target_tr": float(target_tr), "method": method},
                                         {"in": [in_path]}), "upstream": meta.get("provenance")}}
    write_timeseries(out.astype(np.float32), list(frame.columns), out_path, meta)
    return actual


def align_tr_runs(in_paths: list[str | Path], out_paths: list[str | Path], target_tr: float,
                  method: str) -> list[float]:
    """The ``align-tr`` stage for many run files in one process (in_paths[i] -> out_paths[i]); returns the TRs.

    An error names the run file.
    """
    from brainjepa.batches import for_each_run

    if len(in_paths) != len(out_paths):
        raise InputError(f"align-tr: {len(in_paths)} input files but {len(out_paths)} output files")
    actual: list[float] = []
    for_each_run([(str(src), (src, dst)) for src, dst in zip(in_paths, out_paths)],
                 lambda pair: actual.append(run_align_tr(pair[0], pair[1], target_tr, method)), "align-tr")
    return actual


MIXED_TR_POLICIES = ("error", "warn")


def effective_trs(run_paths: dict[str, list[str | Path]]) -> dict[str, dict[float, int]]:
    """{cohort: {effective TR (s, to 0.1 ms): runs}} of aligned run files, from their metadata (no data read)."""
    from brainjepa.io import read_timeseries_file_metadata

    out: dict[str, dict[float, int]] = {}
    for cohort, paths in sorted(run_paths.items()):
        counts: dict[float, int] = {}
        for path in paths:
            meta = read_timeseries_file_metadata(path) or {}
            try:
                tr = round(float(meta["tr"]), 4)
            except (KeyError, ValueError, TypeError) as exc:
                raise InputError(f"{path}: cannot read the TR of an aligned run ({exc!r})") from None
            counts[tr] = counts.get(tr, 0) + 1
        out[cohort] = dict(sorted(counts.items()))
    return out


def describe_trs(trs: dict[str, dict[float, int]]) -> str:
    """'ukbsim: 2.205 s (408 runs); adnisim: 2 s (66 runs)'."""
    return "; ".join(f"{cohort}: " + ", ".join(f"{tr:g} s ({n} runs)" for tr, n in counts.items())
                     for cohort, counts in trs.items())


def check_one_tr(trs: dict[str, dict[float, int]], what: str, policy: str = "error",
                 rel_tol: float = 0.01) -> str | None:
    """Refuse (policy 'error') or return a warning ('warn') when the runs of ``trs`` differ in effective TR by more
    than ``rel_tol``: a model pretrained on mixed sampling rates learns time patches of different lengths.
    None when they agree."""
    if policy not in MIXED_TR_POLICIES:
        raise InputError(f"align_tr.mixed_tr: {policy!r} is not one of {', '.join(MIXED_TR_POLICIES)}")
    values = sorted({tr for counts in trs.values() for tr in counts})
    if not values or values[-1] <= values[0] * (1 + rel_tol):
        return None
    message = (f"{what} mixes effective TRs after alignment: {describe_trs(trs)}. align_tr.method: resample "
               "brings every run to exactly align_tr.target_tr (stride keeps round(target/TR) x TR); "
               "align_tr.mixed_tr: warn accepts the mix")
    if policy == "error":
        raise InputError(message)
    return message
