"""Fetch a data source: download (or copy from a mirror), extract safely, verify checksums.

Nothing reaches the destination folder until every file matches the committed manifest; a failure
at any step leaves the destination as it was. Offline, WBC_MIRRORS names one folder holding a
subfolder per source (`bccd/`, `dataset2-master/`, `pbc-dev/`) with the same files.
"""

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
from tqdm import tqdm

from pipeline.core.atomic import atomic_dir
from pipeline.core.errors import PipelineError
from pipeline.core.params import DownloadParams

CHUNK = 1 << 16
MB = 1 << 20
MIRRORS_ENV = "WBC_MIRRORS"


@dataclass(frozen=True)
class Source:
    """One upstream file: where it lives and the file name it is saved under."""

    url: str
    file: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(
    url: str,
    dest: Path,
    *,
    timeout_s: float,
    retries: int,
    max_bytes: int,
    backoff_s: float = 1.0,
) -> None:
    """Stream `url` to `dest`, resuming (HTTP Range) or restarting after a failure.

    The bytes go to `dest.part` and are renamed to `dest` only once complete, so a partial
    file never sits where a complete one is expected.
    """
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    last_error = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            _download_once(url, part, timeout_s=timeout_s, max_bytes=max_bytes)
        except (requests.RequestException, _Incomplete) as err:
            last_error = f"{type(err).__name__}: {err}"
            continue
        part.rename(dest)
        return
    part.unlink(missing_ok=True)
    raise PipelineError(
        f"{url}: download failed after {retries + 1} attempts ({last_error}). Offline? Set {MIRRORS_ENV} "
        "to a folder holding a mirror of each source: bccd/, dataset2-master/, pbc-dev/ (README: Offline)"
    )


class _Incomplete(Exception):
    """The server closed the connection before sending the whole file."""


