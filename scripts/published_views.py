"""Where TEST_SIMPLE's fields lose the test split's cells: the box, the resolution, or the cell.

A TEST_SIMPLE field is its BCCD photo halved (640x480 -> 320x240, re-saved as JPEG), scored through
the localiser; the test split scores the VOC box's crop of the full photo. This classifies each of
the 69 test cells five ways with one model, so the steps between the two can be told apart:

    A  the VOC box on the 640x480 photo (the test split's crop)
    B  the VOC box halved, on the photo halved here (bicubic)
    C  the VOC box halved, on the TEST_SIMPLE field itself (Kaggle's resampling and JPEG)
    D  the localiser's best box on the TEST_SIMPLE field (what the published scoring does)
    E  the localiser's best box on the 640x480 photo

Where the localiser finds no cell (the published scoring counts the field wrong), D and E take the
VOC box instead and the script says how often.

    python scripts/published_views.py [--model models/model.keras]

Run in a workspace where `dvc repro` has written data/split and data/external (the mirrors'
TEST_SIMPLE). Prints each view's accuracy and every cell some view gets wrong.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import paths
from pipeline.core.classes import CLASSES, head
from pipeline.core.params import load_params
from pipeline.data.images import load_rgb
from pipeline.inference.classify import classify, crops, load_model_file
from pipeline.inference.localize import find_wbcs

VIEWS = "ABCDE"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=paths.MODEL)
    args = parser.parse_args()
    params = load_params()
    model = load_model_file(args.model)
    size = model.input_shape[1:3]
    split = pd.read_csv(paths.SPLIT_MANIFEST)
    test = split[(split["split"] == "test") & (split["domain"] == paths.BCCD_DOMAIN)]
    # a photo with two TEST_SIMPLE fields (71 fields, 69 photos): its first
    simple = pd.read_csv(paths.KAGGLE_TEST_SOURCES).drop_duplicates("bccd_image").set_index("bccd_image")
    simple = simple["test_simple_file"]

    missed = 0

    def best(img: Image.Image, fallback: tuple) -> tuple:
        """The localiser's best cell (it lists them best first), else `fallback`, counted."""
        nonlocal missed
        found = find_wbcs(np.asarray(img), params.localize)
        missed += not found
        return found[0].box if found else fallback

    x: dict[str, list[np.ndarray]] = {v: [] for v in VIEWS}
    for row in test.itertuples():
        photo = load_rgb(paths.RAW_IMAGES / row.source_image)
        field = load_rgb(paths.PUBLISHED / "images" / "TEST_SIMPLE" / simple[row.source_image])
        box = (row.box_xmin, row.box_ymin, row.box_xmax, row.box_ymax)
        half_box = tuple(round(v / 2) for v in box)
        half = photo.resize((photo.width // 2, photo.height // 2), Image.BICUBIC)
        views = {"A": (photo, box), "B": (half, half_box), "C": (field, half_box),
                 "D": (field, best(field, half_box)), "E": (photo, best(photo, box))}  # fmt: skip
        for v, (img, b) in views.items():
            x[v].append(crops(img, [b], params, size)[0])
    out = head("type", CLASSES)
    truth = test["label"].to_numpy()
    pred = {}
    for v in VIEWS:
        pred[v] = np.array([lb for lb, _ in classify(model, np.stack(x[v]), out, params.evaluate.tta)])
        right = pred[v] == truth
        print(f"{v}: accuracy {right.mean():.3f} ({int(right.sum())} of {len(truth)})")
    print(f"localiser found no cell (VOC box used instead): {missed} of {2 * len(truth)} in D and E")
    print("cells some view gets wrong (photo, class, then views " + " ".join(VIEWS) + "):")
    for i, photo in enumerate(test["source_image"]):
        if any(pred[v][i] != truth[i] for v in VIEWS):
            print(f"  {photo} {truth[i]}: " + " ".join(pred[v][i] for v in VIEWS))


if __name__ == "__main__":
    main()
