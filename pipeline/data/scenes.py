"""Scenes: BCCD photos that re-shoot another photo's field (turned, mirrored or shifted; found by
keypoints, scripts/find_bccd_twins.py) are one source, not two. The perceptual hash of the split
cannot see a turned or mirrored copy, so the split keeps twins on one side by their scene, and
the bootstrap resamples a scene, not a photo, as one independent draw."""

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.core.errors import PipelineError

Twins = Sequence[tuple[str, str]]


def load_twins(path: Path) -> list[tuple[str, str]]:
    """The (photo, twin) pairs of a committed twins table (columns photo, twin, inliers)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise PipelineError(f"{path}: cannot read the twins table: {err}") from None
    missing = {"photo", "twin"} - set(table.columns)
    if missing:
        raise PipelineError(f"{path}: the twins table lacks column(s) {', '.join(sorted(missing))}")
    if (table["photo"] == "").any() or (table["twin"] == "").any():
        raise PipelineError(f"{path}: a twins row has an empty photo name")
    return list(zip(table["photo"], table["twin"], strict=True))


def scene_of(photos: Iterable[str], twins: Twins) -> dict[str, str]:
    """photo -> its scene's name: the first photo (sorted) of its connected twins, itself if none.
    Twins of photos not in `photos` still join through them (a-b, b-c makes a, c one scene)."""
    names = sorted(set(photos) | {p for pair in twins for p in pair})
    index = {name: i for i, name in enumerate(names)}
    rows = [index[a] for a, _ in twins]
    cols = [index[b] for _, b in twins]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(graph, directed=False)
    first: dict[int, str] = {}
    for name, label in zip(names, labels, strict=True):
        first.setdefault(int(label), name)
    return {name: first[int(label)] for name, label in zip(names, labels, strict=True)}


def scenes(photos: Sequence[str] | np.ndarray, twins: Twins) -> np.ndarray:
    """The scene of each photo, in order (bootstrap groups)."""
    mapping = scene_of([str(p) for p in photos], twins)
    return np.asarray([mapping[str(p)] for p in photos], dtype=object)
