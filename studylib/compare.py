"""Adversarial training vs regularization, side by side: the source question's comparison table
(purpose, approach, impact on the model, computational cost, use cases) with every cell that can be
measured taken from the run records.

One column per technique: PGD adversarial training, the ℓ1 / ℓ2 / elastic-net penalties, dropout,
BatchNorm, and adversarial training combined with ℓ2, dropout or early stopping (the synergy
study). Every number comes from :mod:`studylib.claims`: each column shows the pair of a claim (the
arm's equal-footing ERM twin, or the baseline the study declares: AT alone for the combinations),
and :func:`studylib.claims.effects` gives its paired differences by seed with their 95% CI (report
seeds only, as everywhere in the report). On the claim's own metric the cell is the claim; the other
impacts are side measurements (exploratory). BatchNorm has no claim (ERM with and without it): its
column is exploratory throughout. The verdict row prints the verdict of the headline claim the arm
belongs to, and the use-case row is generated from that verdict alone — never from a CI of a side
measurement. Purpose and approach are definitions, not measurements.
"""

from __future__ import annotations

import math

import pandas as pd

from .claims import EXPLORATORY, HEADLINE_VERDICTS, cost_ratio, effects, paired_by_seed
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


def _claim_rows(claims_table: pd.DataFrame, study: str, arm: str, baseline: str | None):
    """(the claim whose pair this column shows, the headline claim holding the arm) from the study's
    claims: the pair is the claim with the arm as its only candidate (a declared-baseline claim, or
    the exploratory view of one setting), else the claim holding it; either may be None."""
    if claims_table.empty or not {"candidates", "arm", "n"} <= set(claims_table):
        return None, None
    c = claims_table[(claims_table.study == study) & claims_table.arm.notna() & claims_table.n.notna()]
    if c.empty:
        return None, None
    holds = c[[arm in str(x).split(", ") for x in c.candidates]]
    if baseline is not None:
        holds = holds[holds.baseline_candidates == baseline]
    alone = holds[holds.candidates == arm]
    pair = alone.iloc[0] if len(alone) else (holds.iloc[0] if len(holds) else None)
    head = holds[holds.role == "headline"]
    return pair, (head.iloc[0] if len(head) else None)


def _exploratory_pair(runs: pd.DataFrame, study: str, arm: str, baseline: str) -> pd.DataFrame:
    """The effects of a pair no claim makes (BatchNorm: ERM with and without it), exploratory."""
    g = runs[runs.study == study]
    if not ((g.arm == arm).any() and (g.arm == baseline).any()):
        return pd.DataFrame()
    g = g[g.scenario_key == g[g.arm == arm].scenario_key.iloc[0]]
    rows = []
    for metric in MEASURED:
        if metric not in g or g.loc[g.arm.isin([arm, baseline]), metric].isna().any():
            continue
        paired = paired_by_seed(g, arm, baseline, metric)
        if len(paired):
            mean, std, n, lo, hi = mean_ci(paired.t - paired.b)
            rows.append({"study": study, "scenario_key": g.scenario_key.iloc[0], "claim": None, "role": "none",
                         "arm": arm, "baseline": baseline, "metric": metric, "diff": mean, "std": std, "n": n,
                         "ci_low": lo, "ci_high": hi, "verdict": EXPLORATORY})
    return pd.DataFrame(rows)


def comparison_effects(runs: pd.DataFrame, claims_table: pd.DataFrame) -> pd.DataFrame:
    """The measured source of the comparison table, long: one row per column (``label``) and
    metric, as :func:`studylib.claims.effects` gives it (the claim's own row on its metric)."""
    frames = []
    for label, study, arm, baseline, _, _ in ENTRIES:
        pair, _ = _claim_rows(claims_table, study, arm, baseline)
        if pair is not None:
            e = effects(runs, pair.to_frame().T, MEASURED)
        elif baseline is not None:
            e = _exploratory_pair(runs, study, arm, baseline)
        else:
            e = pd.DataFrame()
        if len(e):
            frames.append(e.assign(label=label))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _row(metric: str) -> str:
    return f"impact: {METRIC_WORDS.get(metric, metric)}" + (" ↓" if metric in LOWER_IS_BETTER else "")


def _cell(e) -> str:
    if e is None:
        return "—"
    text = f"{e['diff']:+.3f}" + (f" [{e.ci_low:+.3f}, {e.ci_high:+.3f}]" if e.n >= 2 and not math.isnan(e.ci_low)
                                   else " (1 seed)")
    return text + (f" — the claim: {e.verdict}" if e.verdict in HEADLINE_VERDICTS else "")


def _verdict(head) -> str:
    if head is None:
        return "no claim (exploratory only)"
    chosen = "" if head.candidates == head.arm else f", {head.arm} selected on validation among {head.candidates}"
    return (f"{head.verdict}: {METRIC_WORDS.get(head.metric, head.metric)} {head['diff']:+.3f} "
            f"[{head.ci_low:+.3f}, {head.ci_high:+.3f}] vs {head.baseline}, adjusted p {head.p_adjusted:.3g} "
            f"in family {head.family}{chosen}")


def _use_case(head) -> str:
    """Generated from the headline claim's verdict only."""
    if head is None:
        return "none established: no claim in the family (exploratory only)"
    word = METRIC_WORDS.get(head.metric, head.metric)
    raises = head["diff"] > 0
    if head.verdict == "supported":
        return f"use it to {'raise' if raises else 'lower'} {word} (supported on {int(head.n)} report seeds)"
    if head.verdict == "contradicted":
        return f"not for {word}: it {'raises' if raises else 'lowers'} it here, against the literature (contradicted)"
    return f"none established: {head.verdict} on {int(head.n)} seeds for {word}"


def comparison(runs: pd.DataFrame, claims_table: pd.DataFrame) -> pd.DataFrame:
    """The comparison table: one column per technique of :data:`ENTRIES`, rows purpose, approach,
    baseline, scenario, the measured impacts (from :func:`comparison_effects`), cost, the verdict of
    the arm's headline claim and the use case generated from that verdict."""
    source = comparison_effects(runs, claims_table)
    columns = {}
    for label, study, arm, baseline, purpose, approach in ENTRIES:
        col = {"purpose": purpose, "approach": approach}
        e = source[source.label == label].set_index("metric") if len(source) else pd.DataFrame()
        if e.empty:
            col.update({"compared with": "not run", "scenario": "—", **{_row(m): "—" for m in MEASURED},
                        "computational cost": "—", "verdict (its headline claim)": "—", "use cases (from verdicts)": "—"})
            columns[label] = col
            continue
        _, head = _claim_rows(claims_table, study, arm, baseline)
        first = e.iloc[0]
        g = runs[(runs.study == study) & (runs.scenario_key == first.scenario_key)]
        col["compared with"] = f"{first.baseline} ({study} study)"
        col["scenario"] = scenario_words(first.scenario_key)
        for m in MEASURED:
            col[_row(m)] = _cell(e.loc[m] if m in e.index else None)
        ratio = cost_ratio(g, first.arm, first.baseline)
        col["computational cost"] = "—" if math.isnan(ratio) else f"{ratio:.1f}× per epoch"
        col["verdict (its headline claim)"] = _verdict(head)
        col["use cases (from verdicts)"] = _use_case(head)
        columns[label] = col
    table = pd.DataFrame(columns)
    table.index.name = "row"
    return table