def _download_once(url: str, part: Path, *, timeout_s: float, max_bytes: int) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=timeout_s) as resp:
        if resp.status_code == 416 and have:  # our partial file is already complete
            return
        if resp.status_code == 404:
            raise PipelineError(f"{url}: not found (HTTP 404)")
        resp.raise_for_status()
        if resp.status_code != 206:  # server ignored Range: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if total is not None and total > max_bytes:
            raise PipelineError(f"{url}: {total} bytes is over the {max_bytes}-byte limit")
        mode = "ab" if have else "wb"
        with (
            open(part, mode) as out,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.stem) as bar,
        ):
            size = have
            for chunk in resp.iter_content(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise PipelineError(f"{url}: more than the {max_bytes}-byte limit")
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and size < total:
            raise _Incomplete(f"got {size} of {total} bytes")


def _member_path(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    """The member's path with the single top folder stripped; refuses anything unsafe."""
    name = info.filename
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver recorded no type
    if kind == stat.S_IFLNK:
        raise PipelineError(f"{archive}: member {name!r} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise PipelineError(f"{archive}: member {name!r} is not a regular file")
    path = PurePosixPath(name)
    if "\\" in name or path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise PipelineError(f"{archive}: member {name!r} has an absolute path")
    if ".." in path.parts:
        raise PipelineError(f"{archive}: member {name!r} escapes the folder with '..'")
    return PurePosixPath(*path.parts[1:])


def safe_extract_zip(
    archive: Path,
    dest: Path,
    *,
    max_member_bytes: int,
    max_total_bytes: int,
    select: Callable[[PurePosixPath], PurePosixPath | None] = lambda rel: rel,
) -> int:
    """Extract a zip whose files all sit under one top folder into `dest`, stripping that folder;
    `select` maps a member's stripped path to where it goes under `dest`, or None to skip it.

    Refuses absolute paths, `..`, links (in any member, chosen or not), members over the size caps,
    and members that inflate past their declared size. Returns the number of files written.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            tops = {PurePosixPath(i.filename).parts[0] for i in infos if i.filename.strip("/")}
            if len(tops) != 1:
                raise PipelineError(f"{archive}: expected one top folder, found {sorted(tops)[:5]}")
            chosen = [(i, select(_member_path(i, archive))) for i in infos if not i.is_dir()]
            chosen = [(i, rel) for i, rel in chosen if rel is not None and rel.parts]
            declared = sum(i.file_size for i, _ in chosen)
            if declared > max_total_bytes:
                raise PipelineError(
                    f"{archive}: {declared} bytes extracted is over the {max_total_bytes}-byte limit"
                )
            count = 0
            for info, rel in chosen:
                if info.file_size > max_member_bytes:
                    raise PipelineError(
                        f"{archive}: member {info.filename!r} ({info.file_size} bytes) is over the "
                        f"{max_member_bytes}-byte limit"
                    )
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_member(zf, info, target, archive)
                count += 1
            return count
    except zipfile.BadZipFile as err:
        raise PipelineError(f"{archive}: not a valid zip archive ({err})") from None


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, archive: Path) -> None:
    written = 0
    with zf.open(info) as src, open(target, "wb") as out:
        for block in iter(lambda: src.read(CHUNK), b""):
            written += len(block)
            if written > info.file_size:
                raise PipelineError(
                    f"{archive}: member {info.filename!r} inflates past its declared {info.file_size} bytes"
                )
            out.write(block)


def read_manifest(path: Path) -> dict[str, str]:
    """Parse a `sha256sum`-style manifest: '<hex>  <relative path>' per line."""
    entries: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise PipelineError(f"{path}:{n}: not a '<sha256>  <path>' line")
        entries[rel] = digest
    return entries


def manifest_of(root: Path) -> dict[str, str]:
    """The manifest a folder would have: every file's sha256, by POSIX relative path."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def format_manifest(entries: dict[str, str]) -> str:
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(entries.items()))


def verify_tree(root: Path, manifest: dict[str, str], manifest_path: Path) -> None:
    """Fail unless `root` holds exactly the manifest's files with the manifest's checksums."""
    actual = manifest_of(root)
    missing = sorted(set(manifest) - set(actual))
    extra = sorted(set(actual) - set(manifest))
    changed = sorted(r for r in set(manifest) & set(actual) if manifest[r] != actual[r])
    if missing or extra or changed:
        problems = [
            f"{label}: {', '.join(items[:5])}{' …' if len(items) > 5 else ''}"
            for label, items in (("missing", missing), ("unexpected", extra), ("checksum mismatch", changed))
            if items
        ]
        raise PipelineError(f"fetched files do not match {manifest_path} ({'; '.join(problems)})")


@dataclass(frozen=True)
class Limits:
    """How a fetch downloads and extracts: the same for every source."""

    timeout_s: float
    retries: int
    max_download_bytes: int
    max_extracted_bytes: int
    backoff_s: float = 1.0

    @classmethod
    def from_params(cls, p: DownloadParams) -> "Limits":
        return cls(p.timeout_s, p.retries, p.max_download_mb * MB, p.max_extracted_mb * MB)

    def download(self, url: str, dest: Path) -> None:
        download(url, dest, timeout_s=self.timeout_s, retries=self.retries,
                 max_bytes=self.max_download_bytes, backoff_s=self.backoff_s)  # fmt: skip

    def extract(self, archive: Path, dest: Path, **select) -> int:
        return safe_extract_zip(archive, dest, max_member_bytes=self.max_extracted_bytes,
                                max_total_bytes=self.max_extracted_bytes, **select)  # fmt: skip


@contextlib.contextmanager
def staging(dest: Path, manifest_path: Path) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """(tree, scratch folder, manifest): fill `tree`; it replaces `dest` only if it then matches the
    manifest exactly, and the scratch folder (downloads) is removed either way."""
    manifest = read_manifest(manifest_path)
    with (
        atomic_dir(dest) as tree,
        tempfile.TemporaryDirectory(prefix=f".{dest.name}-download-", dir=dest.parent) as scratch,
    ):
        yield tree, Path(scratch), manifest
        verify_tree(tree, manifest, manifest_path)


def fetch_bccd(
    dest: Path, *, archive: Source, labels: Source, manifest_path: Path, mirror: Path | None, limits: Limits
) -> dict:
    """Put the verified BCCD tree (images, XML, labels.csv) in `dest`; return a report."""
    with staging(dest, manifest_path) as (tree, dl, _):
        for src in (archive, labels):
            target = dl / src.file
            if mirror is not None:
                found = Path(mirror) / src.file
                if not found.is_file():
                    raise PipelineError(f"{found}: not in the mirror folder {mirror}")
                shutil.copyfile(found, target)
            else:
                limits.download(src.url, target)
        n_files = limits.extract(dl / archive.file, tree)
        shutil.copyfile(dl / labels.file, tree / "labels.csv")
    return {"files": n_files + 1, "source": "mirror" if mirror is not None else "download"}


def mirror_for(folder: str) -> Path | None:
    """The mirror of one source, `$WBC_MIRRORS/<folder>`; None when WBC_MIRRORS is unset (download)."""
    root = os.environ.get(MIRRORS_ENV)
    if not root:
        return None
    path = Path(root) / folder
    if not path.is_dir():
        raise PipelineError(f"{MIRRORS_ENV}={root}: no {folder}/ there (the mirror of this source)")
    return path


def fetch_files(
    dest: Path, *, archive: Source, folder: str, manifest_path: Path, mirror: Path | None, limits: Limits
) -> dict:
    """Put exactly the manifest's files in `dest`, verified: from `folder` inside the upstream
    archive, or from a mirror folder holding (at least) those files at the manifest's paths."""
    with staging(dest, manifest_path) as (tree, scratch, manifest):
        if mirror is not None:
            for rel in manifest:
                found = Path(mirror) / rel
                if not found.is_file():
                    raise PipelineError(f"{found}: listed in {manifest_path} but not in the mirror {mirror}")
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(found, tree / rel)
        else:
            target = scratch / archive.file
            limits.download(archive.url, target)
            prefix = PurePosixPath(folder) if folder else PurePosixPath()

            def select(rel: PurePosixPath) -> PurePosixPath | None:
                if not rel.is_relative_to(prefix):
                    return None
                inside = rel.relative_to(prefix)
                return inside if inside.as_posix() in manifest else None

            limits.extract(target, tree, select=select)
    return {"files": len(manifest), "source": "mirror" if mirror is not None else "download"}
