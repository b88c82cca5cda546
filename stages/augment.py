"""DVC stage `augment`: balance the train split's classes with seeded augmented copies."""

import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pandas as pd

from pipeline.core import paths
from pipeline.core.atomic import atomic_dir
from pipeline.core.params import AugmentParams, Params
from pipeline.data.augment import Copy, make_copy, sample_table
from pipeline.data.images import load_rgb, save_png
from pipeline.stage import run_stage


def write_copy(copy: Copy, params: AugmentParams, folder: Path) -> None:
    crop = load_rgb(paths.CROP_IMAGES / f"{copy.crop_id}.png")
    save_png(make_copy(crop, copy, params), folder / f"{copy.sample_id}.png")


def sample_path(row: pd.Series) -> str:
    """Where the resize stage finds a sample: a new copy here, or the untouched crop."""
    folder = paths.AUGMENTED_IMAGES if row["augmented"] else paths.CROP_IMAGES
    return (folder / f"{row['sample_id']}.png").as_posix()


def main(params: Params) -> dict:
    split = pd.read_csv(paths.SPLIT_MANIFEST)
    samples, copies = sample_table(split, params.augment)
    samples["path"] = samples.apply(sample_path, axis=1)
    with atomic_dir(paths.AUGMENTED) as out:
        folder = out / paths.AUGMENTED_IMAGES.name
        folder.mkdir()
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(partial(write_copy, params=params.augment, folder=folder), copies, chunksize=64))
        samples.to_csv(out / paths.AUGMENTED_MANIFEST.name, index=False)
    train_crops = split.loc[split["split"] == "train", "crop_id"]
    report: dict = {"train_crops_unused": int((~train_crops.isin(samples["crop_id"])).sum())}
    for name, part in samples.groupby("split"):
        counts = part.groupby("label")["augmented"].agg(["size", "sum"])
        report[str(name)] = {
            **{str(label): int(n) for label, n in counts["size"].items()},
            **{f"{label}_augmented": int(n) for label, n in counts["sum"].items()},
            "total": len(part),
        }
    return report


if __name__ == "__main__":
    run_stage("augment", main)
