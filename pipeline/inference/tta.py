"""Class probabilities from a trained model, optionally with test-time augmentation (TTA): the one
prediction path of `evaluate`, `wbc predict` and the published-set scoring. Kept apart from
training, so an edit here re-runs `evaluate` only."""

from collections.abc import Callable

import keras
import numpy as np

BATCH = 16  # cells per model call: 1.8x the cells/s of 64 on a 2-core CPU (benchmark.py --tta)


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
    model: keras.Model, x: np.ndarray, batch_size: int = BATCH, tta: bool = False
) -> dict[str, np.ndarray]:
    """Class probabilities by head name; with `tta`, averaged over the flips and turns of `x`.

    Every call to the model holds `batch_size` cells (the last batch padded with zeros): the model
    is traced or compiled for one shape only (`model.predict` also built a dataset on every call),
    and a cell's probabilities do not depend on the cells beside it."""
    total: dict[str, np.ndarray] = {}
    transforms = views(x) if tta else [lambda a: a]
    for view in transforms:
        parts = [_call(model, view(x[i : i + batch_size]), batch_size) for i in range(0, len(x), batch_size)]
        for head in parts[0] if parts else ():
            total[head] = total.get(head, 0) + np.concatenate([part[head] for part in parts])
    return {head: probs / len(transforms) for head, probs in total.items()}


def _call(model: keras.Model, batch: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """One batch through the model, padded to `size` cells and cut back; probabilities by head."""
    padded = np.zeros((size, *batch.shape[1:]), "float32")
    padded[: len(batch)] = batch
    out = model.predict_on_batch(padded)
    out = out if isinstance(out, dict) else {model.output_names[0]: out}
    return {head: np.asarray(probs)[: len(batch)] for head, probs in out.items()}
