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
    # identical differences on every seed: the t statistic is undefined, and the exact sign-flip
    # test answers (2 of the 2^4 sign patterns are as extreme): counted in the family, not supported
    assert row.p == pytest.approx(2 / 2 ** 4) and row.tested == 2 and row.verdict == "inconclusive"
    cvar = claims.claims(dro_runs.assign(worst_group_acc=dro_runs.worst_group_acc + 0.001 * dro_runs.seed ** 2
                                         * (dro_runs.technique == "group_dro")))
    row = cvar.set_index("technique").loc["group_dro"]
    d = d + 0.001 * np.arange(4) ** 2
    assert row.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue) and row.verdict == "supported"
    # the detectable effect is exact: at δ = detectable·√n/sd the two-sided t-test on 3 df has 80% power
    delta = row.detectable * 2 / d.std(ddof=1)
    crit = stats.t.ppf(0.975, 3)
    assert stats.nct.sf(crit, 3, delta) + stats.nct.cdf(-crit, 3, delta) == pytest.approx(0.8, abs=1e-6)


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


def test_verdicts_directions_families_and_exploratory_claims():
    table = pd.DataFrame({"study": ["a", "a", "a", "a", "a", "b", "b"], "profile": "quick",
                          "role": ["headline", "headline", "headline", "secondary", "headline", "headline", "headline"],
                          "direction": ["higher", "lower", "higher", "higher", "higher", "higher", "higher"],
                          "diff": [0.1, 0.1, 0.01, 0.1, 0.1, 0.1, 0.1], "n": [3, 3, 3, 3, 1, 3, 3],
                          "p": [0.001, 0.002, 0.5, 0.001, np.nan, 0.03, 0.04]})
    v = claims.verdicts(table)
    # outside the family: "exploratory", never a verdict word
    assert list(v.verdict) == ["supported", "contradicted", "inconclusive", "exploratory",
                               "no verdict (one seed)", "supported", "supported"]
    # one family per study: study a adjusts over its 3 tested headline claims, study b over its 2
    assert list(v.tested[:3]) == [3, 3, 3] and list(v.tested[5:]) == [2, 2] and v.p_adjusted[3] == 0.001
    assert list(v.family) == ["a / quick"] * 3 + ["exploratory", "a / quick"] + ["b / quick"] * 2
    assert v.p_adjusted[5:].tolist() == pytest.approx([0.04, 0.04])  # BH within b alone
    # a study's verdicts do not depend on another study's claims
    alone = claims.verdicts(table[table.study == "b"])
    assert alone.verdict.tolist() == v.verdict[5:].tolist() and alone.p_adjusted.tolist() == v.p_adjusted[5:].tolist()


def test_one_headline_claim_per_technique_and_scenario_its_setting_chosen_on_validation(tmp_path):
    """Two headline settings of ELR in one scenario are candidates of ONE claim; validation picks
    the setting; each setting alone is an exploratory comparison (no verdict)."""
    cfg = load_study("elr", "smoke", {"seeds": [0, 1, 2], "arms.elr_official": {"technique": "elr",
                                                                               "hparams": {"beta": 0.9, "lam": 1.0}}})
    for seed in (0, 1, 2):
        fake_run(tmp_path, cfg, "erm", seed, "clean_acc", 0.70 + 0.01 * seed, val=0.70, metric_name="clean_acc")
        fake_run(tmp_path, cfg, "erm_es", seed, "clean_acc", 0.72 + 0.01 * seed, val=0.72, metric_name="clean_acc")
        fake_run(tmp_path, cfg, "elr", seed, "clean_acc", 0.95, val=0.80, metric_name="clean_acc")
        fake_run(tmp_path, cfg, "elr_es", seed, "clean_acc", 0.96, val=0.81, metric_name="clean_acc")
        fake_run(tmp_path, cfg, "elr_official", seed, "clean_acc", 0.74 + 0.02 * seed, val=0.85, metric_name="clean_acc")
    table = claims.claims(aggregate.load_runs(tmp_path))
    head = table[table.role == "headline"]
    assert len(head) == 1 and head.technique.iloc[0] == "elr"
    row = head.iloc[0]
    assert row.candidates == "elr, elr_es, elr_official" and row.arm == "elr_official"  # best validation, worse test
    assert row.baseline_candidates == "erm, erm_es" and row.baseline == "erm_es"
    views = table[table.role == "secondary"]
    assert sorted(views.candidates) == ["elr, elr_es", "elr_official"] and (views.verdict == "exploratory").all()


def test_hyperparameter_draws_are_independent_across_keys():
    """Each key of a random draw has its own MD5-seeded generator: the draws of two keys over many
    seeds are uncorrelated (the old seed kept 8 bytes of "seed/technique/key", the same for every key)."""
    from studylib.techniques import get_technique

    t = get_technique("cw_erm")
    draws = pd.DataFrame([t.sample_hparams(seed) for seed in range(200)])
    numeric = draws.select_dtypes("number")
    assert numeric.shape[1] >= 2
    ranks = numeric.rank()
    corr = ranks.corr().to_numpy()[np.triu_indices(numeric.shape[1], 1)]
    assert np.abs(corr).max() < 0.3, corr  # 200 draws: |Spearman ρ| of independent keys stays well below


def test_one_selection_rule_for_claims_and_tables():
    """The claims and the aggregate tables select with the same function."""
    from studylib.aggregate import selection_metric

    assert claims.claim_selection_metric("trades_sat", "clean") == selection_metric("trades_sat", "clean") == "val_robust_acc"
    assert selection_metric("pgd_at", "label_noise") == "val_robust_acc"  # the adversarial flag, in every scenario
    assert selection_metric("cw_erm", "imbalance") == "val_balanced_acc"
    assert selection_metric("group_dro", "spurious") == "val_worst_group_acc"


def test_the_report_has_one_headline_claim_per_technique_and_scenario():
    """Structural, over the quick profile the report shows: no two studies make a headline claim
    for the same technique in the same data regime without a declared baseline (the claim family
    is per study, so such a pair would be one question with two verdicts)."""
    seen = {}
    for study in study_names():
        cfg = load_study(study, "quick")
        for name, arm in cfg.arms.items():
            if arm.technique == "erm" or arm.role != "headline" or arm.baseline:
                continue
            key = (arm.technique, aggregate._scenario_key(cfg.run_config(name, cfg.seeds[0]).data.model_dump(mode="json")))
            assert seen.setdefault(key, study) == study, f"{key} claimed by {seen[key]} and {study}"


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
