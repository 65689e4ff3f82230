"""Run records on disk: the only interface between a run and the report.

``outputs/runs/<study>/<hash of the full resolved RunConfig>/`` holds

* ``config.json``   the full resolved config (numbers as numbers)
* ``env.json``      code version (git SHA, dirty flag), package versions, device, threads, seed
* ``metrics.json``  the scorecard, the fit summary and the technique's diagnostics
* ``history.json``  one row per epoch
* ``model.pt``      the selected weights (read back with ``weights_only=True``)
* ``done``          written last, atomically: a record without it is unfinished and is redone
* ``checkpoint.pt`` while the run trains: where a killed run resumes from (removed when done)
* ``failed.json``   instead of ``done`` when the run raised (the reason is kept)

A run that another study already computed (the same config but for the study, arm and profile
names: :meth:`studylib.config.RunConfig.content_hash`) is not trained again: its files are copied
into this study's record, with ``reused_from`` in ``env.json``. ``outputs/runs/.shared/<content
hash>`` names the record that computed it, and its ``.lock`` beside it is held while it trains.

``outputs/studies/<study>/<hash of the StudyConfig>/`` holds the study's config, the executed
notebook (``notebook.ipynb``), the list of its runs and its own ``done``. Every file is written to
a temporary name and renamed (:func:`atomic_file`), so concurrent writers never leave a
half-written record.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from filelock import FileLock, Timeout

from . import kernels, paths
from ._lazy import lazy_import

# imported on first use: `studylib check` and `studylib list` need no torch
torch = lazy_import("torch")

PACKAGES = ("torch", "numpy", "scikit-learn", "pandas", "pydantic", "papermill", "pyautoattack",
            "torchdeq", "mnist1d", "studylib")


class RecordError(RuntimeError):
    """A record on disk that cannot be read (named in the message)."""


@contextlib.contextmanager
def atomic_file(path: Path):
    """Yield a binary file to write ``path``'s new content into; on a clean exit it takes the name
    ``path`` in one step. The one write path of every file a record holds: a unique temporary name in
    the same directory, fsync, ``os.replace``, then fsync of the directory (where the OS allows), so
    a reader or a crash sees the old file or the new one, never a mix; on an error the temporary is
    removed and the old file is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are meant to be read by others
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; Windows cannot open a directory: skipped)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False, default=_jsonable) + "\n").encode())


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_state() -> dict:
    """The code version: git SHA and whether the work tree has uncommitted changes."""
    root = paths.project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def environment(device: torch.device | None = None) -> dict:
    """Code and package versions, the device, and the CPU kernel settings (:mod:`studylib.kernels`)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    dev = {"device": str(device) if device is not None else None}
    if device is not None and device.type == "cuda":
        dev["device_name"] = torch.cuda.get_device_name(device)
        dev["cuda"] = torch.version.cuda
    elif device is not None:
        dev["device_name"] = platform.processor() or platform.machine()
    return {**git_state(), "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "torch_threads": torch.get_num_threads(), **dev,
            "kernels": kernels.settings(), "time": _now()}


class RunRecord:
    """The record directory of one run."""

    def __init__(self, directory: Path, content: str | None = None):
        self.dir = Path(directory)
        self.content = content  # the run's content hash (None: a record read back, not shared)

    @classmethod
    def for_config(cls, cfg, outputs=None) -> "RunRecord":
        return cls(paths.outputs_dir(outputs) / "runs" / cfg.study / cfg.hash(), cfg.content_hash())

    @property
    def checkpoint(self) -> Path:
        """Where the run's resume checkpoint is while it trains (:mod:`studylib.checkpoint`)."""
        return self.dir / "checkpoint.pt"

    @property
    def _shared(self) -> Path:
        return self.dir.parent.parent / ".shared"

    # -- state ----------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return (self.dir / "done").exists()

    @property
    def failed(self) -> bool:
        return (self.dir / "failed.json").exists() and not self.done

    @contextlib.contextmanager
    def lock(self, wait: bool = True):
        """Held while this run trains; yields whether it was taken. A second process asking for the
        same run, or for the same content in another study (two sweeps, a test and a notebook, two
        studies of one sweep, sharing one outputs directory), waits here, then finds the run done and
        reuses it instead of training it again; with ``wait=False`` it is told at once (False) and
        can do other runs first. An advisory lock on ``.shared/<content hash>.lock`` (on
        ``.<hash>.lock`` beside a record without a content hash): released by the OS if the holder
        dies (:mod:`filelock`: ``flock`` on POSIX, ``msvcrt`` locking on Windows)."""
        path = self._shared / f"{self.content}.lock" if self.content else self.dir.parent / f".{self.dir.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path, timeout=-1 if wait else 0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def twin(self, device: str | None = None, settings: dict | None = None) -> "RunRecord | None":
        """The finished record, in another study, of a run with this one's content, if any (and,
        given ``device``, trained on that kind of device: ``device: auto`` hashes alike on a GPU and
        a CPU worker, and a reused run's cost is the original's; given ``settings``, computed with
        the same CPU kernels: :func:`studylib.kernels.identity`)."""
        ref = self._shared / self.content if self.content else None
        if ref is None or not ref.is_file():
            return None
        other = RunRecord(self.dir.parent.parent / ref.read_text().strip())
        if not other.done or other.dir == self.dir:
            return None
        try:
            env = other.env()
        except RecordError:
            return None
        same_device = device is None or str(env.get("device")).split(":")[0] == device
        same_kernels = settings is None or kernels.identity(env) == kernels.identity(settings)
        return other if same_device and same_kernels else None

    def copy_from(self, other: "RunRecord", config: dict) -> None:
        """Finish this record with ``other``'s results (the same computation, another study's
        names): its weights, history and metrics; this run's config; ``reused_from`` in env.json."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "failed.json").unlink(missing_ok=True)
        for name in ("history.json", "metrics.json", "model.pt"):
            if (other.dir / name).exists():
                with open(other.dir / name, "rb") as src, atomic_file(self.dir / name) as dst:
                    shutil.copyfileobj(src, dst)
        atomic_write_json(self.dir / "env.json", {**other.env(), "reused_from": str(other.dir.relative_to(self.dir.parent.parent))})
        atomic_write_json(self.dir / "config.json", config)
        atomic_write_json(self.dir / "done", {"finished": _now()})
        self.checkpoint.unlink(missing_ok=True)

    # -- writing --------------------------------------------------------------------------------
    def start(self, config: dict, env: dict) -> None:
        (self.dir / "failed.json").unlink(missing_ok=True)
        for stale in self.dir.glob(".*.tmp"):  # left by a writer killed mid-write (start holds the lock)
            stale.unlink(missing_ok=True)
        atomic_write_json(self.dir / "config.json", config)
        atomic_write_json(self.dir / "env.json", env)

    def save(self, metrics: dict, history: list[dict], state_dict: dict | None) -> None:
        atomic_write_json(self.dir / "history.json", history)
        if state_dict is not None:
            with atomic_file(self.dir / "model.pt") as f:
                torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, f)
        atomic_write_json(self.dir / "metrics.json", metrics)

    def mark_done(self) -> None:
        atomic_write_json(self.dir / "done", {"finished": _now()})
        self.checkpoint.unlink(missing_ok=True)  # done: nothing to resume
        if self.content:  # other studies asking for this content copy it from here
            self._shared.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self._shared / self.content, str(self.dir.relative_to(self.dir.parent.parent)).encode())

    def mark_failed(self, reason: str) -> None:
        atomic_write_json(self.dir / "failed.json", {"reason": reason, "time": _now()})

    # -- reading --------------------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.dir / "config.json")

    def metrics(self) -> dict:
        return read_json(self.dir / "metrics.json")

    def history(self) -> list[dict]:
        return read_json(self.dir / "history.json")

    def env(self) -> dict:
        return read_json(self.dir / "env.json")

    def failure(self) -> dict:
        return read_json(self.dir / "failed.json")

    def state_dict(self, map_location="cpu") -> dict:
        path = self.dir / "model.pt"
        if not path.exists():
            raise RecordError(f"{path}: missing")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # a truncated or foreign file
            raise RecordError(f"{path}: cannot be loaded as weights ({type(e).__name__}: {e})") from None


def iter_run_records(outputs=None, study: str | None = None):
    """Every run record directory under ``outputs/runs`` (optionally of one study)."""
    base = paths.outputs_dir(outputs) / "runs"
    pattern = f"{study}/*" if study else "*/*"
    for d in sorted(base.glob(pattern)):
        if d.is_dir():
            yield RunRecord(d)
