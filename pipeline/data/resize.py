"""Resize samples to the model's input size (and colour treatment): the arrays of each split, which
`pipeline/data/arrays.py` stores."""

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.core.classes import NUCLEUS_GROUPS, head
from pipeline.core.errors import PipelineError
from pipeline.core.params import ResizeParams
from pipeline.core.paths import BCCD_DOMAIN
from pipeline.data import stain

Colour = tuple[float, float, float, float] | str | None


def resize_image(img: Image.Image, height: int, width: int, colour: Colour = None) -> np.ndarray:
    """A crop as the model sees it: at `height` x `width`, and in the reference stain (a 4-tuple)
    or grey (the string "gray") when asked. One function serves the resize stage and inference, so
    training and prediction agree."""
    if colour == "gray":
        img = img.convert("L").convert("RGB")
    elif colour is not None:
        img = Image.fromarray(stain.normalise(np.asarray(img), colour))
    return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)


def colour_mode(p: ResizeParams) -> Colour:
    """How `resize_image` treats colour under the params: as is, grey, or normalised to the stain."""
    if p.colour == "gray":
        return "gray"
    return tuple(p.stain_reference) if p.colour == "stain_norm" else None


def split_arrays(
    samples: pd.DataFrame,
    classes: Sequence[str],
    load: Callable[[str], Image.Image],
    height: int,
    width: int,
    colour: Colour = None,
) -> dict[str, np.ndarray]:
    """The arrays of one split: images (N, H, W, 3) uint8, labels, nucleus labels, ids and domains.

    Rows are sorted by sample id so the output does not depend on the manifest's order.
    """
    samples = samples.sort_values("sample_id")
    unknown = sorted(set(samples["label"]) - set(classes))
    if unknown:
        raise PipelineError(f"resize: labels {unknown} are not among the classes {list(classes)}")
    nucleus = head("nucleus", classes)
    x = np.zeros((len(samples), height, width, 3), np.uint8)
    for i, path in enumerate(samples["path"]):
        x[i] = resize_image(load(path), height, width, colour)
    return {
        "x": x,
        "y": np.array([classes.index(c) for c in samples["label"]], np.int64),
        "nucleus": np.array([nucleus.index(c) for c in samples["label"]], np.int64),
        "sample_id": samples["sample_id"].to_numpy(str),
        "crop_id": samples["crop_id"].to_numpy(str),
        "source_image": samples["source_image"].to_numpy(str),
        "domain": (
            samples["domain"] if "domain" in samples else pd.Series(BCCD_DOMAIN, samples.index)
        ).to_numpy(str),
        "augmented": samples["augmented"].to_numpy(bool),
        "classes": np.array(classes, str),
        "nucleus_groups": np.array(NUCLEUS_GROUPS, str),
    }
