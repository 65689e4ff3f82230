"""Where the main job's time goes, read from its records (prints; nothing is asserted or trained).

For every study of a finished sweep (``make study`` writes ``outputs/sweeps/<sweep>/status.json``):
its sweep point's wall time (kernel, imports and notebook included) and, summed over its run
records, the training time (epochs only), the scorecard's time, and inside the scorecard the
attacks' time (FGSM, PGD, APGD-CE, APGD-T, a technique's own such as the DEQ's PGD per gradient
and Square); what is left of the point ("rest") is split into per-epoch validation (selection,
PGD for the adversarial arms' selection, per-epoch diagnostics such as the DEQ's solver statistics
and the label-noise memorisation fractions: ``val_seconds`` of records that have it), the clean
scorecard (clean and corrupted test accuracy, calibration, gradient norm: the scorecard less its
attacks) and the remainder (data, records, kernel start, imports and the notebook). Runs reused from another study (``env.json`` names the
source) count where they were trained.

With ``--refepoch S`` (seconds of one reference epoch — a plain PyTorch ERM epoch of the small CNN on
1200 digits images, batch 64, Adam, 2 threads — measured on the same machine, right after the job)
every figure is also given in reference epochs, as wall time on
the sweep's workers: summed worker seconds ÷ workers ÷ S. ``s/seed`` is a study's worker seconds per
report seed (its point time over the seeds its runs used). The last lines give the floor that
training alone sets, and what the job would cost if every attack and all the rest took no time.

    python benchmarks/main_job_cost.py [--outputs outputs] [--sweep quick] [--workers 2] [--refepoch 0.13]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from studylib import paths
from studylib.records import RecordError, iter_run_records, read_json


def point_seconds(outputs: Path, sweep: str) -> dict[str, float]:
    """Wall seconds per study of the sweep (scenario points of one study added up)."""
    status = read_json(outputs / "sweeps" / sweep / "status.json")
    out: dict[str, float] = collections.defaultdict(float)
    for r in status["results"]:
        if r.get("status") == "done" and r.get("seconds") is not None:
            out[r["point"].split(" ", 1)[0]] += float(r["seconds"])
    return dict(out)


def run_seconds(outputs: Path, profile: str) -> dict[str, collections.Counter]:
    """Per study: runs, reused runs, seeds, training, scorecard and per-attack seconds of its runs."""
    per: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    seeds: dict[str, set] = collections.defaultdict(set)
    for rec in iter_run_records(outputs):
        if not rec.done:
            continue
        try:
            cfg, metrics, env = rec.config(), rec.metrics(), rec.env()
        except RecordError:
            continue
        if cfg.get("profile") != profile:
            continue
        c = per[cfg["study"]]
        c["runs"] += 1
        seeds[cfg["study"]].add(cfg.get("seed"))
        c["seeds"] = len(seeds[cfg["study"]])
        if env.get("reused_from"):  # a copy: trained (and counted) in the study it came from
            c["reused"] += 1
            continue
        m = metrics.get("metrics", {})
        # runs that shared one fit (another selection rule) each record its whole cost: counted once
        share = 1 + len(metrics.get("fit", {}).get("shared_fit_with", []))
        c["train"] += m.get("train_seconds", 0.0) / share
        c["scorecard"] += m.get("eval_seconds", 0.0)
        if "val_seconds" in m:
            c["validation"] += m["val_seconds"] / share
            c["timed_validation"] += 1
        for name, s in metrics.get("attacks", {}).get("seconds", {}).items():
            c["attack:" + name.split(":", 1)[0]] += s
    return per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outputs", default=None, help="the outputs directory (default: the kit's outputs/)")
    ap.add_argument("--sweep", default="quick", help="the sweep whose status gives the points' wall times")
    ap.add_argument("--profile", default=None, help="the runs' profile (default: the sweep's name)")
    ap.add_argument("--workers", type=int, default=2, help="the sweep's parallel workers (make study: one per core)")
    ap.add_argument("--refepoch", type=float, default=None, help="seconds of one reference epoch measured on the same machine")
    args = ap.parse_args(argv)
    outputs = paths.outputs_dir(args.outputs)
    points = point_seconds(outputs, args.sweep)
    runs = run_seconds(outputs, args.profile or args.sweep)
    w, ref = args.workers, args.refepoch

    def refs(seconds: float) -> str:
        return f"{seconds / w / ref:7.0f}" if ref else "      -"

    print(f"{'study':20s} {'runs':>5s} {'reused':>6s} {'point s':>8s} {'train s':>8s} {'attacks s':>9s} "
          f"{'rest s':>7s} {'val s':>6s} {'card s':>6s} {'other s':>7s} {'ref ep':>7s} {'s/seed':>7s}  slowest attacks")
    total = collections.Counter()
    for study in sorted(points, key=points.get, reverse=True):
        c = runs.get(study, collections.Counter())
        attacks = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("attack:")}
        att = sum(attacks.values())
        rest = points[study] - c["train"] - att
        card = c["scorecard"] - att  # the scorecard less its attacks
        # validation is timed in records written since val_seconds exists ("-": an older record)
        timed = c["timed_validation"] == c["runs"] - c["reused"]
        val = c["validation"] if timed else float("nan")
        other = rest - card - val if timed else float("nan")
        top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(attacks.items(), key=lambda kv: -kv[1])[:3])
        per_seed = points[study] / c["seeds"] if c["seeds"] else float("nan")
        print(f"{study:20s} {c['runs']:5d} {c['reused']:6d} {points[study]:8.1f} {c['train']:8.1f} {att:9.1f} "
              f"{rest:7.1f} {val:6.1f} {card:6.1f} {other:7.1f} {refs(points[study])} {per_seed:7.1f}  {top}")
        total.update({"point": points[study], "train": c["train"], "attacks": att, "rest": rest, "card": card,
                      "val": val, "other": other})
    print(f"{'all':20s} {'':5s} {'':6s} {total['point']:8.1f} {total['train']:8.1f} {total['attacks']:9.1f} "
          f"{total['rest']:7.1f} {total['val']:6.1f} {total['card']:6.1f} {total['other']:7.1f} {refs(total['point'])}")
    print(f"worker seconds: training {total['train'] / total['point']:.0%}, attacks "
          f"{total['attacks'] / total['point']:.0%}, the rest (validation, clean scorecard, data, records, "
          f"kernels) {total['rest'] / total['point']:.0%}: validation {total['val'] / total['point']:.0%}, clean "
          f"scorecard {total['card'] / total['point']:.0%}, other {total['other'] / total['point']:.0%}")
    if ref:
        print(f"on {w} workers at {ref:g} s per reference epoch: the sweep's work ≈ {refs(total['point']).strip()} "
              f"reference epochs; training alone ≈ {refs(total['train']).strip()} (the floor if attacks, "
              f"validation and everything else took no time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
