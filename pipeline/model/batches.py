"""Batches gathered from the resize stage's in-memory arrays, for training and for prediction."""

import math
from collections.abc import Mapping

import keras
import numpy as np


def mix(
    x: np.ndarray, y: Mapping[str, np.ndarray], alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mixup (Zhang et al., 2018): each image blended with another of its batch by a weight drawn from
    Beta(alpha, alpha), and its one-hot targets alike, so the model is taught the straight line
    between two cells rather than certainty at each."""
    weight = rng.beta(alpha, alpha, len(x)).astype("float32")
    other = rng.permutation(len(x))

    def blend(a: np.ndarray) -> np.ndarray:
        w = weight.reshape(-1, *[1] * (a.ndim - 1))
        return w * a + (1 - w) * a[other]

    return blend(x), {k: blend(v) for k, v in y.items()}


class Batches(keras.utils.PyDataset):
    """Batches gathered from in-memory arrays by index: no copy of the whole set. Epoch e's order
    is drawn from (seed, e) by `set_epoch`, so a run resumed at epoch e sees the batches it would have
    seen uninterrupted; with `mixup` > 0 each batch is mixed (`mix`, one-hot `y`) by a draw from
    (seed, e, batch), for the same reason."""

    def __init__(
        self,
        x: np.ndarray,
        y: Mapping[str, np.ndarray],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        mixup: float = 0.0,
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, dict(y), batch_size, shuffle, seed
        self.mixup = mixup
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
        x, y = self.x[idx].astype("float32"), {k: v[idx] for k, v in self.y.items()}
        if self.mixup:
            return mix(x, y, self.mixup, np.random.default_rng([self.seed, self.epoch, i]))
        return x, y


class Reshuffle(keras.callbacks.Callback):
    """Sets the training batches' order from the epoch number Keras is about to run."""

    def __init__(self, batches: Batches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.set_epoch(epoch)
