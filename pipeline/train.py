"""Training: batches streamed from the resize stage's arrays, the task's targets, fit with callbacks."""

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from pipeline.checkpoint import Checkpoint
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
    """Batches gathered from in-memory arrays by index: no copy of the whole set. Epoch e's order
    is drawn from (seed, e) by `set_epoch`, so a run resumed at epoch e sees the batches it would have
    seen uninterrupted."""

    def __init__(
        self, x: np.ndarray, y: Mapping[str, np.ndarray], batch_size: int, *, shuffle: bool, seed: int = 0
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, dict(y), batch_size, shuffle, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        n = len(self.x)
        self.order = (
            np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        )

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i: int):
        idx = np.sort(self.order[i * self.batch_size : (i + 1) * self.batch_size])
        return self.x[idx].astype("float32"), {k: v[idx] for k, v in self.y.items()}


class Reshuffle(keras.callbacks.Callback):
    """Sets the training batches' order from the epoch number Keras is about to run."""

    def __init__(self, batches: Batches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.set_epoch(epoch)


def optimizer(p: TrainParams) -> keras.optimizers.Optimizer:
    kinds = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True),
        "rmsprop": keras.optimizers.RMSprop,
    }
    return kinds[p.optimizer](learning_rate=p.learning_rate)


def compile_model(model: keras.Model, p: TrainParams) -> None:
    heads = list(model.output_names)
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
    checkpoint: Path | None = None,
    fingerprint: str = "",
) -> dict[str, list[float]]:
    """Train with the params' schedule; returns the per-epoch history.

    With a `checkpoint` folder the state is saved after every epoch, and a state saved there by a
    killed run with the same `fingerprint` is resumed from.
    """
    y_train, y_val = targets(train, p.task), targets(val, p.task)
    weights = None
    if p.class_weights:
        if len(y_train) != 1:
            raise PipelineError("train.class_weights: not supported with task: multitask (Keras limitation)")
        ((head, y),) = y_train.items()
        weights = class_weight(y, heads_for(p.task, train["classes"])[head])
    schedule = callbacks(p)
    batches = Batches(train["x"], y_train, p.batch_size, shuffle=True, seed=p.seed)
    start, saver = 0, None
    if checkpoint is not None:
        saver = Checkpoint(checkpoint, fingerprint, schedule)
        start = saver.restore(model)
    history = model.fit(
        batches,
        validation_data=Batches(val["x"], y_val, p.batch_size, shuffle=False),
        epochs=p.epochs,
        initial_epoch=start,
        shuffle=False,  # Batches shuffles by (seed, epoch); Keras would reorder batches by global state
        class_weight=weights,
        callbacks=[Reshuffle(batches), *schedule, *([saver] if saver else []), *extra_callbacks],
        verbose=2,
    )
    if saver is not None:
        return saver.history
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def views(x: np.ndarray) -> list[Callable[[np.ndarray], np.ndarray]]:
    """Test-time augmentation views of a batch (n, h, w, c): the 8 flips and quarter turns of the
    square, or the 4 flips when h != w (a turn would change the shape)."""
    flips = [
        lambda a: a,
        lambda a: a[:, :, ::-1],
        lambda a: a[:, ::-1, :],
        lambda a: a[:, ::-1, ::-1],
    ]
    if x.shape[1] != x.shape[2]:
        return flips
    return [*flips, *[lambda a, f=f: np.swapaxes(f(a), 1, 2) for f in flips]]


def predict(
    model: keras.Model, x: np.ndarray, batch_size: int = 64, tta: bool = False
) -> dict[str, np.ndarray]:
    """Class probabilities by head name; with `tta`, averaged over the flips and turns of `x`."""
    total: dict[str, np.ndarray] = {}
    transforms = views(x) if tta else [lambda a: a]
    for view in transforms:
        out = model.predict(Batches(np.ascontiguousarray(view(x)), {}, batch_size, shuffle=False), verbose=0)
        out = out if isinstance(out, dict) else {model.output_names[0]: out}
        for head, probs in out.items():
            total[head] = total.get(head, 0) + probs
    return {head: probs / len(transforms) for head, probs in total.items()}
