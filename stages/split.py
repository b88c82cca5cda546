"""DVC stage `split`: assign every crop (BCCD's, and the sources' cells) to train / val / test by
source image (with its re-shot twins) and duplicate group, within its domain."""

import pandas as pd

from pipeline.core import paths
from pipeline.core.atomic import atomic_dir
from pipeline.core.params import Params
from pipeline.data.images import load_rgb
from pipeline.data.scenes import load_twins
from pipeline.data.split import split_crops, split_report
from pipeline.stage import run_stage


def main(params: Params) -> dict:
    p = params.split
    crops = pd.read_csv(paths.CROP_MANIFEST).assign(domain=paths.BCCD_DOMAIN)
    crops["image"] = [(paths.CROP_IMAGES / f"{c}.png").as_posix() for c in crops["crop_id"]]
    cells = pd.read_csv(paths.SOURCE_MANIFEST)
    cells["image"] = [(paths.SOURCE_IMAGES / f"{c}.png").as_posix() for c in cells["crop_id"]]
    crops = pd.concat([crops, cells], ignore_index=True) if len(cells) else crops
    images = {c: load_rgb(path) for c, path in zip(crops["crop_id"], crops["image"], strict=True)}
    test_sources = (
        sorted(pd.read_csv(paths.KAGGLE_TEST_SOURCES)["bccd_image"].unique())
        if p.strategy == "kaggle"
        else []
    )
    split = split_crops(crops, images, p, test_sources, load_twins(paths.BCCD_TWINS))
    with atomic_dir(paths.SPLIT) as out:
        split.to_csv(out / paths.SPLIT_MANIFEST.name, index=False)
    return split_report(split, test_sources)


if __name__ == "__main__":
    run_stage("split", main)
