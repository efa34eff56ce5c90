"""Downstream metrics and bootstrap intervals over test subjects.

Regression (targets z-scored with the training subjects' mean and std): ``mse`` on the z-scored scale (the
paper's), ``mae`` in the label's original units, Pearson ``r`` and ``r2``. Classification: ``accuracy``,
``balanced_accuracy``, ``f1`` (positive class 1 for binary tasks, macro average for multi-class) and ``auroc``
(binary: the probability of class 1; multi-class: one-vs-rest, macro). Every metric is computed over subjects:
a subject's prediction is the mean over its evaluation windows (regression value, class probabilities).

Regression and binary metrics are computed in numpy (:func:`fast_metrics`, tested against scikit-learn and
scipy), so that an evaluation job does not pay seconds of scikit-learn / scipy imports; multi-class F1 and
AUROC come from scikit-learn.

Binary decisions: by default class 1 when its probability is the larger (argmax). With a ``threshold`` t (chosen
on the validation subjects by :func:`choose_threshold`, the largest balanced accuracy), class 1 when
p(class 1) > t; accuracy, balanced accuracy and F1 follow it, AUROC does not depend on it.
:func:`split_metrics` gives a method's validation and test metrics with the validation threshold applied to both.

Selection (the epoch of a gradient-trained head, its grid point): :data:`SELECTION` per task kind, over
validation subjects (:func:`selection_score`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

REGRESSION = ("mse", "mae", "r", "r2")
CLASSIFICATION = ("accuracy", "balanced_accuracy", "f1", "auroc")
LOWER_IS_BETTER = {"mse", "mae"}
SELECTION = {"regression": "r", "binary": "auroc", "multiclass": "balanced_accuracy"}


def selection_score(kind: str, y_true: np.ndarray, pred: np.ndarray) -> float:
    """The selection metric (:data:`SELECTION`) of subject-level predictions: regression pred [N] (Pearson r),
    classification [N, C] probabilities (binary AUROC, multiclass balanced accuracy of the argmax). Higher is
    better; -inf where undefined (constant predictions, one class)."""
    y_true, pred = np.asarray(y_true), np.asarray(pred, dtype=float)
    if kind == "regression":
        value = fast_metrics("regression", y_true[None].astype(float), pred[None])["r"][0]
    elif kind == "binary":
        value = fast_metrics("binary", y_true[None].astype(int), pred[None])["auroc"][0]
    else:
        value = fast_metrics("multiclass", y_true[None].astype(int), pred[None])["balanced_accuracy"][0]
    return float(value) if np.isfinite(value) else -math.inf


def choose_threshold(truth: np.ndarray, prob: np.ndarray) -> float:
    """The decision threshold of a binary task from validation subjects: truth [N] class indices (0/1), prob
    [N, 2] probabilities -> t, predicting class 1 where p(class 1) > t.

    Candidates: 0.5 (the argmax rule), the midpoints between consecutive distinct p(class 1) and the cuts that
    predict every subject positive or negative (midway to 0 and to 1). The one with the largest balanced
    accuracy wins; ties go to the candidate closest to 0.5 (then the lower). With fewer than two classes in
    ``truth`` there is nothing to balance: 0.5."""
    truth, prob = np.asarray(truth).astype(int), np.asarray(prob, dtype=float)
    if prob.ndim != 2 or prob.shape[1] != 2 or len(truth) != len(prob):
        raise ValueError(f"choose_threshold: truth [N] and prob [N, 2], got {truth.shape} and {prob.shape}")
    if len(np.unique(truth)) < 2:
        return 0.5
    p1 = prob[:, 1]
    u = np.unique(p1)
    candidates = np.unique(np.concatenate([[0.5], (u[:-1] + u[1:]) / 2,
                                           [u[0] / 2] if u[0] > 0 else [], [(u[-1] + 1) / 2] if u[-1] < 1 else []]))
    hard = p1[None, :] > candidates[:, None]                                   # [K, N]
    recall = [np.mean(hard[:, truth == 1], axis=1), np.mean(~hard[:, truth == 0], axis=1)]
    bacc = (recall[0] + recall[1]) / 2
    best = np.flatnonzero(bacc >= bacc.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def split_metrics(kind: str, val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                  scale: float = 1.0) -> tuple[dict[str, float], dict[str, float], float | None]:
    """A method's validation and test metrics from subject-level (truth, prediction) pairs (:func:`task_metrics`):
    binary tasks decide at the threshold chosen on the validation pair (:func:`choose_threshold`), for both
    splits; other kinds at the argmax. Returns (val metrics, test metrics, threshold or None)."""
    threshold = choose_threshold(*val) if kind == "binary" else None
    return (task_metrics(kind, val[0], val[1], scale, threshold),
            task_metrics(kind, test[0], test[1], scale, threshold), threshold)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, scale: float = 1.0) -> dict[str, float]:
    """y_true, y_pred: [N] z-scored; ``scale``: the training std (original units = z x scale)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    m = {k: float(v[0]) for k, v in fast_metrics("regression", y_true[None], y_pred[None], scale).items()}
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        m["r"] = math.nan
    if len(y_true) < 2:
        m["r2"] = math.nan
    return m


