"""Class balancing for the TRAIN split by seeded augmentation; val and test pass through untouched.

Each augmented copy draws its randomness from (seed, crop id, copy number) alone, so the same
params give byte-identical images whatever the order or number of images processed.
"""

import hashlib
import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from pipeline.core import paths
from pipeline.core.params import AugmentParams
from pipeline.data import stain
from pipeline.data.images import load_rgb, save_png


@dataclass(frozen=True)
class Copy:
    crop_id: str
    index: int  # 1.. per crop; 0 is the original

    @property
    def sample_id(self) -> str:
        return f"{self.crop_id}_aug{self.index:03d}"


@dataclass(frozen=True)
class Window:
    """Where a crop was cut from its photo, so a copy can be cut from a moved window instead."""

    photo: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int


# The crop's window moved by (x, y) fractions of its side and cut from its photo.
Recut = Callable[[float, float], Image.Image]


def move_window(photo: Image.Image, window: Window, fx: float, fy: float) -> Image.Image:
    """The window moved by `fx`, `fy` of its side, kept inside the photo: the cell is cut by the
    window's edge with real field beyond its other side, as a cell at a photo's frame is."""
    w, h = window.xmax - window.xmin, window.ymax - window.ymin
    x0 = min(max(window.xmin + round(fx * w), 0), photo.width - w)
    y0 = min(max(window.ymin + round(fy * h), 0), photo.height - h)
    return photo.crop((x0, y0, x0 + w, y0 + h))


