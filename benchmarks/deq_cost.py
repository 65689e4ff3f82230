"""The DEQ's training cost per epoch relative to its explicit counterpart (the DEQ study's ``erm``:
the cnn with the DEQ's channels), and what a cheaper solver setting gives up: clean validation
accuracy and the solver's relative residual. Prints one line per setting and seed, then the mean per
setting; nothing is asserted (issue target: ≤ 6× the explicit net per epoch, validation accuracy
within 1 point of the current setting).

Design seeds only (0–999; the report seeds ≥ 1000 are never looked at while choosing). The DEQ
study's quick profile (10 epochs on digits), one thread, each fit in turn, the explicit net timed
right before and after each DEQ fit (the ratio uses their mean). Usage:

    python benchmarks/deq_cost.py [--seeds 0 1 2] [--settings current fpi_phantom ...] [--epochs 10]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from studylib.config import load_study
from studylib.data import make_data
from studylib.train import fit

# hparams of the DEQ study's `deq` arm on top of its quick profile (max_iter 12, Anderson, IFT backward)
SETTINGS = {
    "current": {},
    "anderson_phantom": {"grad": "phantom", "phantom_steps": 5},
    "fpi": {"solver": "fixed_point_iter"},
    "fpi_phantom": {"solver": "fixed_point_iter", "grad": "phantom", "phantom_steps": 5},
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    if max(args.seeds) >= 1000:
        raise SystemExit("design seeds only (< 1000): report seeds are never used to choose a setting")
    torch.set_num_threads(1)
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
    base = statistics.mean(r["val_acc"] for r in rows.get("current", [])) if "current" in rows else None
    for name, rs in rows.items():
        acc = statistics.mean(r["val_acc"] for r in rs)
        delta = f", {100 * (acc - base):+.1f} points vs current" if base is not None else ""
        print(f"{name:18s}: {statistics.mean(r['ratio'] for r in rs):.1f}x ERM per epoch, val_acc {acc:.4f}{delta}, "
              f"val residual {statistics.mean(r['residual'] for r in rs):.2e}")


if __name__ == "__main__":
    main()
