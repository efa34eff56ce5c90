"""Repeated cross-validation of closed-form probes over subjects, and paired bootstraps of two predictors.

The protocol that separates encoders on a few hundred labelled subjects (docs/study.md): every labelled subject
of a task is one sample (its windows' features averaged), and ``repeats`` x ``folds``-fold cross-validation over
them, stratified by class for classification, with the same folds for every encoder (seeded by the repeat
index: :func:`cv_folds`). In each training fold the features are standardised and the regularisation is chosen
inside the fold: ridge regression with alpha from efficient leave-one-out (scikit-learn ``RidgeCV`` over
:data:`RIDGE_ALPHAS`), or class-balanced L2 logistic regression with C from an inner stratified CV
(over :data:`LOGISTIC_CS`, class-weighted log-loss or AUROC: :func:`select_c`). Each subject's out-of-fold prediction
is averaged over the repeats (:func:`oof_predictions`): the one prediction per subject that metrics and
bootstraps read.

Label efficiency: with a label count n, each training fold is cut to its first n subjects by a stable hash of
the subject and the repeat (:func:`first_labelled`; classes in proportion for classification, each present
class kept); the test folds are unchanged, so every subject still gets a prediction.

Paired bootstrap (:func:`paired_bootstrap`): the subjects are resampled (the same resamples for both
predictors) and ``metric(a) - metric(b)`` computed on each resample: the observed difference, its percentile
interval and P(difference <= 0) (for a metric where lower is better, P(difference >= 0): the share of resamples
where ``a`` is not better). The probes' fitting is not resampled: the interval is over subjects, given the
predictions.

Nothing here imports torch; scikit-learn is imported inside the functions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from brainjepa.errors import InputError
from brainjepa.evaluate.baselines import log_grid
from brainjepa.evaluate.metrics import LOWER_IS_BETTER, fast_metrics

RIDGE_ALPHAS = log_grid((-3.0, 7.0), 41)
LOGISTIC_CS = log_grid((-4.0, 4.0), 9)


Fold = tuple[np.ndarray, np.ndarray]   # (training subjects' indices, test subjects' indices)


def cv_folds(target: np.ndarray, kind: str, folds: int, repeats: int) -> list[list[Fold]]:
    """The folds of repeated K-fold CV over subjects: ``[repeat][fold] -> (train, test)`` index arrays into the
    subjects [S] (``target`` [S]: values or class indices, in a fixed subject order).

    Classification: stratified by class; regression: plain K-fold. Repeat ``r`` shuffles with seed ``r``, so the
    folds depend only on the targets and the settings (the same for every encoder). ``folds`` is capped at the
    number of subjects; at least 2 subjects are needed."""
    from sklearn.model_selection import KFold, StratifiedKFold

    target = np.asarray(target)
    n = len(target)
    if n < 2:
        raise ValueError(f"cross-validation needs at least 2 subjects, got {n}")
    k = max(2, min(int(folds), n))
    out = []
    for repeat in range(int(repeats)):
        if kind == "regression":
            splitter = KFold(n_splits=k, shuffle=True, random_state=repeat)
            split = splitter.split(np.zeros(n))
        else:
            counts = np.bincount(target.astype(int))
            counts = counts[counts > 0]
            if counts.max() >= k:   # stratify where at least one class has a member per fold
                splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=repeat)
                with warnings.catch_warnings():     # a class rarer than k: fewer members in some folds
                    warnings.simplefilter("ignore", UserWarning)
                    split = list(splitter.split(np.zeros(n), target))
            else:
                split = KFold(n_splits=k, shuffle=True, random_state=repeat).split(np.zeros(n))
        out.append([(np.sort(train), np.sort(test)) for train, test in split])
    return out


def first_labelled(train: np.ndarray, subjects: np.ndarray, target: np.ndarray, kind: str, n: int | None,
                   seed: int) -> np.ndarray:
    """The first ``n`` subjects of the training indices ``train`` by a stable hash of (seed, subject)
    (:func:`brainjepa.group.splits.unit_uniform`), sorted; all of them when ``n`` is None or at least their number.

    Classification: each class present takes its share of ``n`` (largest remainders; at least one subject per
    class when ``n`` allows), its members in hash order. subjects [S] (names), target [S]."""
    from brainjepa.group.splits import unit_uniform

    train = np.asarray(train)
    if n is None or n >= len(train):
        return np.sort(train)
    order = sorted(train.tolist(), key=lambda i: (unit_uniform(seed, "labels", str(subjects[i])), i))
    if kind == "regression":
        return np.sort(np.array(order[:n], dtype=int))
    labels = np.asarray(target)[order].astype(int)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts / counts.sum() * n
    quota = np.floor(share).astype(int)
    if n >= len(classes):
        quota = np.maximum(quota, 1)
    while quota.sum() > n:                       # the minimum of one per class overshot: take from the largest
        quota[np.argmax(quota - share)] -= 1
    for c in np.argsort(-(share - quota), kind="stable"):   # largest remainders first
        if quota.sum() >= n:
            break
        quota[c] += 1
    quota = np.minimum(quota, counts)
    chosen = [i for c, q in zip(classes, quota) for i in np.asarray(order)[labels == c][:q]]
    return np.sort(np.array(chosen, dtype=int))


def _logistic(c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=2000, warm_start=True)


def select_c(x: np.ndarray, y: np.ndarray, n_classes: int, inner: int, selection: str, seed: int) -> float:
    """C of the balanced logistic regression by an inner stratified CV over :data:`LOGISTIC_CS` (ascending, each
    fit warm-started from the last, as scikit-learn's path): the lowest class-weighted log-loss (the training
    criterion's weights, :func:`brainjepa.evaluate.tasks.subject_loss`) or the highest AUROC. x [N, F] already
    standardised, y [N] class indices (each class with at least ``inner`` members)."""
    from sklearn.model_selection import StratifiedKFold

    from brainjepa.evaluate.tasks import class_weights, subject_loss

    score = np.zeros(len(LOGISTIC_CS))
    for train, val in StratifiedKFold(inner, shuffle=True, random_state=seed).split(x, y):
        model = _logistic(float(LOGISTIC_CS[0]))
        weight = class_weights(y[train], n_classes)
        for k, c in enumerate(LOGISTIC_CS):
            model.set_params(C=float(c)).fit(x[train], y[train])
            prob = np.zeros((len(val), n_classes))
            prob[:, model.classes_] = model.predict_proba(x[val])
            if selection == "auroc":
                value = fast_metrics("binary", y[val][None], prob[None])["auroc"][0]
                score[k] -= value if np.isfinite(value) else 0.5
            else:
                score[k] += subject_loss("binary", np.arange(len(val)), y[val], prob, weight)
    return float(LOGISTIC_CS[int(np.argmin(score))])


def fit_predict(kind: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int,
                seed: int = 0, inner_folds: int = 3, selection: str = "log_loss") -> np.ndarray:
    """One closed-form probe: standardise on the training rows, fit, predict the test rows.

    x_train [N, F], y_train [N] (z-scored values or class indices), x_test [M, F] -> regression [M]; classification
    [M, n_classes] probabilities (a class absent from the training rows gets 0; one class only: probability 1).
    Regression: RidgeCV, alpha by efficient leave-one-out. Classification: balanced logistic regression, C by an
    inner stratified CV of ``inner_folds`` (:func:`select_c`; fewer folds when a class is rarer, C = 1 when a class
    has a single member), selected by ``selection`` (log_loss or auroc; auroc is for binary tasks, multiclass falls
    back to log_loss)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = np.asarray(x_train, dtype=np.float64), np.asarray(x_test, dtype=np.float64)
    if kind == "regression":
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS)).fit(x_train, y_train)
        return model.predict(x_test).astype(float)
    y_train = np.asarray(y_train).astype(int)
    prob = np.zeros((len(x_test), n_classes))
    present, counts = np.unique(y_train, return_counts=True)
    if len(present) < 2:
        prob[:, present[0]] = 1.0
        return prob
    inner = min(int(inner_folds), int(counts.min()))
    if selection == "auroc" and len(present) > 2:
        selection = "log_loss"
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c = select_c(x_train, y_train, n_classes, inner, selection, seed) if inner >= 2 else 1.0
        model = _logistic(c).fit(x_train, y_train)
    prob[:, model.classes_] = model.predict_proba(x_test)
    return prob


