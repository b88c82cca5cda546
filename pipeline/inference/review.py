"""What a technologist reviews after `wbc predict`: one self-contained HTML page (each photo with its
boxes and labels, the differential as a chart, the unsure cells flagged), and every cell cut into
`<folder>/<predicted class>/`, so the wrong ones can be moved and the folder handed back as a
labelled source."""

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from pipeline.core.atomic import atomic_dir, atomic_write_bytes
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.data.images import load_rgb
from pipeline.inference.classify import Cell, ImageResult, cut, differential

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")  # one per class, in order
FLAG = "#ffbf00"  # the outline of a cell to review
THUMB_WIDTH = 640  # photos are shown (and embedded) at most this wide


def confidence(cell: Cell) -> float:
    return max(cell.probabilities.values())


def _embed(img: Image.Image) -> tuple[str, float]:
    """A JPEG data URI of the photo at most THUMB_WIDTH wide, and its scale from the original."""
    scale = min(1.0, THUMB_WIDTH / img.width)
    shown = img.resize((round(img.width * scale), round(img.height * scale))) if scale < 1 else img
    buf = io.BytesIO()
    shown.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), scale


def _chart(batch: dict, names: Sequence[str]) -> str:
    """The differential as horizontal SVG bars (no script, no network: the page stands alone)."""
    rows = []
    for i, name in enumerate(names):
        pct, count = batch["percent"][name], batch["count"][name]
        y = 8 + 30 * i
        rows.append(
            f'<text x="0" y="{y + 15}">{html.escape(name)}</text>'
            f'<rect x="110" y="{y}" width="{3 * pct:.1f}" height="20" fill="{COLOURS[i % len(COLOURS)]}"/>'
            f'<text x="{116 + 3 * pct:.1f}" y="{y + 15}">{pct:.1f}% ({count})</text>'
        )
    return f'<svg class="chart" width="520" height="{16 + 30 * len(names)}">{"".join(rows)}</svg>'


def _photo(result: ImageResult, names: Sequence[str], below: float) -> str:
    title = html.escape(result.image)
    if not result.cells:
        return (
            f'<section class="photo"><h3>{title}</h3><p class="note">{html.escape(result.note)}</p></section>'
        )
    try:
        img = load_rgb(Path(result.image))
    except PipelineError as err:
        return f'<section class="photo"><h3>{title}</h3><p class="note">{html.escape(str(err))}</p></section>'
    uri, scale = _embed(img)
    w, h = round(img.width * scale), round(img.height * scale)
    marks, rows = [], []
    for n, cell in enumerate(result.cells, 1):
        x0, y0, x1, y1 = (round(v * scale) for v in cell.box)
        sure = confidence(cell)
        colour = COLOURS[list(names).index(cell.label) % len(COLOURS)]
        flagged = sure < below
        dash = ' stroke-dasharray="6 3"' if flagged else ""
        marks.append(
            f'<rect class="cell{" review" if flagged else ""}" x="{x0}" y="{y0}" width="{x1 - x0}" '
            f'height="{y1 - y0}" fill="none" stroke="{FLAG if flagged else colour}" stroke-width="3"{dash}/>'
            f'<text x="{x0 + 3}" y="{max(y0 - 4, 12)}" fill="{colour}">{n}. {html.escape(cell.label)} '
            f"{sure:.0%}</text>"
        )
        rows.append(
            f"<tr{' class=review' if flagged else ''}><td>{n}</td><td>{html.escape(cell.label)}</td>"
            f"<td>{sure:.1%}</td><td>{'review' if flagged else ''}</td></tr>"
        )
    return (
        f'<section class="photo"><h3>{title}</h3><svg width="{w}" height="{h}">'
        f'<image href="{uri}" width="{w}" height="{h}"/>{"".join(marks)}</svg>'
        f"<table><tr><th>cell</th><th>label</th><th>confidence</th><th></th></tr>{''.join(rows)}</table>"
        "</section>"
    )


def report_html(results: Sequence[ImageResult], names: Sequence[str], below: float, model: str) -> str:
    """The review page: the differential, the cells to review, then every photo."""
    cells = [c for r in results for c in r.cells]
    batch = differential([c.label for c in cells], names)
    unsure = sum(confidence(c) < below for c in cells)
    empty = sum(not r.cells for r in results)
    style = (
        "body{font-family:sans-serif;margin:24px;max-width:1100px}.photo{border-top:1px solid #ccc;"
        "padding:8px 0}.photo svg{display:block}.photo text{font:bold 13px sans-serif}"
        ".chart text{font:13px sans-serif}table{border-collapse:collapse;margin:6px 0}"
        "td,th{padding:2px 10px;text-align:left}tr.review{background:#fff3c4}.note{color:#a00}"
        ".summary b{font-size:1.1em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>WBC differential</title>"
        f"<style>{style}</style></head><body><h1>White-cell differential</h1>"
        f"<p class='summary'><b>{batch['cells']}</b> cells in <b>{len(results)}</b> photos "
        f"({empty} without a cell); <b class='unsure'>{unsure}</b> below {below:.0%} confidence, "
        f"outlined in amber and dashed: review them. Model: {html.escape(model)}</p>"
        f"{_chart(batch, names)}{''.join(_photo(r, names, below) for r in results)}</body></html>"
    )


def write_report(path: Path, results: Sequence[ImageResult], names: Sequence[str], below: float,
                 model: str) -> None:  # fmt: skip
    atomic_write_bytes(Path(path), report_html(results, names, below, model).encode())


def export_target(folder: Path) -> Path:
    """`folder`, if crops can be exported there: a new or empty folder (checked before any work)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise PipelineError(f"{folder}: exists and is not empty; export into a new folder")
    return folder


def export_crops(folder: Path, results: Sequence[ImageResult], names: Sequence[str], params: Params) -> int:
    """Every cell, cut as the crop stage cuts it at the photo's resolution, into
    `folder/<predicted class>/<photo>_<cell>.png`; the folder appears whole or not at all, and an
    existing one is never mixed into. Returns the number of cells written."""
    folder = export_target(folder)
    written, stems = 0, set()
    with atomic_dir(folder) as tmp:
        for name in names:
            (tmp / name).mkdir()
        for result in results:
            if not result.cells:
                continue
            img = load_rgb(Path(result.image))
            stem = Path(result.image).stem
            stem = stem if stem not in stems else f"{stem}-{len(stems)}"  # same name in two folders
            stems.add(stem)
            for n, cell in enumerate(result.cells, 1):
                cut(img, cell.box, params).save(tmp / cell.label / f"{stem}_cell{n}.png")
                written += 1
    return written
