"""DVC stage `localize`: how well the stain-colour localiser finds the white cells of BCCD, scored
against the VOC WBC boxes, on the 640x480 photos and on half-size copies (the Kaggle sets' size)."""

from pipeline.core import paths
from pipeline.core.params import Params
from pipeline.evaluation.localization import score_localizer
from pipeline.stage import run_stage


def main(params: Params) -> dict:
    photos = sorted(paths.RAW_ANNOTATIONS.glob("*.xml"))
    return {
        name: score_localizer(photos, paths.RAW_IMAGES, params.localize, shrink)
        for name, shrink in (("full", 1), ("half", 2))
    }


if __name__ == "__main__":
    run_stage("localize", main)
