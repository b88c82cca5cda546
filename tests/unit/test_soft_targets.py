"""Soft targets (`train.label_smoothing`, `train.mixup`): mixup blends each training image with
another of its batch and their one-hot labels by the same weight, drawn from (seed, epoch, batch);
either option trains on one-hot targets with the same history columns as class indices do, and
both off train on class indices as before."""

import keras
import numpy as np
import pytest

from pipeline.core.classes import task_heads
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params, validate_params
from pipeline.model.batches import Batches, mix
from pipeline.model.runtime import configure
from pipeline.model.train import compile_model, fit, targets
from pipeline.model.zoo import build_model
from tests.helpers import REPO, TYPES, tiny

TRAIN = load_params(REPO / "params.yaml").train.model_copy(
    update={"model": "lenet", "epochs": 2, "batch_size": 8, "members": 1, "average_epochs": 0}
)
CELLS, VAL = tiny(24), tiny(8, seed=1)


def test_one_hot_targets_are_the_class_indices_rows():
    hot, indices = targets(CELLS, "multitask", one_hot=True), targets(CELLS, "multitask")
    assert set(hot) == set(indices) == {"type", "nucleus"}
    for name, rows in hot.items():
        assert rows.dtype == np.float32 and (rows.sum(axis=1) == 1).all()
        np.testing.assert_array_equal(rows.argmax(axis=1), indices[name])


def test_mixup_blends_images_and_labels_by_the_same_weight():
    x = np.random.default_rng(0).uniform(0, 255, (16, 4, 4, 3)).astype("float32")
    y = {"type": np.eye(4, dtype="float32")[np.arange(16) % 4]}
    mixed_x, mixed_y = mix(x, y, 0.4, np.random.default_rng(7))
    assert mixed_x.shape == x.shape and mixed_y["type"].shape == (16, 4)
    np.testing.assert_allclose(mixed_y["type"].sum(axis=1), 1, rtol=1e-6)
    # Each blend is w * own + (1 - w) * partner's, with the same w for the image and its label.
    rng = np.random.default_rng(7)
    weight, other = rng.beta(0.4, 0.4, 16).astype("float32"), rng.permutation(16)
    np.testing.assert_allclose(
        mixed_x, weight[:, None, None, None] * x + (1 - weight[:, None, None, None]) * x[other], rtol=1e-5
    )
    np.testing.assert_allclose(
        mixed_y["type"], weight[:, None] * y["type"] + (1 - weight[:, None]) * y["type"][other], rtol=1e-6
    )
    assert not np.allclose(mixed_x, x)


def test_mixed_batches_are_drawn_from_seed_epoch_and_batch():
    y = targets(CELLS, "type", one_hot=True)

    def batch(seed: int, epoch: int, i: int):
        b = Batches(CELLS["x"], y, 8, shuffle=True, seed=seed, mixup=0.2)
        b.set_epoch(epoch)
        return b[i]

    a = batch(1, 0, 0)
    np.testing.assert_array_equal(a[0], batch(1, 0, 0)[0])  # a resumed run sees the same blend
    assert not np.array_equal(a[0], batch(1, 1, 0)[0]) and not np.array_equal(a[0], batch(2, 0, 0)[0])
    plain = Batches(CELLS["x"], y, 8, shuffle=True, seed=1)
    assert not np.array_equal(a[0], plain[0][0])
    assert set(np.unique(plain[0][1]["type"])) == {0.0, 1.0}  # mixup 0: one-hot rows untouched


def train(p):
    configure(p.seed, True, False)
    model = build_model(p.model, (32, 32, 3), task_heads(p.task, TYPES), dropout=0.3)
    compile_model(model, p)
    return model, fit(model, CELLS, VAL, p)


@pytest.fixture(scope="module")
def plain() -> dict[str, list[float]]:
    """The history of the run on class indices, trained once for every soft-target case."""
    return train(TRAIN)[1]


@pytest.mark.parametrize(
    "update", [{"label_smoothing": 0.1}, {"mixup": 0.2}, {"label_smoothing": 0.1, "mixup": 0.2}]
)
def test_soft_targets_train_with_the_same_history_columns(update, plain):
    soft_model, soft = train(TRAIN.model_copy(update=update))
    assert set(soft) == set(plain) and {"accuracy", "val_accuracy", "loss", "val_loss"} <= set(soft)
    assert all(np.isfinite(v).all() for v in soft.values())
    assert soft["loss"] != plain["loss"]  # the soft loss was really used
    assert isinstance(soft_model.loss["type"], keras.losses.CategoricalCrossentropy)
    assert soft_model.loss["type"].get_config()["label_smoothing"] == update.get("label_smoothing", 0.0)


def test_both_off_train_on_class_indices_as_before():
    model, _ = train(TRAIN.model_copy(update={"label_smoothing": 0.0, "mixup": 0.0}))
    assert model.loss == {"type": "sparse_categorical_crossentropy"}
    assert targets(CELLS, "type")["type"].dtype.kind == "i"


@pytest.mark.parametrize(
    ("key", "value"), [("label_smoothing", 1.0), ("label_smoothing", -0.1), ("mixup", -1)]
)
def test_out_of_range_soft_target_params_are_refused(key, value):
    raw = load_params(REPO / "params.yaml").model_dump()
    raw["train"][key] = value
    with pytest.raises(PipelineError, match=f"train.{key}"):
        validate_params(raw)
