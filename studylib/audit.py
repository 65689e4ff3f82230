"""An independent check of a reported robust accuracy, from the run's saved checkpoint.

The scorecard's robust accuracy comes from the profile's attacks (quick: FGSM, PGD-20, APGD-CE and
APGD-T with 3 target classes; a technique's own, such as the DEQ's). The audit attacks the run
again with a different and stronger attack: the **standard AutoAttack** (Croce & Hein's own code,
``pyautoattack``: APGD-CE, then APGD-T over every other class, then FAB-T, then Square with 5000
queries, each on the examples the ones before it left). It starts from the weights in ``model.pt``,
not from the training process. It runs on the same attacked test examples at the run's main ε, and
clean errors count as broken, as in the scorecard.

The verdict rests on the **per-example union** of the two evaluations: an example counts as robust
only if neither the record's attacks (its per-example mask, ``robust_examples`` in ``metrics.json``)
nor AutoAttack broke it. A reported number is **overstated** when that union leaves fewer of the
examples robust than the record says, by more than ``tolerance`` (a share of the attacked
examples). The union is at most both the record's number and AutoAttack's, so it also catches a
record whose attacks broke different examples than AutoAttack did. Both numbers are over the same
examples, so the comparison is exact up to the attacks' own randomness; no confidence interval is
involved. A record without the mask (written before it was saved) is compared with AutoAttack
alone, and the table says so (``basis``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .config import RunConfig
from .data import make_data
from .evaluate import attack_subset
from .models import rebuild
from .records import RecordError, RunRecord
from .robust import robust_evaluation

TOLERANCE = 0.01  # one point of accuracy: the attacks' own randomness, not a statistical margin


def audit_run(record_dir, tolerance: float = TOLERANCE, max_examples: int | None = None) -> dict:
    """The standard AutoAttack on one finished run's checkpoint. Returns the run's names, ``eps``,
    ``n`` (the attacked examples), ``reported`` (its robust accuracy at the main ε), ``independent``
    (AutoAttack's; ``independent_robust`` per example, as the record's mask), ``union`` (robust
    under both; see the module docstring), ``basis``, ``diff``
    (union − reported), ``overstated``, ``broke`` (per stage: broken of attacked), what ran, and
    ``seconds``.
    ``max_examples`` attacks only the first of the run's attacked examples. This is for quick looks
    only: ``reported`` stays the number over all of them, so ``overstated`` is then left out."""
    rec = RunRecord(Path(record_dir))
    if not rec.done:
        raise RecordError(f"{rec.dir}: not a finished run (no done marker)")
    cfg = RunConfig.model_validate(rec.config())
    metrics = rec.metrics()["metrics"]
    if "robust_acc" not in metrics:
        raise RecordError(f"{rec.dir}: the run has no robust accuracy to check (its eval ran no attack)")
    data = make_data(cfg.data, cfg.seed)
    model = rebuild(cfg.model, data, rec.state_dict())  # the selected weights, in eval mode
    every = attack_subset(len(data.test), cfg.eval.max_examples, cfg.seed)
    sub = every if max_examples is None else every[:max_examples]
    eps = cfg.eval.main_eps
    ecfg = cfg.eval.model_copy(update={"attacks": ["autoattack"], "eps": [eps], "main_eps": eps, "strong_eps": "all"})
    t0 = time.perf_counter()
    with torch.random.fork_rng():
        result = robust_evaluation(model, data.test.x[sub], data.test.y[sub], ecfg, data.num_classes, cfg.seed)
    independent = next(r["acc"] for r in result.curve if r["attack"] == "worst" and r["eps"] == eps)
    reported = float(metrics["robust_acc"])
    record_mask = _record_mask(rec, every, eps)
    if record_mask is None:
        union, basis = independent, "AutoAttack alone (the record has no per-example mask)"
    else:
        union, basis = (record_mask[: len(sub)] & result.robust[eps]).float().mean().item(), "union"
    full = len(sub) == len(every)
    return {"study": cfg.study, "arm": cfg.arm, "technique": cfg.technique, "seed": cfg.seed, "profile": cfg.profile,
            "eps": eps, "n": int(len(sub)), "reported": reported, "independent": independent, "union": union,
            "basis": basis, "diff": union - reported,
            "independent_robust": "".join("1" if r else "0" for r in result.robust[eps].tolist()),  # per example
            "overstated": (union < reported - tolerance - 1e-9) if full else None,  # exactly at it: holds
            # what each stage broke of what the stages before it left (Square breaking many: masking)
            "broke": ", ".join(f"{r['attack'].split(':', 1)[1]} {r['broke']}/{r['ran_on']}" for r in result.curve
                               if r["eps"] == eps and r["attack"].startswith("autoattack:")),
            "attacks": ", ".join(result.attacks["run"]), "notes": "; ".join(result.attacks["notes"].values()),
            "seconds": round(time.perf_counter() - t0, 1), "record": str(rec.dir)}


def _record_mask(rec: RunRecord, every: torch.Tensor, eps: float) -> torch.Tensor | None:
    """The record's per-example robust mask at ``eps`` over the attacked examples ``every`` (None
    when the record has none); a mask over other examples or ε is a one-line error."""
    saved = rec.metrics().get("robust_examples")
    if not saved:
        return None
    if saved["eps"] != eps or saved["index"] != every.tolist() or len(saved["robust"]) != len(every):
        raise RecordError(f"{rec.dir}: the saved robust mask is not over the run's attacked examples at ε={eps:g}")
    return torch.tensor([c == "1" for c in saved["robust"]])
