"""Sweeps: validated first, resumable after a kill, failures recorded, Dask LocalCluster."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from studylib import aggregate, load_study
from studylib.execute import build_report
from studylib.config import ConfigError
from studylib.records import iter_run_records, read_json
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


def test_on_a_dask_cluster_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    """On a Dask LocalCluster (two single-threaded workers), a diverging learning rate makes one
    point's runs fail (NaN loss); the other point finishes, and the failure is listed with its
    reason in the report. (The local process pool runs the same ``run_point``: the resume test.)"""
    distributed = pytest.importorskip("distributed")
    path = write_sweep(tmp_path, jobs=[{"study": "matrix"},
                                       {"study": "matrix", "overrides": {"train": {"lr": 1.0e12}}}])
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1")
        statuses = run_sweep(path, out, scheduler=cluster.scheduler_address, progress=False)
    by = {s["status"] for s in statuses}
    assert by == {"done", "failed"}
    failed = [s for s in statuses if s["status"] == "failed"][0]
    assert "notebook cell" in failed["reason"]
    failures = aggregate.load_failures(out)
    runs = failures[failures.what == "run"]
    assert len(runs) == 2 and runs.reason.str.contains("TrainingDiverged").all()
    assert (failures.what == "sweep point").sum() == 1
    assert read_json(out / "sweeps" / "tiny" / "status.json")["points"] == 2
    assert len(aggregate.load_runs(out)) == 2  # the finished point's runs are all there
    # the report lists the failure beside the finished results
    html = build_report(out, progress=False)
    text = html.read_text()
    assert "Summary: the answers first" in text and "NO REPORT SEEDS" in text  # design seeds: said, not hidden
    assert (out / "report" / "claims.csv").exists() and (out / "report" / "summary.md").exists()
    body = text[text.index("<body"):]
    # a static report: no code prompts, no widget cells (they need a kernel), every section there
    assert "In&nbsp;[" not in body and ">Out[" not in body and "Explore (live notebook only)" not in body
    for section in ("How each claim was made", "Adversarial training vs regularization",
                    "The technique × scenario matrix: robust training under shift", "Every study's cells",
                    "Published anchors"):
        assert section in body, section
    assert (out / "report" / "matrix.svg").exists() and (out / "report" / "adversarial_vs_regularization.csv").exists()
    # the matrix study's difference heatmaps: fast AT against the ERM of the same scenario
    vs = pd.read_csv(out / "report" / "matrix_vs_erm.csv")
    assert set(vs.technique) == {"fgsm_at"} and (out / "report" / "matrix_clean_acc.png").exists()
    listed = (out / "report" / "failures.csv").read_text()
    assert "TrainingDiverged" in listed and listed.count("matrix") >= 3
    assert (out / "report" / "matrix.png").exists() and (out / "report" / "versus_erm.csv").exists()
