"""The Kaggle `labels.csv`: the white-cell type(s) of each BCCD image, by image number."""

import csv
import io
import re
from pathlib import Path

from pipeline.core.classes import KNOWN_CLASSES
from pipeline.core.errors import PipelineError


def parse_category(text: str) -> tuple[str, ...]:
    """'NEUTROPHIL, EOSINOPHIL' -> ('neutrophil', 'eosinophil'); '' -> ()."""
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def read_labels(path: Path) -> dict[int, tuple[str, ...]]:
    """Image number -> the classes its row names (empty tuple for an empty label).

    Tolerates a BOM and CRLF line ends; refuses missing columns, unknown class names and
    an image number given twice with different labels.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read labels ({err})") from None
    rows = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"Image", "Category"} - set(rows.fieldnames or ())
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    labels: dict[int, tuple[str, ...]] = {}
    for line, row in enumerate(rows, start=2):
        image = (row["Image"] or "").strip()
        if not re.fullmatch(r"\d+", image):
            raise PipelineError(f"{path}:{line}: Image is not an image number: {image!r}")
        classes = parse_category(row["Category"] or "")
        unknown = sorted(set(classes) - KNOWN_CLASSES)
        if unknown:
            raise PipelineError(f"{path}:{line}: unknown class name(s) {', '.join(unknown)}")
        number = int(image)
        if number in labels and labels[number] != classes:
            raise PipelineError(
                f"{path}:{line}: image {number} is labelled twice, differently "
                f"({', '.join(labels[number]) or 'empty'} vs {', '.join(classes) or 'empty'})"
            )
        labels[number] = classes
    return labels
