"""Atomic outputs: a stage's results appear complete or not at all, never half-written.

Temp names carry the writer's PID, so leftovers of a killed writer are recognised and cleared by
the next one: a half-written temp is deleted, and a previous output that was moved aside but not
yet replaced is put back.
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether a process of this machine still runs (one that is not ours counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_pid(name: str, marker: str) -> int | None:
    """The PID in a temp name `.<dest>.<marker>-<pid>-...`, or None if it has none."""
    head = name.split(marker, 1)[1].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def clear_leftovers(dest: Path) -> None:
    """Remove the temp siblings of `dest` left by writers that were killed; restore an output
    moved aside by a writer killed between its two renames."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return
    for marker in (".tmp-", ".old-"):
        for sibling in dest.parent.glob(f".{dest.name}{marker}*"):
            pid = _writer_pid(sibling.name, f".{dest.name}{marker}")
            if pid is None or alive(pid):
                continue
            if marker == ".old-" and not dest.exists():
                os.rename(sibling, dest)
            elif sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling)
            else:
                sibling.unlink()


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `dest`; on success it replaces `dest` by rename.

    On error the temp folder is removed and `dest` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; outputs should look like any folder
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp file name beside `dest`, with its suffix (Keras picks a format by it), for a
    writer that wants a path; on success it replaces `dest` by rename, on error it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; outputs should look like any file
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: object, sort_keys: bool = True) -> None:
    """Write a stable, human-readable JSON report atomically (keys sorted, unless the order is the
    point: a summary read left to right)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode())
