"""Write data/reference/kaggle_test_fields.csv: the BCCD photo every Kaggle TEST / TEST_SIMPLE field
was made from, found by its keypoints (pipeline/evaluation/source_match.py), not by its file name.

The evaluate stage reads that file to check that the model never saw a field's photo and to resample
source photos for the intervals. Run once after `dvc repro fetch fetch_external` (16 minutes on
2 cores); it refuses to write if any field finds no photo or a TEST_SIMPLE field disagrees with
kaggle_test_sources.csv.

    python scripts/match_published_sources.py [--jobs 2]
"""

import argparse
import sys
from multiprocessing import Pool
from pathlib import Path

import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import paths
from pipeline.core.atomic import atomic_path
from pipeline.evaluation.published import SETS
from pipeline.evaluation.source_match import Match, features, match, photo_index

_photos: dict = {}
_rounds: dict = {}


def _load(photo_dir: Path, sources_csv: Path) -> None:
    listed = pd.read_csv(sources_csv)
    _photos.update(photo_index(photo_dir))
    every_listed = list(listed["bccd_image"])
    for cls, names in listed.groupby("class")["bccd_image"]:
        _rounds[cls] = [list(names), every_listed, sorted(_photos)]


def _one(path: Path) -> Match:
    with Image.open(path) as img:
        return match(features(img), _photos, _rounds[path.parent.name])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=paths.RAW_IMAGES)
    ap.add_argument("--published", type=Path, default=paths.PUBLISHED)
    ap.add_argument("--sources", type=Path, default=paths.KAGGLE_TEST_SOURCES)
    ap.add_argument("--out", type=Path, default=paths.KAGGLE_TEST_FIELDS)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()

    files = [p for s in SETS for p in sorted((args.published / "images" / s).glob("*/*.jpeg"))]
    with Pool(args.jobs, initializer=_load, initargs=(args.photos, args.sources)) as pool:
        found = pool.map(_one, files, chunksize=8)
    table = pd.DataFrame({
        "file": [p.relative_to(args.published).as_posix() for p in files],
        "bccd_image": [m.photo for m in found],
        "inliers": [m.inliers for m in found],
        "same_as": [";".join(m.same_as) for m in found],
    })  # fmt: skip
    problems = [f"{f}: no BCCD photo has {m} keypoint inliers" for f, m in
                zip(table["file"], table["inliers"], strict=True) if m == 0]  # fmt: skip
    listed = pd.read_csv(args.sources)
    simple = "images/TEST_SIMPLE/" + listed["test_simple_file"]
    expected = dict(zip(simple, listed["bccd_image"], strict=True))
    for row in table[table["file"].isin(expected)].itertuples():
        if expected[row.file] != row.bccd_image and expected[row.file] not in row.same_as.split(";"):
            problems.append(f"{row.file}: matched {row.bccd_image}, {args.sources} says {expected[row.file]}")
    if problems:
        sys.exit("\n".join(problems))
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    test = table[table["file"].str.startswith("images/TEST/")]
    print(f"{args.out}: {len(table)} fields; TEST from {test['bccd_image'].nunique()} photos, "
          f"inliers min {table['inliers'].min()} median {int(table['inliers'].median())}")  # fmt: skip


if __name__ == "__main__":
    main()
