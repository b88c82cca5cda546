"""The resize stage's arrays on disk: one uncompressed `.npz` per split, read by train and evaluate.

numpy's own `savez` stamps the current time into the zip, so identical arrays would give different
bytes on every run (and DVC would see a change); `save_npz` fixes the timestamp. Kept apart from the
resize code, so that train and evaluate depend on the format, not on how the arrays were made.
"""

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed `.npz` whose bytes depend only on the arrays (fixed zip timestamps)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            array = np.asanyarray(array)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            # Zip64 headers only when needed: Python 3.11.2 and 3.11.7 write a forced one differently
            # (other bytes, same arrays); a plain header is the same in both.
            big = array.nbytes + 4096 > zipfile.ZIP64_LIMIT  # + the .npy header
            with zf.open(info, "w", force_zip64=big) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


def load_npz(path: Path, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a resize-stage file; only `keys` when given (each is read from disk separately)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in (data.files if keys is None else keys)}


def class_list(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The cell-type classes a split's arrays were made with, in label order."""
    return [str(c) for c in arrays["classes"]]
