import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.data.images import load_rgb
from tests.helpers import smear

RGB = smear(1, (40, 30), [(5, 5, 25, 25)])


@pytest.mark.parametrize(
    ("make", "tolerance"),
    [
        (lambda: RGB.convert("L"), 1),
        (lambda: RGB.convert("RGBA"), 1),
        (lambda: RGB.convert("P"), 40),  # the web palette quantises colours
        (lambda: Image.fromarray(np.asarray(RGB.convert("L")).astype(np.uint16) * 257), 1),
    ],
    ids=["grayscale", "rgba", "palette", "16-bit"],
)
def test_other_modes_are_converted_to_rgb(tmp_path, make, tolerance):
    path = tmp_path / "img.png"
    make().save(path)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (40, 30)
    gray = np.asarray(RGB.convert("L"), np.int16)
    assert np.abs(np.asarray(img.convert("L"), np.int16) - gray).max() <= tolerance


def test_truncated_zero_byte_and_text_files_name_the_file(tmp_path):
    RGB.save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("truncated.jpg", "empty.jpg", "text.jpg"):
        with pytest.raises(PipelineError) as err:
            load_rgb(tmp_path / name)
        assert name in str(err.value)


def test_size_must_match_the_annotation(tmp_path):
    RGB.save(tmp_path / "a.png")
    with pytest.raises(PipelineError, match="annotation says 640x480"):
        load_rgb(tmp_path / "a.png", expected_size=(640, 480))


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    RGB.save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(PipelineError, match="too many pixels"):
        load_rgb(tmp_path / "a.png")
