"""From a smear photo to a WBC differential: find the white cells (or take given VOC boxes), cut
and resize each one exactly as the crop and resize stages do, classify it, count the types."""

import sys
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.core.classes import Head, head
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.data.crop import cut_cell
from pipeline.data.images import load_rgb
from pipeline.data.resize import resize_image, treatment
from pipeline.inference.localize import find_wbcs
from pipeline.inference.tta import BATCH, predict

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MIN_SIDE = 32  # an image narrower or shorter than this holds no classifiable cell
CHUNK = 64  # fields classified together by `classify_files`: one model call per TTA view


@dataclass(frozen=True)
class Cell:
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax in the image's pixels
    label: str
    probabilities: dict[str, float]
    score: float | None = None  # the localiser's confidence; None for a given box


@dataclass
class ImageResult:
    image: str
    cells: list[Cell] = field(default_factory=list)
    note: str = ""  # why an image has no cells

    @property
    def best_label(self) -> str | None:
        """The answer for the image as a whole: its best cell's label (None: no cell found)."""
        return self.cells[0].label if self.cells else None


def load_classifier(uri: str | None, default: Path) -> keras.Model:
    """The pipeline's model file by default; or an MLflow URI (`models:/wbc-classifier@champion`,
    `runs:/<id>/model`, `models:/<model id>`); or another `.keras` file."""
    if uri is None or uri.split(":", 1)[0] not in ("models", "runs"):
        return load_model_file(Path(uri or default))
    from pipeline.tracking.models import load_logged_model

    return load_logged_model(uri)


def load_model_file(path: Path) -> keras.Model:
    """A `.keras` file, or one clear error: Keras reports a damaged archive as 'File not found'."""
    if not path.is_file():
        raise PipelineError(f"{path}: no model file (run `dvc repro` first, or pass --model)")
    if not zipfile.is_zipfile(path):
        raise PipelineError(
            f"{path}: not a Keras model archive (damaged or cut short?): restore it with "
            "`dvc pull models/model.keras` or `dvc repro train`, or pass another --model"
        )
    try:
        return keras.saving.load_model(path)
    except Exception as err:  # Keras raises ValueError, KeyError, OSError... for a broken archive
        raise PipelineError(f"{path}: cannot load this Keras model ({type(err).__name__}: {err})") from None


def model_head(model: keras.Model, classes: Sequence[str]) -> Head:
    """The head a differential is read from: cell type if the model has it, else poly / mono."""
    if "type" in model.output_names:
        n = model.get_layer("type").output.shape[-1]  # a Dense head, or an ensemble's Average
        if n != len(classes):
            raise PipelineError(f"the model predicts {n} cell types but the params name {len(classes)}")
        return head("type", classes)
    return head("nucleus", classes)


def crops(img: Image.Image, boxes: Sequence[tuple], params: Params, size: tuple[int, int]) -> np.ndarray:
    """(n, h, w, 3) uint8: each box cut with the crop stage's window, resized and treated (what lies
    beyond the field, colour) like the resize stage."""
    treat = treatment(params.resize)
    out = np.empty((len(boxes), *size, 3), np.uint8)
    for i, box in enumerate(boxes):
        out[i] = resize_image(cut(img, box, params), *size, treat)
    return out


def cut(img: Image.Image, box: Sequence[int], params: Params) -> Image.Image:
    """One cell as the crop stage cuts it (`crop.padding`, `crop.square`)."""
    return cut_cell(img, box, params.crop.padding, params.crop.square)


def classify(model: keras.Model, x: np.ndarray, out: Head, tta: bool) -> list[tuple[str, dict[str, float]]]:
    """(label, probabilities by class) per crop, read from the head `out`."""
    if not len(x):
        return []
    names = out.classes
    probs = predict(model, x, tta=tta)[out.name]
    return [
        (names[int(p.argmax())], {n: round(float(v), 6) for n, v in zip(names, p, strict=True)})
        for p in probs
    ]


def differential(labels: Sequence[str], names: Sequence[str]) -> dict:
    """What a clinician reads: the count and percentage of each type among the cells found."""
    counts = {n: sum(label == n for label in labels) for n in names}
    total = sum(counts.values())
    return {
        "cells": total,
        "count": counts,
        "percent": {n: round(100 * c / total, 1) if total else 0.0 for n, c in counts.items()},
    }


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The images named, and those under the folders named (recursively), in a stable order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise PipelineError(f"{path}: no such file or folder")
    return found


def find_cells(
    images: Sequence[tuple[str, Image.Image, Sequence[tuple] | None]], params: Params, size: tuple[int, int]
) -> tuple[list[list[tuple]], np.ndarray]:
    """Each field's cells as (box, localiser score or None), and all their crops in that order: the
    given boxes, or those the localiser finds; none in an image under MIN_SIDE."""
    found, batches = [], [np.empty((0, *size, 3), np.uint8)]
    for _, img, given in images:
        if min(img.size) < MIN_SIDE:
            cells = []
        elif given is not None:
            cells = [(tuple(b), None) for b in given]
        else:
            cells = [(d.box, d.score) for d in find_wbcs(np.asarray(img), params.localize)]
        found.append(cells)
        batches.append(crops(img, [b for b, _ in cells], params, size))
    return found, np.concatenate(batches)


