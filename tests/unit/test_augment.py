from functools import partial

import numpy as np
import pandas as pd
import pytest

from pipeline.core.params import load_params
from pipeline.data import stain
from pipeline.data.augment import (
    Copy,
    Window,
    augment_image,
    make_copy,
    move_window,
    plan_balance,
    rng_for,
    sample_table,
    windows,
)
from pipeline.data.images import png_bytes
from tests.helpers import REPO, smear

PARAMS = load_params(REPO / "params.yaml").augment
CROP = smear(3, (96, 96), [(20, 20, 76, 76)])


def split_table() -> pd.DataFrame:
    rows = [("n", 5, "neutrophil"), ("e", 2, "eosinophil"), ("m", 1, "monocyte")]
    table = [
        {"crop_id": f"{p}{i}", "source_image": f"{p}{i}.jpg", "label": label, "group": 0, "split": "train"}
        for p, n, label in rows
        for i in range(n)
    ]
    table += [
        {"crop_id": "v0", "source_image": "v0.jpg", "label": "monocyte", "group": 1, "split": "val"},
        {"crop_id": "t0", "source_image": "t0.jpg", "label": "monocyte", "group": 2, "split": "test"},
        {"crop_id": "d0", "source_image": "d0.jpg", "label": "monocyte", "group": 2, "split": "dropped"},
    ]
    return pd.DataFrame(table)


def table_for(target: int, seed: int = 0):
    return sample_table(split_table(), PARAMS.model_copy(update={"target_per_class": target, "seed": seed}))


def test_train_is_balanced_and_other_splits_untouched():
    samples, copies = table_for(6)
    train = samples[samples["split"] == "train"]
    assert train["label"].value_counts().to_dict() == {"neutrophil": 6, "eosinophil": 6, "monocyte": 6}
    assert len(copies) == 1 + 4 + 5
    others = samples[samples["split"] != "train"]
    assert list(others["sample_id"]) == ["v0", "t0"]  # dropped twin gone, nothing augmented
    assert not others["augmented"].any()


def test_copies_cycle_evenly_over_originals():
    _, copies = plan_balance(split_table().query("split == 'train'"), 6, seed=0)
    eos = [c.sample_id for c in copies if c.crop_id.startswith("e")]
    assert eos == ["e0_aug001", "e1_aug001", "e0_aug002", "e1_aug002"]


def test_a_class_above_target_keeps_a_seeded_subset_of_originals():
    samples, copies = table_for(3)
    neutrophils = samples[samples["label"] == "neutrophil"]
    assert len(neutrophils) == 3 and not neutrophils["augmented"].any()
    assert not [c for c in copies if c.crop_id.startswith("n")]
    assert table_for(3)[0].equals(samples)
    subsets = {tuple(table_for(3, seed)[0].query("label == 'neutrophil'")["crop_id"]) for seed in range(6)}
    assert len(subsets) > 1


def test_copies_are_byte_identical_for_the_same_seed_and_id():
    _, copies = plan_balance(split_table().query("split == 'train'"), 2, seed=0)
    (copy,) = [c for c in copies if c.crop_id == "m0"]
    first = png_bytes(make_copy(CROP, copy, PARAMS))
    assert png_bytes(make_copy(CROP, copy, PARAMS)) == first
    other_seed = PARAMS.model_copy(update={"seed": PARAMS.seed + 1})
    assert png_bytes(make_copy(CROP, copy, other_seed)) != first


def test_augmentation_changes_pixels_but_keeps_size_and_colour_range():
    out = np.asarray(augment_image(CROP, rng_for(0, "x"), PARAMS))
    assert out.shape == np.asarray(CROP).shape and out.dtype == np.uint8
    assert not np.array_equal(out, np.asarray(CROP))
    assert abs(out.mean() - np.asarray(CROP).mean()) < 40


