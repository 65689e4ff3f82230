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
import tempfile

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
