"""DVC stage `evaluate`: score the trained model on the held-out test split (and on val), and on the
published Kaggle sets when WBC_DATASET2_DIR names them; register the model, `champion` if it passes."""

import keras

from pipeline.core import paths
from pipeline.core.params import Params
from pipeline.data.resize import class_list, load_npz
from pipeline.evaluation import published
from pipeline.evaluation.gates import check_gates
from pipeline.evaluation.report import evaluate_splits
from pipeline.inference.classify import model_head
from pipeline.stage import run_stage
from pipeline.tracking.models import register_run_model
from pipeline.tracking.runs import log_files


def main(params: Params) -> dict:
    model = keras.saving.load_model(paths.MODEL)
    report, plots = evaluate_splits(model, params.evaluate)
    log_files(plots)
    root = published.dataset2_dir()
    if root is not None:
        classes = class_list(load_npz(paths.resized_split("test"), keys=("classes",)))
        report["published"] = published.score_published(model, params, model_head(model, classes), root)
    # The champion alias needs the gates' floors; the drop-against-baseline gate needs git (`wbc gate`).
    passed = all(c.passed for c in check_gates(report, None, params.gates))
    entry = register_run_model(paths.MODEL_RUN, promote=passed)
    if entry is not None:
        print(
            f"evaluate: {entry['name']} version {entry['version']}" + (" is the champion" if passed else "")
        )
    return report


if __name__ == "__main__":
    run_stage("evaluate", main, sections=("evaluate",), resume_from=paths.MODEL_RUN)
