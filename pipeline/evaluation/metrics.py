"""Honest evaluation: metrics on held-out crops, with confidence intervals by SOURCE image.

The test set holds few independent cells (69 with the `kaggle` split), so every headline number
comes with a bootstrap interval that resamples source images, not crops.
"""

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from pipeline.core.classes import NUCLEUS, head

Metric = Callable[[np.ndarray, np.ndarray], float]


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [true, predicted] over classes 0..n-1, plus a last column for predictions past them
    (the published sets' mark for a cell not found). numpy, not sklearn: the bootstrap counts
    thousands of these, and sklearn's per-call checks made 2,000 resamples of a TEST-sized set take
    15.6 s against 0.5 s here (`scripts/benchmark.py --bootstrap-only`)."""
    pred = np.minimum(y_pred, n_classes)
    cells = np.bincount(y_true * (n_classes + 1) + pred, minlength=n_classes * (n_classes + 1))
    return cells.reshape(n_classes, n_classes + 1)


def headline_metrics(n_classes: int) -> dict[str, Metric]:
    """Accuracy, balanced accuracy (mean recall over the classes present) and macro-F1 over all
    `n_classes` (an absent class scores F1 0), with sklearn's definitions, each counted from the
    confusion matrix."""

    def accuracy(t: np.ndarray, p: np.ndarray) -> float:
        c = confusion(t, p, n_classes)
        return float(np.trace(c) / c.sum())

    def balanced_accuracy(t: np.ndarray, p: np.ndarray) -> float:
        c = confusion(t, p, n_classes)
        support = c.sum(axis=1)
        seen = support > 0
        return float(np.mean(np.diag(c)[seen] / support[seen]))

    def macro_f1(t: np.ndarray, p: np.ndarray) -> float:
        c = confusion(t, p, n_classes)
        tp = np.diag(c)
        denominator = c[:, :n_classes].sum(axis=0) + c.sum(axis=1)  # predicted + true = 2tp + fp + fn
        f1 = np.divide(2 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)
        return float(np.mean(f1))

    return {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1}


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Headline metrics, per-class precision/recall/F1/support and the confusion matrix."""
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    report = {name: float(fn(y_true, y_pred)) for name, fn in headline_metrics(len(classes)).items()}
    report["per_class"] = {
        c: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(classes)
    }
    report["confusion"] = confusion(y_true, y_pred, len(classes))[:, : len(classes)].tolist()
    report["n_images"] = len(y_true)
    return report


def to_nucleus(y: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Cell-type indices -> nucleus-group indices (poly 0, mono 1)."""
    nucleus = head("nucleus", classes)
    lookup = np.array([nucleus.index(c) for c in classes])
    return lookup[y]


def nucleus_accuracy(classes: Sequence[str]) -> Metric:
    """Accuracy of cell-type answers read as poly/mono (a neutrophil called eosinophil is right). An
    index past the classes (the published sets' mark for a cell not found) counts as wrong."""

    def metric(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        hit = y_pred < len(classes)
        same = np.zeros(len(y_true), bool)
        same[hit] = to_nucleus(y_true[hit], classes) == to_nucleus(y_pred[hit], classes)
        return float(np.mean(same))

    return metric


def bootstrap_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    metrics: dict[str, Metric],
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, list[float]]:
    """Percentile intervals of each metric, resampling whole groups (source images) with replacement."""
    if resamples == 0:
        return {}
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in metrics}
    for _ in range(resamples):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
        for name, fn in metrics.items():
            draws[name].append(fn(y_true[idx], y_pred[idx]))
    tail = (1 - confidence) / 2 * 100
    return {m: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for m, v in draws.items()}


def predictions(labels: Sequence[str | None], classes: Sequence[str]) -> np.ndarray:
    """Class indices of each field's label, with len(classes) (counted wrong by every metric) for a
    field where no cell was found (None)."""
    return np.array([len(classes) if label is None else classes.index(label) for label in labels])


def image_report(
    truth: np.ndarray, pred: np.ndarray, groups: np.ndarray, classes: list[str], *, resamples: int,
    confidence: float, seed: int, sources: np.ndarray | None = None,
) -> dict:  # fmt: skip
    """Accuracy, macro-F1 and per-class figures of a set of images, each answered by one cell, a
    missed cell counting as wrong; with bootstrap intervals over `groups` (source photos or their
    scenes: one photo is ~36 Kaggle TEST fields). `n_sources` counts `sources` (each image's source
    photo), the groups where none are given."""
    out = classification_report(truth, pred, classes)
    n = len(classes)
    out["cells_found"] = float(np.mean(pred != n))
    out["missed_per_class"] = {c: int(np.sum((truth == i) & (pred == n))) for i, c in enumerate(classes)}
    out["n_sources"] = len(np.unique(groups if sources is None else sources))
    metrics = headline_metrics(n)
    if set(classes) <= set(NUCLEUS):  # cell types, so also scored as poly/mono
        metrics["nucleus_accuracy"] = nucleus_accuracy(classes)
        out["nucleus_accuracy"] = metrics["nucleus_accuracy"](truth, pred)
    ci = bootstrap_intervals(
        truth, pred, groups, metrics, resamples=resamples, confidence=confidence, seed=seed
    )
    return out | {f"{m}_ci": bounds for m, bounds in ci.items()}
