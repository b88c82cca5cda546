"""The params.yaml schema: every key, type and range, validated before any stage does work.

No key has a default: every value comes from params.yaml, where DVC tracks it, so this schema
changes what a stage accepts, never what it computes (and is not a stage dep).
"""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.core import paths
from pipeline.core.errors import PipelineError


class _Section(BaseModel):
    """Strict: an unknown key (a typo such as `droput`) or a wrong type is an error."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Download(_Section):
    url: str = Field(pattern=r"^https?://")
    file: str = Field(pattern=r"^[A-Za-z0-9._-]+$")


class DownloadParams(_Section):
    """How a fetch stage downloads and extracts its archives."""

    timeout_s: float = Field(gt=0)
    retries: int = Field(ge=0, le=20)
    max_download_mb: int = Field(gt=0)
    max_extracted_mb: int = Field(gt=0)


class FetchParams(DownloadParams):
    archive: Download
    labels: Download


class ArchiveFolder(Download):
    folder: str = Field(pattern=r"^[A-Za-z0-9._/-]*$", description="where the manifest's paths start")


class ExternalParams(DownloadParams):
    """Evaluation sets from other sources, fetched like BCCD; the default model never trains on them."""

    published: ArchiveFolder
    pbc: ArchiveFolder


class SourceParams(_Section):
    """Labelled cells from another lab: a folder of class-named folders of single-cell images, or a
    CSV of path,label (paths relative to the CSV). Its cells are their own domain; each image is its
    own source photo. `take_per_class` k > 0 makes it a few-shot adaptation: k cells per class
    (drawn by `seed`) are trained on, the rest are that domain's test; 0 splits it like BCCD."""

    enabled: bool
    kind: Literal["folders", "csv"]
    path: str = Field(min_length=1, description="the folder or CSV, relative to the repository (data/...)")
    manifest: str | None = Field(description="a committed sha256 manifest the files must match, or null")
    domain: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    classes: dict[str, str | None] = Field(description="extra names -> class (null: drop these cells)")
    take_per_class: int = Field(ge=0)
    seed: int
    cut: Literal["localiser", "whole"] = Field(
        description="localiser: the best cell the localiser finds, cut like a BCCD crop (the whole image "
        "where it finds none); whole: the image is the cell"
    )


class CropParams(_Section):
    padding: int = Field(ge=0, le=256, description="pixels added on every side of the XML box")
    square: bool
    min_box_size: int = Field(ge=1, description="boxes narrower or shorter than this are skipped")
    keep_basophil: bool


class SplitParams(_Section):
    strategy: Literal["kaggle", "stratified", "kfold"]
    seed: int
    test_fraction: float = Field(gt=0, lt=1)
    val_fraction: float = Field(gt=0, lt=1)
    k: int = Field(ge=2)
    fold: int = Field(ge=0)
    val_folds: int = Field(ge=0, description="0: carve val_fraction; k >= 2: val is one of k group folds")
    val_fold: int = Field(ge=0, description="which of the val_folds is val (a CV study varies it)")
    dedup_hash_size: int = Field(ge=4, le=32)
    dedup_max_distance: int = Field(ge=0)

    @model_validator(mode="after")
    def _fold_in_range(self) -> "SplitParams":
        if self.fold >= self.k:
            raise ValueError(f"fold must be < k (got fold={self.fold}, k={self.k})")
        if self.val_folds == 1:
            raise ValueError("val_folds must be 0 (carve val_fraction) or at least 2")
        if self.val_fold >= max(self.val_folds, 1):
            raise ValueError(f"val_fold must be < val_folds (got {self.val_fold}, {self.val_folds})")
        return self


class AugmentParams(_Section):
    seed: int
    target_per_class: int = Field(ge=1)
    flip: bool
    rot90: bool
    rotation_deg: float = Field(ge=0, le=180)
    shear_deg: float = Field(ge=0, lt=60)
    zoom: float = Field(ge=0, lt=1)
    brightness: float = Field(ge=0, lt=1)
    contrast: float = Field(ge=0, lt=1)
    saturation: float = Field(ge=0, lt=1)
    hue: float = Field(ge=0, le=0.5)
    stain_scale: float = Field(ge=0, lt=1, description="HED optical densities scaled by 1 ± this")
    stain_shift: float = Field(ge=0, le=0.2, description="HED optical densities shifted by ± this")
    shift: float = Field(
        ge=0,
        le=0.45,
        description="a BCCD copy cut from its photo with the crop's window moved by up to "
        "± this of its side on each axis: the cell cut by the window's edge, as at a photo's frame",
    )


ColourName = Literal["rgb", "stain_norm", "reinhard", "gray"]
BEYOND_FIELD = ("fill", "keep")  # what lies beyond a photo's field: filled from the field, or kept


class ResizeParams(_Section):
    height: int = Field(ge=8, le=1024)
    width: int = Field(ge=8, le=1024)
    colour: ColourName = Field(description="the colour treatment")
    stain_reference: list[float] = Field(min_length=4, max_length=4, description="H p50, H p99, E p50, E p99")
    lab_reference: list[float] = Field(min_length=6, max_length=6, description="L, a, b mean; L, a, b sd")
    beyond_field: Literal[BEYOND_FIELD] = Field(
        description="a crop's pixels beyond the photo's field filled from the field, or kept"
    )


MODELS = ("varra", "fischbach", "lenet", "depthwise", "cnn_bilstm", "mobilenetv2", "efficientnetb0")
Monitor = Field(pattern=r"^val_[a-z_]+$", description="a validation metric Keras logs, e.g. val_loss")


