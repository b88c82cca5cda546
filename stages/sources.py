"""DVC stage `sources`: the labelled cells of every enabled source in params `sources` (other labs'
folders of class folders, or CSVs), one PNG per cell and a manifest with each cell's domain and
role (trained on, test, or split like BCCD). No source enabled: an empty manifest, BCCD alone."""

from functools import partial

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.core import paths
from pipeline.core.atomic import atomic_dir
from pipeline.core.classes import class_names
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.data.crop import cut_cell
from pipeline.data.images import save_png
from pipeline.data.sources import COLUMNS, draw_roles, read_source
from pipeline.inference.localize import find_wbcs
from pipeline.stage import run_stage


def best_cell(image: Image.Image, params: Params) -> Image.Image | None:
    """The localiser's best cell in a labelled image, cut like a BCCD crop; None if it finds none."""
    found = find_wbcs(np.asarray(image), params.localize)
    return cut_cell(image, found[0].box, params.crop.padding, params.crop.square) if found else None


def main(params: Params) -> dict:
    classes = class_names(params.crop.keep_basophil)
    frames, report = [], {}
    domains: dict[str, str] = {paths.BCCD_DOMAIN: "BCCD (the crop stage)"}
    for name, source in sorted(params.sources.items()):
        if not source.enabled:
            continue
        if source.domain in domains:
            raise PipelineError(
                f"sources.{name}: domain {source.domain!r} is already {domains[source.domain]}'s"
            )
        domains[source.domain] = f"sources.{name}"
        cells, report[name] = read_source(name, source, classes, partial(best_cell, params=params))
        cells["role"] = draw_roles(cells, source.take_per_class, source.seed)
        report[name] |= {"domain": source.domain, **cells["role"].value_counts().sort_index().to_dict()}
        frames.append(cells)
    cells = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*COLUMNS, "image"])
    with atomic_dir(paths.SOURCES) as out:
        (out / paths.SOURCE_IMAGES.name).mkdir()
        for crop_id, image in zip(cells["crop_id"], cells["image"], strict=True):
            save_png(image, out / paths.SOURCE_IMAGES.name / f"{crop_id}.png")
        cells[COLUMNS].to_csv(out / paths.SOURCE_MANIFEST.name, index=False)
    return {"sources": report, "cells": len(cells)}


if __name__ == "__main__":
    run_stage("sources", main, sections=("sources", "crop", "localize"))
