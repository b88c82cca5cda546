"""The published test sets: fields mapped to their source photos, the leak check, and the report
where a field with no cell found counts as wrong."""

import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core import paths
from pipeline.core.classes import head
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.evaluation.metrics import image_report, predictions
from pipeline.evaluation.published import SETS, check_unseen, fields, photo_majority, score_published
from tests.helpers import REPO, SHARED, TYPES, always


def make_dataset2(root, sources: dict[str, str]):
    """sources: field (images/<SET>/<CLASS>/<file>) -> BCCD photo; writes the fields and their CSV."""
    for rel in sources:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6)).save(root / rel)
    write_fields(root / "fields.csv", sources)
    return root


def write_fields(path, sources: dict[str, str]) -> None:
    table = {"file": list(sources), "bccd_image": list(sources.values()), "inliers": 100, "same_as": ""}
    pd.DataFrame(table).to_csv(path, index=False)


def test_every_field_takes_the_photo_its_keypoints_matched_not_its_file_name(tmp_path):
    root = make_dataset2(
        tmp_path,
        {"images/TEST_SIMPLE/MONOCYTE/_0_11.jpeg": "BloodImage_00001.jpg",
         "images/TEST_SIMPLE/MONOCYTE/_1_12.jpeg": "BloodImage_00002.jpg",
         "images/TEST_SIMPLE/EOSINOPHIL/_0_13.jpeg": "BloodImage_00003.jpg",
         "images/TEST/MONOCYTE/_0_901.jpeg": "BloodImage_00002.jpg",
         "images/TEST/MONOCYTE/_0_903.jpeg": "BloodImage_00001.jpg",
         "images/TEST/EOSINOPHIL/_0_904.jpeg": "BloodImage_00003.jpg"},
    )  # fmt: skip
    table = fields(root, root / "fields.csv")
    test = table[table["set"] == "TEST"]
    test = test.set_index(test["path"].map(lambda p: p.name))
    assert test.loc["_0_901.jpeg", "source_image"] == "BloodImage_00002.jpg"  # `_0_`, yet photo 2
    assert test.loc["_0_903.jpeg", "source_image"] == "BloodImage_00001.jpg"
    assert set(table["class"]) == {"monocyte", "eosinophil"} and len(table) == 6
    (root / "images/TEST/MONOCYTE/_7_999.jpeg").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"_7_999\.jpeg: no source photo for it in .*fields\.csv"):
        fields(root, root / "fields.csv")


@pytest.mark.skipif(not (SHARED / "datasets/dataset2-master").is_dir(), reason="dataset2 not beside the repo")
def test_the_real_fields_come_from_photos_of_their_own_class_two_beyond_the_69():
    """The committed per-field photos cover every real field, each a BCCD photo of its folder's
    class; each TEST_SIMPLE field the photo test_sources.csv names; every TEST field one of those
    69 photos but 95 eosinophil fields, copies of two photos TEST_SIMPLE does not hold."""
    real = SHARED / "datasets/dataset2-master"
    table = fields(real, REPO / paths.KAGGLE_TEST_FIELDS)
    assert table.groupby("set").size().to_dict() == {"TEST": 2487, "TEST_SIMPLE": 71}
    labels = pd.read_csv(SHARED / "datasets/bccd/labels.csv")
    label = {
        f"BloodImage_{n:05d}.jpg": str(c).lower()
        for n, c in zip(labels["Image"], labels["Category"], strict=True)
    }
    assert (table["source_image"].map(label) == table["class"]).all()
    listed = pd.read_csv(real / "test_sources.csv")
    simple = table[table["set"] == "TEST_SIMPLE"]
    simple = simple.set_index(simple["path"].map(lambda p: f"{p.parent.name}/{p.name}"))
    assert simple.loc[listed["test_simple_file"], "source_image"].tolist() == listed["bccd_image"].tolist()
    beyond = table[~table["source_image"].isin(listed["bccd_image"])]
    assert set(beyond["set"]) == {"TEST"} and set(beyond["class"]) == {"eosinophil"} and len(beyond) == 95
    assert set(beyond["source_image"]) == {"BloodImage_00062.jpg", "BloodImage_00095.jpg"}


def test_each_photo_counts_once_right_when_over_half_its_fields_are():
    right = np.array([True, True, False, False, True, True])
    assert photo_majority(right, list("aaabbc")) == pytest.approx(2 / 3)  # b: half is not a majority


