"""`wbc predict`: cells found (or given as VOC boxes), cut like the crop stage, classified, counted."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.core.classes import task_heads
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.data.voc import parse_voc
from pipeline.inference.classify import (
    classify_files,
    crops,
    differential,
    image_files,
    model_head,
    predict_images,
)
from pipeline.model.zoo import build_model
from tests.helpers import REPO, ROUND, THREE_LOBES, field

PARAMS = load_params(REPO / "params.yaml")
NAMES = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained classifier of the pipeline's input format: the plumbing, not the accuracy."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_model("lenet", (32, 32, 3), task_heads("type", NAMES), dropout=0.5).save(path)
    return path


def test_differential_counts_and_percentages():
    assert differential(["neutrophil", "neutrophil", "monocyte"], NAMES) == {
        "cells": 3,
        "count": {"neutrophil": 2, "eosinophil": 0, "lymphocyte": 0, "monocyte": 1},
        "percent": {"neutrophil": 66.7, "eosinophil": 0.0, "lymphocyte": 0.0, "monocyte": 33.3},
    }
    assert differential([], NAMES)["percent"]["neutrophil"] == 0.0


def test_crops_scale_the_padding_with_the_field():
    img = Image.fromarray(np.zeros((480, 640, 3), np.uint8))
    box = (300, 200, 340, 240)
    full = crops(img, [box], PARAMS, (8, 8))
    assert full.shape == (1, 8, 8, 3) and full.dtype == np.uint8
    # The same cell in a half-size field is cut with half the padding: the same window, halved.
    marked = np.zeros((480, 640, 3), np.uint8)
    marked[200:240, 300:340] = 255
    half = Image.fromarray(marked).resize((320, 240), Image.Resampling.NEAREST)
    a = crops(Image.fromarray(marked), [box], PARAMS, (16, 16))[0]
    b = crops(half, [tuple(v // 2 for v in box)], PARAMS, (16, 16))[0]
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 20


def test_image_files_walks_folders_and_names_a_missing_path(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.jpg", "a/y.PNG", "a/notes.txt", "z.jpeg"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in image_files([tmp_path / "a", tmp_path / "z.jpeg"])] == [
        "x.jpg",
        "y.PNG",
        "z.jpeg",
    ]
    with pytest.raises(PipelineError, match=r"nothing\.jpg: no such file"):
        image_files([tmp_path / "nothing.jpg"])


def test_each_found_cell_is_classified_and_an_empty_field_is_reported(model_file):
    import keras

    model = keras.saving.load_model(model_file)
    out = model_head(model, NAMES)
    fields = [
        ("f", Image.fromarray(field([THREE_LOBES, ROUND])), None),
        ("e", Image.fromarray(field([], platelets=False)), None),
        ("g", Image.fromarray(field([ROUND])), [(10, 10, 50, 50)]),
    ]
    result, empty, given = predict_images(fields, model, PARAMS, out)
    assert len(result.cells) == 2 and not result.note
    for cell in result.cells:
        assert cell.label in NAMES and abs(sum(cell.probabilities.values()) - 1) < 1e-4
        assert 0 <= cell.score <= 1
    assert empty.cells == [] and empty.note == "no white cell found"
    assert [c.box for c in given.cells] == [(10, 10, 50, 50)] and given.cells[0].score is None
    with pytest.raises(PipelineError, match="predicts 4 cell types but the params name 5"):
        model_head(model, [*NAMES, "basophil"])


def test_files_in_chunks_read_ahead_give_each_file_its_own_result_in_order(model_file, tmp_path, monkeypatch):
    """Chunks of 2 (the next one read in a second thread): the same results as all fields at once,
    an unreadable file noted in its place, or with `strict` an error that names it. Only whole
    model batches (3 cells here) are classified before the last chunk: the rest waits for the
    next chunk's cells, and each chunk still gets its own."""
    import keras

    from pipeline.inference import classify

    model = keras.saving.load_model(model_file)
    out = model_head(model, NAMES)
    layouts = [[THREE_LOBES, ROUND], [], [ROUND], [THREE_LOBES], [ROUND, THREE_LOBES]]
    files = []
    for i, cells in enumerate(layouts):
        files.append(tmp_path / f"f{i}.png")
        Image.fromarray(field(cells, platelets=False)).save(files[-1])
    whole = predict_images([(str(f), Image.open(f).convert("RGB"), None) for f in files], model, PARAMS, out)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    monkeypatch.setattr(classify, "CHUNK", 2)
    monkeypatch.setattr(classify, "BATCH", 3)
    calls, cells_of = [], classify.classify
    monkeypatch.setattr(classify, "classify", lambda m, x, *a: calls.append(len(x)) or cells_of(m, x, *a))
    got = classify_files([*files[:3], broken, *files[3:]], model, PARAMS, out)
    assert calls == [0, 3, 3]  # 2 cells wait, 2 + 1 go, then the last chunk's 3
    assert got[3].image == str(broken) and got[3].note.startswith("unreadable") and not got[3].cells
    assert [r.image for r in got[:3] + got[4:]] == [r.image for r in whole]
    for a, b in zip(got[:3] + got[4:], whole, strict=True):
        assert a.note == b.note and [(c.box, c.label) for c in a.cells] == [(c.box, c.label) for c in b.cells]
        for c, d in zip(a.cells, b.cells, strict=True):
            assert c.probabilities == pytest.approx(d.probabilities, abs=1e-5)
    assert got[1].note == "no white cell found"
    with pytest.raises(PipelineError, match=r"broken\.jpg"):
        classify_files([*files[:3], broken], model, PARAMS, out, strict=True)


