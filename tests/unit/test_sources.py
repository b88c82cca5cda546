"""Other labs' labelled cells (params `sources`): class names mapped or refused, other cell types
dropped and counted, bad input refused naming the file, the few-shot draw, and the split within a
domain that never lets a trained-on cell be tested on."""

import os
from functools import partial

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageEnhance

from pipeline.core.classes import CLASSES
from pipeline.core.errors import PipelineError
from pipeline.core.params import SourceParams, load_params
from pipeline.data import sources
from pipeline.data.fetch import format_manifest, manifest_of
from pipeline.data.sources import class_of, draw_roles
from pipeline.data.split import split_crops
from stages.sources import best_cell
from tests.helpers import REPO, smear

SPLIT = load_params(REPO / "params.yaml").split


PARAMS = load_params(REPO / "params.yaml")


def source(path, **changes) -> SourceParams:
    values = {"enabled": True, "kind": "folders", "path": str(path), "manifest": None, "domain": "lab",
              "classes": {}, "take_per_class": 0, "seed": 1, "cut": "whole"} | changes  # fmt: skip
    return SourceParams(**values)


def read_source(name, p, classes):
    return sources.read_source(name, p, classes, partial(best_cell, params=PARAMS))


def cell(path, seed: int, size=(64, 64), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = smear(seed, size, [(8, 8, size[0] - 8, size[1] - 8)])
    if mode != "RGB":
        image = (
            image.convert("L")
            if mode == "L"
            else Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 256)
        )
    image.save(path)


def write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def lab(root, names: dict[str, int]) -> None:
    n = 0
    for name, count in names.items():
        for _ in range(count):
            cell(root / name / f"c{n}.png", n)
            n += 1


