"""studylib.datasets: the standard formats on disk; studylib.download: the checksum-verified downloader
(against a local HTTP server on loopback); the `studylib data` sub-commands. Tiny fixtures in the real
formats (studylib.fixtures)."""

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import struct
import tarfile
import threading
import urllib.request

import numpy as np
import pytest

from studylib import cli, paths
from studylib import datasets as D
from studylib.download import download
from studylib.fixtures import fixture_arrays, write_fixture

NAMES = ["mnist", "fashion_mnist", "cifar10"]


def _md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def _assert_same(got, expected):
    assert len(got) == 4
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


# ---------------------------------------------------------------------------------------------
# Reading


@pytest.mark.parametrize("name,gz", [("mnist", True), ("mnist", False), ("fashion_mnist", True),
                                     ("fashion_mnist", False), ("cifar10", True)])
def test_round_trip(tmp_path, name, gz):
    md5s = write_fixture(name, tmp_path, n_train=40, n_test=20, seed=3, gzip=gz)
    d = tmp_path / D.STANDARD[name].directory
    for filename, md5 in md5s.items():
        assert _md5(d / filename) == md5
    x_train, y_train, x_test, y_test = got = D.load(name, tmp_path)
    shape = (1, 28, 28) if name != "cifar10" else (3, 32, 32)
    assert x_train.shape == (40, *shape) and x_test.shape == (20, *shape)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert set(y_train.tolist()) == set(range(10)) == set(y_test.tolist())
    _assert_same(got, fixture_arrays(name, 40, 20, seed=3))
    assert x_train.flags.writeable


def test_fixtures_differ_between_datasets_and_seeds():
    a, b = fixture_arrays("mnist"), fixture_arrays("fashion_mnist")
    assert not np.array_equal(a[0], b[0])
    assert not np.array_equal(fixture_arrays("mnist", seed=1)[0], a[0])
    _assert_same(fixture_arrays("mnist"), a)  # deterministic


def _idx(code: int, fmt: str, values: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, values.ndim) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(fmt).tobytes()


@pytest.mark.parametrize("code,fmt", [(0x08, ">u1"), (0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"),
                                      (0x0D, ">f4"), (0x0E, ">f8")])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_handcrafted(tmp_path, code, fmt, gz):
    values = (np.arange(24).reshape(2, 3, 4) * (1 if fmt.endswith("1") else -7)).astype(fmt)
    if fmt == ">u1":
        values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) + 200
    data = _idx(code, fmt, values)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    got = D.read_idx(path)
    assert got.shape == (2, 3, 4)
    assert got.dtype == np.dtype(fmt).newbyteorder("=")
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_cifar_channel_planes(tmp_path):
    """Rows of b"data" are the R, G, B planes of 32x32, row-major: pixel (c, i, j) is at c*1024+i*32+j."""
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    row = np.zeros(3072, dtype=np.uint8)
    row[0 * 1024 + 0 * 32 + 1] = 11   # R, row 0, col 1
    row[1 * 1024 + 2 * 32 + 0] = 22   # G, row 2, col 0
    row[2 * 1024 + 31 * 32 + 31] = 33  # B, row 31, col 31
    for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / n, "wb") as f:
            pickle.dump({b"data": np.stack([row, row]), b"labels": [3, 7]}, f, protocol=2)
    x_train, y_train, x_test, y_test = D.load("cifar10", tmp_path)
    assert x_train.shape == (10, 3, 32, 32) and x_test.shape == (2, 3, 32, 32)
    assert x_test[0, 0, 0, 1] == 11 and x_test[0, 1, 2, 0] == 22 and x_test[0, 2, 31, 31] == 33
    assert int(x_test.sum()) == 2 * (11 + 22 + 33)
    assert y_train.tolist() == [3, 7] * 5 and y_test.dtype == np.int64


@pytest.mark.parametrize("name,remove", [("mnist", None), ("mnist", "t10k-labels-idx1-ubyte.gz"),
                                         ("fashion_mnist", "train-images-idx3-ubyte.gz"),
                                         ("cifar10", None), ("cifar10", "cifar-10-batches-py/test_batch")])
