"""The cluster recipe of docs/sweeps-and-clusters.md, for real: a Dask scheduler and two workers started
with Dask's own command-line tools as separate processes (on 127.0.0.1 only, ports chosen by the
system), a small sweep sent to them with ``studylib sweep ... --scheduler``, and its records checked:
one point finishes, the other's run diverges, and the failure is recorded with its reason while the
sweep goes on. Every process is torn down, whatever happens. (The local process pool runs the same
``run_point``: tests/test_sweep.py.)"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from studylib import aggregate, load_study
from studylib.records import iter_run_records, read_json

BIN = Path(sys.executable).parent
DASK = shutil.which("dask", path=str(BIN)) or shutil.which("dask")

# the matrix study cut to its ERM arm, one epoch on 200 examples; two points, one per worker: as given,
# and with a diverging learning rate (its run fails with a NaN loss)
_ERM_ONLY = {arm: None for arm in load_study("matrix", "smoke").arms if arm != "erm"}
SWEEP = {"profile": "smoke", "seeds": [0],
         "overrides": {"train": {"epochs": 1}, "data": {"n_train": 200},
                       "eval": {"attacks": ["fgsm"], "corruptions": ["blur"]}},
         "jobs": [{"study": "matrix", "overrides": {"arms": _ERM_ONLY}},
                  {"study": "matrix", "overrides": {"arms": _ERM_ONLY, "train": {"lr": 1.0e12}}}]}


def _start(cmd, log: Path, env=None) -> subprocess.Popen:
    # its own process group, so that teardown ends the process and whatever it started (the nanny's worker)
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait_for(predicate, timeout: float, what: str, logs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; logs:\n"
                + "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs))


@pytest.mark.skipif(DASK is None, reason="the dask command is not installed")
def test_a_sweep_on_a_scheduler_and_two_workers_started_from_the_command_line(tmp_path):
    from distributed import Client

    sweep = tmp_path / "cluster_tiny.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    out, scratch, info = tmp_path / "shared-outputs", tmp_path / "dask-scratch", tmp_path / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # what a worker's runs (and their kernels) inherit
    logs = [tmp_path / "scheduler.log", tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    procs = []
    try:
        # port 0: the system picks a free port; the scheduler writes its address to the scheduler file
        procs.append(_start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                             "--scheduler-file", str(info), "--idle-timeout", "600"], logs[0], env))
        _wait_for(lambda: info.exists() and info.stat().st_size > 0, 60, "the scheduler file", logs[:1])
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for i in (1, 2):
            procs.append(_start([DASK, "worker", "--scheduler-file", str(info), "--host", "127.0.0.1",
                                 "--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--name", f"worker-{i}",
                                 "--local-directory", str(scratch), "--death-timeout", "60"], logs[i], env))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=90)
            assert len(client.scheduler_info()["workers"]) == 2

        done = subprocess.run([str(BIN / "studylib"), "sweep", str(sweep), "--scheduler", address,
                               "--outputs", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]  # a point failed: said in the status
        assert "sweep: 1 done, 1 failed" in done.stdout

        status = read_json(out / "sweeps" / "cluster_tiny" / "status.json")
        assert status["points"] == 2 and sorted(r["status"] for r in status["results"]) == ["done", "failed"]
        failed = next(r for r in status["results"] if r["status"] == "failed")
        assert "notebook cell" in failed["reason"]
        runs = [r for r in iter_run_records(out, "matrix") if r.done]
        assert [(r.config()["arm"], r.config()["train"]["lr"] < 1) for r in runs] == [("erm", True)]
        acc = runs[0].metrics()["metrics"]["clean_acc"]
        assert 0.0 <= acc <= 1.0 and (runs[0].dir / "model.pt").exists(), acc
        assert len([d for d in (out / "studies" / "matrix").iterdir() if (d / "done").exists()]) == 1
        # the failure is on record with its reason, beside the finished results (the report lists it)
        failures = aggregate.load_failures(out)
        assert (failures.what == "sweep point").sum() == 1
        diverged = failures[failures.what == "run"]
        assert len(diverged) == 1 and diverged.reason.str.contains("TrainingDiverged").all()
        assert len(aggregate.load_runs(out)) == 1
    finally:
        for proc in reversed(procs):  # the workers first, then the scheduler
            _stop(proc)
    assert all(p.poll() is not None for p in procs)
