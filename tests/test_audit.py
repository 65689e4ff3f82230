"""The independent robustness audit (studylib.audit, ``studylib audit``): the standard AutoAttack run
afresh on a saved checkpoint catches a reported robust accuracy that is overstated."""

import json

import pandas as pd
import pytest

import studylib as sl
from studylib.audit import audit_run
from studylib.cli import main
from studylib.records import RecordError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small finished run (the synergy study's MLP, ERM, 3 epochs), FGSM + PGD-10 at ε = 0.1 on
    30 attacked test examples."""
    out = tmp_path_factory.mktemp("audit") / "outputs"
    cfg = sl.load_study("synergy", profile="smoke", overrides={
        "seeds": [0], "train.epochs": 3, "eval.max_examples": 30, "eval.eps": [0.0, 0.1],
        "eval.attacks": ["fgsm", "pgd"]})
    cfg.arms = {"erm": cfg.arms["erm"]}
    results = sl.Study(cfg, outputs=out, progress=False).run()
    return out, results.run("erm", 0)


@pytest.fixture(scope="module")
def audited(trained):
    return audit_run(trained[1].record.dir)


def test_the_audit_runs_the_standard_autoattack_on_the_same_examples(trained, audited):
    out, run = trained
    r = audited
    assert r["n"] == 30 and r["eps"] == 0.1
    assert r["reported"] == pytest.approx(run.metrics["metrics"]["robust_acc"])
    assert r["attacks"] == "autoattack, autoattack:apgd-ce, autoattack:apgd-t, autoattack:fab-t, autoattack:square"
    # the standard ensemble is at least as strong as the record's PGD-10 alone on these examples
    pgd = next(row["acc"] for row in run.metrics["robust_curve"] if row["attack"] == "pgd" and row["eps"] == 0.1)
    assert r["independent"] <= pgd
    # the verdict reads the per-example union: robust only if neither the record's attacks nor
    # AutoAttack broke it, so it is at most both numbers
    mask = run.metrics["robust_examples"]
    assert mask["eps"] == 0.1 and len(mask["index"]) == len(mask["robust"]) == 30
    assert mask["robust"].count("1") / 30 == pytest.approx(r["reported"])
    assert r["basis"] == "union" and r["union"] <= min(r["reported"], r["independent"]) + 1e-9
    assert r["diff"] == pytest.approx(r["union"] - r["reported"])
    assert r["overstated"] == (r["union"] < r["reported"] - 0.01)
    # per stage, broken of attacked: the stages broke exactly the examples the ensemble's number lost
    stages = [part.split(" ")[1].split("/") for part in r["broke"].split(", ")]
    assert [p.split(" ")[0] for p in r["broke"].split(", ")] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    clean_correct = int(stages[0][1])
    assert clean_correct - sum(int(b) for b, _ in stages) == round(r["independent"] * r["n"])


def test_an_overstated_robust_accuracy_is_caught_by_the_union_and_the_command_fails(trained, audited, capsys):
    """A record whose attacks claim AutoAttack's number of robust examples, but on examples
    AutoAttack broke: each number alone agrees, the per-example union does not. A record without
    the mask falls back to AutoAttack alone, and says so."""
    out, run = trained
    path = run.record.dir / "metrics.json"
    honest = path.read_text()
    record = json.loads(honest)
    aa = audited["independent_robust"]
    assert 0 < aa.count("1") <= aa.count("0")
    swapped = ["0"] * 30
    for i in [i for i, c in enumerate(aa) if c == "0"][: aa.count("1")]:
        swapped[i] = "1"
    record["robust_examples"]["robust"] = "".join(swapped)
    record["metrics"]["robust_acc"] = audited["independent"]
    path.write_text(json.dumps(record))
    try:
        code = main(["audit", "synergy", "--profile", "smoke", "--outputs", str(out)])
        assert code == 1
        assert f"erm            seed 0: reported {audited['independent']:.4f}" in capsys.readouterr().out
        table = pd.read_csv(out / "audit" / "synergy-smoke.csv")
        assert table.overstated.tolist() == [True] and table.union.tolist() == [0.0]
        assert table.reported.tolist() == table.independent.tolist() == [audited["independent"]]
        # no mask in the record: AutoAttack alone; a subset of the examples gives no verdict (the
        # reported number is over all of them)
        del record["robust_examples"]
        path.write_text(json.dumps(record))
        r = audit_run(run.record.dir, max_examples=5)
        assert r["overstated"] is None and r["basis"].startswith("AutoAttack alone") and r["union"] == r["independent"]
    finally:
        path.write_text(honest)


def test_runs_that_cannot_be_audited_are_one_line_errors(trained, tmp_path, capsys):
    out, run = trained
    assert main(["audit", "synergy", "--profile", "quick", "--outputs", str(out)]) == 2
    assert "no finished synergy runs of profile quick" in capsys.readouterr().err
    assert main(["audit", "nosuchstudy", "--outputs", str(out)]) == 2
    # a seed that has no run selects nothing (the trained run is seed 0)
    assert main(["audit", "synergy", "--profile", "smoke", "--seed", "7", "--outputs", str(out)]) == 2
    assert "no finished synergy runs of profile smoke" in capsys.readouterr().err
    with pytest.raises(RecordError, match="not a finished run"):
        audit_run(tmp_path)
