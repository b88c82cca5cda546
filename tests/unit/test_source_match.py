"""A field is traced to the photo it was made from: rotated, shifted and mirrored copies of
generated 'smears' find their own photo among others, a duplicate photo is named as the same
picture, and a field from no candidate finds none."""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from pipeline.evaluation.source_match import MIN_INLIERS, features, match, photo_features, photo_index


def cells(seed: int) -> Image.Image:
    """A 640x480 field of red-cell-like rings at random places: a layout unique to the seed."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (640, 480), (235, 225, 215))
    draw = ImageDraw.Draw(img)
    for _ in range(45):
        x, y, r = rng.uniform(0, 640), rng.uniform(0, 480), rng.uniform(14, 32)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(200, 140, 150), outline=(150, 90, 110), width=4)
        draw.ellipse((x - r / 3, y - r / 3, x + r / 3, y + r / 3), fill=(225, 180, 185))
    return img.filter(ImageFilter.GaussianBlur(1.5))


def augmented(photo: Image.Image, angle: float, shift: tuple[int, int], mirror: bool) -> Image.Image:
    """Like a Kaggle TEST field: half size, rotated with black corners, shifted, maybe mirrored."""
    field = photo.resize((320, 240)).rotate(angle, translate=shift, fillcolor=(0, 0, 0))
    return ImageOps.mirror(field) if mirror else field


def test_each_field_finds_the_photo_it_was_made_from(tmp_path):
    for n in range(4):
        cells(n).save(tmp_path / f"BloodImage_{n:05d}.jpg", quality=95)
    photos = photo_index(tmp_path)
    assert sorted(photos) == [f"BloodImage_{n:05d}.jpg" for n in range(4)]
    rounds = [["BloodImage_00000.jpg", "BloodImage_00001.jpg"], sorted(photos)]
    views = [(12, (10, -8), False), (-20, (0, 15), True), (5, (-12, 0), True)]
    for n, (angle, shift, mirror) in enumerate(views):
        found = match(features(augmented(cells(n), angle, shift, mirror)), photos, rounds)
        assert found.photo == f"BloodImage_{n:05d}.jpg"  # n = 2 only in the second round
        assert found.inliers >= MIN_INLIERS and found.same_as == ()


def test_a_duplicate_photo_is_named_and_an_unknown_field_matches_nothing():
    seeds = {"BloodImage_00010.jpg": 10, "BloodImage_00011.jpg": 11, "BloodImage_00099.jpg": 10}
    photos = {name: photo_features(cells(seed)) for name, seed in seeds.items()}
    listed_twice = [*sorted(photos), "BloodImage_00010.jpg"]
    found = match(features(augmented(cells(10), 8, (5, 5), False)), photos, [listed_twice])
    assert (found.photo, found.same_as) == ("BloodImage_00010.jpg", ("BloodImage_00099.jpg",))
    stranger = match(features(augmented(cells(77), 8, (5, 5), False)), photos, [sorted(photos)])
    assert (stranger.photo, stranger.inliers) == ("", 0)
    blank = match(features(Image.new("RGB", (320, 240), "white")), photos, [sorted(photos)])
    assert blank.photo == ""
