"""Find BCCD photos that show the same scene as another photo (rotated, mirrored or shifted
re-shots), by keypoints (pipeline/evaluation/source_match.py).

The split stage's perceptual hash cannot see a rotated or mirrored copy; the pairs found here,
written to the committed data/reference/bccd_twins.csv (photo, twin, inliers), are what the split
stage keeps on one side and the bootstrap resamples as one scene (pipeline/data/scenes.py). 18
minutes on 2 cores, after `dvc repro fetch`; then `dvc repro` if the table changed.

    python scripts/find_bccd_twins.py [--jobs 2]
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
from pipeline.evaluation.source_match import SIZE, Match, features, match, photo_index

_photos: dict = {}


def _load(photo_dir: Path) -> None:
    _photos.update(photo_index(photo_dir))


def _best_other(name: str) -> Match:
    with Image.open(paths.RAW_IMAGES / name) as img:
        query = features(img.convert("RGB").resize(SIZE))
    others = {k: v for k, v in _photos.items() if k != name}
    return match(query, others, [sorted(others)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    names = sorted(p.name for p in paths.RAW_IMAGES.glob("*.jpg"))
    with Pool(args.jobs, initializer=_load, initargs=(paths.RAW_IMAGES,)) as pool:
        found = pool.map(_best_other, names, chunksize=4)
    pairs: dict[tuple[str, str], int] = {}
    for name, m in zip(names, found, strict=True):
        if m.photo:
            key = tuple(sorted((name, m.photo)))
            pairs[key] = max(pairs.get(key, 0), m.inliers)
    table = pd.DataFrame(
        [(a, b, n) for (a, b), n in sorted(pairs.items())], columns=["photo", "twin", "inliers"]
    )
    with atomic_path(paths.BCCD_TWINS) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))
    print(f"{paths.BCCD_TWINS}: {len(table)} pairs")


if __name__ == "__main__":
    main()
