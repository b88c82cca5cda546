"""Find BCCD photos that show the same scene as another photo (rotated, mirrored or shifted
re-shots), by keypoints (pipeline/evaluation/source_match.py), and say which split each side is in.

The split stage groups near-duplicates by perceptual hash, which a rotation or a mirror image
defeats; this script checks what that grouping missed. It prints the pairs and writes them to
reports/twins/bccd_twins.csv. 18 minutes on 2 cores, after `dvc repro split`.

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

OUT = Path("reports/twins/bccd_twins.csv")
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
    manifest = pd.read_csv(paths.SPLIT_MANIFEST)
    split_of = manifest.groupby("source_image")["split"].agg(lambda s: "/".join(sorted(set(s)))).to_dict()
    pairs: dict[tuple[str, str], int] = {}
    for name, m in zip(names, found, strict=True):
        if m.photo:
            key = tuple(sorted((name, m.photo)))
            pairs[key] = max(pairs.get(key, 0), m.inliers)
    rows = [
        (a, split_of.get(a, "no crop"), b, split_of.get(b, "no crop"), n)
        for (a, b), n in sorted(pairs.items())
    ]
    table = pd.DataFrame(rows, columns=["photo", "photo_split", "twin", "twin_split", "inliers"])
    table["crosses_splits"] = [  # e.g. train and val; a twin the split dropped is no leak
        len({a, b} - {"dropped", "no crop"}) == 2
        for a, b in zip(table["photo_split"], table["twin_split"], strict=True)
    ]
    with atomic_path(OUT) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))
    print(f"{OUT}: {len(table)} pairs, {int(table['crosses_splits'].sum())} across train / val / test")


if __name__ == "__main__":
    main()
