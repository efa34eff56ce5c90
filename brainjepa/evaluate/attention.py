"""Network attention (paper Fig. 7): how much attention each atlas network receives, compared between groups.

Per window, the exact attention weights of one block (``layer``, default the last) are taken from
:meth:`BrainEncoder.forward_with_attention` (softmax(QK^T/sqrt(d)), one layer at a time, in batches, so memory
stays at one [B, H, N, N] tensor whatever the depth). Heads: their mean, or the listed heads' mean. Then a
score per token, by ``direction``:

* ``received`` (default): the mean over all query tokens of the weight they put on the token (column mean; the
  scores of a window sum to 1);
* ``given``: the share of the token's own attention that goes to tokens of *other* ROIs (1 minus its weight on
  its own ROI's time patches): how much the ROI integrates the rest of the brain (row sums are 1, so the plain
  row mean would be uniform).

Per ROI: the mean over its time patches; per subject: the mean over its windows; per group (the subjects of
each value of the task's label): the mean over subjects. Per network: the mean over its ROIs (cortical
networks and ``Subcortical``), normalised so that the networks of a group sum to 1. Two groups also get the
per-network difference and a permutation p-value (labels of subjects shuffled, 2,000 permutations, two-sided,
seeded), because a difference of normalised means says nothing about its noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from brainjepa.config import from_mapping
from brainjepa.errors import InputError

N_PERMUTATIONS = 2000


@dataclass(frozen=True)
class AttentionConfig:
    """``figures.attention`` of the workflow config."""

    encoder: str = "jepa"                 # a name of evaluate.encoders
    task: str = ""                        # a classification task of evaluate.tasks: its subjects and groups
    layer: int = -1                       # block index (negative: from the end)
    heads: list[int] = field(default_factory=list)   # empty: the mean of all heads
    direction: Literal["received", "given"] = "received"
    batch_size: int = 4

    @classmethod
    def from_dict(cls, d: dict) -> AttentionConfig:
        cfg = from_mapping(cls, d, "figures.attention")
        if cfg.batch_size < 1:
            raise InputError("figures.attention.batch_size must be at least 1")
        return cfg


def token_scores(weights, n_rois: int, n_patches: int, direction: str):
    """Attention weights [B, H', N, N] (N = R * W tokens, ROI-major) -> per-ROI scores [B, R].

    ``weights`` already holds the chosen heads; they are averaged here."""
    w = weights.float().mean(dim=1)                                        # [B, N, N]
    b = w.shape[0]
    if direction == "received":
        per_token = w.mean(dim=1)                                          # [B, N]: column means
    elif direction == "given":
        blocks = w.reshape(b, n_rois, n_patches, n_rois, n_patches)
        own = blocks.diagonal(dim1=1, dim2=3).sum(dim=2)                   # [B, W (query), R]
        per_token = (1.0 - own.transpose(1, 2)).reshape(b, n_rois * n_patches)
    else:
        raise InputError(f"figures.attention.direction must be received or given, not {direction!r}")
    return per_token.reshape(b, n_rois, n_patches).mean(dim=2)             # [B, R]


def roi_attention(encoder, data: np.ndarray, cfg: AttentionConfig, device) -> np.ndarray:
    """data [N, R, T] -> per-window ROI scores [N, R] (float64), in batches of ``cfg.batch_size``."""
    import torch

    encoder.eval()
    n_rois, n_patches = encoder.cfg.n_rois, encoder.cfg.n_time_patches
    heads = list(cfg.heads)
    n_heads = encoder.blocks[0].attn.num_heads
    bad = [h for h in heads if not 0 <= h < n_heads]
    if bad:
        raise InputError(f"figures.attention.heads {bad} out of range: the encoder has {n_heads} heads")
    out = []
    for i in range(0, len(data), cfg.batch_size):
        x = torch.from_numpy(np.ascontiguousarray(data[i:i + cfg.batch_size])).unsqueeze(1).to(device)
        with torch.no_grad():
            _, (weights,) = encoder.forward_with_attention(x, layers=[cfg.layer])
            if heads:
                weights = weights[:, heads]
            out.append(token_scores(weights, n_rois, n_patches, cfg.direction).double().cpu().numpy())
            del weights
    return np.concatenate(out)


def network_table(subject_scores: np.ndarray, groups: np.ndarray, networks: np.ndarray, seed: int = 0
                  ) -> pd.DataFrame:
    """Subject-level ROI scores [S, R], each subject's group [S] and each ROI's network [R] -> one row per
    (group, network): value (normalised: a group's networks sum to 1), n_subjects, n_rois; with exactly two
    groups also ``difference`` (second minus first, sorted order) and ``p_permutation`` per network."""
    order = list(dict.fromkeys(networks))
    member = np.stack([networks == n for n in order], axis=1).astype(float)   # [R, K]
    per_net = subject_scores @ member / member.sum(axis=0)                    # [S, K]: mean over the ROIs
    names = sorted(set(groups), key=str)

    def normalised(rows: np.ndarray) -> np.ndarray:
        mean = rows.mean(axis=0)
        return mean / mean.sum()

    values = {g: normalised(per_net[groups == g]) for g in names}
    table = pd.DataFrame([{"group": str(g), "network": n, "value": values[g][k], "n_subjects": int((groups == g).sum()),
                           "n_rois": int(member[:, k].sum())} for g in names for k, n in enumerate(order)])
    if len(names) == 2:
        observed = values[names[1]] - values[names[0]]
        rng = np.random.default_rng(seed)
        exceed = np.zeros(len(order))
        for _ in range(N_PERMUTATIONS):
            perm = rng.permutation(groups)
            diff = normalised(per_net[perm == names[1]]) - normalised(per_net[perm == names[0]])
            exceed += np.abs(diff) >= np.abs(observed) - 1e-15
        p = (exceed + 1) / (N_PERMUTATIONS + 1)
        table["difference"] = np.tile(observed, len(names))
        table["p_permutation"] = np.tile(p, len(names))
    return table


def run_network_attention(encoder_spec: dict, shards: str | Path, task_spec: dict, labels_path: str | Path,
                          cfg: AttentionConfig, out_networks: str | Path, out_rois: str | Path, seed: int = 0,
                          device_kind: str = "auto") -> pd.DataFrame:
    """The ``network_attention`` stage: every train/val/test window of a classification task's subjects through
    one encoder; writes the network table and the per-ROI table (group, roi, network, value) as TSVs."""
    import logging
    import time

    from brainjepa.data.shards import load_manifest
    from brainjepa.evaluate.encoders import load_encoder
    from brainjepa.evaluate.job import torch_job
    from brainjepa.evaluate.tasks import TaskConfig, load_task, split_manifests, subject_mean
    from brainjepa.io import write_tsv_atomic
    from brainjepa.preprocess.atlas import read_label_table

    task = TaskConfig.from_dict(task_spec.pop("name", cfg.task), task_spec)
    if task.kind == "regression":
        raise InputError(f"figures.attention.task: {task.name} is a regression task; network attention compares "
                         "the groups of a binary or multiclass task")
    manifests = split_manifests(shards)
    window = int(load_manifest(manifests["train"])["window"])
    windows = load_task(task, manifests, window, with_data=True)
    labels = read_label_table(labels_path)
    if list(labels["name"].astype(str)) != list(windows.roi_names):
        raise InputError(f"{labels_path}: ROI names differ from the shards' (name or order)")
    device = torch_job(device_kind, "auto").device
    encoder, _ = load_encoder(encoder_spec, windows.roi_names, window, seed=seed)
    encoder.to(device)
    t0 = time.perf_counter()
    scores = roi_attention(encoder, windows.data, cfg, device)                 # [N, R]
    subjects, per_subject = subject_mean(windows.subject, scores)
    group_of = dict(zip(windows.subject, (str(v) for v in _group_values(windows.raw))))
    groups = np.array([group_of[s] for s in subjects])
    networks = labels["network"].astype(str).to_numpy()
    table = network_table(per_subject, groups, networks, seed)
    rois = pd.DataFrame([{"group": g, "roi": name, "network": net, "value": v}
                         for g in sorted(set(groups)) for name, net, v in
                         zip(labels["name"], networks, per_subject[groups == g].mean(axis=0))])
    logging.getLogger("brainjepa.evaluate").info(
        "network attention of %d windows (%d subjects, groups %s) in %.1f s", len(scores), len(subjects),
        {str(k): int(v) for k, v in pd.Series(groups).value_counts().sort_index().items()}, time.perf_counter() - t0)
    write_tsv_atomic(rois, out_rois)
    write_tsv_atomic(table, out_networks)
    return table


def _group_values(raw: np.ndarray) -> list:
    """Label values as group names: 1.0 -> "1", "M" -> "M"."""
    from brainjepa.evaluate.tasks import value_text

    return [value_text(v) for v in raw]
