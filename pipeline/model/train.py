"""Training: the task's model and targets, batches streamed from the resize stage's arrays, fit with
the params' schedule and a resumable checkpoint; what the train stage reports about it."""

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from pipeline.core.classes import head, task_heads
from pipeline.core.errors import PipelineError
from pipeline.core.params import TrainParams
from pipeline.data.arrays import class_list
from pipeline.model.averaging import WeightAverage
from pipeline.model.batches import Batches, Reshuffle
from pipeline.model.checkpoint import Checkpoint, FinishedMember, fingerprint
from pipeline.model.ensemble import average, member_seed
from pipeline.model.runtime import distribution
from pipeline.model.zoo import build_model

# The code a checkpoint is only valid for, besides the params and the arrays: this package.
MODEL_CODE = tuple(sorted(Path(__file__).parent.glob("*.py")))


def targets(arrays: Mapping[str, np.ndarray], task: str, *, one_hot: bool = False) -> dict[str, np.ndarray]:
    """The label arrays a task trains on, by head name: class indices, or one-hot rows (float32) for
    soft targets."""
    heads = task_heads(task, class_list(arrays))
    if one_hot:
        return {h.name: np.eye(len(h.classes), dtype="float32")[h.labels(arrays)] for h in heads}
    return {h.name: h.labels(arrays) for h in heads}


def soft_targets(p: TrainParams) -> bool:
    """Label smoothing and mixup train on one-hot targets; otherwise class indices, as ever."""
    return p.label_smoothing > 0 or p.mixup > 0


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
    if soft_targets(p):
        loss = {h: keras.losses.CategoricalCrossentropy(label_smoothing=p.label_smoothing) for h in heads}
        metrics = {h: [keras.metrics.CategoricalAccuracy(name="accuracy")] for h in heads}
    else:
        loss = {h: "sparse_categorical_crossentropy" for h in heads}
        metrics = {h: ["accuracy"] for h in heads}
    model.compile(optimizer=optimizer(p), loss=loss, metrics=metrics)


