"""The white-cell classes and their nucleus groups: the one place that names them."""

CLASSES: tuple[str, ...] = ("neutrophil", "eosinophil", "lymphocyte", "monocyte")
BASOPHIL = "basophil"
KNOWN_CLASSES: frozenset[str] = frozenset((*CLASSES, BASOPHIL))

# Polynuclear (granulocytes with lobed nuclei) vs mononuclear, as in the Athelas work.
NUCLEUS_GROUPS: tuple[str, ...] = ("poly", "mono")
NUCLEUS: dict[str, str] = {
    "neutrophil": "poly",
    "eosinophil": "poly",
    "basophil": "poly",
    "lymphocyte": "mono",
    "monocyte": "mono",
}


def class_names(keep_basophil: bool) -> tuple[str, ...]:
    """The classes a model predicts; basophils are a fifth class only when kept."""
    return (*CLASSES, BASOPHIL) if keep_basophil else CLASSES
