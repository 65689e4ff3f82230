"""Reliability: nothing planted in a data file runs (a crafted CIFAR-10 pickle is refused in one line
by every path that reads it, and its payload never runs); records are written atomically (a process
killed while saving leaves the old record whole); a killed run resumes from its last checkpoint with
the same metrics and history as an uninterrupted run."""

import hashlib
import os
import pickle
import signal
import time

import pytest
import torch

from studylib import cli
from studylib import datasets as D
from studylib.config import load_study
from studylib.data import check_available, load_standard, make_data
from studylib.fixtures import write_fixture
from studylib.records import RunRecord
from studylib.study import Study


class _Payload:
    """Unpickling this creates ``marker``: what a planted file could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A CIFAR-10 fixture root whose data_batch_2 is a crafted pickle; the marker it would create."""
    root, marker = tmp_path / "data", tmp_path / "PWNED"
    write_fixture("cifar10", root)
    batch = root / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [1]}, protocol=2))
    monkeypatch.setenv("STUDYLIB_DATA_ROOT", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    load_standard.cache_clear()
    yield root, marker, batch
    load_standard.cache_clear()
    assert not marker.exists(), "the planted pickle ran"


def _one_line_refusal(msg: str, batch) -> None:
    assert "\n" not in msg.strip() and str(batch) in msg and "refused" in msg, msg



def _kill_when_ready(child, ready, seconds: float, what: str) -> None:
    """SIGKILL ``child`` as soon as it has written ``ready`` (it must get there within ``seconds``)."""
    try:
        deadline = time.monotonic() + seconds
        while not ready.exists():
            assert child.poll() is None, "the child died before the kill"
            assert time.monotonic() < deadline, f"the child never reached {what}"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()

def test_data_check_refuses_a_planted_pickle(planted, capsys):
    root, marker, batch = planted
    assert cli.main(["data", "check", "cifar10", "--root", str(root)]) == 2
    _one_line_refusal(capsys.readouterr().err, batch)


def test_data_list_refuses_a_planted_pickle(planted, capsys):
    root, marker, batch = planted
    cli.main(["data", "list", "--root", str(root)])
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("cifar10")]
    assert len(line) == 1 and "unusable" in line[0]
    _one_line_refusal(line[0], batch)


def test_study_run_refuses_a_planted_pickle(planted, outputs):
    root, marker, batch = planted
    cfg = load_study("adversarial", "smoke", {"data.dataset": "cifar10", "train.epochs": 1})
    with pytest.raises(D.DataError) as e:
        Study(cfg, outputs=outputs, progress=False).run()
    _one_line_refusal(str(e.value), batch)
    assert not list(outputs.glob("runs/*/*/done"))


def test_full_profile_refuses_a_planted_pickle(planted):
    root, marker, batch = planted
    cfg = load_study("adversarial", "full")
    assert cfg.data.dataset == "cifar10"
    for check in (lambda: check_available(cfg.data, read=False), lambda: check_available(cfg.data),
                  lambda: make_data(cfg.runs()[0].data, cfg.seeds[0])):
        with pytest.raises(D.DataError) as e:
            check()
        _one_line_refusal(str(e.value), batch)


