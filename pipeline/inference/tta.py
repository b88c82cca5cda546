"""Class probabilities from a trained model, optionally with test-time augmentation (TTA): the one
prediction path of `evaluate`, `wbc predict` and the published-set scoring. Kept apart from
training, so an edit here re-runs `evaluate` only."""

from collections.abc import Callable

import keras
import numpy as np

from pipeline.model.batches import Batches


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
