"""Calibrating a model to a lab without labels (AdaBN): batch-norm statistics from the lab's cells."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from pipeline.core.classes import task_heads
from pipeline.core.errors import PipelineError
from pipeline.model.calibrate import MIN_CELLS, calibratable, calibrate, norm_layers
from pipeline.model.ensemble import average, members_of
from pipeline.model.zoo import build_model
from tests.helpers import REPO

NAMES = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]


def affine_net(seed: int) -> keras.Model:
    """1x1 convolutions (affine per pixel) then batch norm: a global change of brightness and
    contrast of the input is an affine change of every feature the first norm sees. Raw pixel
    values keep the features' variance far above batch norm's epsilon, which would not scale."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 1)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(5, 1)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, {"type": keras.layers.Dense(4, "softmax", name="type")(x)})


def cells(n: int, seed: int, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(40, 160, (n, 8, 8, 3))
    return np.clip(x * gain + offset, 0, 255).astype(np.float32)


def test_statistics_come_from_the_cells_and_the_model_is_left_alone():
    model = affine_net(0)
    before = [w.copy() for w in model.get_weights()]
    x = cells(64, 1)
    tuned = calibrate(model, x)
    first = norm_layers(tuned)[0]
    features = keras.Model(tuned.inputs, first.input).predict(x, verbose=0)
    np.testing.assert_allclose(first.moving_mean.numpy(), features.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first.moving_variance.numpy(), features.var((0, 1, 2)), rtol=1e-3, atol=1e-7)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # the trained model is not touched
    assert norm_layers(model)[0].moving_mean.numpy().tolist() == [0.0] * 6


def by_prefixes(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """The statistics calibration must give, computed the plain way: each norm's input from the
    cells through everything before it, the earlier norms already set."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    found = []
    for norm in norm_layers(copy):
        features = keras.Model(copy.inputs, norm.input).predict(x, batch_size=64, verbose=0)
        mean, var = features.mean((0, 1, 2), dtype=np.float64), features.var((0, 1, 2), dtype=np.float64)
        norm.moving_mean.assign(mean.astype(np.float32))
        norm.moving_variance.assign(var.astype(np.float32))
        found += [norm.moving_mean.numpy(), norm.moving_variance.numpy()]
    return found


def skip_net(seed: int) -> keras.Model:
    """Like `affine_net`, with a skip connection from the cells around the first norm's input."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 1)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(5, 1)(keras.layers.Activation("relu")(x))
    x = keras.layers.Add()([x, keras.layers.Conv2D(5, 1)(inputs)])
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(5, 1)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, {"type": keras.layers.Dense(4, "softmax", name="type")(x)})


def test_norms_are_calibrated_in_order_segment_by_segment_as_from_the_cells():
    """Each norm's input is computed on from the previous norm's (every layer run once), or from
    the cells where a skip connection reaches around it: the plain way's statistics, bit for bit."""
    x = cells(150, 7, gain=0.7, offset=40)  # 150: batches of 64 and a last one of 22
    for model in (affine_net(5), skip_net(6), build_model("depthwise", (32, 32, 3), task_heads("type", NAMES),
                                                         dropout=0.5)):  # fmt: skip
        data = x if model.input_shape[1] == 8 else np.resize(x, (150, 32, 32, 3))
        norms = norm_layers(calibrate(model, data))
        got = [v.numpy() for n in norms for v in (n.moving_mean, n.moving_variance)]
        for a, b in zip(got, by_prefixes(model, data), strict=True):
            np.testing.assert_array_equal(a, b)


def test_another_labs_brightness_and_contrast_are_undone():
    """A known answer: a lab whose cells are the same cells at another gain and offset gets, once
    calibrated on its own cells, the answers the first lab gets once calibrated on its own."""
    model = affine_net(1)
    here, there = cells(128, 2), cells(128, 2, gain=0.6, offset=70)
    at_home = calibrate(model, here).predict(here, verbose=0)["type"]
    away = model.predict(there, verbose=0)["type"]
    adapted = calibrate(model, there).predict(there, verbose=0)["type"]
    np.testing.assert_allclose(adapted, at_home, atol=1e-4)
    assert np.abs(away - at_home).max() > 1e-2  # without calibration the other lab's answers differ


def test_an_ensemble_is_calibrated_member_by_member():
    members = [affine_net(2), affine_net(3)]
    ensemble = average(members)
    x = cells(64, 4, gain=0.5, offset=90)
    tuned = calibrate(ensemble, x)
    assert [m.name for m in members_of(tuned)] == ["member_0", "member_1"]
    alone = [calibrate(m, x).predict(x, verbose=0)["type"] for m in members]
    np.testing.assert_allclose(tuned.predict(x, verbose=0)["type"], np.mean(alone, axis=0), atol=1e-5)


def test_too_few_cells_or_nothing_to_calibrate_is_a_clear_error():
    with pytest.raises(PipelineError, match=rf"calibrate: 5 cells found; at least {MIN_CELLS} are needed"):
        calibrate(affine_net(0), cells(5, 0))
    lenet = build_model("lenet", (32, 32, 3), task_heads("type", NAMES), dropout=0.5)
    assert not calibratable(lenet) and calibratable(build_model(
        "depthwise", (32, 32, 3), task_heads("type", NAMES), dropout=0.5))  # fmt: skip
    with pytest.raises(PipelineError, match=r"has no batch-norm layer to calibrate"):
        calibrate(lenet, np.zeros((40, 32, 32, 3), np.uint8))


def wbc(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True,
                          text=True, env=os.environ, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def depthwise_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "depthwise.keras"
    build_model("depthwise", (32, 32, 3), task_heads("type", NAMES), dropout=0.5).save(path)
    return path


def test_calibrate_command_writes_a_model_predict_takes(bccd, depthwise_file, tmp_path):
    photos = sorted((bccd / "JPEGImages").glob("*.jpg"))[:40]
    out = tmp_path / "lab" / "calibrated.keras"
    done = wbc(["calibrate", *map(str, photos), "--model", str(depthwise_file), "--out", str(out)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "calibrating on" in done.stderr and "from 40 images" in done.stderr
    tuned = keras.models.load_model(out)
    assert not np.allclose(norm_layers(tuned)[0].moving_mean.numpy(), 0.0)
    done = wbc(["predict", *map(str, photos[:3]), "--model", str(out)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["differential"]["cells"] >= 3
    done = wbc(["predict", *map(str, photos), "--model", str(depthwise_file), "--calibrate"])
    assert done.returncode == 0 and "calibrating on" in done.stderr, done.stderr[-2000:]


def test_calibrate_command_refuses_too_few_cells_and_writes_nothing(bccd, depthwise_file, tmp_path):
    photos = sorted((bccd / "JPEGImages").glob("*.jpg"))[:3]
    out = tmp_path / "calibrated.keras"
    done = wbc(["calibrate", *map(str, photos), "--model", str(depthwise_file), "--out", str(out)])
    assert done.returncode != 0 and f"at least {MIN_CELLS} are needed" in done.stderr
    assert not out.exists() and not list(tmp_path.iterdir())
    done = wbc(["calibrate", str(photos[0]), "--model", str(depthwise_file), "--out", str(tmp_path / "m.h5")])
    assert done.returncode != 0 and "m.h5: the calibrated model is a .keras file" in done.stderr
