import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.models import BACKBONES, build_model
from pipeline.params import load_params
from pipeline.train import Batches, compile_model, fit, heads_for, predict
from tests.conftest import REPO

CLASSES = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]
TRAIN = load_params(REPO / "params.yaml").train


def tiny(n: int, shape=(32, 32, 3), seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    return {
        "x": rng.integers(0, 256, (n, *shape), dtype=np.uint8),
        "y": y,
        "nucleus": (y >= 2).astype(np.int64),
        "classes": np.array(CLASSES),
    }


def test_published_parameter_counts():
    assert build_model("fischbach", (60, 80, 3), {"type": 5}, dropout=0.4).count_params() == 423_237
    assert build_model("lenet", (120, 160, 3), {"nucleus": 2}, dropout=0.7).count_params() == 987_298


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_model_builds_and_trains_a_step(name):
    p = TRAIN.model_copy(update={"model": name, "task": "multitask", "epochs": 1, "batch_size": 4})
    model = build_model(name, (32, 32, 3), heads_for("multitask", CLASSES), dropout=0.3, l2=1e-4)
    compile_model(model, p)
    before = [w.copy() for w in model.get_weights()]
    history = fit(model, tiny(8), tiny(4, seed=1), p)
    assert np.isfinite(history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    probs = predict(model, tiny(5)["x"])
    assert probs["type"].shape == (5, 4) and probs["nucleus"].shape == (5, 2)
    np.testing.assert_allclose(probs["type"].sum(axis=1), 1, rtol=1e-4)


def test_single_head_task_predicts_a_dict():
    model = build_model("lenet", (32, 32, 3), heads_for("nucleus", CLASSES), dropout=0.5)
    assert set(predict(model, tiny(3)["x"])) == {"nucleus"}


def test_unknown_model_and_missing_weights_file_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="unknown model 'resnet'"):
        build_model("resnet", (32, 32, 3), {"type": 4}, dropout=0.5)
    with pytest.raises(PipelineError, match="no such weights file"):
        build_model("mobilenetv2", (32, 32, 3), {"type": 4}, dropout=0.5, weights=str(tmp_path / "w.h5"))


def test_local_weights_file_is_loaded(tmp_path):
    import keras

    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    base.save_weights(tmp_path / "base.weights.h5")
    model = build_model(
        "mobilenetv2", (32, 32, 3), {"type": 4}, dropout=0.5, weights=str(tmp_path / "base.weights.h5")
    )
    loaded = model.get_layer(base.name).get_weights()
    for a, b in zip(loaded, base.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_batches_cover_every_sample_once_per_epoch_and_reshuffle():
    data = tiny(10)
    batches = Batches(data["x"], {"type": data["y"]}, 4, shuffle=True, seed=3)
    assert len(batches) == 3

    def epoch() -> list[int]:
        seen = [int(i) for k in range(len(batches)) for i in batches[k][1]["type"]]
        batches.on_epoch_end()
        return seen

    first, second = epoch(), epoch()
    assert sorted(first) == sorted(second) == sorted(data["y"].tolist())
    assert batches[0][0].dtype == np.float32
