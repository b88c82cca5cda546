"""How well the stain-colour localiser finds the white cells of annotated photos: matched against
their VOC WBC boxes at IoU 0.5, at full size or shrunk (the Kaggle sets are BCCD at half size)."""

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.params import LocalizeParams
from pipeline.data.images import load_rgb
from pipeline.data.voc import parse_voc
from pipeline.inference.localize import find_wbcs, match, summarize


def score_localizer(annotations: Sequence[Path], images: Path, p: LocalizeParams, shrink: int = 1) -> dict:
    """Recall, precision and counts over the photos whose VOC files are `annotations` (images named
    like them under `images`), each photo and its boxes first shrunk `shrink` times; and the speed."""
    per_image, counts = [], []
    start = time.perf_counter()
    for xml in annotations:
        ann = parse_voc(xml)
        img = load_rgb(images / f"{xml.stem}.jpg", expected_size=(ann.width, ann.height))
        if shrink > 1:
            img = img.resize((img.width // shrink, img.height // shrink), Image.Resampling.LANCZOS)
        truth = [tuple(v / shrink for v in (b.xmin, b.ymin, b.xmax, b.ymax)) for b in ann.boxes("WBC")]
        found = [d.box for d in find_wbcs(np.asarray(img), p)]
        per_image.append(match(found, truth))
        counts.append((len(found), len(truth)))
    seconds = time.perf_counter() - start
    return summarize(per_image, counts) | {
        "images": len(annotations),
        "true_cells": sum(t for _, t in counts),
        "ms_per_image": round(1000 * seconds / max(len(annotations), 1), 1),
    }
