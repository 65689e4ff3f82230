"""The DEQ's training cost per epoch relative to its explicit counterpart (the DEQ study's ``erm``:
the cnn with the DEQ's channels), and what a cheaper solver setting gives up: clean validation
accuracy and the solver's relative residual. Prints one line per setting and seed, then the mean per
setting; nothing is asserted (issue target: ≤ 6× the explicit net per epoch, validation accuracy
within 1 point of the former setting, Anderson 12 with the implicit backward).

Design seeds only (0–999; the report seeds ≥ 1000 are never looked at while choosing). The DEQ
study's quick profile (10 epochs on digits), one thread, each fit in turn, the explicit net timed
right before and after each DEQ fit (the ratio uses their mean). Usage:

    python benchmarks/deq_cost.py [--seeds 0 1 2] [--settings anderson12_ift fpi8_phantom2 ...] [--epochs 10]
    python benchmarks/deq_cost.py --matrix [--seeds 0 1 2] [--scenarios clean small_data ...]

``--matrix`` checks a setting for the matrix's DEQ arm instead (the matrix's quick profile: Anderson
10 with the implicit backward today), in each of the main job's five scenarios: whole runs (fit,
scorecard with its three-gradient PGD side metric, solver statistics), timed end to end, with the
scenario's selection metric on validation at the epoch the run selected. Test numbers of design
seeds are printed for the attack's strength (robust accuracy should not rise with a cheaper solver).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from studylib.config import load_study
from studylib.data import make_data
from studylib.paths import params_dir
from studylib.sweep import load_sweep
from studylib.train import fit

# the DEQ study's `deq` arm's solver settings, each in full (so they do not depend on what the quick
# profile holds today: fixed-point 8 + phantom 2, chosen with this script; before it, Anderson 12 + IFT)
_ANDERSON12 = {"solver": "anderson", "max_iter": 12, "grad": "ift"}
SETTINGS = {
    "anderson12_ift": _ANDERSON12,  # the former setting: the reference the others are compared with
    "anderson12_phantom5": {**_ANDERSON12, "grad": "phantom", "phantom_steps": 5},
    "fpi12_ift": {**_ANDERSON12, "solver": "fixed_point_iter"},
    "fpi12_phantom5": {**_ANDERSON12, "solver": "fixed_point_iter", "grad": "phantom", "phantom_steps": 5},
    "fpi8_phantom3": {"solver": "fixed_point_iter", "max_iter": 8, "grad": "phantom", "phantom_steps": 3},
    "fpi8_phantom2": {"solver": "fixed_point_iter", "max_iter": 8, "grad": "phantom", "phantom_steps": 2},
    "fpi6_phantom2": {"solver": "fixed_point_iter", "max_iter": 6, "grad": "phantom", "phantom_steps": 2},
}

def one(arm: str, hparams: dict, seed: int, epochs: int) -> dict:
    overrides = {"seeds": [seed], "train.epochs": epochs, **{f"arms.deq.hparams.{k}": v for k, v in hparams.items()}}
    cfg = load_study("deq", "quick", overrides).run_config(arm, seed)
    result = fit(cfg, make_data(cfg.data, seed), progress=False)
    selected = result.history[result.best_epoch - 1]
    return {"s_per_epoch": result.seconds_per_epoch, "val_acc": selected["val_acc"],
            "residual": result.history[-1].get("val_solver_residual", float("nan")),
            "nstep": result.history[-1].get("val_solver_nstep", float("nan"))}


# the five scenarios of the main job's matrix, read from its sweep file (params/sweeps/quick.yaml)
MATRIX_SCENARIOS = {p.overrides_dict["data.scenario"]["kind"]: p.overrides_dict["data.scenario"]
                    for p in load_sweep(params_dir() / "sweeps" / "quick.yaml")[2] if p.study == "matrix"}
# settings of the matrix's deq arm on top of its quick profile (Anderson 10, IFT backward, unroll 10)
MATRIX_SETTINGS = {
    "current": {},
    "fpi8_phantom2": {"solver": "fixed_point_iter", "max_iter": 8, "grad": "phantom", "phantom_steps": 2},
}


def one_matrix_run(scenario: str, hparams: dict, seed: int) -> dict:
    """One whole matrix DEQ run (what the main job's worker does for it), timed end to end."""
    import time

    from studylib.aggregate import selection_metric
    from studylib.evaluate import scorecard

    overrides = {"seeds": [seed], "data.scenario": MATRIX_SCENARIOS[scenario],
                 **{f"arms.deq.hparams.{k}": v for k, v in hparams.items()}}
    cfg = load_study("matrix", "quick", overrides).run_config("deq", seed)
    t0 = time.perf_counter()
    data = make_data(cfg.data, seed)
    result = fit(cfg, data, progress=False)
    card = scorecard(result.model, data, cfg, result.technique)
    card["metrics"].update(result.technique.score(result.model, data))
    seconds = time.perf_counter() - t0
    selected = result.history[result.best_epoch - 1]
    m = card["metrics"]
    rule = selection_metric("deq", cfg.data.scenario.kind)
    return {"seconds": seconds, "train_seconds": result.train_seconds, "val": selected[rule], "rule": rule,
            "residual": result.history[-1].get("val_solver_residual", float("nan")),
            "robust_acc": m.get("robust_acc", float("nan")), "clean_acc": m.get("clean_acc", float("nan"))}


def matrix(args) -> None:
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for scenario in args.scenarios:
            for name in MATRIX_SETTINGS:
                r = one_matrix_run(scenario, MATRIX_SETTINGS[name], seed)
                r["scenario"] = scenario
                rows.setdefault(name, []).append(r)
                print(f"seed {seed} {scenario:11s} {name:14s}: run {r['seconds']:6.1f} s (fit {r['train_seconds']:5.1f}), "
                      f"{r['rule']} {r['val']:.4f}, val residual {r['residual']:.2e}, "
                      f"test clean {r['clean_acc']:.4f} robust {r['robust_acc']:.4f}", flush=True)
    print("\nmean over seeds", args.seeds)
    for scenario in args.scenarios:
        base = statistics.mean(r["val"] for r in rows["current"] if r["scenario"] == scenario)
        for name, rs in rows.items():
            rs = [r for r in rs if r["scenario"] == scenario]
            val = statistics.mean(r["val"] for r in rs)
            print(f"{scenario:11s} {name:14s}: run {statistics.mean(r['seconds'] for r in rs):6.1f} s, "
                  f"{rs[0]['rule']} {val:.4f} ({100 * (val - base):+.1f} points), "
                  f"robust {statistics.mean(r['robust_acc'] for r in rs):.4f}, "
                  f"residual {statistics.mean(r['residual'] for r in rs):.2e}")
    for name, rs in rows.items():
        print(f"all scenarios {name:14s}: {sum(r['seconds'] for r in rs):7.1f} s in all")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--matrix", action="store_true", help="check a setting for the matrix's DEQ arm instead "
                    "(its own two settings, whole runs: --settings and --epochs do not apply)")
    ap.add_argument("--scenarios", nargs="+", default=list(MATRIX_SCENARIOS), choices=list(MATRIX_SCENARIOS))
    args = ap.parse_args()
    if max(args.seeds) >= 1000:
        raise SystemExit("design seeds only (< 1000): report seeds are never used to choose a setting")
    torch.set_num_threads(1)
    if args.matrix:
        return matrix(args)
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for name in args.settings:
            # the explicit net right before and after each DEQ fit: a shared machine's load drifts
            before = one("erm", {}, seed, args.epochs)
            r = one("deq", SETTINGS[name], seed, args.epochs)
            after = one("erm", {}, seed, args.epochs)
            erm = (before["s_per_epoch"] + after["s_per_epoch"]) / 2
            r["ratio"] = r["s_per_epoch"] / erm
            rows.setdefault(name, []).append(r)
            print(f"seed {seed} {name:18s}: {r['s_per_epoch']:.3f} s/epoch = {r['ratio']:.1f}x ERM ({erm:.3f} s), "
                  f"val_acc {r['val_acc']:.4f} (ERM {before['val_acc']:.4f}), val residual {r['residual']:.2e}, "
                  f"steps {r['nstep']:.1f}", flush=True)
    print("\nmean over seeds", args.seeds)
    ref = "anderson12_ift"
    base = statistics.mean(r["val_acc"] for r in rows[ref]) if ref in rows else None
    for name, rs in rows.items():
        acc = statistics.mean(r["val_acc"] for r in rs)
        delta = f", {100 * (acc - base):+.1f} points vs {ref}" if base is not None else ""
        print(f"{name:18s}: {statistics.mean(r['ratio'] for r in rs):.1f}x ERM per epoch, val_acc {acc:.4f}{delta}, "
              f"val residual {statistics.mean(r['residual'] for r in rs):.2e}")


if __name__ == "__main__":
    main()
