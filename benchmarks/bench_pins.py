"""The cost of the pinned CPU kernels (:mod:`studylib.kernels`): a run's time (training and its
scorecard) with the pins ÷ without them (the machine's own kernels: ATen's, MKL's and oneDNN's
widest instruction set), on one thread as the sweep runs it. Prints the ratios and
whether the pinned and unpinned final weights are bit-identical (nothing is asserted).

Each timing is a fresh process (the kernels are chosen once per process); pinned and unpinned
alternate in rounds so that machine drift hits both alike; medians over the rounds. Usage:

    python benchmarks/bench_pins.py [--rounds 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# (study, arm, quick-profile overrides): a CNN with dropout, a CNN with BatchNorm and SGD, PGD-AT
WORKLOADS = [("dropout", "dropout_50", {}), ("regularization", "erm", {}),
             ("adversarial", "pgd_at", {"train.epochs": 3})]

CHILD = r"""
import hashlib, json, os, sys, time
import studylib  # sets the pins in os.environ
from studylib import kernels
if sys.argv[1] == "unpinned":  # before torch's first operation: the machine's own kernels
    for k in kernels.PINS:
        os.environ.pop(k, None)
    kernels.use = lambda device=None: kernels.settings()  # no check
import torch
torch.set_num_threads(1)
from studylib.config import load_study
from studylib.data import make_data
from studylib.evaluate import scorecard
from studylib.train import fit
study, arm, overrides = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
rc = load_study(study, profile="quick", overrides=overrides).run_config(arm, 0)  # a design seed: timing only
data = make_data(rc.data, rc.seed)
t0 = time.perf_counter()
res = fit(rc, data, progress=False)
card = scorecard(res.model, data, rc, res.technique)
seconds = time.perf_counter() - t0
h = hashlib.sha256(b"".join(v.contiguous().numpy().tobytes() for v in res.model.state_dict().values()))
print(json.dumps({"seconds": seconds, "weights": h.hexdigest()[:16], "settings": kernels.settings()}))
"""


def child(mode: str, study: str, arm: str, overrides: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, study, arm, json.dumps(overrides)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the dropout and regularization runs")
    args = ap.parse_args()
    ratios = []
    for study, arm, overrides in WORKLOADS:
        overrides = {"train.epochs": args.epochs, **overrides}
        times = {"pinned": [], "unpinned": []}
        last = {}
        for _ in range(args.rounds):
            for mode in ("pinned", "unpinned"):
                last[mode] = child(mode, study, arm, overrides)
                times[mode].append(last[mode]["seconds"])
        pinned, unpinned = statistics.median(times["pinned"]), statistics.median(times["unpinned"])
        ratios.append(pinned / unpinned)
        same = last["pinned"]["weights"] == last["unpinned"]["weights"]
        print(f"{study}/{arm} {overrides}: pinned {pinned:.2f} s, unpinned {unpinned:.2f} s, "
              f"ratio {pinned / unpinned:.2f} (weights {'identical' if same else 'differ'}; unpinned kernels: "
              f"{last['unpinned']['settings']['cpu_capability']})")
    print(f"pinned ÷ unpinned time, geometric mean over {len(ratios)} workloads: "
          f"{statistics.geometric_mean(ratios):.2f}")


if __name__ == "__main__":
    main()
