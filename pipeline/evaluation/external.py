"""Cells from another lab (PBC: CellaVision DM96, May Grünwald-Giemsa, Barcelona), one folder of
single-cell images per class, scored two ways: through the localiser, as `wbc predict` sees a photo
(its best cell answers), and with the whole image as the cell, as a single-cell analyser hands it
over. The default model never trains on these cells: this measures zero-shot transfer. With
`evaluate.calibrate` a third way, `calibrated`: through the localiser by the model calibrated to the
lab on its own unlabelled cells (`pipeline.model.calibrate`), two-fold so that no cell is scored by
statistics it contributed to: each half is scored by the model calibrated on the other half."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from pipeline.core.classes import Head
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.data.fetch import sha256_file
from pipeline.evaluation.metrics import classification_report, image_report, predictions
from pipeline.inference.classify import IMAGE_SUFFIXES, classify_files, lab_cells
from pipeline.inference.tta import predict
from pipeline.model.calibrate import calibratable, calibrate
from pipeline.model.ensemble import first, members_of

MODES = ("localiser", "whole_image")
CALIBRATED = "calibrated"
CALIBRATION_FOLDS = 2  # each image's fold is fixed by its bytes' digest, not by its place in a listing
NOT_FOUND = "no cell found"


def labelled_images(root: Path, classes: Sequence[str]) -> pd.DataFrame:
    """path and class of every image in `root/<class>/`; a folder or file that is not one of
    `classes`' images is an error naming it."""
    if not root.is_dir():
        raise PipelineError(f"{root}: no such folder of labelled cells")
    rows = []
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not folder.is_dir() or folder.name.lower() not in classes:
            raise PipelineError(f"{folder}: not a class folder (expected one of {', '.join(classes)})")
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if not files:
            raise PipelineError(f"{folder}: empty class folder")
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise PipelineError(f"{path}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
            rows.append((path, folder.name.lower()))
    if not rows:
        raise PipelineError(f"{root}: no class folders")
    return pd.DataFrame(rows, columns=["path", "class"])


def score_external(model: keras.Model, params: Params, out: Head, root: Path, classes: Sequence[str],
                   name: str, trained_on: Collection[str] = ()
                   ) -> tuple[dict, dict[str, pd.DataFrame]]:  # fmt: skip
    """The report of each mode (with bootstrap intervals over images: the set records no patient)
    and each mode's (actual, predicted) rows for a confusion plot. Images whose bytes the model
    trained on (sha256 in `trained_on`: an adaptation's cells) are left out and counted."""
    table = labelled_images(root, classes)
    digests = [sha256_file(p) for p in table["path"]]
    seen = np.array([d in set(trained_on) for d in digests], bool)
    table = table[~seen].reset_index(drop=True)
    if table.empty:
        return {"excluded_trained_on": int(seen.sum())}, {}
    files = list(table["path"])
    truth = table["class"].map(out.index).to_numpy()
    actual = [out.classes[i] for i in truth]
    p = params.evaluate
    reports, rows = {}, {}
    modes = [*MODES, CALIBRATED] if p.calibrate and calibratable(model) else MODES
    kept = [d for d, s in zip(digests, seen, strict=True) if not s]
    found: Found | None = None  # the localiser mode's cells (the first mode), which calibration reuses
    for mode in modes:
        if mode == CALIBRATED:
            assert found is not None, "the localiser mode runs first"
            labels = cross_calibrated(model, params, out, found, kept)
        else:
            results = classify_files(files, model, params, out, whole_image=mode == "whole_image",
                                     strict=True, desc=f"{name} ({mode})")  # fmt: skip
            labels = [r.best_label for r in results]
        pred = predictions(labels, out.classes)
        reports[mode] = image_report(
            truth, pred, np.array([str(f) for f in files]), list(out.classes),
            resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
        )  # fmt: skip
        reports[mode]["excluded_trained_on"] = int(seen.sum())
        if mode == "localiser":  # its cells, cut once, for the members curve and calibration
            boxes = {f: [c.box for c in r.cells] for f, r in zip(files, results, strict=True)}
            found = Found(lab_cells(files, params, model.input_shape[1:3], boxes=boxes),
                          np.array([len(boxes[f]) for f in files]))  # fmt: skip
            if (n := len(members_of(model))) > 1:
                whole = {m: reports[mode][m] for m in ("accuracy", "macro_f1")}
                reports[mode]["members"] = members_curve(model, params, out, found, truth) | {str(n): whole}
        rows[mode] = pd.DataFrame({"actual": actual, "predicted": [lb or NOT_FOUND for lb in labels]})
    return reports, rows


@dataclass(frozen=True)
class Found:
    """The localiser's cells of every image, cut as the model sees them: `x` holds each image's
    cells in turn (best first), `counts` how many each has (0: none found)."""

    x: np.ndarray
    counts: np.ndarray

    def image_of_cell(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.counts)), self.counts)

    def part(self, images: np.ndarray) -> "Found":
        """The cells of the images where `images` (a mask over images) is set, in order."""
        return Found(self.x[images[self.image_of_cell()]], self.counts[images])


def best_labels(model: keras.Model, found: Found, out: Head, tta: bool) -> list[str | None]:
    """Each image's answer as `wbc predict` gives it: its best cell's label (None: no cell)."""
    has = found.counts > 0
    best = found.x[(np.cumsum(found.counts) - found.counts)[has]]  # only the cells that answer
    answers = iter(predict(model, best, tta=tta)[out.name].argmax(axis=1) if len(best) else ())
    return [out.classes[int(next(answers))] if n else None for n in has]


def members_curve(model: keras.Model, params: Params, out: Head, found: Found, truth: np.ndarray) -> dict:
    """Accuracy and macro-F1 through the localiser of the ensemble of the first k members, for every
    k short of all (the whole ensemble is the mode's own score), on the cells the localiser found for
    the whole ensemble: zero-shot transfer swings between single models, and this tells how much
    averaging steadies it (`wbc cv report`'s ensemble size)."""
    curve = {}
    for k in range(1, len(members_of(model))):
        pred = predictions(best_labels(first(model, k), found, out, params.evaluate.tta), out.classes)
        report = classification_report(truth, pred, list(out.classes))
        curve[str(k)] = {m: report[m] for m in ("accuracy", "macro_f1")}
    return curve


def cross_calibrated(model: keras.Model, params: Params, out: Head, found: Found, digests: Sequence[str]
                     ) -> list[str | None]:  # fmt: skip
    """Each image's answer from its cells (`found`: the localiser's, cut once) classified by `model`
    calibrated on the cells of the other folds' images (never on its own), in image order."""
    folds = np.array([int(d[:8], 16) % CALIBRATION_FOLDS for d in digests])
    labels: list[str | None] = [None] * len(digests)
    for fold in range(CALIBRATION_FOLDS):
        # PBC-dev's halves hold ~300 cells; a small test set may hold fewer than a user is asked for
        calibrated = calibrate(model, found.part(folds != fold).x, min_cells=2)
        answers = best_labels(calibrated, found.part(folds == fold), out, params.evaluate.tta)
        for i, label in zip(np.flatnonzero(folds == fold), answers, strict=True):
            labels[i] = label
    return labels
