"""The adversarial-training vs regularization table: measured cells are paired differences by seed
with their CI, against the baseline each study pairs the technique with."""

import pandas as pd
import pytest

from studylib import compare


def _runs():
    rows = []
    for seed, (erm_acc, l2_acc, at_rob, at_es_rob) in zip((1000, 1001, 1002),
                                                         ((0.80, 0.85, 0.30, 0.41), (0.82, 0.86, 0.32, 0.40),
                                                          (0.81, 0.87, 0.31, 0.43))):
        base = {"seed": seed, "profile": "quick", "train_seconds": 10.0, "epochs_run": 10, "gen_gap": 0.1,
                "robust_acc": 0.2, "corruption_acc": 0.5}
        rows += [{**base, "study": "regularization", "scenario_key": "small_data(fraction=0.1)", "arm": "erm",
                  "clean_acc": erm_acc},
                 {**base, "study": "regularization", "scenario_key": "small_data(fraction=0.1)", "arm": "l2",
                  "clean_acc": l2_acc, "train_seconds": 20.0},
                 {**base, "study": "synergy", "scenario_key": "label_noise(rate=0.2)", "arm": "at",
                  "clean_acc": 0.7, "robust_acc": at_rob},
                 {**base, "study": "synergy", "scenario_key": "label_noise(rate=0.2)", "arm": "at_es",
                  "clean_acc": 0.7, "robust_acc": at_es_rob}]
    return pd.DataFrame(rows)


def test_cells_are_paired_differences_with_their_ci_and_unrun_columns_say_so():
    table = compare.comparison(_runs(), pd.DataFrame())
    l2 = table["ℓ2 penalty"]
    # l2 − erm by seed: +0.05, +0.04, +0.06 → mean +0.05, t-CI ±0.0248
    assert l2["impact: test accuracy"] == "+0.050 [+0.025, +0.075]"
    assert l2["computational cost"] == "2.0× per epoch"
    assert l2["compared with"] == "erm (regularization study)"
    assert "raises test accuracy (+0.050)" in l2["use cases (measured here)"]
    assert "robust" not in l2["use cases (measured here)"]  # a zero difference is no use case
    es = table["AT + early stopping"]
    assert es["compared with"] == "at (synergy study)" and es["impact: robust accuracy (worst case over attacks)"].startswith("+0.103 [")
    assert table["PGD adversarial training"]["compared with"] == "not run"
    assert table.loc["purpose", "BatchNorm"] and table.loc["impact: test accuracy", "BatchNorm"] == "—"
    assert list(table.columns) == [e[0] for e in compare.ENTRIES]


def test_a_one_seed_difference_has_no_ci_and_no_use_case():
    runs = _runs()
    table = compare.comparison(runs[runs.seed == 1000], pd.DataFrame())
    assert table.loc["impact: test accuracy", "ℓ2 penalty"] == "+0.050 (1 seed)"
    assert table.loc["use cases (measured here)", "ℓ2 penalty"].startswith("no effect told apart from 0 on 1 seed")


@pytest.mark.parametrize("entry", compare.ENTRIES, ids=[e[0] for e in compare.ENTRIES])
def test_every_compared_arm_exists_in_its_study(entry):
    from studylib import load_study

    _, study, arm, baseline, _, _ = entry
    arms = load_study(study, "quick").arms
    assert arm in arms and (baseline is None or baseline in arms), (study, arm, baseline)
