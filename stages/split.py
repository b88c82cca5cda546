"""DVC stage `split`: assign every crop to train / val / test by source image and duplicate group."""

import pandas as pd

from pipeline.core import paths
from pipeline.core.atomic import atomic_dir
from pipeline.core.params import Params
from pipeline.data.images import load_rgb
from pipeline.data.split import split_crops, split_report
from pipeline.stage import run_stage


def main(params: Params) -> dict:
    p = params.split
    crops = pd.read_csv(paths.CROP_MANIFEST)
    images = {c: load_rgb(paths.CROP_IMAGES / f"{c}.png") for c in crops["crop_id"]}
    test_sources = (
        sorted(pd.read_csv(paths.KAGGLE_TEST_SOURCES)["bccd_image"].unique())
        if p.strategy == "kaggle"
        else []
    )
    split = split_crops(crops, images, p, test_sources)
    with atomic_dir(paths.SPLIT) as out:
        split.to_csv(out / paths.SPLIT_MANIFEST.name, index=False)
    return split_report(split, test_sources)


if __name__ == "__main__":
    run_stage("split", main)
