"""The published test sets (Kaggle "blood-cells" TEST and TEST_SIMPLE): whole 320x240 fields, each
named by its class folder, scored through the localiser and the classifier, as the published
systems were. Honest only for a model that never trained on their source photos: the 69 that
TEST_SIMPLE names, and two more that 95 TEST fields were copied from (found by keypoints)."""

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
from pipeline.data.scenes import Twins, scene_of
from pipeline.evaluation.metrics import image_report, predictions
from pipeline.inference.classify import classify_files

SETS = ("TEST_SIMPLE", "TEST")


def fields(root: Path, fields_csv: Path) -> pd.DataFrame:
    """One row per field under `root` (images/TEST, images/TEST_SIMPLE): set, path, class (lower
    case) and the BCCD photo it was made from, by `fields_csv` (found by keypoints:
    scripts/match_published_sources.py). A TEST file's `_<n>_` is not its source: the copies of
    all four monocyte photos are spread over every `_<n>_`."""
    listed = pd.read_csv(fields_csv, keep_default_na=False)
    by_file = dict(zip(listed["file"], listed["bccd_image"], strict=True))
    rows = []
    for set_name in SETS:
        for path in sorted((root / "images" / set_name).glob("*/*.jpeg")):
            source = by_file.get(path.relative_to(root).as_posix(), "")
            if not source:
                raise PipelineError(
                    f"{path}: no source photo for it in {fields_csv} (run scripts/match_published_sources.py)"
                )
            rows.append((set_name, path, path.parent.name.lower(), source))
    return pd.DataFrame(rows, columns=["set", "path", "class", "source_image"])


def check_unseen(trained_on: Iterable[str], held_out: Iterable[str]) -> None:
    """Refuse to score sets whose source photos the model trained or validated on."""
    leaked = sorted(set(trained_on) & set(held_out))
    if leaked:
        raise PipelineError(
            f"refusing to score the published test sets: the model trained on {len(leaked)} of their "
            f"source photos or a re-shot twin of one ({', '.join(leaked[:3])}, ...); train with "
            "split.strategy: kaggle"
        )


def photo_majority(right: np.ndarray, photos: Iterable[str]) -> float:
    """Share of photos whose fields are mostly (over half) right: TEST holds 13 copies of each
    neutrophil photo but 155 of each monocyte photo, so its field accuracy weighs photos unequally;
    this counts each of its photos once, like the test split's one crop per photo."""
    return float(pd.Series(right).groupby(np.asarray(list(photos))).mean().gt(0.5).mean())


def score_published(
    model: keras.Model, params: Params, out: Head, root: Path, fields_csv: Path, twins: Twins = ()
) -> tuple[dict, pd.DataFrame]:
    """TEST_SIMPLE and TEST through the localiser (its best cell per field) and the classifier,
    exactly as `wbc predict` classifies a photo. Refused if the model saw any of the photos
    TEST_SIMPLE holds out; TEST fields copied from other photos the model saw (95 eosinophil fields
    of two BCCD train / val photos, under the default split) are left out and counted
    (`fields_left_out`), as are fields of a photo whose re-shot twin it saw (`twins`); the
    intervals resample scenes, a photo with its twins. Returns each set's report and every field's
    answer (set, file, class, source photo, scored, predicted: empty where no cell was found or not
    scored, box)."""
    table = fields(root, fields_csv)
    seen = {
        source
        for split in ("train", "val")
        for source in load_npz(paths.resized_split(split), keys=("source_image",))["source_image"]
    }
    scene = scene_of(set(seen) | set(table["source_image"]), twins)
    seen_scenes = {scene[s] for s in seen}
    check_unseen(seen_scenes, table.loc[table["set"] == "TEST_SIMPLE", "source_image"].map(scene))
    table["scored"] = ~table["source_image"].map(scene).isin(seen_scenes)
    scored = table[table["scored"]].reset_index(drop=True)
    results = classify_files(list(scored["path"]), model, params, out, strict=True, desc="published sets")
    labels = [r.best_label for r in results]
    pred = predictions(labels, out.classes)
    truth = scored["class"].map(out.index).to_numpy()
    p = params.evaluate
    reports = {}
    for set_name, rows in scored.groupby("set").groups.items():
        idx = np.asarray(rows)
        photos = scored["source_image"].to_numpy()[idx]
        scenes = np.asarray([scene[s] for s in photos])
        reports[set_name] = image_report(
            truth[idx], pred[idx], scenes, list(out.classes),
            resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed, sources=photos,
        )  # fmt: skip
        reports[set_name]["n_scenes"] = len(set(scenes))
        reports[set_name]["fields_left_out"] = int((~table.loc[table["set"] == set_name, "scored"]).sum())
        reports[set_name]["photo_majority_accuracy"] = photo_majority(truth[idx] == pred[idx], photos)
    cells = {path: r.cells[0] for path, r in zip(scored["path"], results, strict=True) if r.cells}
    best = [cells.get(path) for path in table["path"]]
    answers = table.assign(
        file=[path.relative_to(root).as_posix() for path in table["path"]],
        predicted=[cell.label if cell else "" for cell in best],
        box=[" ".join(map(str, cell.box)) if cell else "" for cell in best],
    )
    return reports, answers[["set", "file", "class", "source_image", "scored", "predicted", "box"]]
