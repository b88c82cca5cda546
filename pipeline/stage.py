"""The frame every stage script runs in: validated params, a JSON report, an MLflow run, clean errors."""

import sys
import time
from collections.abc import Callable, Sequence

from pipeline import paths
from pipeline.atomic import write_json
from pipeline.errors import PipelineError
from pipeline.params import Params, load_params
from pipeline.tracking import log_report, stage_run


def run_stage(name: str, body: Callable[[Params], dict], sections: Sequence[str] = ()) -> None:
    """Run `body(params)` inside an MLflow run; write its report to `metrics/<name>.json` and log it.

    `sections` are the params sections the stage reads (its own by default). A PipelineError
    is printed as one clear line and exits 1.
    """
    try:
        params = load_params()
        dumped = params.model_dump()
        with stage_run(name, {s: dumped[s] for s in sections or (name,)}):
            start = time.monotonic()
            report = body(params)
            seconds = time.monotonic() - start
            write_json(paths.stage_metrics(name), report)
            log_report(report, f"{name}.json")
            log_report({"seconds": round(seconds, 3)}, "timing.json")
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
