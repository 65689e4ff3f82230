"""Run records: done marker written last, no recompute, unfinished runs redone, failures kept."""

import json
import threading
import time

import pytest
import torch

import studylib.study as study_mod
from studylib import Study, load_study
from studylib.records import RecordError, RunRecord, atomic_write_json, read_json

TINY = {"train.epochs": 1, "data.n_train": 200, "eval.attacks": ["fgsm"], "eval.corruptions": ["blur"],
        "eval.eps": [0.0, 0.1], "arms.pgd_at.hparams.steps": 2, "arms.trades.hparams.steps": 2}


def tiny(**extra):
    return load_study("adversarial", "smoke", {**TINY, **extra})


def test_atomic_json_keeps_numbers_as_numbers(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"acc": torch.tensor(0.5), "n": 3})
    assert json.loads((tmp_path / "m.json").read_text()) == {"acc": 0.5, "n": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left behind


def test_record_is_complete_before_done_and_not_recomputed(outputs, monkeypatch):
    seen = []
    original = RunRecord.mark_done

    def checked(self):
        seen.append(sorted(p.name for p in self.dir.iterdir()))
        original(self)

    monkeypatch.setattr(RunRecord, "mark_done", checked)
    cfg = tiny()
    results = Study(cfg, outputs, progress=False).run()
    assert all(names == ["config.json", "env.json", "history.json", "metrics.json", "model.pt"] for names in seen)
    assert len(results.runs) == len(cfg.arms) == 5
    rec = results.run("erm").record
    env = rec.env()
    assert {"git_sha", "git_dirty", "packages", "torch_threads", "device", "seed"} <= set(env)
    assert rec.config()["seed"] == 0 and rec.config()["technique"] == "erm"
    assert isinstance(rec.metrics()["metrics"]["clean_acc"], float)

    monkeypatch.setattr(study_mod, "fit", lambda *a, **k: pytest.fail("a done run was recomputed"))
    again = Study(cfg, outputs, progress=False).run()
    assert again.table().clean_acc.tolist() == results.table().clean_acc.tolist()


def test_a_run_killed_midway_is_redone(outputs):
    cfg = tiny()
    rc = cfg.run_config("erm", 0)
    rec = RunRecord.for_config(rc, outputs)
    rec.start({"partial": True}, {})  # what a kill after start leaves: no done marker
    assert not rec.done
    Study(cfg, outputs, progress=False).run()
    assert rec.done and rec.config()["technique"] == "erm"


def test_a_run_being_trained_elsewhere_is_waited_for_then_reused(outputs, monkeypatch):
    """Two processes sharing outputs (a test and a notebook, two sweeps): while one holds a run's
    lock, the other's Study puts that run off, does its other runs, then waits for it and reuses it
    instead of training it."""
    real_fit, trained = study_mod.fit, []
    monkeypatch.setattr(study_mod, "fit", lambda rc, data, progress=True, **kw: trained.append(
        (rc.arm, threading.current_thread().name)) or real_fit(rc, data, progress, **kw))
    cfg = tiny()
    first, rest = cfg.runs()[0], cfg.runs()[1:]
    rec = RunRecord.for_config(first, outputs)
    study = Study(cfg, outputs, progress=False)
    with rec.lock():  # "elsewhere": this thread holds the first run and trains it
        other = threading.Thread(target=study.run, name="study")
        other.start()
        deadline = time.time() + 300
        while not all(RunRecord.for_config(r, outputs).done for r in rest) and time.time() < deadline:
            time.sleep(0.1)
        assert all(RunRecord.for_config(r, outputs).done for r in rest)  # it did its other runs meanwhile
        time.sleep(0.5)
        assert other.is_alive() and not rec.done  # and now waits at the first: it cannot finish
        data = study_mod.make_data(first.data, first.seed)
        study._run_one(first, rec, data)
    other.join()
    assert sorted(arm for arm, _ in trained) == sorted(r.arm for r in cfg.runs())  # each run once
    assert (first.arm, "study") not in trained  # the waiting study reused the first run
    assert all(r.record.done for r in study_mod.StudyResults(cfg, outputs).runs)


def test_a_run_another_study_computed_is_copied_not_retrained(outputs, monkeypatch):
    """ELR's and SAT's studies both train CE, early-stopped CE and ELR on the same noisy digits:
    a run whose config differs only in the study, arm or profile name is trained once; the second
    study's record holds the same weights and metrics, its own names, and where they came from."""
    real_fit, trained = study_mod.fit, []
    monkeypatch.setattr(study_mod, "fit", lambda rc, data, progress=True, **kw: trained.append(rc.study)
                        or real_fit(rc, data, progress, **kw))
    first = tiny(arms={a: None for a in ("fgsm_at", "pgd_at", "trades", "trades_sat")})  # ERM only
    second = first.model_copy(update={"study": "adversarial_again", "profile": "quick",
                                      "arms": {"plain_erm": first.arms["erm"], "other": first.arms["erm"].model_copy(
                                          update={"train": {"epochs": 2}})}})
    a = Study(first, outputs, progress=False).run()
    b = Study(second, outputs, progress=False).run()
    assert trained == ["adversarial", "adversarial_again"]  # "other" trains: 2 epochs is other content
    shared, own = b.run("plain_erm"), b.run("other")
    assert shared.record.config()["arm"] == "plain_erm" and shared.record.config()["study"] == "adversarial_again"
    assert shared.record.env()["reused_from"] == str(a.run("erm").record.dir.relative_to(outputs / "runs"))
    assert shared.metrics == a.run("erm").metrics
    sa, sb = a.run("erm").record.state_dict(), shared.record.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert "reused_from" not in own.record.env()


def test_a_failing_run_is_recorded_and_the_others_finish(outputs, monkeypatch):
    real_fit = study_mod.fit

    def flaky(rc, data, progress=True, **kw):
        if rc.arm == "trades":
            raise FloatingPointError("loss is nan")
        return real_fit(rc, data, progress, **kw)

    monkeypatch.setattr(study_mod, "fit", flaky)
    cfg = tiny()
    with pytest.raises(RuntimeError, match="trades seed 0: FloatingPointError: loss is nan"):
        Study(cfg, outputs, progress=False).run()
    results = study_mod.StudyResults(cfg, outputs)
    assert [r.config.arm for r in results.runs] == ["erm", "fgsm_at", "pgd_at", "trades_sat"]
    assert results.failed[0][0].arm == "trades" and "loss is nan" in results.failed[0][1]


# ERM kept at its best validation accuracy and at its last epoch: two runs, one shared fit
SHARED = {"arms": {"fgsm_at": None, "pgd_at": None, "trades": None, "trades_sat": None,
                   "erm_last": {"technique": "erm", "train": {"select": "last"}}}}


def test_a_shared_fit_that_fails_fails_each_of_its_runs_once(outputs, monkeypatch):
    calls = []

    def diverging(rc, data, progress=True, **kw):
        calls.append((rc.arm, [s.arm for s in kw.get("siblings", [])]))
        raise FloatingPointError("loss is nan")

    monkeypatch.setattr(study_mod, "fit", diverging)
    cfg = tiny(**SHARED)
    with pytest.raises(RuntimeError) as raised:
        Study(cfg, outputs, progress=False).run()
    assert calls == [("erm", ["erm_last"])]  # one fit for both, not retried for the sibling
    assert str(raised.value).split("; ") == ["erm seed 0: FloatingPointError: loss is nan",
                                              "erm_last seed 0: FloatingPointError: loss is nan"]
    assert sorted(rc.arm for rc, _ in study_mod.StudyResults(cfg, outputs).failed) == ["erm", "erm_last"]


def test_a_run_whose_record_fails_leaves_its_shared_fit_siblings_recorded(outputs, monkeypatch):
    real_record = Study._record

    def record(self, rc, rec, result, data, shared_with):
        if rc.arm == "erm_last":
            raise OSError("disk full")
        return real_record(self, rc, rec, result, data, shared_with)

    monkeypatch.setattr(Study, "_record", record)
    cfg = tiny(**SHARED)
    with pytest.raises(RuntimeError, match="^erm_last seed 0: OSError: disk full$"):
        Study(cfg, outputs, progress=False).run()
    results = study_mod.StudyResults(cfg, outputs)
    assert [r.config.arm for r in results.runs] == ["erm"] and results.failed[0][0].arm == "erm_last"
    assert results.run("erm").metrics["fit"]["shared_fit_with"] == ["erm_last"]
    assert not results.run("erm").record.checkpoint.exists()


def test_weights_load_back_and_broken_files_are_named(outputs):
    cfg = tiny()
    results = Study(cfg, outputs, progress=False).run()
    model = results.model("pgd_at")
    data = results.data()
    logits = model(data.test.x)
    assert logits.argmax(1).eq(data.test.y).float().mean().item() == pytest.approx(
        results.run("pgd_at").metrics["metrics"]["clean_acc"], abs=1e-6)
    rec = results.run("erm").record
    (rec.dir / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RecordError, match="model.pt: cannot be loaded"):
        rec.state_dict()
    (rec.dir / "metrics.json").write_text("{truncated")
    with pytest.raises(RecordError, match="metrics.json: not valid JSON"):
        read_json(rec.dir / "metrics.json")