def lab_cells(files: Sequence[Path], params: Params, size: tuple[int, int], *, whole_image: bool = False,
              boxes: Mapping[Path, Sequence[tuple]] | None = None) -> np.ndarray:  # fmt: skip
    """Every cell in `files` (found as `classify_files` finds them) as the model sees it: what a
    lab's unlabelled photos give `pipeline.model.calibrate`. An unreadable file is an error."""
    boxes = boxes or {}
    x = [np.empty((0, *size, 3), np.uint8)]
    for path in files:
        img = load_rgb(path)
        given = [(0, 0, img.width, img.height)] if whole_image else boxes.get(path)
        x.append(find_cells([(str(path), img, given)], params, size)[1])
    return np.concatenate(x)


def predict_images(
    images: Sequence[tuple[str, Image.Image, Sequence[tuple] | None]],
    model: keras.Model,
    params: Params,
    out: Head,
) -> list[ImageResult]:
    """Classify the white cells of several fields, given as (name, image, VOC boxes or None): the
    given boxes, or those the localiser finds. All crops go through the model together (one call
    per TTA view, not per field). A field with no cell says so in `note` rather than disappearing."""
    if not images:
        return []
    found, x = find_cells(images, params, model.input_shape[1:3])
    return answers(images, found, classify(model, x, out, params.evaluate.tta))


def answers(images: Sequence[tuple[str, Image.Image, Sequence[tuple] | None]], found: Sequence[list[tuple]],
            labelled: Sequence[tuple[str, dict[str, float]]]) -> list[ImageResult]:  # fmt: skip
    """Each field's result from its cells (`find_cells`) and their (label, probabilities), in order."""
    labels = iter(labelled)
    results = []
    for (name, img, given), cells in zip(images, found, strict=True):
        if not cells:
            why = "no box in the VOC file" if given is not None else "no white cell found"
            why = f"image smaller than {MIN_SIDE} px" if min(img.size) < MIN_SIDE else why
            results.append(ImageResult(name, note=why))
            continue
        results.append(ImageResult(name, [Cell(box, *next(labels), score) for box, score in cells]))
    return results


@dataclass(frozen=True)
class _ReadChunk:
    """A chunk of files read, localised and cut, waiting until all its cells are labelled."""

    files: Sequence[Path]
    readable: list[tuple[str, Image.Image, Sequence[tuple] | None]]
    failed: dict[Path, ImageResult]  # unreadable files, with why
    found: list[list[tuple]]  # each readable image's cells (`find_cells`)
    n_cells: int


def classify_files(
    files: Sequence[Path],
    model: keras.Model,
    params: Params,
    out: Head,
    boxes: Mapping[Path, Sequence[tuple]] | None = None,
    *,
    whole_image: bool = False,
    strict: bool = False,
    desc: str = "images",
) -> list[ImageResult]:
    """`predict_images` over image files, CHUNK at a time, with a progress bar on stderr: the one
    path `wbc predict` and the published-set scoring share. With `whole_image` each image is itself
    the cell's box (a single-cell image); else the `boxes` given for it, or the localiser's. An
    unreadable file is an error when `strict`, else an ImageResult whose note says why.

    The next chunk is read, localised and cut in a second thread while the model classifies this
    one (decoding, numpy and TensorFlow release the GIL): 1.2-1.3x the fields/s on 2 cores, the
    same results. A chunk's cells beyond its last whole batch of `tta.BATCH` are classified with the
    next chunk's, not padded: the same probabilities, fewer model calls."""
    boxes = boxes or {}
    size = model.input_shape[1:3]

    def read(chunk: Sequence[Path]) -> tuple[_ReadChunk, np.ndarray]:
        readable, failed = [], {}
        for path in chunk:
            try:
                img = load_rgb(path)
            except PipelineError as err:
                if strict:
                    raise
                failed[path] = ImageResult(str(path), note=f"unreadable: {err}")
                continue
            given = [(0, 0, img.width, img.height)] if whole_image else boxes.get(path)
            readable.append((str(path), img, given))
        found, x = find_cells(readable, params, size)
        return _ReadChunk(chunk, readable, failed, found, len(x)), x

    chunks = [files[start : start + CHUNK] for start in range(0, len(files), CHUNK)]
    results: list[ImageResult] = []
    waiting: list[_ReadChunk] = []  # read chunks whose cells are not all classified yet, in order
    unclassified = np.empty((0, *size, 3), np.uint8)
    labelled: list[tuple[str, dict[str, float]]] = []  # classified cells not yet handed to their chunk
    with tqdm(total=len(files), desc=desc, unit="image", file=sys.stderr, mininterval=10,
              disable=len(files) < 2) as bar, ThreadPoolExecutor(1) as ahead:  # fmt: skip
        pending = ahead.submit(read, chunks[0]) if chunks else None
        for k in range(len(chunks)):
            read_chunk, x = pending.result()
            if k + 1 < len(chunks):
                pending = ahead.submit(read, chunks[k + 1])
            waiting.append(read_chunk)
            unclassified = np.concatenate([unclassified, x])
            # Whole model batches only until the last chunk: the rest waits for the next chunk's
            # cells instead of being padded (a padded batch costs a full one).
            ready = len(unclassified) if k + 1 == len(chunks) else len(unclassified) // BATCH * BATCH
            labelled += classify(model, unclassified[:ready], out, params.evaluate.tta)
            unclassified = unclassified[ready:]
            while waiting and waiting[0].n_cells <= len(labelled):
                done = waiting.pop(0)
                predicted = iter(answers(done.readable, done.found, labelled[: done.n_cells]))
                labelled = labelled[done.n_cells :]
                for path in done.files:
                    results.append(done.failed[path] if path in done.failed else next(predicted))
                bar.update(len(done.files))
    return results
