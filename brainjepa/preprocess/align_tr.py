"""TR alignment: bring every run to one sampling interval before windows are cut.

``stride``: the paper's integer decimation, stride = round(target / TR) (3 for UK Biobank's 0.735 s, giving
2.205 s), no filtering, as Brain-JEPA does. ``resample``: anti-aliased polyphase resampling
(``scipy.signal.resample_poly``) by the rational factor TR / target, so the output has exactly the target TR
whenever that ratio is rational with a small denominator (all scanner TRs in practice).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from brainjepa.errors import InputError
from brainjepa.io import read_timeseries, write_timeseries

METHODS = ("stride", "resample")
MAX_DENOMINATOR = 1000


def stride_for(tr: float, target_tr: float) -> int:
    """The integer decimation factor closest to target / TR (at least 1)."""
    return max(1, int(round(target_tr / tr)))


def align_stride(ts: np.ndarray, tr: float, target_tr: float) -> tuple[np.ndarray, float]:
    """Keep every k-th time point, k = round(target / TR). ts: [T, R]. Returns ([ceil(T/k), R], k * TR)."""
    k = stride_for(tr, target_tr)
    return ts[::k], tr * k


def align_resample(ts: np.ndarray, tr: float, target_tr: float) -> tuple[np.ndarray, float]:
    """Polyphase resampling by up/down = TR/target (anti-aliasing FIR, linear end padding).

    ts: [T, R] -> [~T * TR / target, R]; returns the series and the TR it actually has (seconds).
    """
    from scipy.signal import resample_poly  # imported here: 1 s, and stride needs none

    ratio = Fraction(tr / target_tr).limit_denominator(MAX_DENOMINATOR)
    up, down = ratio.numerator, ratio.denominator
    if up == down:
        return ts.copy(), tr
    out = resample_poly(ts.astype(np.float64), up, down, axis=0, padtype="line")
    return out, tr * down / up


def align_tr(ts: np.ndarray, tr: float, target_tr: float, method: str) -> tuple[np.ndarray, float]:
    """Align a [T, R] series sampled every ``tr`` seconds to ``target_tr``; returns (series, actual TR)."""
    if method not in METHODS:
        raise ValueError(f"TR alignment method must be one of {METHODS}, not {method!r}")
    if not (tr > 0 and target_tr > 0):
        raise InputError(f"TR {tr} s and target TR {target_tr} s must be positive")
    if method == "stride":
        if target_tr < tr * (1 - 1e-3):   # decimation cannot shorten the TR: it would silently keep the run as is
            raise InputError(f"TR {tr:g} s is longer than the target TR {target_tr:g} s: the 'stride' method only "
                             "drops time points (it cannot make the TR shorter); use align_tr.method 'resample', "
                             "or a target TR of at least every run's TR")
        return align_stride(ts, tr, target_tr)
    return align_resample(ts, tr, target_tr)


def run_align_tr(in_path: str | Path, out_path: str | Path, target_tr: float, method: str) -> float:
    """The ``align-tr`` stage for one run file; returns the TR the output has."""
    frame, meta = read_timeseries(in_path)
    out, actual = align_tr(frame.to_numpy(dtype=np.float64), float(meta["tr"]), target_tr, method)
    meta = {**meta, "tr": actual, "source_tr": float(meta["tr"]), "target_tr": float(target_tr),
            "tr_alignment": method, "n_volumes": int(len(out))}
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
