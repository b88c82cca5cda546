import keras
import numpy as np
import pytest

from pipeline.core.classes import class_names, task_heads
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.inference.tta import predict, views
from pipeline.model.batches import Batches
from pipeline.model.train import compile_model, fit
from pipeline.model.zoo import BACKBONES, build_model
from tests.helpers import REPO, TYPES, tiny

TRAIN = load_params(REPO / "params.yaml").train


def test_published_parameter_counts():
    assert (
        build_model(
            "fischbach", (60, 80, 3), task_heads("type", class_names(True)), dropout=0.4
        ).count_params()
        == 423_237
    )
    assert (
        build_model("lenet", (120, 160, 3), task_heads("nucleus", TYPES), dropout=0.7).count_params()
        == 987_298
    )


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_model_builds_and_trains_a_step(name):
    p = TRAIN.model_copy(update={"model": name, "task": "multitask", "epochs": 1, "batch_size": 4})
    model = build_model(name, (32, 32, 3), task_heads("multitask", TYPES), dropout=0.3, l2=1e-4)
    compile_model(model, p)
    before = [w.copy() for w in model.get_weights()]
    history = fit(model, tiny(8), tiny(4, seed=1), p)
    assert np.isfinite(history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    probs = predict(model, tiny(5)["x"])
    assert probs["type"].shape == (5, 4) and probs["nucleus"].shape == (5, 2)
    np.testing.assert_allclose(probs["type"].sum(axis=1), 1, rtol=1e-4)


def test_single_head_task_predicts_a_dict():
    model = build_model("lenet", (32, 32, 3), task_heads("nucleus", TYPES), dropout=0.5)
    assert set(predict(model, tiny(3)["x"])) == {"nucleus"}


def test_unknown_model_and_missing_weights_file_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="unknown model 'resnet'"):
        build_model("resnet", (32, 32, 3), task_heads("type", TYPES), dropout=0.5)
    with pytest.raises(PipelineError, match="no such weights file"):
        build_model(
            "mobilenetv2", (32, 32, 3), task_heads("type", TYPES), dropout=0.5, weights=str(tmp_path / "w.h5")
        )


def test_local_weights_file_is_loaded(tmp_path):
    import keras

    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    base.save_weights(tmp_path / "base.weights.h5")
    model = build_model(
        "mobilenetv2",
        (32, 32, 3),
        task_heads("type", TYPES),
        dropout=0.5,
        weights=str(tmp_path / "base.weights.h5"),
    )
    loaded = model.get_layer(base.name).get_weights()
    for a, b in zip(loaded, base.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_batches_cover_every_sample_once_per_epoch_and_reshuffle():
    data = tiny(10)
    batches = Batches(data["x"], {"type": data["y"]}, 4, shuffle=True, seed=3)
    assert len(batches) == 3

    def epoch(e: int) -> list[int]:
        batches.set_epoch(e)
        return [int(i) for k in range(len(batches)) for i in batches[k][1]["type"]]

    first, second = epoch(0), epoch(1)
    assert sorted(first) == sorted(second) == sorted(data["y"].tolist())
    assert first != second and epoch(0) == first
    assert batches[0][0].dtype == np.float32


def test_tta_views_are_the_symmetries_of_the_crop():
    square = np.arange(2 * 3 * 3).reshape(2, 3, 3, 1)
    transformed = [view(square) for view in views(square)]
    assert len({t.tobytes() for t in transformed}) == 8
    assert all(t.shape == square.shape and sorted(t.ravel()) == sorted(square.ravel()) for t in transformed)
    assert len(views(np.zeros((1, 2, 3, 1)))) == 4


def test_tta_prediction_is_the_mean_over_the_views():
    model = build_model("lenet", (32, 32, 3), task_heads("type", TYPES), dropout=0.5)
    x = tiny(6)["x"]
    averaged = predict(model, x, tta=True)["type"]
    manual = np.mean([predict(model, np.ascontiguousarray(v(x)))["type"] for v in views(x)], axis=0)
    np.testing.assert_allclose(averaged, manual, rtol=1e-5)
    np.testing.assert_allclose(averaged.sum(axis=1), 1, rtol=1e-5)
    assert not np.allclose(averaged, predict(model, x)["type"])


def test_tta_prediction_in_padded_batches_is_independent_of_the_cells_beside():
    model = build_model("lenet", (32, 32, 3), task_heads("multitask", TYPES), dropout=0.5)
    x = tiny(20)["x"]
    whole = predict(model, x, batch_size=8, tta=True)
    assert set(whole) == {"type", "nucleus"} and len(whole["type"]) == 20
    alone = predict(model, x[8:12], batch_size=8, tta=True)  # the same places, other cells beside
    assert all(np.array_equal(whole[h][8:12], alone[h]) for h in whole)
    np.testing.assert_allclose(whole["type"], predict(model, x, batch_size=3, tta=True)["type"], rtol=1e-5)
    assert predict(model, x[:0]) == {}


@pytest.mark.parametrize("name", ["depthwise", "mobilenetv2"])
def test_bn_momentum_reaches_every_batch_norm_layer(name):
    from pipeline.model.zoo import _layers

    model = build_model(name, (32, 32, 3), task_heads("type", TYPES), dropout=0.5, bn_momentum=0.9)
    norms = [layer for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.momentum == 0.9 for layer in norms)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_model_saves_and_loads_in_safe_mode(name, tmp_path):
    model = build_model(name, (32, 32, 3), task_heads("type", TYPES), dropout=0.5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    x = tiny(2)["x"].astype("float32")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0)["type"], model.predict(x, verbose=0)["type"], rtol=1e-5
    )
