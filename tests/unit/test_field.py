"""What lies beyond a photo's field (black corners, an eyepiece's surround) is filled from the field
before a crop is resized: only such crops change, and nothing dark is left."""

import dataclasses
import io

import numpy as np
from PIL import Image

from pipeline.data.field import DARK, beyond_field_mask, fill_beyond_field
from pipeline.data.resize import Treatment, resize_image
from tests.helpers import smear

CROP = smear(7, (120, 100), [(30, 25, 90, 85)])
KEEP = Treatment("reinhard", (69.95, 10.97, -12.29, 10.81, 14.14, 19.95))
FILL = dataclasses.replace(KEEP, fill_beyond=True)


def corner(img: Image.Image, reach: int) -> Image.Image:
    """The crop with a black triangle at its top-left corner, as a rotated field leaves."""
    rgb = np.asarray(img).copy()
    y, x = np.mgrid[0 : img.height, 0 : img.width]
    rgb[x + y < reach] = 0
    return Image.fromarray(rgb)


def test_a_crop_with_nothing_beyond_the_field_is_the_same_image():
    assert fill_beyond_field(CROP) is CROP


def test_a_black_corner_is_filled_from_the_nearest_field_pixels():
    cut = corner(CROP, 50)
    beyond = beyond_field_mask(np.asarray(cut))
    y, x = np.mgrid[0 : cut.height, 0 : cut.width]
    assert beyond[x + y < 50].all() and not beyond[x + y > 51].any()  # the corner and 1 px of halo
    assert beyond[x + y == 50].all()  # the halo: the ring just outside the black
    filled = np.asarray(fill_beyond_field(cut))
    assert (filled.max(axis=2) > DARK).all()
    assert np.array_equal(filled[x + y > 51], np.asarray(CROP)[x + y > 51])  # the field untouched
    # a filled pixel is copied from the field: the corner's tip, from the field's nearest pixels
    nearest = [
        tuple(CROP.getpixel((c, r))) for r in range(20, 32) for c in range(20, 32) if 51 <= r + c <= 52
    ]
    assert tuple(filled[0, 0]) in nearest


def test_jpeg_ringing_along_the_edge_is_filled_too():
    """JPEG leaves dark, not black, pixels along the edge: none as dark as DARK is left."""
    buffer = io.BytesIO()
    corner(CROP, 50).save(buffer, "JPEG", quality=75)
    filled = np.asarray(fill_beyond_field(Image.open(buffer).convert("RGB")))
    assert (filled.max(axis=2) > DARK).all()


def test_a_dark_spot_inside_the_field_is_not_beyond_it():
    rgb = np.asarray(CROP).copy()
    rgb[45:55, 55:65] = 0
    spot = Image.fromarray(rgb)
    assert not beyond_field_mask(rgb).any()
    assert fill_beyond_field(spot) is spot


def test_a_crop_wholly_beyond_the_field_is_left_as_it_is():
    black = Image.new("RGB", (40, 40))
    assert fill_beyond_field(black) is black


def test_resize_fills_when_asked_and_only_then():
    cut = corner(CROP, 50)
    filled = resize_image(cut, 96, 96, FILL)
    assert np.array_equal(filled, resize_image(fill_beyond_field(cut), 96, 96, KEEP))
    assert not np.array_equal(filled, resize_image(cut, 96, 96, KEEP))  # "keep": as before
    assert np.array_equal(resize_image(CROP, 96, 96, FILL), resize_image(CROP, 96, 96, KEEP))
