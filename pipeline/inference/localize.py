"""Find white cells in a full-field smear photo by stain colour alone, with no annotation.

In a BCCD field the WBC nucleus (with the bluish cytoplasm hugging it) is the only large violet object:
red cells are pink, the background is pale, and platelets are violet too but far smaller. So the localiser
thresholds a purple-ness measure, closes the gaps inside each stained blob, merges the lobes of one cell,
drops blobs too small to be a nucleus, and grows a box around each one to take in the rest of the cell.
Every size is a fraction of the image, so the same parameters work on the 640x480 photos and on the
320x240 copies in the Kaggle test sets.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.core.params import LocalizeParams

XYXY = tuple[int, int, int, int]  # xmin, ymin, xmax, ymax in pixels; xmax/ymax exclusive


@dataclass(frozen=True)
class Detection:
    box: XYXY  # in pixels of the given image, clamped to it
    score: float  # confidence in [0, 1]


def shrink(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Block-average by an integer factor: the stain mask needs no finer detail, the morphology runs
    factor**2 times faster, and a photo and its half-size copy then give nearly the same mask."""
    h, w = (n // factor * factor for n in rgb.shape[:2])
    blocks = rgb[:h, :w].reshape(h // factor, factor, w // factor, factor, 3)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def purple_mask(rgb: np.ndarray, p: LocalizeParams) -> np.ndarray:
    """Pixels stained like a nucleus. B - G separates violet from pink red cells (B ~ G) and from the
    pale background (B ~ G ~ R) without depending on overall brightness."""
    return rgb[..., 2].astype(np.float32) - rgb[..., 1] >= p.min_purple


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilation by a Euclidean disk of `radius` pixels, exact: the disk is one horizontal run per
    row offset, so it is a running maximum along each row, shifted and merged. 4.6x faster than
    thresholding the distance transform at the localiser's radii (3 to 5 px), which gave the same
    masks, except that for a mask with nothing set it marked pixels near the top edge."""
    out = np.zeros_like(mask)
    height = mask.shape[0]
    for dy in range(min(int(np.floor(radius)), height - 1) + 1):  # rows dy above and below share a run
        half = int(np.floor(np.sqrt(radius * radius - dy * dy)))
        grown = ndimage.maximum_filter1d(mask, 2 * half + 1, axis=1, mode="constant") if half else mask
        out[dy:] |= grown[: height - dy]
        out[: height - dy] |= grown[dy:]
    return out


def close(mask: np.ndarray, radius: float) -> np.ndarray:
    return ~dilate(~dilate(mask, radius), radius)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`mask` with every unset region that does not reach the border set (4-connected, as
    `ndimage.binary_fill_holes`): one labelling instead of its dilations repeated until nothing
    changes, 2.8x faster on the Kaggle fields with the same masks."""
    background, n = ndimage.label(~mask)
    outside = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
    reaches_border = np.zeros(n + 1, bool)
    reaches_border[outside] = True
    return mask | ~reaches_border[background]


def nuclei(rgb: np.ndarray, p: LocalizeParams) -> list[tuple[XYXY, float]]:
    """The stained blobs big enough to be a WBC nucleus, lobes merged per cell: (box, area in pixels)."""
    h, w = rgb.shape[:2]
    mask = purple_mask(rgb, p)
    if not mask.any():
        return []
    mask = fill_holes(close(mask, p.closing_radius * w))
    # A neutrophil's lobes can lie apart: group blobs through a dilated mask, but measure only stain.
    groups, n = ndimage.label(dilate(mask, p.merge_distance * w / 2))
    groups[~mask] = 0
    labels = np.arange(1, n + 1)
    areas = ndimage.sum_labels(mask, groups, labels)
    # A nucleus has chromatin: a flat patch of stain colour (a uniform purple square) is not a cell.
    # Grey levels of the stained pixels only (the same sums per group as over the whole image).
    with np.errstate(invalid="ignore", divide="ignore"):  # a group with no stain left: NaN, dropped
        texture = ndimage.standard_deviation(rgb[mask].mean(axis=1), groups[mask], labels)
    least = max(p.min_nucleus_fraction * h * w, p.min_relative_area * areas.max())
    return [
        ((xs.start, ys.start, xs.stop, ys.stop), float(area))
        for area, spread, (ys, xs) in zip(areas, texture, ndimage.find_objects(groups, n), strict=True)
        if area >= least and spread >= p.min_texture
    ]


def cell_box(nucleus: XYXY, width: int, height: int, p: LocalizeParams) -> XYXY:
    """The blob box grown by a cytoplasm rim on every side, clamped to the image."""
    x0, y0, x1, y1 = nucleus
    rim = max(x1 - x0, y1 - y0) * (p.box_growth - 1) / 2 + p.box_margin * width
    return (
        max(round(x0 - rim), 0),
        max(round(y0 - rim), 0),
        min(round(x1 + rim), width),
        min(round(y1 + rim), height),
    )


def score(area: float, image_area: int, p: LocalizeParams) -> float:
    """Confidence grows with blob size: 0.5 at the size limit, ~0.97 for a typical BCCD nucleus (5x)."""
    return float(1 - 0.5 ** (area / (p.min_nucleus_fraction * image_area)))


def find_wbcs(rgb: np.ndarray, p: LocalizeParams) -> list[Detection]:
    """rgb: (H, W, 3) uint8. Segment the violet nuclei by stain colour, clean up morphologically, take
    connected components, merge the lobes of one cell, drop blobs too small to be a WBC nucleus (platelets),
    grow a box per cell to include its cytoplasm, score it; sorted by score, best first."""
    h, w = rgb.shape[:2]
    factor = max(1, round(w / p.work_width))
    small = shrink(rgb, factor)
    cells = [
        Detection(cell_box(tuple(factor * v for v in box), w, h, p), score(area, small[..., 0].size, p))
        for box, area in nuclei(small, p)
    ]
    return sorted(cells, key=lambda d: d.score, reverse=True)[: p.max_cells]


def iou(a: tuple, b: tuple) -> float:
    """Intersection over union of two (xmin, ymin, xmax, ymax) boxes; 0 when they do not overlap."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(detections: list[tuple], truth: list[tuple], threshold: float = 0.5) -> dict:
    """Greedy one-to-one matching by IoU; returns {"tp", "fp", "fn", "ious": [IoU of each matched pair]}

    The highest-IoU pairs are taken first; each detection and each true box is used at most once.
    """
    pairs = sorted(
        ((iou(d, t), i, j) for i, d in enumerate(detections) for j, t in enumerate(truth)), reverse=True
    )
    used_d, used_t, ious = set(), set(), []
    for value, i, j in pairs:
        if value >= threshold and i not in used_d and j not in used_t:
            used_d.add(i)
            used_t.add(j)
            ious.append(value)
    return {"tp": len(ious), "fp": len(detections) - len(ious), "fn": len(truth) - len(ious), "ious": ious}


def summarize(per_image: list[dict], counts: list[tuple[int, int]]) -> dict:
    """recall, precision, mean_iou (over matched pairs), mean_abs_count_error per image.

    counts: (detected, true) per image. An empty denominator gives 0.0, not NaN, so the figures can go
    straight into a metrics file.
    """
    tp = sum(m["tp"] for m in per_image)
    fp = sum(m["fp"] for m in per_image)
    fn = sum(m["fn"] for m in per_image)
    ious = [v for m in per_image for v in m["ious"]]
    return {
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "mean_iou": float(np.mean(ious)) if ious else 0.0,
        "mean_abs_count_error": float(np.mean([abs(d - t) for d, t in counts])) if counts else 0.0,
    }