class ReduceLRParams(_Section):
    enabled: bool
    monitor: str = Monitor
    factor: float = Field(gt=0, lt=1)
    patience: int = Field(ge=0)
    min_lr: float = Field(ge=0)


class EarlyStoppingParams(_Section):
    enabled: bool
    monitor: str = Monitor
    patience: int = Field(ge=0)


class TrainParams(_Section):
    model: Literal[MODELS]
    task: Literal["type", "nucleus", "multitask"]
    weights: str | None = Field(description="keras.applications models: null, 'imagenet' or a local file")
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"]
    learning_rate: float = Field(gt=0, le=1)
    dropout: float = Field(ge=0, lt=1)
    l1: float = Field(ge=0)
    l2: float = Field(ge=0)
    bn_momentum: float = Field(gt=0, lt=1, description="moving-average momentum of every batch-norm layer")
    lr_schedule: Literal["plateau", "cosine"] = Field(
        description="plateau: reduce_lr on a validation metric; cosine: a half cosine from learning_rate "
        "to reduce_lr.min_lr over the epochs, blind to validation"
    )
    reduce_lr: ReduceLRParams
    early_stopping: EarlyStoppingParams
    class_weights: bool
    label_smoothing: float = Field(
        ge=0, lt=1, description="each one-hot target's 1 becomes 1 - this + this / classes"
    )
    mixup: float = Field(
        ge=0, description="Beta(alpha, alpha) of mixup's blend of two training cells and their labels; 0: off"
    )
    seed: int
    deterministic: bool
    mixed_precision: bool
    devices: int = Field(ge=1, description="data-parallel replicas; batch_size is split across them")
    members: int = Field(ge=1, le=20, description="models trained with different seeds and averaged into one")
    average_epochs: int = Field(
        ge=0,
        description="SWA: the weights after each of the last N epochs (all, if fewer were trained) "
        "averaged and batch-norm statistics recomputed on train cells; 0: the last epoch's weights",
    )

    @model_validator(mode="after")
    def _average_or_stop_early(self) -> "TrainParams":
        if self.average_epochs and self.early_stopping.enabled:
            raise ValueError(
                "average_epochs averages the last epochs, early_stopping keeps the best one: enable one"
            )
        return self


EXTERNAL_SETS = ("published", "pbc")  # evaluate's sets from elsewhere, in the order scored


class EvaluateParams(_Section):
    bootstrap_resamples: int = Field(ge=0, le=100_000)
    confidence: float = Field(gt=0, lt=1)
    seed: int
    gallery_size: int = Field(ge=0, le=400)
    tta: bool = Field(description="average predictions over the flips and quarter turns of each crop")
    external: list[Literal[EXTERNAL_SETS]] = Field(
        description="the external sets scored: published (Kaggle TEST / TEST_SIMPLE, ~3 min), pbc "
        "(another lab, ~1 min); [] for none"
    )
    calibrate: bool = Field(
        description="also score PBC by the model calibrated on PBC's unlabelled cells (two-fold, AdaBN)"
    )

    @model_validator(mode="after")
    def _external_once(self) -> "EvaluateParams":
        if len(set(self.external)) != len(self.external):
            raise ValueError(f"external: {self.external}: a set named twice")
        return self


class LocalizeParams(_Section):
    """The stain-colour WBC localiser (`pipeline/inference/localize.py`). The values in params.yaml
    were tuned on the 364 BCCD photos against their VOC WBC boxes, recall at IoU 0.5 first; sizes are
    fractions of the image width or area, so the same values work at 640x480 and at 320x240."""

    min_purple: float = Field(ge=0, le=255, description="least B - G for a pixel to count as stain")
    closing_radius: float = Field(ge=0, le=0.2, description="closing radius / image width")
    merge_distance: float = Field(ge=0, le=0.5, description="blobs closer / width are one cell")
    min_nucleus_fraction: float = Field(gt=0, lt=1, description="least blob area / image area")
    min_relative_area: float = Field(ge=0, le=1, description="least blob area / largest blob")
    box_growth: float = Field(ge=1, le=4, description="cell box side / stained blob box side")
    box_margin: float = Field(ge=0, le=0.5, description="cytoplasm rim on each side / image width")
    work_width: int = Field(ge=16, description="wider images are block-averaged to about this width")
    max_cells: int = Field(ge=1, description="most white cells reported per field")
    min_texture: float = Field(ge=0, description="least grey-level sd inside a nucleus")


class GatesParams(_Section):
    min_accuracy: float = Field(ge=0, le=1)
    min_macro_f1: float = Field(ge=0, le=1)
    min_recall: float = Field(ge=0, le=1, description="floor for every class's recall")
    max_drop: float = Field(ge=0, le=1, description="largest allowed fall of a headline metric vs baseline")


class Params(_Section):
    fetch: FetchParams
    external: ExternalParams
    sources: dict[str, SourceParams]
    crop: CropParams
    split: SplitParams
    augment: AugmentParams
    resize: ResizeParams
    train: TrainParams
    evaluate: EvaluateParams
    localize: LocalizeParams
    gates: GatesParams


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def validate_params(raw: object, source: str = str(paths.PARAMS)) -> Params:
    """Check a parsed params mapping against the schema; errors name each bad key's path."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise PipelineError(f"{source}: invalid params\n{_describe(err)}") from None


def load_params(path: Path = paths.PARAMS) -> Params:
    """Read and validate params.yaml."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise PipelineError(f"{path}: cannot read params: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML: {err}") from None
    return validate_params(raw, str(path))
