"""The published test sets (Kaggle "blood-cells" TEST and TEST_SIMPLE): whole 320x240 fields, each
named by its class folder, scored through the localiser and the classifier, as the published
systems were. Honest only for a model that never trained on their 69 source photos."""

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.classes import NUCLEUS, Head
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.data.resize import load_npz
from pipeline.evaluation.metrics import (
    bootstrap_intervals,
    classification_report,
    headline_metrics,
    nucleus_accuracy,
)
from pipeline.inference.classify import classify_files

ENV = "WBC_DATASET2_DIR"  # the folder holding images/TEST, images/TEST_SIMPLE and test_sources.csv
SETS = ("TEST_SIMPLE", "TEST")


def dataset2_dir() -> Path | None:
    """The folder named by WBC_DATASET2_DIR, checked; None when the variable is unset."""
    value = os.environ.get(ENV)
    if not value:
        return None
    root = Path(value)
    for needed in ("images/TEST", "images/TEST_SIMPLE", "test_sources.csv"):
        if not (root / needed).exists():
            raise PipelineError(f"{ENV}={root}: no {needed} there")
    return root


def _key(class_folder: str, file_name: str) -> tuple[str, str]:
    """TEST_SIMPLE/<CLASS>/_<n>_<id>.jpeg is source n of its class; every TEST/<CLASS>/_<n>_*.jpeg is an
    augmented copy of that same source."""
    parts = file_name.split("_")
    if len(parts) < 3 or not parts[1].isdigit():
        raise PipelineError(f"{class_folder}/{file_name}: not named _<n>_<id>.jpeg like the Kaggle sets")
    return class_folder, parts[1]


def fields(root: Path) -> pd.DataFrame:
    """One row per field: set, path, class (lower case) and the BCCD source photo it comes from."""
    sources = pd.read_csv(root / "test_sources.csv")
    by_key = {
        _key(*rel.split("/", 1)): img
        for rel, img in zip(sources["test_simple_file"], sources["bccd_image"], strict=True)
    }
    rows = []
    for set_name in SETS:
        for path in sorted((root / "images" / set_name).glob("*/*.jpeg")):
            key = _key(path.parent.name, path.name)
            if key not in by_key:
                raise PipelineError(f"{path}: its source is not in {root / 'test_sources.csv'}")
            rows.append((set_name, path, path.parent.name.lower(), by_key[key]))
    return pd.DataFrame(rows, columns=["set", "path", "class", "source_image"])


def check_unseen(trained_on: Iterable[str], held_out: Iterable[str]) -> None:
    """Refuse to score sets whose source photos the model trained or validated on."""
    leaked = sorted(set(trained_on) & set(held_out))
    if leaked:
        raise PipelineError(
            f"refusing to score the published test sets: the model trained on {len(leaked)} of their "
            f"source photos ({', '.join(leaked[:3])}, ...); train with split.strategy: kaggle"
        )


def predictions(labels: Sequence[str | None], classes: Sequence[str]) -> np.ndarray:
    """Class indices of each field's label, with len(classes) (counted wrong by every metric) for a
    field where no cell was found (None)."""
    return np.array([len(classes) if label is None else classes.index(label) for label in labels])


def report(
    truth: np.ndarray, pred: np.ndarray, groups: np.ndarray, classes: list[str], *, resamples: int,
    confidence: float, seed: int,
) -> dict:  # fmt: skip
    """Accuracy, macro-F1 and per-class figures of one set, a missed cell counting as wrong, with
    bootstrap intervals over source photos (one photo is ~36 TEST fields)."""
    out = classification_report(truth, pred, classes)
    n = len(classes)
    out["cells_found"] = float(np.mean(pred != n))
    out["missed_per_class"] = {c: int(np.sum((truth == i) & (pred == n))) for i, c in enumerate(classes)}
    out["n_sources"] = len(np.unique(groups))
    metrics = headline_metrics(n)
    if set(classes) <= set(NUCLEUS):  # cell types, so also scored as poly/mono
        metrics["nucleus_accuracy"] = nucleus_accuracy(classes)
        out["nucleus_accuracy"] = metrics["nucleus_accuracy"](truth, pred)
    ci = bootstrap_intervals(
        truth, pred, groups, metrics, resamples=resamples, confidence=confidence, seed=seed
    )
    return out | {f"{m}_ci": bounds for m, bounds in ci.items()}


def score_published(model: keras.Model, params: Params, out: Head, root: Path) -> dict:
    """TEST_SIMPLE and TEST through the localiser (its best cell per field) and the classifier,
    exactly as `wbc predict` classifies a photo; refused if the model saw their source photos."""
    table = fields(root)
    seen = {
        source
        for split in ("train", "val")
        for source in load_npz(paths.resized_split(split), keys=("source_image",))["source_image"]
    }
    check_unseen(seen, table["source_image"])
    results = classify_files(list(table["path"]), model, params, out, strict=True, desc="published sets")
    pred = predictions([r.cells[0].label if r.cells else None for r in results], out.classes)  # best cell
    truth = table["class"].map(out.index).to_numpy()
    p = params.evaluate
    scores = {}
    for set_name, rows in table.groupby("set").groups.items():
        idx = np.asarray(rows)
        scores[set_name] = report(
            truth[idx], pred[idx], table["source_image"].to_numpy()[idx], list(out.classes),
            resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
        )  # fmt: skip
    return scores
