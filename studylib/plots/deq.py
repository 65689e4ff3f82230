"""Figures of the DEQ study: gradient obfuscation and solver behaviour."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

GRADIENTS = {"pgd_acc_ift_grad": "PGD, implicit (IFT) gradient", "pgd_acc_unrolled_grad": "PGD, unrolled solver",
             "pgd_acc_naive_grad": "PGD, naive gradient",
             "robust_acc": "worst case (+ APGD, Square on survivors)"}


def attack_table(results) -> pd.DataFrame:
    """Per DEQ run: accuracy under PGD with each attack gradient, and the worst case over every
    attack (the strong attacks run on what PGD left, so they have no standalone number), at the
    probe ε."""
    rows = []
    for r in (r for r in results.runs if r.config.technique == "deq"):
        m = r.metrics["metrics"]
        for key, label in GRADIENTS.items():
            if key in m:
                rows.append({"arm": r.config.arm, "seed": r.config.seed, "attack": label, "acc": m[key],
                             "eps": m.get("probe_eps")})
    return pd.DataFrame(rows)


def gradient_obfuscation(results, ax=None):
    """Accuracy of each DEQ arm under attacks that reach the model differently. A naive gradient
    through the solver that leaves accuracy far above the implicit / unrolled gradient and the
    gradient-free attack is gradient obfuscation, not robustness."""
    df = attack_table(results)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.barplot(data=df, x="arm", y="acc", hue="attack", ax=ax, errorbar=None)
    erm = [r for r in results.runs if r.config.technique == "erm"]
    if erm:
        ax.axhline(erm[0].metrics["metrics"]["robust_acc"], color="0.3", ls="--", lw=1,
                   label="explicit net, PGD (worst case)")
    eps = df.eps.dropna().iloc[0] if len(df) else None
    ax.set(ylabel=f"test accuracy under attack (ε={eps:g})" if eps is not None else "accuracy", ylim=(0, 1),
           title="Attacking through the solver")
    ax.legend(fontsize=8, loc="upper right")
    return ax.figure


def solver_table(results) -> pd.DataFrame:
    """Mean solver steps and relative residual on clean, Gaussian-noise and PGD inputs."""
    rows = []
    for r in results.runs:
        m = r.metrics["metrics"]
        for inputs in ("clean", "noise", "pgd"):
            if f"solver_nstep_{inputs}" in m:
                rows.append({"arm": r.config.arm, "seed": r.config.seed, "inputs": inputs,
                             "solver steps": m[f"solver_nstep_{inputs}"], "residual": m[f"solver_residual_{inputs}"]})
    return pd.DataFrame(rows)


def solver_behaviour(results):
    """Solver steps and residuals on clean vs perturbed inputs, and the validation residual per epoch."""
    df = solver_table(results)
    hist = results.history()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    sns.barplot(data=df, x="arm", y="solver steps", hue="inputs", ax=axes[0], errorbar=None)
    sns.barplot(data=df, x="arm", y="residual", hue="inputs", ax=axes[1], errorbar=None)
    axes[1].set_yscale("log")
    if "val_solver_residual" in hist:
        sns.lineplot(data=hist.dropna(subset=["val_solver_residual"]), x="epoch", y="val_solver_residual",
                     hue="arm", ax=axes[2])
        axes[2].set_yscale("log")
    axes[0].set_title("steps to the fixed point")
    axes[1].set_title("relative residual ‖f(z)−z‖/‖f(z)‖")
    axes[2].set_title("validation residual per epoch")
    fig.tight_layout()
    return fig
