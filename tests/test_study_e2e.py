"""End to end on digits with fixed seeds: the adversarial study's home finding, determinism, and
the CLI executing the notebook into a record."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studylib import Study, load_study

TIMING = {"train_seconds", "seconds_per_epoch", "eval_seconds", "val_seconds"}


def test_pgd_at_beats_erm_on_pgd_accuracy_by_a_wide_margin():
    """Madry et al.: PGD-AT raises PGD accuracy at the training ε far above ERM's (smoke profile,
    6 epochs; the quick profile's numbers are in docs/results.md)."""
    cfg = load_study("adversarial", "smoke")
    results = Study(cfg, progress=False).run()
    s = results.summary()
    assert s.loc["pgd_at", "robust_acc"] > s.loc["erm", "robust_acc"] + 0.15, s.robust_acc
    assert s.loc["pgd_at", "clean_acc"] > 0.9 and s.loc["erm", "clean_acc"] > 0.93
    assert results.flags() == []
    # the cost columns are recorded for every arm; their sizes are timings (make bench), never asserted.
    # ERM's multiple of itself is 1 by definition, whatever the machine's load
    assert s[["train_seconds", "cost_x_erm"]].notna().all().all()
    assert s.loc["erm", "cost_x_erm"] == pytest.approx(1.0)


def test_same_seed_twice_gives_identical_metrics(tmp_path):
    # ERM and TRADES (random start, KL inner loop: the most randomness of the study's arms)
    cfg = load_study("adversarial", "smoke", {"train.epochs": 2, "data.n_train": 300, "eval.corruptions": ["shift"],
                                              "arms.trades.hparams.steps": 2,
                                              "arms": {"fgsm_at": None, "pgd_at": None, "trades_sat": None}})
    a = Study(cfg, tmp_path / "a", progress=False).run()
    b = Study(cfg, tmp_path / "b", progress=False).run()
    for ra, rb in zip(a.runs, b.runs):
        ma, mb = ra.metrics, rb.metrics
        for key in ma["metrics"]:
            if key not in TIMING:
                assert ma["metrics"][key] == mb["metrics"][key], (ra.config.arm, key)
        assert ma["robust_curve"] == mb["robust_curve"]
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in ra.history] == \
               [{k: v for k, v in r.items() if k != "seconds"} for r in rb.history]


def test_early_stopping_stops_and_changes_only_the_epochs_trained(tmp_path, tick_clock):
    """train.patience: the run stops after `patience` epochs without a better validation score and
    records it; its trajectory up to the stop is the full run's, and it keeps the best epoch of those.
    (On the deterministic clock an epoch's training and its validation are one second each.)"""
    from studylib.data import make_data
    from studylib.train import fit

    cfg = load_study("dro", "smoke", {"seeds": [0], "train.epochs": 12, "eval.attacks": []})
    rc = next(r for r in cfg.runs() if r.arm == "erm_es")
    assert rc.train.patience == 10  # the study's early-stopped arms (params/dro.yaml)
    data = make_data(rc.data, rc.seed)
    stop = fit(rc.model_copy(update={"train": rc.train.model_copy(update={"patience": 2})}), data, progress=False)
    full = fit(rc.model_copy(update={"train": rc.train.model_copy(update={"patience": None})}), data, progress=False)
    assert not full.stopped_early and full.epochs_run == 12
    assert stop.stopped_early and stop.epochs_run == stop.best_epoch + 2 < 12
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in stop.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in full.history[:stop.epochs_run]]
    # the kept epoch is the full run's best among the epochs both trained (the first of equals)
    scores = [r["val_worst_group_acc"] for r in full.history[:stop.epochs_run]]
    assert stop.best_epoch == scores.index(max(scores)) + 1
    # validation is timed apart from training: each epoch's clock reading after training opens it
    assert (stop.train_seconds, stop.val_seconds) == (stop.epochs_run, stop.epochs_run)
    assert (full.train_seconds, full.val_seconds) == (12, 12)


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "studylib.cli", "run", "adversarial", "--quiet", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_cli_runs_the_notebook_into_the_record_once():
    """Session outputs: reuses the runs of the smoke study above when it ran first."""
    first = _cli("--profile", "smoke")
    assert first.returncode == 0, first.stderr[-2000:]
    record = Path(first.stdout.split("study record: ")[1].splitlines()[0])
    assert (record / "done").exists() and (record / "notebook.ipynb").exists()
    nb = json.loads((record / "notebook.ipynb").read_text())
    assert nb["metadata"]["papermill"]["parameters"]["profile"] == "smoke"
    runs = json.loads((record / "runs.json").read_text())
    assert len(runs) == 5 and all(Path(r["record"], "done").exists() for r in runs)
    second = _cli("--profile", "smoke")
    assert second.returncode == 0 and "already done" in second.stdout


def test_a_failing_notebook_keeps_finished_runs_and_its_executed_copy(tmp_path):
    """One epoch is too little for AT to beat ERM: the notebook's assert cell fails. The command
    says so in one line; the runs stay done, the executed copy is kept, the study is not done."""
    proc = _cli("--profile", "smoke", "--outputs", str(tmp_path), "-p", "train.epochs", "1",
                "-p", "data.n_train", "200", "-p", "arms.pgd_at.hparams.steps", "2", "-p", "arms.trades.hparams.steps", "2",
                "-p", "arms.trades_sat.hparams.steps", "2", "-p", "train.select_steps", "2",
                "-p", "eval.max_examples", "50")
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if line.startswith("studylib: error:")]
    assert len(err) == 1 and "the notebook failed in cell" in err[0] and "AssertionError" in err[0]
    record = next((tmp_path / "studies" / "adversarial").iterdir())
    assert (record / "notebook.ipynb").exists() and not (record / "done").exists()
    assert len(list((tmp_path / "runs" / "adversarial").glob("*/done"))) == 5


def test_a_batch_kernel_gets_no_widgets_or_bars_and_the_caller_keeps_its_environment(monkeypatch):
    import os

    from studylib import execute

    monkeypatch.delenv("STUDYLIB_BATCH", raising=False)
    monkeypatch.setenv("STUDYLIB_PROGRESS", "1")  # e.g. a JupyterLab session that starts a sweep
    with execute.kernel_env():
        assert os.environ["STUDYLIB_BATCH"] == "1" and os.environ["STUDYLIB_PROGRESS"] == "0"
    assert "STUDYLIB_BATCH" not in os.environ and os.environ["STUDYLIB_PROGRESS"] == "1"
