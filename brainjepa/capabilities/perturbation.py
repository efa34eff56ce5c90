"""In-silico perturbation (BrainLM's capability) for any encoder: the smallest input change that moves a subject's
representation to another group's, and which ROIs and networks it touches.

Settings name a label of the shards and two of its values, the ``source`` and ``target`` groups (e.g.
``diagnosis`` 0 -> 1). Representation: ``pool(x)``, the mean over all output tokens of the frozen encoder (eval
mode, parameters frozen; the ``pooled`` of :func:`brainjepa.evaluate.features.extract`). Group means ``mu_s``,
``mu_t`` [D]: the mean over the group's *training* subjects of each subject's mean over its evaluation windows.

For every evaluation window x [R, T] of a *test* subject of the source group, a perturbation delta [R, T] (from
zero) minimises, by Adam on the input (``steps``, ``lr``)::

    loss(delta) = ||pool(x + delta) - mu_t||^2 / ||mu_s - mu_t||^2  +  penalty * mean(delta^2)

(the mean over the R x T entries), with ``goal: mean`` (the default). ``goal: shift`` replaces mu_t by the
window's own representation moved by the group difference, ``pool(x) + mu_t - mu_s``: the loss then starts at
1 for every window and asks only for the group difference, where ``mean`` also asks each subject to lose what
sets it apart from the target group's average (on the demo a subject sits about 4.6 group distances from mu_t,
so that part dominates). Windows are optimised together, the loss summed over them; Adam is element-wise and
the encoder treats samples independently, so each window's delta is what it would be alone. The penalty
(default 1) makes the minimiser unique: 100 steps at lr 0.05 and 300 at lr 0.01 end at the same delta.

Outputs per ROI: the perturbation magnitude RMS_t(delta) (root mean square over time, in the data's scaled
units), averaged over a subject's windows, then over subjects; per network: the mean over its ROIs, ranked
(1 = largest). How far the representation moved: ``closed_share`` = 1 - ||pool(x + delta) - mu_t|| /
||pool(x) - mu_t|| (the share of each window's distance to the target closed; subject mean, then mean), and
``projected_share`` = (pool(x + delta) - pool(x)) . (mu_t - mu_s) / ||mu_t - mu_s||^2 (the movement along the
group difference, 1 = the whole difference).

Control: a *random-direction* target ``mu_s + ||mu_t - mu_s|| u`` (u a seeded uniformly random unit vector in
representation space; with ``goal: shift`` the window's ``pool(x) + ||mu_t - mu_s|| u``), reached by the same
optimisation with the same normaliser. It asks for a move of the same length that has nothing to do with the
groups, so its ROI magnitudes show where the encoder is merely easy to move (large input gradients, e.g. ROIs
the positional embedding makes influential). A network that ranks first for the target but not for the control
is specific to the group difference; a ranking shared with the control says only which ROIs the encoder is
sensitive to; ``control_spearman``, the rank correlation of the target's and the control's ROI magnitudes,
says how much of the ranking is shared. (The other candidate control, a
source -> source move, asks each subject to become its group's mean: it mixes the subject's own deviation into
the ranking and has no group-difference length to match, so it was not chosen.)

Whether there is a group difference to follow at all: ``group_p``, a label-permutation test of the distance
||mu_t - mu_s|| over the training subjects of both groups (their labels shuffled ``permutations`` times; p =
(1 + #{permuted distance >= observed}) / (1 + permutations)). An encoder whose representations do not separate
the groups (a large p) still gives a perturbation and a ranking, but one that can only show where the encoder is
easy to move: the job's log says so.

Record ``test`` (floats): ``closed_share``, ``projected_share``, ``rms`` (of delta over every entry), ``group_p``,
``magnitude_<network>``, ``rank_<network>``, the same with a ``control_`` prefix, and ``control_spearman``;
``per_subject``: ``closed_share`` and ``control_closed_share``. For a checkpoint encoder the seed changes only the
control's direction (the optimisation from delta = 0 is deterministic).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from brainjepa.config import from_mapping
from brainjepa.errors import InputError
from brainjepa.evaluate.record import Record
from brainjepa.train.config import Device, Precision

log = logging.getLogger("brainjepa.evaluate")
WHERE = "evaluate.capabilities.perturbation.settings"
LOSSES = {"mean": "||pool(x + delta) - mu_t||^2 / ||mu_s - mu_t||^2 + penalty * mean(delta^2)",
          "shift": "||pool(x + delta) - (pool(x) + mu_t - mu_s)||^2 / ||mu_s - mu_t||^2 + penalty * mean(delta^2)"}


@dataclass(frozen=True)
class PerturbationConfig:
    """``evaluate.capabilities.perturbation.settings``."""

    label: str = "diagnosis"                   # a label column of the shards
    source: str = "0"                          # the label value of the group whose test subjects are perturbed
    target: str = "1"                          # the label value of the group whose mean is the goal
    network_column: str = "network"            # the label table's column naming each ROI's network
    steps: int = 100                           # Adam steps on the input
    lr: float = 0.05                           # Adam learning rate (the data's scaled units per step)
    penalty: float = 1.0                       # lambda: weight of mean(delta^2) in the loss
    goal: Literal["mean", "shift"] = "mean"    # mean: pool(x + delta) -> mu_t; shift: -> pool(x) + mu_t - mu_s
    permutations: int = 1000                   # label permutations of the group-difference test (group_p)
    batch_size: int = 32                       # windows optimised together
    log_every: int = 25                        # steps between loss log lines (and history points)
    device: Device = "auto"
    precision: Precision = "auto"
    threads: int | None = None                 # torch threads (None: torch's default)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.log_every < 1 or self.permutations < 1:
            raise InputError(f"{WHERE}: steps, batch_size, log_every and permutations must be at least 1")
        if self.lr <= 0 or self.penalty < 0:
            raise InputError(f"{WHERE}: lr must be > 0 and penalty >= 0")
        if str(self.source) == str(self.target):
            raise InputError(f"{WHERE}: source and target are both {self.source!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> PerturbationConfig:
        d = dict(d or {})
        for key in ("source", "target"):      # YAML may read 0 / 1 as numbers; groups are label values as text
            if isinstance(d.get(key), (int, float)) and not isinstance(d.get(key), bool):
                from brainjepa.evaluate.tasks import value_text

                d[key] = value_text(d[key])
        return from_mapping(cls, d, WHERE)


# ------------------------------------------------------------------------------------------------- optimisation
def pooled(encoder, x):
    """x [B, 1, R, T] -> the mean over the encoder's output tokens [B, D] (float32)."""
    return encoder(x).float().mean(dim=1)


