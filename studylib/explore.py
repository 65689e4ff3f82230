"""Interactive explorers (ipywidgets) for JupyterLab. In a batch run (papermill through studylib,
nbval: ``STUDYLIB_BATCH=1``) no widget is built: the explorer shows its initial view as plain
output, which is what a static copy of the notebook can show anyway (widgets need a live kernel),
and it keeps widget traffic out of batch executions (nbclient's capture of a widget's output hung
an execution in the test suite)."""

from __future__ import annotations

import os

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from . import attacks
from .plots import _image


def eps_explorer(results, seed: int | None = None, steps: int = 20):
    """Sliders for ε and the test example, a menu for the model attacked: shows the clean input,
    the perturbation, the adversarial input, and every arm's prediction on it (does an attack
    crafted against one model transfer to the others?)."""
    data = results.data(seed)
    models = {arm: results.model(arm, seed) for arm in results.arms if _has(results, arm, seed)}
    grid = results.cfg.eval.eps
    eps = widgets.FloatSlider(value=results.cfg.eval.main_eps, min=0.0, max=max(grid), step=0.01,
                              description="ε", continuous_update=False)
    index = widgets.IntSlider(value=0, min=0, max=len(data.test) - 1, description="example", continuous_update=False)
    source = widgets.Dropdown(options=list(models), description="attack on")

    def show(eps, index, source):
        x, y = data.test.x[index:index + 1], data.test.y[index:index + 1]
        torch.manual_seed(0)
        x_adv = attacks.pgd(models[source], x, y, eps, steps=steps)
        preds = {arm: (attacks.predict(m, x).argmax(1).item(), attacks.predict(m, x_adv).argmax(1).item())
                 for arm, m in models.items()}
        fig, axes = plt.subplots(1, 3, figsize=(7, 2.4))
        _image(axes[0], x[0], f"clean, label {y.item()}")
        delta = (x_adv - x)[0]
        _image(axes[1], (delta / (2 * max(eps, 1e-8)) + 0.5).clamp(0, 1), "perturbation (scaled)")
        _image(axes[2], x_adv[0], f"PGD-{steps} on {source}, ε={eps:.2f}")
        fig.tight_layout()
        plt.show()
        print("arm: clean → adversarial prediction  (label %d)" % y.item())
        for arm, (pc, pa) in preds.items():
            print(f"  {arm:10s} {pc} → {pa}{'' if pa == y.item() else '   ✗'}")

    return _interactive(show, eps=eps, index=index, source=source)


def _interactive(show, **controls):
    """``widgets.interactive(show, **controls)`` in a live notebook; in a batch run, ``show`` called
    once with the controls' initial values (returns None)."""
    if os.environ.get("STUDYLIB_BATCH") == "1":
        show(**{name: control.value for name, control in controls.items()})
        return None
    return widgets.interactive(show, **controls)


def _has(results, arm, seed):
    try:
        results.run(arm, seed)
        return True
    except KeyError:
        return False


def matrix_explorer(cells):
    """Pick a technique, a scenario and a metric: shows that cell (mean, std, n, CI, the arm and
    the selection rule) and the metric across scenarios for the technique."""
    import pandas as pd

    techniques = sorted(cells.technique.unique())
    scenarios = sorted(cells.scenario_key.unique())
    metrics = sorted(cells.metric.unique())
    technique = widgets.Dropdown(options=techniques, description="technique")
    scenario = widgets.Dropdown(options=scenarios, description="scenario")
    metric = widgets.Dropdown(options=metrics, value="clean_acc" if "clean_acc" in metrics else metrics[0],
                              description="metric")

    def show(technique, scenario, metric):
        cell = cells[(cells.technique == technique) & (cells.scenario_key == scenario) & (cells.metric == metric)]
        if cell.empty:
            print(f"no result for {technique} in {scenario}")
        else:
            r = cell.iloc[0]
            ci = "" if r.n < 2 else f", 95% CI [{r.ci_low:.3f}, {r.ci_high:.3f}]"
            print(f"{technique} · {scenario} · {metric}: {r['mean']:.3f} (n={r.n}{ci}); arm {r.arm} of study "
                  f"{r.study}; {r.selected_by}")
        across = cells[(cells.technique == technique) & (cells.metric == metric)][["scenario_key", "mean", "n"]]
        print(pd.DataFrame(across).set_index("scenario_key").round(3).to_string())

    return _interactive(show, technique=technique, scenario=scenario, metric=metric)
