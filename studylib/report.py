"""Findings from numbers: each arm's difference to ERM with its uncertainty, and the report's words.

A difference is computed per seed (paired: same seed, same split) and summarised by mean, std, n and
a 95% Student-t confidence interval. These per-arm differences are *exploratory* descriptions of a
study's runs: they carry no verdict words. Verdicts belong to the claims alone
(:mod:`studylib.claims`: equal-footing baselines, validation-only selection, one family per study),
and every view prints the claim's own row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

LOWER_IS_BETTER = {"ece", "mc_ece", "gen_gap", "nll", "train_seconds", "cost_x_erm", "noisy_memorized",
                   "input_grad_norm", "solver_residual_clean", "solver_nstep_clean"}


@dataclass
class Difference:
    arm: str
    metric: str
    value: float  # the arm's mean
    baseline: float  # ERM's mean
    diff: float
    std: float
    n: int
    ci_low: float
    ci_high: float

    @property
    def significant(self) -> bool:
        return self.n >= 2 and (self.ci_low > 0 or self.ci_high < 0)


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, int, float, float]:
    """(mean, std, n, ci_low, ci_high) with a Student-t interval; NaN bounds when n < 2."""
    s = pd.Series(values, dtype=float).dropna()
    n = len(s)
    mean = float(s.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, n, math.nan, math.nan
    std = float(s.std(ddof=1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return mean, std, n, mean - half, mean + half


def differences(table: pd.DataFrame, metric: str, baseline: str = "erm") -> list[Difference]:
    """Each arm's paired (by seed) difference to the ``baseline`` arm on ``metric``."""
    wide = table.pivot_table(index="seed", columns="arm", values=metric, aggfunc="mean")
    if baseline not in wide:
        return []
    out = []
    for arm in wide.columns:
        if arm == baseline:
            continue
        pair = wide[[arm, baseline]].dropna()
        d = pair[arm] - pair[baseline]
        mean, std, n, lo, hi = mean_ci(d)
        out.append(Difference(arm, metric, float(pair[arm].mean()), float(pair[baseline].mean()), mean, std, n, lo, hi))
    return out


def sentence(d: Difference, cost: float | None = None, baseline: str = "ERM") -> str:
    better = (d.diff < 0) if d.metric in LOWER_IS_BETTER else (d.diff > 0)
    if d.n >= 2:
        unc = f" (95% CI {d.ci_low:+.3f} to {d.ci_high:+.3f}, unadjusted, n={d.n} seeds; exploratory)"
    else:
        unc = " (one seed: no CI; exploratory)"
    direction = "better" if better else ("worse" if d.diff != 0 else "equal")
    text = f"{d.arm}: {d.metric} {d.value:.3f} vs {baseline} {d.baseline:.3f}, {d.diff:+.3f} ({direction}){unc}"
    if cost is not None and not math.isnan(cost):
        text += f"; costs {cost:.1f}× ERM per epoch"
    return text


def findings(results_or_table, metrics=("robust_acc", "clean_acc"), baseline: str = "erm") -> list[str]:
    """Descriptive sentences for every arm against the ``baseline`` arm (ERM by default) on
    ``metrics``: exploratory, no verdict (the claims give the verdicts)."""
    table = results_or_table.table(list(metrics)) if hasattr(results_or_table, "table") else results_or_table
    cost = table.groupby("arm").cost_x_erm.mean() if "cost_x_erm" in table else {}
    lines = []
    for metric in metrics:
        if metric not in table or table[metric].isna().all():
            continue
        for d in differences(table, metric, baseline):
            lines.append(sentence(d, cost.get(d.arm) if metric == metrics[0] else None,
                                  "ERM" if baseline == "erm" else baseline))
    return lines


# -- the report's answers-first summary ------------------------------------------------------------
METRIC_WORDS = {"clean_acc": "test accuracy", "robust_acc": "robust accuracy (worst case over attacks)",
                "corruption_acc": "accuracy under corruptions", "balanced_acc": "balanced accuracy",
                "corruption_acc_heldout": "accuracy under the corruptions not trained on",
                "worst_group_acc": "worst-group accuracy", "ece": "calibration error (ECE)",
                "gen_gap": "generalization gap", "nll": "test NLL"}
