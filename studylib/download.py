"""Fetching the standard datasets: ``download(name, root)`` streams each file of
:data:`studylib.datasets.STANDARD` with urllib, verifying its MD5 before it takes its final name
(already verified files are kept), and extracts the CIFAR-10 archive safely. Every problem is one
line, a :class:`~studylib.datasets.DataError` naming the file or URL.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from .datasets import (_CIFAR_ARCHIVE, _CIFAR_FOLDER, _CIFAR_TEST, _CIFAR_TRAIN, DataError, DatasetSpec, _get_cmd,
                       _spec, data_root, status)

__all__ = ["download"]


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# network failures (HTTPError is a URLError; IncompleteRead an HTTPException; ValueError: a malformed URL)
_NET_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)


class _Progress:
    def __init__(self, label: str, total: int | None, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.tty and now - self.last > 0.2:
            self.last = now
            pct = f" {100 * done / self.total:5.1f}%" if self.total else ""
            print(f"\r  {self.label}: {done / 1e6:7.1f} MB{pct}", end="", file=sys.stderr, flush=True)

    def close(self, done: int, seconds: float) -> None:
        if self.enabled:
            print(f"{chr(13) if self.tty else ''}  {self.label}: {done / 1e6:.1f} MB in {seconds:.1f} s, "
                  "verifying md5", file=sys.stderr, flush=True)


def _fetch(url: str, dest: Path, timeout: float, progress: bool) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file beside ``dest``; return (temporary path, md5). Network
    errors propagate as they are (the caller names the URL); the temporary file never survives one."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DataError(f"{dest.parent}: cannot write a temporary file: {e.strerror or e}") from None
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        t0 = time.perf_counter()
        req = urllib.request.Request(url, headers={"User-Agent": "studylib-datasets/1 (python urllib)"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            bar = _Progress(dest.name, int(length) if length and length.isdigit() else None, progress)
            done = 0
            while block := resp.read(1 << 20):
                try:
                    out.write(block)
                except OSError as e:  # local (disk full), not the network: name the file
                    raise DataError(f"{dest}: cannot write: {e.strerror or e}") from None
                h.update(block)
                done += len(block)
                bar.update(done)
            if bar.total is not None and done != bar.total:
                raise ConnectionError(f"connection closed after {done} of {bar.total} bytes")
        bar.close(done, time.perf_counter() - t0)
        return tmp, h.hexdigest()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        text = f"HTTP {e.code} {e.reason}"
    elif isinstance(e, urllib.error.URLError):
        text = str(e.reason)
    else:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return " ".join(text.split())  # one line


def _download_file(spec: DatasetSpec, filename: str, md5: str, d: Path, mirror: str | None,
                   timeout: float, progress: bool) -> bool:
    """Make ``d/filename`` the verified file. Returns True when it was fetched, False when already
    present with the right MD5."""
    dest = d / filename
    if dest.is_file():
        if _md5(dest) == md5:
            if progress:
                print(f"  {filename}: already present, md5 ok", file=sys.stderr)
            return False
        if progress:
            print(f"  {filename}: present but its md5 differs: fetching it again", file=sys.stderr)
    failures = []
    for url in spec.urls(filename, mirror):
        if progress:
            print(f"  {filename}: fetching {url}", file=sys.stderr, flush=True)
        try:
            tmp, got = _fetch(url, dest, timeout, progress)
        except DataError:  # a local problem, already one line naming the file
            raise
        except _NET_ERRORS as e:
            failures.append(f"{url}: {_reason(e)}")
            continue
        if got != md5:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{dest}: checksum mismatch for {url}: expected md5 {md5}, got {got} "
                            f"(nothing was kept; the mirror serves a different or damaged file)")
        os.replace(tmp, dest)
        if progress:
            print(f"  {filename}: md5 ok", file=sys.stderr)
        return True
    raise DataError(f"download failed: {'; then '.join(failures)}")


def _safe_members(archive: Path, tar: tarfile.TarFile, destination: Path):
    base = destination.resolve()
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or m.name.startswith(("/", "\\")):
            raise DataError(f"{archive}: refusing to extract unsafe member {m.name!r} (absolute or '..' path)")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"{archive}: refusing to extract member {m.name!r}: not a plain file or directory")
        if not (base / m.name).resolve().is_relative_to(base):
            raise DataError(f"{archive}: refusing to extract member {m.name!r}: it lands outside {base}")
        yield m


def _extract(archive: Path, destination: Path, spec: DatasetSpec, root: Path) -> None:
    hint = f"delete it and run {_get_cmd(spec, root)} again"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = list(_safe_members(archive, tar, destination))
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, members=members, filter="data")
            else:  # Python < 3.11.4: the members were checked above
                tar.extractall(destination, members=members)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: truncated or corrupt archive ({e}); {hint}") from None
    except OSError as e:
        raise DataError(f"{archive}: cannot extract into {destination}: {e.strerror or e}") from None
    for n in (*_CIFAR_TRAIN, _CIFAR_TEST):
        if not (destination / _CIFAR_FOLDER / n).is_file():
            raise DataError(f"{archive}: corrupt: it holds no {_CIFAR_FOLDER}/{n}; {hint}")


def download(name: str, root: str | os.PathLike | None = None, mirror: str | None = None,
             progress: bool = True, timeout: float = 60) -> Path:
    """Fetch a standard dataset into ``<root>/<directory>`` and return that directory.

    Each file is skipped when already present with the right MD5; otherwise it is streamed to a
    temporary name in the same directory while its MD5 is computed, verified, then renamed into
    place. ``mirror`` replaces the base URL (the file name is appended). The CIFAR-10 archive is kept
    and extracted (safely) into ``cifar10/``. Raises :class:`DataError` (one line) on a checksum
    mismatch (naming the file, expected and got) or a network error (naming the URL)."""
    spec = _spec(name)
    root = data_root(root)
    d = root / spec.directory
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{d}: cannot create the dataset directory: {e.strerror or e}") from None
    if progress:
        print(f"{spec.name} -> {d}", file=sys.stderr)
    fetched = False
    for filename, md5 in spec.md5.items():
        try:
            fetched |= _download_file(spec, filename, md5, d, mirror, timeout, progress)
        except DataError:
            raise
        except OSError as e:  # local: disk full, permissions
            raise DataError(f"{d / filename}: cannot write: {e.strerror or e}") from None
    if spec.kind == "cifar":
        if fetched or status(name, root) != "present":
            if progress:
                print(f"  extracting {_CIFAR_ARCHIVE} into {d}", file=sys.stderr)
            _extract(d / _CIFAR_ARCHIVE, d, spec, root)
    return d
