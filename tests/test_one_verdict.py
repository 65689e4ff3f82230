"""One claim, one verdict: every view of the report prints the row studylib.claims computed.

Two studies are trained for real on three report seeds (DRO: several candidates per claim, chosen on
validation; adversarial: robust accuracy from real attacks, the comparison table's left column), at a
sliver of their smoke budget. Every other study gets records with made-up numbers for every arm of
its smoke configuration (the matrix in its five scenarios, ELR and CW-ERM in their two), which keeps
the test within its time: there the property under test is the report's plumbing. The real synthesis
notebook is executed on all of them. Each headline claim's verdict and CI must then be identical in the study's own
``StudyResults.claims()`` (what its notebook prints), ``summary.csv``, ``claims.csv``, the comparison
table's source CSV and, for the matrix, ``matrix_vs_erm.csv``."""

import math

import numpy as np
import pandas as pd
import pytest

from studylib import Study, load_study
from studylib.config import CORRUPTIONS, study_names
from studylib.execute import build_report
from studylib.records import RunRecord
from studylib.study import StudyResults
from studylib.techniques import get_technique

SEEDS = [1000, 1001, 1002]
METRICS = ["clean_acc", "robust_acc", "corruption_acc", "corruption_acc_heldout", "balanced_acc",
           "worst_group_acc", "ece", "gen_gap"]
SCENARIOS = {  # the studies run in more than one data regime by their notebooks and the sweep
    "matrix": [{"kind": "clean"}, {"kind": "small_data", "fraction": 0.1}, {"kind": "label_noise", "rate": 0.4},
               {"kind": "imbalance", "ratio": 20}, {"kind": "spurious", "correlation": 0.95}],
    "elr": [None, {"kind": "label_noise", "rate": 0.4, "noise": "asymmetric"}],
    "cw_erm": [None, {"kind": "imbalance", "ratio": 10}],
}


# trained for real, at a sliver of the smoke budget (the numbers are not the point; real records are):
# the adversarial study on 300 training and 100 validation images, its training attacks and
# validation PGD of 2 steps, attacked at its main ε on 100 test images (the scorecard's PGD-10)
TRAINED = {"dro": {"train.epochs": 6},
           "adversarial": {"train.epochs": 3, "data.n_train": 300, "data.n_val": 100, "eval.eps": [0.0, 0.1],
                           "eval.max_examples": 100, "eval.corruptions": ["gaussian_noise"], "train.select_steps": 2,
                           **{f"arms.{arm}.hparams.steps": 2 for arm in ("pgd_at", "trades", "trades_sat")}}}


def _configs(study):
    for scenario in SCENARIOS.get(study, [None]):
        yield load_study(study, "smoke", {"seeds": SEEDS, **TRAINED.get(study, {}),
                                          **({"data.scenario": scenario} if scenario else {})})


def _write(outputs, cfg, rng):
    for rc in cfg.runs():
        effect = 0.0 if rc.technique == "erm" else rng.normal(0.03, 0.03)
        noise = rng.normal(0, 0.01)
        metrics = {m: float(np.clip(0.7 + effect + noise + rng.normal(0, 0.01), 0, 1)) for m in METRICS}
        metrics.update({f"corruption_acc_heldout@{kind}": metrics["corruption_acc_heldout"] for kind in CORRUPTIONS})
        metrics.update(train_seconds=10.0 * (1 + rng.random()), epochs_run=10, best_epoch=7)
        val = {k: float(0.7 + effect + rng.normal(0, 0.01)) for k in
               ("val_acc", "val_robust_acc", "val_balanced_acc", "val_worst_group_acc")}
        rec = RunRecord.for_config(rc, outputs)
        rec.start(rc.model_dump(mode="json"), {"seed": rc.seed})
        rec.save({"metrics": metrics, "fit": {"selected_val": val}}, [], None)
        rec.mark_done()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("one-verdict")
    rng = np.random.default_rng(0)
    for study in study_names():
        for cfg in _configs(study):
            if study in TRAINED:
                Study(cfg, outputs, progress=False).run()
            else:
                _write(outputs, cfg, rng)
    # a run that diverged (a sweep point with a learning rate too large): the report lists it
    failed = RunRecord.for_config(load_study("dropout", "smoke", {"seeds": [1000], "train.lr": 1.0e12}).runs()[0], outputs)
    failed.start({}, {"seed": 1000})
    failed.mark_failed("TrainingDiverged: erm seed 1000: training loss is nan at epoch 1")
    build_report(outputs, progress=False, profile="smoke")
    return outputs


def _study_claims(outputs):
    """What each study notebook prints: StudyResults.claims() of its own configuration."""
    tables = []
    for study in study_names():
        cfg = next(_configs(study))
        tables.append(StudyResults(cfg, outputs).claims())
    return pd.concat(tables, ignore_index=True)


def _ci(r):
    return f"{r.ci_low:+.3f} to {r.ci_high:+.3f}"


