"""DVC stage `augment`: balance the train split's classes with seeded augmented copies."""

import pandas as pd

from pipeline.core import paths
from pipeline.core.atomic import atomic_dir
from pipeline.core.params import Params
from pipeline.data.augment import balance_report, sample_path, sample_table, windows, write_copies
from pipeline.stage import run_stage


def main(params: Params) -> dict:
    split = pd.read_csv(paths.SPLIT_MANIFEST)
    samples, copies = sample_table(split, params.augment)
    samples["path"] = samples.apply(sample_path, axis=1)
    with atomic_dir(paths.AUGMENTED) as out:
        folder = out / paths.AUGMENTED_IMAGES.name
        folder.mkdir()
        images = dict(zip(split["crop_id"], split["image"], strict=True))
        write_copies(copies, images, params.augment, folder, windows(split, paths.RAW_IMAGES))
        samples.to_csv(out / paths.AUGMENTED_MANIFEST.name, index=False)
    return balance_report(split, samples)


if __name__ == "__main__":
    run_stage("augment", main)
