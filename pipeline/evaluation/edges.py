"""Cells cut by a photo's frame, as Kaggle TEST's shifted fields and any user's photos cut them.

Each cell of a split is cut again as if the photo's frame crossed it (a share `outside` of the
cell beyond the frame, from each side in turn) as the crop stage would cut such a cell (and
`wbc predict` does, on a BCCD-sized photo): its box clamped to the frame, then the crop window.
Or (`beyond="black"`) the photo keeps its size and what lies beyond a line tilted by TILT_DEG is
black, as the fill of Kaggle TEST's rotated fields (or an eyepiece's dark surround) meets a cell.
Made for validation cells, so a change meant for such cells (`augment.shift`, filling what lies
beyond the field) is chosen without looking at a test set.
"""

import functools
import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from pydantic import ValidationError

from pipeline.core import paths
from pipeline.core.classes import class_names
from pipeline.core.errors import PipelineError
from pipeline.core.params import CropParams, ResizeParams
from pipeline.data.crop import clamp, crop_window
from pipeline.data.resize import resize_image, treatment
from pipeline.data.voc import Box

SIDES = ("left", "right", "top", "bottom")
WHOLE = "whole"
BEYOND = ("cut", "black")  # the photo cut at the frame | kept whole, black beyond a tilted line
WORKSPACE = "workspace"  # a source naming the working tree's run, as `dvc exp show` names it
# The black edge's tilt: TEST's fields are rotated by up to about 20 degrees. Each side is its own
# version, so the four lines need not bound one rotated rectangle (left/right lean the other way).
TILT_DEG = 15.0


def at_frame(photo: Image.Image, box: Box, side: str, outside: float) -> tuple[Image.Image, Box]:
    """The photo as if its frame on `side` crossed the cell with `outside` of the cell's width (or
    height) beyond it, and the cell's box clamped to that frame, in its coordinates."""
    if not 0 < outside < 1:
        raise PipelineError(f"outside must lie between 0 and 1 (a share of the cell), not {outside}")
    dx, dy = round(outside * box.width), round(outside * box.height)
    area = {
        "left": (box.xmin + dx, 0, photo.width, photo.height),
        "right": (0, 0, box.xmax - dx, photo.height),
        "top": (0, box.ymin + dy, photo.width, photo.height),
        "bottom": (0, 0, photo.width, box.ymax - dy),
    }[side]
    x0, y0 = area[0], area[1]
    cut = photo.crop(area)
    moved = Box(box.xmin - x0, box.ymin - y0, box.xmax - x0, box.ymax - y0)
    return cut, clamp(moved, cut.width, cut.height)


def black_beyond(photo: Image.Image, box: Box, side: str, outside: float) -> tuple[Image.Image, Box]:
    """The photo with everything beyond a line black: the line tilted by TILT_DEG, crossing the
    cell's middle with `outside` of the cell's width (or height) beyond it on `side`. The box is
    kept: a localiser finds the cell's stain, not the field's edge."""
    if not 0 < outside < 1:
        raise PipelineError(f"outside must lie between 0 and 1 (a share of the cell), not {outside}")
    y, x = np.mgrid[0 : photo.height, 0 : photo.width]
    tilt = np.tan(np.radians(TILT_DEG))
    cx, cy = (box.xmin + box.xmax) / 2, (box.ymin + box.ymax) / 2
    dx, dy = outside * box.width, outside * box.height
    beyond = {
        "left": x < box.xmin + dx + (y - cy) * tilt,
        "right": x > box.xmax - dx + (y - cy) * tilt,
        "top": y < box.ymin + dy + (x - cx) * tilt,
        "bottom": y > box.ymax - dy + (x - cx) * tilt,
    }[side]
    rgb = np.asarray(photo.convert("RGB")).copy()
    rgb[beyond] = 0
    return Image.fromarray(rgb), box


def frame_versions(
    photo: Image.Image, box: Box, padding: int, square: bool, outside: float, beyond: str = "cut"
) -> list[Image.Image]:
    """The cell as the crop stage cuts it (WHOLE), then met by the frame on each of SIDES (the
    photo cut there, or black beyond it): the crop stage's window (`padding` in the photo's
    pixels, as the crop stage takes it) in that photo."""
    if beyond not in BEYOND:
        raise PipelineError(f"beyond the frame is one of {BEYOND}, not {beyond!r}")
    meet = at_frame if beyond == "cut" else black_beyond
    versions = []
    for img, inside in [(photo, box), *(meet(photo, box, side, outside) for side in SIDES)]:
        w = crop_window(inside, img.width, img.height, padding, square)
        versions.append(img.crop((w.xmin, w.ymin, w.xmax, w.ymax)))
    return versions


def frame_cells(
    cells: pd.DataFrame,
    photo: Callable[[str], Image.Image],
    crop: CropParams,
    resize: ResizeParams,
    outside: float,
    beyond: str = "cut",
) -> np.ndarray:
    """(len(cells) * 5, h, w, 3) uint8: every cell's versions (WHOLE, then SIDES), what lies beyond
    the field filled or kept, resized and colour-treated as the resize stage does. `cells` are
    split-manifest rows (source_image, box_*)."""
    size, treat = (resize.height, resize.width), treatment(resize)
    out = []
    for r in cells.to_dict("records"):
        box = Box(*(int(r[f"box_{k}"]) for k in ("xmin", "ymin", "xmax", "ymax")))
        versions = frame_versions(photo(r["source_image"]), box, crop.padding, crop.square, outside, beyond)
        out += [resize_image(img, *size, treat) for img in versions]
    return np.stack(out) if out else np.empty((0, *size, 3), np.uint8)