def test_names_map_to_classes_and_other_cells_are_dropped_and_counted(tmp_path):
    lab(tmp_path / "lab", {"NEUTROPHIL": 2, "SNE": 1, "eosinophils": 2, "Lymphocyte": 2, "monocytes": 2,
                           "platelet": 3, "basophil": 1, "big_mono": 1})  # fmt: skip
    cells, report = read_source("mylab", source(tmp_path / "lab", classes={"big_mono": "monocyte"}), CLASSES)
    assert report["neutrophil"] == 3 and report["eosinophil"] == 2 and report["monocyte"] == 3
    assert report["dropped"] == {"basophil": 1, "platelet": 3} and report["cells"] == 10
    assert set(cells["domain"]) == {"lab"} and (cells["source_image"] == cells["crop_id"]).all()
    kept, _ = read_source("mylab", source(tmp_path / "lab", classes={"big_mono": "monocyte"}),
                          [*CLASSES, "basophil"])  # fmt: skip
    assert (kept["label"] == "basophil").sum() == 1
    assert (
        class_of("BNE", {}, CLASSES, "x") == "neutrophil" and class_of("LY", {}, CLASSES, "x") == "lymphocyte"
    )
    assert class_of("immature granulocyte", {}, CLASSES, "x") is None


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda r: cell(r / "blasts-ish" / "a.png", 1), r"blasts-ish.*unknown class name 'blasts-ish'"),
        (lambda r: (r / "monocyte").mkdir(parents=True), r"monocyte: empty class folder"),
        (lambda r: write(r / "neutrophil" / "notes.txt", b"x"), r"notes.txt: not an image file"),
        (lambda r: write(r / "neutrophil" / "bad.jpg", b"no"), r"bad.jpg: not a readable image"),
        (lambda r: cell(r / "lymphocyte" / "tiny.png", 1, size=(20, 40)),
         r"tiny.png: 20x40 pixels, smaller than 32"),
        (lambda r: (cell(r / "neutrophil" / "a.png", 5), cell(r / "eosinophil" / "b.png", 5)),
         r"the same image bytes as .*(a|b).png, labelled \w+ there, \w+ here"),
        (lambda r: cell(r / "neutrophil" / "a.png", 1) or (r / "stray.png").write_bytes(b"x"),
         r"stray.png: a file among the class folders"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_file(tmp_path, make, problem):
    root = tmp_path / "lab"
    root.mkdir()
    cell(root / "lymphocyte" / "ok.png", 99)
    make(root)
    with pytest.raises(PipelineError, match=problem):
        read_source("mylab", source(root), CLASSES)


def test_grayscale_and_16_bit_cells_are_read_as_rgb(tmp_path):
    cell(tmp_path / "lab" / "neutrophil" / "gray.png", 1, mode="L")
    cell(tmp_path / "lab" / "neutrophil" / "deep.png", 2, mode="I;16")
    cells, _ = read_source("mylab", source(tmp_path / "lab"), CLASSES)
    assert [img.mode for img in cells["image"]] == ["RGB", "RGB"]


def test_a_csv_source_and_its_missing_file(tmp_path):
    cell(tmp_path / "imgs" / "a.png", 1)
    cell(tmp_path / "imgs" / "b.png", 2)
    csv = tmp_path / "cells.csv"
    csv.write_text("path,label\nimgs/a.png,Neutrophil\nimgs/b.png,MO\n")
    cells, _ = read_source("mylab", source(csv, kind="csv"), CLASSES)
    assert list(cells["label"]) == ["neutrophil", "monocyte"]
    csv.write_text("path,label\nimgs/a.png,Neutrophil\nimgs/gone.png,MO\n")
    with pytest.raises(PipelineError, match=r"cells.csv:3: no such image file .*gone.png"):
        read_source("mylab", source(csv, kind="csv"), CLASSES)
    csv.write_text("file,class\nimgs/a.png,Neutrophil\n")
    with pytest.raises(PipelineError, match=r"missing column\(s\) label, path"):
        read_source("mylab", source(csv, kind="csv"), CLASSES)


def test_a_source_whose_files_do_not_match_its_manifest_is_refused(tmp_path):
    lab(tmp_path / "lab", {"neutrophil": 2, "monocyte": 2})
    manifest = tmp_path / "lab.sha256"
    manifest.write_text(format_manifest(manifest_of(tmp_path / "lab")))
    read_source("mylab", source(tmp_path / "lab", manifest=str(manifest)), CLASSES)  # matches
    cell(tmp_path / "lab" / "monocyte" / "c2.png", 77)  # altered
    with pytest.raises(PipelineError, match=r"sources.mylab: .*lab: .*checksum mismatch: monocyte/c2.png"):
        read_source("mylab", source(tmp_path / "lab", manifest=str(manifest)), CLASSES)


def test_the_draw_takes_k_per_class_by_seed_whatever_the_order(tmp_path):
    lab(tmp_path / "lab", {"neutrophil": 6, "eosinophil": 6, "lymphocyte": 6, "monocyte": 6})
    cells, _ = read_source("mylab", source(tmp_path / "lab"), CLASSES)
    roles = draw_roles(cells, 2, seed=1)
    assert (cells[roles == "train"]["label"].value_counts() == 2).all() and (roles == "test").sum() == 16
    shuffled = cells.sample(frac=1, random_state=3)
    assert set(cells.loc[roles == "train", "sha256"]) == set(
        shuffled.loc[draw_roles(shuffled, 2, seed=1) == "train", "sha256"]
    )
    assert set(cells.loc[draw_roles(cells, 2, seed=2) == "train", "sha256"]) != set(
        cells.loc[roles == "train", "sha256"]
    )
    assert (draw_roles(cells, 0, seed=1) == "split").all()
    with pytest.raises(PipelineError, match="6 eosinophil cells, not more than take_per_class 6"):
        draw_roles(cells, 6, seed=1)


def bccd_crops(n: int = 40) -> tuple[pd.DataFrame, dict]:
    rows = [
        {"crop_id": f"B{i}", "source_image": f"photo{i // 2}.jpg", "label": CLASSES[i % 4]} for i in range(n)
    ]
    noise = np.random.default_rng(0).integers(0, 255, (n, 48, 48, 3), dtype=np.uint8)  # no near-duplicates
    return pd.DataFrame(rows), {f"B{i}": Image.fromarray(noise[i]) for i in range(n)}


def split_with(crops: pd.DataFrame, images: dict, cells: pd.DataFrame, p) -> pd.DataFrame:
    table = pd.concat([crops.assign(domain="bccd"), cells.drop(columns="image")], ignore_index=True)
    return split_crops(table, images | dict(zip(cells["crop_id"], cells["image"], strict=True)), p, [])


def test_an_adaptation_trains_on_its_draw_tests_on_the_rest_and_leaves_bccd_as_it_was(tmp_path):
    lab(tmp_path / "lab", {"neutrophil": 5, "eosinophil": 5, "lymphocyte": 5, "monocyte": 5})
    cells, _ = read_source("mylab", source(tmp_path / "lab"), CLASSES)
    cells["role"] = draw_roles(cells, 2, seed=1)
    crops, images = bccd_crops()
    p = SPLIT.model_copy(update={"strategy": "stratified", "val_fraction": 0.25})
    alone = split_crops(crops, images, p, [])
    both = split_with(crops, images, cells, p)
    bccd = both[both["domain"] == "bccd"]
    assert list(bccd["split"]) == list(alone["split"]) and list(bccd["group"]) == list(alone["group"])
    other = both[both["domain"] == "lab"]
    trained = set(other.loc[other["split"] == "train", "sha256"])
    assert trained == set(cells.loc[cells["role"] == "train", "sha256"]) and len(trained) == 8
    assert not trained & set(other.loc[other["split"] == "test", "sha256"])
    assert set(other["split"]) <= {"train", "test", "dropped"}


def test_a_trained_cells_near_duplicate_is_dropped_not_tested(tmp_path):
    lab(tmp_path / "lab", {"neutrophil": 3, "monocyte": 3})
    twin = tmp_path / "lab" / "neutrophil" / "twin.png"
    ImageEnhance.Brightness(Image.open(tmp_path / "lab" / "neutrophil" / "c0.png")).enhance(1.03).save(twin)
    cells, _ = read_source("mylab", source(tmp_path / "lab"), CLASSES)
    for seed in range(20):  # a draw that trains on c0 and tests its twin
        cells["role"] = draw_roles(cells, 1, seed)
        roles = dict(zip(cells["origin"].map(os.path.basename), cells["role"], strict=True))
        if roles["c0.png"] == "train" and roles["twin.png"] == "test":
            break
    crops, images = bccd_crops()
    p = SPLIT.model_copy(update={"strategy": "stratified", "val_fraction": 0.25})
    both = split_with(crops, images, cells, p)
    twin_row = both[both["origin"].fillna("").str.endswith("twin.png")]
    assert twin_row["split"].item() == "dropped"


def test_the_default_params_keep_every_source_off(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["sources"] and not any(s["enabled"] for s in params["sources"].values())


def test_cells_are_cut_where_the_localiser_finds_one_else_kept_whole(tmp_path):
    from tests.helpers import ROUND, field

    (tmp_path / "lab" / "lymphocyte").mkdir(parents=True)
    Image.fromarray(field([ROUND], seed=1)).save(tmp_path / "lab" / "lymphocyte" / "found.png")
    Image.new("RGB", (320, 240), (235, 215, 220)).save(tmp_path / "lab" / "lymphocyte" / "blank.png")
    cells, report = read_source("mylab", source(tmp_path / "lab", cut="localiser"), CLASSES)
    by_name = dict(zip(cells["origin"].map(os.path.basename), cells["image"], strict=True))
    assert by_name["blank.png"].size == (320, 240) and report["no_cell_found_whole_image"] == 1
    cut = by_name["found.png"]
    assert cut.size[0] < 160 and cut.size[0] == cut.size[1]  # the cell and a rim, square as crop.square
    whole, _ = read_source("mylab", source(tmp_path / "lab", cut="whole"), CLASSES)
    assert {img.size for img in whole["image"]} == {(320, 240)}
