"""DVC stage `resize`: every split at `height`x`width`, as `data/resized/<split>.npz`."""

import pandas as pd

from pipeline.core import paths
from pipeline.core.atomic import atomic_dir
from pipeline.core.classes import class_names
from pipeline.core.params import Params
from pipeline.data.arrays import save_npz
from pipeline.data.images import load_rgb
from pipeline.data.resize import split_arrays, treatment
from pipeline.stage import run_stage


def main(params: Params) -> dict:
    p = params.resize
    samples = pd.read_csv(paths.AUGMENTED_MANIFEST)
    classes = class_names(params.crop.keep_basophil)
    report = {"height": p.height, "width": p.width}
    with atomic_dir(paths.RESIZED) as out:
        for split in paths.SPLITS:
            rows = samples[samples["split"] == split]
            arrays = split_arrays(rows, classes, load_rgb, p.height, p.width, treatment(p))
            save_npz(out / paths.resized_split(split).name, arrays)
            report[split] = {
                **{c: int((arrays["y"] == i).sum()) for i, c in enumerate(classes)},
                "total": len(arrays["y"]),
            }
    return report


if __name__ == "__main__":
    run_stage("resize", main, sections=("resize", "crop"))
