import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.data.crop import OUTCOMES, crop_window, load_annotations, plan_crops, write_crops
from pipeline.data.labels import read_labels
from pipeline.data.voc import Box, parse_voc
from tests.helpers import CASES, voc_xml


def plan(raw, keep_basophil=False):
    annotations = load_annotations(raw / "BCCD" / "Annotations")
    images = sorted(p.name for p in (raw / "BCCD" / "JPEGImages").glob("*.jpg"))
    crops, report = plan_crops(
        images, annotations, read_labels(raw / "labels.csv"), keep_basophil=keep_basophil, min_box_size=16
    )
    return annotations, crops, report


def test_every_image_gets_exactly_one_outcome(raw_dataset):
    _, _, report = plan(raw_dataset)
    outcomes = report["images_by_outcome"]
    assert set(outcomes) == set(OUTCOMES)
    assert sum(outcomes.values()) == report["images"] == len(CASES)
    assert outcomes == {
        "cropped": 6,  # 0-4 and 10
        "no_annotation": 0,
        "no_label_row": 1,  # 9
        "empty_label": 1,  # 7
        "no_wbc_box": 1,  # 6
        "multi_class_label": 1,  # 5
        "basophil_dropped": 1,  # 8
        "no_valid_box": 2,  # 11 tiny, 12 inverted
    }
    assert report["label_rows_without_image"] == 1
    assert report["boxes_clamped"] == 1
    assert report["boxes_skipped_invalid"] == 2


def test_same_class_multi_cell_image_gives_every_box_the_class(raw_dataset):
    _, crops, report = plan(raw_dataset)
    from_4 = [c for c in crops if c.source_image == "BloodImage_00004.jpg"]
    assert [c.crop_id for c in from_4] == ["BloodImage_00004_0", "BloodImage_00004_1"]
    assert {c.label for c in from_4} == {"neutrophil"}
    assert report["crops"] == {
        "eosinophil": 1, "lymphocyte": 1, "monocyte": 2, "neutrophil": 3, "total": 7,
    }  # fmt: skip


def test_basophils_kept_when_asked(raw_dataset):
    _, crops, report = plan(raw_dataset, keep_basophil=True)
    assert report["images_by_outcome"]["basophil_dropped"] == 0
    assert any(c.label == "basophil" for c in crops)


def test_written_crops_match_their_windows(raw_dataset, tmp_path):
    annotations, crops, _ = plan(raw_dataset)
    manifest = write_crops(
        crops, annotations, raw_dataset / "BCCD" / "JPEGImages", tmp_path / "crops", padding=5, square=True
    )
    assert list(manifest["crop_id"]) == sorted(c.crop_id for c in crops)
    for row in manifest.itertuples():
        with Image.open(tmp_path / "crops" / f"{row.crop_id}.png") as img:
            assert img.size == (row.crop_xmax - row.crop_xmin, row.crop_ymax - row.crop_ymin)
            assert img.size[0] == img.size[1]  # square, even when shifted off the border
    clamped = manifest.set_index("crop_id").loc["BloodImage_00010_0"]
    assert (clamped.box_xmax, clamped.box_ymax) == (160, 120)
    assert set(manifest["nucleus"]) == {"poly", "mono"}


@pytest.mark.parametrize(
    ("box", "padding", "square", "expected"),
    [
        (Box(40, 30, 100, 70), 0, False, Box(40, 30, 100, 70)),
        (Box(40, 30, 100, 70), 10, False, Box(30, 20, 110, 80)),
        (Box(0, 0, 50, 30), 10, False, Box(0, 0, 60, 40)),  # clamped at the top-left
        (Box(40, 30, 100, 70), 0, True, Box(40, 20, 100, 80)),  # taller to 60x60
        (Box(140, 0, 160, 40), 0, True, Box(120, 0, 160, 40)),  # shifted inside, still square
        (Box(0, 0, 200, 200), 0, True, Box(40, 0, 160, 120)),  # larger than the image: centred, shifted in
    ],
)
def test_crop_window(box, padding, square, expected):
    assert crop_window(box, 160, 120, padding, square) == expected


def test_labels_with_bom_and_crlf(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(
        '\ufeff,Image,Category\r\n,1,NEUTROPHIL\r\n,2,"EOSINOPHIL, EOSINOPHIL"\r\n,3,\r\n'.encode()
    )
    assert read_labels(path) == {1: ("neutrophil",), 2: ("eosinophil", "eosinophil"), 3: ()}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (",Image,Category\n,1,PLATELET\n", "unknown class name"),
        (",Image,Category\n,1,NEUTROPHIL\n,1,MONOCYTE\n", "labelled twice"),
        (",Image\n,1\n", "missing column"),
        (",Image,Category\n,abc,NEUTROPHIL\n", "not an image number"),
    ],
)
def test_bad_labels_name_the_file(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message) as err:
        read_labels(path)
    assert str(path) in str(err.value)


def test_parse_voc(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("a.jpg", (640, 480), [("WBC", (1, 2, 3.0, 4)), ("RBC", (5, 6, 7, 8))]))
    ann = parse_voc(path)
    assert (ann.width, ann.height) == (640, 480)
    assert ann.boxes("WBC") == [Box(1, 2, 3, 4)]


HOSTILE = {
    "malformed": ("<annotation><size>", "malformed XML"),
    "missing field": (voc_xml("a.jpg", (9, 9), [("WBC", (1, 2, 3, 4))]).replace("<ymax>4</ymax>", ""),
                      "ymax"),
    "non-numeric": (voc_xml("a.jpg", (9, 9), [("WBC", (1, "two", 3, 4))]), "not a number"),
    "negative": (voc_xml("a.jpg", (9, 9), [("WBC", (-1, 2, 3, 4))]), "negative"),
    "unknown name": (voc_xml("a.jpg", (9, 9), [("wbc", (1, 2, 3, 4))]), "unknown object name 'wbc'"),
    "no bndbox": ("<annotation><size><width>9</width><height>9</height></size>"
                  "<object><name>WBC</name></object></annotation>", "no <bndbox>"),
    "external entity": ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                        "<annotation>&x;</annotation>", "unsafe XML"),
    "billion laughs": ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                       "<annotation>&b;</annotation>", "unsafe XML"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_bad_or_hostile_xml_is_refused_naming_the_file(tmp_path, case):
    text, message = HOSTILE[case]
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message) as err:
        parse_voc(path)
    assert str(path) in str(err.value)
