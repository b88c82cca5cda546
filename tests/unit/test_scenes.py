import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.core.paths import BCCD_TWINS
from pipeline.data.scenes import load_twins, scene_of, scenes
from pipeline.data.split import split_crops
from pipeline.evaluation.metrics import bootstrap_intervals, headline_metrics
from tests.helpers import REPO


def test_twins_chain_into_one_scene_and_other_photos_stay_their_own():
    mapping = scene_of(["c.jpg", "x.jpg", "a.jpg"], [("b.jpg", "c.jpg"), ("a.jpg", "b.jpg")])
    assert mapping["a.jpg"] == mapping["b.jpg"] == mapping["c.jpg"] == "a.jpg"
    assert mapping["x.jpg"] == "x.jpg"
    assert list(scenes(np.array(["x.jpg", "c.jpg"]), [("a.jpg", "c.jpg")])) == ["x.jpg", "a.jpg"]
    assert list(scenes(["x.jpg", "y.jpg"], [])) == ["x.jpg", "y.jpg"]


def test_a_bad_twins_table_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "twins.csv"
    bad.write_text("photo,other\na.jpg,b.jpg\n")
    with pytest.raises(PipelineError, match=r"twins\.csv: the twins table lacks column\(s\) twin"):
        load_twins(bad)
    bad.write_text("photo,twin\na.jpg,\n")
    with pytest.raises(PipelineError, match=r"twins\.csv: a twins row has an empty photo name"):
        load_twins(bad)
    with pytest.raises(PipelineError, match=r"missing\.csv: cannot read the twins table"):
        load_twins(tmp_path / "missing.csv")


def test_the_committed_twins_are_bccd_photo_pairs():
    twins = load_twins(REPO / BCCD_TWINS)
    assert len(twins) == 20 and all(a < b for a, b in twins)
    assert all(p.startswith("BloodImage_") and p.endswith(".jpg") for pair in twins for p in pair)
    assert ("BloodImage_00231.jpg", "BloodImage_00256.jpg") in twins  # once split across val and train


@pytest.mark.parametrize("strategy", ["stratified", "kfold"])
def test_the_split_keeps_twins_on_one_side(strategy):
    """40 photos of one crop each, no near-duplicate by hash; with every photo twinned to the one
    20 after it, each pair lands in one split, for every seed (without the twins some pair is cut)."""
    classes = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]
    crops = pd.DataFrame(
        {"crop_id": [f"c{i}" for i in range(40)], "source_image": [f"p{i:02d}.jpg" for i in range(40)],
         "label": [classes[i % 4] for i in range(40)]}
    )  # fmt: skip
    noise = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    images = {f"c{i}": Image.fromarray(noise[i]) for i in range(40)}
    twins = [(f"p{i:02d}.jpg", f"p{i + 20:02d}.jpg") for i in range(20)]
    p = load_params(REPO / "params.yaml").split
    p = p.model_copy(update={"strategy": strategy, "val_fraction": 0.25})
    cut = 0
    for seed in range(5):
        q = p.model_copy(update={"seed": seed})
        side = split_crops(crops, images, q, [], twins).set_index("source_image")["split"]
        assert all(side[a] == side[b] for a, b in twins)
        alone = split_crops(crops, images, q, []).set_index("source_image")["split"]
        cut += sum(alone[a] != alone[b] for a, b in twins)
    assert cut > 0


def test_intervals_resample_a_scene_as_one_draw():
    """Two photos, one wrong and one right: as two scenes the bootstrap sees 0, 0.5 and 1; as one
    scene (twins) every resample holds both, so the interval is the point."""
    truth, pred = np.array([0, 1]), np.array([0, 0])
    metric = {"accuracy": headline_metrics(2)["accuracy"]}
    kw = {"resamples": 200, "confidence": 0.95, "seed": 0}
    apart = bootstrap_intervals(truth, pred, scenes(["a", "b"], []), metric, **kw)
    joined = bootstrap_intervals(truth, pred, scenes(["a", "b"], [("a", "b")]), metric, **kw)
    assert apart["accuracy"][0] == 0.0 and apart["accuracy"][1] == 1.0
    assert joined["accuracy"] == pytest.approx((0.5, 0.5))
