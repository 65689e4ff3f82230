"""Tiny files in the real formats of the standard datasets, for tests and offline trials:
``write_fixture(name, root)`` writes what :func:`studylib.datasets.load` reads (and what
:func:`studylib.download.download` fetches), with the arrays of :func:`fixture_arrays`.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from .datasets import _CIFAR_ARCHIVE, _CIFAR_FOLDER, _CIFAR_TEST, _spec

__all__ = ["fixture_arrays", "write_fixture"]


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
