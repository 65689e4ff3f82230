"""Figures of the synthesis report: the technique × scenario matrix and the trade-offs."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

LOWER_IS_BETTER = {"ece", "gen_gap", "cost_x_erm"}


def heatmaps(cells: pd.DataFrame, metrics: list[str], ncols: int = 3):
    """One heatmap per scorecard axis: techniques (rows) × scenarios (columns), mean over seeds of
    the validation-selected configuration; annotated with the mean (and n)."""
    from ..report import scenario_short

    metrics = [m for m in metrics if m in set(cells.metric)]
    cells = cells.assign(scenario_key=cells.scenario_key.map(scenario_short))  # short, readable axis labels
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 0.42 * cells.technique.nunique() * nrows + 1.5 * nrows),
                             squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        wide = cells[cells.metric == metric].pivot_table(index="technique", columns="scenario_key", values="mean")
        cmap = "rocket" if metric in LOWER_IS_BETTER else "rocket_r"
        # seaborn draws the whole figure inside each heatmap call (to check its tick labels for
        # overlap): with the other panels hidden meanwhile, each panel is drawn once, not once per
        # panel after it (7 panels: 7 draws instead of 28, the report's slowest figure)
        others = [a for a in axes.flat if a is not ax and a.get_visible()]
        for a in others:
            a.set_visible(False)
        sns.heatmap(wide, annot=True, fmt=".2f", cmap=cmap, cbar=False, ax=ax, annot_kws={"fontsize": 7},
                    vmin=0 if metric not in LOWER_IS_BETTER else None)
        for a in others:
            a.set_visible(True)
        ax.set_title(metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""), fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", labelsize=8)
        plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def tradeoffs(cells: pd.DataFrame, cost: pd.Series):
    """Clean vs robust accuracy (clean scenario) and home-scenario accuracy vs training cost."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    wide = cells.pivot_table(index=["technique", "scenario_key"], columns="metric", values="mean").reset_index()
    clean = wide[wide.scenario_key == "clean"]
    if {"clean_acc", "robust_acc"} <= set(clean.columns):
        sns.scatterplot(data=clean, x="clean_acc", y="robust_acc", hue="technique", s=70, ax=axes[0], legend=False)
        for _, r in clean.iterrows():
            axes[0].annotate(r.technique, (r.clean_acc, r.robust_acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].set(title="Clean vs robust accuracy (clean scenario)", xlabel="clean accuracy", ylabel="robust accuracy (worst case)")
    if len(cost):
        c = cost.rename("cost_x_erm").reset_index()
        acc = wide[["technique", "scenario_key", "clean_acc"]] if "clean_acc" in wide else None
        if acc is not None:
            c = c.merge(acc, on=["technique", "scenario_key"])
            sns.scatterplot(data=c, x="cost_x_erm", y="clean_acc", hue="scenario_key", style="scenario_key", s=60, ax=axes[1])
            for _, r in c.iterrows():
                axes[1].annotate(r.technique, (r.cost_x_erm, r.clean_acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
            axes[1].set_xscale("log")
            axes[1].legend(fontsize=7)
    axes[1].set(title="Accuracy vs training cost", xlabel="cost per epoch, × ERM (log)", ylabel="clean accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _short(key: str) -> str:
    from ..report import scenario_short

    return scenario_short(key)


def effects(diffs: pd.DataFrame, metric: str, ax=None):
    """Each technique's difference to ERM on ``metric`` per scenario, with its 95% CI."""
    d = diffs[diffs.metric == metric].copy()
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.35 * max(4, len(d)) + 1))
    d["label"] = (d.claim if "claim" in d else d.technique) + " · " + d.scenario_key.map(_short)
    d = d.sort_values("diff")
    ax.errorbar(d["diff"], d.label, xerr=[(d["diff"] - d.ci_low).fillna(0), (d.ci_high - d["diff"]).fillna(0)],
                fmt="o", color="0.2", ecolor="0.6", capsize=3)
    ax.axvline(0, color="red", lw=1)
    ax.set(xlabel=f"difference to ERM in {metric} (95% CI over seeds)", title=f"Effect on {metric}")
    ax.grid(alpha=0.3)
    return ax.figure


SCENARIO_ORDER = ["clean", "small_data", "label_noise", "imbalance", "spurious"]


def matrix_effects(diffs: pd.DataFrame, metric: str):
    """The matrix study on one scorecard axis: techniques (rows) × train-time scenarios (columns),
    each cell the matrix claim's difference to its equal-footing ERM twin (mean over seeds, from
    :func:`studylib.claims.effects`). Exploratory: no cell is marked significant (the matrix is
    outside every claim family; its CIs are in the CSV). Coloured by benefit: green helps, red
    hurts, for lower-is-better axes too."""
    from ..report import METRIC_WORDS, parse_scenario_key, scenario_short

    d = diffs[diffs.metric == metric].copy()
    if d.empty:
        return None
    kinds = {k: parse_scenario_key(k)[1] for k in d.scenario_key.unique()}
    order = sorted(kinds, key=lambda k: (SCENARIO_ORDER.index(kinds[k]) if kinds[k] in SCENARIO_ORDER else 99, k))
    sign = -1 if metric in LOWER_IS_BETTER else 1
    value = d.pivot_table(index="claim" if "claim" in d else "technique", columns="scenario_key", values="diff").reindex(columns=order)
    labels = value.map(lambda v: "" if pd.isna(v) else f"{v:+.2f}")
    value.columns = [scenario_short(k) for k in value.columns]
    bound = max(0.02, float(value.abs().max().max()) if value.notna().any().any() else 0.02)
    fig, ax = plt.subplots(figsize=(1.35 * len(order) + 2.6, 0.33 * len(value) + 1.3))
    sns.heatmap(sign * value, annot=labels.values, fmt="", cmap="RdYlGn", center=0, vmin=-bound, vmax=bound,
                cbar=False, ax=ax, annot_kws={"fontsize": 8}, linewidths=0.5, linecolor="white")
    words = METRIC_WORDS.get(metric, metric)
    ax.set_title(f"{words}: difference to ERM" + (" (lower is better)" if sign < 0 else "")
                 + " · exploratory", fontsize=10)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="both", labelsize=8)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", rotation_mode="anchor")
    fig.tight_layout()
    return fig


def save(fig, path):
    """Write ``fig`` as PNG (for the HTML report and READMEs) and SVG (for papers) at ``path``
    without its suffix, close it, and return the PNG as an ``IPython.display.Image``: a notebook
    shows the file just written (as the cell's value, or through ``display``) instead of rendering
    the figure a third time for its inline output."""
    from pathlib import Path

    from IPython.display import Image

    path = Path(path)
    fig.savefig(path.with_suffix(".png"), dpi=110, bbox_inches="tight")
    fig.savefig(path.with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)
    return Image(filename=str(path.with_suffix(".png")))
