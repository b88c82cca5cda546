"""The stain-colour WBC localiser: generated smears with known cell boxes, the metrics, real BCCD photos."""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pipeline.core.params import load_params
from pipeline.data.voc import parse_voc
from pipeline.inference.localize import dilate, fill_holes, find_wbcs, iou, match, summarize
from tests.helpers import PLATELETS, REPO, ROUND, THREE_LOBES, TWO_LOBES, H, W, field, truth_box

LOCALIZE = load_params(REPO / "params.yaml").localize  # the values tuned on BCCD


def assert_found(dets: list, truth: list[tuple]) -> None:
    m = match([d.box for d in dets], truth)
    assert (m["tp"], m["fp"], m["fn"]) == (len(truth), 0, 0), (dets, truth, m)


@pytest.mark.parametrize("cells", [[TWO_LOBES], [THREE_LOBES, ROUND]], ids=["two_lobes", "two_cells"])
def test_finds_each_cell_and_no_platelet(cells):
    dets = find_wbcs(field(cells), LOCALIZE)
    assert_found(dets, [truth_box(*c) for c in cells])
    assert all(0 <= d.score <= 1 for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    for x, y in PLATELETS:
        assert not any(d.box[0] <= x < d.box[2] and d.box[1] <= y < d.box[3] for d in dets)


def test_lobes_of_one_cell_merge_into_one_detection():
    img = field([TWO_LOBES])
    assert len(find_wbcs(img, LOCALIZE)) == 1
    # The merge step, not the closing, is what joins them: without it each lobe is a cell.
    assert len(find_wbcs(img, LOCALIZE.model_copy(update={"merge_distance": 0.0}))) == 2


def test_same_cells_found_at_double_size():
    img = Image.fromarray(field([THREE_LOBES, ROUND])).resize((2 * W, 2 * H))
    truth = [tuple(2 * v for v in truth_box(*c)) for c in (THREE_LOBES, ROUND)]
    assert_found(find_wbcs(np.asarray(img), LOCALIZE), truth)


def test_no_violet_gives_nothing():
    assert find_wbcs(field([], platelets=False), LOCALIZE) == []
    assert find_wbcs(np.full((H, W, 3), 200, np.uint8), LOCALIZE) == []


def test_platelets_alone_give_nothing():
    assert find_wbcs(field([]), LOCALIZE) == []


def test_boxes_are_clamped_to_the_image():
    edge = (20, 120, 45, 45, [(-14, -12, 17), (14, -12, 17), (0, 14, 17)])  # cut by the left edge
    [det] = find_wbcs(field([edge]), LOCALIZE)
    assert det.box[0] == 0 and 0 <= det.box[1] < det.box[3] <= H and det.box[2] <= W


def test_iou_hand_computed():
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0  # touching corners only
    assert iou((0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(4 / 16)


def test_match_is_greedy_and_one_to_one():
    truth = [(0, 0, 10, 10), (20, 0, 30, 10)]
    # d0 fits t0 exactly; d1 overlaps t0 by 0.6 too but t0 is taken; d2 overlaps nothing.
    dets = [(0, 0, 10, 10), (0, 0, 10, 6), (100, 100, 110, 110)]
    m = match(dets, truth)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 1)
    assert m["ious"] == [1.0]
    assert match([(5, 0, 15, 10)], [(0, 0, 10, 10)])["tp"] == 0  # IoU 1/3 < 0.5
    assert match([(5, 0, 15, 10)], [(0, 0, 10, 10)], threshold=0.3)["ious"] == [pytest.approx(1 / 3)]
    assert match([], truth) == {"tp": 0, "fp": 0, "fn": 2, "ious": []}


def test_summarize_hand_computed():
    per_image = [
        {"tp": 1, "fp": 0, "fn": 0, "ious": [0.8]},
        {"tp": 1, "fp": 1, "fn": 1, "ious": [0.6]},
        {"tp": 0, "fp": 1, "fn": 0, "ious": []},
    ]
    s = summarize(per_image, [(1, 1), (2, 2), (1, 0)])
    assert s == pytest.approx(
        {"recall": 2 / 3, "precision": 2 / 4, "mean_iou": 0.7, "mean_abs_count_error": 1 / 3}
    )
    assert set(summarize([], []).values()) == {0.0}  # no NaN from empty denominators


# One photo per class (all with a single annotated WBC): neutrophil, basophil, eosinophil, monocyte,
# lymphocyte (the smallest cell, the hardest box).
@pytest.mark.parametrize("number", [1, 8, 9, 15, 20])
@pytest.mark.parametrize("shrink", [1, 2], ids=["640x480", "320x240"])
def test_real_bccd_photo(bccd, number: int, shrink: int):
    name = f"BloodImage_{number:05d}"
    [wbc] = parse_voc(bccd / "Annotations" / f"{name}.xml").boxes("WBC")
    img = Image.open(bccd / "JPEGImages" / f"{name}.jpg").convert("RGB")
    img = img.resize((img.width // shrink, img.height // shrink))
    truth = (wbc.xmin / shrink, wbc.ymin / shrink, wbc.xmax / shrink, wbc.ymax / shrink)
    assert_found(find_wbcs(np.asarray(img), LOCALIZE), [truth])


def test_flat_stain_colour_is_not_a_cell():
    """A uniform purple square has the stain's colour but no chromatin: alone, or in a field."""
    square = np.zeros((20, 20, 3), np.uint8)
    square[:] = (120, 60, 170)
    assert find_wbcs(square, LOCALIZE) == []
    img = field([], platelets=False)
    img[60:140, 60:140] = (120, 60, 170)
    assert find_wbcs(img, LOCALIZE) == []
    assert len(find_wbcs(field([ROUND]), LOCALIZE)) == 1  # a real nucleus still is


@pytest.mark.parametrize("radius", [0.0, 1.0, 1.5, 3.2, 4.8, 7.3])
def test_dilation_is_by_the_euclidean_disk(radius):
    rng = np.random.default_rng(int(radius * 10))
    for shape, share in (((40, 60), 0.01), ((40, 60), 0.2), ((3, 50), 0.1), ((1, 1), 1.0)):
        mask = rng.random(shape) < share
        ys, xs = np.nonzero(mask)
        yy, xx = np.indices(shape)
        within = ((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2 <= radius**2).any(axis=-1)
        assert np.array_equal(dilate(mask, radius), within)
    assert not dilate(np.zeros((5, 5), bool), radius).any()


def test_holes_are_filled_as_by_scipy():
    ring = np.zeros((7, 9), bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False  # a hole
    ring[3, 6:] = True  # a bar to the border: the region beside it still reaches the border
    filled = fill_holes(ring)
    assert filled[1:6, 1:6].all() and not filled[0].any() and not filled[:, 8][[0, 1, 2, 4, 5, 6]].any()
    rng = np.random.default_rng(3)
    for shape, share in (((40, 60), 0.3), ((40, 60), 0.6), ((3, 50), 0.5), ((1, 1), 1.0), ((1, 1), 0.0)):
        mask = rng.random(shape) < share
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    for full in (np.ones((4, 4), bool), np.zeros((4, 4), bool)):
        assert np.array_equal(fill_holes(full), full)
