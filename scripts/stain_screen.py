"""Screen colour treatments for another lab's cells before spending `dvc exp run`s on them.

Each treatment is a per-crop function applied alike to the train / val / test arrays the resize
stage wrote and to PBC-dev's cells (cut where the localiser finds them, like `wbc predict`); a
model with the params' settings (one member) is trained on the treated train split and scored on
BCCD val, BCCD test and PBC-dev (with the params' TTA), and on PBC-dev once more calibrated to it
without labels (`pipeline.model.calibrate`, two-fold as evaluate does: each half of the cells scored
by the model calibrated on the other half). A treatment that screens well is then
built into the pipeline and measured by `dvc exp run` (docs/other-labs.md: "Robustness steps tried").
PBC-dev is a development set here: choosing on it is why the docs never call it a test.

    python scripts/stain_screen.py identity levels histmatch reinhard blur optics  # reports/stain_screen.csv

Prints one row per treatment and writes them to --out (CSV). The arrays must be plain RGB: the
resize stage's output under `resize.colour: rgb` (`--arrays`, default the workspace's `data/resized/`).
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.core import paths  # noqa: E402
from pipeline.core.params import load_params  # noqa: E402
from pipeline.data import stain  # noqa: E402
from pipeline.data.images import load_rgb  # noqa: E402
from pipeline.data.resize import resize_image  # noqa: E402
from pipeline.evaluation.external import labelled_images  # noqa: E402
from pipeline.evaluation.metrics import classification_report  # noqa: E402
from pipeline.inference.classify import cut  # noqa: E402
from pipeline.inference.localize import find_wbcs  # noqa: E402
from pipeline.inference.tta import predict  # noqa: E402
from pipeline.model.calibrate import calibrate  # noqa: E402
from pipeline.model.train import train_model  # noqa: E402

Screened = Callable[[np.ndarray, dict], np.ndarray]


def pbc_cells(
    params, size: tuple[int, int], cache: Path, classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """PBC-dev's cells as the model sees them through the localiser (the best cell of each image)."""
    if cache.exists():
        with np.load(cache) as f:
            return f["x"], f["y"]
    table = labelled_images(REPO / "data/external/pbc", classes)
    xs, ys = [], []
    for path, label in zip(table["path"], table["class"], strict=True):
        img = load_rgb(Path(path))
        found = find_wbcs(np.asarray(img), params.localize)
        if found:
            xs.append(resize_image(cut(img, found[0].box, params), *size))
            ys.append(classes.index(label))
    x, y = np.stack(xs), np.array(ys)
    np.savez(cache, x=x, y=y)
    return x, y


def reference(train: np.ndarray, original: np.ndarray, lab_reference: list[float]) -> dict:
    """BCCD's colour statistics over the original (not augmented) training crops."""
    crops = train[original]
    flat = crops.reshape(len(crops), -1, 3).astype(np.float32)
    return {
        "p1": np.median(np.percentile(flat, 1, axis=1), axis=0),
        "p99": np.median(np.percentile(flat, 99, axis=1), axis=0),
        "pooled": crops[:: max(1, len(crops) // 64)].reshape(-1, crops.shape[2], 3),
        "lab_reference": tuple(lab_reference),
    }


def identity(x: np.ndarray, ref: dict) -> np.ndarray:
    return x


def levels(x: np.ndarray, ref: dict) -> np.ndarray:
    """Each channel's 1st and 99th percentile mapped to BCCD's: white balance and contrast."""
    f = x.astype(np.float32)
    lo, hi = np.percentile(f, 1, axis=(0, 1)), np.percentile(f, 99, axis=(0, 1))
    out = ref["p1"] + (f - lo) * (ref["p99"] - ref["p1"]) / np.maximum(hi - lo, 1.0)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def histmatch(x: np.ndarray, ref: dict) -> np.ndarray:
    """Each channel's histogram matched to BCCD's pooled crops (scikit-image)."""
    from skimage.exposure import match_histograms

    return np.clip(match_histograms(x, ref["pooled"], channel_axis=-1), 0, 255).round().astype(np.uint8)


def reinhard(x: np.ndarray, ref: dict) -> np.ndarray:
    """The pipeline's `resize.colour: reinhard` (per-crop Lab mean and sd to `resize.lab_reference`)."""
    return stain.reinhard(x, ref["lab_reference"])


def blur(x: np.ndarray, ref: dict) -> np.ndarray:
    from PIL import ImageFilter

    return np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(1.0)))


