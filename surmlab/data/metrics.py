"""Scores of predictions against labels: accuracy, MCC, F1, Spearman/Pearson, and the majority baseline.

Written out in numpy rather than taken from scikit-learn (an optional dependency); the tests
check each against scikit-learn and scipy.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from .schema import Task

METRICS = ("accuracy", "mcc", "f1", "spearman")


def _confusion(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    k = int(max(predictions.max(initial=0), labels.max(initial=0))) + 1
    return np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k).astype(np.float64)


def _mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation, multi-class (Gorodkin's R_K); 0 when either side is constant."""
    c = _confusion(predictions, labels)
    s, correct = c.sum(), np.trace(c)
    t, p = c.sum(1), c.sum(0)
    denominator = np.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    return float((correct * s - t @ p) / denominator) if denominator else 0.0


def _f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of class 1 (GLUE's MRPC/QQP convention); macro F1 over the classes seen with > 2 classes."""
    c = _confusion(predictions, labels)
    classes = [1] if len(c) <= 2 else [i for i in range(len(c)) if c[i].sum() or c[:, i].sum()]
    scores = []
    for i in classes:
        tp, fp, fn = (c[i, i], c[:, i].sum() - c[i, i], c[i].sum() - c[i, i]) if i < len(c) else (0, 0, 0)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denominator) if denominator else float("nan")


def compute_metrics(metric: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The primary ``metric`` and its companions; ``predictions`` are class ids or logits (B, K).

    accuracy -> accuracy; mcc -> mcc, accuracy; f1 -> f1, accuracy; spearman -> spearman, pearson.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if metric == "spearman":
        predictions, labels = predictions.reshape(len(labels), -1)[:, 0].astype(np.float64), labels.astype(np.float64)
        rank = lambda x: pd.Series(x).rank(method="average").to_numpy()  # noqa: E731
        return {"spearman": _pearson(rank(predictions), rank(labels)), "pearson": _pearson(predictions, labels)}
    if predictions.ndim == 2:
        predictions = predictions.argmax(-1)
    predictions, labels = predictions.astype(np.int64), labels.astype(np.int64)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    out = {"accuracy": float((predictions == labels).mean()) if len(labels) else float("nan")}
    if metric == "mcc":
        out["mcc"] = _mcc(predictions, labels)
    elif metric == "f1":
        out["f1"] = _f1(predictions, labels)
    return out


def majority_baseline(task: Task) -> float:
    """Eval accuracy of always predicting the most frequent train label."""
    if task.regression:
        raise ValueError(f"{task.name} is a regression task; a majority class does not exist")
    top = Counter(task.train["label"]).most_common(1)[0][0]
    return float(np.mean(np.asarray(task.eval["label"]) == top))
