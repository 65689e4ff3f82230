"""A run's numbers depend on its identity alone: with the kit's CPU kernel pins (studylib.kernels),
1 and 2 threads give the same metrics and weights, and so does an environment asking for another
instruction set (ATEN_CPU_CAPABILITY=default or avx512, oneDNN's and MKL's own choice).

Without the pins (measured on an AVX-512 Intel machine, torch 2.13 CPU wheel): the dropout
study's CNN gave three different final weights under ATEN_CPU_CAPABILITY=default, avx2 and avx512;
MKL's linear layers and oneDNN's AVX-512 convolution gradients differed between 1 and 2 threads.
A machine without AVX2 (or an ARM one) cannot run the pinned kernels: its records say so in
env.json (``kernels``), and runs are not reused across such a difference.
"""

import functools
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from studylib import Study, kernels, load_study
from studylib.data import make_data
from studylib.evaluate import scorecard
from studylib.records import RunRecord
from studylib.train import fit

# two epochs of the dropout study's smoke CNN at rate 0.5 (the arm that differed between thread
# counts), scored with FGSM and PGD (input gradients through the convolutions)
TINY = {"train.epochs": 2, "eval.eps": [0.0, 0.1]}
X86_AVX2 = kernels.expected_capability() == "AVX2"

CHILD = r"""
import hashlib, json, sys
import studylib
from studylib import kernels
if sys.argv[1] == "unpinned":
    import os
    for k in kernels.PINS:
        os.environ.pop(k, None)
    kernels.use = lambda device=None: kernels.settings()
from studylib.data import make_data
from studylib.evaluate import scorecard
from studylib.train import fit
rc = studylib.load_study("dropout", "smoke", json.loads(sys.argv[2])).run_config("dropout_50", 0)
data = make_data(rc.data, rc.seed)
res = fit(rc, data, progress=False)
m = scorecard(res.model, data, rc, res.technique)["metrics"]
w = hashlib.sha256(b"".join(v.contiguous().numpy().tobytes() for v in res.model.state_dict().values()))
print(json.dumps({"metrics": {k: v for k, v in m.items() if "seconds" not in k}, "weights": w.hexdigest(),
                  "kernels": kernels.settings()}))
"""


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if "seconds" not in k}


@functools.cache  # the 1-thread run is the reference of the instruction-set test too
def _train(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rc = load_study("dropout", "smoke", TINY).run_config("dropout_50", 0)
        data = make_data(rc.data, rc.seed)
        res = fit(rc, data, progress=False)
        card = scorecard(res.model, data, rc, res.technique)
    finally:
        torch.set_num_threads(before)
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in res.history]
    return _numbers(card["metrics"]), history, res.model.state_dict()


def test_a_runs_metrics_and_weights_are_identical_on_1_and_2_threads():
    m1, h1, w1 = _train(1)
    m2, h2, w2 = _train(2)
    assert m1 == m2 and h1 == h2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def _child(mode: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, json.dumps(TINY)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not X86_AVX2, reason="the pins are for x86-64 processors with AVX2")
def test_the_pinned_kernels_give_one_record_whatever_instruction_set_the_environment_asks_for():
    # the reference: this process's run (pinned at import, as every run is; the thread count does not
    # matter: the test above), against fresh processes whose environment asks for other kernels
    metrics, _, weights = _train(1)
    here = {"metrics": json.loads(json.dumps(metrics)),
            "weights": hashlib.sha256(b"".join(v.contiguous().numpy().tobytes() for v in weights.values())).hexdigest()}
    asked = [{"ATEN_CPU_CAPABILITY": "default"}]
    if torch.cpu._is_avx512_supported():
        asked.append({"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_CBWR": "AUTO"})
    runs = [_child("pinned", **env) for env in asked]
    assert all(r["kernels"]["cpu_capability"] == "AVX2" and r["kernels"]["thread_invariant"] for r in runs)
    assert all(r["metrics"] == here["metrics"] and r["weights"] == here["weights"] for r in runs)
    if torch.cpu._is_avx512_supported():  # the pins are what makes them equal: the machine's own kernels differ
        native = _child("unpinned")
        assert native["kernels"]["cpu_capability"] == "AVX512" and native["weights"] != here["weights"]


