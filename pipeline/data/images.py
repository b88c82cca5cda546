"""Reading and writing images the same way everywhere: RGB in, deterministic PNG out."""

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import PipelineError


def load_rgb(path: Path, expected_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image fully and convert it to 8-bit RGB.

    Grayscale, palette, RGBA and 16-bit images are converted; unreadable, truncated or
    oversized (decompression bomb) files raise PipelineError naming the file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                    img = img.point(lambda v: v / 256).convert("L")
                rgb = img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise PipelineError(f"{path}: refused, too many pixels ({err})") from None
    except UnidentifiedImageError:
        raise PipelineError(f"{path}: not a readable image") from None
    except OSError as err:
        raise PipelineError(f"{path}: cannot decode image ({err})") from None
    if expected_size is not None and rgb.size != expected_size:
        raise PipelineError(
            f"{path}: image is {rgb.size[0]}x{rgb.size[1]} but its annotation says "
            f"{expected_size[0]}x{expected_size[1]}"
        )
    return rgb


def png_bytes(img: Image.Image) -> bytes:
    """PNG-encode with fixed settings, so the same pixels always give the same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def save_png(img: Image.Image, path: Path) -> None:
    path.write_bytes(png_bytes(img))
