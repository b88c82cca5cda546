import json

from pipeline.cli import main
from pipeline.core.params import load_params
from pipeline.evaluation.gates import check_gates
from tests.helpers import REPO

GATES = load_params(REPO / "params.yaml").gates.model_copy(
    update={"min_accuracy": 0.8, "min_macro_f1": 0.7, "min_recall": 0.5, "max_drop": 0.03}
)


def metrics(accuracy=0.9, macro_f1=0.85, recalls=(0.95, 0.9, 0.8, 0.6)) -> dict:
    names = ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    return {
        "test": {
            "accuracy": accuracy,
            "macro_f1": macro_f1,
            "per_class": {n: {"recall": r} for n, r in zip(names, recalls, strict=True)},
        }
    }


def failed(checks) -> list[str]:
    return [c.name for c in checks if not c.passed]


def test_all_gates_pass():
    checks = check_gates(metrics(), {"accuracy": 0.91, "macro_f1": 0.86}, GATES)
    assert len(checks) == 2 + 4 + 2 and failed(checks) == []


def test_floors_and_class_recall_fail():
    checks = check_gates(metrics(accuracy=0.79, recalls=(0.95, 0.9, 0.49, 0.6)), None, GATES)
    assert failed(checks) == ["test.accuracy", "test.recall.monocyte"]


def test_drop_against_baseline_fails():
    checks = check_gates(metrics(macro_f1=0.85), {"accuracy": 0.9, "macro_f1": 0.9}, GATES)
    assert failed(checks) == ["test.macro_f1 vs baseline 0.9000"]


def test_cli_prints_a_table_and_exits_nonzero_on_failure(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text().replace("min_accuracy: 0.80", "min_accuracy: 0.95"))
    good = tmp_path / "evaluate.json"
    good.write_text(json.dumps(metrics()))
    args = ["gate", "--no-baseline", "--metrics", str(good), "--params", str(params)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "test.accuracy" in out and "FAIL" in out and "1 failed" in out
    params.write_text((REPO / "params.yaml").read_text())
    assert main(args) == 0
    assert main(["gate", "--no-baseline", "--metrics", str(tmp_path / "missing.json")]) == 2


def test_a_cv_fold_model_never_takes_the_champion_alias():
    from pipeline.evaluation.gates import may_be_champion

    split = load_params(REPO / "params.yaml").split
    assert may_be_champion(split)  # the default's model, when its gates pass
    assert not may_be_champion(split.model_copy(update={"val_folds": 3, "val_fold": 1}))