def classification_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """y_true: [N] class indices; prob: [N, C] class probabilities (rows sum to 1); ``threshold`` (binary only):
    class 1 where p(class 1) > threshold (None: argmax)."""
    y_true, prob = np.asarray(y_true, int), np.asarray(prob, float)
    if threshold is not None and prob.shape[1] != 2:
        raise ValueError(f"a decision threshold is for binary tasks, got {prob.shape[1]} classes")
    with warnings.catch_warnings():  # one class in a (resampled) set: handled below, not a user warning
        warnings.simplefilter("ignore", UserWarning)
        return _classification(y_true, prob, threshold)


def _classification(y_true: np.ndarray, prob: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    n_classes = prob.shape[1]
    if n_classes == 2:
        m = {k: float(v[0]) for k, v in fast_metrics("binary", y_true[None], prob[None], threshold=threshold).items()}
        if len(np.unique(y_true)) < 2:
            m["auroc"] = math.nan
        return m
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    pred = prob.argmax(axis=1)
    labels = list(range(n_classes))
    auroc = (roc_auc_score(y_true, prob, multi_class="ovr", average="macro", labels=labels)
             if len(np.unique(y_true)) == n_classes else math.nan)   # one-vs-rest needs every class present
    return {"accuracy": float(accuracy_score(y_true, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
            "f1": float(f1_score(y_true, pred, average="macro", labels=labels, zero_division=0.0)),
            "auroc": float(auroc)}


def task_metrics(kind: str, y_true: np.ndarray, pred: np.ndarray, scale: float = 1.0,
                 threshold: float | None = None) -> dict[str, float]:
    """Regression: pred [N] (z); classification: pred [N, C] probabilities. ``threshold`` (binary tasks): class 1
    where p(class 1) > threshold, for accuracy, balanced accuracy and F1 (None: the argmax)."""
    if kind == "regression":
        return regression_metrics(y_true, pred, scale)
    return classification_metrics(y_true, pred, threshold)


def fast_metrics(kind: str, y_true: np.ndarray, pred: np.ndarray, scale: float = 1.0,
                 threshold: float | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The metrics of :func:`task_metrics` for many resamples at once (numpy), for the bootstrap.

    y_true [K, N] (the K resamples' truths), pred [K, N] (regression) or [K, N, C] (probabilities). Returns
    one array [K] per metric (NaN where undefined). Equal to :func:`task_metrics` row by row (tested).
    ``threshold`` (two classes): a scalar or one per resample [K]; class 1 where p(class 1) > threshold.
    """
    y_true = np.asarray(y_true)
    if kind == "regression":
        err = pred - y_true
        yc, pc = y_true - y_true.mean(axis=1, keepdims=True), pred - pred.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (yc * pc).sum(axis=1) / np.sqrt((yc**2).sum(axis=1) * (pc**2).sum(axis=1))
            r2 = 1 - (err**2).sum(axis=1) / (yc**2).sum(axis=1)
        return {"mse": (err**2).mean(axis=1), "mae": np.abs(err).mean(axis=1) * scale, "r": r, "r2": r2}
    y_true = y_true.astype(int)
    n_classes = pred.shape[-1]
    hard = pred.argmax(axis=-1)
    if threshold is not None and n_classes == 2:
        hard = (pred[..., 1] > np.reshape(np.asarray(threshold, dtype=float), (-1, 1))).astype(int)
    correct = hard == y_true
    recalls, present = [], []
    for c in range(n_classes):
        members = y_true == c
        count = members.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(count > 0, (correct & members).sum(axis=1) / count, np.nan))
        present.append(count > 0)
    bacc = np.nanmean(np.stack(recalls), axis=0)
    if n_classes == 2:
        tp = ((hard == 1) & (y_true == 1)).sum(axis=1)
        fp = ((hard == 1) & (y_true == 0)).sum(axis=1)
        fn = ((hard == 0) & (y_true == 1)).sum(axis=1)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        auroc = _auroc_rows(y_true == 1, pred[..., 1])
    else:
        f1 = np.full(len(y_true), np.nan)  # macro F1 and one-vs-rest AUROC: not bootstrapped here
        auroc = np.full(len(y_true), np.nan)
    both = np.stack(present).sum(axis=0) >= 2
    return {"accuracy": correct.mean(axis=1), "balanced_accuracy": bacc, "f1": f1,
            "auroc": np.where(both, auroc, np.nan)}


def _auroc_rows(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per row (ties count one half). positive [K, N] bool, score [K, N]."""
    ranks = average_ranks(score)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_ranks(score: np.ndarray) -> np.ndarray:
    """Ranks 1..N per row with ties given their average rank (scipy's ``rankdata``). score [K, N] -> [K, N]."""
    score = np.asarray(score, dtype=float)
    ranks = np.empty_like(score)
    for k, row in enumerate(score):
        ordered = np.sort(row)
        below = np.searchsorted(ordered, row, side="left")
        upto = np.searchsorted(ordered, row, side="right")
        ranks[k] = (below + 1 + upto) / 2
    return ranks


def bootstrap_seed_mean(kind: str, y_true: np.ndarray, preds: list[np.ndarray], scale: float = 1.0,
                        n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                        thresholds: list[float | None] | None = None) -> dict[str, tuple[float, float]]:
    """Percentile interval of the seed-mean metric, resampling test subjects (the same resample for every seed).

    y_true [N]; preds: one prediction array per seed, each over the same N subjects in the same order;
    ``thresholds``: each seed's binary decision threshold (the record's ``selected.threshold``; None: argmax).
    Resamples where a metric is undefined (one class only, constant values) are left out of its interval.
    """
    rng = np.random.default_rng(seed)
    n = len(y_true)
    idx = rng.integers(0, n, size=(n_boot, n))
    y = np.asarray(y_true)[idx]
    thresholds = thresholds if thresholds is not None else [None] * len(preds)
    per_seed = [fast_metrics(kind, y, np.asarray(p)[idx], scale, threshold=t) for p, t in zip(preds, thresholds)]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for name in per_seed[0]:
        mean = np.mean([m[name] for m in per_seed], axis=0)
        mean = mean[np.isfinite(mean)]
        if len(mean):
            out[name] = (float(np.percentile(mean, lo)), float(np.percentile(mean, hi)))
    return out


def bootstrap_subject_mean(values: list[np.ndarray], n_boot: int = 1000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of a metric that is a mean over test subjects (or recordings), averaged over seeds.

    values: one array [S] per seed of the per-subject values, the same S subjects in the same order; the
    subjects are resampled (the same resample for every seed). None when the seeds disagree on S or S is 0.
    """
    arrays = [np.asarray(v, dtype=float) for v in values]
    if not arrays or len({len(a) for a in arrays}) != 1 or len(arrays[0]) == 0:
        return None
    mean = np.mean(arrays, axis=0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(mean), size=(n_boot, len(mean)))
    boot = np.nanmean(mean[idx], axis=1)
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return None
    return float(np.percentile(boot, (1 - level) / 2 * 100)), float(np.percentile(boot, (1 + level) / 2 * 100))


def regression_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """R^2, Pearson r and MSE over all values of ``truth`` and ``pred`` (any equal shapes, flattened; the
    capabilities' scores): :func:`fast_metrics` of one row. r is NaN when either side is constant; R^2 is NaN
    when the truth is."""
    y = np.asarray(truth, dtype=np.float64).ravel()
    p = np.asarray(pred, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"truth {np.shape(truth)} and prediction {np.shape(pred)} must be equal and non-empty")
    m = {k: float(v[0]) for k, v in fast_metrics("regression", y[None], p[None]).items()}
    constant_truth = not float(np.sum((y - y.mean()) ** 2)) > 0
    return {"r2": math.nan if constant_truth else m["r2"], "r": m["r"] if math.isfinite(m["r"]) else math.nan,
            "mse": m["mse"]}


class ScoreAccumulator:
    """R^2, Pearson r and MSE over values given in pieces (float64 sums), equal to
    :func:`regression_scores` of all pieces concatenated."""

    def __init__(self) -> None:
        self.n = 0
        self.sums = np.zeros(6)                          # y, p, y^2, p^2, y p, (y - p)^2

    def add(self, truth: np.ndarray, pred: np.ndarray) -> None:
        y = np.asarray(truth, dtype=np.float64).ravel()
        p = np.asarray(pred, dtype=np.float64).ravel()
        self.n += y.size
        self.sums += [y.sum(), p.sum(), y @ y, p @ p, y @ p, np.sum((y - p) ** 2)]

    def scores(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no values were added")
        sy, sp, syy, spp, syp, sse = self.sums
        n = self.n
        sst, spp_c, syp_c = syy - sy * sy / n, spp - sp * sp / n, syp - sy * sp / n
        denom = math.sqrt(max(sst, 0.0) * max(spp_c, 0.0))
        return {"r2": 1.0 - sse / sst if sst > 0 else float("nan"),
                "r": syp_c / denom if denom > 0 else float("nan"), "mse": sse / n}