@dataclass(frozen=True)
class Protocol:
    """The cross-validation settings (a study config's ``cv`` section): ``repeats`` x ``folds``-fold CV over
    subjects, and the inner CV of the logistic heads (``inner_folds``, selected by ``selection``)."""

    folds: int = 5
    repeats: int = 5
    inner_folds: int = 3
    selection: Literal["log_loss", "auroc"] = "log_loss"

    def __post_init__(self) -> None:
        for name, least in (("folds", 2), ("repeats", 1), ("inner_folds", 2)):
            if getattr(self, name) < least:
                raise InputError(f"config 'cv.{name}' must be at least {least}, got {getattr(self, name)}")


def oof_predictions(features: np.ndarray, target: np.ndarray, kind: str, n_classes: int,
                    splits: list[list[Fold]], subjects: np.ndarray, label_count: int | None = None,
                    protocol: Protocol | None = None) -> np.ndarray:
    """Out-of-fold predictions of the probe on ``splits`` (:func:`cv_folds`), averaged over the repeats.

    features [S, F] (one row per subject), target [S], subjects [S] (names, for the label-count cut) ->
    [S] (regression, z units) or [S, n_classes] (probabilities). ``label_count``: the training fold cut to that
    many subjects (:func:`first_labelled`, seeded by the repeat)."""
    protocol = protocol or Protocol()
    features = np.asarray(features)
    total = np.zeros((len(target),) if kind == "regression" else (len(target), n_classes))
    seen = np.zeros(len(target))
    for repeat, folds in enumerate(splits):
        for train, test in folds:
            train = first_labelled(train, subjects, target, kind, label_count, repeat)
            total[test] += fit_predict(kind, features[train], np.asarray(target)[train], features[test],
                                       n_classes, seed=repeat, inner_folds=protocol.inner_folds,
                                       selection=protocol.selection)
            seen[test] += 1
    if (seen == 0).any():
        raise ValueError("a subject is in no test fold")
    return total / (seen if kind == "regression" else seen[:, None])


def resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of n subjects [n_boot, n] (indices with replacement), from ``seed``."""
    return np.random.default_rng(seed).integers(0, n, size=(int(n_boot), n))


def resampled_metric(kind: str, target: np.ndarray, pred: np.ndarray, idx: np.ndarray, metric: str,
                     scale: float = 1.0, threshold: float | None = None) -> np.ndarray:
    """The metric of predictions ``pred`` ([S] or [S, C]) on each resample ``idx`` [K, S] -> [K] (NaN where
    undefined, e.g. one class in a resample); ``threshold``: a binary task's decision threshold (None: argmax)."""
    target, pred = np.asarray(target), np.asarray(pred, dtype=float)
    return fast_metrics(kind, target[idx], pred[idx], scale, threshold)[metric]


def metric_value(kind: str, target: np.ndarray, pred: np.ndarray, metric: str, scale: float = 1.0,
                 threshold: float | None = None) -> float:
    """The metric on every subject once."""
    idx = np.arange(len(target))[None]
    return float(resampled_metric(kind, target, pred, idx, metric, scale, threshold)[0])


def paired_difference(observed: float, boot_a: np.ndarray, boot_b: np.ndarray, metric: str,
                      level: float = 0.95) -> dict[str, float]:
    """From the two predictors' metrics on the same resamples [K]: ``delta`` (the observed difference a - b),
    ``ci_low``/``ci_high`` (percentile interval of the resampled differences) and ``p`` (the share of resamples
    where a is not better: difference <= 0, or >= 0 for a lower-is-better metric). Resamples where either metric
    is undefined are left out; NaNs when none is left."""
    diff = np.asarray(boot_a, float) - np.asarray(boot_b, float)
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        return {"delta": observed, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    lo, hi = np.percentile(diff, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    worse = diff >= 0 if metric in LOWER_IS_BETTER else diff <= 0
    return {"delta": observed, "ci_low": float(lo), "ci_high": float(hi), "p": float(worse.mean())}


def paired_bootstrap(kind: str, target: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, metric: str,
                     n_boot: int = 2000, seed: int = 0, level: float = 0.95, scale: float = 1.0,
                     thresholds: tuple[float | None, float | None] = (None, None)) -> dict[str, float]:
    """Paired bootstrap over subjects of ``metric(a) - metric(b)``: target [S], predictions [S] or [S, C] of the
    same subjects in the same order; ``thresholds``: each predictor's binary decision threshold (None: argmax).
    Returns delta, ci_low, ci_high, p (:func:`paired_difference`)."""
    idx = resamples(len(target), n_boot, seed)
    ta, tb = thresholds
    observed = (metric_value(kind, target, pred_a, metric, scale, ta)
                - metric_value(kind, target, pred_b, metric, scale, tb))
    return paired_difference(observed, resampled_metric(kind, target, pred_a, idx, metric, scale, ta),
                             resampled_metric(kind, target, pred_b, idx, metric, scale, tb), metric, level)


def beats(result: dict[str, float], metric: str) -> bool:
    """Whether the interval of a paired difference (a - b) excludes zero on a's good side."""
    if metric in LOWER_IS_BETTER:
        return bool(result["ci_high"] < 0)
    return bool(result["ci_low"] > 0)
