"""Figures of the DRO study: validation accuracy of each group over epochs, the Group DRO weights q
over epochs, and worst-group against average accuracy on the test split.

Every function takes a :class:`studylib.StudyResults` and returns a matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def _group_names(results) -> list[str]:
    if results.runs:
        return list(results.runs[0].metrics.get("group_names") or [])
    return []


def _long(hist: pd.DataFrame, prefix: str, names: list[str], value: str) -> pd.DataFrame:
    cols = [c for c in hist.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    d = hist.melt(id_vars=["arm", "seed", "epoch"], value_vars=cols, var_name="group", value_name=value).dropna()
    d["group"] = d.group.map(lambda c: int(c[len(prefix):]))
    d["group"] = d.group.map(lambda g: f"{g}: {names[g]}" if g < len(names) else str(g))
    return d


def group_accuracy_curves(results, arms=None):
    """Validation accuracy of each group per epoch (one panel per arm). The minority groups
    (label group against the border) are where ERM fails; the curves show when each arm learns them
    and whether it forgets them again."""
    hist = results.history()
    arms = [a for a in (arms or results.arms) if a in set(hist.arm)]
    d = _long(hist[hist.arm.isin(arms)], "val_group_acc_", _group_names(results), "accuracy")
    n = len(arms)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.1 * rows), squeeze=False, sharey=True)
    for ax, arm in zip(axes.flat, arms):
        sns.lineplot(data=d[d.arm == arm], x="epoch", y="accuracy", hue="group", errorbar=("ci", 95), ax=ax,
                     legend=arm == arms[0])
        ax.set(title=arm, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if axes.flat[0].get_legend():
        sns.move_legend(axes.flat[0], "lower right", fontsize=7, title=None)
    fig.suptitle("validation accuracy per group over epochs", fontsize=10)
    fig.tight_layout()
    return fig


def q_weights(results, arms=None):
    """Group DRO's weights q_g at the end of each epoch (one panel per Group DRO arm): mass moves to
    the groups with the highest training loss. With group-balanced batches the minority groups' few
    images are drawn over and over and memorised first, so that is not always a minority group."""
    hist = results.history()
    if arms is None:
        arms = [r.config.arm for r in results.runs if r.config.technique == "group_dro"]
        arms = list(dict.fromkeys(arms))
    d = _long(hist[hist.arm.isin(arms)], "q_", _group_names(results), "q")
    n = max(1, len(arms))
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n, 3.2), squeeze=False, sharey=True)
    for ax, arm in zip(axes[0], arms):
        sns.lineplot(data=d[d.arm == arm], x="epoch", y="q", hue="group", errorbar=("ci", 95), ax=ax,
                     legend=arm == arms[0])
        ax.set(title=f"{arm}: q per epoch", ylim=(0, 1))
        ax.grid(alpha=0.3)
    if arms and axes[0][0].get_legend():
        sns.move_legend(axes[0][0], "upper left", fontsize=7, title=None)
    fig.tight_layout()
    return fig


def worst_vs_average(results):
    """Left: worst-group against average-group test accuracy per arm (seeds as points; the diagonal
    is a model equally good on every group). Right: test accuracy of each group per arm."""
    t = results.table(["worst_group_acc", "avg_group_acc", "clean_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ax = axes[0]
    sns.scatterplot(data=t, x="avg_group_acc", y="worst_group_acc", hue="arm", style="arm", s=70, ax=ax)
    lo = min(t.worst_group_acc.min(), t.avg_group_acc.min()) - 0.05
    ax.plot([lo, 1], [lo, 1], color="0.5", lw=0.8, ls="--")
    ax.set(xlim=(lo, 1.0), ylim=(lo, 1.0), xlabel="average group accuracy (unweighted mean of the 4 groups)",
           ylabel="worst-group accuracy", title="worst group vs average (test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    names = _group_names(results)
    rows = [{"arm": r.config.arm, "seed": r.config.seed, "group": f"{g}: {names[g]}" if g < len(names) else str(g),
             "accuracy": a}
            for r in results.runs for g, a in enumerate(r.metrics["group_acc"]) if a is not None]
    sns.barplot(data=pd.DataFrame(rows), x="arm", y="accuracy", hue="group", errorbar=("ci", 95), ax=axes[1])
    axes[1].set(ylim=(0, 1.02), title="test accuracy per group", xlabel="")
    plt.setp(axes[1].get_xticklabels(), rotation=30, ha="right")
    axes[1].legend(fontsize=7, loc="lower left")
    axes[1].grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