def test_a_file_of_the_published_size_must_have_the_published_md5(tmp_path, monkeypatch):
    """Verified before reading; a verified file is remembered (in the user's cache, keyed by size,
    mtime, ctime and inode), so the second read does not hash it again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_fixture("cifar10", tmp_path)
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    blob = batch.read_bytes()
    size = len(blob)
    digest = hashlib.md5(blob).hexdigest()
    monkeypatch.setitem(D._CIFAR_PUBLISHED, "test_batch", ("0" * 32, size))  # this file's size is "published"
    monkeypatch.setattr(D, "_VERIFIED", {})
    with pytest.raises(D.DataError, match=r"test_batch: refused: it has the published file's size but not its MD5"):
        D.load("cifar10", tmp_path)
    assert D.status("cifar10", tmp_path).startswith("unusable: ")
    monkeypatch.setitem(D._CIFAR_PUBLISHED, "test_batch", (digest, size))
    hashed = []
    real_md5 = D.hashlib.md5
    monkeypatch.setattr(D.hashlib, "md5", lambda *a, **k: hashed.append(1) or real_md5(*a, **k))
    assert D.load("cifar10", tmp_path)[3].shape == (32,)
    assert len(hashed) == 1
    monkeypatch.setattr(D, "_VERIFIED", {})  # a new process: read back from the user's cache
    assert D.status("cifar10", tmp_path) == "present" and len(hashed) == 1
    batch.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))  # same size, one bit changed
    with pytest.raises(D.DataError, match="not its MD5"):
        D.load("cifar10", tmp_path)


# -- atomic records ---------------------------------------------------------------------------------

_SAVE_CHILD = """
import json, sys, time, torch
from pathlib import Path
from studylib import records
rec, ready, where = records.RunRecord(Path(sys.argv[1])), Path(sys.argv[2]), sys.argv[3]
real_save, real_dumps = torch.save, json.dumps

