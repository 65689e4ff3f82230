"""Sweeps: many study executions from one file, validated first, run in parallel, resumable.

A sweep file (``params/sweeps/<name>.yaml``)::

    profile: quick            # default profile of every job
    seeds: [0, 1, 2]          # each seed is its own point (parallelism; resume per seed)
    overrides: {}             # applied to every job
    jobs:
      - study: adversarial
      - study: elr
        grid:                 # cartesian product of dotted keys → values
          arms.elr.hparams.lam: [1.0, 3.0, 7.0]
      - study: dro
        random: {n: 4, seed: 0, arms: [group_dro]}   # draws from each technique's search ranges

Every point is a (study, profile, overrides) triple; all are validated before anything runs (a bad
entry refuses the whole sweep, naming it). Points execute the study notebook with papermill on a
local process pool (``workers``) or on a Dask cluster (``scheduler="tcp://host:port"``), through
:func:`studylib.execute.execute_study`. Finished studies and runs are skipped (their ``done``
markers); a failing point is recorded in ``outputs/sweeps/<name>/status.json`` with its reason and
the sweep goes on.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from . import paths
from .config import PROFILES, ConfigError, _read_yaml, load_study
from .data import check_available
from .datasets import DataError
from .execute import NotebookFailed, execute_study
from .records import atomic_write_json
from .techniques import get_technique


@dataclass(frozen=True)
class Point:
    """One study execution of a sweep."""

    study: str
    profile: str
    overrides: tuple = field(default_factory=tuple)  # sorted (dotted key, JSON value) pairs, hashable

    @property
    def overrides_dict(self) -> dict:
        return {k: json.loads(v) for k, v in self.overrides}

    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.overrides if k != "seeds" and v != "null")
        seeds = self.overrides_dict.get("seeds")
        return f"{self.study} [{self.profile}{', seed ' + str(seeds[0]) if seeds else ''}{', ' + extra if extra else ''}]"


def _freeze(d: dict) -> tuple:
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in d.items()))


def _flatten(prefix: str, value) -> dict:
    """Nested mapping → dotted keys. A mapping under ``data.scenario`` stays whole (a scenario is
    replaced, not merged, so its kind and settings travel together)."""
    if isinstance(value, dict) and (not prefix or (value and not prefix.endswith("scenario"))):
        out = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def expand(spec: dict, name: str = "sweep") -> list[Point]:
    """Turn a sweep spec into points (not yet validated)."""
    allowed = {"profile", "seeds", "overrides", "jobs", "workers", "description"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"sweep {name}: unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})")
    profile = spec.get("profile", "quick")
    if profile not in PROFILES:
        raise ConfigError(f"sweep {name}: profile {profile!r} unknown (known: {', '.join(PROFILES)})")
    jobs = spec.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise ConfigError(f"sweep {name}: jobs must be a non-empty list")
    seeds = spec.get("seeds")
    common = _flatten("", spec.get("overrides") or {})
    points: list[Point] = []
    for i, job in enumerate(jobs):
        where = f"sweep {name}: jobs.{i}"
        if not isinstance(job, dict) or "study" not in job:
            raise ConfigError(f"{where}: each job needs a study")
        extra = set(job) - {"study", "profile", "overrides", "grid", "random", "seeds"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        job_profile = job.get("profile", profile)
        base = {**common, **_flatten("", job.get("overrides") or {})}
        variants = [{}]
        if job.get("grid"):
            keys = list(job["grid"])
            values = [v if isinstance(v, list) else [v] for v in job["grid"].values()]
            variants = [dict(zip(keys, combo)) for combo in itertools.product(*values)]
        if job.get("random"):
            variants = [{**v, **r} for v in variants for r in _random_variants(job, where)]
        job_seeds = job.get("seeds", seeds)
        for v in variants:
            for seed in (job_seeds if job_seeds is not None else [None]):
                ov = {**base, **v}
                if seed is not None:
                    ov["seeds"] = [seed]
                points.append(Point(job["study"], job_profile, _freeze(ov)))
    return list(dict.fromkeys(points))  # drop duplicates, keep order


def _random_variants(job: dict, where: str) -> list[dict]:
    r = job["random"]
    try:
        n, seed, arms = int(r["n"]), int(r.get("seed", 0)), list(r["arms"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}.random: needs n and arms (and optionally seed)") from None
    cfg = load_study(job["study"], job.get("profile"))
    out = []
    for k in range(n):
        draw = {}
        for arm in arms:
            if arm not in cfg.arms:
                raise ConfigError(f"{where}.random.arms: study {job['study']} has no arm {arm!r}")
            technique = get_technique(cfg.arms[arm].technique)
            for key, value in technique.sample_hparams(seed * 1000 + k).items():
                if technique.params[key].low is not None or technique.params[key].choices is not None:
                    draw[f"arms.{arm}.hparams.{key}"] = value
        out.append(draw)
    return out


def load_sweep(path: str | os.PathLike) -> tuple[str, dict, list[Point]]:
    """Read, expand and validate a sweep file. Raises :class:`ConfigError` naming the bad entry."""
    path = Path(path)
    if not path.exists() and not path.suffix:
        path = paths.params_dir() / "sweeps" / f"{path}.yaml"
    spec = _read_yaml(path, "sweep")
    name = path.stem
    points = expand(spec, name)
    for p in points:
        try:
            cfg = load_study(p.study, p.profile, p.overrides_dict)
            check_available(cfg.data, read=False)  # every file there, before any point runs
        except (ConfigError, DataError) as e:
            raise type(e)(f"sweep {name}: {p.label()}: {e}") from None
    return name, spec, points


def run_point(point: Point, outputs: str, threads: int | None = None) -> dict:
    """Execute one point (in a worker process). Never raises: returns a status dict (``executed``:
    False when the study record was already done)."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the notebook's kernel
    t0 = time.perf_counter()
    try:
        done = execute_study(point.study, point.profile, point.overrides_dict, outputs=outputs, progress=False)
        return {"point": point.label(), "status": "done", "record": str(done.record), "executed": done.executed,
                "seconds": time.perf_counter() - t0}
    except NotebookFailed as e:  # the notebook's own exception: its cell and error
        reason = e.reason
    except Exception as e:  # recorded; the sweep goes on
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return {"point": point.label(), "status": "failed", "reason": reason, "seconds": time.perf_counter() - t0}


