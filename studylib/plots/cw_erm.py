"""Figures of the class-weighting study: per-class recall against the training class size,
balanced accuracy per arm and imbalance ratio, and the class weights each rule uses.

Every function takes ``{label: StudyResults}`` (e.g. ``{"ratio 10": r10, "ratio 50": r50}``) or one
``StudyResults`` and returns a matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def _by_label(results) -> dict:
    if isinstance(results, dict):
        return results
    return {f"ratio {results.cfg.data.scenario.ratio:g}": results}


def _train_counts(r) -> list[int]:
    return r.metrics.get("scenario_info", {}).get("train_class_counts", [])


def recall_table(results) -> pd.DataFrame:
    """Long table: setting, arm, seed, class, training examples of the class, test recall."""
    rows = []
    for label, res in _by_label(results).items():
        for r in res.runs:
            counts = _train_counts(r)
            for c, rec in enumerate(r.metrics["per_class_recall"]):
                rows.append({"setting": label, "arm": r.config.arm, "seed": r.config.seed, "class": c,
                             "n_train": counts[c] if c < len(counts) else None, "recall": rec})
    return pd.DataFrame(rows)


def per_class_recall(results, arms=None):
    """Test recall of each class (x: the class with its training count, head → tail) per arm; one
    panel per setting. Weighting should lift the tail at a small cost to the head."""
    df = recall_table(results)
    if arms is not None:
        df = df[df.arm.isin(arms)]
    settings = list(dict.fromkeys(df.setting))
    fig, axes = plt.subplots(1, len(settings), figsize=(6.5 * len(settings), 3.8), squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        d = df[df.setting == setting].copy()
        counts = d.groupby("class").n_train.first()
        d["class (n_train)"] = d["class"].map(lambda c: f"{c}\n({counts[c]})")
        sns.pointplot(data=d, x="class (n_train)", y="recall", hue="arm", dodge=0.4, errorbar=("ci", 95),
                      markersize=4, linewidth=1.2, ax=ax)
        ax.set(title=f"{setting}: per-class test recall", ylim=(-0.02, 1.02), xlabel="class (training examples)")
        ax.grid(alpha=0.3)
    for ax in axes[0][1:]:
        if ax.get_legend():
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def balanced_accuracy(results, metric: str = "balanced_acc"):
    """Balanced test accuracy (mean per-class recall) per arm, one group of bars per setting."""
    rows = []
    for label, res in _by_label(results).items():
        t = res.table([metric])
        t["setting"] = label
        rows.append(t)
    df = pd.concat(rows, ignore_index=True)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.barplot(data=df, x="setting", y=metric, hue="arm", errorbar=("ci", 95), ax=ax)
    lo = max(0.0, df[metric].min() - 0.1)
    ax.set(ylim=(lo, 1.0), ylabel=metric.replace("_", " "), xlabel="",
           title=f"{metric} on the balanced test split")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, ncol=3)
    return fig


def class_weights(results, seed: int | None = None):
    """Left: the final class weights of every cw_erm arm (log scale; uniform = 1). Right: the weights
    over epochs of the scheduled rules (DRW's switch, the adaptive updates: in the first fit of a
    refit run), one line per class."""
    res = next(iter(_by_label(results).values()))
    seed = res.cfg.seeds[0] if seed is None else seed
    final, over_time = [], []
    for r in res.runs:
        if r.config.seed != seed or r.config.technique != "cw_erm":
            continue
        w = r.metrics["diagnostics"].get("weights", [])
        final += [{"arm": r.config.arm, "class": c, "weight": v} for c, v in enumerate(w)]
        if r.config.hparams["weighting"] in ("drw", "adaptive"):
            # a refit adaptive run holds its weights fixed: their course is its first fit's
            for row in r.metrics["diagnostics"].get("first_fit", {}).get("history", r.history):
                over_time += [{"arm": r.config.arm, "epoch": row["epoch"], "class": str(c),
                               "weight": row[f"w_{c}"]} for c in range(len(w)) if f"w_{c}" in row]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    if final:
        sns.barplot(data=pd.DataFrame(final), x="class", y="weight", hue="arm", ax=axes[0])
        axes[0].set(yscale="log", title="final class weights (sum = number of classes)")
        axes[0].axhline(1.0, color="0.3", lw=0.8, ls="--")
        axes[0].legend(fontsize=8)
    if over_time:
        d = pd.DataFrame(over_time)
        sns.lineplot(data=d, x="epoch", y="weight", hue="class", style="arm", palette="viridis", ax=axes[1])
        axes[1].set(yscale="log", title="weights over epochs (DRW, adaptive)")
        axes[1].legend(fontsize=7, ncol=2)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
