"""The published test sets (Kaggle "blood-cells" TEST and TEST_SIMPLE): whole 320x240 fields, each
named by its class folder, scored through the localiser and the classifier, as the published
systems were. Honest only for a model that never trained on their 69 source photos."""

from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.classes import Head
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.data.arrays import load_npz
from pipeline.evaluation.metrics import image_report, predictions
from pipeline.inference.classify import classify_files

SETS = ("TEST_SIMPLE", "TEST")


def _key(class_folder: str, file_name: str) -> tuple[str, str]:
    """TEST_SIMPLE/<CLASS>/_<n>_<id>.jpeg is source n of its class; every TEST/<CLASS>/_<n>_*.jpeg is an
    augmented copy of that same source."""
    parts = file_name.split("_")
    if len(parts) < 3 or not parts[1].isdigit():
        raise PipelineError(f"{class_folder}/{file_name}: not named _<n>_<id>.jpeg like the Kaggle sets")
    return class_folder, parts[1]


def fields(root: Path, sources_csv: Path) -> pd.DataFrame:
    """One row per field under `root` (images/TEST, images/TEST_SIMPLE): set, path, class (lower
    case) and the BCCD source photo it comes from, by `sources_csv`."""
    sources = pd.read_csv(sources_csv)
    by_key = {
        _key(*rel.split("/", 1)): img
        for rel, img in zip(sources["test_simple_file"], sources["bccd_image"], strict=True)
    }
    rows = []
    for set_name in SETS:
        for path in sorted((root / "images" / set_name).glob("*/*.jpeg")):
            key = _key(path.parent.name, path.name)
            if key not in by_key:
                raise PipelineError(f"{path}: its source is not in {sources_csv}")
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


def score_published(model: keras.Model, params: Params, out: Head, root: Path, sources_csv: Path) -> dict:
    """TEST_SIMPLE and TEST through the localiser (its best cell per field) and the classifier,
    exactly as `wbc predict` classifies a photo; refused if the model saw their source photos."""
    table = fields(root, sources_csv)
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
        scores[set_name] = image_report(
            truth[idx], pred[idx], table["source_image"].to_numpy()[idx], list(out.classes),
            resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
        )  # fmt: skip
    return scores
