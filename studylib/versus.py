"""One technique against every baseline: ``studylib compare TECHNIQUE``.

The technique (built-in or a plugin: :mod:`studylib.techniques.plugins`) becomes one more arm of
the matrix study (``params/matrix.yaml``), which is run in the train-time scenarios of the matrix
sweep (``params/sweeps/matrix.yaml``: clean, small data, label noise, imbalance, spurious) on the
profile's seeds, as a sweep (:mod:`studylib.sweep`). Every run is keyed by its config, so the
matrix's built-in arms that already ran (``make study``) are read back, not retrained: only the new
arm — and an ERM *twin* for any arm whose generic knobs no ERM arm shares (adversarial techniques
select on robust validation accuracy; the DEQ has its own network) — is trained.

The report (``outputs/compare/<technique>-<profile>/report.md``, with ``claims.csv``) gives every
arm's claims, each against its equal-footing ERM twin, from :func:`studylib.claims.claims`
(the one place verdicts are made): once with every technique on the compared technique's home
metric (one axis, one row each), and the compared technique's own claims in sentences. Its claim
in its home scenario is the one pre-registered (headline) claim; every other claim is exploratory,
as in the matrix. On design seeds (the smoke profile) the report says that nothing in it is a
finding.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import paths
from .config import ConfigError, StudyConfig, _read_yaml, load_study, parse_overrides
from .techniques import get_technique
from .techniques.base import undeclared

STUDY = "matrix"
SWEEP = "matrix"  # params/sweeps/matrix.yaml: its matrix job's data.scenario grid is the scenarios


def matrix_scenarios() -> list[dict]:
    """The train-time scenarios of the matrix sweep (``params/sweeps/matrix.yaml``)."""
    path = paths.params_dir() / "sweeps" / f"{SWEEP}.yaml"
    for job in _read_yaml(path, f"sweep {SWEEP}").get("jobs") or []:
        grid = job.get("grid") or {}
        if job.get("study") == STUDY and "data.scenario" in grid:
            return list(grid["data.scenario"])
    raise ConfigError(f"{path}: no {STUDY} job with a data.scenario grid")


@dataclass
class Plan:
    """What ``compare`` runs: the technique's arm and the ERM twins added to the matrix study,
    one sweep point per scenario."""

    technique: str
    arm: str
    profile: str
    overrides: dict  # dotted keys, applied to every scenario
    scenarios: list[dict]
    twins: dict[str, str] = field(default_factory=dict)  # ERM twin arm → the arms it is the twin of
    plugins: list[str] = field(default_factory=list)

    def configs(self) -> list[StudyConfig]:
        return [load_study(STUDY, self.profile, {**self.overrides, "data.scenario": s}) for s in self.scenarios]

    @property
    def home(self) -> str:
        return get_technique(self.technique).home_scenario

    @property
    def name(self) -> str:
        return f"{self.technique}-{self.profile}"


def _knobs(cfg: StudyConfig, arm: str) -> dict:
    from .claims import generic_knobs

    return json.loads(generic_knobs(cfg.run_config(arm, cfg.seeds[0]).model_dump(mode="json")))


def plan(technique: str, profile: str = "quick", hparams: dict | None = None, overrides=None,
         scenarios: list[str] | None = None, plugins: list[str] | None = None) -> Plan:
    """Validate everything (one :class:`ConfigError` line naming what is wrong) before anything
    runs: the technique, its hyperparameters, the overrides and every scenario's study config."""
    try:
        cls = get_technique(technique)
    except KeyError as e:
        raise ConfigError(f"technique: {e.args[0]}") from None
    if technique == "erm":
        raise ConfigError("technique: erm is the baseline every technique is compared with")
    if undeclared(cls):
        raise ConfigError(f"technique {technique!r} does not declare {' and '.join(undeclared(cls))}")
    chosen = matrix_scenarios()
    if scenarios:
        known = [s.get("kind") for s in chosen]
        unknown = [s for s in scenarios if s not in known]
        if unknown:
            raise ConfigError(f"--scenario: {', '.join(unknown)} not in the matrix sweep (known: {', '.join(known)})")
        chosen = [s for s in chosen if s.get("kind") in scenarios]
    from .sweep import _flatten

    flat = _flatten("", parse_overrides(overrides))  # dotted keys, as a sweep file holds them
    base = load_study(STUDY, profile, {**flat, "data.scenario": chosen[0]})
    arm = technique if technique not in base.arms else f"{technique}_compared"
    flat[f"arms.{arm}"] = {"technique": technique, "hparams": dict(hparams or {}), "role": "secondary"}
    if plugins:
        flat["plugins"] = list(plugins)
    cfg = load_study(STUDY, profile, {**flat, "data.scenario": chosen[0]})
    # an ERM twin for every arm whose generic knobs no ERM arm has (claims would call it unequal)
    erm_knobs = [_knobs(cfg, a) for a, c in cfg.arms.items() if c.technique == "erm"]
    defaults = {"model": cfg.model.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")}
    lacking: dict[str, list[str]] = {}  # knobs (JSON) → the arms with them; arms sharing knobs share a twin
    for name, arm_cfg in cfg.arms.items():
        knobs = _knobs(cfg, name)
        if arm_cfg.technique != "erm" and knobs not in erm_knobs:
            lacking.setdefault(json.dumps(knobs, sort_keys=True), []).append(name)
    twins = {}
    for key, arms in lacking.items():
        knobs, twin = json.loads(key), f"erm_like_{arms[0]}"
        twins[twin] = ", ".join(arms)
        flat[f"arms.{twin}"] = {"technique": "erm", **{part: {k: v for k, v in knobs[part].items()
                                                             if v != defaults[part][k]} for part in ("model", "train")}}
    result = Plan(technique, arm, profile, flat, chosen, twins, list(plugins or []))
    for c in result.configs():  # every scenario validates, and every arm has its twin
        for a, arm_cfg in c.arms.items():
            if arm_cfg.technique != "erm" and _knobs(c, a) not in [_knobs(c, e) for e, x in c.arms.items()
                                                                   if x.technique == "erm"]:
                raise ConfigError(f"arms.{a}: no equal-footing ERM twin could be made (its generic knobs)")
    return result


def write_sweep(p: Plan, outputs=None) -> Path:
    """The plan as a sweep file (``outputs/compare/<technique>-<profile>/compare-<...>.yaml``):
    what was compared, rerunnable with ``studylib sweep``."""
    out = paths.outputs_dir(outputs) / "compare" / p.name
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"compare-{p.name}.yaml"
    spec = {"description": f"{p.technique} against the matrix's techniques, profile {p.profile} "
                           f"(written by studylib compare)",
            "profile": p.profile, "overrides": p.overrides,
            "jobs": [{"study": STUDY, "grid": {"data.scenario": p.scenarios}}]}
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def compare(p: Plan, outputs=None, workers: int | None = None, progress: bool = True, on_result=None,
            in_process: bool = False) -> list[dict]:
    """Run the plan: every scenario of the matrix with the technique's arm, reusing every finished
    run record. By default as a sweep (the matrix notebook per scenario, on ``workers`` processes,
    the executed notebooks kept in the study records); ``in_process``: the same runs in this
    process, one after the other, without notebooks (the same run records). Returns a status per
    scenario."""
    if not in_process:
        from .sweep import run_sweep

        return run_sweep(write_sweep(p, outputs), outputs, workers, progress=progress, on_result=on_result)
    import time

    from .study import Study

    write_sweep(p, outputs)  # the record of what was compared, either way
    statuses = []
    for scenario, cfg in zip(p.scenarios, p.configs()):
        t0 = time.perf_counter()
        results = Study(cfg, outputs, progress=progress).run(raise_on_failure=False)
        status = {"point": f"{STUDY} [{p.profile}, {scenario_words_of(scenario)}]", "seconds": time.perf_counter() - t0}
        if results.failed:
            status.update(status="failed", reason="; ".join(f"{rc.arm} seed {rc.seed}: {why}" for rc, why in results.failed))
        else:
            status.update(status="done")
        statuses.append(status)
        if on_result is not None:
            on_result(status)
    return statuses


# -- the report ------------------------------------------------------------------------------------
def runs_table(p: Plan, outputs=None):
    """The finished runs of the plan (its study configs' run records only: not other comparisons'),
    with the compared technique's claim in its home scenario as the one headline claim."""
    import pandas as pd

    from .aggregate import run_row
    from .records import RunRecord

    rows = []
    for cfg in p.configs():
        for rc in cfg.runs():
            rec = RunRecord.for_config(rc, outputs)
            if rec.done:
                rows.append(run_row(rec.config(), rec.metrics(), rec.dir))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["role"] = df.role.where(df.arm != p.arm, "secondary")
    df.loc[(df.arm == p.arm) & (df.scenario == p.home), "role"] = "headline"
    return df


def _cell(r) -> str:
    if not isinstance(r.get("arm"), str):
        return r.verdict
    ci = f" [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" if r.n >= 2 and not math.isnan(r.ci_low) else ""
    return f"{r['diff']:+.3f}{ci} {r.verdict}"


def leaderboard(table, p: Plan):
    """One row per claim (arm) of ``table`` (:func:`studylib.claims.claims` output), one column per
    scenario: the difference to its ERM twin, its 95% CI and verdict; the mean cost multiple. The
    compared technique first."""
    import pandas as pd

    from .report import scenario_short

    if table.empty:
        return pd.DataFrame()
    rows = {}
    for _, r in table.iterrows():
        label = r.claim + (" ← compared" if r.technique == p.technique and r.candidates == p.arm else "")
        row = rows.setdefault(label, {"technique": r.technique})
        row[scenario_short(r.scenario_key)] = _cell(r)
        row.setdefault("_cost", []).append(r.get("cost_x_baseline", math.nan))
    out = []
    for label, row in rows.items():
        costs = [c for c in row.pop("_cost") if isinstance(c, float) and not math.isnan(c)]
        out.append({"claim": label, **row, "cost × ERM twin": f"{sum(costs) / len(costs):.2f}" if costs else "—"})
    df = pd.DataFrame(out).fillna("not run")
    first = df.claim.str.endswith("← compared")
    return pd.concat([df[first], df[~first].sort_values("claim")], ignore_index=True)


def _markdown_table(df) -> list[str]:
    if df.empty:
        return ["(no claims: no finished runs)"]
    cols = list(df.columns)
    return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            + ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)])


