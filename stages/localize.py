"""DVC stage `localize`: how well the stain-colour localiser finds the white cells of BCCD, scored
against the VOC WBC boxes, on the 640x480 photos and on half-size copies (the Kaggle sets' size)."""

import time

import numpy as np
from PIL import Image

from pipeline.core import paths
from pipeline.core.params import Params
from pipeline.data.images import load_rgb
from pipeline.data.voc import parse_voc
from pipeline.inference.localize import find_wbcs, match, summarize
from pipeline.stage import run_stage


def main(params: Params) -> dict:
    report: dict = {}
    photos = sorted(paths.RAW_ANNOTATIONS.glob("*.xml"))
    for name, shrink in (("full", 1), ("half", 2)):
        per_image, counts = [], []
        start = time.perf_counter()
        for xml in photos:
            ann = parse_voc(xml)
            img = load_rgb(paths.RAW_IMAGES / f"{xml.stem}.jpg", expected_size=(ann.width, ann.height))
            if shrink > 1:
                img = img.resize((img.width // shrink, img.height // shrink), Image.Resampling.LANCZOS)
            truth = [tuple(v / shrink for v in (b.xmin, b.ymin, b.xmax, b.ymax)) for b in ann.boxes("WBC")]
            found = [d.box for d in find_wbcs(np.asarray(img), params.localize)]
            per_image.append(match(found, truth))
            counts.append((len(found), len(truth)))
        seconds = time.perf_counter() - start
        report[name] = summarize(per_image, counts) | {
            "images": len(photos),
            "true_cells": sum(t for _, t in counts),
            "ms_per_image": round(1000 * seconds / max(len(photos), 1), 1),
        }
    return report


if __name__ == "__main__":
    run_stage("localize", main)