def frame_table(cells: pd.DataFrame, probabilities: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """One row per cell and version: its true class, the class predicted, whether that is right,
    and the probabilities; in evaluate's predictions.csv columns (`sample_id` is the cell and its
    version), so `wbc compare` pairs two such tables version by version."""
    versions = (WHOLE, *SIDES)
    if len(probabilities) != len(cells) * len(versions):
        raise PipelineError(f"{len(probabilities)} predictions for {len(cells)} cells x {len(versions)} cuts")
    crops = np.repeat(cells["crop_id"].to_numpy(str), len(versions))
    rows = pd.DataFrame({
        "sample_id": [f"{c}:{v}" for c, v in zip(crops, np.tile(versions, len(cells)), strict=True)],
        "crop_id": crops,
        "source_image": np.repeat(cells["source_image"].to_numpy(), len(versions)),
        "version": np.tile(versions, len(cells)),
        "actual": np.repeat(cells["label"].to_numpy(), len(versions)),
        "predicted": [classes[i] for i in probabilities.argmax(axis=1)],
    })  # fmt: skip
    rows["right"] = rows["actual"] == rows["predicted"]
    for i, name in enumerate(classes):
        rows[f"p_{name}"] = probabilities[:, i].round(6)
    return rows


def frame_summary(table: pd.DataFrame) -> dict:
    """Accuracy on the whole cells, on the cells cut by a frame (every side), and per side."""
    cut = table[table["version"] != WHOLE]
    return {
        "cells": int((table["version"] == WHOLE).sum()),
        "whole_accuracy": float(table.loc[table["version"] == WHOLE, "right"].mean()),
        "cut_accuracy": float(cut["right"].mean()),
        **{f"{side}_accuracy": float(table.loc[table["version"] == side, "right"].mean()) for side in SIDES},
    }


def revision_photos(rev: str, repo: Path = Path(".")) -> Callable[[str], Image.Image]:
    """BCCD photos by name as a revision's run had them (its `data/raw`, from the DVC cache), each
    read once."""

    @functools.cache
    def photo(name: str) -> Image.Image:
        path = paths.RAW_IMAGES / name
        try:
            return Image.open(io.BytesIO(_read(path, rev, repo))).convert("RGB")
        except (OSError, Image.DecompressionBombError) as err:
            raise PipelineError(f"{rev}:{path}: not a readable image ({err})") from None

    return photo


def _read(path: Path, rev: str, repo: Path) -> bytes:
    import dvc.api

    try:
        return dvc.api.read(path.as_posix(), repo=str(repo), rev=None if rev == WORKSPACE else rev, mode="rb")
    except Exception as err:  # DVC raises several types for a missing file, revision or cache entry
        raise PipelineError(f"{rev}: cannot read {path} ({type(err).__name__}: {err})") from None


@dataclass(frozen=True)
class RevisionRun:
    """What scoring a revision's run needs, as that run had it: the params sections that cut and
    treat a cell (validated alone, so runs from before a later param was added still read), its
    split manifest and its model file."""

    crop: CropParams
    resize: ResizeParams
    tta: bool
    split: pd.DataFrame
    model: bytes


def revision_run(rev: str, repo: Path = Path(".")) -> RevisionRun:
    """A git revision's or DVC experiment's run, read from git and the DVC cache."""
    where = f"{rev}:{paths.PARAMS}"
    try:
        raw = yaml.safe_load(_read(paths.PARAMS, rev, repo))
        resize = {"beyond_field": "keep", **raw["resize"]}  # runs from before the param kept it
        crop, resize = CropParams.model_validate(raw["crop"]), ResizeParams.model_validate(resize)
        tta = bool(raw["evaluate"]["tta"])
    except (yaml.YAMLError, KeyError, TypeError, ValidationError) as err:
        raise PipelineError(f"{where}: cannot read crop, resize and evaluate.tta ({err})") from None
    split = pd.read_csv(io.BytesIO(_read(paths.SPLIT_MANIFEST, rev, repo)))
    return RevisionRun(crop, resize, tta, split, _read(paths.MODEL, rev, repo))


def score_revision(
    rev: str,
    split: str,
    outside: float,
    repo: Path = Path("."),
    beyond: str = "cut",
    beyond_field: str | None = None,
) -> pd.DataFrame:
    """Every `split` BCCD cell of a revision's run, whole and met by the frame, by that run's model;
    what lies beyond the field treated as the run's params say, or as `beyond_field` says."""
    from pipeline.inference.classify import load_model_file, model_head
    from pipeline.inference.tta import predict

    run = revision_run(rev, repo)
    cells = run.split[(run.split["split"] == split) & (run.split["domain"] == paths.BCCD_DOMAIN)]
    if cells.empty:
        raise PipelineError(f"{rev}: no BCCD {split} cells in its split")
    resize = run.resize
    if beyond_field is not None:
        resize = ResizeParams.model_validate({**resize.model_dump(), "beyond_field": beyond_field})
    x = frame_cells(cells, revision_photos(rev, repo), run.crop, resize, outside, beyond)
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "model.keras"
        model_file.write_bytes(run.model)
        model = load_model_file(model_file)
    head = model_head(model, class_names(run.crop.keep_basophil))
    if head.name != "type":
        raise PipelineError(f"{rev}: a {head.name} model; frame cuts are scored on cell-type models")
    probabilities = predict(model, x, tta=run.tta)[head.name]
    return frame_table(cells, probabilities, head.classes)
