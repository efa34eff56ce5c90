"""Representation monitors of a pretraining run: does the encoder still tell its inputs apart?

The loss does not say when a JEPA collapses (facebookresearch/vjepa2 #74, Brain-JEPA #14). These monitors do, on a
fixed set of windows that the run never trains on (the shards' ``monitor`` split: pretraining subjects held out of
training, :func:`brainjepa.data.shards.monitor_subjects_of`), for the context and the target encoder, at step 0 and
every ``run.monitor_every`` optimizer steps:

- ``rankme_pooled``: RankMe (Garrido et al., ICML 2023) of the mean-pooled features, one row per window: the
  effective dimension of what the encoder says about whole windows. Pooling removes the positional part.
- ``rankme_tokens``: RankMe of the token features, one row per (window, token) (subsampled to at most
  ``MAX_TOKEN_ROWS`` rows, a fixed choice): high also when the features vary with position only.
- ``input_share``: the input-dependent share of the token variance, the variance across windows at each token
  position over the total (1 - between-position / total: an LDA-type ratio with the positions as classes, as
  LiDAR takes samples): 1 when position says nothing, 0 when the features are those of the position alone
  (positional collapse) or constant.

RankMe is exp of the entropy of the normalised singular values (``p_k = s_k / sum(s) + 1e-7``) of the row-centred
matrix (a shared offset is no dimension of variation), in [1, min(N - 1, D)].
Neither has a universal threshold; the run's own initialisation is the reference: a monitor below
``run.collapse_fraction`` of its step-0 value is reported (``run.collapse: warn``) or stops the run (``stop``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch

from brainjepa.errors import InputError

MONITORS = ("rankme_pooled", "rankme_tokens", "input_share")
MAX_TOKEN_ROWS = 16384   # token rows of rankme_tokens (an SVD of at most 16384 x D)
EPS = 1e-7


def rankme(z: torch.Tensor) -> float:
    """RankMe of embeddings z: [N, D] -> exp(entropy of the singular values normalised to sum 1), of the matrix
    centred over its rows (an offset shared by every row is no dimension of variation: 1 for constant rows); NaN
    for N < 2."""
    if z.shape[0] < 2:
        return float("nan")
    z = z.double()
    s = torch.linalg.svdvals(z - z.mean(dim=0, keepdim=True))
    if not float(s.sum()) > 0:
        return 1.0
    p = s / s.sum() + EPS
    return float(torch.exp(-(p * torch.log(p)).sum()))


def input_share(tokens: torch.Tensor) -> float:
    """The input-dependent share of the variance of tokens [N, P, D] (N windows, P positions): the mean over
    positions of the variance across windows, over the variance around the grand mean; 0 for constant tokens."""
    if tokens.shape[0] < 2:
        return float("nan")
    t = tokens.double()
    total = ((t - t.mean(dim=(0, 1), keepdim=True)) ** 2).sum(-1).mean()
    within = ((t - t.mean(dim=0, keepdim=True)) ** 2).sum(-1).mean()
    return float(within / total) if float(total) > 0 else 0.0


def token_rows(tokens: torch.Tensor, limit: int = MAX_TOKEN_ROWS) -> torch.Tensor:
    """tokens [N, P, D] -> [min(N * P, limit), D]: every token, or evenly spaced ones (a fixed choice)."""
    flat = tokens.reshape(-1, tokens.shape[-1])
    if flat.shape[0] <= limit:
        return flat
    return flat[torch.linspace(0, flat.shape[0] - 1, limit).round().long()]


@torch.no_grad()
def encoder_monitors(encoder: torch.nn.Module, windows: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """The monitors of one encoder on windows [N, 1, R, T] (all tokens, eval mode; the mode is restored)."""
    was_training = encoder.training
    encoder.eval()
    try:
        device = next(encoder.parameters()).device
        tokens = torch.cat([encoder(windows[i:i + batch_size].to(device)).float().cpu()
                            for i in range(0, len(windows), batch_size)])           # [N, P, D]
    finally:
        encoder.train(was_training)
    return {"rankme_pooled": rankme(tokens.mean(dim=1)), "rankme_tokens": rankme(token_rows(tokens)),
            "input_share": input_share(tokens)}


def representation_monitors(encoders: dict[str, torch.nn.Module], windows: torch.Tensor,
                            batch_size: int = 64) -> dict[str, float]:
    """``{f"{name}_{monitor}": value}`` for each encoder (e.g. context, target) on the same windows."""
    return {f"{name}_{key}": value for name, encoder in encoders.items()
            for key, value in encoder_monitors(encoder, windows, batch_size).items()}


def narrowed(values: dict[str, float], reference: dict[str, float], fraction: float) -> list[str]:
    """The monitors below ``fraction`` of their reference (step-0) value, each as 'name value < fraction x ref'."""
    out = []
    for key, value in values.items():
        ref = reference.get(key)
        if ref is None or not math.isfinite(ref) or ref <= 0 or not math.isfinite(value):
            continue
        if value < fraction * ref:
            out.append(f"{key} {value:.4g} < {fraction:g} x its step-0 value {ref:.4g}")
    return out


def monitor_windows(manifest_path: str, split: str, window: int, limit: int,
                    shard_url: str | None = None) -> torch.Tensor | None:
    """At most ``limit`` windows [N, 1, R, window] of the manifest's ``split`` (every non-overlapping window of
    each run from time 0, in the manifest's order: a fixed set), or None when the manifest has no such split."""
    from brainjepa.data.dataset import ShardDataset
    from brainjepa.data.shards import load_manifest

    if split not in load_manifest(manifest_path)["splits"]:
        return None
    if limit < 2:
        raise InputError(f"run.monitor_windows must be at least 2, got {limit}")
    dataset = ShardDataset(manifest_path, split, window=window, mode="eval", rank=0, world_size=1,
                           shard_url=shard_url)
    windows = []
    for x, _ in dataset:
        windows.append(x)
        if len(windows) == limit:
            break
    return torch.stack(windows) if windows else None


def read_monitors(path: str | Path) -> pd.DataFrame | None:
    """A run's monitors.csv (step, epoch, then ``<encoder>_<monitor>`` columns), or None when the run has none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read the representation monitors ({exc})") from None
    return frame if len(frame) and "step" in frame.columns else None


def monitor_summary(path: str | Path, fraction: float) -> dict | None:
    """What a run's monitors say: its last row against its step-0 row ``{"step", "values", "reference",
    "narrowed": [...]}`` (:func:`narrowed` at ``fraction``), or None without monitors."""
    frame = read_monitors(path)
    if frame is None:
        return None
    columns = [c for c in frame.columns if c not in ("step", "epoch")]
    last = {c: float(frame[c].iloc[-1]) for c in columns}
    first = frame[frame["step"] == 0]
    reference = {c: float(first[c].iloc[0]) for c in columns} if len(first) else {}
    return {"step": int(frame["step"].iloc[-1]), "values": last, "reference": reference,
            "narrowed": narrowed(last, reference, fraction) if reference else []}
