"""Ensembles: the members' probabilities averaged inside one model file that loads and predicts like
a single model; members trained with their own seeds; a killed ensemble run resumes at the member
it was training; evaluate's curve of the first k members."""

import keras
import numpy as np
import pytest

from pipeline.core.classes import task_heads
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.inference.classify import load_model_file, model_head
from pipeline.model.ensemble import MEMBER_SEED_STEP, average, first, member_seed, members_of
from pipeline.model.runtime import configure
from pipeline.model.train import summary, train_model
from pipeline.model.zoo import build_model
from tests.helpers import REPO, TYPES, tiny

TRAIN = load_params(REPO / "params.yaml").train.model_copy(
    update={"model": "lenet", "epochs": 3, "batch_size": 8, "deterministic": True, "members": 1}
)


def models(task: str, n: int) -> list[keras.Model]:
    found = []
    for seed in range(n):
        keras.utils.set_random_seed(seed)
        found.append(build_model("varra", (32, 32, 3), task_heads(task, TYPES), dropout=0.5))
    return found


@pytest.mark.parametrize("task", ["type", "multitask"])
def test_an_ensemble_file_predicts_the_mean_of_its_members(tmp_path, task):
    members = models(task, 3)
    x = tiny(6)["x"]
    each = [m.predict(x, verbose=0) for m in members]
    ensemble = average(members)
    ensemble.save(tmp_path / "model.keras")
    loaded = load_model_file(tmp_path / "model.keras")
    got = loaded.predict(x, verbose=0)
    assert sorted(got) == sorted(each[0]) == sorted(loaded.output_names)
    for h in got:
        np.testing.assert_allclose(got[h], np.mean([e[h] for e in each], axis=0), atol=1e-6)
        np.testing.assert_allclose(got[h].sum(axis=1), 1, atol=1e-5)  # still probabilities
        two = first(loaded, 2).predict(x, verbose=0)[h]
        np.testing.assert_allclose(two, np.mean([e[h] for e in each[:2]], axis=0), atol=1e-6)
    assert [m.name for m in members_of(loaded)] == ["member_0", "member_1", "member_2"]
    assert loaded.count_params() == sum(m.count_params() for m in members)
    assert model_head(loaded, TYPES).name == "type"


def test_one_member_is_the_model_itself_and_mismatched_members_are_refused():
    (single,) = models("type", 1)
    assert average([single]) is single and members_of(single) == [single] and first(single, 1) is single
    with pytest.raises(PipelineError, match="member 1 has other inputs or outputs"):
        average([*models("type", 1), *models("multitask", 1)])
    with pytest.raises(PipelineError, match="3 members asked, the model has 1"):
        first(single, 3)
    with pytest.raises(PipelineError, match="no members"):
        average([])


def test_member_seeds_of_nearby_base_seeds_do_not_overlap():
    a = {member_seed(42, i) for i in range(5)}
    b = {member_seed(43, i) for i in range(5)}
    assert not a & b and member_seed(42, 0) == 42 and member_seed(42, 1) == 42 + MEMBER_SEED_STEP


def run(p, checkpoint=None, extra=()):
    configure(p.seed, p.deterministic, False)
    return train_model(p, tiny(48), tiny(12, seed=1), list(extra), checkpoint=checkpoint)


def test_members_train_with_their_own_seeds_and_one_member_is_the_single_model(tmp_path):
    single = run(TRAIN)
    pair = run(TRAIN.model_copy(update={"members": 2}))
    (m0, m1) = members_of(pair.model)
    for a, b in zip(single.model.get_weights(), m0.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # member 0 is the single model, seed and all
    assert any(not np.array_equal(a, b) for a, b in zip(m0.get_weights(), m1.get_weights(), strict=True))
    history = pair.history
    assert {"loss", "val_loss", "loss.m1", "val_loss.m1"} <= set(history.columns) and len(history) == 3
    report = summary(pair, "val_loss")
    assert report["members"] == 2 and report["epochs_run"] == 6
    assert set(report["member"]) == {"0", "1"}
    expected = np.mean([report["member"][i]["best.val_loss"] for i in ("0", "1")])
    assert report["best.val_loss"] == pytest.approx(expected)
    assert summary(single, "val_loss")["members"] == 1 and "member" not in summary(single, "val_loss")


class StopAtMember(keras.callbacks.Callback):
    """Stands in for a kill while member `at` trains."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.member = at, 0

    def start_member(self, member: int) -> None:
        self.member = member

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if self.member == self.at and epoch == 1:
            raise KeyboardInterrupt


def test_a_killed_ensemble_run_resumes_at_the_member_it_was_training(tmp_path, capsys):
    p = TRAIN.model_copy(update={"members": 3})
    whole = run(p)
    with pytest.raises(KeyboardInterrupt):
        run(p, tmp_path / "ckpt", [StopAtMember(at=1)])
    saved = tmp_path / "ckpt"
    assert (saved / "member-0.done").is_dir() and not (saved / "member-1.done").exists()
    resumed = run(p, tmp_path / "ckpt")
    out = capsys.readouterr().out
    assert "member 1 had finished before the run stopped" in out
    assert "resuming from the checkpoint after epoch 1" in out  # member 2 picks up its own epoch
    for a, b in zip(whole.model.get_weights(), resumed.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    changed = run(p.model_copy(update={"dropout": 0.3}), tmp_path / "ckpt")  # other params: all retrained
    assert "had finished" not in capsys.readouterr().out and len(members_of(changed.model)) == 3


def test_an_ensemble_run_is_named_as_one_in_mlflow(monkeypatch):
    from pipeline.tracking.runs import run_name

    monkeypatch.setenv("DVC_EXP_NAME", "ens3")
    assert run_name("train", {"train": {"model": "depthwise", "task": "type", "members": 3}}) == (
        "ens3: depthwise/type x3"
    )
    assert run_name("train", {"train": {"model": "depthwise", "task": "type", "members": 1}}) == (
        "ens3: depthwise/type"
    )
