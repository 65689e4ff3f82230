"""Standard image datasets on disk: MNIST, Fashion-MNIST and CIFAR-10 in their published formats.

One job: reading the files. Where they live under a data root, what a download fetches (the URLs and
MD5s: the :data:`STANDARD` table), whether they are there, and how to read them into numpy arrays.
No torch, no torchvision, no caching; the caller converts and keeps.

    root/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz      (or the same names without .gz)
    root/fashion_mnist/...                                           (the same four names)
    root/cifar10/cifar-10-python.tar.gz                              (the archive, kept)
    root/cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch}    (python pickles)

No file is unpickled unrestricted: a CIFAR-10 batch is read by :class:`_BatchUnpickler`, which admits
numpy's array reconstruction and nothing else, so a planted pickle is refused before any of its
code could run. A batch of the published size must also have the published MD5 (checked before it
is read; a verified file is remembered by size, mtime, ctime and inode, in this process and in the
user's cache directory, so a second read is not slowed); a file of another size is not the
published file (the tiny fixtures, a user's own stand-in) and is guarded by the unpickler alone.

The root is ``data_root()``: an explicit argument, else ``$STUDYLIB_DATA_ROOT``, else
``<project>/data``. ``load(name, root)`` returns ``(x_train, y_train, x_test, y_test)``: x uint8
shaped (N, C, H, W), y int64. Every problem is one line, a :class:`DataError` naming the file.
Fetching them is :func:`studylib.download.download`; tiny copies in the real formats, for tests and
offline trials, are :func:`studylib.fixtures.write_fixture`.

URLs and MD5s are torchvision's (``torchvision/datasets/mnist.py`` and ``cifar.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shlex
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import paths
from .records import atomic_write_bytes

__all__ = ["DataError", "DatasetSpec", "STANDARD", "data_root", "read_idx", "load", "status"]


class DataError(ValueError):
    """A dataset file is missing, truncated, corrupt, or could not be fetched; the message is one line
    naming the file (or URL) and what to do."""


_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
# the published batches: MD5s as torchvision lists them (datasets/cifar.py), sizes in bytes
_CIFAR_PUBLISHED = {"data_batch_1": ("c99cafc152244af753f735de768cd75f", 31035704),
                    "data_batch_2": ("d4bba439e000b95fd0a9bffe97cbabec", 31035320),
                    "data_batch_3": ("54ebc095f3ab1f0389bbae665268c751", 31035999),
                    "data_batch_4": ("634d18415352ddfa80567beed471001a", 31035696),
                    "data_batch_5": ("482c414d41f54cd18b22e5b47cb7c3cb", 31035623),
                    "test_batch": ("40351d587109b95175f43aff81a1287e", 31035526)}


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


def _latin1_encode(text, encoding="latin1"):
    """What a protocol-2 pickle written by Python 3 calls to rebuild ``bytes``
    (``_codecs.encode(str, "latin1")``), admitted for that encoding only."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds (dicts, lists, bytes, numbers and numpy arrays) and
    refuses every other global, so no function named in the file is ever called."""

    # ndarray.__reduce__'s reconstructor is admitted under each module name numpy pickled it with
    _ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                ("_codecs", "encode"): _latin1_encode,
                ("numpy.core.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0],
                ("numpy._core.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0]}

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global a CIFAR-10 batch does not hold."""


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "studylib" / "verified-md5.json"


_VERIFIED: dict[str, list] = {}  # path -> [size, mtime_ns, ctime_ns, inode, md5] of files found good


def _stamp(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _verify_published(path: Path, hint: str) -> bool:
    """A batch of the published size must be the published file: its MD5 is checked before it is
    read. A verified file is remembered by (size, mtime, ctime, inode) -- ctime cannot be set back
    by a user -- in this process and in the user's cache directory (not the data root, which others
    may write). True for the published file; False for a file of another size, which is left to
    :class:`_BatchUnpickler`."""
    published = _CIFAR_PUBLISHED.get(path.name)
    try:
        st = path.stat()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if published is None or st.st_size != published[1]:
        return False
    key, stamp = str(path.resolve()), _stamp(st)
    if not _VERIFIED:
        try:
            _VERIFIED.update(json.loads(_cache_file().read_text()))
        except (OSError, ValueError):
            pass
    if _VERIFIED.get(key) == [*stamp, published[0]]:
        return True
    h = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if h.hexdigest() != published[0]:
        raise DataError(f"{path}: refused: it has the published file's size but not its MD5 "
                        f"({h.hexdigest()}, published {published[0]}): modified or damaged; {hint}")
    _VERIFIED[key] = [*stamp, published[0]]
    try:
        atomic_write_bytes(_cache_file(), json.dumps(_VERIFIED).encode())
    except OSError:  # a read-only home: the check is repeated next time, nothing else changes
        pass
    return True


def _read_cifar_batch(path: Path, hint: str) -> tuple[np.ndarray, np.ndarray]:
    _verify_published(path, hint)
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except _Refused as e:
        raise DataError(f"{path}: refused: not a plain CIFAR-10 batch: it asks for {e}, which could run "
                        f"code (nothing of it was run); {hint}") from None
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


def _cifar_hint(spec: DatasetSpec, root: Path) -> str:
    return f"delete it and run {_get_cmd(spec, root)} to extract it again"


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
    hint = _cifar_hint(spec, root)
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
    """``present``, ``missing`` or a short phrase on what is there. Reads no images, but checks that
    CIFAR-10's batches are safe to read (``refused: <the reason>`` when one is not): the published
    MD5 for a file of the published size, the restricted unpickler for any other."""
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
        if have == total:
            try:
                hint = _cifar_hint(spec, data_root(root))
                for n in (*_CIFAR_TRAIN, _CIFAR_TEST):  # the published file is known to be safe
                    if not _verify_published(d / _CIFAR_FOLDER / n, hint):
                        _read_cifar_batch(d / _CIFAR_FOLDER / n, hint)
            except DataError as e:
                return f"unusable: {e}"
    return "present" if have == total else "missing" if have == 0 else f"incomplete ({have} of {total} files)"