def test_a_model_that_saw_a_test_source_is_refused():
    check_unseen({"BloodImage_00005.jpg"}, ["BloodImage_00001.jpg"])
    with pytest.raises(
        PipelineError,
        match=r"trained on 1 of their source photos or a re-shot twin of one \(BloodImage_00001\.jpg",
    ):
        check_unseen({"BloodImage_00001.jpg", "BloodImage_00005.jpg"}, ["BloodImage_00001.jpg"])


def test_a_missed_cell_counts_as_wrong():
    classes = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]
    truth = np.array([0, 0, 1, 2, 3, 3])
    pred = predictions(["neutrophil", "eosinophil", "eosinophil", "lymphocyte", "monocyte", None], classes)
    assert pred.tolist() == [0, 1, 1, 2, 3, 4]
    out = image_report(truth, pred, np.array(list("aabcdd")), classes, resamples=20, confidence=0.95, seed=0)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["cells_found"] == pytest.approx(5 / 6)
    assert out["missed_per_class"] == {"neutrophil": 0, "eosinophil": 0, "lymphocyte": 0, "monocyte": 1}
    assert out["per_class"]["monocyte"]["recall"] == pytest.approx(0.5)
    # poly/mono: the neutrophil called eosinophil is still right; the missed monocyte is wrong.
    assert out["nucleus_accuracy"] == pytest.approx(5 / 6)
    assert out["n_sources"] == 4 and len(out["accuracy_ci"]) == 2
    # drawn by scene (a and b one scene), counted by photo
    photos, scenes = np.array(list("aabcdd")), np.array(list("aaacdd"))
    kw = {"resamples": 20, "confidence": 0.95, "seed": 0}
    assert image_report(truth, pred, scenes, classes, **kw, sources=photos)["n_sources"] == 4
    assert image_report(truth, pred, scenes, classes, **kw)["n_sources"] == 3


def quick_params():
    """The repository's params with TTA off (these tests' models answer alike for every view) and
    50 bootstrap resamples (sklearn's metrics cost ~8 ms a call)."""
    params = load_params(REPO / "params.yaml")
    quick = params.evaluate.model_copy(update={"tta": False, "bootstrap_resamples": 50})
    return params.model_copy(update={"evaluate": quick})


@pytest.mark.skipif(not (SHARED / "datasets/dataset2-master").is_dir(), reason="dataset2 not beside the repo")
def test_the_evaluate_stage_scores_real_fields_through_localiser_and_model(tmp_path, monkeypatch):
    """Two real TEST_SIMPLE fields per class, and in TEST also a blank field whose cell cannot be
    found, a lymphocyte field copied from a photo the model trained on and one from that photo's
    re-shot twin (both left out, counted): a model that always says lymphocyte is right on exactly
    the lymphocyte fields it is scored on."""
    real = SHARED / "datasets/dataset2-master"
    picked = pd.read_csv(real / "test_sources.csv").groupby("class").head(2)
    root, sources = tmp_path / "dataset2", {}
    for set_name in SETS:
        for rel, photo in zip(picked["test_simple_file"], picked["bccd_image"], strict=True):
            (root / "images" / set_name / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(real / "images/TEST_SIMPLE" / rel, root / "images" / set_name / rel)
            sources[f"images/{set_name}/{rel}"] = photo
    monocyte = picked[picked["class"] == "MONOCYTE"].iloc[0]
    blank = monocyte["test_simple_file"].replace(".jpeg", "0.jpeg")
    Image.new("RGB", (320, 240), "white").save(root / "images/TEST" / blank)
    seen_copy = "images/TEST/LYMPHOCYTE/_0_77.jpeg"
    twin_copy = "images/TEST/LYMPHOCYTE/_0_78.jpeg"
    for copy in (seen_copy, twin_copy):
        shutil.copy(root / next(f for f in sources if "TEST/LYMPHOCYTE" in f), root / copy)
    write_fields(
        root / "fields.csv",
        {**sources, f"images/TEST/{blank}": monocyte["bccd_image"], seen_copy: "BloodImage_00400.jpg",
         twin_copy: "BloodImage_00402.jpg"},
    )  # fmt: skip
    twins = [("BloodImage_00400.jpg", "BloodImage_00402.jpg")]

    params = quick_params()
    monkeypatch.chdir(tmp_path)
    paths.RESIZED.mkdir(parents=True)
    for split, source in (("train", "BloodImage_00400.jpg"), ("val", "BloodImage_00401.jpg")):
        np.savez(paths.resized_split(split), source_image=np.array([source]))
    names = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]
    out, answers = score_published(always(2), params, head("type", names), root, root / "fields.csv", twins)

    simple, test = out["TEST_SIMPLE"], out["TEST"]
    assert simple["n_images"] == 8 and test["n_images"] == 9  # the seen photo's copies left out
    assert simple["n_sources"] == simple["n_scenes"] == 8 and test["n_sources"] == test["n_scenes"] == 8
    assert (simple["fields_left_out"], test["fields_left_out"]) == (0, 2)
    assert simple["photo_majority_accuracy"] == test["photo_majority_accuracy"] == pytest.approx(2 / 8)
    assert simple["cells_found"] == 1.0 and test["cells_found"] == pytest.approx(8 / 9)
    assert test["missed_per_class"] == {"neutrophil": 0, "eosinophil": 0, "lymphocyte": 0, "monocyte": 1}
    assert simple["accuracy"] == pytest.approx(2 / 8) and test["accuracy"] == pytest.approx(2 / 9)
    assert simple["per_class"]["lymphocyte"]["recall"] == 1.0
    assert simple["nucleus_accuracy"] == pytest.approx(4 / 8)  # lymphocytes and monocytes are mono
    assert test["nucleus_accuracy"] == pytest.approx(4 / 9)  # and the missed monocyte is wrong
    assert len(answers) == 19 and set(answers["set"]) == set(SETS)
    assert answers.loc[~answers["scored"], "file"].tolist() == [seen_copy, twin_copy]
    missed = answers[answers["scored"] & (answers["predicted"] == "")]
    assert list(missed["file"]) == [f"images/TEST/{blank}"] and list(missed["box"]) == [""]
    assert (answers.loc[answers["predicted"] != "", "predicted"] == "lymphocyte").all()
    assert (
        dict(zip(answers["file"], answers["source_image"], strict=True))[f"images/TEST/{blank}"]
        == (monocyte["bccd_image"])
    )

    np.savez(paths.resized_split("val"), source_image=picked["bccd_image"].to_numpy(str)[:1])
    with pytest.raises(PipelineError, match="trained on 1 of their source photos"):
        score_published(always(2), params, head("type", names), root, root / "fields.csv")
    np.savez(paths.resized_split("val"), source_image=np.array(["BloodImage_00401.jpg"]))
    held_out_twin = [("BloodImage_00401.jpg", picked["bccd_image"].iloc[0])]  # a re-shot of a held-out photo
    with pytest.raises(PipelineError, match="trained on 1 of their source photos"):
        score_published(always(2), params, head("type", names), root, root / "fields.csv", held_out_twin)


