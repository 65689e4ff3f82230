"""tools/design_check.py: settings are chosen on validation numbers of design seeds, never report seeds."""

import runpy
import sys
from pathlib import Path

import pytest

TOOL = str(Path(__file__).parents[1] / "tools" / "design_check.py")


def _run(monkeypatch, *args):
    import torch

    threads = torch.get_num_threads()  # the tool trains on one thread; this worker keeps its own
    monkeypatch.setattr(sys, "argv", ["design_check.py", *args])
    try:
        runpy.run_path(TOOL, run_name="__main__")
    finally:
        torch.set_num_threads(threads)


def test_report_seeds_bad_arms_and_unequal_baselines_are_refused_before_anything_trains(monkeypatch):
    with pytest.raises(SystemExit, match="design seeds only"):
        _run(monkeypatch, "matrix", "l2", "hparams.l2", "1e-4", "--seeds", "0", "1000")
    with pytest.raises(SystemExit, match="design_check: .*nosuch"):
        _run(monkeypatch, "matrix", "nosuch", "hparams.l2", "1e-4", "--profile", "smoke")
    # an adversarial arm picks its epoch on validation PGD accuracy: plain ERM is not its equal footing
    with pytest.raises(SystemExit, match="baseline 'erm' picks its epoch by val_acc, the arm by val_robust_acc"):
        _run(monkeypatch, "matrix", "fgsm_at", "hparams.eps", "0.1", "--profile", "smoke")


def test_each_value_and_the_baseline_get_a_validation_score(monkeypatch, capsys):
    _run(monkeypatch, "dro", "group_dro", "hparams.eta", "0.01", "0.5", "--profile", "smoke", "--seeds", "0",
         "--baseline", "erm")
    out = capsys.readouterr().out
    lines, summary = out.split("best first")
    # one line per candidate on seed 0, all on the spurious scenario's selection metric
    per_run = {line.split(" seed 0 ")[1].rsplit(" val_worst_group_acc ", 1)[0].strip():
               float(line.rsplit(" ", 1)[1]) for line in lines.strip().splitlines()[:3]}
    assert set(per_run) == {"group_dro hparams.eta=0.01", "group_dro hparams.eta=0.5", "erm"}
    assert all(0.0 <= v <= 1.0 for v in per_run.values())
    # the summary (one seed: the mean is that run's score) ranks the same numbers
    ranked = {part.rsplit(" ", 1)[0]: float(part.rsplit(" ", 1)[1])
              for part in summary.split("val_worst_group_acc: ", 1)[1].strip().split(", ")}
    assert ranked == pytest.approx(per_run, abs=5e-5)
