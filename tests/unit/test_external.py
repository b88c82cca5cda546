"""Another lab's cells (PBC): the labelled folders read strictly, and both scoring modes."""

import numpy as np
import pytest
from PIL import Image

from pipeline.core.classes import CLASSES, head
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.evaluation.external import NOT_FOUND, labelled_images, score_external
from tests.helpers import REPO, always, smear

PARAMS = load_params(REPO / "params.yaml")


def cells(root, per_class: int = 2):
    for i, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            smear(10 * i + k, (90, 90), [(20, 20, 70, 70)]).save(root / name / f"c{k}.jpg", quality=95)
    return root


def test_labelled_folders_are_read_and_bad_ones_named(tmp_path):
    root = cells(tmp_path / "set")
    table = labelled_images(root, CLASSES)
    assert len(table) == 8 and table["class"].value_counts().to_dict() == dict.fromkeys(CLASSES, 2)
    (root / "basophil").mkdir()
    with pytest.raises(PipelineError, match=r"basophil: not a class folder"):
        labelled_images(root, CLASSES)
    (root / "basophil").rmdir()
    (root / "monocyte" / "notes.txt").write_text("x")
    with pytest.raises(PipelineError, match=r"notes\.txt: not an image file"):
        labelled_images(root, CLASSES)
    (root / "monocyte" / "notes.txt").unlink()
    for f in (root / "lymphocyte").iterdir():
        f.unlink()
    with pytest.raises(PipelineError, match=r"lymphocyte: empty class folder"):
        labelled_images(root, CLASSES)


def test_both_modes_score_every_cell_and_a_flat_image_is_no_cell(tmp_path):
    root = cells(tmp_path / "set")
    flat = np.zeros((90, 90, 3), np.uint8)
    flat[:] = (120, 60, 170)  # a uniform purple square: stain colour, no chromatin
    Image.fromarray(flat).save(root / "monocyte" / "flat.png")
    evaluate = PARAMS.evaluate.model_copy(update={"bootstrap_resamples": 20})
    quick = PARAMS.model_copy(update={"evaluate": evaluate})
    reports, rows = score_external(always(2), quick, head("type", CLASSES), root, CLASSES, "pbc")
    whole, found = reports["whole_image"], reports["localiser"]
    assert whole["n_images"] == found["n_images"] == 9
    assert whole["cells_found"] == 1.0 and whole["accuracy"] == pytest.approx(2 / 9)  # the lymphocytes
    assert found["cells_found"] == pytest.approx(8 / 9)  # the flat square is not a cell
    assert found["missed_per_class"]["monocyte"] == 1 and found["accuracy"] == pytest.approx(2 / 9)
    assert rows["localiser"]["predicted"].tolist().count(NOT_FOUND) == 1
    assert set(rows["whole_image"]["predicted"]) == {"lymphocyte"}
    assert len(whole["accuracy_ci"]) == 2


def test_calibrated_mode_scores_each_half_by_statistics_of_the_other(tmp_path, monkeypatch):
    """Two-fold: no image is scored by a model calibrated on a set that holds it. Every image's
    crop differs (its own smear), so a crop tells which image it is."""
    from pipeline.core.classes import task_heads
    from pipeline.evaluation import external
    from pipeline.model.zoo import build_model

    root = cells(tmp_path / "set", per_class=4)
    calibrated_on, scored = [], []
    calibrate, best_labels = external.calibrate, external.best_labels

    def calibrate_on(model, x, **kwargs):
        calibrated_on.append({cell.tobytes() for cell in x})
        return calibrate(model, x, **kwargs)

    def answer(model, found, *args):  # a single model: only its calibrated copies answer here
        scored.append({cell.tobytes() for cell in found.x})
        return best_labels(model, found, *args)

    monkeypatch.setattr(external, "calibrate", calibrate_on)
    monkeypatch.setattr(external, "best_labels", answer)
    evaluate = PARAMS.evaluate.model_copy(update={"bootstrap_resamples": 20, "calibrate": True})
    model = build_model("depthwise", (32, 32, 3), task_heads("type", CLASSES), dropout=0.5)
    reports, rows = score_external(model, PARAMS.model_copy(update={"evaluate": evaluate}),
                                   head("type", CLASSES), root, CLASSES, "pbc")  # fmt: skip
    assert reports["calibrated"]["n_images"] == 16 and len(rows["calibrated"]) == 16
    assert len(calibrated_on) == len(scored) == external.CALIBRATION_FOLDS
    for basis, judged in zip(calibrated_on, scored, strict=True):
        assert judged and basis and not basis & judged
    assert set().union(*scored) == set().union(*calibrated_on)  # each image here has one cell
    off = PARAMS.evaluate.model_copy(update={"bootstrap_resamples": 20, "calibrate": False})
    reports, _ = score_external(model, PARAMS.model_copy(update={"evaluate": off}), head("type", CLASSES),
                                root, CLASSES, "pbc")  # fmt: skip
    assert "calibrated" not in reports


def test_an_ensemble_is_also_scored_by_its_first_k_members(tmp_path):
    """Through the localiser, each k short of all answers as the average of the first k members on
    the whole ensemble's cells; all k is the mode's own score. Members whose votes differ per k."""
    from pipeline.model.ensemble import average

    root = tmp_path / "set"
    for i, (name, n) in enumerate(zip(CLASSES, (1, 2, 4, 1), strict=True)):
        (root / name).mkdir(parents=True)
        for k in range(n):
            smear(10 * i + k, (90, 90), [(20, 20, 70, 70)]).save(root / name / f"c{k}.jpg", quality=95)
    # first 1: lymphocyte; first 2: eosinophil outvotes it; first 3: monocyte outvotes both
    ensemble = average([always(2, strength=3.0), always(1), always(3, strength=6.0)])
    evaluate = PARAMS.evaluate.model_copy(update={"bootstrap_resamples": 20})
    reports, rows = score_external(ensemble, PARAMS.model_copy(update={"evaluate": evaluate}),
                                   head("type", CLASSES), root, CLASSES, "pbc")  # fmt: skip
    found = rows["localiser"][rows["localiser"]["predicted"] != NOT_FOUND]  # a cell missed is wrong
    right = [(found["actual"] == c).sum() / 8 for c in ("lymphocyte", "eosinophil", "monocyte")]
    assert right[0] > right[1] > right[2] > 0  # so each k's score tells which members answered
    curve = reports["localiser"]["members"]
    assert [curve[k]["accuracy"] for k in ("1", "2", "3")] == pytest.approx(right)
    assert curve["3"]["accuracy"] == reports["localiser"]["accuracy"]
    assert "members" not in reports["whole_image"]
    single, _ = score_external(always(2), PARAMS.model_copy(update={"evaluate": evaluate}),
                               head("type", CLASSES), root, CLASSES, "pbc")  # fmt: skip
    assert "members" not in single["localiser"]
