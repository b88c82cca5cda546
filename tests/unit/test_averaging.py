"""Weight averaging (`train.average_epochs`): the model ends with the mean of the weights after
each of the last N epochs and batch-norm statistics of train cells under them; a run killed between
averaged epochs resumes to the same model; more epochs asked than trained average them all."""

import keras
import numpy as np
import pytest
import yaml

from pipeline.core.classes import task_heads
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params, validate_params
from pipeline.model.averaging import NORM_CELLS, WeightAverage
from pipeline.model.calibrate import norm_layers
from pipeline.model.runtime import configure
from pipeline.model.train import callbacks, compile_model, fit
from pipeline.model.zoo import build_model
from tests.helpers import REPO, TYPES, tiny
from tests.unit.test_checkpoint import Interrupt

TRAIN = load_params(REPO / "params.yaml").train.model_copy(
    update={"model": "depthwise", "epochs": 4, "batch_size": 8, "deterministic": True, "members": 1,
            "average_epochs": 2}
)  # fmt: skip
CELLS, VAL = tiny(48), tiny(12, seed=1)


class Record(keras.callbacks.Callback):
    """The trainable weights after every epoch, as trained."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.weights.append([keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables])


def train(p=TRAIN, extra=(), folder=None):
    configure(p.seed, p.deterministic, False)
    model = build_model(p.model, (32, 32, 3), task_heads(p.task, TYPES), dropout=0.5, l2=1e-4)
    compile_model(model, p)
    history = fit(model, CELLS, VAL, p, extra, checkpoint=folder, fingerprint="run-a")
    return model, history


def test_the_model_ends_with_the_last_epochs_weights_averaged_and_their_norm_statistics():
    record = Record()
    model, history = train(extra=[record])
    assert len(record.weights) == 4 and len(history["loss"]) == 4  # the history is of the epochs as trained
    for i, variable in enumerate(model.trainable_variables):
        third, fourth = (record.weights[e][i].astype(np.float64) for e in (2, 3))
        averaged = ((third + fourth) / 2).astype(np.float32)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), averaged)
        assert not np.array_equal(third, fourth) or "bias" in variable.path  # the epochs did differ
    # Every batch-norm layer holds its input's statistics over the train cells, under the averaged
    # weights and the layers before it already set (48 cells: all of them, below NORM_CELLS).
    assert len(CELLS["x"]) < NORM_CELLS
    for norm in norm_layers(model):
        features = keras.Model(model.inputs, norm.input).predict(CELLS["x"], verbose=0)
        axes = tuple(range(features.ndim - 1))
        mean, variance = (keras.ops.convert_to_numpy(v) for v in (norm.moving_mean, norm.moving_variance))
        np.testing.assert_allclose(mean, features.mean(axes), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(variance, features.var(axes), rtol=1e-3, atol=1e-6)


def test_without_averaging_the_last_epochs_weights_are_kept():
    p = TRAIN.model_copy(update={"average_epochs": 0})
    assert not any(isinstance(c, WeightAverage) for c in callbacks(p))
    record = Record()
    model, _ = train(p, extra=[record])
    for kept, last in zip(model.trainable_variables, record.weights[-1], strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(kept), last)


def test_a_run_killed_between_averaged_epochs_resumes_to_the_same_model(tmp_path):
    whole, whole_history = train(folder=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(extra=[Interrupt(at_epoch=3)], folder=tmp_path / "cut")  # epoch 2 summed and saved
    resumed, resumed_history = train(folder=tmp_path / "cut")
    assert resumed_history == whole_history
    for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_averaging_more_epochs_than_trained_averages_them_all_and_early_stopping_is_refused():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(epochs=4, average_epochs=8)  # `dvc exp run -S train.epochs=4` on the default
    (average,) = [c for c in callbacks(validate_params(raw).train) if isinstance(c, WeightAverage)]
    assert average.first <= 0  # from the first epoch on
    raw["train"].update(average_epochs=2, early_stopping={**raw["train"]["early_stopping"], "enabled": True})
    with pytest.raises(PipelineError, match="early_stopping keeps the best one"):
        validate_params(raw)
