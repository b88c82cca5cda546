"""Stochastic weight averaging (SWA; Izmailov et al. 2018): the weights after each of the last N
epochs, averaged, then every batch-norm layer's statistics recomputed on training cells for the
averaged weights (the running statistics belong to none of the averaged points).

Why here: one model's zero-shot score on another lab's cells swings by 15 points with its seed
(docs/selection.md: "Zero-shot PBC over the study's runs"), and averaging members steadies it at a member's
cost each. Points along the end of one trajectory average towards the middle of a wide basin, and
flat minima are what transfer to a shifted domain (SWAD, Cha et al. 2021): the same steadying,
tried at no training cost.
"""

import keras
import numpy as np

from pipeline.model.calibrate import norm_layers, set_norm_statistics

NORM_CELLS = 512  # train cells the statistics are recomputed on (evenly spaced through the arrays)


class WeightAverage(keras.callbacks.Callback):
    """Sums the trainable weights after each of the last `last` of `epochs` epochs (every epoch when
    `last` >= `epochs`: `-S train.epochs=5` works with the default's 8). Its sum is part
    of the training state a checkpoint saves (`state`, `restore`), so a resumed run averages the
    same epochs."""

    def __init__(self, epochs: int, last: int):
        super().__init__()
        self.first = epochs - last
        self.total: list[np.ndarray] = []
        self.count = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch < self.first:
            return
        weights = [keras.ops.convert_to_numpy(v).astype(np.float64) for v in self.model.trainable_variables]
        self.total = [t + w for t, w in zip(self.total, weights, strict=True)] if self.total else weights
        self.count += 1

    def state(self) -> dict[str, np.ndarray]:
        return {"count": np.array(self.count)} | {f"w{i}": t for i, t in enumerate(self.total)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.count = int(state["count"])
        self.total = [state[f"w{i}"] for i in range(len(state) - 1)]

    def apply(self, model: keras.Model, x: np.ndarray, batch_size: int) -> None:
        """Set `model`'s trainable weights to the average and its batch-norm statistics to those of
        `x` (train cells) under them. Nothing summed (no epoch trained) leaves it as is."""
        if not self.count:
            return
        for variable, total in zip(model.trainable_variables, self.total, strict=True):
            variable.assign((total / self.count).astype(variable.dtype))
        if norm_layers(model):
            pick = np.linspace(0, len(x) - 1, min(len(x), NORM_CELLS)).round().astype(int)
            set_norm_statistics(model, x[np.unique(pick)], batch_size)
