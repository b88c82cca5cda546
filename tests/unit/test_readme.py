"""The README's "Where it stands" table gives the committed default's headline numbers: they must be
the committed `metrics/*.json`, rounded as shown, so that a new default cannot leave the table
telling the previous one's; and the README and docs/ link to pages and headings that exist."""

import json
import re
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import REPO

NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def where_it_stands() -> dict[str, str]:
    """Each row's first cell (the measure, whole) mapped to its second (the committed default's
    numbers); `row` finds a row by how its measure starts."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Where it stands", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): cells[1].strip() for cells in rows[2:]}  # past the header and rule


def numbers(cell: str) -> list[str]:
    return [n.replace(",", "") for n in NUMBER.findall(cell)]


def metrics(name: str) -> dict:
    return json.loads((REPO / "metrics" / f"{name}.json").read_text())


def row(table: dict[str, str], start: str) -> str:
    matches = [committed for measure, committed in table.items() if measure.startswith(start)]
    assert len(matches) == 1, f"README 'Where it stands': one row starting {start!r}, found {len(matches)}"
    return matches[0]


def shown(*values: float, digits: int = 3) -> list[str]:
    return [f"{v:.{digits}f}" for v in values]


@pytest.fixture(scope="module")
def table() -> dict[str, str]:
    return where_it_stands()


def test_test_split_row_is_the_committed_metrics(table):
    test = metrics("evaluate")["test"]
    assert numbers(row(table, "`kaggle` test split")) == shown(
        test["accuracy"], *test["accuracy_ci"], test["macro_f1"]
    )


def test_kaggle_test_row_is_the_committed_metrics(table):
    published = metrics("evaluate")["published"]["TEST"]
    measure = next(m for m in table if m.startswith("Kaggle TEST"))
    assert numbers(measure)[0] == str(published["n_images"]), "the fields counted"
    assert numbers(row(table, "Kaggle TEST")) == shown(published["accuracy"], *published["accuracy_ci"])


def test_pbc_row_is_the_committed_metrics(table):
    pbc = metrics("evaluate")["external"]["pbc"]["localiser"]
    lowest = min(c["recall"] for c in pbc["per_class"].values())
    assert numbers(row(table, "PBC-dev zero-shot")) == [
        *shown(pbc["accuracy"], *pbc["accuracy_ci"], pbc["macro_f1"]),
        *shown(lowest, digits=2),
    ]


def test_localiser_row_is_the_committed_metrics(table):
    pbc = metrics("evaluate")["external"]["pbc"]["localiser"]
    bccd = metrics("localize")["full"]
    found = round(pbc["cells_found"] * pbc["n_images"])
    assert numbers(row(table, "localiser")) == [
        str(found),
        str(pbc["n_images"]),
        *shown(bccd["recall"], bccd["precision"]),
    ]


def test_numbers_are_read_as_shown():
    """The parser itself: thousands separators dropped, intervals and ratios split."""
    assert numbers("0.913 [0.838, 0.972] / 0.894") == ["0.913", "0.838", "0.972", "0.894"]
    assert numbers("Kaggle TEST, 2,392 fields") == ["2392"]


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, spaces to hyphens, other punctuation dropped."""
    kept = "".join(c for c in heading.strip().lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


@cache
def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (outside code fences), read once per page."""
    fenced, found = False, set()
    for line in page.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and (m := re.match(r"#+ (.*)", line)):
            found.add(anchor(m.group(1)))
    return found


def test_anchor_is_githubs():
    times = "\u00d7"  # dropped like other punctuation, leaving the two spaces' hyphens
    assert anchor(f"Every model {times} task (`scripts/x.py`)") == "every-model--task-scriptsxpy"
    assert anchor("An ensemble default (`train.members`)") == "an-ensemble-default-trainmembers"


PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES)
def test_links_reach_a_page_and_heading(page):
    """The README and docs/ point at each other: every relative link names a file that exists and,
    after '#', a heading in it, so moving a section cannot leave a reader at a dead link."""
    source = REPO / page
    for target in LINK.findall(source.read_text()):
        if "://" in target:
            continue
        path, _, fragment = target.partition("#")
        dest = (source.parent / path).resolve() if path else source
        assert dest.exists(), f"{page}: link to {target!r}: no such file"
        if fragment:
            assert fragment in anchors(dest), f"{page}: link to {target!r}: no such heading"
