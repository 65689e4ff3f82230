"""The adversarial-training vs regularization table: every measured cell comes from a claim's own
pair (studylib.claims.effects), the verdict row is the claim's verdict and the use cases come from
verdicts only."""

import pytest

from studylib import aggregate, claims, compare, load_study
from studylib.records import RunRecord

SEEDS = (1000, 1001, 1002)


def _fake(outputs, cfg, arm, seed, **metrics):
    rc = cfg.run_config(arm, seed)
    rec = RunRecord.for_config(rc, outputs)
    rec.start(rc.model_dump(mode="json"), {"seed": seed})
    base = {"train_seconds": 10.0, "epochs_run": 10, "gen_gap": 0.1, "robust_acc": 0.2, "corruption_acc": 0.5,
            "clean_acc": 0.8}
    val = metrics.pop("val", 0.5)
    rec.save({"metrics": {**base, **metrics}, "fit": {"selected_val": {"val_acc": val, "val_robust_acc": val}}}, [], None)
    rec.mark_done()


@pytest.fixture
def runs(tmp_path):
    reg = load_study("regularization", "smoke", {"seeds": list(SEEDS)})
    syn = load_study("synergy", "smoke", {"seeds": list(SEEDS)})
    for seed, (erm_acc, l2_acc, at_rob, at_es_rob, side) in zip(SEEDS, ((0.80, 0.85, 0.30, 0.41, 0.01),
                                                                       (0.82, 0.86, 0.32, 0.40, 0.03),
                                                                       (0.81, 0.87, 0.31, 0.43, 0.02))):
        _fake(tmp_path, reg, "erm", seed, clean_acc=erm_acc)
        _fake(tmp_path, reg, "erm_no_bn", seed, clean_acc=erm_acc - 0.05)
        # l2 wins the weight-penalty claim on validation; its side metric (gen gap) moves too
        _fake(tmp_path, reg, "l2", seed, clean_acc=l2_acc, gen_gap=0.1 - side, train_seconds=20.0, val=0.9)
        _fake(tmp_path, reg, "l1", seed, clean_acc=erm_acc, val=0.6)
        _fake(tmp_path, syn, "at", seed, clean_acc=0.7, robust_acc=at_rob)
        _fake(tmp_path, syn, "at_es", seed, clean_acc=0.7, robust_acc=at_es_rob)
    return aggregate.load_runs(tmp_path)


def test_cells_are_the_claims_pairs_and_use_cases_come_from_verdicts(runs):
    table = claims.claims(runs)
    source = compare.comparison_effects(runs, table)
    versus = compare.comparison(runs, table)
    l2 = versus["ℓ2 penalty"]
    # l2 − erm by seed: +0.05, +0.04, +0.06 → mean +0.05, t-CI ±0.0248; the exploratory view of l2 alone
    assert l2["impact: test accuracy"] == "+0.050 [+0.025, +0.075]"
    assert l2["computational cost"] == "2.0× per epoch" and l2["compared with"] == "erm (regularization study)"
    # the verdict row is the weight-penalty headline claim (l2 chosen on validation over l1)
    head = table[(table.technique == "weight_penalty") & (table.role == "headline")].iloc[0]
    assert head.arm == "l2" and l2["verdict (its headline claim)"].startswith(f"{head.verdict}: test accuracy +0.050")
    assert "l2 selected on validation among l1, l2" in l2["verdict (its headline claim)"]
    assert head.verdict == "supported" and l2["use cases (from verdicts)"] == "use it to raise test accuracy (supported on 3 report seeds)"
    # a side metric whose CI excludes 0 (gen gap −0.01, −0.03, −0.02) makes no use case
    assert "generalization gap" not in l2["use cases (from verdicts)"]
    assert l2["impact: generalization gap ↓"].startswith("-0.020 [") and "claim" not in l2["impact: generalization gap ↓"]
    # ℓ1 shows its own pair, and the verdict of the same headline claim (l2 selected)
    l1 = versus["ℓ1 penalty"]
    assert l1["impact: test accuracy"] == "+0.000 [+0.000, +0.000]"
    assert l1["verdict (its headline claim)"] == l2["verdict (its headline claim)"]
    # the synergy claim: AT + early stopping vs AT, its own declared baseline; the cell is the claim
    es = versus["AT + early stopping"]
    c = table[table.claim == "at_es vs at"].iloc[0]
    assert es["compared with"] == "at (synergy study)"
    assert es["impact: robust accuracy (worst case over attacks)"].startswith(
        f"{c['diff']:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}] — the claim: {c.verdict}")
    row = source[(source.label == "AT + early stopping") & (source.metric == "robust_acc")].iloc[0]
    assert (row["diff"], row.ci_low, row.ci_high, row.verdict) == (c["diff"], c.ci_low, c.ci_high, c.verdict)
    # BatchNorm has no claim: its column is exploratory throughout
    bn = versus["BatchNorm"]
    assert bn["impact: test accuracy"] == "+0.050 [+0.050, +0.050]" and bn["verdict (its headline claim)"].startswith("no claim")
    assert bn["use cases (from verdicts)"].startswith("none established")
    assert versus["PGD adversarial training"]["compared with"] == "not run"
    assert list(versus.columns) == [e[0] for e in compare.ENTRIES]


def test_a_one_seed_difference_has_no_ci(runs):
    one = runs[runs.seed == 1000]
    versus = compare.comparison(one, claims.claims(one))
    assert versus.loc["impact: test accuracy", "ℓ2 penalty"] == "+0.050 (1 seed)"
    assert versus.loc["use cases (from verdicts)", "ℓ2 penalty"].startswith("none established: no verdict (one seed)")


@pytest.mark.parametrize("entry", compare.ENTRIES, ids=[e[0] for e in compare.ENTRIES])
def test_every_compared_arm_exists_in_its_study(entry):
    _, study, arm, baseline, _, _ = entry
    arms = load_study(study, "quick").arms
    assert arm in arms and (baseline is None or baseline in arms), (study, arm, baseline)
