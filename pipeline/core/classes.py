"""The white-cell classes, their nucleus groups and the model heads that predict them: the one
place that names them."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CLASSES: tuple[str, ...] = ("neutrophil", "eosinophil", "lymphocyte", "monocyte")
BASOPHIL = "basophil"
KNOWN_CLASSES: frozenset[str] = frozenset((*CLASSES, BASOPHIL))

# How other sources name the classes (compared lower-case): plurals, CellaVision's codes for
# segmented and band neutrophils. A source's params may add names of its own.
ALIASES: dict[str, str] = {
    **{c: c for c in (*CLASSES, BASOPHIL)},
    **{f"{c}s": c for c in (*CLASSES, BASOPHIL)},
    "sne": "neutrophil", "bne": "neutrophil", "seg": "neutrophil", "band": "neutrophil",
    "eo": "eosinophil", "ly": "lymphocyte", "lym": "lymphocyte", "mo": "monocyte", "mono": "monocyte",
    "ba": "basophil",
}  # fmt: skip
# Other cells a labelled set may hold: dropped and counted, never an error.
OTHER_CELLS: frozenset[str] = frozenset({
    "platelet", "platelets", "thrombocyte", "ig", "immature granulocyte", "immature_granulocyte",
    "immature granulocytes", "myelocyte", "metamyelocyte", "promyelocyte", "erythroblast", "erythroblasts",
    "rbc", "red blood cell", "smudge", "artefact", "artifact", "blast", "plasma cell",
})  # fmt: skip

# Polynuclear (granulocytes with lobed nuclei) vs mononuclear, as in the Athelas work.
NUCLEUS_GROUPS: tuple[str, ...] = ("poly", "mono")
NUCLEUS: dict[str, str] = {
    "neutrophil": "poly",
    "eosinophil": "poly",
    "basophil": "poly",
    "lymphocyte": "mono",
    "monocyte": "mono",
}

# The heads a `train.task` gives a model, in output order.
TASKS: dict[str, tuple[str, ...]] = {
    "type": ("type",),
    "nucleus": ("nucleus",),
    "multitask": ("type", "nucleus"),
}


def class_names(keep_basophil: bool) -> tuple[str, ...]:
    """The classes a model predicts; basophils are a fifth class only when kept."""
    return (*CLASSES, BASOPHIL) if keep_basophil else CLASSES


@dataclass(frozen=True)
class Head:
    """One softmax output of a model: its layer name, its classes in output order and the array of
    the resize stage's `.npz` that holds its labels."""

    name: str
    classes: tuple[str, ...]
    labels_key: str

    def labels(self, arrays: Mapping) -> object:
        """This head's label indices in a split's arrays."""
        return arrays[self.labels_key]

    def index(self, cell_type: str) -> int:
        """The output index that is the right answer for a cell of type `cell_type`."""
        return self.classes.index(cell_type if self.name == "type" else NUCLEUS[cell_type])


def head(name: str, classes: Sequence[str]) -> Head:
    """The `type` head over `classes`, or the `nucleus` head (poly / mono)."""
    if name == "type":
        return Head("type", tuple(classes), "y")
    if name == "nucleus":
        return Head("nucleus", NUCLEUS_GROUPS, "nucleus")
    raise ValueError(f"unknown head {name!r}")


def task_heads(task: str, classes: Sequence[str]) -> list[Head]:
    """The heads a model trained for `task` has."""
    return [head(name, classes) for name in TASKS[task]]
