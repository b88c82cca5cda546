import numpy as np
import pandas as pd
import pytest

from pipeline.core.classes import CLASSES
from pipeline.core.errors import PipelineError
from pipeline.data.resize import load_npz, save_npz, split_arrays
from tests.helpers import smear

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