def perturb_windows(encoder, data: np.ndarray, target: np.ndarray, scale: float, cfg: PerturbationConfig, device="cpu",
                    autocast=None) -> dict[str, np.ndarray]:
    """The perturbation of every window toward ``target``.

    data [N, R, T], target [D] (or [N, D]: one goal per window), scale: the loss normaliser ||mu_s - mu_t||^2.
    Returns delta [N, R, T], start / end (the pooled representation before and after) [N, D], loss [N] (final,
    per window), and history [K, 2] (step, mean loss over the windows) every ``log_every`` steps (batch 0)."""
    from contextlib import nullcontext

    import torch

    if scale <= 0:
        raise InputError("perturbation: the source and target representations coincide (nothing to move)")
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    goal_all = torch.as_tensor(np.broadcast_to(target, (len(data), np.shape(target)[-1])).copy(), dtype=torch.float32)
    out = {"delta": [], "start": [], "end": [], "loss": []}
    history = []
    context = autocast or nullcontext
    for i in range(0, len(data), cfg.batch_size):
        x = torch.from_numpy(np.ascontiguousarray(data[i:i + cfg.batch_size])).unsqueeze(1).to(device)
        goal = goal_all[i:i + cfg.batch_size].to(device)
        delta = torch.zeros_like(x, requires_grad=True)
        optimizer = torch.optim.Adam([delta], lr=cfg.lr)
        with torch.no_grad(), context():
            start = pooled(encoder, x)
        for step in range(cfg.steps + 1):
            with context():
                z = pooled(encoder, x + delta)
            loss = ((z - goal) ** 2).sum(dim=1) / scale + cfg.penalty * (delta.float() ** 2).mean(dim=(1, 2, 3))
            if i == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
                history.append((step, float(loss.detach().mean())))
                log.info("perturbation step %d: loss %.4f (mean over %d windows)", step, history[-1][1], len(x))
            if step == cfg.steps:                # the loss of the returned delta, not one step before it
                break
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
        out["delta"].append(delta.detach().squeeze(1).float().cpu().numpy())
        out["start"].append(start.cpu().numpy())
        out["end"].append(z.detach().cpu().numpy())
        out["loss"].append(loss.detach().cpu().numpy())
    result = {k: np.concatenate(v) for k, v in out.items()}
    result["history"] = np.array(history, dtype=float)
    return result