def test_missing_file(tmp_path, name, remove):
    spec = D.STANDARD[name]
    if remove:
        write_fixture(name, tmp_path)
        (tmp_path / spec.directory / remove).unlink()
        if name == "cifar10":
            (tmp_path / spec.directory / "cifar-10-python.tar.gz").unlink()
    with pytest.raises(D.DataError) as e:
        D.load(name, tmp_path)
    msg = str(e.value)
    missing = tmp_path / spec.directory / (remove or ("cifar-10-batches-py/data_batch_1" if name == "cifar10"
                                                      else "train-images-idx3-ubyte.gz"))
    assert msg.startswith(f"{missing}: not found")
    assert f"studylib data download {name} --root {tmp_path}" in msg
    assert "http" in msg and "\n" not in msg


def test_cifar_archive_only_says_extract(tmp_path):
    write_fixture("cifar10", tmp_path)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(D.DataError, match=r"data_batch_3: not found, but the archive .* is: extract it with "
                                          r"`studylib data download cifar10"):
        D.load("cifar10", tmp_path)
    assert D.status("cifar10", tmp_path).startswith("archive only")


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name,filename,gz,words", [
    ("mnist", "train-images-idx3-ubyte", False, "truncated"),
    ("mnist", "t10k-labels-idx1-ubyte", False, "truncated"),
    ("mnist", "train-images-idx3-ubyte.gz", True, "truncated or corrupt"),
    ("fashion_mnist", "t10k-images-idx3-ubyte.gz", True, "truncated or corrupt"),
    ("cifar10", "cifar-10-batches-py/data_batch_2", True, "truncated or corrupt"),
    ("cifar10", "cifar-10-batches-py/test_batch", True, "truncated or corrupt"),
])
def test_truncated_file(tmp_path, name, filename, gz, words):
    write_fixture(name, tmp_path, gzip=gz)
    path = tmp_path / D.STANDARD[name].directory / filename
    _cut(path)
    with pytest.raises(D.DataError) as e:
        D.load(name, tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {words}")
    assert f"studylib data download {name}" in msg and "\n" not in msg


def test_corrupt_idx_files(tmp_path):
    write_fixture("mnist", tmp_path, gzip=False)
    d = tmp_path / "mnist"
    good = (d / "train-images-idx3-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte").write_bytes(b"\x01\x02" + good[2:])  # bad magic
    with pytest.raises(D.DataError, match=r"train-images-idx3-ubyte: corrupt: not an IDX file"):
        D.load("mnist", tmp_path)
    (d / "train-images-idx3-ubyte").write_bytes(good + b"\0")  # trailing bytes: size mismatch
    with pytest.raises(D.DataError, match=r"train-images-idx3-ubyte: corrupt: the header says \(64, 28, 28\)"):
        D.load("mnist", tmp_path)
    (d / "train-images-idx3-ubyte").write_bytes(good)
    labels = D.read_idx(d / "train-labels-idx1-ubyte")
    (d / "train-labels-idx1-ubyte").write_bytes(_idx(0x08, ">u1", labels[:-1]))  # counts disagree
    with pytest.raises(D.DataError, match=r"train-labels-idx1-ubyte: corrupt: 63 labels for 64 images"):
        D.load("mnist", tmp_path)
    (d / "train-labels-idx1-ubyte").write_bytes(_idx(0x08, ">u1", labels + 10))  # labels out of range
    with pytest.raises(D.DataError, match=r"labels outside 0\.\.9"):
        D.load("mnist", tmp_path)


def test_corrupt_cifar_batch(tmp_path):
    write_fixture("cifar10", tmp_path)
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [1, 2, 3]}))
    with pytest.raises(D.DataError, match=r"data_batch_1: corrupt: 3 labels for 4 images"):
        D.load("cifar10", tmp_path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3000), np.uint8), b"labels": [1, 2, 3, 4]}))
    with pytest.raises(D.DataError, match=r"data_batch_1: corrupt: expected uint8 data shaped \(N, 3072\)"):
        D.load("cifar10", tmp_path)


def test_unknown_dataset(tmp_path):
    with pytest.raises(D.DataError, match="unknown dataset 'svhn'"):
        D.load("svhn", tmp_path)


def test_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYLIB_DATA_ROOT", str(tmp_path / "env"))
    assert D.data_root(tmp_path / "x") == (tmp_path / "x").resolve()
    assert D.data_root() == (tmp_path / "env").resolve()
    monkeypatch.delenv("STUDYLIB_DATA_ROOT")
    assert D.data_root() == paths.project_root() / "data"


