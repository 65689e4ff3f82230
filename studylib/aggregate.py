"""All run records into one table, model selection on validation data, and per-cell statistics.

* :func:`load_runs` — one row per finished run (records that cannot be read are reported, never
  fatal: finished results are never lost because one file is broken).
* :func:`select` — for each (technique, scenario), the arm / hyperparameters with the best mean
  *validation* score (the rule is named in the output); ``oracle=True`` selects on the test metric
  instead and is only ever shown as a labelled reference.
* :func:`cells` — mean, std, n and a 95% t-interval over seeds per (technique, scenario).

Differences to ERM are not made here: every effect against a baseline comes from
:mod:`studylib.claims` (its equal-footing pairing and selection), so that no table can disagree
with a claim's verdict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths
from .config import config_hash
from .records import RecordError, iter_run_records, read_json
from .report import mean_ci

#: the validation metric that selects hyperparameters in each scenario (named in the report)
SELECTION_METRIC = {
    "clean": "val_acc",
    "small_data": "val_acc",
    "label_noise": "val_acc",  # noisy validation labels, as a practitioner would have
    "imbalance": "val_balanced_acc",
    "spurious": "val_worst_group_acc",  # the validation split carries group labels
}
ADVERSARIAL_SELECTION = "val_robust_acc"


def _scenario_key(data: dict) -> str:
    """The data regime of a cell: scenario kind and its settings, plus the dataset when it is not
    digits and any cap on training or test size (runs on different data never share a cell)."""
    scenario = data["scenario"]
    kind = scenario.get("kind", "clean")
    detail = [f"{k}={v}" for k, v in sorted(scenario.items()) if k != "kind"]
    detail += [f"{k}={data[k]}" for k in ("n_train", "n_test") if data.get(k) is not None]
    name = kind if data.get("dataset", "digits") == "digits" else f"{data['dataset']}/{kind}"
    return name if not detail else f"{name}({', '.join(detail)})"


def run_row(config: dict, metrics: dict, directory: Path) -> dict:
    from .claims import family, generic_knobs

    """The flat row of one run record."""
    data = config["data"]
    without_seed = {k: v for k, v in config.items() if k not in ("seed",)}
    row = {
        "study": config["study"], "arm": config["arm"], "technique": config["technique"], "seed": config["seed"],
        "profile": config["profile"], "dataset": data["dataset"], "scenario": data["scenario"]["kind"],
        "scenario_key": _scenario_key(data),
        "hparams": json.dumps(config["hparams"], sort_keys=True),
        "config_key": config_hash(_Plain(without_seed)), "record": str(directory),
        # what studylib.claims pairs on: the generic knobs, the technique family, a declared baseline
        "knobs": generic_knobs(config), "family": family(config), "baseline": config.get("baseline"),
        "role": config.get("role", "headline"),
    }
    row.update({k: v for k, v in metrics.get("metrics", {}).items() if isinstance(v, (int, float))})
    for k, v in (metrics.get("fit", {}).get("selected_val") or {}).items():
        if isinstance(v, (int, float)):
            row[f"sel_{k}"] = v
    return row


class _Plain:
    """Lets :func:`config_hash` hash a plain dict."""

    def __init__(self, d):
        self.d = d

    def model_dump(self, mode="json", exclude=None):
        """The dict without the ``exclude`` keys (pydantic's nested form: {"data": {"root"}})."""
        out = dict(self.d)
        for key, sub in (exclude or {}).items():
            if isinstance(out.get(key), dict):
                out[key] = {k: v for k, v in out[key].items() if k not in sub}
        return out


def load_runs(outputs=None, return_problems: bool = False, study: str | None = None):
    """Every finished run under ``outputs/runs`` (or one study's) as a DataFrame (one row per run)."""
    rows, problems = [], []
    for rec in iter_run_records(outputs, study):
        if not rec.done:
            continue
        try:
            metrics = rec.metrics()
            fit = metrics.setdefault("fit", {})
            if "selected_val" not in fit and "best_epoch" in metrics.get("metrics", {}):
                # records written before selected_val existed: read the selected epoch's row
                row = rec.history()[int(metrics["metrics"]["best_epoch"]) - 1]
                fit["selected_val"] = {k: v for k, v in row.items() if k.startswith("val_")}
            rows.append(run_row(rec.config(), metrics, rec.dir))
        except (RecordError, KeyError, TypeError, IndexError) as e:
            problems.append(f"{rec.dir}: {e}")
    df = pd.DataFrame(rows)
    return (df, problems) if return_problems else df


def load_failures(outputs=None) -> pd.DataFrame:
    """Failed runs (their ``failed.json``) and failed sweep points, with their reasons."""
    rows = []
    for rec in iter_run_records(outputs):
        if rec.failed:
            try:
                cfg, reason = rec.config(), rec.failure()["reason"].splitlines()[0]
                rows.append({"what": "run", "study": cfg.get("study"), "name": f"{cfg.get('arm')} seed {cfg.get('seed')}",
                             "reason": reason, "where": str(rec.dir)})
            except (RecordError, KeyError) as e:
                rows.append({"what": "run", "study": rec.dir.parent.name, "name": rec.dir.name, "reason": str(e),
                             "where": str(rec.dir)})
    for status in sorted((paths.outputs_dir(outputs) / "sweeps").glob("*/status.json")):
        try:
            for r in read_json(status)["results"]:
                if r["status"] != "done":
                    rows.append({"what": "sweep point", "study": r["point"].split(" ")[0], "name": r["point"],
                                 "reason": r.get("reason", ""), "where": str(status)})
        except (RecordError, KeyError, TypeError, IndexError) as e:
            rows.append({"what": "sweep", "study": "", "name": status.parent.name, "reason": str(e), "where": str(status)})
    return pd.DataFrame(rows, columns=["what", "study", "name", "reason", "where"])


def selection_metric(technique: str, scenario: str) -> str:
    """THE model-selection rule, used by the claims, the aggregate tables and the matrix alike:
    validation PGD accuracy for adversarial techniques (their ``adversarial`` flag), otherwise the
    scenario's validation metric (:data:`SELECTION_METRIC`)."""
    from .techniques import get_technique

    return ADVERSARIAL_SELECTION if get_technique(technique).adversarial else SELECTION_METRIC.get(scenario, "val_acc")


def select(df: pd.DataFrame, oracle: bool = False, test_metric: str | None = None) -> pd.DataFrame:
    """For each (technique, scenario key), keep the runs of the candidate configuration (study, arm,
    hyperparameters) with the best mean selection score over seeds. The selection score is the
    scenario's validation metric (``SELECTION_METRIC``), read at the epoch the run itself selected
    on validation; with ``oracle=True`` it is the test metric (a labelled reference only)."""
    if df.empty:
        return df.assign(selected_by=pd.Series(dtype=str))
    out = []
    for (technique, scenario_key), group in df.groupby(["technique", "scenario_key"], sort=True):
        scenario = group.scenario.iloc[0]
        val_metric = selection_metric(technique, scenario)
        if oracle:
            metric = test_metric or {"val_acc": "clean_acc", "val_balanced_acc": "balanced_acc",
                                     "val_worst_group_acc": "worst_group_acc",
                                     "val_robust_acc": "robust_acc"}[val_metric]
            column, rule = metric, f"oracle: best mean test {metric} (reference only)"
        else:
            column, rule = f"sel_{val_metric}", f"validation: best mean {val_metric} over seeds"
        if column not in group or group[column].isna().all():
            column, rule = "sel_val_acc", "validation: best mean val_acc over seeds (fallback)"
        scores = group.groupby("config_key")[column].mean()
        if scores.isna().all():
            scores, rule = scores.fillna(0.0), "no selection score recorded: the first configuration"
        best = scores.idxmax()  # ties: the first in sorted key order, deterministic
        chosen = group[group.config_key == best].assign(selected_by=rule, candidates=len(scores))
        out.append(chosen)
    return pd.concat(out, ignore_index=True)


def cells(selected: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean, std, n and 95% CI over seeds for each (technique, scenario key) and metric (long)."""
    rows = []
    for (technique, scenario_key), g in selected.groupby(["technique", "scenario_key"], sort=True):
        for metric in metrics:
            if metric not in g or g[metric].isna().all():
                continue
            mean, std, n, lo, hi = mean_ci(g[metric])
            rows.append({"technique": technique, "scenario_key": scenario_key, "scenario": g.scenario.iloc[0],
                         "metric": metric, "mean": mean, "std": std, "n": n, "ci_low": lo, "ci_high": hi,
                         "arm": g.arm.iloc[0], "study": g.study.iloc[0], "selected_by": g.selected_by.iloc[0]})
    return pd.DataFrame(rows)


def cost_multiple(selected: pd.DataFrame) -> pd.Series:
    """Training seconds per epoch as a multiple of ERM's in the same study, scenario and seed,
    averaged per (technique, scenario key)."""
    if selected.empty:
        return pd.Series(dtype=float)
    df = selected.assign(per_epoch=selected.train_seconds / selected.epochs_run)
    erm = df[df.technique == "erm"].groupby(["scenario_key", "seed"]).per_epoch.mean()
    key = list(zip(df.scenario_key, df.seed))
    ratio = df.per_epoch.values / np.array([erm.get(k, np.nan) for k in key])
    return pd.Series(ratio, index=df.index).groupby([df.technique, df.scenario_key]).mean()


def report_seeds(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs on report seeds (≥ ``FIRST_REPORT_SEED``) and a line saying which seeds the report
    shows; when there are none (a smoke or test run), every run, with a line saying that these are
    design seeds and nothing in the report is a finding."""
    from .config import FIRST_REPORT_SEED

    report = runs[runs.seed >= FIRST_REPORT_SEED]
    if len(report):
        left = len(runs) - len(report)
        seeds = ", ".join(str(int(s)) for s in sorted(report.seed.unique()))
        return report, (f"report seeds {seeds}"
                        + (f" ({left} runs on design seeds left out)" if left else ""))
    seeds = ", ".join(str(int(s)) for s in sorted(runs.seed.unique()))
    return runs, (f"NO REPORT SEEDS: these runs use design seeds {seeds} (tests, smoke); "
                  "nothing below is a finding")
