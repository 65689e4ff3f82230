"""Findings from numbers: each technique's difference to ERM with its uncertainty.

A difference is computed per seed (paired: same seed, same split) and summarised by mean, std, n and
a 95% Student-t confidence interval; it is called significant only when that CI excludes 0
(STUDY-PROTOCOL "Rules for a result to count"). With one seed there is no CI and nothing is called
significant.
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
        verdict = "significant" if d.significant else "not significant"
        unc = f" (95% CI {d.ci_low:+.3f} to {d.ci_high:+.3f}, n={d.n} seeds, {verdict})"
    else:
        unc = " (one seed: no CI, not a finding yet)"
    direction = "better" if better else ("worse" if d.diff != 0 else "equal")
    text = f"{d.arm}: {d.metric} {d.value:.3f} vs {baseline} {d.baseline:.3f}, {d.diff:+.3f} ({direction}){unc}"
    if cost is not None and not math.isnan(cost):
        text += f"; costs {cost:.1f}× ERM per epoch"
    return text


def findings(results_or_table, metrics=("robust_acc", "clean_acc"), baseline: str = "erm") -> list[str]:
    """Headline sentences for every arm against the ``baseline`` arm (ERM by default) on ``metrics``."""
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
