"""Pictures of an evaluation: the confusion matrix and a gallery of misclassified crops."""

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> bytes:
    """Counts and row-normalised shares side by side."""
    counts = np.asarray(matrix)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, data, fmt, name in ((axes[0], counts, "d", "counts"), (axes[1], shares, ".2f", "row-normalised")):
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(f"{title} ({name})")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, format(data[i, j], fmt), ha="center", va="center",
                        color="white" if shares[i, j] > 0.5 else "black")  # fmt: skip
    return _png(fig)


def gallery_png(
    images: np.ndarray, actual: Sequence[str], predicted: Sequence[str], ids: Sequence[str], max_n: int
) -> bytes:
    """A grid of misclassified crops titled 'actual -> predicted' and their crop id."""
    n = min(len(images), max_n)
    cols = 6
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.1, rows * 2.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k])
            ax.set_title(f"{actual[k]} → {predicted[k]}\n{ids[k]}", fontsize=7)
    if n == 0:
        axes.flat[0].text(0.5, 0.5, "no misclassified crops", ha="center")
    return _png(fig)
