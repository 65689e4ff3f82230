"""Test session set-up, for ``tests/`` and the notebooks under nbval alike (at the root, so that
``pytest notebooks/dropout.ipynb`` gets it too): every run writes into a temporary outputs directory,
notebooks run the smoke profile (nbval's kernels inherit this environment), and the cores are split
between the pytest-xdist workers.

One outputs directory serves the whole session: the controller makes it and the xdist workers,
each its own process importing this file too, inherit it. So a study's test module and its notebook
(which asserts the same home finding on the same smoke runs) train each run once, whichever comes
first and on whichever worker; a run being trained by the other worker is waited for (a lock per run
record, :meth:`studylib.records.RunRecord.lock`), then reused. Tests that need a fresh directory
take the ``outputs`` fixture."""

import os
import re
import tempfile
from pathlib import Path

import studylib  # noqa: F401  (pins the CPU kernels before torch computes anything: studylib.kernels)
import torch

_OUT = os.environ.get("STUDYLIB_TEST_OUTPUTS") or tempfile.mkdtemp(prefix="studylib-test-outputs-")
os.environ["STUDYLIB_TEST_OUTPUTS"] = os.environ["STUDYLIB_OUTPUTS"] = _OUT
os.environ["STUDYLIB_PROFILE"] = "smoke"
os.environ["STUDYLIB_PROGRESS"] = "0"  # no per-epoch widget bars in nbval's kernels (see Study)
os.environ["STUDYLIB_BATCH"] = "1"  # explorers show their initial view, no widgets (see studylib.explore)
os.environ.setdefault("MPLBACKEND", "Agg")
# The cores split between the workers (PYTEST_XDIST_WORKER_COUNT is set by xdist in each worker
# before this file is imported), at most 2 threads each; OMP_NUM_THREADS passes the same to notebook
# kernels and CLI subprocesses. Never read back an inherited OMP_NUM_THREADS: the controller process
# imports this file too, and its value, inherited by the workers, would give each worker every core
# (2 workers × 2 threads on 2 cores: OpenMP's spinning threads made small models ~20× slower).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_threads = max(1, min(2, (os.cpu_count() or 1) // _workers))
os.environ["OMP_NUM_THREADS"] = str(_threads)
torch.set_num_threads(_threads)


# -- the xdist schedule: a study's test module and its notebook on one worker, longest first ---------
# A study's test module and its notebook train the same smoke runs. On two workers at once, one of
# them would wait on the other's run locks (a core idle for the length of the study); as one work
# unit they run back to back and the second reuses the first's runs. Units go out longest first
# (seconds measured on 2026-12-06), so that the workers finish together.
_STUDIES = {p.stem for p in (Path(__file__).parent / "params").glob("*.yaml")}
_SHARES_RUNS = {"tests/test_study_e2e.py": "adversarial"}  # reuses the adversarial study's smoke runs
_LONGEST_FIRST = ["adversarial", "cw_erm", "tests/test_one_verdict.py", "tests/test_standard.py", "elr",
                  "tests/test_reproducibility.py", "tests/test_sweep.py", "tests/test_cluster.py", "noise_augmentation",
                  "deq", "dropout", "regularization", "matrix", "tests/test_reliability.py", "tests/test_records.py",
                  "self_adaptive", "tests/test_audit.py", "tests/test_attacks.py", "tests/test_plugins.py", "synergy",
                  "dro", "tests/test_docs.py"]


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    if path in _SHARES_RUNS:
        return _SHARES_RUNS[path]
    m = re.fullmatch(r"tests/test_(\w+)\.py|notebooks/(\w+)\.ipynb", path)
    name = m and (m.group(1) or m.group(2))
    return name if name in _STUDIES else path


def _rank(nodeid: str) -> int:
    unit = _unit(nodeid)
    return _LONGEST_FIRST.index(unit) if unit in _LONGEST_FIRST else len(_LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: a notebook's cells keep their order


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (pyproject's addopts) becomes: one work unit per study (its test module
    and notebook), otherwise per file, handed out in the order above."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class StudyScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # keep the longest-first order of the collection
    return StudyScheduling(config, log)
