"""Standard image datasets on disk: MNIST, Fashion-MNIST and CIFAR-10 in their published formats.

One job: the files. Where they live under a data root, how to fetch them with checksums, and how to
read them into numpy arrays. No torch, no torchvision, no caching; the caller converts and keeps.

    root/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz      (or the same names without .gz)
    root/fashion_mnist/...                                           (the same four names)
    root/cifar10/cifar-10-python.tar.gz                              (the archive, kept)
    root/cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch}    (python pickles)

The root is ``data_root()``: an explicit argument, else ``$STUDYLIB_DATA_ROOT``, else
``<project>/data``. ``load(name, root)`` returns ``(x_train, y_train, x_test, y_test)``: x uint8
shaped (N, C, H, W), y int64. ``download(name, root)`` fetches with urllib, verifying each file's
MD5 before it takes its final name. Every problem is one line, a :class:`DataError` naming the file.

URLs and MD5s are torchvision's (``torchvision/datasets/mnist.py`` and ``cifar.py``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import os
import pickle
import shlex
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from . import paths

__all__ = ["DataError", "DatasetSpec", "STANDARD", "data_root", "read_idx", "load", "download",
           "write_fixture", "fixture_arrays", "add_data_parser", "cmd_data"]


class DataError(ValueError):
    """A dataset file is missing, truncated, corrupt, or could not be fetched; the message is one line
    naming the file (or URL) and what to do."""


_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


@dataclass
class DatasetSpec:
    """Where a standard dataset lives under the root and where it comes from.

    ``md5`` maps each file a download fetches to its MD5; the URL of a file is a mirror's base URL
    followed by the file name (``mirrors[0]`` is canonical, the rest are fallbacks tried on network
    errors only)."""

    name: str
    directory: str           # under the data root
    kind: str                # "idx" (four IDX files) or "cifar" (an archive of pickles)
    mirrors: tuple[str, ...]
    md5: dict[str, str]
    how: str                 # a human line on how to obtain the files
    shape: tuple[int, int, int]
    classes: tuple[str, ...] = field(default_factory=tuple)

    def urls(self, filename: str, mirror: str | None = None) -> list[str]:
        bases = [mirror] if mirror else list(self.mirrors)
        return [b.rstrip("/") + "/" + filename for b in bases]

    def path(self, root: str | os.PathLike | None = None) -> Path:
        return data_root(root) / self.directory


STANDARD: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", directory="mnist", kind="idx",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        how="`studylib data download mnist`: four IDX .gz files (11 MB) from "
            "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's mirror of yann.lecun.com/exdb/mnist)",
        shape=(1, 28, 28), classes=tuple(str(i) for i in range(10))),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist", directory="fashion_mnist", kind="idx",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        md5={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        how="`studylib data download fashion_mnist`: four IDX .gz files (30 MB) from Zalando's bucket "
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ "
            "(also github.com/zalandoresearch/fashion-mnist, data/fashion/)",
        shape=(1, 28, 28),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot")),
    "cifar10": DatasetSpec(
        name="cifar10", directory="cifar10", kind="cifar",
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        md5={_CIFAR_ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
        how="`studylib data download cifar10`: cifar-10-python.tar.gz (163 MB) from "
            "https://www.cs.toronto.edu/~kriz/cifar.html, extracted to cifar10/cifar-10-batches-py/",
        shape=(3, 32, 32),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
}


def _spec(name: str) -> DatasetSpec:
    try:
        return STANDARD[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; the standard ones are {', '.join(STANDARD)}") from None


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data root: ``explicit``, else ``$STUDYLIB_DATA_ROOT``, else ``<project>/data``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("STUDYLIB_DATA_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    return paths.project_root() / "data"


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _get_cmd(spec: DatasetSpec, root: Path) -> str:
    return f"`studylib data download {spec.name} --root {shlex.quote(str(root))}`"


# ---------------------------------------------------------------------------------------------
# Reading


_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike, _hint: str = "") -> np.ndarray:
    """Read one IDX file (gzipped or not: detected from its first bytes) into a native-endian numpy
    array shaped by its header. Raises :class:`DataError` naming the file when it is truncated or
    corrupt."""
    path = Path(path)
    hint = _hint or "get a fresh copy"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: truncated or corrupt gzip file ({e}); {hint}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: corrupt: not an IDX file (bad magic {raw[:4].hex() or 'empty'}); {hint}")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated: the IDX header is cut short; {hint}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "corrupt"
        raise DataError(f"{path}: {what}: the header says {dims} ({expected} bytes of data), "
                        f"the file holds {got}; {hint}")
    arr = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # native order, writable


def _idx_file(directory: Path, gz_name: str) -> Path | None:
    for candidate in (directory / gz_name, directory / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _load_idx(spec: DatasetSpec, root: Path):
    d = root / spec.directory
    files = {}
    for gz_name in _IDX_NAMES:
        p = _idx_file(d, gz_name)
        if p is None:
            raise DataError(f"{d / gz_name}: not found; get it with {_get_cmd(spec, root)} "
                            f"or from {spec.urls(gz_name)[0]}")
        files[gz_name] = p
    hint = f"re-download it with {_get_cmd(spec, root)} (a file with the wrong checksum is fetched again)"
    out = []
    for split in ("train", "t10k"):
        ip, lp = files[f"{split}-images-idx3-ubyte.gz"], files[f"{split}-labels-idx1-ubyte.gz"]
        x, y = read_idx(ip, hint), read_idx(lp, hint)
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != spec.shape[1:]:
            raise DataError(f"{ip}: corrupt: expected uint8 images shaped (N, {spec.shape[1]}, {spec.shape[2]}), "
                            f"got {x.dtype} {x.shape}; {hint}")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DataError(f"{lp}: corrupt: expected a vector of integer labels, got {y.dtype} {y.shape}; {hint}")
        if len(x) != len(y):
            raise DataError(f"{lp}: corrupt: {len(y)} labels for {len(x)} images in {ip.name}; {hint}")
        if len(y) and (y.min() < 0 or y.max() >= len(spec.classes)):
            raise DataError(f"{lp}: corrupt: labels outside 0..{len(spec.classes) - 1}; {hint}")
        out += [x.reshape(len(x), *spec.shape), y.astype(np.int64)]
    return tuple(out)


def _read_cifar_batch(path: Path, hint: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ...: a cut or damaged pickle
        raise DataError(f"{path}: truncated or corrupt pickle ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'no detail'}); {hint}") from None
    if not isinstance(entry, dict) or b"data" not in entry or b"labels" not in entry:
        raise DataError(f"{path}: corrupt: not a CIFAR-10 batch (no b'data' and b'labels' keys); {hint}")
    try:
        x = np.asarray(entry[b"data"])
        y = np.asarray(entry[b"labels"], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: corrupt: unreadable data or labels ({e}); {hint}") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: corrupt: expected uint8 data shaped (N, 3072), got {x.dtype} {x.shape}; {hint}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: corrupt: {y.size} labels for {len(x)} images; {hint}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path}: corrupt: labels outside 0..9; {hint}")
    return x.reshape(len(x), 3, 32, 32), y


def _load_cifar(spec: DatasetSpec, root: Path):
    d = root / spec.directory
    folder = d / _CIFAR_FOLDER
    names = (*_CIFAR_TRAIN, _CIFAR_TEST)
    for n in names:
        if not (folder / n).is_file():
            if (d / _CIFAR_ARCHIVE).is_file():
                raise DataError(f"{folder / n}: not found, but the archive {d / _CIFAR_ARCHIVE} is: "
                                f"extract it with {_get_cmd(spec, root)}")
            raise DataError(f"{folder / n}: not found; get it with {_get_cmd(spec, root)} "
                            f"or from {spec.urls(_CIFAR_ARCHIVE)[0]}")
    hint = f"delete it and run {_get_cmd(spec, root)} to extract it again"
    train = [_read_cifar_batch(folder / n, hint) for n in _CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(folder / _CIFAR_TEST, hint)
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test)


def load(name: str, root: str | os.PathLike | None = None):
    """``(x_train, y_train, x_test, y_test)`` of a standard dataset under ``root``: x uint8 shaped
    (N, C, H, W) ((N, 1, 28, 28) for the MNISTs, (N, 3, 32, 32) for CIFAR-10), y int64. Nothing is
    cached. Raises :class:`DataError` (one line naming the file) when a file is missing or bad."""
    spec = _spec(name)
    root = data_root(root)
    return _load_idx(spec, root) if spec.kind == "idx" else _load_cifar(spec, root)


def status(name: str, root: str | os.PathLike | None = None) -> str:
    """``present``, ``missing`` or a short phrase on what is there, without reading the data."""
    spec = _spec(name)
    d = data_root(root) / spec.directory
    if spec.kind == "idx":
        have = sum(_idx_file(d, n) is not None for n in _IDX_NAMES)
        total = len(_IDX_NAMES)
    else:
        have = sum((d / _CIFAR_FOLDER / n).is_file() for n in (*_CIFAR_TRAIN, _CIFAR_TEST))
        total = len(_CIFAR_TRAIN) + 1
        if have < total and (d / _CIFAR_ARCHIVE).is_file():
            return "archive only (run download to extract it)"
    return "present" if have == total else "missing" if have == 0 else f"incomplete ({have} of {total} files)"


# ---------------------------------------------------------------------------------------------
# Downloading


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


# ---------------------------------------------------------------------------------------------
# Fixtures: tiny files in the real formats, for tests and offline trials


def fixture_arrays(name: str, n_train: int = 64, n_test: int = 32, seed: int = 0):
    """The arrays ``write_fixture`` writes: ``(x_train, y_train, x_test, y_test)`` as ``load``
    returns them (random uint8 images; labels a shuffle of 0..9 repeated, so every class occurs)."""
    spec = _spec(name)
    if n_train < 10 or n_test < 10:
        raise ValueError("write_fixture: n_train and n_test must be at least 10 (every class occurs)")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])  # each dataset its own draws
    out = []
    for n in (n_train, n_test):
        out.append(rng.integers(0, 256, size=(n, *spec.shape), dtype=np.uint8))
        out.append(rng.permutation(np.arange(n) % 10).astype(np.int64))
    return tuple(out)


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
            np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}[arr.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(">")).tobytes()


def _write_bytes(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def write_fixture(name: str, root: str | os.PathLike, n_train: int = 64, n_test: int = 32, seed: int = 0,
                  gzip: bool = True) -> dict[str, str]:
    """Write a tiny copy of a standard dataset under ``root/<directory>`` in the real formats (IDX,
    gzipped or raw; CIFAR-10 pickles plus the ``.tar.gz`` archive holding them) with the arrays of
    :func:`fixture_arrays`. Returns ``{filename: md5}`` of the files a download fetches (the four
    ``.gz`` files, or the raw ones when ``gzip=False``; the CIFAR archive), so a test can serve them
    and put their checksums in the registry. Deterministic for a given seed."""
    import gzip as _gzip

    spec = _spec(name)
    d = Path(root) / spec.directory
    x_train, y_train, x_test, y_test = fixture_arrays(name, n_train, n_test, seed)
    written = {}
    if spec.kind == "idx":
        arrays = {"train-images-idx3-ubyte.gz": x_train.reshape(len(x_train), *spec.shape[1:]),
                  "train-labels-idx1-ubyte.gz": y_train.astype(np.uint8),
                  "t10k-images-idx3-ubyte.gz": x_test.reshape(len(x_test), *spec.shape[1:]),
                  "t10k-labels-idx1-ubyte.gz": y_test.astype(np.uint8)}
        for gz_name, arr in arrays.items():
            data = _idx_bytes(arr)
            if gzip:
                written[gz_name] = _write_bytes(d / gz_name, _gzip.compress(data, mtime=0))
            else:
                written[gz_name.removesuffix(".gz")] = _write_bytes(d / gz_name.removesuffix(".gz"), data)
        return written
    batches = {}
    for i, (xb, yb) in enumerate(zip(np.array_split(x_train, 5), np.array_split(y_train, 5)), 1):
        batches[f"data_batch_{i}"] = {b"batch_label": f"training batch {i} of 5".encode(),
                                      b"labels": [int(v) for v in yb], b"data": xb.reshape(len(xb), -1),
                                      b"filenames": [f"fixture_{i}_{j}.png".encode() for j in range(len(xb))]}
    batches[_CIFAR_TEST] = {b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in y_test],
                            b"data": x_test.reshape(len(x_test), -1),
                            b"filenames": [f"fixture_test_{j}.png".encode() for j in range(len(x_test))]}
    batches["batches.meta"] = {b"label_names": [c.encode() for c in spec.classes],
                               b"num_cases_per_batch": len(batches["data_batch_1"][b"labels"]), b"num_vis": 3072}
    blobs = {n: pickle.dumps(b, protocol=2) for n, b in batches.items()}
    for n, blob in blobs.items():
        _write_bytes(d / _CIFAR_FOLDER / n, blob)
    buf = io.BytesIO()
    with _gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        folder = tarfile.TarInfo(_CIFAR_FOLDER)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for n, blob in blobs.items():
            info = tarfile.TarInfo(f"{_CIFAR_FOLDER}/{n}")
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    written[_CIFAR_ARCHIVE] = _write_bytes(d / _CIFAR_ARCHIVE, buf.getvalue())
    return written


# ---------------------------------------------------------------------------------------------
# The `studylib data` command (hooked into studylib.cli by its owner)


def _err(msg: str, code: int = 2) -> int:
    from .cli import _err as cli_err  # imported at call time: cli imports this module

    return cli_err(msg, code)


_ROOT_HELP = "data root (default: $STUDYLIB_DATA_ROOT or <project>/data)"


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data {download,check,list}`` to an argparse sub-parsers object; returns the ``data``
    parser. Its ``func`` default is :func:`cmd_data`."""
    data = subparsers.add_parser("data", help="standard datasets (MNIST, Fashion-MNIST, CIFAR-10): "
                                              "download with checksums, check, list")
    sub = data.add_subparsers(dest="data_command", required=True)
    dl = sub.add_parser("download", help="fetch a dataset, verifying MD5s (files already verified are kept)")
    dl.add_argument("name", choices=list(STANDARD))
    dl.add_argument("--root", help=_ROOT_HELP)
    dl.add_argument("--mirror", help="a base URL replacing the canonical one (file names are appended)")
    dl.add_argument("--timeout", type=float, default=60, help="seconds per network operation (default 60)")
    dl.add_argument("--quiet", action="store_true", help="no progress lines")
    ck = sub.add_parser("check", help="load a dataset and print its shapes and class counts")
    ck.add_argument("name", choices=list(STANDARD))
    ck.add_argument("--root", help=_ROOT_HELP)
    ls = sub.add_parser("list", help="the standard datasets, their directories, and whether they are present")
    ls.add_argument("--root", help=_ROOT_HELP)
    data.set_defaults(func=cmd_data)
    return data