def test_every_view_prints_the_claims_verdict_and_ci(report):
    own = _study_claims(report)
    head = own[(own.role == "headline") & own.arm.notna() & own.n.notna()]
    assert len(head) >= 15 and set(head.verdict) <= {"supported", "contradicted", "inconclusive"}
    assert (head.n == 3).all()
    assert set(TRAINED) <= set(head.study)
    for study in TRAINED:  # real records: every run trained, its history and its selected epoch on record
        cfg = next(_configs(study))
        runs = StudyResults(cfg, report).runs
        assert len(runs) == len(cfg.runs())
        for r in runs:
            fit = r.metrics["fit"]
            assert len(r.history) == fit["epochs_run"] <= r.config.train.epochs, (study, r.config.arm)
            assert 1 <= fit["best_epoch"] <= fit["epochs_run"], (study, r.config.arm)
    # the adversarial claims rest on real attacks: PGD ran on every run, and on the attacked examples
    # the worst case at the main ε is at most their clean accuracy (ε = 0)
    for r in StudyResults(next(_configs("adversarial")), report).runs:
        m = r.metrics["metrics"]
        assert "pgd" in r.metrics["attacks"]["run"] and 0 <= m["robust_acc"] <= m["robust_acc@0"], r.config.arm
    key = ["study", "scenario_key", "claim"]
    # claims.csv: the synthesis' own claims table, the same rows (rounded to 4 places in the CSV)
    csv = pd.read_csv(report / "report" / "claims.csv")
    both = head.merge(csv, on=key, suffixes=("", "_csv"), validate="one_to_one")
    assert len(both) == len(head)
    assert (both.verdict == both.verdict_csv).all()
    for col in ("diff", "ci_low", "ci_high", "p_adjusted"):
        assert np.allclose(both[col], both[f"{col}_csv"], atol=5e-5), col
    # summary.csv: one row per headline claim with the same verdict and CI, in words
    summary = pd.read_csv(report / "report" / "summary.csv")
    assert len(summary) == len(own[own.role == "headline"])
    for _, r in head.iterrows():
        match = summary[(summary.study == r.study) & summary.technique.str.contains(f"[{r.claim}]", regex=False)
                        & (summary["95% CI"] == _ci(r))] if r.claim != r.technique else \
            summary[(summary.study == r.study) & (summary["95% CI"] == _ci(r))]
        assert len(match) >= 1 and (match.verdict == r.verdict).all(), (r.study, r.claim)
    # the comparison table's source: on a claim's own metric, the claim's numbers and verdict
    source = pd.read_csv(report / "report" / "adversarial_vs_regularization_effects.csv")
    on_claim = source[source.claim.notna() & (source.metric == source.claim_metric)]
    assert len(on_claim) >= 5
    merged = on_claim.merge(own, on=key, suffixes=("", "_claim"), validate="many_to_one")
    assert len(merged) == len(on_claim) and (merged.verdict == merged.verdict_claim).all()
    assert np.allclose(merged.ci_low, merged.ci_low_claim) and np.allclose(merged["diff"], merged.diff_claim)
    assert set(source.verdict[source.metric != source.claim_metric].dropna()) <= {"exploratory"}
    # the matrix: every cell is the matrix claim's (exploratory) pair; on the claim's metric, its CI
    matrix = pd.read_csv(report / "report" / "matrix_vs_erm.csv")
    mine = own[(own.study == "matrix") & own.arm.notna() & own.n.notna()]
    assert matrix.scenario_key.nunique() == 5 and set(matrix.verdict) == {"exploratory"}
    cells = matrix[matrix.metric == matrix.claim_metric].merge(mine, on=key, suffixes=("", "_claim"),
                                                               validate="one_to_one")
    assert len(cells) == len(mine)
    assert np.allclose(cells.ci_low, cells.ci_low_claim, atol=5e-5) and np.allclose(cells["diff"], cells.diff_claim, atol=5e-5)


def test_the_report_is_static_has_every_section_and_lists_the_failed_run(report):
    text = (report / "report" / "synthesis.html").read_text()
    assert "Summary: the answers first" in text
    body = text[text.index("<body"):]
    # a static report: no code prompts, no widget cells (they need a kernel), every section there
    assert "In&nbsp;[" not in body and ">Out[" not in body and "Explore (live notebook only)" not in body
    for section in ("How each claim was made", "Adversarial training vs regularization",
                    "The technique × scenario matrix: robust training under shift", "Every study's cells",
                    "Published anchors"):
        assert section in body, section
    for name in ("claims.csv", "summary.md", "matrix.svg", "matrix.png", "matrix_clean_acc.png",
                 "adversarial_vs_regularization.csv", "versus_erm.csv"):
        assert (report / "report" / name).exists(), name
    listed = (report / "report" / "failures.csv").read_text()
    assert "TrainingDiverged" in listed and "dropout" in listed


def test_the_report_prints_no_python_reprs_and_claims_as_a_table(report):
    html = (report / "report" / "synthesis.html").read_text()
    assert "np.int64" not in html and "np.float64" not in html
    assert "report seeds 1000, 1001, 1002" in html
    section = html[html.index("How each claim was made"):html.index("The technique × scenario matrix")]
    assert "<table" in section and "candidates → selected" in section and "<pre>•" not in section


def test_a_study_verdict_does_not_depend_on_other_studies(report):
    """The family is the study: dropping every other study's records changes no verdict."""
    from studylib import aggregate, claims

    runs = aggregate.load_runs(report)
    alone = claims.claims(runs[runs.study == "dro"])
    together = claims.claims(runs)
    together = together[together.study == "dro"].reset_index(drop=True)
    pd.testing.assert_series_equal(alone.verdict.reset_index(drop=True), together.verdict, check_names=False)
    assert np.allclose(alone.p_adjusted.fillna(-1), together.p_adjusted.fillna(-1))
    h = together[together.role == "headline"]
    assert not math.isnan(h.p_adjusted.iloc[0]) and (h.tested == h.p.notna().sum()).all()
