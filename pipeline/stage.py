"""The frame every stage script runs in: validated params, a JSON report, an MLflow run, clean errors."""

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import paths
from pipeline.atomic import write_json
from pipeline.errors import PipelineError
from pipeline.params import Params, load_params
from pipeline.tracking import log_report, stage_run


def run_stage(
    name: str, body: Callable[[Params], dict], sections: Sequence[str] = (), resume_from: Path | None = None
) -> None:
    """Run `body(params)` inside an MLflow run; write its report to `metrics/<name>.json` and log it.

    `sections` are the params sections logged with the run (the stage's own by default).
    `resume_from` names a JSON file holding a `run_id` to continue instead of starting a new run.
    A PipelineError is printed as one clear line and exits 1.
    """
    try:
        params = load_params()
        dumped = params.model_dump()
        resume = _run_id(resume_from) if resume_from else None
        with stage_run(name, {s: dumped[s] for s in sections or (name,)}, dumped, resume):
            start = time.monotonic()
            report = body(params)
            seconds = time.monotonic() - start
            write_json(paths.stage_metrics(name), report)
            log_report(report | {f"{name}.seconds": round(seconds, 3)}, f"{name}.json")
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def _run_id(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