TECHNIQUE_WORDS = {"fgsm_at": "fast AT (FGSM-RS)", "pgd_at": "PGD adversarial training", "trades": "TRADES",
                   "trades_sat": "TRADES + SAT", "weight_penalty": "weight penalty (L1/L2/elastic net)",
                   "dropout": "dropout", "gaussian_noise_aug": "Gaussian-noise augmentation",
                   "variety_aug": "variety augmentation (shifts, rotations)", "elr": "ELR", "sat": "self-adaptive training",
                   "cw_erm": "class-weighted ERM", "group_dro": "Group DRO", "cvar_dro": "CVaR DRO",
                   "chi2_dro": "χ² DRO", "deq": "deep equilibrium model", "erm": "ERM"}


def parse_scenario_key(key: str) -> tuple[str, str, dict]:
    """``"cifar10/label_noise(noise=symmetric, rate=0.4)"`` → ("cifar10", "label_noise", {...})."""
    dataset, _, rest = key.rpartition("/")
    kind, _, args = rest.partition("(")
    settings = dict(part.split("=", 1) for part in args.rstrip(")").split(", ") if "=" in part)
    return dataset or "digits", kind, settings


def scenario_words(key: str) -> str:
    """A scenario key in plain words: ``label_noise(noise=symmetric, rate=0.4)`` → "40% symmetric
    label noise"."""
    dataset, kind, s = parse_scenario_key(key)

    def pct(v):
        return f"{float(v) * 100:g}%"

    if kind == "clean":
        words = "clean training data"
    elif kind == "small_data":
        words = f"small data ({pct(s.get('fraction', 0.1))} of the training set)"
    elif kind == "label_noise":
        words = f"{pct(s.get('rate', 0.4))} {s.get('noise', 'symmetric')} label noise"
    elif kind == "imbalance":
        words = f"class imbalance, ratio {float(s.get('ratio', 10)):g}"
    elif kind == "spurious":
        words = f"spurious border ({pct(s.get('correlation', 0.95))} aligned with the label)"
    else:
        words = kind
    extra = [f"{k}={v}" for k, v in s.items() if k in ("n_train", "n_test")]
    return f"{words} ({dataset}{', ' + ', '.join(extra) if extra else ''})" if dataset != "digits" or extra else words


def summary_table(claims_table: pd.DataFrame) -> pd.DataFrame:
    """One row per headline claim, in words, sorted by verdict: technique, study (its family),
    scenario, metric, the effect against its baseline with the 95% CI, n, the p-value adjusted
    within the study's family, verdict, cost × baseline. Every value is the claim's own row."""
    if claims_table.empty:
        return pd.DataFrame()
    from .claims import ordered

    rows = []
    for _, r in ordered(claims_table[claims_table.role == "headline"]).iterrows():
        tested = isinstance(r.get("arm"), str) and not pd.isna(r.get("n"))
        rows.append({
            "technique": TECHNIQUE_WORDS.get(r.technique, r.technique) + ("" if r.claim == r.technique else f" [{r.claim}]"),
            "study": r.study,
            "scenario": scenario_words(r.scenario_key),
            "metric": METRIC_WORDS.get(r.metric, r.metric) + (" ↓" if r.direction == "lower" else ""),
            "vs": r.get("baseline", "—") if tested else "—",
            "effect": f"{r['diff']:+.3f}" if tested else "—",
            "95% CI": f"{r.ci_low:+.3f} to {r.ci_high:+.3f}" if tested and r.n >= 2 else "—",
            "n": int(r.n) if tested else 0,
            "adj. p": f"{r.p_adjusted:.3g}" if tested and not math.isnan(r.p_adjusted) else "—",
            "verdict": r.verdict,
            "cost ×": f"{r.cost_x_baseline:.1f}" if tested and not math.isnan(r.cost_x_baseline) else "—",
        })
    return pd.DataFrame(rows)


def how_made(claims_table: pd.DataFrame) -> pd.DataFrame:
    """How each claim was made, one row per claim (headline first): the candidates of each side,
    the ones validation selected and by which rule, the seeds, the effect with its CI, the family and
    its adjusted p, the verdict, and the effect these seeds could detect."""
    if claims_table.empty:
        return pd.DataFrame()
    from .claims import ordered

    def num(v, fmt):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    rows = []
    for _, r in ordered(claims_table).iterrows():
        tested = isinstance(r.get("arm"), str) and not pd.isna(r.get("n"))
        rows.append({
            "study": r.study, "claim": r.claim, "scenario": scenario_short(r.scenario_key),
            "metric": r.metric + (" ↓" if r.direction == "lower" else ""),
            "candidates → selected": f"{r.candidates} → {r.arm}" if tested else r.candidates,
            "ERM side → selected": f"{r.baseline_candidates} → {r.baseline}" if tested else "—",
            "selected by": r.get("selected_by", "—") if tested else "—",
            "seeds": r.get("seeds", "—") if tested else "—",
            "effect [95% CI]": (f"{r['diff']:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" if tested and r.n >= 2
                                else (f"{r['diff']:+.3f}" if tested else "—")),
            "family": r.get("family", "—"),
            "adj. p": num(r.p_adjusted, ".3g") if tested and r.role == "headline" else "—",
            "verdict": r.verdict,
            "detectable (80% power)": "±" + num(r.get("detectable"), ".3f") if tested else "—",
            "footing": r.footing,
        })
    return pd.DataFrame(rows)


