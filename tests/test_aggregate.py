"""Aggregation pinned by a golden file, plus the selection and statistics checked by hand."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studylib import aggregate, claims, load_study
from studylib.records import RunRecord

GOLDEN = Path(__file__).parent / "golden"
AXES = ["clean_acc", "robust_acc", "worst_group_acc"]


def fake_run(outputs, cfg, arm, seed, clean, robust, val, worst=0.5):
    rc = cfg.run_config(arm, seed)
    rec = RunRecord.for_config(rc, outputs)
    rec.start(rc.model_dump(mode="json"), {"seed": seed})
    metrics = {"clean_acc": clean, "robust_acc": robust, "worst_group_acc": worst, "train_seconds": 10.0 * (1 + (arm != "erm")),
               "epochs_run": 10, "best_epoch": 7}
    rec.save({"metrics": metrics, "fit": {"selected_val": {"val_acc": val, "val_robust_acc": val}}}, [], None)
    rec.mark_done()


@pytest.fixture
def outputs(tmp_path):
    """Two scenarios, 3 seeds; two PGD-AT hyperparameter candidates whose validation and test
    rankings disagree (so validation and oracle selection differ)."""
    clean = load_study("adversarial", "smoke")
    strong = load_study("adversarial", "smoke", {"arms.pgd_at.hparams.eps": 0.2})
    noisy = load_study("adversarial", "smoke", {"data.scenario": {"kind": "label_noise", "rate": 0.4}})
    for seed in (0, 1, 2):
        fake_run(tmp_path, clean, "erm", seed, 0.98, 0.55 + 0.01 * seed, val=0.97)
        fake_run(tmp_path, clean, "pgd_at", seed, 0.97, 0.85 + 0.02 * seed, val=0.80)  # better on validation
        fake_run(tmp_path, strong, "pgd_at", seed, 0.95, 0.90 + 0.01 * seed, val=0.70)  # better on test
        fake_run(tmp_path, noisy, "erm", seed, 0.70 + 0.02 * seed, 0.3, val=0.6)
        fake_run(tmp_path, noisy, "trades", seed, 0.75, 0.5, val=0.5)
    return tmp_path


def test_selection_uses_validation_and_names_the_rule(outputs):
    runs = aggregate.load_runs(outputs)
    assert len(runs) == 15
    sel = aggregate.select(runs)
    pgd = sel[sel.technique == "pgd_at"]
    assert len(pgd) == 3 and (pgd.hparams.str.contains('"eps": 0.1')).all()  # the validation winner
    assert pgd.selected_by.iloc[0] == "validation: best mean val_robust_acc over seeds"
    assert (pgd.candidates == 2).all()
    oracle = aggregate.select(runs, oracle=True)
    assert oracle[oracle.technique == "pgd_at"].hparams.str.contains('"eps": 0.2').all()
    assert oracle.selected_by.str.startswith("oracle:").all()


def test_cells_and_paired_differences_by_hand(outputs):
    sel = aggregate.select(aggregate.load_runs(outputs))
    cells = aggregate.cells(sel, AXES)
    c = cells[(cells.technique == "pgd_at") & (cells.metric == "robust_acc")].iloc[0]
    values = [0.85, 0.87, 0.89]
    assert c["mean"] == pytest.approx(0.87) and c["std"] == pytest.approx(np.std(values, ddof=1)) and c.n == 3
    half = 4.302653 * np.std(values, ddof=1) / np.sqrt(3)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.87 - half, 0.87 + half))
    runs = aggregate.load_runs(outputs)
    table = claims.claims(runs)
    diffs = claims.effects(runs, table, AXES)
    d = diffs[(diffs.technique == "pgd_at") & (diffs.metric == "robust_acc")].iloc[0]
    # on its own metric the effect IS the claim: the same numbers and verdict
    claim = table[table.technique == "pgd_at"].iloc[0]
    assert d["diff"] == pytest.approx(0.87 - 0.56) and d.verdict == claim.verdict == "supported"
    assert (d.ci_low, d.ci_high, d.p_adjusted) == (claim.ci_low, claim.ci_high, claim.p_adjusted)
    t = diffs[(diffs.technique == "trades") & (diffs.metric == "clean_acc")].iloc[0]
    assert t.scenario == "label_noise" and t["diff"] == pytest.approx(0.75 - 0.72)
    assert t.verdict == "exploratory"  # a side metric of the trades claim: no verdict
    cost = aggregate.cost_multiple(sel)
    assert cost[("pgd_at", "clean")] == pytest.approx(2.0)


def test_aggregation_matches_the_golden_file(outputs):
    sel = aggregate.select(aggregate.load_runs(outputs))
    runs = aggregate.load_runs(outputs)
    effects = claims.effects(runs, claims.claims(runs), AXES)
    got = pd.concat([aggregate.cells(sel, AXES).assign(kind="cell"),
                     effects.rename(columns={"diff": "mean"}).assign(kind="vs_erm")])
    got = got[["kind", "technique", "scenario_key", "metric", "mean", "std", "n", "ci_low", "ci_high"]]
    got = got.sort_values(["kind", "technique", "scenario_key", "metric"]).reset_index(drop=True)
    path = GOLDEN / "aggregate.csv"
    if not path.exists():  # written once, reviewed by hand, committed: a missing file is a failure
        got.to_csv(path, index=False, float_format="%.6f")
        pytest.fail(f"golden file {path} was missing and has been written: review it and commit it")
    want = pd.read_csv(path)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False, atol=1e-6, rtol=0)


def test_unreadable_records_are_reported_not_fatal(outputs):
    runs = aggregate.load_runs(outputs)
    broken = Path(runs.record.iloc[0]) / "metrics.json"
    broken.write_text("{not json")
    rows, problems = aggregate.load_runs(outputs, return_problems=True)
    assert len(rows) == 14 and len(problems) == 1 and "metrics.json: not valid JSON" in problems[0]


def test_differences_pair_with_the_erm_of_the_same_study(outputs):
    """Another study's ERM wins the scenario's ERM selection (better validation score); a
    technique is still compared with the ERM its own study trained beside it (its claim's twin)."""
    other = load_study("matrix", "smoke", {"data.n_train": None})  # the same data regime
    for seed in (0, 1, 2):
        fake_run(outputs, other, "erm", seed, 0.99, 0.10, val=0.999)
    runs = aggregate.load_runs(outputs)
    sel = aggregate.select(runs)
    assert sel[sel.technique == "erm"].study.eq("matrix").any()  # the scenario's selected ERM
    paired = claims.effects(runs, claims.claims(runs), ["robust_acc"])
    p = paired[(paired.technique == "pgd_at")].iloc[0]
    assert p.study == "adversarial" and p.baseline == "erm" and p["diff"] == pytest.approx(0.87 - 0.56)


def test_explorers_are_widgets_live_and_a_static_view_in_batch(monkeypatch, capsys):
    from studylib import explore

    cells = pd.DataFrame([{"technique": "erm", "scenario_key": "clean", "metric": "clean_acc", "mean": 0.9, "std": 0.01,
                           "n": 3, "ci_low": 0.88, "ci_high": 0.92, "arm": "erm", "study": "matrix",
                           "selected_by": "val_acc"}])
    monkeypatch.setenv("STUDYLIB_BATCH", "1")  # papermill through studylib, nbval
    assert explore.matrix_explorer(cells) is None
    assert "erm · clean · clean_acc: 0.900 (n=3, 95% CI [0.880, 0.920])" in capsys.readouterr().out
    monkeypatch.delenv("STUDYLIB_BATCH")  # a live notebook
    assert type(explore.matrix_explorer(cells)).__name__ == "interactive"