def rng_for(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on the seed and a stable string key."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, digest])


def _order_key(seed: int, crop_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{crop_id}".encode()).digest()


def plan_balance(train: pd.DataFrame, target_per_class: int, seed: int) -> tuple[list[str], list[Copy]]:
    """The originals kept and the augmented copies that give every class `target_per_class` images.

    A class below the target keeps all its crops and gets copies cycling over them in crop-id
    order, so every original is used evenly. A class above it keeps a seeded subset of its crops.
    """
    kept: list[str] = []
    copies: list[Copy] = []
    for _, part in sorted(train.groupby("label")):
        originals = sorted(part["crop_id"])
        if len(originals) > target_per_class:
            chosen = sorted(originals, key=lambda c: _order_key(seed, c))[:target_per_class]
            originals = sorted(chosen)
        kept += originals
        for n in range(target_per_class - len(originals)):
            copies.append(Copy(originals[n % len(originals)], n // len(originals) + 1))
    return kept, copies


def _affine(img: Image.Image, angle_deg: float, shear_deg: float, zoom: float) -> Image.Image:
    """Rotate, shear and zoom about the centre in one resampling; corners are filled by
    mirroring the crop, so no artificial border colour appears."""
    a, s = math.radians(angle_deg), math.radians(shear_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shear = np.array([[1.0, math.tan(s)], [0.0, 1.0]])
    inv = np.linalg.inv(zoom * rot @ shear)
    pad_x, pad_y = img.width // 2, img.height // 2
    padded = np.pad(np.asarray(img), ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="reflect")
    big = Image.fromarray(padded)
    centre = np.array([big.width / 2, big.height / 2])
    offset = centre - inv @ centre
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    big = big.transform(big.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return big.crop((pad_x, pad_y, pad_x + img.width, pad_y + img.height))


def augment_image(
    img: Image.Image, rng: np.random.Generator, p: AugmentParams, recut: Recut | None = None
) -> Image.Image:
    """One random variant of a crop: its window moved (where `recut` can cut one from the photo),
    flips, 90° turns, small affine, colour and stain jitter."""
    # Draw every random number up front, in a fixed order, whatever the params switch off (later
    # additions draw last: the stain's, then the shift's, so every earlier output is unchanged).
    u = rng.random(18)
    out = img
    if p.shift and recut is not None:
        out = recut((2 * u[16] - 1) * p.shift, (2 * u[17] - 1) * p.shift)
    if p.flip and u[0] < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if p.flip and u[1] < 0.5:
        out = out.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if p.rot90:
        turns = int(u[2] * 4) % 4
        if turns:
            out = out.transpose(
                (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[turns - 1]
            )
    angle = (2 * u[3] - 1) * p.rotation_deg
    shear = (2 * u[4] - 1) * p.shear_deg
    zoom = 1 + (2 * u[5] - 1) * p.zoom
    if angle or shear or zoom != 1:
        out = _affine(out, angle, shear, zoom)
    jitter = (
        (ImageEnhance.Brightness, p.brightness, u[6]),
        (ImageEnhance.Contrast, p.contrast, u[7]),
        (ImageEnhance.Color, p.saturation, u[8]),
    )
    for enhancer, amount, draw in jitter:
        if amount:
            out = enhancer(out).enhance(1 + (2 * draw - 1) * amount)
    if p.hue:
        hsv = np.asarray(out.convert("HSV")).copy()
        shift = round((2 * u[9] - 1) * p.hue * 255)
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
        out = Image.fromarray(hsv, "HSV").convert("RGB")
    if p.stain_scale or p.stain_shift:
        scale, shift = (2 * u[10:13] - 1) * p.stain_scale, (2 * u[13:16] - 1) * p.stain_shift
        out = Image.fromarray(stain.jitter(np.asarray(out), scale, shift))
    return out


def sample_table(split: pd.DataFrame, p: AugmentParams) -> tuple[pd.DataFrame, list[Copy]]:
    """One row per sample of every split, and the augmented copies the train rows call for.

    Val and test pass through untouched; dropped crops (near-duplicates of test cells) and train
    crops left out by balancing are not samples.
    """
    train = split[split["split"] == "train"]
    kept, copies = plan_balance(train, p.target_per_class, p.seed)
    chosen = split["split"].isin(["val", "test"]) | split["crop_id"].isin(kept)
    rows = [{"sample_id": r["crop_id"], **r, "augmented": False} for r in split[chosen].to_dict("records")]
    by_crop = {r["crop_id"]: r for r in rows}
    rows += [{**by_crop[c.crop_id], "sample_id": c.sample_id, "augmented": True} for c in copies]
    return pd.DataFrame(rows), copies


def make_copy(crop: Image.Image, copy: Copy, p: AugmentParams, recut: Recut | None = None) -> Image.Image:
    """The augmented image for one planned copy: a pure function of crop (and its photo), copy id
    and params."""
    return augment_image(crop, rng_for(p.seed, copy.sample_id), p, recut)


def _write_copy(job: tuple[Copy, str, Window | None], params: AugmentParams, folder: Path) -> None:
    copy, image, window = job
    recut = None
    if params.shift and window is not None:
        recut = partial(move_window, load_rgb(Path(window.photo)), window)
    save_png(make_copy(load_rgb(Path(image)), copy, params, recut), folder / f"{copy.sample_id}.png")


def windows(split: pd.DataFrame, photos: Path) -> dict[str, Window]:
    """Each BCCD crop's window in its photo (`augment.shift` moves it); other sources' crops have
    none and are not moved."""
    bccd = split[split["domain"] == paths.BCCD_DOMAIN]
    return {
        r["crop_id"]: Window(
            (photos / r["source_image"]).as_posix(),
            *(int(r[f"crop_{k}"]) for k in ("xmin", "ymin", "xmax", "ymax")),
        )
        for r in bccd.to_dict("records")
    }


def write_copies(
    copies: list[Copy],
    images: Mapping[str, str],
    params: AugmentParams,
    folder: Path,
    windows: Mapping[str, Window] | None = None,
) -> None:
    """Every augmented copy as `<folder>/<sample id>.png`, made on all cores (each copy's randomness
    is its own, so the order does not matter); `images` is each crop's image file, `windows` where
    it was cut from its photo (copies of crops without one are not moved)."""
    windows = windows or {}
    jobs = [(copy, images[copy.crop_id], windows.get(copy.crop_id)) for copy in copies]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(partial(_write_copy, params=params, folder=folder), jobs, chunksize=64))


def sample_path(row: pd.Series) -> str:
    """Where the resize stage finds a sample: a new copy here, or the untouched crop's image."""
    if row["augmented"]:
        return (paths.AUGMENTED_IMAGES / f"{row['sample_id']}.png").as_posix()
    return str(row["image"])


def balance_report(split: pd.DataFrame, samples: pd.DataFrame) -> dict:
    """Samples per split and class, how many of them augmented, and train crops left unused."""
    train_crops = split.loc[split["split"] == "train", "crop_id"]
    report: dict = {"train_crops_unused": int((~train_crops.isin(samples["crop_id"])).sum())}
    for name, part in samples.groupby("split"):
        counts = part.groupby("label")["augmented"].agg(["size", "sum"])
        report[str(name)] = {
            **{str(label): int(n) for label, n in counts["size"].items()},
            **{f"{label}_augmented": int(n) for label, n in counts["sum"].items()},
            "total": len(part),
        }
    return report
