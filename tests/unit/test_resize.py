import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.classes import CLASSES
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.data.arrays import load_npz, save_npz
from pipeline.data.resize import PLAIN, Treatment, resize_image, split_arrays, treatment
from tests.helpers import REPO, smear

IMAGES = {f"p{i}.png": smear(i, (50 + i * 10, 40 + i * 5), [(10, 10, 40, 40)]) for i in range(3)}


def samples() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": ["c2", "c0", "c1"],
            "crop_id": ["c2", "c0", "c0"],
            "source_image": ["s2.jpg", "s0.jpg", "s0.jpg"],
            "label": ["monocyte", "neutrophil", "lymphocyte"],
            "augmented": [False, False, True],
            "path": ["p2.png", "p0.png", "p1.png"],
        }
    )


def test_split_arrays_shapes_labels_and_order():
    arrays = split_arrays(samples(), CLASSES, IMAGES.__getitem__, 24, 32)
    assert arrays["x"].shape == (3, 24, 32, 3) and arrays["x"].dtype == np.uint8
    assert list(arrays["sample_id"]) == ["c0", "c1", "c2"]  # sorted, whatever the manifest order
    assert list(arrays["y"]) == [0, 2, 3]
    assert list(arrays["nucleus"]) == [0, 1, 1]  # poly, mono, mono
    assert list(arrays["classes"]) == list(CLASSES)


def test_the_params_treatment_is_the_one_every_caller_gets():
    p = load_params(REPO / "params.yaml").resize
    reinhard = p.model_copy(update={"colour": "reinhard", "beyond_field": "fill"})
    assert treatment(reinhard) == Treatment("reinhard", tuple(p.lab_reference), fill_beyond=True)
    stained = p.model_copy(update={"colour": "stain_norm", "beyond_field": "keep"})
    assert treatment(stained) == Treatment("stain_norm", tuple(p.stain_reference))
    assert treatment(p.model_copy(update={"colour": "rgb", "beyond_field": "keep"})) == PLAIN
    grey = treatment(p.model_copy(update={"colour": "gray"}))
    assert grey.colour == "gray" and grey.reference == ()
    arrays = split_arrays(samples(), CLASSES, IMAGES.__getitem__, 24, 32, grey)
    for x, path in zip(arrays["x"], samples().sort_values("sample_id")["path"], strict=True):
        assert np.array_equal(x, resize_image(IMAGES[path], 24, 32, grey))
    assert (arrays["x"][..., 0] == arrays["x"][..., 2]).all()


def test_unknown_label_is_refused():
    bad = samples().assign(label=["monocyte", "basophil", "lymphocyte"])
    with pytest.raises(PipelineError, match="basophil"):
        split_arrays(bad, CLASSES, IMAGES.__getitem__, 8, 8)


def test_npz_is_byte_identical_and_loads_back(tmp_path):
    arrays = split_arrays(samples(), CLASSES, IMAGES.__getitem__, 16, 16)
    save_npz(tmp_path / "a.npz", arrays)
    save_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = load_npz(tmp_path / "a.npz")
    assert set(loaded) == set(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)
    # Plain zip headers, which every Python 3.11 writes alike (a forced zip64 header, version 45,
    # differs between 3.11.2 and 3.11.7): version 20 needed and the real sizes in each local header.
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert all(i.extract_version == 20 and not i.extra for i in zf.infolist())


def test_stain_normalisation_maps_another_stain_strength_onto_the_reference():
    from pipeline.data import stain

    crop = np.asarray(smear(5, (64, 64), [(12, 12, 52, 52)]))
    hed = stain.densities(crop)
    reference = tuple(float(np.percentile(hed[..., c], q)) for c in (0, 1) for q in (50, 99))
    stronger = stain.add_density(crop, hed * np.array([0.8, 1.5, 0.0]))  # another lab: more H and E
    assert np.abs(stronger.astype(int) - crop).max() > 20
    back = stain.densities(stain.normalise(stronger, reference))
    for c in (0, 1):
        got = np.percentile(back[..., c], [50, 99])
        np.testing.assert_allclose(got, reference[2 * c : 2 * c + 2], atol=0.004)
    # off by default: the resize stage's arrays do not change
    img = Image.fromarray(crop)
    plain = np.asarray(img.resize((32, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(resize_image(img, 32, 32), plain)
    grey = resize_image(img, 32, 32, Treatment("gray"))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_reinhard_puts_another_labs_colours_onto_the_reference():
    from skimage.color import lab2rgb, rgb2lab

    from pipeline.data import stain

    crop = np.asarray(smear(7, (64, 64), [(12, 12, 52, 52)]))
    lab = rgb2lab(crop)
    reference = (*lab.reshape(-1, 3).mean(0), *lab.reshape(-1, 3).std(0))
    warmer = lab * [0.9, 0.7, 0.8] + [5.0, 6.0, 14.0]  # another lab: paler, a peach background
    other = (np.clip(lab2rgb(warmer), 0, 1) * 255).round().astype(np.uint8)
    assert np.abs(other.astype(int) - crop).max() > 20
    back = stain.reinhard(other, reference)
    assert np.abs(back.astype(int) - crop).mean() < 2.0  # the same cell in the reference's colours
    got = rgb2lab(back).reshape(-1, 3)
    np.testing.assert_allclose(got.mean(0), reference[:3], atol=0.5)
    np.testing.assert_allclose(got.std(0), reference[3:], rtol=0.05)
    colour = Treatment("reinhard", reference)  # at the model's input size: after resizing
    resized = resize_image(Image.fromarray(other), 32, 32)
    treated = resize_image(Image.fromarray(other), 32, 32, colour)
    assert np.array_equal(treated, stain.reinhard(resized, reference))
    with pytest.raises(PipelineError, match="'grey'"):
        Treatment("grey")


def test_reinhard_ignores_black_fill():
    """A rotated field's black corners are neither measured nor changed (Kaggle TEST has them):
    the stained pixels alone get the reference's statistics."""
    from skimage.color import rgb2lab

    from pipeline.data import stain

    cornered = np.asarray(smear(8, (64, 64), [(12, 12, 52, 52)])).copy()
    cornered[:24, :24] = 0
    reference = (70.0, 11.0, -12.0, 11.0, 14.0, 20.0)
    out = stain.reinhard(cornered, reference)
    assert (out[:24, :24] == 0).all()
    stained = rgb2lab(out)[cornered.max(axis=-1) > stain.FILL]
    np.testing.assert_allclose(stained.mean(0), reference[:3], atol=1.0)
    np.testing.assert_allclose(stained.std(0), reference[3:], rtol=0.1)
    assert (stain.reinhard(np.zeros((8, 8, 3), np.uint8), reference) == 0).all()


def test_lab_conversion_is_scikit_images_bit_for_bit():
    """Reinhard's Lab by table lookup equals `skimage.color.rgb2lab` exactly (checked on all 16.7M
    colours once; here every level of every channel, and a random crop), so the resize stage's
    arrays did not change with it."""
    from skimage.color import rgb2lab

    from pipeline.data import stain

    levels = np.arange(256, dtype=np.uint8)
    for pixels in (
        np.stack([levels, levels[::-1], np.roll(levels, 85)], axis=-1).reshape(16, 16, 3),
        np.random.default_rng(5).integers(0, 256, (96, 96, 3), dtype=np.uint8),
    ):
        assert np.array_equal(stain.rgb2lab(pixels), rgb2lab(pixels))