def write_report(p: Plan, outputs=None, statuses: list[dict] | None = None) -> Path:
    """``report.md`` and ``claims.csv`` in ``outputs/compare/<technique>-<profile>/``; reads the
    records only."""
    from . import claims as claims_module
    from .aggregate import report_seeds
    from .report import METRIC_WORDS
    from .techniques import plugins

    out = paths.outputs_dir(outputs) / "compare" / p.name
    out.mkdir(parents=True, exist_ok=True)
    cls = get_technique(p.technique)
    runs = runs_table(p, outputs)
    lines = [f"# {p.technique} against every baseline ({p.profile} profile)", ""]
    origin = plugins.origin(p.technique)
    lines += [f"Technique `{p.technique}`: {cls.summary or '(no summary)'} — from {origin['source']}: module "
              f"`{origin['module']}`, distribution {origin.get('distribution') or '—'} "
              f"{origin.get('version') or ''}.".rstrip(),
              f"Its home: {METRIC_WORDS.get(cls.home_metric, cls.home_metric)} (`{cls.home_metric}`) under "
              f"{cls.home_scenario}. Arm `{p.arm}` of the matrix study (`params/matrix.yaml`), in "
              f"{len(p.scenarios)} scenarios: {', '.join(scenario_words_of(s) for s in p.scenarios)}.", ""]
    failed = [s for s in statuses or [] if s["status"] != "done"]
    for s in failed:
        lines.append(f"- FAILED: {s['point']}: {s['reason']}")
    if runs.empty:
        lines += ["No finished runs.", ""]
        (out / "report.md").write_text("\n".join(lines) + "\n")
        return out / "report.md"
    runs, seed_note = report_seeds(runs)
    lines += [f"**Seeds**: {seed_note}.", ""]
    same_axis = claims_module.claims(runs, metrics={t: cls.home_metric for t in runs.technique.unique()})
    own = claims_module.claims(runs)
    own.round(5).to_csv(out / "claims.csv", index=False)
    same_axis.round(5).to_csv(out / f"claims_on_{cls.home_metric}.csv", index=False)
    mine = own[own.technique == p.technique] if not own.empty else own
    lines += ["## Its claims", "",
              f"Against its equal-footing ERM twin in each scenario, on `{cls.home_metric}`; the claim in its home "
              f"scenario ({cls.home_scenario}) is the pre-registered one, the others are exploratory. Verdicts from "
              "`studylib.claims`.", ""]
    lines += [f"- {claims_module.sentence(r)}" for _, r in claims_module.ordered(mine).iterrows()] or ["- none"]
    lines += ["", f"## Every technique on {METRIC_WORDS.get(cls.home_metric, cls.home_metric)} (`{cls.home_metric}`)", "",
              "Each arm against its own equal-footing ERM twin (same generic knobs), each side selected on validation; "
              "cell: paired difference by seed, 95% CI, verdict. Cost: training seconds per epoch as a multiple of the "
              "twin's, averaged over scenarios.", ""]
    lines += _markdown_table(leaderboard(same_axis, p))
    lines += ["", "## Every technique on its own home metric", ""]
    lines += _markdown_table(leaderboard(own, p))
    if len(p.twins):
        lines += ["", "ERM twins added for arms whose generic knobs no ERM arm had: "
                  + "; ".join(f"`{t}` for {a}" for t, a in p.twins.items()) + "."]
    lines += ["", f"Tables: `claims.csv` (each technique on its home metric), `claims_on_{cls.home_metric}.csv`; "
              f"the sweep: `compare-{p.name}.yaml`."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def scenario_words_of(scenario: dict) -> str:
    from .report import scenario_words

    detail = ", ".join(f"{k}={v}" for k, v in sorted(scenario.items()) if k != "kind")
    return scenario_words(f"{scenario['kind']}({detail})" if detail else scenario["kind"])
