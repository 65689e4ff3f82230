"""Choose a setting of one arm on validation, on design seeds only: the check behind a params comment.

    python tools/design_check.py matrix l2 hparams.l2 1e-4 1e-3 1e-2 --profile quick --matrix-scenarios

For each scenario (the study's own, or with ``--matrix-scenarios`` the five of the main job's matrix),
each design seed and each value, the arm is trained (``fit`` only: no scorecard, no attacks) and the
varied arm's selection metric in that scenario (``studylib.aggregate.selection_metric``) is read on
validation at the epoch each run itself selected. Prints one line per run, then per scenario the
mean over seeds of each value and of the baseline arm (``--baseline``, ``erm`` by default; it must
pick its epoch by the arm's rule), best first. Test numbers are never read. Seeds ≥ 1000 (report
seeds) are refused.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import yaml

from studylib.aggregate import selection_metric
from studylib.config import FIRST_REPORT_SEED, load_study
from studylib.data import make_data
from studylib.paths import params_dir
from studylib.sweep import load_sweep
from studylib.train import fit

# the five scenarios of the main job's matrix, read from its sweep file (params/sweeps/quick.yaml)
MATRIX_SCENARIOS = {p.overrides_dict["data.scenario"]["kind"]: p.overrides_dict["data.scenario"]
                    for p in load_sweep(params_dir() / "sweeps" / "quick.yaml")[2] if p.study == "matrix"}


def validation_score(study: str, profile: str, arm: str, seed: int, overrides: dict, rule: str) -> float:
    cfg = load_study(study, profile, {"seeds": [seed], **overrides}).run_config(arm, seed)
    result = fit(cfg, make_data(cfg.data, seed), progress=False)
    return result.history[result.best_epoch - 1][rule]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study")
    ap.add_argument("arm")
    ap.add_argument("key", help="the arm's setting to vary, relative to the arm (e.g. hparams.l2)")
    ap.add_argument("values", nargs="+", help="YAML values")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--matrix-scenarios", action="store_true", help="the five scenarios of the main job's matrix")
    ap.add_argument("--baseline", default="erm", help="the arm shown beside the values ('' for none); it must "
                    "select its epoch by the varied arm's rule (matrix adversarial arms: erm_sel_robust)")
    args = ap.parse_args()
    if max(args.seeds) >= FIRST_REPORT_SEED:
        raise SystemExit(f"design seeds only (< {FIRST_REPORT_SEED}): report seeds are never used to choose a setting")
    scenarios = MATRIX_SCENARIOS if args.matrix_scenarios else {"own": None}
    values = [yaml.safe_load(v) for v in args.values]
    candidates = [(f"{args.arm} {args.key}={v}", args.arm, {f"arms.{args.arm}.{args.key}": v}) for v in values]
    if args.baseline:
        candidates.append((args.baseline, args.baseline, {}))
    # every candidate in every scenario resolves before anything trains (a bad study, arm, key or value:
    # one line), and all are read on ONE metric: the varied arm's selection rule in that scenario
    rules, epoch_rule = {}, {}
    for name, scenario in scenarios.items():
        extra = {"data.scenario": scenario} if scenario else {}
        for label, arm, overrides in candidates:
            try:
                rc = load_study(args.study, args.profile, {**extra, **overrides}).run_config(arm, args.seeds[0])
            except Exception as e:
                raise SystemExit(f"design_check: {label}: {e}") from None
            if arm == args.arm:
                rules[name] = selection_metric(rc.technique, rc.data.scenario.kind)
                epoch_rule[name] = rc.train.select
            elif rc.train.select != epoch_rule[name]:  # equal footing: the same rule picks both epochs
                raise SystemExit(f"design_check: the baseline {arm!r} picks its epoch by {rc.train.select}, the arm "
                                 f"by {epoch_rule[name]}: pass --baseline with an arm that selects like it")
    torch.set_num_threads(1)
    scores: dict[tuple[str, str], list[float]] = {}
    for name, scenario in scenarios.items():
        extra = {"data.scenario": scenario} if scenario else {}
        for seed in args.seeds:
            for label, arm, overrides in candidates:
                score = validation_score(args.study, args.profile, arm, seed, {**extra, **overrides}, rules[name])
                scores.setdefault((name, label), []).append(score)
                print(f"{name:11s} seed {seed} {label:28s} {rules[name]} {score:.4f}", flush=True)
    print(f"\nmean over design seeds {args.seeds}, best first")
    for name in scenarios:
        ranked = sorted(((statistics.mean(scores[(name, label)]), label) for label, _, _ in candidates), reverse=True)
        print(f"{name:11s} {rules[name]}: " + ", ".join(f"{label} {mean:.4f}" for mean, label in ranked))


if __name__ == "__main__":
    main()
