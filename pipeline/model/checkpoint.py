"""Resumable training: the whole training state after every epoch, so a killed run picks up where
it stopped instead of starting over.

The state is the model's and optimizer's variables, the random-seed states of its layers (dropout),
the epoch, the history so far, the inner counters of the LR-schedule and early-stopping callbacks
and the arrays of those that keep some (`state()` / `restore()`: the weight average's sum). It is
written to a fresh folder that replaces the previous one by rename, so a kill mid-write leaves the
last complete state. A fingerprint of the params, the data and the code ties it to one run:
anything else starts over.
"""

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from pipeline.core.atomic import atomic_dir, write_json

STATE = "state.json"
WEIGHTS = "training.weights.h5"
BEST = "best_weights.npz"
SEEDS = "seed_states.npz"
ARRAYS = "callback_{}.npz"  # the i-th array-keeping callback's state
# Inner counters of the stateful callbacks, saved and restored by attribute name.
COUNTERS = {
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
}


def fingerprint(params: Mapping, files: Iterable[Path]) -> str:
    """sha256 over the train params, the Keras version and the bytes of the given files."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(keras.__version__.encode())
    for path in files:
        h.update(str(path).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class Checkpoint(keras.callbacks.Callback):
    """Saves the training state at every epoch's end; `restore` loads it back before `fit`."""

    def __init__(self, directory: Path, fingerprint: str, stateful: Sequence[keras.callbacks.Callback]):
        super().__init__()
        self.directory, self.fingerprint = Path(directory), fingerprint
        self.stateful = [c for c in stateful if type(c).__name__ in COUNTERS]
        self.keeping = [c for c in stateful if hasattr(c, "state") and hasattr(c, "restore")]
        self.history: dict[str, list[float]] = {}
        self.counters: list[dict] = []

    def restore(self, model: keras.Model) -> int:
        """Load a matching saved state into `model`; the epoch to start at (0: none). The callbacks'
        counters are set in `on_train_begin`, after those callbacks have reset themselves."""
        state_file = self.directory / STATE
        if not state_file.exists():
            return 0
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != self.fingerprint:
            print(f"train: {self.directory} is from other params, data or code; starting over")
            clear(self.directory)
            return 0
        model.optimizer.build(model.trainable_variables)
        model.load_weights(self.directory / WEIGHTS)
        model.optimizer.learning_rate = state["learning_rate"]
        with np.load(self.directory / SEEDS) as seeds:
            for i, variable in enumerate(_seed_states(model)):
                variable.assign(seeds[f"s{i}"])
        for i, callback in enumerate(self.keeping):
            with np.load(self.directory / ARRAYS.format(i)) as arrays:
                callback.restore(dict(arrays))
        self.history, self.counters = state["history"], state["callbacks"]
        print(f"train: resuming from the checkpoint after epoch {state['epoch']} in {self.directory}")
        return int(state["epoch"])

    def on_train_begin(self, logs: dict | None = None) -> None:
        for callback, counters in zip(self.stateful, self.counters, strict=False):
            for name, value in counters.items():
                setattr(callback, name, value)
            if isinstance(callback, keras.callbacks.EarlyStopping) and (self.directory / BEST).exists():
                with np.load(self.directory / BEST) as best:
                    callback.best_weights = [best[f"w{i}"] for i in range(len(best.files))]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        with atomic_dir(self.directory) as tmp:
            self.model.save_weights(tmp / WEIGHTS)
            seeds = {f"s{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(_seed_states(self.model))}
            np.savez(tmp / SEEDS, **seeds)
            for i, callback in enumerate(self.keeping):
                np.savez(tmp / ARRAYS.format(i), **callback.state())
            counters = []
            for callback in self.stateful:
                counters.append({k: _plain(getattr(callback, k)) for k in COUNTERS[type(callback).__name__]})
                best = getattr(callback, "best_weights", None)
                if best is not None:
                    np.savez(tmp / BEST, **{f"w{i}": w for i, w in enumerate(best)})
            write_json(
                tmp / STATE,
                {"fingerprint": self.fingerprint, "epoch": epoch + 1, "history": self.history,
                 "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                 "callbacks": counters},
            )  # fmt: skip


def _seed_states(model: keras.Model) -> list:
    """The layers' random-generator states: in `model.variables` but not saved with its weights."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _plain(value: object) -> object:
    """Callback counters as JSON values (they may be numpy scalars or +-inf)."""
    return float(value) if isinstance(value, float | np.floating) else value


class FinishedMember:
    """An ensemble member that finished training, kept in the checkpoint folder until the ensemble
    is saved: a run killed at member 3 does not train members 1 and 2 again."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def save(self, fingerprint: str, model: keras.Model, history: pd.DataFrame, seconds: float) -> None:
        with atomic_dir(self.folder) as tmp:
            model.save(tmp / "model.keras")
            write_json(tmp / STATE, {"fingerprint": fingerprint, "seconds": seconds,
                                     "history": history.to_dict(orient="list")})  # fmt: skip

    def load(self, fingerprint: str) -> tuple[keras.Model, pd.DataFrame, float] | None:
        """The member saved by a run with the same fingerprint, else None."""
        state_file = self.folder / STATE
        if not state_file.exists():
            return None
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != fingerprint:
            return None
        model = keras.saving.load_model(self.folder / "model.keras")
        return model, pd.DataFrame(state["history"]), float(state["seconds"])


def clear(directory: Path) -> None:
    """Remove a checkpoint once the run it belongs to has saved its model."""
    shutil.rmtree(directory, ignore_errors=True)
