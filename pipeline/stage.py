"""The frame every stage script runs in: validated params, a JSON report, an MLflow run, clean errors.

A stage sees only the params `dvc.yaml` lists for it: reading any other is an error naming the key,
so the params DVC watches cannot drift from the params a stage uses.
"""

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import yaml

from pipeline.core import paths
from pipeline.core.atomic import write_json
from pipeline.core.errors import PipelineError
from pipeline.core.memory import keep_freed_memory
from pipeline.core.params import Params, load_params
from pipeline.tracking.runs import log_report, stage_run
from pipeline.tracking.store import tracking_failure


def run_stage(
    name: str, body: Callable[[Params], dict], sections: Sequence[str] = (), resume_from: Path | None = None
) -> None:
    """Run `body(params)` inside an MLflow run; write its report to `metrics/<name>.json` and log it.

    `sections` are the params sections logged with the run (the stage's own by default).
    `resume_from` names a JSON file holding a `run_id` to continue instead of starting a new run.
    A PipelineError, or a tracking store that fails (a server gone mid-run), is printed as one clear
    line and exits 1.
    """
    keep_freed_memory()
    try:
        params = load_params()
        dumped = params.model_dump()
        resume = _run_id(resume_from) if resume_from else None
        with stage_run(name, {s: dumped[s] for s in sections or (name,)}, dumped, resume):
            start = time.monotonic()
            report = body(restrict(params, name, declared_params(name)))
            seconds = time.monotonic() - start
            write_json(paths.stage_metrics(name), report)
            log_report(report | {f"{name}.seconds": round(seconds, 3)}, f"{name}.json")
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:
        problem = tracking_failure(err)
        if problem is None:
            raise
        print(f"error: stage {name}: {problem}", file=sys.stderr)
        sys.exit(1)


def declared_params(stage: str, dvc_yaml: Path = paths.DVC_YAML) -> list[str] | None:
    """The params keys (`train`, `crop.keep_basophil`) dvc.yaml lists for a stage; None without a
    dvc.yaml (a stage body run outside a DVC project)."""
    if not Path(dvc_yaml).is_file():
        return None
    stages = yaml.safe_load(Path(dvc_yaml).read_text()).get("stages", {})
    if stage not in stages:
        raise PipelineError(f"{dvc_yaml}: no stage {stage!r}")
    keys: list[str] = []
    for entry in stages[stage].get("params", []):
        keys.extend([entry] if isinstance(entry, str) else [k for v in entry.values() for k in v])
    return keys


class _Undeclared:
    """Stands in for a params section (or the keys of one) a stage did not declare in dvc.yaml."""

    def __init__(self, stage: str, section: str, real: object, allowed: Iterable[str] = ()) -> None:
        self._stage, self._section, self._real, self._allowed = stage, section, real, frozenset(allowed)

    def __getattr__(self, key: str) -> object:
        if key in self._allowed:
            return getattr(self._real, key)
        raise PipelineError(
            f"stage {self._stage!r} reads params {self._section}.{key}, which dvc.yaml does not list "
            f"in its params: add it there, or DVC will not re-run the stage when it changes"
        )


def restrict(params: Params, stage: str, declared: list[str] | None) -> Params:
    """`params` with every section (or key) `declared` does not name replaced by a guard that fails
    when read."""
    if declared is None:
        return params
    guarded = {}
    for section in Params.model_fields:
        if section in declared:
            continue
        keys = [k.split(".", 1)[1] for k in declared if k.startswith(f"{section}.")]
        guarded[section] = _Undeclared(stage, section, getattr(params, section), keys)
    return params.model_copy(update=guarded)


def _run_id(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