def test_registry():
    assert list(D.STANDARD) == NAMES
    for name, spec in D.STANDARD.items():
        assert spec.directory == name and spec.how
        assert all(len(m) == 32 and int(m, 16) >= 0 for m in spec.md5.values())
    assert D.STANDARD["mnist"].urls("t10k-images-idx3-ubyte.gz")[0] == \
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz"
    assert D.STANDARD["cifar10"].urls("cifar-10-python.tar.gz", "http://h/x")[0] == \
        "http://h/x/cifar-10-python.tar.gz"


# ---------------------------------------------------------------------------------------------
# Downloading from a local HTTP server


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A ThreadingHTTPServer on 127.0.0.1 serving tmp_path/srv; yields (base URL, directory, hits)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = tmp_path / "srv"
    srv.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a client that hangs up early (the short-body test) is not a failure here

    httpd = Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(srv)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", srv, hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _serve(name, server, monkeypatch, **kw):
    """Fixture files for `name` on the server; the registry's MD5s set to theirs. Returns the mirror."""
    base, srv, _ = server
    md5s = write_fixture(name, srv, **kw)
    monkeypatch.setattr(D.STANDARD[name], "md5", md5s)
    return f"{base}/{D.STANDARD[name].directory}/"


def _leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize("name", NAMES)
def test_download_then_load_then_nothing_refetched(tmp_path, server, monkeypatch, name):
    _, _, hits = server
    mirror = _serve(name, server, monkeypatch)
    root = tmp_path / "data"
    d = download(name, root, mirror=mirror, progress=False, timeout=10)
    assert d == root.resolve() / name
    _assert_same(D.load(name, root), fixture_arrays(name))
    n_files = len(D.STANDARD[name].md5)
    assert len(hits) == n_files
    for filename, md5 in D.STANDARD[name].md5.items():
        assert _md5(d / filename) == md5  # kept (the CIFAR archive too)
    assert _leftovers(d) == []
    assert download(name, root, mirror=mirror, progress=False, timeout=10) == d
    assert len(hits) == n_files  # second download: nothing fetched


