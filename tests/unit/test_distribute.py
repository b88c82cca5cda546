"""Data-parallel training (`train.devices`): on two simulated CPU devices the same model trains to
within a stated tolerance of one device, and resumes from a checkpoint; the option's errors."""

import contextlib
import json
import subprocess
import sys
import textwrap

import keras
import pytest

from pipeline.core.errors import PipelineError
from pipeline.model import runtime
from pipeline.model.train import replica_batches
from tests.helpers import REPO

# Runs in a fresh interpreter: TensorFlow's logical devices must be set before it initialises.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np

    from pipeline.core.errors import PipelineError
    from pipeline.core.params import load_params
    from pipeline.model.runtime import configure, distribution
    from pipeline.model.train import train_model
    from tests.helpers import REPO, TYPES

    out = Path(sys.argv[1])


    def coloured(n, seed):
        # The class is the colour under heavy noise: learnable in a few epochs, not at a glance.
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 4
        base = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]])[y]
        x = np.clip(base[:, None, None, :] + rng.normal(0, 40, (n, 32, 32, 3)), 0, 255)
        return {"x": x.astype(np.uint8), "y": y, "nucleus": (y >= 2).astype(np.int64),
                "classes": np.array(TYPES)}


    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt


    train, val = coloured(96, 0), coloured(32, 1)
    base = load_params(REPO / "params.yaml").train.model_copy(
        update={"epochs": 4, "batch_size": 16, "dropout": 0.0, "members": 1}
    )
    runs = {}


    def run(name, model, devices, extra=(), checkpoint=None):
        p = base.model_copy(update={"model": model, "devices": devices})
        reported = configure(p.seed, p.deterministic, False, devices)["devices"]
        trained = train_model(p, train, val, extra, checkpoint=checkpoint)
        runs[name] = {
            "reported": reported,
            "replicas": trained.model.distribute_strategy.num_replicas_in_sync,
            "params": trained.model.count_params(),
            "history": {k: list(v) for k, v in trained.history.items()},
        }
        return trained.model


    run("lenet/1", "lenet", 1)
    whole = run("lenet/2", "lenet", 2, checkpoint=out / "whole")
    try:
        run("cut", "lenet", 2, [Interrupt()], checkpoint=out / "cut")
    except KeyboardInterrupt:
        pass
    resumed = run("resumed", "lenet", 2, checkpoint=out / "cut")
    runs["resumed"]["same_weights"] = all(
        np.array_equal(a, b) for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True)
    )
    run("depthwise/1", "depthwise", 1)
    run("depthwise/2", "depthwise", 2)
    errors = {}
    for name, call in {
        "too_many": lambda: distribution(3),
        "empty_replica": lambda: train_model(base.model_copy(update={"devices": 2}), coloured(49, 0), val),
    }.items():
        try:
            call()
        except PipelineError as e:
            errors[name] = str(e)
    (out / "runs.json").write_text(json.dumps({"runs": runs, "errors": errors}))
    """
)


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    if keras.backend.backend() != "tensorflow":
        pytest.skip("simulates devices with TensorFlow logical CPUs")
    out = tmp_path_factory.mktemp("distribute")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return json.loads((out / "runs.json").read_text())


def last(run: dict, key: str) -> float:
    return run["history"][key][-1]


def gap(one: dict, two: dict, key: str) -> float:
    """The largest per-epoch difference of a figure between two runs."""
    return max(abs(a - b) for a, b in zip(one["history"][key], two["history"][key], strict=True))


def test_two_devices_train_the_same_model_as_one(result):
    """Two replicas, same model, same schedule; it learned (chance is 0.25), and the figures match.

    Why not bit-identical, and the tolerances (measured on a 2-core AMD EPYC, TF 2.21 CPU): lenet has
    no batch norm and dropout is 0 here, so each step's gradient is the mean over the same global
    batch, only summed in another order (each replica's half, then the all-reduce): per-epoch losses
    differed by 1.2e-7, asserted < 1e-3 (twice the learning rate, as a gradient summed instead of
    averaged over the replicas would give, opens a gap of 0.64). depthwise's batch norm normalises
    each replica's half-batch by that half's own statistics, so its steps really differ from one
    device's: train loss differed by up to 0.045 (first epoch), val loss by 0.008; asserted < 0.15
    and < 0.05, and the same train accuracy to 1%.
    (depthwise's val accuracy stays at chance on one device too after these 24 steps: its predictions
    are right in training mode, wrong with the batch-norm moving statistics; so it is not compared.)
    """
    runs = result["runs"]
    for model in ("lenet", "depthwise"):
        one, two = runs[f"{model}/1"], runs[f"{model}/2"]
        assert (one["replicas"], one["reported"]) == (1, "1 x cpu")
        assert (two["replicas"], two["reported"]) == (2, "2 x cpu")
        assert one["params"] == two["params"]
        assert len(one["history"]["loss"]) == len(two["history"]["loss"]) == 4
        assert last(two, "accuracy") >= 0.9 and last(one, "accuracy") >= 0.9
    one, two = runs["lenet/1"], runs["lenet/2"]
    assert last(two, "val_accuracy") >= 0.9
    for key in ("loss", "val_loss"):
        assert gap(one, two, key) < 1e-3, key
    assert last(one, "val_accuracy") == last(two, "val_accuracy")
    one, two = runs["depthwise/1"], runs["depthwise/2"]
    assert gap(one, two, "loss") < 0.15 and gap(one, two, "val_loss") < 0.05
    assert abs(last(one, "accuracy") - last(two, "accuracy")) <= 0.01


def test_a_two_device_run_resumes_from_its_checkpoint(result):
    whole, resumed = result["runs"]["lenet/2"], result["runs"]["resumed"]
    assert resumed["same_weights"] and resumed["replicas"] == 2
    for key, values in whole["history"].items():
        assert resumed["history"][key] == pytest.approx(values, abs=1e-4), key


def test_more_devices_than_visible_is_an_error(result):
    assert result["errors"]["too_many"] == (
        "train.devices: 3 asked, but the tensorflow backend sees 2: ['/device:CPU:0', '/device:CPU:1']"
    )
    with pytest.raises(PipelineError, match=r"train\.devices: 2 asked, but the \w+ backend sees 1"):
        runtime.distribution(2)


def test_a_batch_that_would_leave_a_replica_empty_is_an_error(result):
    assert "last train batch holds 1 image(s) (49 % batch_size 16)" in result["errors"]["empty_replica"]
    replica_batches(48, 16, 2, "train")
    replica_batches(49, 16, 1, "train")
    replica_batches(50, 16, 2, "val")
    with pytest.raises(PipelineError, match="last val batch holds 2"):
        replica_batches(50, 16, 3, "val")


def test_one_device_is_no_strategy_at_all():
    """devices: 1 is exactly the run before the option existed: no distribution is entered."""
    block = runtime.distribution(1)
    assert isinstance(block, contextlib.nullcontext)
    with block:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            assert not tf.distribute.has_strategy()
        assert keras.distribution.distribution() is None


def test_torch_is_refused_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(PipelineError, match="not supported on the torch backend"):
        runtime.distribution(2)
