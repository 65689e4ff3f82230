"""Sweeps: validated first, resumable after a kill. (On a Dask cluster, with a failing point:
tests/test_cluster.py; the report of a sweep: tests/test_one_verdict.py.)"""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from studylib import load_study
from studylib.config import ConfigError
from studylib.records import iter_run_records
from studylib.sweep import expand, load_sweep, run_sweep

# the matrix study cut to fast AT and its equal-footing ERM twin, one epoch on 200 examples: seconds per point
TINY = {"train": {"epochs": 1}, "data": {"n_train": 200}, "eval": {"attacks": ["fgsm"], "corruptions": ["blur"]},
        "arms": {arm: None for arm in load_study("matrix", "smoke").arms if arm not in ("erm_sel_robust", "fgsm_at")}}


def write_sweep(tmp_path, name="tiny", **spec):
    spec = {"profile": "smoke", "overrides": TINY, **spec}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_expand_grid_seeds_and_random_draws():
    points = expand({"profile": "smoke", "seeds": [0, 1], "jobs": [
        {"study": "adversarial", "grid": {"arms.trades.hparams.beta": [1.0, 6.0]}},
        {"study": "adversarial", "random": {"n": 2, "seed": 3, "arms": ["pgd_at"]}}]})
    assert len(points) == 2 * 2 + 2 * 2
    betas = {p.overrides_dict.get("arms.trades.hparams.beta") for p in points[:4]}
    assert betas == {1.0, 6.0}
    drawn = [p.overrides_dict["arms.pgd_at.hparams.eps"] for p in points[4:]]
    assert len(set(drawn)) == 2 and all(1 / 255 <= e <= 0.3 for e in drawn)
    assert expand({"jobs": [{"study": "adversarial", "random": {"n": 2, "seed": 3, "arms": ["pgd_at"]}}]}) == \
        expand({"jobs": [{"study": "adversarial", "random": {"n": 2, "seed": 3, "arms": ["pgd_at"]}}]})


def test_one_bad_entry_refuses_the_whole_sweep_naming_it(tmp_path):
    path = write_sweep(tmp_path, jobs=[{"study": "matrix"},
                                       {"study": "matrix", "grid": {"train.epohcs": [1, 2]}}])
    with pytest.raises(ConfigError, match=r"matrix.*train.epohcs"):
        load_sweep(path)
    with pytest.raises(ConfigError, match="jobs.0: unknown key"):
        expand({"jobs": [{"study": "matrix", "grdi": {}}]})
    out = tmp_path / "out"
    assert subprocess.run([sys.executable, "-m", "studylib.cli", "sweep", str(path), "--outputs", str(out)],
                          capture_output=True, text=True).returncode == 2
    assert not out.exists()  # nothing ran


def _done_times(outputs):
    return {r.dir.name: (r.dir / "done").stat().st_mtime_ns for r in iter_run_records(outputs) if r.done}


def test_resume_after_a_kill_redoes_only_the_unfinished(tmp_path):
    """Kill the sweep once a run is done but before the point finishes; the rerun keeps the done
    run (its marker untouched), redoes the rest and finishes the study."""
    path = write_sweep(tmp_path, jobs=[{"study": "matrix", "overrides": {"train": {"epochs": 4}}}])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "studylib.cli", "sweep", str(path), "--outputs", str(out), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not _done_times(out):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _done_times(out)
    assert len(first) == 1, "expected exactly one finished run at the kill"
    study_dir = next((out / "studies" / "matrix").iterdir())
    assert not (study_dir / "done").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-1500:]
    after = _done_times(out)
    assert len(after) == 2 and all(after[k] == v for k, v in first.items())  # not recomputed
    assert (study_dir / "done").exists()
    third = run_sweep(path, out, workers=1, progress=False)  # in this process: no kernel should start
    assert [(s["status"], s["executed"]) for s in third] == [("done", False)]
    assert _done_times(out) == after  # a finished sweep recomputes nothing
