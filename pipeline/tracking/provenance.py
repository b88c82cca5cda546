"""What ties a run to its code, data and params: commit, params hash, DVC's data hashes, versions."""

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import yaml


def params_hash(params: Mapping) -> str:
    """A short, stable hash of every param: equal hashes mean identically configured runs."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def locked_md5(out: str, lock: Path = Path("dvc.lock")) -> str | None:
    """The md5 DVC recorded in `dvc.lock` for an output path, if the lock has it."""
    try:
        stages = yaml.safe_load(lock.read_text()).get("stages", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if entry.get("path") == out:
                return entry.get("md5")
    return None


def package_versions(names: tuple[str, ...] = ("keras", "tensorflow", "tensorflow-cpu", "torch")) -> dict:
    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def run_tags(stage: str, all_params: Mapping) -> dict[str, str]:
    """What a run needs to be traced back to its code, data, params and experiment."""
    tags = {
        "stage": stage,
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc.exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "params.sha256": params_hash(all_params),
        **{f"version.{k}": v for k, v in package_versions().items()},
    }
    commit = _git_commit()
    if commit:
        tags["git.commit"] = commit
    return tags
