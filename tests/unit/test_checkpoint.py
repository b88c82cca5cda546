"""Resumable training: a run interrupted after an epoch and resumed ends where an uninterrupted
run ends, with the same history and weights; a killed train stage resumes and ends with a model."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import keras
import mlflow
import numpy as np
import pytest
import yaml

from pipeline.core import paths
from pipeline.core.classes import task_heads
from pipeline.core.params import load_params
from pipeline.data.arrays import save_npz
from pipeline.model import checkpoint
from pipeline.model.runtime import configure
from pipeline.model.train import callbacks, compile_model, cosine_rate, fit
from pipeline.model.zoo import build_model
from tests.helpers import REPO, TYPES, tiny

TRAIN = load_params(REPO / "params.yaml").train.model_copy(
    update={"model": "lenet", "epochs": 4, "batch_size": 8, "deterministic": True, "members": 1}
)


class Interrupt(keras.callbacks.Callback):
    """Stands in for a kill: stops the process's fit at the start of an epoch."""

    def __init__(self, at_epoch: int) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


def train(folder, extra=(), p=TRAIN):
    configure(p.seed, p.deterministic, False)
    model = build_model(p.model, (32, 32, 3), task_heads(p.task, TYPES), dropout=0.5, l2=1e-4)
    compile_model(model, p)
    history = fit(model, tiny(48), tiny(12, seed=1), p, extra, checkpoint=folder, fingerprint="run-a")
    return model, history


def test_interrupted_then_resumed_run_matches_an_uninterrupted_one(tmp_path, capsys):
    whole, whole_history = train(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", [Interrupt(at_epoch=2)])
    assert json.loads((tmp_path / "cut" / checkpoint.STATE).read_text())["epoch"] == 2
    resumed, resumed_history = train(tmp_path / "cut")
    assert "resuming from the checkpoint after epoch 2" in capsys.readouterr().out
    assert resumed_history == whole_history and len(whole_history["loss"]) == 4
    for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_deterministic_training_on_cpu_gives_identical_runs(tmp_path):
    first, first_history = train(tmp_path / "a")
    second, second_history = train(tmp_path / "b")
    assert first_history == second_history
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_other_params_is_discarded(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [Interrupt(at_epoch=1)])
    configure(TRAIN.seed, True, False)
    model = build_model("lenet", (32, 32, 3), task_heads("type", TYPES), dropout=0.5)
    compile_model(model, TRAIN)
    history = fit(model, tiny(48), tiny(12, seed=1), TRAIN, checkpoint=tmp_path, fingerprint="run-b")
    assert "from other params, data or code; starting over" in capsys.readouterr().out
    assert len(history["loss"]) == 4


def test_fingerprint_changes_with_params_and_data(tmp_path):
    data = tmp_path / "a.npz"
    data.write_bytes(b"one")
    first = checkpoint.fingerprint({"epochs": 4}, [data])
    assert checkpoint.fingerprint({"epochs": 4}, [data]) == first
    assert checkpoint.fingerprint({"epochs": 5}, [data]) != first
    data.write_bytes(b"two")
    assert checkpoint.fingerprint({"epochs": 4}, [data]) != first


@pytest.mark.e2e
def test_killed_train_stage_resumes_and_ends_with_a_model(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stopping = {**params["train"]["early_stopping"], "enabled": False}
    params["train"].update(model="lenet", epochs=6, batch_size=8, members=1, early_stopping=stopping)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.lock").write_text("stages: {}\n")
    (tmp_path / paths.RESIZED).mkdir(parents=True)
    for split, n in (("train", 1200), ("val", 16)):
        data = tiny(n, seed=n)
        arrays = {
            "x": data["x"], "y": data["y"], "nucleus": data["nucleus"],
            "sample_id": np.array([f"s{i}" for i in range(n)]),
            "crop_id": np.array([f"c{i}" for i in range(n)]),
            "source_image": np.array([f"img{i}" for i in range(n)]),
            "augmented": np.zeros(n, bool), "classes": data["classes"],
            "nucleus_groups": np.array(["p", "m"]),
        }  # fmt: skip
        save_npz(tmp_path / paths.resized_split(split), arrays)
    (tmp_path / "pipeline").symlink_to(REPO / "pipeline")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": store}
    cmd = [sys.executable, "-m", "stages.train"]
    state = tmp_path / paths.CHECKPOINT / checkpoint.STATE
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 2):
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (tmp_path / paths.MODEL).exists()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from the checkpoint after epoch" in done.stdout
    assert keras.saving.load_model(tmp_path / paths.MODEL) is not None
    assert len((tmp_path / paths.HISTORY).read_text().splitlines()) == 1 + 6
    assert not (tmp_path / paths.CHECKPOINT).exists()
    # The killed run cannot end itself: the next stage run marks it KILLED, not RUNNING for ever.
    client = mlflow.MlflowClient(tracking_uri=store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]


def test_the_cosine_schedule_falls_from_the_rate_to_the_floor_and_resumes_on_it(tmp_path):
    """lr_schedule: cosine sets each epoch's rate from the epoch alone (no validation metric), so a
    resumed run follows the same rates and ends with the same weights."""
    p = TRAIN.model_copy(update={"lr_schedule": "cosine", "learning_rate": 0.01})
    rates = [cosine_rate(e, p) for e in range(p.epochs)]
    assert rates[0] == pytest.approx(0.01) and all(a > b for a, b in itertools.pairwise(rates))
    assert rates[-1] > p.reduce_lr.min_lr and cosine_rate(p.epochs, p) == pytest.approx(p.reduce_lr.min_lr)
    assert not [c for c in callbacks(p) if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
    whole, whole_history = train(tmp_path / "whole", p=p)
    assert whole_history["learning_rate"] == pytest.approx(rates)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", [Interrupt(at_epoch=2)], p=p)
    resumed, resumed_history = train(tmp_path / "cut", p=p)
    assert resumed_history == whole_history
    for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
