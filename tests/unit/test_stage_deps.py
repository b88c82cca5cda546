"""DVC's cache is only honest if each stage's `deps` name every project module the stage runs: these
tests follow each `stages/<name>.py`'s imports (transitively, function-level ones included) and
compare them with `dvc.yaml`."""

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, dvc_kernels

# Plumbing that decides what a run records or accepts, not what a stage computes: editing it must
# not re-run the pipeline, so it is left out of every stage's deps. The stage frame (report file,
# MLflow run), the MLflow modules (store, provenance tags, run lifecycle, model logging and
# registry), and the params schema, which only validates the values DVC already tracks through
# each stage's `params` (it has no defaults: every value comes from params.yaml). And where malloc
# keeps freed memory (`pipeline/core/memory.py`): faster, the same numbers (test_memory).
PLUMBING = ("pipeline/stage.py", "pipeline/tracking/", "pipeline/core/params.py", "pipeline/core/memory.py")

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
KERNELS = "${kernels} "  # dvc.yaml's vars: the CPU kernels every stage that runs a model uses


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None for a third-party or standard module."""
    base = REPO / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported(path: Path) -> set[str]:
    """Dotted names a file imports (`from a.b import c` yields a.b and a.b.c: c may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def closure(entry: Path) -> set[str]:
    """Repo-relative paths of every project file `entry` runs, itself included, empty package
    markers left out."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                found = module_file(".".join(parts[:i]))
                if found is not None:
                    todo.append(found)
    return {p.relative_to(REPO).as_posix() for p in seen if p.name != "__init__.py" or holds_code(p)}


def holds_code(path: Path) -> bool:
    """Whether a file has more than a docstring."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def code_deps(stage: str) -> set[str]:
    return {d for d in DVC[stage].get("deps", []) if d.endswith(".py")}


def plumbing(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in PLUMBING)


@pytest.mark.parametrize("stage", sorted(DVC))
def test_deps_name_every_module_the_stage_runs(stage):
    entry = REPO / "stages" / f"{stage}.py"
    needed = {p for p in closure(entry) if not plumbing(p)}
    runs_keras = any("keras" in imported(REPO / p) for p in needed)
    kernels = KERNELS if runs_keras else ""
    assert DVC[stage]["cmd"] == f"{kernels}python -m stages.{stage}"
    missing = sorted(needed - code_deps(stage))
    assert not missing, f"dvc.yaml: stage {stage!r} runs {', '.join(missing)} but does not list it in deps"
    extra = sorted(code_deps(stage) - needed)
    assert not extra, f"dvc.yaml: stage {stage!r} lists {', '.join(extra)} in deps but never imports it"


def test_the_kernels_set_are_the_ones_a_run_reports(monkeypatch):
    from pipeline.model.runtime import KERNEL_VARIABLES, kernels

    written = dvc_kernels()
    assert tuple(v.split("=")[0] for v in written.split()) == KERNEL_VARIABLES
    for assignment in written.split():
        monkeypatch.setenv(*assignment.split("="))
    assert kernels() == written


def test_package_markers_hold_no_code():
    """`__init__.py` files with no code are left out of the deps: they must stay that way."""
    for marker in (REPO / "pipeline").rglob("__init__.py"):
        assert not holds_code(marker), f"{marker.relative_to(REPO)}: put the code in a module"


def test_the_closure_follows_function_level_and_package_imports(tmp_path):
    """A lazy import inside a function counts, and so does a module named in `from package import`."""
    closure_of_cli = closure(REPO / "pipeline" / "cli.py")
    assert "pipeline/inference/classify.py" in closure_of_cli  # imported inside `predict`
    assert "pipeline/inference/tta.py" in closure_of_cli  # through classify
    assert "pipeline/model/checkpoint.py" in closure(
        REPO / "stages" / "train.py"
    )  # `from pipeline.model import checkpoint`