def levels_blur(x: np.ndarray, ref: dict) -> np.ndarray:
    return blur(levels(x, ref), ref)


def optics(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another microscope, for training only: a random blur or sharpening, each channel's gain and
    gamma drawn apart (white balance, stain strength)."""
    from PIL import ImageFilter

    img = Image.fromarray(x)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    else:
        img = img.filter(ImageFilter.UnsharpMask(radius=2, percent=int(rng.uniform(50, 250)), threshold=0))
    f = np.asarray(img, np.float32) / 255
    gamma = np.exp(rng.normal(0, 0.25, 3))
    gain = np.exp(rng.normal(0, 0.08, 3))
    return np.clip(255 * gain * f**gamma, 0, 255).round().astype(np.uint8)


TREATMENTS: dict[str, Screened] = {
    f.__name__: f for f in (identity, levels, histmatch, reinhard, blur, levels_blur)
}
AUGMENTATIONS = {"optics": (identity, optics), "blur_optics": (blur, optics)}


def apply(f: Screened, x: np.ndarray, ref: dict) -> np.ndarray:
    return np.stack([f(img, ref) for img in x])


def augment(x: np.ndarray, augmented: np.ndarray, jitter, seed: int = 0) -> np.ndarray:
    """`jitter` on the augmented copies of the train split (the originals stay as they are)."""
    out = x.copy()
    for i in np.flatnonzero(augmented):
        out[i] = jitter(x[i], np.random.default_rng([seed, int(i)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("treatments", nargs="+", choices=sorted([*TREATMENTS, *AUGMENTATIONS]))
    ap.add_argument("--out", type=Path, default=REPO / "reports/stain_screen.csv")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pbc_cells.npz"))
    ap.add_argument("--arrays", type=Path, default=paths.RESIZED, help="train/val/test.npz, plain RGB")
    args = ap.parse_args()
    params = load_params()
    p = params.train.model_copy(update={"members": 1})
    arrays = {s: dict(np.load(args.arrays / f"{s}.npz")) for s in ("train", "val", "test")}
    classes = list(arrays["train"]["classes"])
    size = arrays["train"]["x"].shape[1:3]
    pbc_x, pbc_y = pbc_cells(params, size, args.cache, classes)
    ref = reference(
        arrays["train"]["x"], ~arrays["train"]["augmented"].astype(bool), params.resize.lab_reference
    )
    rows = []
    for name in args.treatments:
        f, jitter = AUGMENTATIONS.get(name, (TREATMENTS.get(name), None))
        start = time.perf_counter()
        data = {s: {**a, "x": apply(f, a["x"], ref)} for s, a in arrays.items()}
        if jitter is not None:
            train = data["train"]
            train["x"] = augment(train["x"], train["augmented"].astype(bool), jitter)
        trained = train_model(p, data["train"], data["val"])
        row: dict = {"treatment": name}
        for split, (x, y) in {
            "val": (data["val"]["x"], data["val"]["y"]),
            "test": (data["test"]["x"], data["test"]["y"]),
            "pbc": (apply(f, pbc_x, ref), pbc_y),
        }.items():
            head = trained.model.output_names[0]
            prob = predict(trained.model, x, tta=params.evaluate.tta)[head]
            r = classification_report(y, prob.argmax(1), classes)
            row |= {f"{split}_acc": round(r["accuracy"], 3), f"{split}_macro_f1": round(r["macro_f1"], 3)}
            if split == "pbc":
                row |= {f"pbc_recall_{c}": round(r["per_class"][c]["recall"], 2) for c in classes}
                prob = np.empty_like(prob)
                for half in (0, 1):  # two-fold, as evaluate: each half scored as calibrated on the other
                    scored = np.arange(len(x)) % 2 == half
                    adapted = calibrate(trained.model, x[~scored])
                    prob[scored] = predict(adapted, x[scored], tta=params.evaluate.tta)[head]
                r = classification_report(y, prob.argmax(1), classes)
                row |= {"calibrated_acc": round(r["accuracy"], 3), "calibrated_f1": round(r["macro_f1"], 3)}
                row |= {f"calibrated_recall_{c}": round(r["per_class"][c]["recall"], 2) for c in classes}
        row["seconds"] = round(time.perf_counter() - start)
        print(row, flush=True)
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        old = pd.read_csv(args.out) if args.out.exists() else pd.DataFrame()
        pd.concat([old, pd.DataFrame([row])]).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