def test_all_operations_off_is_the_identity():
    off = PARAMS.model_copy(
        update=dict(flip=False, rot90=False, rotation_deg=0.0, shear_deg=0.0, zoom=0.0,
                    brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    )  # fmt: skip
    assert np.array_equal(np.asarray(augment_image(CROP, rng_for(0, "x"), off)), np.asarray(CROP))


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_rot90_only_turns_the_image(turns):
    only = PARAMS.model_copy(
        update=dict(flip=False, rotation_deg=0.0, shear_deg=0.0, zoom=0.0,
                    brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    )  # fmt: skip
    seen = set()
    for i in range(40):
        out = augment_image(CROP, rng_for(i, "k"), only)
        seen.update(k for k in range(4) if np.array_equal(np.asarray(out), np.rot90(np.asarray(CROP), k)))
    assert turns in seen


def test_stain_jitter_changes_the_stain_not_the_cell_and_is_seeded():
    crop = smear(3, (64, 64), [(12, 12, 52, 52)])
    same = stain.jitter(np.asarray(crop), np.zeros(3), np.zeros(3)).astype(int)
    assert np.abs(same - np.asarray(crop).astype(int)).max() == 0  # no jitter: the crop itself
    p = load_params(REPO / "params.yaml").augment.model_copy(update={"stain_scale": 0.3, "stain_shift": 0.02})
    a, b = make_copy(crop, Copy("c1", 1), p), make_copy(crop, Copy("c1", 1), p)
    assert png_bytes(a) == png_bytes(b)
    plain = make_copy(crop, Copy("c1", 1), p.model_copy(update={"stain_scale": 0.0, "stain_shift": 0.0}))
    assert png_bytes(a) != png_bytes(plain)
    # Same geometry: the stained pixels (nucleus darker than background) stay where they were.
    dark_a = np.asarray(a.convert("L")) < np.median(np.asarray(a.convert("L")))
    dark_plain = np.asarray(plain.convert("L")) < np.median(np.asarray(plain.convert("L")))
    assert (dark_a == dark_plain).mean() > 0.9


def test_shift_cuts_the_copy_from_a_moved_window_of_the_photo():
    only = PARAMS.model_copy(
        update=dict(flip=False, rot90=False, rotation_deg=0.0, shear_deg=0.0, zoom=0.0,
                    brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, shift=0.4)
    )  # fmt: skip
    photo = smear(5, (320, 240), [(130, 90, 190, 150)])
    window = Window("p.jpg", 120, 80, 200, 160)
    crop = photo.crop((120, 80, 200, 160))
    recut = partial(move_window, photo, window)
    assert png_bytes(recut(0.0, 0.0)) == png_bytes(crop)  # not moved: the crop itself
    assert np.array_equal(np.asarray(recut(0.25, -0.5)), np.asarray(photo.crop((140, 40, 220, 120))))
    assert recut(9.0, 9.0).size == crop.size  # kept inside the photo
    assert np.array_equal(np.asarray(recut(9.0, 9.0)), np.asarray(photo.crop((240, 160, 320, 240))))
    moved = {png_bytes(make_copy(crop, Copy("c1", i), only, recut)) for i in range(1, 6)}
    assert len(moved) == 5 and png_bytes(crop) not in moved
    # Without a photo (another source's crop) or with shift 0 nothing moves, and the shift's draws
    # come last: every other augmentation of a copy is as before.
    assert png_bytes(make_copy(crop, Copy("c1", 1), only)) == png_bytes(crop)
    plain = make_copy(crop, Copy("c1", 1), PARAMS)
    assert png_bytes(make_copy(crop, Copy("c1", 1), PARAMS, recut)) == png_bytes(plain)


def test_windows_are_the_bccd_crops_windows_in_their_photos(tmp_path):
    split = split_table().assign(
        domain=["bccd"] * 10 + ["pbc"], crop_xmin=1.0, crop_ymin=2.0, crop_xmax=30.0, crop_ymax=31.0
    )
    found = windows(split, tmp_path)
    assert set(found) == set(split["crop_id"][:10])
    assert found["n0"] == Window((tmp_path / "n0.jpg").as_posix(), 1, 2, 30, 31)
