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
    from brainjepa.provenance import make_record

    meta = {**meta, "tr": actual, "source_tr": float(meta["tr"]), "target_tr": float(target_tr),
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
