"""Labelled cells from other labs (params `sources`): read a folder of class folders or a CSV of
path,label, map each name to a class, refuse what cannot be trusted, and decide which cells an
adaptation trains on.

A name that maps to nothing is an error naming it; cells of other types (basophils unless kept,
platelets, immature granulocytes...) are dropped and counted. Each image is its own source photo.
"""

import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd
from PIL import Image

from pipeline.core.classes import ALIASES, NUCLEUS, OTHER_CELLS
from pipeline.core.errors import PipelineError
from pipeline.core.params import SourceParams
from pipeline.data.fetch import read_manifest, verify_tree
from pipeline.data.images import load_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MIN_SIDE = 32  # a smaller image holds no classifiable cell
COLUMNS = ["crop_id", "source_image", "label", "nucleus", "domain", "role", "origin", "sha256"]


def class_of(name: str, extra: Mapping[str, str | None], classes: Iterable[str], where: str) -> str | None:
    """The class a source's label names, or None for a cell type that is dropped."""
    key = name.strip().lower().replace("-", " ")
    mapped = {k.lower(): v for k, v in extra.items()}
    if key in mapped:
        target = mapped[key]
        if target is not None and target not in classes:
            raise PipelineError(
                f"{where}: sources maps {name!r} to {target!r}, not one of {', '.join(classes)}"
            )
        return target
    if key in ALIASES:
        return ALIASES[key] if ALIASES[key] in classes else None  # basophils unless kept
    if key in OTHER_CELLS or key.replace(" ", "_") in OTHER_CELLS:
        return None
    raise PipelineError(
        f"{where}: unknown class name {name!r}: map it in the source's `classes` (to a class, or null)"
    )


def folder_rows(root: Path) -> list[tuple[Path, str]]:
    """(image, label) of every image in `root/<label>/`."""
    if not root.is_dir():
        raise PipelineError(f"{root}: no such folder of class folders")
    rows = []
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not folder.is_dir():
            raise PipelineError(f"{folder}: a file among the class folders (expected only <class>/ folders)")
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if not files:
            raise PipelineError(f"{folder}: empty class folder")
        rows += [(path, folder.name) for path in files]
    if not rows:
        raise PipelineError(f"{root}: no class folders")
    return rows


def csv_rows(path: Path) -> list[tuple[Path, str]]:
    """(image, label) of every row of a path,label CSV; paths are relative to the CSV's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read the source CSV ({err})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"path", "label"} - set(reader.fieldnames or ())
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected path,label)")
    rows = []
    for line, row in enumerate(reader, start=2):
        image = path.parent / (row["path"] or "").strip()
        if not (row["path"] or "").strip() or not image.is_file():
            raise PipelineError(f"{path}:{line}: no such image file {image}")
        rows.append((image, (row["label"] or "").strip()))
    if not rows:
        raise PipelineError(f"{path}: no rows")
    return rows


def read_source(
    name: str, p: SourceParams, classes: Iterable[str], find_cell: Callable[[Image.Image], Image.Image | None]
) -> tuple[pd.DataFrame, dict]:
    """The source's cells (one row each, COLUMNS but `role`, with the `image`s decoded) and a report.
    With `cut: localiser` each image is cut to `find_cell`'s cell (the stage passes the localiser's
    best cell, cut like a BCCD crop, as `wbc predict` would: a lab's cells reach the model at BCCD's
    scale); where it finds none the whole image is kept, and counted.

    Refused: a file that is not an image, an image smaller than MIN_SIDE, an unknown class name,
    the same bytes under two classes, a file that does not match the source's manifest.
    """
    classes = list(classes)
    root = Path(p.path)
    if p.manifest is not None:
        tree = root if p.kind == "folders" else root.parent
        try:
            verify_tree(tree, read_manifest(Path(p.manifest)), Path(p.manifest))
        except (PipelineError, OSError) as err:
            raise PipelineError(f"sources.{name}: {tree}: {err}") from None
    found = folder_rows(root) if p.kind == "folders" else csv_rows(root)
    rows, dropped, by_hash, whole = [], {}, {}, 0
    for path, label in found:
        where = f"sources.{name}: {path}"
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise PipelineError(f"{where}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
        cls = class_of(label, p.classes, classes, where)
        if cls is None:
            dropped[label] = dropped.get(label, 0) + 1
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in by_hash:
            other, other_cls = by_hash[digest]
            if other_cls != cls:
                raise PipelineError(
                    f"{where}: the same image bytes as {other}, labelled {other_cls} there, {cls} here"
                )
            dropped["duplicate file"] = dropped.get("duplicate file", 0) + 1
            continue
        by_hash[digest] = (path, cls)
        image = load_rgb(path)
        if min(image.size) < MIN_SIDE:
            raise PipelineError(f"{where}: {image.size[0]}x{image.size[1]} pixels, smaller than {MIN_SIDE}")
        if p.cut == "localiser":
            cell = find_cell(image)
            whole += cell is None
            image = image if cell is None else cell
        crop_id = f"{p.domain}_{len(rows):05d}"
        rows.append({"crop_id": crop_id, "source_image": crop_id, "label": cls, "nucleus": NUCLEUS[cls],
                     "domain": p.domain, "origin": path.as_posix(), "sha256": digest,
                     "image": image})  # fmt: skip
    if not rows:
        raise PipelineError(f"sources.{name}: {p.path}: no cells of the model's classes")
    frame = pd.DataFrame(rows)
    report = {"cells": len(frame), **{c: int((frame["label"] == c).sum()) for c in classes},
              "dropped": dict(sorted(dropped.items())), "no_cell_found_whole_image": whole}  # fmt: skip
    return frame, report


def draw_roles(cells: pd.DataFrame, take_per_class: int, seed: int) -> pd.Series:
    """`train` for k cells per class drawn by seed (by a hash of seed and content, so the draw does
    not depend on file order), `test` for the rest; with k = 0 every cell is `split` (split like
    BCCD, by source image)."""
    if take_per_class == 0:
        return pd.Series("split", index=cells.index)
    roles = pd.Series("test", index=cells.index)
    for label, part in cells.groupby("label"):
        if len(part) <= take_per_class:
            raise PipelineError(
                f"sources: domain {cells['domain'].iloc[0]}: {len(part)} {label} cells, not more than "
                f"take_per_class {take_per_class}: none would be left to test on"
            )
        order = sorted(
            part.index, key=lambda i: hashlib.sha256(f"{seed}:{part.at[i, 'sha256']}".encode()).digest()
        )
        roles[order[:take_per_class]] = "train"
    return roles
