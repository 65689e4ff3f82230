"""Claims: each technique against an ERM on equal footing, with a verdict that survives multiple testing.

A *claim* is "technique T improves metric m over ERM in this study's scenario" (m is T's
``home_metric``; the direction is the literature's: higher accuracy, lower ECE / gap). It is built
from run records only (:func:`studylib.aggregate.load_runs` rows), per (study, profile, scenario):

* **Candidates.** T's candidates are the study's arms with T's technique and hyperparameters (a
  *family*); they may differ only in generic knobs (early stopping, weight decay, optimizer, lr,
  epochs, model size, ...). Each candidate's ERM *twin* is the ERM arm with exactly the same generic
  knobs (the run's ``train`` and ``model`` configs, less the model keys the technique itself sets,
  e.g. the dropout rate or the DEQ solver). ERM's candidates are those twins, so both sides get the
  same knobs and the same number of candidates (DomainBed's equal budget). A candidate without a
  twin makes the claim *unequal*: it is listed with the reason and gets no verdict. An arm may
  instead name its comparison explicitly (``baseline: <arm>`` in the params: e.g. AT + ℓ2 against
  AT alone in the synergy study, TRADES+SAT against TRADES); such a claim compares those two arms.
* **One headline claim per technique and scenario.** A study's headline arms of one technique
  (without a declared baseline) in one scenario are the candidates of ONE claim, whatever their
  hyperparameters; the study's validation numbers choose among them. When they span several
  hyperparameter settings, each setting is also shown on its own as an *exploratory* comparison.
* **Selection.** Each side keeps the candidate with the best mean *validation* score over the
  seeds, by one rule for both sides and for every table of the report
  (:func:`studylib.aggregate.selection_metric`): validation PGD accuracy for adversarial
  techniques, else the scenario's validation metric. Test numbers are never read to choose.
* **Statistics.** The difference on m is paired by seed (same seed = same split and scenario
  draw): mean, std, n, a 95% Student-t CI and a two-sided paired t-test p-value (when every seed
  gives the same difference the t statistic is undefined, and the exact sign-flip test gives the
  p-value instead: 2/2^n for n equal non-zero differences, 1 for none).
* **The family and the verdict.** The claim family is fixed in advance: **the headline claims of
  one study** (arms with ``role: headline``, the default: the study's pre-registered comparisons),
  on one profile. Its p-values are adjusted together by the **Benjamini–Hochberg** procedure
  (false-discovery rate 5%; ``method="holm"`` gives Holm's family-wise control instead), every
  claim with a p-value counted. A claim's verdict therefore depends on its own study's records
  alone, and the study notebook, the synthesis summary, the comparison table and the matrix all
  print the row this module computes. The verdict reads the adjusted p-value: *supported*
  (significant, in the literature's direction), *contradicted* (significant, the other way) or
  *inconclusive* (not significant; the ``detectable`` column gives the effect these seeds would
  detect with 80% power, from the noncentral t distribution). Everything outside the family
  (``role: secondary``: sweep points, the matrix) is *exploratory*: shown with its unadjusted CI and
  no verdict. With one seed there is no verdict.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .aggregate import selection_metric
from .report import LOWER_IS_BETTER, mean_ci
from .techniques import get_technique

ALPHA = 0.05
ADJUSTMENT = "bh"  # Benjamini–Hochberg over each study's headline claims; "holm" for family-wise control
FAMILY = ["study", "profile"]  # the claim family: one study's headline claims on one profile
EXPLORATORY = "exploratory"  # the only word a claim outside the family gets: no verdict
HEADLINE_VERDICTS = ("supported", "contradicted", "inconclusive")
METHOD_NAMES = {"bh": "Benjamini–Hochberg (false-discovery rate 5%)", "holm": "Holm (family-wise error 5%)",
                "none": "none (one study's claims looked at alone)"}


def generic_knobs(config: dict) -> str:
    """The generic knobs of a run as canonical JSON: its ``train`` and ``model`` configs, with the
    model keys its technique sets (``model_overrides``: the dropout rate, the DEQ architecture) and
    its own default batch sampler (Group DRO's group-balanced batches) put back to the defaults,
    which is what ERM has there. Two arms with equal knobs differ only
    in the technique and its hyperparameters."""
    from .config import ModelConfig

    from .techniques import Technique

    technique = get_technique(config["technique"])
    defaults = ModelConfig().model_dump(mode="json")
    model = {k: (defaults[k] if k in technique.model_overrides(config["hparams"]) else v)
             for k, v in config["model"].items()}
    train = dict(config["train"])
    if train.get("sampler") == technique.sampler:  # the technique's own batch sampler (Group DRO's
        train["sampler"] = Technique.sampler       # group-balanced batches) is part of the technique
    return json.dumps({"train": train, "model": model}, sort_keys=True)


def family(config: dict) -> str:
    """The technique and its hyperparameters: the arms of one family differ only in generic knobs."""
    return json.dumps({"technique": config["technique"], "hparams": config["hparams"]}, sort_keys=True)


def claim_selection_metric(technique: str, scenario: str) -> str:
    """The selection rule of a claim: the report's one rule (:func:`studylib.aggregate.selection_metric`)."""
    return selection_metric(technique, scenario)


def _rule(group: pd.DataFrame, arms: list[str], metric: str) -> tuple[str, str]:
    """The selection column for every arm of a claim (both sides together, so they share one rule):
    ``sel_<metric>``, or ``sel_val_acc`` (named in the rule) when an arm did not record it."""
    rows = group[group.arm.isin(arms)]
    column = f"sel_{metric}"
    if column not in rows or rows[column].isna().any():
        return "sel_val_acc", f"val_acc (no {metric} recorded for every arm)"
    return column, metric


def _select(group: pd.DataFrame, arms: list[str], column: str) -> str:
    """The candidate arm with the best mean validation score (``column``) over seeds."""
    scores = group[group.arm.isin(arms)].groupby("arm")[column].mean()
    return scores.loc[sorted(arms)].idxmax()  # ties: the first by name, deterministic


def _distinct_arms(g: pd.DataFrame) -> pd.DataFrame:
    """Arms are named by their config, not their name alone: when one arm name has runs of two
    configurations here (records left by an earlier version of a params file, or a notebook's
    override), each gets its config key as a suffix (``erm@1a2b3c``), so that no two
    configurations are ever averaged as one arm."""
    keys = g.groupby("arm").config_key.nunique()
    clash = set(keys[keys > 1].index)
    if not clash:
        return g
    # a declared baseline that names a split arm no longer matches one arm: that claim is unequal
    return g.assign(arm=g.arm.where(~g.arm.isin(clash), g.arm + "@" + g.config_key.str[:6]))


def _definitions(g: pd.DataFrame) -> list[dict]:
    """The claims of one (study, profile, scenario) group of runs: candidates and baselines."""
    arms = g.groupby("arm").first()
    erm = arms[arms.technique == "erm"]
    out = []
    for arm, a in arms[arms.baseline.notna()].iterrows():
        found = a.baseline in arms.index
        out.append({"technique": a.technique, "label": f"{arm} vs {a.baseline}", "candidates": [arm],
                    "baselines": [a.baseline] if found else [], "role": a.role,
                    "footing": f"declared baseline {a.baseline}" if found
                    else f"unequal: no single finished configuration of baseline arm {a.baseline}"})
    free = arms[(arms.technique != "erm") & arms.baseline.isna()]
    groups = []
    for _, f in free[free.role == "headline"].groupby("technique", sort=True):
        groups.append((f, "headline"))  # one headline claim per technique in this scenario
        if f.family.nunique() > 1:  # several settings: each one also shown alone, exploratory
            groups += [(ff, "secondary") for _, ff in f.groupby("family", sort=True)]
    groups += [(f, "secondary") for _, f in free[free.role != "headline"].groupby("family", sort=True)]
    for f, role in groups:
        candidates = sorted(f.index)
        twins, missing = [], []
        for arm in candidates:
            match = sorted(erm.index[erm.knobs == f.loc[arm, "knobs"]])
            if match:
                twins.append(match[0])
            else:
                missing.append(arm)
        label = candidates[0] if len(candidates) == 1 else f"{f.technique.iloc[0]} ({', '.join(candidates)})"
        footing = ("same knobs: " + ", ".join(f"{c}~{t}" for c, t in zip(candidates, twins)) if not missing
                   else f"unequal: no ERM arm with the generic knobs of {', '.join(missing)}")
        out.append({"technique": f.technique.iloc[0], "label": label, "candidates": candidates,
                    "baselines": sorted(set(twins)) if not missing else [], "footing": footing, "role": role})
    return out


def claims(runs: pd.DataFrame, metrics: dict[str, str] | None = None, method: str = ADJUSTMENT) -> pd.DataFrame:
    """Every claim in ``runs`` (rows of :func:`studylib.aggregate.load_runs`), one row each, with
    the selected arms, the paired difference on the claim's metric (the technique's
    ``home_metric``, or ``metrics[technique]``), its CI, p-value, adjusted p-value (``method``:
    "bh", "holm" or "none") over the headline claims, and the verdict."""
    rows = []
    if runs.empty:
        return pd.DataFrame(rows)
    for (study, profile, scenario_key), g in runs.groupby(["study", "profile", "scenario_key"], sort=True):
        g = _distinct_arms(g)
        scenario = g.scenario.iloc[0]
        for d in _definitions(g):
            technique = get_technique(d["technique"])
            metric = (metrics or {}).get(d["technique"], technique.home_metric)
            row = {"study": study, "profile": profile, "scenario_key": scenario_key, "scenario": scenario,
                   "technique": d["technique"], "claim": d["label"], "role": d["role"], "metric": metric,
                   "direction": "lower" if metric in LOWER_IS_BETTER else "higher", "footing": d["footing"],
                   "candidates": ", ".join(d["candidates"]), "baseline_candidates": ", ".join(d["baselines"])}
            if not d["baselines"] or metric not in g:
                rows.append({**row, "verdict": "unequal footing" if not d["baselines"] else "metric not recorded"})
                continue
            column, rule = _rule(g, d["candidates"] + d["baselines"], claim_selection_metric(d["technique"], scenario))
            arm, base = _select(g, d["candidates"], column), _select(g, d["baselines"], column)
            paired = paired_by_seed(on_shared_heldout(g, arm, base, metric), arm, base, metric)
            if paired.empty:  # e.g. no corruption held out by both arms was evaluated
                rows.append({**row, "arm": arm, "baseline": base, "verdict": "metric not recorded for both arms"})
                continue
            diff = paired.t - paired.b
            mean, std, n, lo, hi = mean_ci(diff)
            p = _paired_p(diff)
            cost = cost_ratio(g, arm, base)
            rows.append({**row, "arm": arm, "baseline": base, "selected_by": f"best mean validation {rule}",
                         "value": float(paired.t.mean()), "baseline_value": float(paired.b.mean()),
                         "diff": mean, "std": std, "n": n, "ci_low": lo, "ci_high": hi,
                         "half_width": (hi - lo) / 2 if n >= 2 else math.nan, "detectable": _detectable(std, n),
                         "p": p,
                         "seeds": ", ".join(str(s) for s in paired.index), "cost_x_baseline": cost})
    out = pd.DataFrame(rows)
    return verdicts(out, method=method)


def paired_by_seed(g: pd.DataFrame, arm: str, base: str, metric: str) -> pd.DataFrame:
    """``metric`` of ``arm`` (column t) and ``base`` (column b) side by side, one row per seed both
    have (same seed = same split and scenario draw)."""
    t = g[g.arm == arm].groupby("seed")[metric].mean()
    b = g[g.arm == base].groupby("seed")[metric].mean()
    return pd.concat({"t": t, "b": b}, axis=1).dropna()


def on_shared_heldout(g: pd.DataFrame, arm: str, base: str, metric: str) -> pd.DataFrame:
    """For ``metric == "corruption_acc_heldout"``: ``g`` with that column recomputed, for every row,
    as the mean over the corruptions that *both* ``arm`` and ``base`` held out of training (their
    ``corruption_acc_heldout@<kind>`` recorded on every seed), so the paired difference compares the
    two on one set — a noise-augmented arm and its ERM twin both without Gaussian noise. Any other
    metric: ``g`` unchanged."""
    if metric != "corruption_acc_heldout":
        return g
    pair = g[g.arm.isin([arm, base])]
    kinds = [c for c in g.columns if c.startswith(metric + "@") and pair[c].notna().all()]
    return g.assign(**{metric: g[kinds].mean(axis=1) if kinds else np.nan})


def _paired_p(diff: pd.Series) -> float:
    """Two-sided p-value of mean(diff) = 0, paired by seed: the paired t-test; NaN below 2 seeds.
    When every seed gives exactly the same difference (accuracies move in steps of 1/n_test, so
    tiny effects can), the t statistic is undefined and the exact sign-flip (randomization) test
    answers instead: 2/2^n for n equal non-zero differences, 1 when they are all zero. Such a claim
    stays in its family (it is counted by the adjustment) and, below 6 seeds, cannot be supported."""
    from scipy import stats

    d = diff.dropna().to_numpy(float)
    if len(d) < 2:
        return math.nan
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else min(1.0, 2.0 / 2 ** len(d))
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def _detectable(std: float, n: int, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The paired effect these seeds detect with ``power`` at level ``alpha`` (unadjusted, two-sided)
    given the observed spread: δ·sd/√n where δ is the noncentrality at which the two-sided one-sample
    t-test on n−1 degrees of freedom has that power (exact, from the noncentral t distribution:
    3.26 sd at n = 3, 1.68 sd at n = 5)."""
    from scipy import optimize, stats

    if n < 2 or not std or math.isnan(std):
        return math.nan
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(delta):
        other_tail = np.nan_to_num(stats.nct.cdf(-crit, df, delta))  # underflows to NaN far out: 0
        return float(stats.nct.sf(crit, df, delta) + other_tail - power)

    delta = optimize.brentq(shortfall, 0.0, 60.0)
    return float(delta * std / math.sqrt(n))


def cost_ratio(g: pd.DataFrame, arm: str, base: str) -> float:
    """Training seconds per epoch of ``arm`` as a multiple of ``base``'s (same seeds)."""
    per_epoch = (g.train_seconds / g.epochs_run) if {"train_seconds", "epochs_run"} <= set(g) else None
    if per_epoch is None:
        return math.nan
    a, b = per_epoch[g.arm == arm].mean(), per_epoch[g.arm == base].mean()
    return float(a / b) if b and not math.isnan(b) else math.nan


def holm(p: pd.Series) -> pd.Series:
    """Holm's step-down adjusted p-values (NaN stays NaN; m = the number of finite p-values)."""
    finite = p.dropna().sort_values()
    m = len(finite)
    adjusted, running = {}, 0.0
    for i, (key, value) in enumerate(finite.items()):
        running = max(running, min(1.0, (m - i) * value))
        adjusted[key] = running
    return pd.Series(adjusted, dtype=float).reindex(p.index)


def benjamini_hochberg(p: pd.Series) -> pd.Series:
    """Benjamini–Hochberg adjusted p-values (q-values): p_(i)·m/i made monotone from the largest
    down (NaN stays NaN; m = the number of finite p-values)."""
    finite = p.dropna().sort_values()
    m = len(finite)
    adjusted, running = {}, 1.0
    for i, (key, value) in reversed(list(enumerate(finite.items(), start=1))):
        running = min(running, value * m / i)
        adjusted[key] = running
    return pd.Series(adjusted, dtype=float).reindex(p.index)


def verdicts(table: pd.DataFrame, method: str = ADJUSTMENT, alpha: float = ALPHA) -> pd.DataFrame:
    """Add ``p_adjusted`` (``method`` within each family: one study's headline claims on one profile;
    exploratory claims keep their raw p), ``tested`` (how many claims their family's adjustment
    covered), ``family``, ``adjustment`` and ``verdict`` (exploratory claims: "exploratory")."""
    if table.empty or "p" not in table:
        return table
    out = table.copy()
    adjust = {"bh": benjamini_hochberg, "holm": holm, "none": lambda p: p}[method]
    out["p_adjusted"] = out.p
    out["tested"] = 0
    out["family"] = out.study + " / " + out.profile
    for _, members in out[out.role == "headline"].groupby(FAMILY, sort=True):
        out.loc[members.index, "p_adjusted"] = adjust(members.p)
        out.loc[members.index, "tested"] = int(members.p.notna().sum())
    out.loc[out.role != "headline", "family"] = EXPLORATORY
    out["adjustment"] = METHOD_NAMES[method]
    verdict = out["verdict"] if "verdict" in out else pd.Series(np.nan, index=out.index, dtype=object)
    for i, r in out.iterrows():
        if isinstance(verdict[i], str):
            continue
        if r.role != "headline":
            v = EXPLORATORY
        elif not (r.n >= 2):
            v = "no verdict (one seed)"
        elif r.p_adjusted < alpha:
            good = (r["diff"] < 0) if r.direction == "lower" else (r["diff"] > 0)
            v = "supported" if good else "contradicted"
        else:
            v = "inconclusive"
        verdict[i] = v
    out["verdict"] = verdict.astype(object)
    return out


def sentence(r) -> str:
    """One line for a claim row: the effect, its CI and the verdict, naming both arms (an
    exploratory comparison gets its CI and no verdict words)."""
    head = f"{r.claim} — {r.metric} in {r.scenario_key}"
    if not isinstance(r.get("arm"), str) or pd.isna(r.get("n")):
        return f"{head}: {r.verdict} ({r.footing})"
    text = (f"{head}: {r.arm} {r.value:.3f} vs {r.baseline} {r.baseline_value:.3f}, {r['diff']:+.3f}")
    if r.n >= 2 and r.role == "headline":
        p = f"adjusted p={r.p_adjusted:.3g} over the {r.tested} headline claims of family {r.family}"
        text += f" (95% CI {r.ci_low:+.3f} to {r.ci_high:+.3f}, n={r.n} seeds, {p}): {r.verdict.upper()}"
        if r.verdict == "inconclusive" and not math.isnan(r.get("detectable", math.nan)):
            text += f"; these seeds detect effects of about ±{r.detectable:.3f} (80% power, unadjusted)"
    elif r.n >= 2:
        text += f" (95% CI {r.ci_low:+.3f} to {r.ci_high:+.3f}, unadjusted, n={r.n} seeds): exploratory, no verdict"
    else:
        text += f": {r.verdict}"
    if not math.isnan(r.get("cost_x_baseline", math.nan)):
        text += f"; costs {r.cost_x_baseline:.1f}× {r.baseline} per epoch"
    return text + f". Selected by {r.selected_by}; {r.footing}."


def ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Headline claims first, then by verdict (supported, contradicted, inconclusive, the rest),
    then by study and claim."""
    if table.empty:
        return table
    rank = {"supported": 0, "contradicted": 1, "inconclusive": 2}
    key = table.assign(_role=(table.role != "headline").astype(int), _verdict=table.verdict.map(rank).fillna(3))
    return key.sort_values(["_role", "_verdict", "study", "claim"]).drop(columns=["_role", "_verdict"])


def without_claim(table: pd.DataFrame) -> list[str]:
    """Techniques of the registry (ERM aside) with no headline claim in ``table``."""
    from .techniques import technique_names

    have = set(table.technique[table.role == "headline"]) if not table.empty else set()
    return [t for t in technique_names() if t != "erm" and t not in have]


def effects(runs: pd.DataFrame, table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Every effect against a baseline that the report shows, long (one row per claim and metric):
    the claim's own selected pair (its equal-footing baseline and validation-only selection),
    paired by seed on the claim's metric and on each of ``metrics``. On the claim's metric the row IS the claim (same mean,
    CI, adjusted p and verdict); on any other metric the difference is a side measurement, and its
    verdict column says "exploratory"."""
    rows = []
    if table.empty or not {"arm", "n"} <= set(table):
        return pd.DataFrame(rows)
    for _, c in table[table.arm.notna() & table.n.notna()].iterrows():
        g = _distinct_arms(runs[(runs.study == c.study) & (runs.profile == c.profile)
                                & (runs.scenario_key == c.scenario_key)])
        base = {"study": c.study, "profile": c.profile, "scenario_key": c.scenario_key, "scenario": c.scenario,
                "technique": c.technique, "claim": c.claim, "role": c.role, "arm": c.arm, "baseline": c.baseline,
                "claim_metric": c.metric}
        for metric in dict.fromkeys([c.metric, *metrics]):  # the claim's own row always, then the side metrics
            if metric == c.metric:
                rows.append({**base, "metric": metric, "value": c.value, "baseline_value": c.baseline_value,
                             "diff": c["diff"], "std": c["std"], "n": c.n, "ci_low": c.ci_low, "ci_high": c.ci_high,
                             "p_adjusted": c.p_adjusted if c.role == "headline" else math.nan,
                             "verdict": c.verdict})
                continue
            if metric not in g or g.loc[g.arm.isin([c.arm, c.baseline]), metric].isna().all():
                continue
            paired = paired_by_seed(on_shared_heldout(g, c.arm, c.baseline, metric), c.arm, c.baseline, metric)
            if paired.empty:
                continue
            mean, std, n, lo, hi = mean_ci(paired.t - paired.b)
            rows.append({**base, "metric": metric, "value": float(paired.t.mean()),
                         "baseline_value": float(paired.b.mean()), "diff": mean, "std": std, "n": n,
                         "ci_low": lo, "ci_high": hi, "p_adjusted": math.nan, "verdict": EXPLORATORY})
    return pd.DataFrame(rows)
