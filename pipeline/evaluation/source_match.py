"""Which photo an augmented field was made from, by its keypoints: the Kaggle TEST fields are
rotated, shifted, sheared and mirrored copies of BCCD photos, and their file names do not say which
(`_<n>_` is not the source: one class folder's `_1_` fields come from all its photos). The red-cell
layout around a white cell is a fingerprint: ORB keypoints matched to a photo (and to its mirror
image) and kept only where one affine map explains them (RANSAC) count as that photo's evidence."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from skimage.feature import ORB, match_descriptors
from skimage.measure import ransac
from skimage.transform import AffineTransform

SIZE = (320, 240)  # the Kaggle fields' size: photos are compared at it
MIN_INLIERS = 25  # a field's own photo gives 45-230 inliers (median 114), any other 0-10 (measured on TEST)
SAME_PHOTO = 0.8  # a runner-up with this share of the best's inliers is the same picture (a BCCD duplicate)
SHORTLIST = 3  # candidates by raw match count that get the RANSAC check

Features = tuple[np.ndarray, np.ndarray]  # keypoints (n, 2) as (row, col), binary descriptors (n, 256)


@dataclass(frozen=True)
class Match:
    photo: str  # "" when no candidate passed MIN_INLIERS
    inliers: int
    same_as: tuple[str, ...]  # other photos that explain the field as well: duplicates of `photo`


def features(img: Image.Image, n_keypoints: int = 300) -> Features:
    """ORB keypoints and descriptors of a picture's grey levels; none for a featureless picture."""
    grey = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    orb = ORB(n_keypoints=n_keypoints, fast_threshold=0.03)
    try:
        orb.detect_and_extract(grey)
    except RuntimeError:  # skimage raises when it finds no keypoint at all
        return np.zeros((0, 2)), np.zeros((0, 256), dtype=bool)
    return orb.keypoints, orb.descriptors


def photo_features(img: Image.Image) -> list[Features]:
    """A candidate photo at the fields' size, as it is and mirrored (ORB is not mirror-invariant)."""
    small = img.convert("RGB").resize(SIZE, Image.Resampling.BILINEAR)
    return [features(small), features(ImageOps.mirror(small))]


def photo_index(folder: Path) -> dict[str, list[Features]]:
    """Every `.jpg` photo in `folder` by file name, as `photo_features` sees it: the candidates."""
    index = {}
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as img:
            index[path.name] = photo_features(img)
    return index


def _matches(field: Features, photo: Features) -> np.ndarray:
    if min(len(field[1]), len(photo[1])) < 4:
        return np.zeros((0, 2), dtype=int)
    return match_descriptors(field[1], photo[1], cross_check=True, max_ratio=0.8)


def inliers(field: Features, views: Sequence[Features]) -> int:
    """Most keypoint matches one affine map explains, over the photo's views (deterministic)."""
    best = 0
    for view in views:
        pairs = _matches(field, view)
        if len(pairs) < 6:
            continue
        src, dst = field[0][pairs[:, 0]][:, ::-1], view[0][pairs[:, 1]][:, ::-1]
        _, kept = ransac((src, dst), AffineTransform, min_samples=3, residual_threshold=3,
                         max_trials=200, rng=0)  # fmt: skip
        best = max(best, 0 if kept is None else int(kept.sum()))
    return best


def match(
    field: Features, photos: Mapping[str, Sequence[Features]], rounds: Sequence[Sequence[str]]
) -> Match:
    """The photo a field comes from: each round's candidates (e.g. the listed sources of its class,
    then every listed source, then every photo) shortlisted by raw match count and checked by RANSAC,
    until one has MIN_INLIERS."""
    tried: set[str] = set()
    for names in rounds:
        todo = [n for n in dict.fromkeys(names) if n not in tried]  # a photo listed twice is one candidate
        tried.update(todo)
        counts = sorted((-max(len(_matches(field, v)) for v in photos[n]), n) for n in todo)
        scored = sorted((-inliers(field, photos[n]), n) for _, n in counts[:SHORTLIST])
        scored = [(-k, n) for k, n in scored]  # most inliers first, ties by name
        if scored and scored[0][0] >= MIN_INLIERS:
            best, name = scored[0]
            same = tuple(n for k, n in scored[1:] if k >= SAME_PHOTO * best)
            return Match(name, best, same)
    return Match("", 0, ())