def stalled_save(obj, f):  # writes half of the new weights, then waits to be killed
    real_save(obj, f)
    f.truncate(f.tell() // 2)
    f.flush()
    ready.touch()
    time.sleep(600)

def stalled_dumps(obj, **kw):  # the metrics are being written: the kill lands before its rename
    ready.touch()
    time.sleep(600)

if where == "model":
    torch.save = stalled_save
else:
    json.dumps = lambda obj, **kw: stalled_dumps(obj) if "new" in obj else real_dumps(obj, **kw)
rec.save({"clean_acc": 0.9, "new": True}, [{"epoch": 1, "new": True}], {"w": torch.full((256, 256), 2.0)})
"""


@pytest.mark.parametrize("where", ["model", "metrics"])
def test_a_kill_during_save_leaves_the_old_record_intact(tmp_path, where):
    """A real SIGKILL of a child process while it saves a record over an old one: every file is the
    old one (or, for the files the save had finished, wholly the new one), each readable."""
    import subprocess
    import sys

    rec = RunRecord(tmp_path / "run")
    rec.save({"clean_acc": 0.5}, [{"epoch": 1}], {"w": torch.ones(256, 256)})
    old_model = (rec.dir / "model.pt").read_bytes()
    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", _SAVE_CHILD, str(rec.dir), str(ready), where])
    _kill_when_ready(child, ready, 120, "the save")
    assert child.returncode == -signal.SIGKILL
    assert rec.metrics() == {"clean_acc": 0.5}
    if where == "model":
        assert (rec.dir / "model.pt").read_bytes() == old_model
    assert torch.equal(rec.state_dict()["w"], torch.full((256, 256), 1.0 if where == "model" else 2.0))
    # history.json is written first: the save had replaced it whole before the kill
    assert rec.history() == [{"epoch": 1, "new": True}]
    assert bool(list(rec.dir.glob(".*.tmp"))) == (where == "model")  # the half-written temporary
    rec.start({"c": 1}, {})
    assert not list(rec.dir.glob(".*.tmp"))


# -- resuming a killed run --------------------------------------------------------------------------

RESUME = {"train.epochs": 4, "train.checkpoint_every": 0, "train.select": "val_acc", "eval.attacks": ["fgsm"],
          "eval.eps": [0.0, 0.1], "eval.corruptions": ["blur"],
          "arms": {"elr": {"technique": "elr"}, "sat": {"technique": "sat", "hparams": {"es_fraction": 0.25}},
                   "erm_last": {"technique": "erm", "train": {"select": "last"}}}}

_RUN_CHILD = """
import json, sys, time
from pathlib import Path
import studylib.train as T
from studylib import Study, load_study
from studylib.data import make_data
from studylib.records import RunRecord
outputs, arms, ready = Path(sys.argv[1]), sys.argv[2].split("+"), Path(sys.argv[3])
cfg = load_study("dro", "smoke", json.loads(sys.argv[4]))
rcs = [cfg.run_config(arm, 0) for arm in arms]  # "a+b": b's run shares a's fit
members = [(rc, RunRecord.for_config(rc, outputs)) for rc in rcs]
real_validate, epochs = T.validate, []

def validate(*a, **k):  # epoch 3 has trained, its validation waits to be killed
    epochs.append(1)
    if len(epochs) == 3:
        ready.touch()
        time.sleep(600)
    return real_validate(*a, **k)

T.validate = validate
Study(cfg, outputs, progress=False)._run_one(*members[0], make_data(rcs[0].data, 0), siblings=members[1:])
"""


def _run(cfg, arm, outputs):
    """The records of ``arm`` ("a+b": b's run shares a's fit), trained here."""
    members = [(rc, RunRecord.for_config(rc, outputs)) for rc in (cfg.run_config(a, 0) for a in arm.split("+"))]
    Study(cfg, outputs, progress=False)._run_one(*members[0], make_data(members[0][0].data, 0), siblings=members[1:])
    return [rec for _, rec in members]


def _no_clock(obj):
    """``obj`` without wall-clock times (the only numbers a resumed run may differ in)."""
    if isinstance(obj, dict):
        return {k: _no_clock(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_no_clock(v) for v in obj]
    return obj


@pytest.mark.parametrize("arm", ["erm", "elr", "sat", "group_dro", "erm+erm_last"])
def test_a_killed_run_resumes_to_the_same_result(tmp_path, arm, monkeypatch):
    """A child process training a run is SIGKILLed in epoch 3 (after the checkpoints of epochs 1 and
    2); the rerun trains epochs 3 and 4 only, and its history and metrics equal an uninterrupted
    run's bit for bit (CPU), for techniques with state across epochs (ELR's targets, SAT's soft
    labels, Group DRO's q) and without, and for a fit shared by two selection rules (each run's
    selection state is in the checkpoint)."""
    import json
    import subprocess
    import sys

    import studylib.train as T

    cfg = load_study("dro", "smoke", RESUME)
    assert cfg.device in ("auto", "cpu")
    killed, ready = tmp_path / "killed", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", _RUN_CHILD, str(killed), arm, str(ready), json.dumps(RESUME)],
                             env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    _kill_when_ready(child, ready, 300, "epoch 3")
    recs = [RunRecord.for_config(cfg.run_config(a, 0), killed) for a in arm.split("+")]
    assert (recs[0].dir / "checkpoint.pt").is_file() and not any(r.done for r in recs)

    validated = []
    real_validate = T.validate
    monkeypatch.setattr(T, "validate", lambda *a, **k: validated.append(1) or real_validate(*a, **k))
    resumed = _run(cfg, arm, killed)
    assert len(validated) == 2, "the rerun did not continue from epoch 3"
    whole = _run(cfg, arm, tmp_path / "whole")
    for r, w in zip(resumed, whole):
        assert r.done and not (r.dir / "checkpoint.pt").exists()
        assert [row["epoch"] for row in r.history()] == [1, 2, 3, 4]
        assert _no_clock(r.history()) == _no_clock(w.history())
        assert _no_clock(r.metrics()) == _no_clock(w.metrics())
        a, b = r.state_dict(), w.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if len(resumed) > 1:  # one fit served both runs, and each record says so
        assert [r.metrics()["fit"]["shared_fit_with"] for r in resumed] == [["erm_last"], ["erm"]]
        # erm's kept epoch was chosen before the kill: its selection state came back from the checkpoint
        assert resumed[0].metrics()["fit"]["best_epoch"] <= 2 and resumed[1].metrics()["fit"]["best_epoch"] == 4
