"""Batches gathered from the resize stage's in-memory arrays, for training and for prediction."""

import math
from collections.abc import Mapping

import keras
import numpy as np


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