@pytest.mark.skipif(not X86_AVX2, reason="the pins are for x86-64 processors with AVX2")
def test_torch_computing_before_the_pins_is_refused_before_any_run(tmp_path):
    code = ("import torch; torch.ones(3).sum()\n"  # fixes the AVX-512 (or other) kernels, as a notebook cell might
            "import studylib, sys\n"
            "try:\n"
            f"    studylib.Study(studylib.load_study('dropout', 'smoke'), {str(tmp_path)!r}, progress=False).run()\n"
            "except studylib.kernels.KernelsNotPinned as e:\n"
            "    print(e); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": "default"})
    assert out.returncode == 3, out.stderr[-2000:]
    assert "DEFAULT kernels, not AVX2" in out.stdout and "import studylib before" in out.stdout
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing recorded


def test_a_run_is_reused_only_from_a_record_made_with_the_same_kernels(outputs):
    cfg = load_study("dropout", "smoke")
    first, second = (RunRecord.for_config(cfg.model_copy(update={"study": s}).run_config("erm", 0), outputs)
                     for s in ("dropout", "dropout_again"))
    here = kernels.settings()
    first.start({}, {"device": "cpu", "kernels": here})
    first.save({"metrics": {}}, [], None)
    first.mark_done()
    assert second.twin("cpu", here).dir == first.dir
    assert second.twin("cpu", {**here, "threads": here["threads"] + 1}).dir == first.dir  # threads: not identity
    assert second.twin("cpu", {**here, "cpu_capability": "AVX512"}) is None
    assert second.twin("cpu", {**here, "mkl_cbwr": None}) is None
    first.start({}, {"device": "cpu"})  # a record made before the kernels were recorded
    assert second.twin("cpu", here) is None


def test_finished_runs_made_with_other_kernels_are_named(outputs):
    from studylib.study import StudyResults

    cfg = load_study("dropout", "smoke", {"arms": {"erm": {"technique": "erm"}, "dropout_50": {
        "technique": "dropout", "hparams": {"rate": 0.5}}}})
    here = kernels.settings()
    other = {**here, "cpu_capability": "AVX512" if here["cpu_capability"] != "AVX512" else "AVX2"}
    for arm, env in (("erm", {"kernels": here}), ("dropout_50", {"kernels": other})):
        rec = RunRecord.for_config(cfg.run_config(arm, cfg.seeds[0]), outputs)
        rec.start({}, env)
        rec.save({"metrics": {}}, [], None)
        rec.mark_done()
    assert StudyResults(cfg, outputs).other_kernels(here) == [
        f"dropout_50 seed {cfg.seeds[0]}: cpu_capability {other['cpu_capability']} (here {here['cpu_capability']})"]


def _without_timing(obj):
    """A record's numbers less its measured times and which runs its fit served."""
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if "seconds" not in k and k != "shared_fit_with"}
    if isinstance(obj, list):
        return [_without_timing(v) for v in obj]
    return obj


def test_runs_that_differ_only_in_selection_share_one_fit_and_get_the_records_each_gets_alone(tmp_path):
    """The dropout net kept at its last epoch, at its best validation accuracy and at its best
    validation PGD accuracy: one fit serves all three, and each record (history, selected epoch,
    metrics, weights) is what that run gets when it trains alone."""
    rules = {"last": "last", "best": "val_acc", "robust": "val_robust_acc"}
    arms = {name: {"technique": "dropout", "hparams": {"rate": 0.5}, "train": {"select": rule}}
            for name, rule in rules.items()}
    drop = {a: None for a in load_study("dropout", "smoke").arms}

    def study(names):
        return load_study("dropout", "smoke", {"train": {"epochs": 4}, "eval": {"eps": [0.0, 0.1]},
                                               "arms": {**drop, **{n: arms[n] for n in names}}})

    shared = Study(study(rules), tmp_path / "shared", progress=False).run()
    assert {r.config.arm: sorted(r.metrics["fit"]["shared_fit_with"]) for r in shared.runs} == {
        "last": ["best", "robust"], "best": ["last", "robust"], "robust": ["best", "last"]}
    assert len({r.metrics["fit"]["best_epoch"] for r in shared.runs}) > 1  # the rules keep different epochs
    for name in rules:
        alone = Study(study([name]), tmp_path / name, progress=False).run().run(name)
        together = shared.run(name)
        assert alone.config.hash() == together.config.hash()
        assert alone.metrics["fit"]["shared_fit_with"] == []
        assert _without_timing(alone.metrics) == _without_timing(together.metrics), name
        assert _without_timing(alone.history) == _without_timing(together.history), name
        wa, wb = alone.record.state_dict(), together.record.state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
