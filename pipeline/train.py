"""Training: batches streamed from the resize stage's arrays, the task's targets, fit with callbacks."""

import math
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from pipeline.classes import NUCLEUS_GROUPS
from pipeline.errors import PipelineError
from pipeline.models import TASK_HEADS
from pipeline.params import TrainParams


def heads_for(task: str, classes: Sequence[str]) -> dict[str, int]:
    """Head name -> number of classes, for a task."""
    sizes = {"type": len(classes), "nucleus": len(NUCLEUS_GROUPS)}
    return {head: sizes[head] for head in TASK_HEADS[task]}


def targets(arrays: Mapping[str, np.ndarray], task: str) -> dict[str, np.ndarray]:
    """The label arrays a task trains on, by head name (`y` is the cell type)."""
    by_head = {"type": arrays["y"], "nucleus": arrays["nucleus"]}
    return {head: by_head[head] for head in TASK_HEADS[task]}


class Batches(keras.utils.PyDataset):
    """Batches gathered from in-memory arrays by index: no copy of the whole set, reshuffled
    every epoch from a seeded generator so runs are repeatable."""

    def __init__(
        self, x: np.ndarray, y: Mapping[str, np.ndarray], batch_size: int, *, shuffle: bool, seed: int = 0
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle = x, dict(y), batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x)) if shuffle else np.arange(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i: int):
        idx = np.sort(self.order[i * self.batch_size : (i + 1) * self.batch_size])
        return self.x[idx].astype("float32"), {k: v[idx] for k, v in self.y.items()}

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.order = self.rng.permutation(len(self.x))


def optimizer(p: TrainParams) -> keras.optimizers.Optimizer:
    kinds = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True),
        "rmsprop": keras.optimizers.RMSprop,
    }
    return kinds[p.optimizer](learning_rate=p.learning_rate)


def compile_model(model: keras.Model, p: TrainParams) -> None:
    heads = list(model.output_names) if hasattr(model, "output_names") else list(model.output)
    model.compile(
        optimizer=optimizer(p),
        loss={h: "sparse_categorical_crossentropy" for h in heads},
        metrics={h: ["accuracy"] for h in heads},
    )


def class_weight(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """'Balanced' weights n / (k * count), for a train set that was not balanced by augment."""
    counts = np.bincount(y, minlength=n_classes)
    if (counts == 0).any():
        raise PipelineError(f"train: class(es) {np.flatnonzero(counts == 0).tolist()} have no train images")
    return {i: len(y) / (n_classes * c) for i, c in enumerate(counts)}


def callbacks(p: TrainParams) -> list[keras.callbacks.Callback]:
    found = []
    if p.reduce_lr.enabled:
        r = p.reduce_lr
        found.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=r.monitor, factor=r.factor, patience=r.patience, min_lr=r.min_lr, verbose=1
            )
        )
    if p.early_stopping.enabled:
        e = p.early_stopping
        found.append(
            keras.callbacks.EarlyStopping(
                monitor=e.monitor, patience=e.patience, restore_best_weights=True, verbose=1
            )
        )
    return found


def fit(
    model: keras.Model,
    train: Mapping[str, np.ndarray],
    val: Mapping[str, np.ndarray],
    p: TrainParams,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, list[float]]:
    """Train with the params' schedule; returns the per-epoch history."""
    y_train, y_val = targets(train, p.task), targets(val, p.task)
    weights = None
    if p.class_weights:
        if len(y_train) != 1:
            raise PipelineError("train.class_weights: not supported with task: multitask (Keras limitation)")
        ((head, y),) = y_train.items()
        weights = class_weight(y, heads_for(p.task, train["classes"])[head])
    history = model.fit(
        Batches(train["x"], y_train, p.batch_size, shuffle=True, seed=p.seed),
        validation_data=Batches(val["x"], y_val, p.batch_size, shuffle=False),
        epochs=p.epochs,
        class_weight=weights,
        callbacks=[*callbacks(p), *extra_callbacks],
        verbose=2,
    )
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Class probabilities by head name."""
    out = model.predict(Batches(x, {}, batch_size, shuffle=False), verbose=0)
    return out if isinstance(out, dict) else {model.output_names[0]: out}
