"""Atomic outputs and the clean-up of what a killed writer leaves behind."""

import subprocess
import sys

import pytest

from pipeline.core.atomic import atomic_dir, atomic_write_bytes, clear_leftovers


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_failed_write_leaves_the_previous_output(tmp_path):
    dest = tmp_path / "out"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("second, half")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (dest / "a.txt").read_text() == "first"


def test_leftovers_of_a_dead_writer_are_cleared_and_a_moved_output_restored(tmp_path, dead_pid):
    dest = tmp_path / "out"
    (tmp_path / f".out.tmp-{dead_pid}-x1").mkdir()
    (tmp_path / f".out.old-{dead_pid}").mkdir()
    (tmp_path / f".out.old-{dead_pid}" / "a.txt").write_text("previous")
    (tmp_path / f".report.json.tmp-{dead_pid}-y2").write_text("{half")
    live = tmp_path / ".out.tmp-1-z3"  # PID 1 is alive: another writer's, left alone
    live.mkdir()
    clear_leftovers(dest)
    clear_leftovers(tmp_path / "report.json")
    assert (dest / "a.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "out"]


def test_next_writer_clears_a_killed_writers_temp(tmp_path, dead_pid):
    stale = tmp_path / f".r.json.tmp-{dead_pid}-q"
    stale.write_text("half")
    atomic_write_bytes(tmp_path / "r.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