def default_workers(n_points: int) -> int:
    """One single-threaded worker per core on a CPU machine; one worker on a GPU machine (its runs
    share the one device; for several GPUs, start one Dask worker per GPU with its own
    ``CUDA_VISIBLE_DEVICES`` and pass ``--scheduler``).
    Measured on 2 cores (quick sweep, 10 studies on digits): two single-threaded workers 220 s,
    one two-threaded worker 393 s. Small models use a second thread poorly, while the per-study
    fixed costs (kernel start, imports, plots) are single-threaded anyway. Jobs run in file order,
    so a sweep file lists its longest jobs first."""
    import torch

    per_machine = 1 if torch.cuda.is_available() else (os.cpu_count() or 1)
    return max(1, min(n_points, per_machine))


def run_sweep(path, outputs=None, workers: int | None = None, scheduler: str | None = None,
              progress: bool = True, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Validate every point, then execute them all; returns one status per point (also written to
    ``outputs/sweeps/<name>/status.json``). ``progress``: one bar for the sweep; ``on_result`` is
    called with each point's status as it finishes (the command prints a line)."""
    name, spec, points = load_sweep(path)
    outputs = str(paths.outputs_dir(outputs))
    workers = workers or spec.get("workers") or default_workers(len(points))
    # the cores this process may use (OMP_NUM_THREADS when set, e.g. by the test suite's split),
    # divided between the workers: more threads than cores makes OpenMP's waiting threads spin
    cores = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
    threads = max(1, cores // workers)
    statuses: list[dict] = []
    bar = tqdm(total=len(points), desc=f"sweep {name}", disable=not progress)
    status_path = Path(outputs) / "sweeps" / name / "status.json"

    def collect(result):
        statuses.append(result)
        bar.update(1)
        if on_result is not None:
            on_result(result)
        atomic_write_json(status_path, {"sweep": name, "points": len(points), "results": statuses})

    if scheduler:
        from distributed import Client, as_completed as dask_completed

        with Client(scheduler) as client:
            futures = [client.submit(run_point, p, outputs, threads, pure=False) for p in points]
            for fut in dask_completed(futures):
                collect(fut.result())
    elif workers == 1:
        for p in points:
            collect(run_point(p, outputs, None))
    else:
        # spawn, not fork: forking a process whose torch/OpenMP thread pool exists can deadlock
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_point, p, outputs, threads) for p in points]
            for fut in as_completed(futures):
                collect(fut.result())
    bar.close()
    return statuses