def class_weight(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """'Balanced' weights n / (k * count), for a train set that was not balanced by augment."""
    counts = np.bincount(y, minlength=n_classes)
    if (counts == 0).any():
        raise PipelineError(f"train: class(es) {np.flatnonzero(counts == 0).tolist()} have no train images")
    return {i: len(y) / (n_classes * c) for i, c in enumerate(counts)}


def cosine_rate(epoch: int, p: TrainParams) -> float:
    """The cosine schedule's rate for an epoch: `learning_rate` at the first, falling by a half cosine
    towards `reduce_lr.min_lr` at the last. Set from the epoch alone, so a resumed run follows it."""
    low = p.reduce_lr.min_lr
    return low + (p.learning_rate - low) * 0.5 * (1 + math.cos(math.pi * epoch / p.epochs))


def callbacks(p: TrainParams) -> list[keras.callbacks.Callback]:
    """The learning-rate schedule, early stopping and weight averaging the params ask for."""
    found: list[keras.callbacks.Callback] = []
    if p.average_epochs:
        found.append(WeightAverage(p.epochs, p.average_epochs))
    if p.lr_schedule == "cosine":
        found.append(keras.callbacks.LearningRateScheduler(lambda epoch: cosine_rate(epoch, p)))
    elif p.reduce_lr.enabled:
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


def replica_batches(n: int, batch_size: int, devices: int, split: str) -> None:
    """Each batch is split across the replicas: a last batch smaller than their number leaves one
    empty, and TensorFlow's reshapes and convolutions fail on an empty batch mid-epoch."""
    last = n % batch_size
    if 0 < last < devices:
        raise PipelineError(
            f"train.devices: {devices} replicas, but the last {split} batch holds {last} image(s) "
            f"({n} % batch_size {batch_size}); choose a batch_size that leaves 0 or at least {devices}"
        )


def fit(
    model: keras.Model,
    train: Mapping[str, np.ndarray],
    val: Mapping[str, np.ndarray],
    p: TrainParams,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint: Path | None = None,
    fingerprint: str = "",
) -> dict[str, list[float]]:
    """Train with the params' schedule (and the last epochs' weights averaged, if asked); returns
    the per-epoch history, of the weights as trained.

    With a `checkpoint` folder the state is saved after every epoch, and a state saved there by a
    killed run with the same `fingerprint` is resumed from.
    """
    for split, arrays in (("train", train), ("val", val)):
        replica_batches(len(arrays["x"]), p.batch_size, p.devices, split)
    soft = soft_targets(p)
    y_train, y_val = targets(train, p.task, one_hot=soft), targets(val, p.task, one_hot=soft)
    weights = None
    if p.class_weights:
        if len(y_train) != 1:
            raise PipelineError("train.class_weights: not supported with task: multitask (Keras limitation)")
        ((name, y),) = targets(train, p.task).items()
        weights = class_weight(y, len(head(name, class_list(train)).classes))
    schedule = callbacks(p)
    batches = Batches(train["x"], y_train, p.batch_size, shuffle=True, seed=p.seed, mixup=p.mixup)
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
    for callback in schedule:
        if isinstance(callback, WeightAverage):
            callback.apply(model, train["x"], p.batch_size)
    if saver is not None:
        return saver.history
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


@dataclass
class Trained:
    model: keras.Model  # one model, or the members averaged (pipeline.model.ensemble)
    histories: list[pd.DataFrame]  # per member, one row per epoch: `epoch`, then Keras' losses and metrics
    seconds: float
    images: int  # training images per epoch

    @property
    def history(self) -> pd.DataFrame:
        """One row per epoch; an ensemble's members side by side, member i's columns suffixed `.m<i>`
        (member 0's keep their names), an epoch a member did not run left empty."""
        if len(self.histories) == 1:
            return self.histories[0]
        frames = [
            h.set_index("epoch").add_suffix(f".m{i}" if i else "") for i, h in enumerate(self.histories)
        ]
        return pd.concat(frames, axis=1).rename_axis("epoch").reset_index()


def train_member(
    p: TrainParams,
    train: Mapping[str, np.ndarray],
    val: Mapping[str, np.ndarray],
    extra_callbacks: Sequence[keras.callbacks.Callback],
    checkpoint: Path | None,
    fingerprint: str,
) -> tuple[keras.Model, pd.DataFrame, float]:
    """Build, compile and fit one model with `p.seed` (its weights' draw, dropout and batch order)."""
    keras.utils.set_random_seed(p.seed)
    with distribution(p.devices):
        model = build_model(
            p.model,
            train["x"].shape[1:],
            task_heads(p.task, class_list(train)),
            dropout=p.dropout,
            l1=p.l1,
            l2=p.l2,
            weights=p.weights,
            bn_momentum=p.bn_momentum,
        )
        compile_model(model, p)
        start = time.perf_counter()
        history = fit(model, train, val, p, extra_callbacks, checkpoint=checkpoint, fingerprint=fingerprint)
    frame = pd.DataFrame(history).rename_axis("epoch").reset_index()
    return model, frame, time.perf_counter() - start


def train_model(
    p: TrainParams,
    train: Mapping[str, np.ndarray],
    val: Mapping[str, np.ndarray],
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint: Path | None = None,
    data_files: Iterable[Path] = (),
) -> Trained:
    """Train `p.members` models, member i with seed `member_seed(p.seed, i)`, over `p.devices`
    replicas (in `distribution`, which the variables must be made in and JAX fits in), and average
    them into one model. A checkpoint is tied to the params, `data_files` (the arrays it was made
    from) and this package's code; an ensemble keeps each finished member there, so a killed run
    resumes at the member it was training."""
    files = [*data_files, *MODEL_CODE]
    models, histories, seconds = [], [], 0.0
    for i in range(p.members):
        member = p.model_copy(update={"seed": member_seed(p.seed, i)})
        if p.members > 1:
            print(f"train: member {i + 1} of {p.members}, seed {member.seed}")
        key = fingerprint(p.model_dump() | {"member": i}, files)
        folder = finished = None
        if checkpoint is not None:
            folder = checkpoint if p.members == 1 else checkpoint / f"member-{i}"
            finished = FinishedMember(checkpoint / f"member-{i}.done") if p.members > 1 else None
        saved = finished.load(key) if finished is not None else None
        if saved is not None:
            print(f"train: member {i + 1} had finished before the run stopped; loaded from {finished.folder}")
            model, frame, took = saved
        else:
            for callback in extra_callbacks:
                if hasattr(callback, "start_member"):
                    callback.start_member(i)
            model, frame, took = train_member(member, train, val, extra_callbacks, folder, key)
            if finished is not None:
                finished.save(key, model, frame, took)
        models.append(model)
        histories.append(frame)
        seconds += took
    return Trained(average(models), histories, seconds, len(train["x"]))


def best_epoch(history: pd.DataFrame, monitor: str) -> dict:
    """The best epoch by `monitor` and its validation figures."""
    best = int(history[monitor].idxmin() if "loss" in monitor else history[monitor].idxmax())
    return {"best_epoch": best} | {
        f"best.{k}": float(history.loc[best, k]) for k in history.columns if k.startswith("val_")
    }


def summary(trained: Trained, monitor: str) -> dict:
    """The train stage's report: size, epochs, the best epoch by `monitor` and its validation
    figures (an ensemble: their mean over members, and each member's under `member.<i>`), speed."""
    epochs = sum(len(h) for h in trained.histories)
    bests = [best_epoch(h, monitor) for h in trained.histories]
    report: dict = {"params": trained.model.count_params(), "members": len(bests), "epochs_run": epochs}
    if len(bests) == 1:
        report |= bests[0]
    else:
        report |= {k: float(np.mean([b[k] for b in bests])) for k in bests[0] if k.startswith("best.")}
        report["member"] = {str(i): b for i, b in enumerate(bests)}
    return report | {
        "train_seconds": round(trained.seconds, 1),
        "images_per_second": round(epochs * trained.images / trained.seconds, 1),
    }