def interpretation(claims_table: pd.DataFrame) -> list[str]:
    """A few sentences generated from the claims (never hand-written numbers)."""
    h = claims_table[claims_table.role == "headline"] if not claims_table.empty else claims_table
    if h.empty:
        return ["No headline claims: run the studies first (make study)."]
    counts = h.verdict.value_counts()
    n_seeds = int(h.n.max()) if "n" in h and h.n.notna().any() else 0
    families = h.groupby("family").tested.max() if "family" in h else pd.Series(dtype=int)
    lines = [f"{len(h)} headline claims on {n_seeds} seeds, in {len(families)} families fixed in advance (each "
             f"study's headline claims, adjusted together by {h.adjustment.iloc[0]}): "
             f"{counts.get('supported', 0)} supported, {counts.get('contradicted', 0)} contradicted, "
             f"{counts.get('inconclusive', 0)} inconclusive."]
    tested = h[h.arm.notna() & h.n.notna()] if {"arm", "n"} <= set(h) else h.iloc[0:0]
    sup = tested[tested.verdict == "supported"].sort_values("diff", key=abs, ascending=False)
    if len(sup):
        best = sup.iloc[0]
        lines.append(f"The largest supported effect: {TECHNIQUE_WORDS.get(best.technique, best.technique)} under "
                     f"{scenario_words(best.scenario_key)}, {METRIC_WORDS.get(best.metric, best.metric)} "
                     f"{best['diff']:+.3f} (95% CI {best.ci_low:+.3f} to {best.ci_high:+.3f}) against {best.baseline}"
                     + (f", at {best.cost_x_baseline:.1f}× its training cost per epoch."
                        if not math.isnan(best.cost_x_baseline) else "."))
    con = tested[tested.verdict == "contradicted"]
    for _, r in con.iterrows():
        lines.append(f"Contradicted: {TECHNIQUE_WORDS.get(r.technique, r.technique)} [{r.claim}] lowers "
                     f"{METRIC_WORDS.get(r.metric, r.metric)} under {scenario_words(r.scenario_key)} "
                     f"({r['diff']:+.3f}, 95% CI {r.ci_low:+.3f} to {r.ci_high:+.3f}) — the kit disagrees with "
                     "the literature here.")
    inc = tested[tested.verdict == "inconclusive"]
    if len(inc):
        det = inc.detectable.dropna() if "detectable" in inc else pd.Series(dtype=float)
        lines.append(f"{len(inc)} claims are inconclusive: their differences could not be told from 0 with these "
                     f"seeds" + (f" (the effects they could detect with 80% power range from ±{det.min():.3f} to "
                                 f"±{det.max():.3f})." if len(det) else "."))
    return lines


def markdown(summary: pd.DataFrame, lines: list[str], title: str = "What robust-training techniques buy") -> str:
    """The summary as Markdown (for a README or a paper's appendix): the generated sentences, then
    the table."""
    out = [f"# {title}", "", *lines, ""]
    if not summary.empty:
        cols = list(summary.columns)
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in summary.itertuples(index=False)]
    return "\n".join(out) + "\n"


def scenario_short(key: str) -> str:
    """A scenario key as a short axis label: "label noise 40% sym.", "imbalance ×50"."""
    dataset, kind, s = parse_scenario_key(key)
    label = {"clean": "clean",
             "small_data": f"small data {float(s.get('fraction', 0.1)) * 100:g}%",
             "label_noise": f"label noise {float(s.get('rate', 0.4)) * 100:g}% {s.get('noise', 'symmetric')[:3]}.",
             "imbalance": f"imbalance ×{float(s.get('ratio', 10)):g}",
             "spurious": f"spurious {float(s.get('correlation', 0.95)) * 100:g}%"}.get(kind, kind)
    if "n_train" in s:
        label += f", n={s['n_train']}"
    return label if dataset == "digits" else f"{dataset}: {label}"
