"""Run records on disk: the only interface between a run and the report.

``outputs/runs/<study>/<hash of the full resolved RunConfig>/`` holds

* ``config.json``   the full resolved config (numbers as numbers)
* ``env.json``      code version (git SHA, dirty flag), package versions, device, threads, seed
* ``metrics.json``  the scorecard, the fit summary and the technique's diagnostics
* ``history.json``  one row per epoch
* ``model.pt``      the selected weights (read back with ``weights_only=True``)
* ``done``          written last, atomically: a record without it is unfinished and is redone
* ``failed.json``   instead of ``done`` when the run raised (the reason is kept)

``outputs/studies/<study>/<hash of the StudyConfig>/`` holds the study's config, the executed
notebook (``notebook.ipynb``), the list of its runs and its own ``done``. Every file is written to
a temporary name and renamed, so concurrent writers never leave a half-written record.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from . import paths
from ._lazy import lazy_import

# imported on first use: `studylib check` and `studylib list` need no torch
torch = lazy_import("torch")

PACKAGES = ("torch", "numpy", "scikit-learn", "pandas", "pydantic", "papermill", "pyautoattack",
            "torchdeq", "mnist1d", "studylib")


class RecordError(RuntimeError):
    """A record on disk that cannot be read (named in the message)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; records are meant to be read by others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            "packages": versions, "torch_threads": torch.get_num_threads(), **dev, "time": _now()}


class RunRecord:
    """The record directory of one run."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    @classmethod
    def for_config(cls, cfg, outputs=None) -> "RunRecord":
        return cls(paths.outputs_dir(outputs) / "runs" / cfg.study / cfg.hash())

    # -- state ----------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return (self.dir / "done").exists()

    @property
    def failed(self) -> bool:
        return (self.dir / "failed.json").exists() and not self.done

    @contextlib.contextmanager
    def lock(self):
        """Held while this run trains. A second process asking for the same run (two sweeps, or a
        test and a notebook, sharing one outputs directory) waits here, then finds the run done
        and reuses it instead of training it again. An advisory ``flock`` on ``.<hash>.lock`` beside
        the record (the record itself holds only its files): released by the OS if the holder dies;
        where there is no ``fcntl`` (Windows) no lock is taken."""
        try:
            import fcntl
        except ImportError:
            yield
            return
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.dir.parent / f".{self.dir.name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- writing --------------------------------------------------------------------------------
    def start(self, config: dict, env: dict) -> None:
        (self.dir / "failed.json").unlink(missing_ok=True)
        atomic_write_json(self.dir / "config.json", config)
        atomic_write_json(self.dir / "env.json", env)

    def save(self, metrics: dict, history: list[dict], state_dict: dict | None) -> None:
        atomic_write_json(self.dir / "history.json", history)
        if state_dict is not None:
            tmp = self.dir / ".model.pt.tmp"
            torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
            os.replace(tmp, self.dir / "model.pt")
        atomic_write_json(self.dir / "metrics.json", metrics)

    def mark_done(self) -> None:
        atomic_write_json(self.dir / "done", {"finished": _now()})

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
