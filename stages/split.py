"""DVC stage `split`: assign every crop to train / val / test by source image and duplicate group."""

import pandas as pd

from pipeline.core import paths
from pipeline.core.atomic import atomic_dir
from pipeline.core.params import Params
from pipeline.data.images import load_rgb
from pipeline.data.split import (
    assign_splits,
    check_disjoint,
    duplicate_groups,
    perceptual_hashes,
    split_report,
)
from pipeline.stage import run_stage


def main(params: Params) -> dict:
    p = params.split
    crops = pd.read_csv(paths.CROP_MANIFEST)
    images = {c: load_rgb(paths.CROP_IMAGES / f"{c}.png") for c in crops["crop_id"]}
    hashes = perceptual_hashes(images, p.dedup_hash_size)
    crops["group"] = duplicate_groups(
        list(crops["crop_id"]), list(crops["source_image"]), hashes, p.dedup_max_distance
    )
    crops["phash"] = ["".join("1" if b else "0" for b in hashes[c]) for c in crops["crop_id"]]
    test_sources = (
        sorted(pd.read_csv(paths.KAGGLE_TEST_SOURCES)["bccd_image"].unique())
        if p.strategy == "kaggle"
        else []
    )
    split = assign_splits(
        crops,
        strategy=p.strategy,
        seed=p.seed,
        val_fraction=p.val_fraction,
        test_fraction=p.test_fraction,
        k=p.k,
        fold=p.fold,
        test_sources=test_sources,
    )
    check_disjoint(split)
    with atomic_dir(paths.SPLIT) as out:
        split.to_csv(out / paths.SPLIT_MANIFEST.name, index=False)
    return split_report(split, test_sources)


if __name__ == "__main__":
    run_stage("split", main)