def wbc(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli", "predict", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ, timeout=300)


def test_predict_command_on_real_photos_finds_the_annotated_cells(bccd, model_file, tmp_path):
    from pipeline.inference.localize import iou

    names = [f"BloodImage_{n:05d}" for n in (1, 9, 15)]
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.jpg").write_bytes((bccd / "JPEGImages" / f"{name}.jpg").read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    done = wbc([str(folder), "--model", str(model_file)])
    assert done.returncode == 1, done.stderr[-2000:]  # one unreadable file: reported, exit 1
    out = json.loads(done.stdout)
    by_name = {os.path.basename(r["image"]): r for r in out["images"]}
    assert by_name["broken.jpg"]["note"].startswith("unreadable:") and not by_name["broken.jpg"]["cells"]
    for name in names:
        (truth,) = parse_voc(bccd / "Annotations" / f"{name}.xml").boxes("WBC")
        (cell,) = by_name[f"{name}.jpg"]["cells"]
        assert iou(cell["box"], (truth.xmin, truth.ymin, truth.xmax, truth.ymax)) >= 0.5
        assert cell["label"] in NAMES
    assert out["differential"]["cells"] == 3 and sum(out["differential"]["count"].values()) == 3
    assert "4 images, 3 cells, 1 without a cell" in done.stderr


def test_predict_command_with_voc_boxes_writes_csv(bccd, model_file):
    photo = bccd / "JPEGImages" / "BloodImage_00001.jpg"
    done = wbc(
        [str(photo), "--boxes", str(bccd / "Annotations"), "--model", str(model_file), "--format", "csv"]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    header, row = done.stdout.strip().splitlines()
    assert header.startswith("image,cell,xmin,ymin,xmax,ymax,score,label,p_neutrophil")
    (truth,) = parse_voc(bccd / "Annotations/BloodImage_00001.xml").boxes("WBC")
    assert row.split(",")[2:7] == [str(truth.xmin), str(truth.ymin), str(truth.xmax), str(truth.ymax), ""]


def test_an_image_too_small_to_hold_a_cell_is_a_counted_no_cell(model_file):
    import keras

    model = keras.saving.load_model(model_file)
    tiny = Image.fromarray(field([ROUND])).resize((24, 18))
    [result] = predict_images([("t", tiny, None)], model, PARAMS, model_head(model, NAMES))
    assert result.cells == [] and result.note == "image smaller than 32 px"


@pytest.mark.parametrize("damage", ["cut", "zip_without_model"])
def test_a_damaged_model_file_is_one_clear_error(model_file, tmp_path, damage):
    import zipfile

    bad = tmp_path / "damaged.keras"
    if damage == "cut":  # a copy cut short: not a zip any more
        bad.write_bytes(model_file.read_bytes()[:5000])
    else:  # a zip, but not a Keras archive
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("notes.txt", "hello")
    photo = tmp_path / "p.png"
    Image.fromarray(field([ROUND])).save(photo)
    done = wbc([str(photo), "--model", str(bad)])
    assert done.returncode == 2  # the CLI's exit status for an error
    assert "Traceback" not in done.stderr and "File not found" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert str(bad) in line and ("not a Keras model archive" in line or "cannot load" in line)


def test_crops_fill_what_lies_beyond_the_field_when_the_params_say_so():
    keep = PARAMS.model_copy(update={"resize": PARAMS.resize.model_copy(update={"beyond_field": "keep"})})
    fill = PARAMS.model_copy(update={"resize": PARAMS.resize.model_copy(update={"beyond_field": "fill"})})
    rgb = np.full((240, 320, 3), (230, 200, 205), np.uint8)
    rgb[100:140, 150:190] = (120, 60, 200)  # a violet cell
    y, x = np.mgrid[0:240, 0:320]
    corner = rgb.copy()
    corner[x + y < 270] = 0  # a rotated field's black corner reaching the cell's window
    box = (150, 100, 190, 140)
    assert np.array_equal(
        crops(Image.fromarray(rgb), [box], keep, (16, 16)), crops(Image.fromarray(rgb), [box], fill, (16, 16))
    )
    kept, filled = (crops(Image.fromarray(corner), [box], p, (16, 16))[0] for p in (keep, fill))
    assert (kept.max(axis=2) < 60).any() and not np.array_equal(kept, filled)
    assert (filled.max(axis=2) >= 60).all()
