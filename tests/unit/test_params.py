import copy

import pytest
import yaml
from pydantic import BaseModel

from pipeline.core.errors import PipelineError
from pipeline.core.params import Params, load_params, validate_params
from pipeline.stage import declared_params, restrict
from tests.helpers import REPO


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_committed_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.split.strategy in ("kaggle", "stratified", "kfold")


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("augment", "targt_per_class"), 10, "augment.targt_per_class"),  # typo: unknown key
        (("resize", "height"), "128", "resize.height"),  # wrong type
        (("resize", "width"), 0, "resize.width"),  # out of range
        (("augment", "target_per_class"), -5, "augment.target_per_class"),
        (("split", "val_fraction"), 1.5, "split.val_fraction"),
        (("split", "strategy"), "random", "split.strategy"),
        (("crop", "square"), "yes", "crop.square"),
        (("bogus",), {}, "bogus"),
        (("train", "droput"), 0.4, "train.droput"),
        (("train", "dropout"), 1.5, "train.dropout"),
        (("train", "epochs"), -3, "train.epochs"),
        (("evaluate", "tta"), "yes", "evaluate.tta"),
    ],
)
def test_bad_params_are_rejected_with_the_key_path(raw, path, value, key):
    bad = copy.deepcopy(raw)
    node = bad
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(PipelineError) as err:
        validate_params(bad, "params.yaml")
    assert key in str(err.value)
    assert "params.yaml" in str(err.value)


def test_fold_must_be_below_k(raw):
    raw["split"].update(k=3, fold=3)
    with pytest.raises(PipelineError, match="fold must be < k"):
        validate_params(raw)


def test_missing_section_is_named(raw):
    del raw["resize"]
    with pytest.raises(PipelineError, match="resize"):
        validate_params(raw)


def test_unreadable_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("crop: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(bad)


def test_no_key_has_a_default():
    """Every value comes from params.yaml, where DVC tracks it: that is why the schema module is not a
    stage dep (tests/unit/test_stage_deps.py). A default here would be a value DVC cannot see."""

    def defaults(model: type[BaseModel], prefix: str) -> list[str]:
        found = []
        for name, field in model.model_fields.items():
            if not field.is_required():
                found.append(f"{prefix}{name}")
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found += defaults(kind, f"{prefix}{name}.")
        return found

    assert defaults(Params, "") == []


def test_a_stage_reads_only_the_params_dvc_yaml_lists(tmp_path):
    params = load_params(REPO / "params.yaml")
    assert declared_params("resize", REPO / "dvc.yaml") == ["resize", "crop.keep_basophil"]
    seen = restrict(params, "resize", ["resize", "crop.keep_basophil"])
    assert seen.resize == params.resize and seen.crop.keep_basophil == params.crop.keep_basophil
    with pytest.raises(PipelineError, match=r"stage 'resize' reads params crop\.padding, which dvc\.yaml"):
        _ = seen.crop.padding
    with pytest.raises(PipelineError, match=r"reads params train\.epochs"):
        _ = seen.train.epochs
    assert declared_params("resize", tmp_path / "dvc.yaml") is None  # outside a DVC project: no guard
    assert restrict(params, "resize", None) is params
    with pytest.raises(PipelineError, match="no stage 'nope'"):
        declared_params("nope", REPO / "dvc.yaml")


def test_end_to_end_copies_take_the_committed_values_not_a_workspace_experiments():
    from tests.helpers import committed_values

    workspace = {"train": {"dropout": 0.4, "devices": 2, "reduce_lr": {"factor": 0.1}}, "new": {"k": 1}}
    committed = {"train": {"dropout": 0.5, "reduce_lr": {"factor": 0.3}}, "gone": 1}
    assert committed_values(workspace, committed) == {
        "train": {"dropout": 0.5, "devices": 2, "reduce_lr": {"factor": 0.3}},  # a new key keeps its value
        "new": {"k": 1},
    }
    # with the last commit's params.yaml, as the end-to-end tests call it
    committed_now = committed_values(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert set(committed_now) == set(yaml.safe_load((REPO / "params.yaml").read_text()))
