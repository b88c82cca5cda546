"""`wbc predict --report PAGE --export-crops DIR`: a page a technologist reviews, and every cell in a
folder of its predicted class, ready to be corrected and handed back."""

import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from pipeline.core.classes import task_heads
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.inference.classify import Cell, ImageResult
from pipeline.inference.review import export_crops, report_html
from pipeline.model.zoo import build_model
from tests.helpers import REPO, ROUND, THREE_LOBES, TWO_LOBES, field

NAMES = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]
PARAMS = load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(field([TWO_LOBES, ROUND])).save(folder / "two.png")
    Image.fromarray(field([THREE_LOBES], seed=1)).save(folder / "one.png")
    Image.fromarray(field([], seed=2)).save(folder / "none.png")
    return folder


def cell(box, label, p):
    probs = {n: (p if n == label else (1 - p) / 3) for n in NAMES}
    return Cell(box, label, probs)


def test_page_shows_each_photo_its_boxes_the_chart_and_flags_unsure_cells(photos):
    results = [
        ImageResult(str(photos / "two.png"), [cell((60, 88, 160, 152), "neutrophil", 0.95),
                                              cell((192, 72, 268, 148), "lymphocyte", 0.55)]),
        ImageResult(str(photos / "one.png"), [cell((45, 65, 135, 155), "monocyte", 0.4)]),
        ImageResult(str(photos / "none.png"), note="no white cell found"),
    ]  # fmt: skip
    page = report_html(results, NAMES, below=0.7, model="m.keras")
    assert page.count('<rect class="cell') == 3 and page.count('class="cell review"') == 2
    assert page.count('<image href="data:image/jpeg;base64,') == 2  # self-contained: no file links
    assert "no white cell found" in page and "none.png" in page
    assert re.search(r"<b>3</b> cells in <b>3</b> photos \(1 without a cell\); <b class='unsure'>2</b>", page)
    assert ">33.3% (1)</text>" in page and ">0.0% (0)</text>" in page  # the differential's bars
    assert "http" not in page  # nothing loaded from the web


def test_export_writes_every_cell_under_its_predicted_class(photos, tmp_path):
    results = [
        ImageResult(str(photos / "two.png"), [cell((60, 88, 160, 152), "neutrophil", 0.9),
                                              cell((192, 72, 268, 148), "lymphocyte", 0.9)]),
        ImageResult(str(photos / "one.png"), [cell((45, 65, 135, 155), "neutrophil", 0.9)]),
    ]  # fmt: skip
    out = tmp_path / "cells"
    assert export_crops(out, results, NAMES, PARAMS) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)  # an empty folder per class too
    assert sorted(p.name for p in (out / "neutrophil").iterdir()) == ["one_cell1.png", "two_cell1.png"]
    with Image.open(out / "lymphocyte/two_cell2.png") as crop:  # the photo's second cell
        assert crop.width == crop.height >= 76  # the crop stage's square window, at full resolution
    with pytest.raises(PipelineError, match="not empty"):  # never mixed into an existing export
        export_crops(out, results, NAMES, PARAMS)
    assert len(list(out.rglob("*.png"))) == 3


def test_predict_command_writes_the_page_and_the_crops(photos, tmp_path):
    model = tmp_path / "m.keras"
    build_model("lenet", (32, 32, 3), task_heads("type", NAMES), dropout=0.5).save(model)
    page, cells = tmp_path / "review.html", tmp_path / "cells"
    cmd = [sys.executable, "-m", "pipeline.cli", "predict", str(photos), "--model", str(model),
           "--report", str(page), "--export-crops", str(cells), "--review-below", "0.99"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = len(list(cells.rglob("*.png")))
    text = page.read_text()
    assert found == text.count('<rect class="cell') >= 3  # both views hold the same cells
    assert text.count('class="cell review"') == found  # an untrained model is never 99% sure
    # a folder that is already there and not empty: refused before any work, nothing written
    again = subprocess.run([*cmd[:-6], "--export-crops", str(cells)], cwd=REPO, capture_output=True,
                           text=True, env=os.environ, timeout=300)  # fmt: skip
    assert again.returncode == 2 and "exists and is not empty" in again.stderr
    assert len(list(cells.rglob("*.png"))) == found