def random_direction_target(mu_source: np.ndarray, mu_target: np.ndarray, seed: int) -> np.ndarray:
    """The control's goal [D]: mu_s + ||mu_t - mu_s|| u, u a seeded uniformly random unit vector."""
    u = np.random.default_rng(seed).normal(size=mu_source.shape)
    return mu_source + np.linalg.norm(mu_target - mu_source) * u / np.linalg.norm(u)


# ------------------------------------------------------------------------------------------------- summaries
def roi_magnitudes(delta: np.ndarray, subject: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """delta [N, R, T] and each window's subject [N] -> (per-subject RMS over time [S, R], the mean over
    subjects [R])."""
    from brainjepa.evaluate.tasks import subject_mean

    rms = np.sqrt(np.mean(np.asarray(delta, dtype=np.float64) ** 2, axis=-1))          # [N, R]
    _, per_subject = subject_mean(subject, rms)
    return per_subject, per_subject.mean(axis=0)


def network_magnitudes(magnitude: np.ndarray, networks: np.ndarray) -> pd.DataFrame:
    """ROI magnitudes [R] and networks [R] -> one row per network (order of appearance): network, n_rois,
    magnitude (mean over its ROIs), rank (1 = largest; ties share the smaller rank)."""
    order = list(dict.fromkeys(networks))
    values = np.array([magnitude[networks == n].mean() for n in order])
    ranks = pd.Series(values).rank(ascending=False, method="min").to_numpy()
    return pd.DataFrame({"network": order, "n_rois": [int((networks == n).sum()) for n in order],
                         "magnitude": values, "rank": ranks.astype(float)})


def closed_shares(start: np.ndarray, end: np.ndarray, goal: np.ndarray, mu_source: np.ndarray,
                  mu_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window [N]: the share of the distance to ``goal`` closed, 1 - |end - goal| / |start - goal|, and
    the movement along the group difference, (end - start) . (mu_t - mu_s) / |mu_t - mu_s|^2."""
    closed = 1.0 - np.linalg.norm(end - goal, axis=1) / np.maximum(np.linalg.norm(start - goal, axis=1), 1e-12)
    diff = mu_target - mu_source
    projected = (end - start) @ diff / float(diff @ diff)
    return closed, projected


# ------------------------------------------------------------------------------------------------- the stage
def check_groups(values: dict[str, np.ndarray], cfg: PerturbationConfig) -> None:
    """The groups' label values per split (``{"train": [N], "test": [N]}``, text) -> an error unless both groups
    have training subjects and the source group has test subjects."""
    present = sorted({v for split in values.values() for v in split if v})
    for name, value in (("source", cfg.source), ("target", cfg.target)):
        if value not in present:
            shown = ", ".join(present[:10]) + (f", ... ({len(present)} values)" if len(present) > 10 else "")
            raise InputError(f"{WHERE}.{name}: {cfg.label}={value!r} is not a value of the label (values: "
                             f"{shown or 'none'})")
        if not (values["train"] == value).any():
            raise InputError(f"{WHERE}.{name}: the group {cfg.label}={value!r} has no training subject (its mean "
                             "representation comes from the training subjects)")
    if not (values["test"] == cfg.source).any():
        raise InputError(f"{WHERE}.source: the group {cfg.label}={cfg.source!r} has no test subject to perturb")


def training_groups(representation: np.ndarray, subject: np.ndarray, value: np.ndarray, cfg: PerturbationConfig
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Pooled representations [N, D] of the two groups' training windows (``subject`` and label ``value`` [N],
    only the source and target groups' windows) -> (subject representations [S, D]: the mean of each subject's
    windows, is_target [S] bool, ``{"source": mu_s, "target": mu_t}``: the mean over each group's subjects)."""
    from brainjepa.evaluate.tasks import subject_mean

    subjects, subject_rep = subject_mean(subject, representation)
    group_of = dict(zip(subject, value))
    is_target = np.array([group_of[s] == cfg.target for s in subjects])
    return subject_rep, is_target, {"source": subject_rep[~is_target].mean(axis=0),
                                    "target": subject_rep[is_target].mean(axis=0)}


def group_difference(representation: np.ndarray, is_target: np.ndarray, permutations: int,
                     seed: int = 0) -> dict[str, float]:
    """Label-permutation test of the distance between two groups' mean representations.

    representation [S, D]: one row per subject (its window mean); is_target [S] bool. Returns the observed
    distance, the permuted distances' mean and 95th percentile, and p = (1 + #{permuted >= observed}) /
    (1 + permutations) (deterministic for a given ``seed``)."""
    rep = np.asarray(representation, dtype=np.float64)
    labels = np.asarray(is_target, dtype=bool)

    def distance(mask: np.ndarray) -> np.ndarray:  # mask [P, S] -> [P]
        n_t = mask.sum(axis=1, keepdims=True)
        mu_t = (mask @ rep) / n_t
        mu_s = ((~mask) @ rep) / (len(rep) - n_t)
        return np.linalg.norm(mu_t - mu_s, axis=1)

    observed = float(distance(labels[None])[0])
    rng = np.random.default_rng(seed)
    null = distance(np.stack([rng.permutation(labels) for _ in range(permutations)]))
    return {"distance": observed, "null_mean": float(null.mean()), "null_95": float(np.quantile(null, 0.95)),
            "p": float((1 + np.sum(null >= observed)) / (1 + permutations)), "permutations": int(permutations)}


def run_perturbation(method: str, seed: int, shards: str | Path, cohorts: list[str], labels_path: str | Path,
                     out: str | Path, encoder_spec: dict, cfg: PerturbationConfig | None = None) -> dict:
    """The ``perturbation`` stage: one (encoder method, seed) -> the record at ``out`` (JSON) and the tables
    ``<out stem>.rois.tsv`` (name, network, magnitude, control_magnitude) and ``<out stem>.networks.tsv``
    (network, n_rois, magnitude, rank, control_magnitude, control_rank)."""
    from brainjepa.capabilities.network_id import roi_networks
    from brainjepa.data.shards import load_manifest
    from brainjepa.evaluate.encoders import load_encoder
    from brainjepa.evaluate.job import seconds_since, torch_job
    from brainjepa.evaluate.tasks import split_manifests, split_windows
    from brainjepa.io import write_tsv_atomic
    from brainjepa.preprocess.atlas import read_label_table

    cfg = cfg or PerturbationConfig()
    if encoder_spec is None:
        raise InputError("perturbation needs an encoder (--encoder)")
    t0 = time.perf_counter()
    manifests = split_manifests(shards)
    manifest = load_manifest(manifests["train"])
    window, roi_names = int(manifest["window"]), list(manifest["roi_names"])
    networks = roi_networks(read_label_table(labels_path), roi_names, cfg.network_column, str(labels_path))
    windows = split_windows(manifests, list(cohorts), window, ("train", "test"), label=cfg.label)
    check_groups({s: w.value for s, w in windows.items()}, cfg)
    job = torch_job(cfg.device, cfg.precision, threads=cfg.threads or 0, seed=seed)
    encoder, source = load_encoder(encoder_spec, roi_names, window, seed=seed)
    encoder.to(job.device)
    n_train, means, difference = _training_groups(encoder, windows["train"], cfg, job)
    scale = float(np.sum((means["source"] - means["target"]) ** 2))
    if scale == 0.0:
        raise InputError(f"perturbation: the groups {cfg.label}={cfg.source!r} and {cfg.target!r} have the same mean "
                         "representation (nothing to move)")
    runs, shares, subject = _perturb_test(encoder, windows["test"], means, scale, cfg, seed, job)
    parts, rois, nets = _summarise(runs, shares, subject, networks, cfg, scale)
    parts["n_subjects"]["train"] = n_train
    parts["test"]["group_p"] = difference["p"]
    parts["details"].update(group_difference=difference, settings=asdict(cfg))
    record = Record("perturbation", "perturbation", method, seed, list(cohorts), cfg.label, source,
                    seconds=seconds_since(t0), **parts)
    rois.insert(0, "name", roi_names)
    stem = Path(out).with_suffix("")
    write_tsv_atomic(rois, f"{stem}.rois.tsv")
    write_tsv_atomic(nets, f"{stem}.networks.tsv")
    log.info("perturbation/%s/seed%d: closed share %.3f (control %.3f); networks by magnitude: %s (control: %s); "
             "%.1f s", method, seed, record.test["closed_share"], record.test["control_closed_share"],
             ", ".join(nets.sort_values("rank", kind="stable")["network"]),
             ", ".join(nets.sort_values("control_rank", kind="stable")["network"]), record.seconds)
    return record.write(out)


def _training_groups(encoder, train, cfg: PerturbationConfig, job) -> tuple[int, dict, dict]:
    """The training subjects of the two groups -> (their number, the groups' mean representations, the
    permutation test of their difference; a warning when it is not significant)."""
    from brainjepa.evaluate.features import extract

    both = np.isin(train.value, [cfg.source, cfg.target])
    rep, _ = extract(encoder, train.data[both], encoder.cfg.n_time_patches, job.device, cfg.batch_size,
                     job.autocast)
    subject_rep, is_target, means = training_groups(rep, train.subject[both], train.value[both], cfg)
    difference = group_difference(subject_rep, is_target, cfg.permutations)
    if difference["p"] > 0.05:
        log.warning("perturbation: the encoder's representations do not separate %s=%s from %s=%s (permutation "
                    "p = %.3f over %d training subjects): the ROI ranking can only show where the encoder is easy "
                    "to move, not the group difference", cfg.label, cfg.source, cfg.label, cfg.target,
                    difference["p"], len(subject_rep))
    return int(len(subject_rep)), means, difference


def _perturb_test(encoder, test_windows, means: dict, scale: float, cfg: PerturbationConfig, seed: int, job):
    """Perturb the source group's test windows toward the target and toward the random-direction control.
    Returns (runs and closed shares per goal, the windows' subjects)."""
    from brainjepa.evaluate.features import extract

    test = test_windows.value == cfg.source
    data, subject = test_windows.data[test], test_windows.subject[test]
    goals = {"target": means["target"], "control": random_direction_target(means["source"], means["target"], seed)}
    runs, shares = {}, {}
    if cfg.goal == "shift":
        rep, _ = extract(encoder, data, encoder.cfg.n_time_patches, job.device, cfg.batch_size, job.autocast)
        goals = {k: rep + (v - means["source"]) for k, v in goals.items()}
    for name, goal in goals.items():
        log.info("perturbation toward the %s (%d windows of %d test subjects)", name, len(data), len(set(subject)))
        runs[name] = perturb_windows(encoder, data, goal, scale, cfg, job.device, job.autocast)
        shares[name] = closed_shares(runs[name]["start"], runs[name]["end"], goal, means["source"], means["target"])
    return runs, shares, subject


def _summarise(runs: dict, shares: dict, subject: np.ndarray, networks: np.ndarray, cfg: PerturbationConfig,
               scale: float) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The record's n_subjects, val, test, per_subject, details and selected; the ROI table; the network table."""
    from scipy.stats import spearmanr

    from brainjepa.evaluate.tasks import subject_mean

    test, rois, tables = {}, {}, {}
    per_subject: dict[str, list[float]] = {}
    for name, prefix in (("target", ""), ("control", "control_")):
        subjects, closed = subject_mean(subject, shares[name][0])
        _, projected = subject_mean(subject, shares[name][1])
        _, magnitude = roi_magnitudes(runs[name]["delta"], subject)
        rois[f"{prefix}magnitude"] = magnitude
        tables[name] = network_magnitudes(magnitude, networks)
        test[f"{prefix}closed_share"] = float(closed.mean())
        test[f"{prefix}projected_share"] = float(projected.mean())
        test[f"{prefix}rms"] = float(np.sqrt(np.mean(runs[name]["delta"].astype(np.float64) ** 2)))
        per_subject[f"{prefix}closed_share"] = [float(v) for v in closed]
        for row in tables[name].itertuples(index=False):
            test[f"{prefix}magnitude_{row.network}"] = float(row.magnitude)
            test[f"{prefix}rank_{row.network}"] = float(row.rank)
    # a ROI ranking shared with the control's is the encoder's sensitivity, not the group difference
    test["control_spearman"] = float(spearmanr(rois["magnitude"], rois["control_magnitude"]).statistic)
    nets = tables["target"].copy()
    nets["control_magnitude"] = tables["control"]["magnitude"].to_numpy()
    nets["control_rank"] = tables["control"]["rank"].to_numpy()
    rank = nets.sort_values("rank", kind="stable")
    parts = {
        "n_subjects": {"train": 0, "val": 0, "test": int(len(set(subject)))},   # train: set by the caller
        "val": {}, "test": test, "per_subject": per_subject,
        "details": {
            "groups": {"label": cfg.label, "source": cfg.source, "target": cfg.target},
            "loss": LOSSES[cfg.goal],
            "control": "random-direction target mu_s + ||mu_t - mu_s|| u (u a seeded random unit vector)",
            "group_distance": float(np.sqrt(scale)),
            "ranking": list(rank["network"]),
            "control_ranking": list(nets.sort_values("control_rank", kind="stable")["network"]),
            "top_network": str(rank["network"].iloc[0]),
            "control_top_network": str(nets.sort_values("control_rank", kind="stable")["network"].iloc[0]),
            "final_loss": {k: float(np.mean(r["loss"])) for k, r in runs.items()},
            "loss_history": {k: r["history"].tolist() for k, r in runs.items()},
            "networks": nets.to_dict(orient="records"),
            "test_subjects": [str(s) for s in np.unique(subject)],
        },
        "selected": {"epoch": None, "history": []},
    }
    table = pd.DataFrame({"network": networks, **rois})
    return parts, table, nets

