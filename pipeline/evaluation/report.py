"""The evaluate stage's report: every head of the model scored on val and test, bootstrap intervals
on test (resampling scenes: a photo with its re-shot twins), and the test split's plots (confusion
matrix, predictions, misclassified crops)."""

from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.atomic import atomic_write_bytes
from pipeline.core.classes import Head, head
from pipeline.core.params import EvaluateParams
from pipeline.data.arrays import class_list, load_npz
from pipeline.data.scenes import Twins, scenes
from pipeline.evaluation.metrics import (
    bootstrap_intervals,
    classification_report,
    headline_metrics,
    nucleus_accuracy,
)
from pipeline.evaluation.plots import confusion_png, gallery_png
from pipeline.inference.tta import predict
from pipeline.model.ensemble import first, members_of


def score(arrays: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], p: EvaluateParams,
          intervals: bool, twins: Twins = ()) -> dict:  # fmt: skip
    """Metrics of every head the model has; the cell-type head (if any) is the headline. Intervals
    resample scenes: the source photos, with `twins` (re-shots of one field) drawn together."""
    classes = class_list(arrays)
    groups = scenes(arrays["source_image"], twins)
    out: dict = {}
    for h in (head("type", classes), head("nucleus", classes)):
        if h.name not in probs:
            continue
        truth, pred = h.labels(arrays), probs[h.name].argmax(axis=1)
        report = classification_report(truth, pred, list(h.classes))
        report["n_sources"] = len(np.unique(arrays["source_image"]))
        report["n_scenes"] = len(np.unique(groups))
        metrics = headline_metrics(len(h.classes))
        if h.name == "type":
            metrics["nucleus_accuracy"] = nucleus_accuracy(classes)
            report["nucleus_accuracy"] = metrics["nucleus_accuracy"](truth, pred)
        if intervals:
            ci = bootstrap_intervals(
                truth, pred, groups, metrics,
                resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
            )  # fmt: skip
            report.update({f"{m}_ci": bounds for m, bounds in ci.items()})
        out[h.name] = report
    return out


def headline(report: Mapping) -> dict[str, float]:
    """The numbers compared first, in reading order: test, validation, the published sets, another
    lab through the localiser (`metrics/summary.json`, first of dvc.yaml's metrics)."""
    out = {
        f"{split}_{m}": float(report[split][m]) for split in ("test", "val") for m in ("accuracy", "macro_f1")
    }
    for name, scores in sorted(report.get("published", {}).items()):
        out[f"kaggle_{name}_accuracy"] = float(scores["accuracy"])
    domains = report.get("domains", {})
    for domain, scores in sorted(domains.items()) if len(domains) > 1 else ():  # test = several labs' cells
        out |= {f"{domain}_test_{m}": float(scores[m]) for m in ("accuracy", "macro_f1")}
    for lab, modes in sorted(report.get("external", {}).items()):
        if "localiser" in modes:  # else every cell was trained on (an adaptation with k = all)
            out |= {f"{lab}_{m}": float(modes["localiser"][m]) for m in ("accuracy", "macro_f1")}
        if "calibrated" in modes:  # the same, calibrated on the lab's unlabelled cells
            out |= {f"{lab}_calibrated_{m}": float(modes["calibrated"][m]) for m in ("accuracy", "macro_f1")}
    return out


def evaluate_splits(model: keras.Model, p: EvaluateParams, twins: Twins = ()) -> tuple[dict, list]:
    """The report of val and test (the headline head under the split's name, any other head as
    `<split>_<head>_head`), an ensemble's `members` curve, and the plot files written for test."""
    report: dict = {}
    files: list = []
    data = {split: load_npz(paths.resized_split(split)) for split in ("val", "test")}
    whole = {}  # the whole model's probabilities by split: the members curve's last point
    for split, arrays in data.items():
        probs = whole[split] = predict(model, arrays["x"], tta=p.tta)
        by_head = score(arrays, probs, p, intervals=split == "test", twins=twins)
        name = "type" if "type" in by_head else "nucleus"
        report[split] = by_head.pop(name) | {"head": name}
        for other, metrics in by_head.items():
            report[f"{split}_{other}_head"] = metrics
        if split == "test":
            report["domains"] = domain_reports(arrays, probs, p, twins)
            out = head(name, class_list(arrays))
            files = write_plots(arrays, probs[name], out, report[split]["confusion"], p.gallery_size)
    if len(members_of(model)) > 1:
        report["members"] = members_curve(model, data, p, whole)
    return report, files


