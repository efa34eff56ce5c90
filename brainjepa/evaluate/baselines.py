"""Closed-form heads (scikit-learn) on any features, and the connectivity baselines.

``closed_form``: ridge regression or L2 logistic regression on standardised features (scaler fit on the
training windows), the regularisation chosen on the validation subjects from a log grid by the same criterion
as the gradient-trained heads (subject-level MSE or negative log-likelihood; class-weighted when the protocols
set ``class_weight: balanced``). ``fc_features``: the upper
triangle of each window's ROI x ROI Pearson correlation, Fisher z-transformed (what the FC baselines and
Brainmarks' connectome model read); ``fc_linear`` fits the closed-form head on them, ``fc_svm`` an RBF
support vector machine (BrainLM's raw-data baseline), C chosen on validation; its margins become class
probabilities through a logistic (binary) or softmax (one-vs-rest) map, which ranks like the margins (AUROC)
and classifies like them (accuracy).
"""

from __future__ import annotations

import math

import numpy as np

from brainjepa.evaluate.tasks import subject_loss


def fc_features(data: np.ndarray, block: int = 64) -> np.ndarray:
    """data [N, R, T] -> Fisher-z upper-triangle FC [N, R (R - 1) / 2] float32 (constant ROIs give 0).

    ``data``: an array, or anything that slices like one (a :class:`brainjepa.evaluate.tasks.ShardWindows` reads
    the windows from the shards as sliced): ``block`` windows are read at a time, and of each only its
    R (R - 1) / 2 values are kept."""
    n, r, _ = data.shape
    iu = np.triu_indices(r, k=1)
    out = np.empty((n, len(iu[0])), dtype=np.float32)
    chunk = None
    for i in range(n):
        if i % block == 0:
            chunk = data[i:i + block]
        x = np.asarray(chunk[i % block], dtype=np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(x, axis=1)
        norm[norm == 0] = np.inf
        corr = (x @ x.T) / np.outer(norm, norm)
        out[i] = np.arctanh(np.clip(corr[iu], -0.999999, 0.999999))
    return out


def log_grid(log10_range: tuple[float, float], n: int) -> np.ndarray:
    """``n`` values evenly spaced in log10 over ``log10_range`` (lo, hi), both ends included: [n] float64 (n <= 1: just
    10 ** lo)."""
    return np.logspace(log10_range[0], log10_range[1], n) if n > 1 else np.array([10 ** log10_range[0]])


def _predict(model, kind: str, x: np.ndarray, n_classes: int) -> np.ndarray:
    if kind == "regression":
        return model.predict(x).astype(float)
    prob = np.zeros((len(x), n_classes))
    if hasattr(model, "predict_proba"):
        prob[:, model.classes_] = model.predict_proba(x)
        return prob
    score = model.decision_function(x)        # SVC: margins, mapped to probabilities by a logistic / softmax
    if score.ndim == 1:
        p1 = 1.0 / (1.0 + np.exp(-score))
        prob[:, model.classes_] = np.stack([1.0 - p1, p1], axis=1)
    else:
        e = np.exp(score - score.max(axis=1, keepdims=True))
        prob[:, model.classes_] = e / e.sum(axis=1, keepdims=True)
    return prob


def fit_select(kind: str, make, grid: np.ndarray, train: tuple[np.ndarray, np.ndarray],
               val: tuple[np.ndarray, np.ndarray, np.ndarray], n_classes: int,
               class_weight: np.ndarray | None = None):
    """Fit ``make(value)`` for every grid value on the training windows; keep the lowest validation loss.

    train: (features [N, F], targets [N]); val: (features, targets, subjects); ``class_weight`` [C]: the
    weights of the validation criterion (the heads weight their own loss, ``closed_form_maker``).
    Returns (model, value, history).
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best, history = (math.inf, None, None), []
    for value in grid:
        model = make_pipeline(StandardScaler(), make(float(value))).fit(*train)
        loss = subject_loss(kind, val[2], val[1], _predict(model, kind, val[0], n_classes), class_weight)
        history.append({"value": float(value), "val_loss": loss})
        if loss < best[0]:
            best = (loss, model, float(value))
    return best[1], best[2], history


def _weights(class_weight: np.ndarray | None) -> dict | None:
    """scikit-learn's form: {class: weight} for the classes with training samples (weight > 0)."""
    return None if class_weight is None else {c: float(v) for c, v in enumerate(class_weight) if v > 0}


def closed_form_maker(kind: str, seed: int, class_weight: np.ndarray | None = None):
    """Ridge(alpha) or logistic regression (C = 1 / alpha; ``class_weight`` [C]: the loss weight per class)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "regression":
        return lambda alpha: Ridge(alpha=alpha)
    weight = _weights(class_weight)
    return lambda alpha: LogisticRegression(C=1.0 / alpha, max_iter=5000, random_state=seed, class_weight=weight)


def svm_maker(kind: str, seed: int, class_weight: np.ndarray | None = None):
    """SVR(C) or SVC(C) with an RBF kernel (``gamma='scale'``; classification: one-vs-rest margins, ``class_weight`` [C]
    the loss weight per class): a function of C that makes an unfitted model."""
    from sklearn.svm import SVC, SVR

    if kind == "regression":
        return lambda c: SVR(C=c, kernel="rbf", gamma="scale")
    weight = _weights(class_weight)
    return lambda c: SVC(C=c, kernel="rbf", gamma="scale", decision_function_shape="ovr", random_state=seed,
                         class_weight=weight)


def predict(model, kind: str, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Regression values [N] or class probabilities [N, C] of a fitted head."""
    return _predict(model, kind, x, n_classes)
