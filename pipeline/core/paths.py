"""Every path the stages read or write, relative to the repository root: one place to change them."""

from pathlib import Path

PARAMS = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")
DATA = Path("data")
METRICS = Path("metrics")

# Committed reference files (tracked by git, not DVC).
REFERENCE = DATA / "reference"
BCCD_MANIFEST = REFERENCE / "bccd.sha256"
KAGGLE_TEST_SOURCES = REFERENCE / "kaggle_test_sources.csv"  # the 69 held-out photos, by TEST_SIMPLE
KAGGLE_TEST_FIELDS = REFERENCE / "kaggle_test_fields.csv"  # each TEST / TEST_SIMPLE field's photo (keypoints)
BCCD_TWINS = REFERENCE / "bccd_twins.csv"  # BCCD photos re-shooting one scene (keypoints): one source
PUBLISHED_MANIFEST = REFERENCE / "published.sha256"
PBC_MANIFEST = REFERENCE / "pbc.sha256"

# fetch
RAW = DATA / "raw"
RAW_IMAGES = RAW / "BCCD" / "JPEGImages"
RAW_ANNOTATIONS = RAW / "BCCD" / "Annotations"
RAW_LABELS = RAW / "labels.csv"

# fetch_external: evaluation sets, each in the layout of its manifest
EXTERNAL = DATA / "external"
PUBLISHED = EXTERNAL / "published"  # images/TEST/<CLASS>/*.jpeg, images/TEST_SIMPLE/<CLASS>/*.jpeg
PBC = EXTERNAL / "pbc"  # <class>/*.jpg

# Offline mirrors: the subfolder of $WBC_MIRRORS that holds each source's files.
MIRROR_FOLDERS = {"bccd": "bccd", "published": "dataset2-master", "pbc": "pbc-dev"}

# sources: other labs' labelled cells, one domain each (data/own/ holds a lab's own, DVC-tracked)
OWN = DATA / "own"
SOURCES = DATA / "sources"
SOURCE_IMAGES = SOURCES / "images"
SOURCE_MANIFEST = SOURCES / "manifest.csv"
BCCD_DOMAIN = "bccd"  # the domain of the crops cut from BCCD's photos

# crop
CROPS = DATA / "crops"
CROP_IMAGES = CROPS / "images"
CROP_MANIFEST = CROPS / "manifest.csv"

# split
SPLIT = DATA / "split"
SPLIT_MANIFEST = SPLIT / "manifest.csv"

# augment
AUGMENTED = DATA / "augmented"
AUGMENTED_IMAGES = AUGMENTED / "images"
AUGMENTED_MANIFEST = AUGMENTED / "manifest.csv"

# resize
RESIZED = DATA / "resized"
SPLITS = ("train", "val", "test")


# train
MODELS = Path("models")
MODEL = MODELS / "model.keras"
MODEL_RUN = MODELS / "run.json"  # the MLflow run and logged model of MODEL; evaluate continues that run
CHECKPOINT = MODELS / "checkpoint"  # training state after the last finished epoch; not a DVC output
PLOTS = Path("plots")
HISTORY = PLOTS / "history.csv"

# evaluate
CONFUSION = PLOTS / "confusion.csv"
CONFUSION_PNG = PLOTS / "confusion.png"
MISCLASSIFIED_PNG = PLOTS / "misclassified.png"
PREDICTIONS = PLOTS / "predictions.csv"
PUBLISHED_FIELDS = PLOTS / "external" / "published_fields.csv"  # every TEST / TEST_SIMPLE field's answer


def resized_split(split: str) -> Path:
    """The `.npz` array file the resize stage writes for one split."""
    return RESIZED / f"{split}.npz"


def external_plot(set_name: str, mode: str, suffix: str) -> Path:
    """An external set's confusion for one scoring mode: `.csv` (a DVC plot) or `.png`."""
    return PLOTS / "external" / f"{set_name}_{mode}{suffix}"


SUMMARY = METRICS / "summary.json"  # the headline numbers, first in `dvc exp show`


def stage_metrics(stage: str) -> Path:
    """The JSON report of a stage, declared as a DVC metric."""
    return METRICS / f"{stage}.json"