def domain_reports(
    arrays: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], p: EvaluateParams, twins: Twins = ()
) -> dict:
    """The test split's headline head scored for each domain (BCCD's, and each source's) apart."""
    domains = arrays["domain"] if "domain" in arrays else np.full(len(arrays["y"]), paths.BCCD_DOMAIN)
    found = {}
    for domain in sorted(set(domains.tolist())):
        mask = domains == domain
        part = {k: v[mask] if v.shape[:1] == mask.shape else v for k, v in arrays.items()}
        by_head = score(part, {h: v[mask] for h, v in probs.items()}, p, intervals=True, twins=twins)
        metrics = by_head["type"] if "type" in by_head else by_head["nucleus"]
        found[str(domain)] = {k: v for k, v in metrics.items() if k != "confusion"}
    return found


def members_curve(model: keras.Model, data: Mapping[str, Mapping], p: EvaluateParams,
                  whole: Mapping[str, Mapping[str, np.ndarray]]) -> dict:  # fmt: skip
    """Accuracy and macro-F1 of the ensemble of the first k members, for every k: what each added
    member buys, on val (where the ensemble size is chosen: `wbc cv report`) and test (shown).
    `whole`: the whole model's probabilities by split, already predicted (its k, not run again)."""
    curve = {}
    n = len(members_of(model))
    for k in range(1, n + 1):
        scores = {}
        for split, arrays in data.items():
            probs = whole[split] if k == n else predict(first(model, k), arrays["x"], tta=p.tta)
            by_head = score(arrays, probs, p, intervals=False)
            metrics = by_head["type"] if "type" in by_head else by_head["nucleus"]
            scores |= {f"{split}_{m}": float(metrics[m]) for m in ("accuracy", "macro_f1")}
        curve[str(k)] = scores
    return curve


def write_plots(arrays: Mapping[str, np.ndarray], probs: np.ndarray, out: Head, confusion: list,
                gallery_size: int) -> list:  # fmt: skip
    """predictions.csv, the confusion CSV (a DVC plot) and PNG of `confusion` (the report's counts),
    and the misclassified gallery."""
    names = out.classes
    truth, pred = out.labels(arrays), probs.argmax(axis=1)
    rows = pd.DataFrame(
        {
            "sample_id": arrays["sample_id"],
            "source_image": arrays["source_image"],
            "actual": [names[i] for i in truth],
            "predicted": [names[i] for i in pred],
            **{f"p_{n}": probs[:, i].round(6) for i, n in enumerate(names)},
        }
    )
    atomic_write_bytes(paths.PREDICTIONS, rows.to_csv(index=False).encode())
    atomic_write_bytes(paths.CONFUSION, rows[["actual", "predicted"]].to_csv(index=False).encode())
    atomic_write_bytes(paths.CONFUSION_PNG, confusion_png(confusion, names, f"test, {out.name}"))
    wrong = np.flatnonzero(truth != pred)
    gallery = gallery_png(
        arrays["x"][wrong], rows["actual"].iloc[wrong].tolist(), rows["predicted"].iloc[wrong].tolist(),
        arrays["sample_id"][wrong].tolist(), gallery_size,
    )  # fmt: skip
    atomic_write_bytes(paths.MISCLASSIFIED_PNG, gallery)
    return [paths.CONFUSION_PNG, paths.MISCLASSIFIED_PNG, paths.PREDICTIONS]


def write_confusion(rows: pd.DataFrame, csv: Path, png: Path, title: str) -> list:
    """(actual, predicted) rows as a DVC confusion plot and a PNG of counts and shares; the labels
    are those in the rows (classes, and a mark such as "no cell found")."""
    labels = list(dict.fromkeys([*rows["actual"], *sorted(set(rows["predicted"]) - set(rows["actual"]))]))
    matrix = pd.crosstab(rows["actual"], rows["predicted"]).reindex(
        index=labels, columns=labels, fill_value=0
    )
    atomic_write_bytes(csv, rows.to_csv(index=False).encode())
    atomic_write_bytes(png, confusion_png(matrix.to_numpy().tolist(), labels, title))
    return [csv, png]
