"""Crop every labelled white cell from its VOC box, and account for every image that yields none."""

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from pipeline.core.classes import BASOPHIL, NUCLEUS
from pipeline.core.errors import PipelineError
from pipeline.data.images import load_rgb, save_png
from pipeline.data.voc import Annotation, Box, parse_voc

WBC = "WBC"
# The width of the BCCD photos the crop stage cuts from: `crop.padding` is in their pixels.
REFERENCE_WIDTH = 640
# Why an image gives no crop. Every image gets exactly one outcome in the report.
OUTCOMES = (
    "cropped",
    "no_annotation",
    "no_label_row",
    "empty_label",
    "no_wbc_box",
    "multi_class_label",
    "basophil_dropped",
    "no_valid_box",
)


@dataclass(frozen=True)
class PlannedCrop:
    crop_id: str
    source_image: str
    label: str
    box: Box  # the annotated box, clamped to the image


def image_number(name: str) -> int:
    """'BloodImage_00042.jpg' -> 42, the key labels.csv uses."""
    match = re.search(r"(\d+)(?=\.[^.]*$)", name)
    if match is None:
        raise PipelineError(f"{name}: no image number in the file name")
    return int(match.group(1))


def clamp(box: Box, width: int, height: int) -> Box:
    return Box(
        min(max(box.xmin, 0), width),
        min(max(box.ymin, 0), height),
        min(max(box.xmax, 0), width),
        min(max(box.ymax, 0), height),
    )


def crop_window(box: Box, width: int, height: int, padding: int, square: bool) -> Box:
    """The region to cut: the box grown by `padding`, optionally made square, kept in the image.

    A square window is shifted (not shrunk) to stay inside the image where the image allows.
    """
    x0, y0 = box.xmin - padding, box.ymin - padding
    x1, y1 = box.xmax + padding, box.ymax + padding
    if square:
        side = min(max(x1 - x0, y1 - y0), width, height)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0 = min(max(round(cx - side / 2), 0), width - side)
        y0 = min(max(round(cy - side / 2), 0), height - side)
        x1, y1 = x0 + side, y0 + side
    return clamp(Box(x0, y0, x1, y1), width, height)


def cut_cell(img: Image.Image, box: Sequence[int], padding: int, square: bool) -> Image.Image:
    """One cell as the crop stage cuts it, from a field of any size: its box grown by `padding`
    (pixels of a REFERENCE_WIDTH-wide BCCD photo, scaled to this field's width), square if asked,
    kept inside the field; at the field's own resolution. `wbc predict`, evaluate and the sources
    stage cut with it."""
    scaled = round(padding * img.width / REFERENCE_WIDTH)
    w = crop_window(Box(*box), img.width, img.height, scaled, square)
    return img.crop((w.xmin, w.ymin, w.xmax, w.ymax))


def plan_crops(
    image_names: list[str],
    annotations: Mapping[str, Annotation],
    labels: Mapping[int, tuple[str, ...]],
    *,
    keep_basophil: bool,
    min_box_size: int,
) -> tuple[list[PlannedCrop], dict]:
    """Decide which boxes become crops and with what class; report counts per reason."""
    crops: list[PlannedCrop] = []
    outcomes: Counter = Counter()
    single: Counter = Counter()
    boxes_invalid = boxes_clamped = 0
    for name in sorted(image_names):
        stem = Path(name).stem
        ann = annotations.get(stem)
        classes = labels.get(image_number(name))
        if ann is None:
            outcomes["no_annotation"] += 1
            continue
        raw_boxes = ann.boxes(WBC)
        if classes is not None and len(raw_boxes) == 1 and len(classes) == 1:
            single[classes[0]] += 1
        if classes is None:
            outcome = "no_label_row"
        elif not classes:
            outcome = "empty_label"
        elif not raw_boxes:
            outcome = "no_wbc_box"
        elif len(set(classes)) > 1:
            outcome = "multi_class_label"
        elif classes[0] == BASOPHIL and not keep_basophil:
            outcome = "basophil_dropped"
        else:
            valid = []
            for raw in raw_boxes:
                box = clamp(raw, ann.width, ann.height)
                boxes_clamped += box != raw
                if box.width < min_box_size or box.height < min_box_size:
                    boxes_invalid += 1
                else:
                    valid.append(box)
            outcome = "cropped" if valid else "no_valid_box"
            for i, box in enumerate(valid):
                crops.append(PlannedCrop(f"{stem}_{i}", name, classes[0], box))
        outcomes[outcome] += 1
    image_numbers = {image_number(n) for n in image_names}
    report = {
        "images": len(image_names),
        "images_by_outcome": {o: outcomes[o] for o in OUTCOMES},
        "annotations_without_image": len(set(annotations) - {Path(n).stem for n in image_names}),
        "label_rows": len(labels),
        "label_rows_without_image": len(set(labels) - image_numbers),
        "single_box_single_label": {**dict(sorted(single.items())), "total": sum(single.values())},
        "boxes_clamped": int(boxes_clamped),
        "boxes_skipped_invalid": boxes_invalid,
        "crops": _class_counts(c.label for c in crops),
    }
    return crops, report


def _class_counts(labels) -> dict[str, int]:
    counts = Counter(labels)
    return {**dict(sorted(counts.items())), "total": sum(counts.values())}


def load_annotations(folder: Path) -> dict[str, Annotation]:
    """Every `*.xml` in `folder`, by file stem."""
    return {p.stem: parse_voc(p) for p in sorted(Path(folder).glob("*.xml"))}


def write_crops(
    crops: list[PlannedCrop],
    annotations: Mapping[str, Annotation],
    image_dir: Path,
    out_dir: Path,
    *,
    padding: int,
    square: bool,
) -> pd.DataFrame:
    """Cut each planned crop to `out_dir/<crop_id>.png`; return the crop manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    by_image: dict[str, list[PlannedCrop]] = {}
    for c in crops:
        by_image.setdefault(c.source_image, []).append(c)
    for name, planned in sorted(by_image.items()):
        ann = annotations[Path(name).stem]
        img = load_rgb(image_dir / name, expected_size=(ann.width, ann.height))
        for c in planned:
            win = crop_window(c.box, ann.width, ann.height, padding, square)
            save_png(img.crop((win.xmin, win.ymin, win.xmax, win.ymax)), out_dir / f"{c.crop_id}.png")
            rows.append(
                {
                    "crop_id": c.crop_id,
                    "source_image": name,
                    "label": c.label,
                    "nucleus": NUCLEUS[c.label],
                    "box_xmin": c.box.xmin,
                    "box_ymin": c.box.ymin,
                    "box_xmax": c.box.xmax,
                    "box_ymax": c.box.ymax,
                    "crop_xmin": win.xmin,
                    "crop_ymin": win.ymin,
                    "crop_xmax": win.xmax,
                    "crop_ymax": win.ymax,
                }
            )
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


MANIFEST_COLUMNS = [
    "crop_id",
    "source_image",
    "label",
    "nucleus",
    "box_xmin",
    "box_ymin",
    "box_xmax",
    "box_ymax",
    "crop_xmin",
    "crop_ymin",
    "crop_xmax",
    "crop_ymax",
]
