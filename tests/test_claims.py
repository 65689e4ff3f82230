"""Claims: equal-footing pairing, validation-only selection, paired statistics and the verdict rule."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from studylib import aggregate, claims, load_study
from studylib.config import study_names
from studylib.records import RunRecord


def fake_run(outputs, cfg, arm, seed, metric, value, val, metric_name="worst_group_acc"):
    rc = cfg.run_config(arm, seed)
    rec = RunRecord.for_config(rc, outputs)
    rec.start(rc.model_dump(mode="json"), {"seed": seed})
    metrics = {metric_name: value, "clean_acc": 0.9, "train_seconds": 10.0, "epochs_run": 10, "best_epoch": 7}
    sel = {"val_acc": val, "val_worst_group_acc": val, "val_robust_acc": val}
    rec.save({"metrics": metrics, "fit": {"selected_val": sel}}, [], None)
    rec.mark_done()


@pytest.fixture
def dro_runs(tmp_path):
    """The DRO study's arms with ERM twins for early stopping and ℓ2. group_dro_l2 wins on
    validation but loses on test: selection must take it anyway."""
    cfg = load_study("dro", "smoke", {"seeds": [0, 1, 2, 3]})
    for seed in range(4):
        fake_run(tmp_path, cfg, "erm", seed, "worst_group_acc", 0.60 + 0.01 * seed, val=0.60)
        fake_run(tmp_path, cfg, "erm_es", seed, "worst_group_acc", 0.62 + 0.01 * seed, val=0.70)
        fake_run(tmp_path, cfg, "erm_l2", seed, "worst_group_acc", 0.55 + 0.01 * seed, val=0.65)
        fake_run(tmp_path, cfg, "group_dro", seed, "worst_group_acc", 0.70, val=0.70)
        fake_run(tmp_path, cfg, "group_dro_es", seed, "worst_group_acc", 0.90 + 0.005 * seed, val=0.75)
        fake_run(tmp_path, cfg, "cvar", seed, "worst_group_acc", 0.60 + 0.01 * seed, val=0.6)
        fake_run(tmp_path, cfg, "group_dro_l2", seed, "worst_group_acc", 0.75 + 0.01 * seed, val=0.80)
    return aggregate.load_runs(tmp_path)


def test_the_claims_erm_has_the_same_candidate_knobs(dro_runs):
    table = claims.claims(dro_runs)
    row = table[table.technique == "group_dro"].iloc[0]
    assert row.candidates == "group_dro, group_dro_es, group_dro_l2"
    # each candidate's ERM twin: the same train and model configs, only the technique differs
    assert row.baseline_candidates == "erm, erm_es, erm_l2"
    knobs = dro_runs.groupby("arm").knobs.first()
    assert {knobs[a] for a in row.candidates.split(", ")} == {knobs[a] for a in row.baseline_candidates.split(", ")}
    # selection on validation only: group_dro_l2 (val 0.80) beats group_dro_es (0.75) though its test is worse
    assert row.arm == "group_dro_l2" and row.baseline == "erm_es"
    assert row.selected_by == "best mean validation val_worst_group_acc"


def test_paired_difference_p_value_and_verdict_by_hand(dro_runs):
    row = claims.claims(dro_runs).set_index("technique").loc["group_dro"]
    d = np.array([0.75 + 0.01 * s - (0.62 + 0.01 * s) for s in range(4)])
    assert row["diff"] == pytest.approx(d.mean()) and row.n == 4
    # identical differences on every seed: no spread to test against, so no p-value and no support
    assert np.isnan(row.p) and row.verdict == "inconclusive"
    cvar = claims.claims(dro_runs.assign(worst_group_acc=dro_runs.worst_group_acc + 0.001 * dro_runs.seed ** 2
                                         * (dro_runs.technique == "group_dro")))
    row = cvar.set_index("technique").loc["group_dro"]
    d = d + 0.001 * np.arange(4) ** 2
    assert row.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue) and row.verdict == "supported"
    assert row.detectable == pytest.approx((stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * d.std(ddof=1) / 2)


def test_one_arm_name_with_two_configurations_is_never_averaged(dro_runs, tmp_path):
    cfg = load_study("dro", "smoke", {"seeds": [0, 1, 2, 3], "train.epochs": 7})  # an older params version
    for seed in range(4):
        fake_run(tmp_path, cfg, "erm", seed, "worst_group_acc", 0.1, val=0.99)
    runs = pd.concat([dro_runs, aggregate.load_runs(tmp_path)], ignore_index=True)
    table = claims.claims(runs)
    # "erm" now names two configurations: each keeps its own name (erm@<config>) and the twins
    # are matched by knobs, so the old 7-epoch runs (worst group 0.1) are never anyone's baseline
    assert table.baseline.str.startswith("erm").all() and (table.baseline_value > 0.5).all()
    assert {"erm@" in b for b in table.baseline} == {True, False}


def test_missing_twin_is_unequal_footing_without_verdict(tmp_path):
    cfg = load_study("dro", "smoke", {"seeds": [0, 1]})
    for seed in (0, 1):
        fake_run(tmp_path, cfg, "erm", seed, "worst_group_acc", 0.6, val=0.6)
        fake_run(tmp_path, cfg, "group_dro_l2", seed, "worst_group_acc", 0.8, val=0.8)
    row = claims.claims(aggregate.load_runs(tmp_path)).iloc[0]
    assert row.verdict == "unequal footing" and "group_dro_l2" in row.footing


def test_declared_baseline(tmp_path):
    cfg = load_study("adversarial", "smoke", {"seeds": [0, 1, 2], "arms.trades_sat.baseline": "trades"})
    for seed in (0, 1, 2):
        trades = 0.8 + 0.02 * seed
        for arm, v in (("erm", 0.5), ("trades", trades), ("trades_sat", trades + 0.01 * (seed - 1))):
            fake_run(tmp_path, cfg, arm, seed, "robust_acc", v, val=v, metric_name="robust_acc")
    table = claims.claims(aggregate.load_runs(tmp_path)).set_index("claim")
    row = table.loc["trades_sat vs trades"]
    assert row.baseline == "trades" and row["diff"] == pytest.approx(0.0) and row.verdict == "inconclusive"
    assert row.half_width == pytest.approx(stats.t.ppf(0.975, 2) * 0.01 / np.sqrt(3))
    assert table.loc["trades"].baseline == "erm" and table.loc["trades"].verdict == "supported"


def test_adjustments_match_scipy_and_holm_by_hand():
    p = pd.Series([0.001, 0.02, 0.03, 0.2, np.nan])
    bh = claims.benjamini_hochberg(p)
    assert np.allclose(bh[:4], stats.false_discovery_control(p[:4].to_numpy(), method="bh"))
    assert np.isnan(bh[4])
    assert np.allclose(claims.holm(p)[:4], [0.004, 0.06, 0.06, 0.2])


def test_verdicts_directions_and_secondary_claims():
    table = pd.DataFrame({"role": ["headline", "headline", "headline", "secondary", "headline"],
                          "direction": ["higher", "lower", "higher", "higher", "higher"],
                          "diff": [0.1, 0.1, 0.01, 0.1, 0.1], "n": [3, 3, 3, 3, 1],
                          "p": [0.001, 0.002, 0.5, 0.001, np.nan]})
    v = claims.verdicts(table)
    assert list(v.verdict) == ["supported", "contradicted", "inconclusive", "supported (exploratory, uncorrected)",
                               "no verdict (one seed)"]
    assert (v.tested == 3).all() and v.p_adjusted[3] == 0.001


@pytest.mark.parametrize("study", [s for s in study_names() if s != "matrix"])
def test_every_headline_arm_of_the_report_has_an_equal_footing_baseline(study):
    """Structural: in the profile the report shows (quick), every headline arm either names its
    baseline or has an ERM arm with exactly its generic knobs."""
    cfg = load_study(study, "quick")
    runs = pd.DataFrame([aggregate.run_row(rc.model_dump(mode="json"), {"metrics": {}}, "") for rc in cfg.runs()])
    runs = runs.assign(scenario_key="x", sel_val_acc=0.5)
    table = claims.claims(runs)
    unequal = table[table.verdict == "unequal footing"]
    assert unequal.empty, unequal[["claim", "footing"]].to_dict("records")
