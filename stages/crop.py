"""DVC stage `crop`: one PNG per labelled white cell, cut from its VOC box, plus a manifest."""

from pipeline.core import paths
from pipeline.core.atomic import atomic_dir
from pipeline.core.params import Params
from pipeline.data.crop import load_annotations, plan_crops, write_crops
from pipeline.data.labels import read_labels
from pipeline.stage import run_stage


def main(params: Params) -> dict:
    p = params.crop
    annotations = load_annotations(paths.RAW_ANNOTATIONS)
    labels = read_labels(paths.RAW_LABELS)
    images = sorted(f.name for f in paths.RAW_IMAGES.glob("*.jpg"))
    crops, report = plan_crops(
        images, annotations, labels, keep_basophil=p.keep_basophil, min_box_size=p.min_box_size
    )
    with atomic_dir(paths.CROPS) as out:
        manifest = write_crops(
            crops,
            annotations,
            paths.RAW_IMAGES,
            out / paths.CROP_IMAGES.name,
            padding=p.padding,
            square=p.square,
        )
        manifest.to_csv(out / paths.CROP_MANIFEST.name, index=False)
    return report


if __name__ == "__main__":
    run_stage("crop", main)
