"""Test session set-up: every run writes into a temporary outputs directory and notebooks run the
smoke profile (nbval's kernels inherit this environment).

Under pytest-xdist each worker is its own process and imports this file itself: its own outputs
directory (shared by the tests of that worker, so a test may reuse the runs of an earlier one in the
same file: ``--dist loadfile`` keeps a file on one worker) and its share of the cores."""

import os
import tempfile

import pytest
import torch

_OUT = tempfile.mkdtemp(prefix="studylib-test-outputs-")
os.environ["STUDYLIB_OUTPUTS"] = _OUT
os.environ["STUDYLIB_PROFILE"] = "smoke"
os.environ.setdefault("MPLBACKEND", "Agg")
# the cores split between the workers (PYTEST_XDIST_WORKER_COUNT: set by xdist in each worker), at
# most 2 threads each; OMP_NUM_THREADS passes the same to notebook kernels and CLI subprocesses
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, min(2, (os.cpu_count() or 1) // _workers))
os.environ["OMP_NUM_THREADS"] = str(_threads)
torch.set_num_threads(_threads)


@pytest.fixture
def outputs(tmp_path):
    """A fresh outputs directory for one test."""
    return tmp_path / "outputs"
