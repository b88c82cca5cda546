"""Cells cut by a photo's frame (`wbc edges`): the geometry, and the accuracy tables."""

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.data.crop import cut_cell
from pipeline.data.voc import Box
from pipeline.evaluation.compare import compare
from pipeline.evaluation.edges import (
    SIDES,
    at_frame,
    black_beyond,
    frame_cells,
    frame_summary,
    frame_table,
    frame_versions,
)
from tests.helpers import REPO, smear

PARAMS = load_params(REPO / "params.yaml")
PHOTO = smear(4, (640, 480), [(200, 150, 320, 270)])
BOX = Box(200, 150, 320, 270)


@pytest.mark.parametrize(
    ("side", "area", "inside"),
    [
        ("left", (240, 0, 640, 480), Box(0, 150, 80, 270)),
        ("right", (0, 0, 280, 480), Box(200, 150, 280, 270)),
        ("top", (0, 190, 640, 480), Box(200, 0, 320, 80)),
        ("bottom", (0, 0, 640, 230), Box(200, 150, 320, 230)),
    ],
)
def test_the_frame_crosses_the_cell_a_third_in(side, area, inside):
    part, box = at_frame(PHOTO, BOX, side, 1 / 3)  # 40 of the cell's 120 px beyond the frame
    assert np.array_equal(np.asarray(part), np.asarray(PHOTO.crop(area)))
    assert box == inside


def test_versions_are_the_crop_stages_cut_then_one_per_side():
    versions = frame_versions(PHOTO, BOX, 16, True, 1 / 3)
    assert len(versions) == 1 + len(SIDES)
    whole = cut_cell(PHOTO, (200, 150, 320, 270), 16, True)
    assert np.array_equal(np.asarray(versions[0]), np.asarray(whole))
    # cut at the left: the crop stage's square window (box + 16 px, 152 px) pushed inside the frame
    assert np.array_equal(np.asarray(versions[1]), np.asarray(PHOTO.crop((240, 134, 392, 286))))
    # cut at the bottom: the window's bottom is the frame
    assert np.array_equal(np.asarray(versions[4]), np.asarray(PHOTO.crop((184, 78, 336, 230))))
    cells = pd.DataFrame([{"source_image": "p.jpg", "box_xmin": 200, "box_ymin": 150, "box_xmax": 320,
                           "box_ymax": 270}] * 2)  # fmt: skip
    x = frame_cells(cells, lambda _: PHOTO, PARAMS.crop, PARAMS.resize, 1 / 3)
    assert x.shape == (10, PARAMS.resize.height, PARAMS.resize.width, 3) and x.dtype == np.uint8


@pytest.mark.parametrize(("side", "black_px", "kept_px"), [
    ("left", (239, 210), (241, 210)), ("right", (281, 210), (279, 210)),
    ("top", (260, 189), (260, 191)), ("bottom", (260, 231), (260, 229)),
])  # fmt: skip
def test_black_beyond_a_tilted_line_a_third_into_the_cell(side, black_px, kept_px):
    photo, box = black_beyond(PHOTO, BOX, side, 1 / 3)
    before, after = np.asarray(PHOTO), np.asarray(photo)
    assert photo.size == PHOTO.size and box == BOX  # the field keeps its size, the cell its box
    assert (after[black_px[1], black_px[0]] == 0).all()  # at the cell's middle: 40 px in is the line
    assert (after[kept_px[1], kept_px[0]] == before[kept_px[1], kept_px[0]]).all()
    black = (after == 0).all(axis=2) & ~(before == 0).all(axis=2)
    rows = black.any(axis=1) if side in ("left", "right") else black.any(axis=0)
    assert rows.all()  # the line runs across the whole photo
    # tilted: along the line, the black edge moves by tan(15 degrees) of the distance
    edge = black.argmin(axis=1) if side == "left" else None
    if edge is not None:
        assert edge[330] - edge[90] == pytest.approx(240 * np.tan(np.radians(15)), abs=1.5)


def test_black_versions_are_cut_in_the_whole_photo():
    versions = frame_versions(PHOTO, BOX, 16, True, 1 / 3, beyond="black")
    whole = cut_cell(PHOTO, (200, 150, 320, 270), 16, True)
    assert all(v.size == whole.size for v in versions)  # the window is not pushed: the photo is whole
    assert all((np.asarray(v) == 0).all(axis=2).mean() > 0.1 for v in versions[1:])  # each side blackened
    assert np.array_equal(np.asarray(versions[0]), np.asarray(whole))
    with pytest.raises(PipelineError, match="beyond the frame is one of"):
        frame_versions(PHOTO, BOX, 16, True, 1 / 3, beyond="grey")


def test_outside_must_be_a_share_of_the_cell():
    for bad in (0.0, 1.0, -0.2):
        for meet in (at_frame, black_beyond):
            with pytest.raises(PipelineError, match="outside"):
                meet(PHOTO, BOX, "left", bad)


def test_tables_count_each_cell_and_cut():
    cells = pd.DataFrame(
        {"crop_id": ["a", "b"], "source_image": ["p.jpg", "q.jpg"], "label": ["neutrophil", "monocyte"]}
    )
    classes = ("neutrophil", "eosinophil", "lymphocyte", "monocyte")
    picks = [0, 0, 1, 0, 0, 3, 3, 3, 3, 0]  # a: whole right, 'right' wrong; b: whole right, 'bottom' wrong
    table = frame_table(cells, np.eye(4)[picks], classes)
    assert list(table["version"][:5]) == ["whole", *SIDES]
    summary = frame_summary(table)
    assert summary["cells"] == 2 and summary["whole_accuracy"] == 1.0
    assert (
        summary["cut_accuracy"] == 6 / 8
        and summary["right_accuracy"] == 0.5
        and summary["left_accuracy"] == 1.0
    )
    with pytest.raises(PipelineError, match="9 predictions for 2 cells"):
        frame_table(cells, np.eye(4)[picks[:9]], classes)
    # two tables of the same cells pair version by version, as two predictions.csv do
    fixed = frame_table(cells, np.eye(4)[[0, 0, 0, 0, 0, 3, 3, 3, 3, 3]], classes)
    result = compare(table, fixed, resamples=200)
    assert (result.cells, result.sources, result.only_b_right, result.only_a_right) == (10, 2, 2, 0)


def test_cli_refuses_no_runs_and_an_unknown_revision(capsys):
    from pipeline.cli import main

    assert main(["edges"]) == 2
    assert "no runs" in capsys.readouterr().err
    assert main(["edges", "no-such-revision-or-experiment"]) == 2
    assert "no-such-revision-or-experiment: cannot read params.yaml" in capsys.readouterr().err


def test_a_revision_from_before_beyond_field_reads_as_it_ran(monkeypatch):
    import yaml

    from pipeline.core import paths
    from pipeline.evaluation import edges

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    files = {paths.SPLIT_MANIFEST: b"crop_id,split\n", paths.MODEL: b"model"}
    for beyond_field, expected in ((None, "keep"), ("fill", "fill")):
        if beyond_field is None:
            raw["resize"].pop("beyond_field")
        else:
            raw["resize"]["beyond_field"] = beyond_field
        files[paths.PARAMS] = yaml.safe_dump(raw).encode()
        monkeypatch.setattr(edges, "_read", lambda path, rev, repo: files[path])
        assert edges.revision_run("old").resize.beyond_field == expected
