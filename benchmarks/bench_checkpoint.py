"""What resume checkpoints cost (prints ratios; nothing is asserted).

Times ``fit`` of small digits runs three ways, alternating in rounds so drift hits all alike:
without a checkpoint path, with the default ``train.checkpoint_every`` (60 s: a run this short
writes none) and with ``checkpoint_every: 0`` (a checkpoint at every epoch end: the worst case).
Prints the median process CPU time of each (less disturbed than wall time on a shared machine) and
the ratios, the time spent inside the checkpoint writes themselves as a share of the run, and the
size of one checkpoint. Usage:

    python benchmarks/bench_checkpoint.py [--study dro] [--arm group_dro] [--epochs 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from studylib import load_study
from studylib.data import make_data
from studylib.train import fit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="dro")
    ap.add_argument("--arm", default="group_dro")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    base = load_study(a.study, "smoke", {"train.epochs": a.epochs, "train.select": "val_acc"})
    data = make_data(base.data, base.seeds[0])
    times = {"none": [], "default (60 s)": [], "every epoch": []}
    size, in_save, fit_time = 0, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for mode in times:
                cfg = base.run_config(a.arm, base.seeds[0])
                if mode == "every epoch":
                    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"checkpoint_every": 0.0})})
                path = None if mode == "none" else Path(tmp) / f"{r}-{mode}.pt"
                sizes = []
                if path is not None:  # the checkpoint is removed by the caller once done: measure it before
                    import studylib.checkpoint as ck

                    real = ck.save
                    spent = []

                    def timed(p, s, real=real, spent=spent, sizes=sizes):
                        t = time.perf_counter()
                        real(p, s)
                        spent.append(time.perf_counter() - t)
                        sizes.append(Path(p).stat().st_size)

                    ck.save = timed
                t0, c0 = time.perf_counter(), time.process_time()
                fit(cfg, data, progress=False, checkpoint=path)
                times[mode].append(time.process_time() - c0)
                if path is not None:
                    ck.save = real
                    size = max([size, *sizes])
                    if mode == "every epoch":
                        in_save.append(sum(spent))
                        fit_time.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{a.study}/{a.arm}, {a.epochs} epochs, {len(data.train)} training examples, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, median of {a.rounds}")
    for k, v in med.items():
        print(f"  {k:16s} {v:7.3f} s CPU   x{v / med['none']:.3f} of no checkpoint")
    share = statistics.median(s / f for s, f in zip(in_save, fit_time))
    print(f"  every epoch: {statistics.median(in_save) / (a.epochs - 1) * 1000:.1f} ms per write (wall), "
          f"{share:.1%} of the run's wall time; one checkpoint {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
