"""Adversarial training vs regularization, side by side: the source question's comparison table
(purpose, approach, impact on the model, computational cost, use cases) with every cell that can be
measured taken from the run records.

One column per technique: PGD adversarial training, the ℓ1 / ℓ2 / elastic-net penalties, dropout,
BatchNorm, and adversarial training combined with ℓ2, dropout or early stopping (the synergy
study). Each is compared with the baseline its own study pairs it with: the equal-footing ERM twin
its claim selected (:mod:`studylib.claims`), AT alone for the combinations, and the same network
without BatchNorm for BatchNorm. The measured rows are paired differences by seed with their 95% CI
(report seeds only, as everywhere in the report); "—" where the study did not record the metric or
the pair has no runs. Purpose and approach are definitions, not measurements; the use-case row is
generated from the measured differences whose CI excludes 0.
"""

from __future__ import annotations

import math

import pandas as pd

from .claims import cost_ratio, paired_by_seed
from .report import LOWER_IS_BETTER, METRIC_WORDS, mean_ci, scenario_words

# label, study, arm, baseline (None: the baseline its claim selected), purpose, approach
ENTRIES = [
    ("PGD adversarial training", "adversarial", "pgd_at", None,
     "robustness to worst-case input perturbations within ε",
     "trains on PGD adversarial examples found at every step (min-max)"),
    ("ℓ2 penalty", "regularization", "l2", None,
     "generalization: smaller weights, smoother functions",
     "adds λ₂‖w‖² to the loss"),
    ("ℓ1 penalty", "regularization", "l1", None,
     "generalization with sparse weights",
     "adds λ₁‖w‖₁ to the loss"),
    ("elastic net", "regularization", "elastic_net", None,
     "generalization: sparsity and shrinkage together",
     "adds λ₁‖w‖₁ + λ₂‖w‖² to the loss"),
    ("dropout (p = 0.5)", "dropout", "dropout_50", None,
     "generalization: no co-adapted units",
     "zeroes each hidden unit with probability p while training"),
    ("BatchNorm", "regularization", "erm", "erm_no_bn",
     "faster, stabler optimisation (a mild regularizer through batch noise)",
     "normalises each layer's activations over the batch"),
    ("AT + ℓ2", "synergy", "at_l2", "at",
     "against robust overfitting",
     "PGD-AT with an ℓ2 penalty"),
    ("AT + dropout", "synergy", "at_dropout", "at",
     "against robust overfitting",
     "PGD-AT with dropout"),
    ("AT + early stopping", "synergy", "at_es", "at",
     "against robust overfitting (Rice et al. 2020)",
     "PGD-AT, keeping the epoch of best validation PGD accuracy"),
]
MEASURED = ["robust_acc", "clean_acc", "gen_gap", "corruption_acc"]


def _pair(runs: pd.DataFrame, claims_table: pd.DataFrame, study: str, arm: str, baseline: str | None):
    """The runs of one study's scenario and the (technique arm, baseline arm) to compare."""
    g = runs[runs.study == study]
    if g.empty:
        return None
    if baseline is None:  # the pair the study's claim selected on validation (its ERM twin)
        c = claims_table[(claims_table.study == study)] if not claims_table.empty else claims_table
        c = c[c.candidates.str.split(", ").apply(lambda xs: arm in xs)] if len(c) else c
        if len(c) and isinstance(c.iloc[0].get("arm"), str):
            arm, baseline, key = c.iloc[0].arm, c.iloc[0].baseline, c.iloc[0].scenario_key
            return g[g.scenario_key == key], arm, baseline
        baseline = "erm"
    g = g[g.scenario_key == g[g.arm == arm].scenario_key.iloc[0]] if (g.arm == arm).any() else g
    return g, arm, baseline


def _diff(g: pd.DataFrame, arm: str, base: str, metric: str):
    if metric not in g or g.loc[g.arm.isin([arm, base]), metric].isna().any():
        return None
    paired = paired_by_seed(g, arm, base, metric)
    return mean_ci(paired.t - paired.b) if len(paired) else None


def _row(metric: str) -> str:
    return f"impact: {METRIC_WORDS.get(metric, metric)}" + (" ↓" if metric in LOWER_IS_BETTER else "")


def _cell(d) -> str:
    if d is None:
        return "—"
    mean, _, n, lo, hi = d
    return f"{mean:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if n >= 2 and not math.isnan(lo) else " (1 seed)")


def _cost(g: pd.DataFrame, arm: str, base: str) -> str:
    ratio = cost_ratio(g, arm, base)
    return "—" if math.isnan(ratio) else f"{ratio:.1f}× per epoch"


def _significant(d, metric: str) -> str | None:
    """'raises clean accuracy' when the CI excludes 0, in the better or the worse direction."""
    if d is None or d[2] < 2 or math.isnan(d[3]) or d[3] <= 0 <= d[4]:
        return None
    better = (d[0] < 0) if metric in LOWER_IS_BETTER else (d[0] > 0)
    word = METRIC_WORDS.get(metric, metric)
    verb = "lowers" if d[0] < 0 else "raises"
    return f"{verb} {word} ({d[0]:+.3f})" + ("" if better else " — a cost")


def comparison(runs: pd.DataFrame, claims_table: pd.DataFrame) -> pd.DataFrame:
    """The comparison table: one column per technique of :data:`ENTRIES`, rows purpose, approach,
    baseline, scenario, the measured impacts (each a paired difference with its 95% CI), cost and
    the use cases generated from the significant impacts."""
    columns = {}
    for label, study, arm, baseline, purpose, approach in ENTRIES:
        found = _pair(runs, claims_table, study, arm, baseline)
        col = {"purpose": purpose, "approach": approach}
        if found is None or not (found[0].arm == found[1]).any() or not (found[0].arm == found[2]).any():
            col.update({"compared with": "not run", "scenario": "—", **{_row(m): "—" for m in MEASURED},
                        "computational cost": "—", "use cases (measured here)": "—"})
            columns[label] = col
            continue
        g, arm, base = found
        diffs = {m: _diff(g, arm, base, m) for m in MEASURED}
        col["compared with"] = f"{base} ({study} study)"
        col["scenario"] = scenario_words(g.scenario_key.iloc[0])
        for m in MEASURED:
            col[_row(m)] = _cell(diffs[m])
        col["computational cost"] = _cost(g, arm, base)
        found_effects = [s for m in MEASURED if (s := _significant(diffs[m], m))]
        n = int(g[g.arm == arm].seed.nunique())
        col["use cases (measured here)"] = ("; ".join(found_effects) if found_effects
                                            else f"no effect told apart from 0 on {n} seed(s)")
        columns[label] = col
    table = pd.DataFrame(columns)
    table.index.name = "row"
    return table