@pytest.mark.parametrize("name", ["type", "nucleus"])
def test_each_field_is_scored_by_its_best_cell(tmp_path, monkeypatch, name):
    """A field with a white cell (found first, the best) and a black one (second), and a model that
    calls bright crops class 0 and dark ones its last class: the field gets class 0."""
    from pipeline.inference import classify
    from pipeline.inference.localize import Detection

    classes = {"type": ["neutrophil", "eosinophil", "lymphocyte", "monocyte"], "nucleus": ["poly", "mono"]}
    names = classes[name]
    img = np.zeros((240, 320, 3), np.uint8)
    img[:, 160:] = 255
    root = make_dataset2(tmp_path / "d2", {"images/TEST_SIMPLE/NEUTROPHIL/_0_1.jpeg": "BloodImage_00001.jpg"})
    Image.fromarray(img).save(root / "images/TEST_SIMPLE/NEUTROPHIL/_0_1.jpeg")
    boxes = [Detection((200, 80, 280, 160), 0.9), Detection((40, 80, 120, 160), 0.5)]
    monkeypatch.setattr(classify, "find_wbcs", lambda rgb, params: boxes)

    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    kernel = np.zeros((3, len(names)), np.float32)
    kernel[:, 0] = 0.1  # a white crop: logit 76 for class 0
    bias = np.zeros(len(names), np.float32)
    bias[-1] = 5.0  # a black crop: only the last class's bias
    dense = keras.layers.Dense(len(names), "softmax", name=name)
    model = keras.Model(inputs, {name: dense(pooled)})
    dense.set_weights([kernel, bias])

    monkeypatch.chdir(tmp_path)
    paths.RESIZED.mkdir(parents=True)
    for split in ("train", "val"):
        np.savez(paths.resized_split(split), source_image=np.array(["BloodImage_00400.jpg"]))
    sources = root / "fields.csv"
    out = score_published(model, quick_params(), head(name, TYPES), root, sources)[0]["TEST_SIMPLE"]
    assert out["accuracy"] == 1.0 and out["cells_found"] == 1.0
    boxes.reverse()  # the black cell first: the field is called the last class, wrongly
    out = score_published(model, quick_params(), head(name, TYPES), root, sources)[0]["TEST_SIMPLE"]
    assert out["accuracy"] == 0.0 and out["confusion"][0][-1] == 1