def _describe(split: str, x: np.ndarray, y: np.ndarray, classes) -> str:
    counts = np.bincount(y, minlength=len(classes)) if len(y) else np.zeros(len(classes), int)
    per_class = " ".join(f"{i}:{c}" for i, c in enumerate(counts))
    return f"  {split:5s} x {tuple(x.shape)} {x.dtype}, y {tuple(y.shape)} {y.dtype}; per class {per_class}"


def cmd_data(args) -> int:
    """Run ``studylib data ...``: 0 on success; one ``studylib: error:`` line and 2 on a DataError."""
    try:
        if args.data_command == "download":
            t0 = time.perf_counter()
            d = download(args.name, args.root, args.mirror, progress=not getattr(args, "quiet", False),
                         timeout=getattr(args, "timeout", 60))
            print(f"{args.name}: ready in {d} ({time.perf_counter() - t0:.1f} s)")
        elif args.data_command == "check":
            spec = _spec(args.name)
            root = data_root(args.root)
            x_train, y_train, x_test, y_test = load(args.name, root)
            print(f"ok: {spec.name} in {root / spec.directory}: {len(x_train)} train, {len(x_test)} test "
                  f"images of shape {tuple(x_train.shape[1:])}, {len(spec.classes)} classes")
            print(_describe("train", x_train, y_train, spec.classes))
            print(_describe("test", x_test, y_test, spec.classes))
        elif args.data_command == "list":
            root = data_root(getattr(args, "root", None))
            print(f"data root: {root}")
            for name, spec in STANDARD.items():
                print(f"  {name:14s} {spec.directory + '/':16s} {status(name, root)}")
                print(f"  {'':14s} {spec.how}")
        else:
            return _err(f"unknown data command {args.data_command!r}")
    except DataError as e:
        return _err(str(e))
    return 0