def test_download_refetches_a_damaged_file(tmp_path, server, monkeypatch, capsys):
    _, _, hits = server
    mirror = _serve("mnist", server, monkeypatch)
    root = tmp_path / "data"
    d = download("mnist", root, mirror=mirror, progress=False)
    _cut(d / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(D.DataError, match="truncated or corrupt"):
        D.load("mnist", root)
    download("mnist", root, mirror=mirror, progress=True)
    assert hits[-1].endswith("/t10k-images-idx3-ubyte.gz") and len(hits) == 5
    assert "present but its md5 differs" in capsys.readouterr().err
    _assert_same(D.load("mnist", root), fixture_arrays("mnist"))


def test_cifar_redownload_reextracts_a_deleted_batch(tmp_path, server, monkeypatch):
    _, _, hits = server
    mirror = _serve("cifar10", server, monkeypatch)
    root = tmp_path / "data"
    d = download("cifar10", root, mirror=mirror, progress=False)
    (d / "cifar-10-batches-py" / "test_batch").unlink()
    download("cifar10", root, mirror=mirror, progress=False)
    assert len(hits) == 1  # the kept archive is extracted again, not fetched
    _assert_same(D.load("cifar10", root), fixture_arrays("cifar10"))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_checksum_mismatch_keeps_nothing(tmp_path, server, monkeypatch, name):
    mirror = _serve(name, server, monkeypatch)
    spec = D.STANDARD[name]
    bad = list(spec.md5)[-1]
    actual = spec.md5[bad]
    monkeypatch.setitem(spec.md5, bad, "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(D.DataError) as e:
        download(name, root, mirror=mirror, progress=False)
    msg = str(e.value)
    d = root / spec.directory
    assert msg.startswith(f"{d.resolve() / bad}: checksum mismatch")
    assert f"expected md5 {'0' * 32}, got {actual}" in msg and mirror + bad in msg and "\n" not in msg
    assert not (d / bad).exists() and _leftovers(d) == []
    assert not (d / "cifar-10-batches-py").exists()


def test_download_404_names_the_url(tmp_path, server, monkeypatch):
    base, _, _ = server
    mirror = f"{base}/nothing-here/"
    with pytest.raises(D.DataError) as e:
        download("fashion_mnist", tmp_path / "data", mirror=mirror, progress=False)
    msg = str(e.value)
    assert f"{mirror}train-images-idx3-ubyte.gz: HTTP 404" in msg and "\n" not in msg
    assert _leftovers(tmp_path / "data" / "fashion_mnist") == []


def test_download_connection_refused_names_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mirror = f"http://127.0.0.1:{port}/"
    with pytest.raises(D.DataError, match=rf"download failed: {mirror}cifar-10-python.tar.gz: "):
        download("cifar10", tmp_path / "data", mirror=mirror, progress=False, timeout=5)
    assert _leftovers(tmp_path / "data" / "cifar10") == []


def test_download_falls_back_to_the_next_mirror(tmp_path, server, monkeypatch):
    base, _, hits = server
    good = _serve("mnist", server, monkeypatch)
    monkeypatch.setattr(D.STANDARD["mnist"], "mirrors", (f"{base}/missing/", good))
    download("mnist", tmp_path / "data", progress=False)
    assert len(hits) == 8 and sum(h.startswith("/missing/") for h in hits) == 4
    _assert_same(D.load("mnist", tmp_path / "data"), fixture_arrays("mnist"))


def test_download_refuses_unsafe_archive(tmp_path, server, monkeypatch):
    base, srv, _ = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (srv / "evil").mkdir()
    (srv / "evil" / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    monkeypatch.setattr(D.STANDARD["cifar10"], "md5",
                        {"cifar-10-python.tar.gz": hashlib.md5(buf.getvalue()).hexdigest()})
    root = tmp_path / "data"
    with pytest.raises(D.DataError, match=r"refusing to extract unsafe member '\.\./escaped'"):
        download("cifar10", root, mirror=f"{base}/evil/", progress=False)
    assert not (root / "escaped").exists()


# ---------------------------------------------------------------------------------------------
# The `studylib data` sub-commands


def _run(argv):
    return cli.main(argv)


def test_cli_download_check_list(tmp_path, server, monkeypatch, capsys):
    mirror = _serve("mnist", server, monkeypatch)
    root = tmp_path / "data"
    assert _run(["data", "download", "mnist", "--root", str(root), "--mirror", mirror]) == 0
    out, err = capsys.readouterr()
    assert f"mnist: ready in {root.resolve() / 'mnist'}" in out and "md5 ok" in err
    assert _run(["data", "check", "mnist", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "64 train, 32 test images of shape (1, 28, 28)" in out
    assert "x (64, 1, 28, 28) uint8, y (64,) int64" in out and "x (32, 1, 28, 28) uint8" in out
    counts = np.bincount(fixture_arrays("mnist")[1], minlength=10)
    assert "per class " + " ".join(f"{i}:{c}" for i, c in enumerate(counts)) in out
    assert _run(["data", "list", "--root", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:3] == ["mnist", "mnist/", "present"] for line in lines)
    assert any(line.split()[:3] == ["cifar10", "cifar10/", "missing"] for line in lines)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert _run(["data", "check", "cifar10", "--root", str(tmp_path / "empty")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("studylib: error: ")
    assert "not found; get it with `studylib data download cifar10" in lines[0]
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    assert _run(["data", "download", "mnist", "--root", str(a_file), "--quiet"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"studylib: error: {a_file.resolve() / 'mnist'}: cannot create")
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["data", "download", "svhn"])
    assert e.value.code == 2
    assert os.listdir(tmp_path) == ["a_file"]  # nothing created by failed commands


def test_download_bad_mirror_url_is_one_line(tmp_path):
    with pytest.raises(D.DataError, match=r"download failed: not-a-url/train-images-idx3-ubyte.gz: ValueError"):
        download("mnist", tmp_path / "data", mirror="not-a-url", progress=False)


def test_download_short_body_is_a_network_error(tmp_path, server, monkeypatch):
    """A server that closes the connection before Content-Length bytes: nothing kept, the URL named."""
    _, srv, _ = server
    mirror = _serve("mnist", server, monkeypatch)
    cut = srv / "mnist" / "train-images-idx3-ubyte.gz"
    full = cut.read_bytes()

    real_urlopen = urllib.request.urlopen

    def short_urlopen(req, timeout=None):
        resp = real_urlopen(req, timeout=timeout)
        if req.full_url.endswith("train-images-idx3-ubyte.gz"):
            resp.fp = io.BufferedReader(io.BytesIO(full[:100]))  # the body ends early
        return resp

    monkeypatch.setattr(urllib.request, "urlopen", short_urlopen)
    with pytest.raises(D.DataError, match=rf"download failed: {mirror}train-images-idx3-ubyte.gz: "):
        download("mnist", tmp_path / "data", mirror=mirror, progress=False)
    assert _leftovers(tmp_path / "data" / "mnist") == []
    assert not (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz").exists()
