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
from pipeline.evaluation.published import SETS, check_unseen, fields, score_published
from tests.helpers import REPO, SHARED, TYPES, always


def make_dataset2(root, simple: dict[str, str], test: list[str]):
    """simple: TEST_SIMPLE relative file -> BCCD photo; test: TEST relative files."""
    for set_name, files in (("TEST_SIMPLE", list(simple)), ("TEST", test)):
        for rel in files:
            path = root / "images" / set_name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 6)).save(path)
    lines = ["test_simple_file,bccd_image,class"] + [
        f"{f},{img},{f.split('/')[0]}" for f, img in simple.items()
    ]
    (root / "test_sources.csv").write_text("\n".join(lines) + "\n")
    return root


def test_every_test_field_maps_to_the_source_of_its_simple_field(tmp_path):
    root = make_dataset2(
        tmp_path,
        {"MONOCYTE/_0_11.jpeg": "BloodImage_00001.jpg", "MONOCYTE/_1_12.jpeg": "BloodImage_00002.jpg",
         "EOSINOPHIL/_0_13.jpeg": "BloodImage_00003.jpg"},
        ["MONOCYTE/_0_901.jpeg", "MONOCYTE/_1_902.jpeg", "MONOCYTE/_0_903.jpeg", "EOSINOPHIL/_0_904.jpeg"],
    )  # fmt: skip
    table = fields(root, root / "test_sources.csv")
    test = table[table["set"] == "TEST"]
    test = test.set_index(test["path"].map(lambda p: p.name))
    assert test.loc["_0_901.jpeg", "source_image"] == "BloodImage_00001.jpg"
    assert test.loc["_1_902.jpeg", "source_image"] == "BloodImage_00002.jpg"
    assert test.loc["_0_904.jpeg", "source_image"] == "BloodImage_00003.jpg"
    assert set(table["class"]) == {"monocyte", "eosinophil"}
    (root / "images/TEST/MONOCYTE/_7_999.jpeg").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"_7_999\.jpeg: its source is not in"):
        fields(root, root / "test_sources.csv")


@pytest.mark.skipif(not (SHARED / "datasets/dataset2-master").is_dir(), reason="dataset2 not beside the repo")
def test_the_real_sets_have_69_sources_and_their_documented_sizes():
    real = SHARED / "datasets/dataset2-master"
    table = fields(real, real / "test_sources.csv")
    assert table.groupby("set").size().to_dict() == {"TEST": 2487, "TEST_SIMPLE": 71}
    assert table.groupby("set")["source_image"].nunique().to_dict() == {"TEST": 69, "TEST_SIMPLE": 69}


def test_a_model_that_saw_a_test_source_is_refused():
    check_unseen({"BloodImage_00005.jpg"}, ["BloodImage_00001.jpg"])
    with pytest.raises(PipelineError, match=r"trained on 1 of their source photos \(BloodImage_00001\.jpg"):
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


def quick_params():
    """The repository's params with TTA off (these tests' models answer alike for every view) and
    50 bootstrap resamples (sklearn's metrics cost ~8 ms a call)."""
    params = load_params(REPO / "params.yaml")
    quick = params.evaluate.model_copy(update={"tta": False, "bootstrap_resamples": 50})
    return params.model_copy(update={"evaluate": quick})


@pytest.mark.skipif(not (SHARED / "datasets/dataset2-master").is_dir(), reason="dataset2 not beside the repo")
def test_the_evaluate_stage_scores_real_fields_through_localiser_and_model(tmp_path, monkeypatch):
    """Two real TEST_SIMPLE fields per class, and in TEST also a blank field whose cell cannot be
    found: a model that always says lymphocyte is right on exactly the lymphocyte fields it saw."""
    real = SHARED / "datasets/dataset2-master"
    picked = pd.read_csv(real / "test_sources.csv").groupby("class").head(2)
    root = tmp_path / "dataset2"
    for set_name in SETS:
        for rel in picked["test_simple_file"]:
            (root / "images" / set_name / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(real / "images/TEST_SIMPLE" / rel, root / "images" / set_name / rel)
    picked.to_csv(root / "test_sources.csv", index=False)
    blank = picked["test_simple_file"][picked["class"] == "MONOCYTE"].iloc[0].replace(".jpeg", "0.jpeg")
    Image.new("RGB", (320, 240), "white").save(root / "images/TEST" / blank)

    params = quick_params()
    monkeypatch.chdir(tmp_path)
    paths.RESIZED.mkdir(parents=True)
    for split, source in (("train", "BloodImage_00400.jpg"), ("val", "BloodImage_00401.jpg")):
        np.savez(paths.resized_split(split), source_image=np.array([source]))
    names = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]
    out = score_published(always(2), params, head("type", names), root, root / "test_sources.csv")

    simple, test = out["TEST_SIMPLE"], out["TEST"]
    assert simple["n_images"] == 8 and test["n_images"] == 9
    assert simple["cells_found"] == 1.0 and test["cells_found"] == pytest.approx(8 / 9)
    assert test["missed_per_class"] == {"neutrophil": 0, "eosinophil": 0, "lymphocyte": 0, "monocyte": 1}
    assert simple["accuracy"] == pytest.approx(2 / 8) and test["accuracy"] == pytest.approx(2 / 9)
    assert simple["per_class"]["lymphocyte"]["recall"] == 1.0
    assert simple["nucleus_accuracy"] == pytest.approx(4 / 8)  # lymphocytes and monocytes are mono
    assert test["nucleus_accuracy"] == pytest.approx(4 / 9)  # and the missed monocyte is wrong

    np.savez(paths.resized_split("val"), source_image=picked["bccd_image"].to_numpy(str)[:1])
    with pytest.raises(PipelineError, match="trained on 1 of their source photos"):
        score_published(always(2), params, head("type", names), root, root / "test_sources.csv")


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
    root = make_dataset2(tmp_path / "d2", {"NEUTROPHIL/_0_1.jpeg": "BloodImage_00001.jpg"}, [])
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
    sources = root / "test_sources.csv"
    out = score_published(model, quick_params(), head(name, TYPES), root, sources)["TEST_SIMPLE"]
    assert out["accuracy"] == 1.0 and out["cells_found"] == 1.0
    boxes.reverse()  # the black cell first: the field is called the last class, wrongly
    out = score_published(model, quick_params(), head(name, TYPES), root, sources)["TEST_SIMPLE"]
    assert out["accuracy"] == 0.0 and out["confusion"][0][-1] == 1
