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


def test_report_seeds_and_bad_arms_are_refused_before_anything_trains(monkeypatch):
    with pytest.raises(SystemExit, match="design seeds only"):
        _run(monkeypatch, "matrix", "l2", "hparams.l2", "1e-4", "--seeds", "0", "1000")
    with pytest.raises(SystemExit, match="design_check: .*nosuch"):
        _run(monkeypatch, "matrix", "nosuch", "hparams.l2", "1e-4", "--profile", "smoke")


def test_each_value_and_the_baseline_get_a_validation_score(monkeypatch, capsys):
    _run(monkeypatch, "dro", "group_dro", "hparams.eta", "0.01", "0.5", "--profile", "smoke", "--seeds", "0",
         "--baseline", "erm")
    out = capsys.readouterr().out
    summary = out.split("best first")[1]
    # the spurious scenario's selection metric, for the two values and ERM, each a number in [0, 1]
    assert "val_worst_group_acc" in summary
    scores = [float(part.rsplit(" ", 1)[1]) for part in summary.split(": ", 1)[1].strip().split(", ")]
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)  # best first
