"""Pascal VOC annotations, parsed with defusedxml so hostile XML (entities, bombs) is refused."""

from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from pipeline.core.errors import PipelineError

# The object names BCCD uses. Any other name (a typo such as "wbc") is an error rather than an
# object silently ignored, which would turn a white cell into "no WBC box".
OBJECT_NAMES = ("WBC", "RBC", "Platelets")


@dataclass(frozen=True)
class Box:
    """A pixel box, VOC convention: xmin/ymin inclusive, xmax/ymax exclusive after clamping."""

    xmin: int
    ymin: int
    xmax: int
    ymax: int

    @property
    def width(self) -> int:
        return self.xmax - self.xmin

    @property
    def height(self) -> int:
        return self.ymax - self.ymin


@dataclass(frozen=True)
class Annotation:
    filename: str
    width: int
    height: int
    objects: tuple[tuple[str, Box], ...]

    def boxes(self, name: str) -> list[Box]:
        return [box for obj, box in self.objects if obj == name]


def _int(elem: Element | None, tag: str, path: Path) -> int:
    node = elem.find(tag) if elem is not None else None
    if node is None or node.text is None or not node.text.strip():
        raise PipelineError(f"{path}: missing <{tag}>")
    text = node.text.strip()
    try:
        value = float(text)
    except ValueError:
        raise PipelineError(f"{path}: <{tag}> is not a number: {text!r}") from None
    if value < 0 or value != value:
        raise PipelineError(f"{path}: <{tag}> is negative or NaN: {text!r}")
    return round(value)


def parse_voc(path: Path) -> Annotation:
    """Read one VOC XML file; a malformed or hostile file raises PipelineError naming it."""
    try:
        root = SafeET.parse(path).getroot()
    except DefusedXmlException as err:
        raise PipelineError(f"{path}: refused unsafe XML ({type(err).__name__})") from None
    except ParseError as err:
        raise PipelineError(f"{path}: malformed XML ({err})") from None
    except OSError as err:
        raise PipelineError(f"{path}: cannot read ({err.strerror})") from None
    size = root.find("size")
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise PipelineError(f"{path}: <object> without a <name>")
        if name not in OBJECT_NAMES:
            raise PipelineError(
                f"{path}: unknown object name {name!r} (expected one of {', '.join(OBJECT_NAMES)})"
            )
        bnd = obj.find("bndbox")
        if bnd is None:
            raise PipelineError(f"{path}: <object> {name!r} has no <bndbox>")
        box = Box(*(_int(bnd, t, path) for t in ("xmin", "ymin", "xmax", "ymax")))
        objects.append((name, box))
    return Annotation(
        filename=(root.findtext("filename") or path.with_suffix(".jpg").name).strip(),
        width=_int(size, "width", path),
        height=_int(size, "height", path),
        objects=tuple(objects),
    )
