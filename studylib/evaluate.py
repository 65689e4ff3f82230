"""The scorecard every run gets, computed once on the test split.

Robust accuracy is the per-example worst case over the attacks asked for (``eval.attacks``) and a
technique's own (DEQ: PGD with each solver gradient and Square), on one fixed subset of test
examples: FGSM and PGD are native (:mod:`studylib.attacks`); APGD-CE, APGD-T, Square and the
standard AutoAttack are Croce & Hein's ``pyautoattack``. Which attack runs at which ε and on which
examples, what each row of the curve means, and the gradient-masking flags: :mod:`studylib.robust`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from . import attacks, corruptions
from .config import EvalConfig, RunConfig
from .data import Data
from .metrics import accuracy_metrics, expected_calibration_error
from .robust import masking_flags, robust_evaluation


def corruption_accuracy(model, x, y, cfg: EvalConfig, seed: int = 0) -> list[dict]:
    """Accuracy per corruption and severity (corruptions that do not apply to the input shape, e.g.
    rotation of 1-D signals, are skipped)."""
    rows = []
    usable = corruptions.available(tuple(x.shape[1:]))
    for kind in cfg.corruptions:
        if kind not in usable:
            continue
        for s in cfg.severities:
            xc = corruptions.corrupt(x, kind, s, seed)
            acc = attacks.predict(model, xc).argmax(1).eq(y).float().mean().item()
            rows.append({"corruption": kind, "severity": s, "acc": acc})
    return rows


def trained_corruptions(cfg: RunConfig) -> list[str]:
    """The scorecard's corruptions a run trains on: its technique's
    (:meth:`Technique.trained_corruptions`) and, under ``data.augment: crop_flip`` (random crops are
    translations), ``shift``."""
    from .techniques import get_technique

    trained = set(get_technique(cfg.technique).trained_corruptions(cfg.hparams))
    if cfg.data.augment == "crop_flip" and cfg.data.crop_padding > 0:
        trained.add("shift")
    return [kind for kind in corruptions.SEVERITY if kind in trained]


def corruption_metrics(rows: list[dict], trained: list[str]) -> dict:
    """The scorecard's corruption numbers from :func:`corruption_accuracy` rows: ``corruption_acc``
    (mean over every corruption and severity), ``corruption_acc@<kind>`` (each corruption's mean over
    severities), and, over the corruptions the run did not train on (``trained``), each one's again
    as ``corruption_acc_heldout@<kind>`` and their mean ``corruption_acc_heldout`` (the mean of the
    per-corruption means: every corruption counts once). A claim against another arm compares both
    on the corruptions *neither* trained on (:func:`studylib.claims.on_shared_heldout`)."""
    if not rows:
        return {}
    out = {"corruption_acc": float(np.mean([r["acc"] for r in rows]))}
    for kind in dict.fromkeys(r["corruption"] for r in rows):
        out[f"corruption_acc@{kind}"] = float(np.mean([r["acc"] for r in rows if r["corruption"] == kind]))
    held = {k: v for k, v in out.items() if "@" in k and k.split("@")[1] not in trained}
    out.update({f"corruption_acc_heldout@{k.split('@')[1]}": v for k, v in held.items()})
    if held:
        out["corruption_acc_heldout"] = float(np.mean(list(held.values())))
    return out


def input_gradient_norm(model, x, y, batch_size: int = 512) -> float:
    """Mean L1 norm of ∂CE/∂x per test example: a first-order proxy of sensitivity to ε-bounded
    L∞ perturbations (ε·‖∇ₓℓ‖₁ is the loss increase to first order)."""
    total = 0.0
    with attacks.eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].detach().requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[i:i + batch_size], reduction="sum")
            (g,) = torch.autograd.grad(loss, xb)
            total += g.flatten(1).abs().sum().item()
    return total / len(x)


def weight_sparsity(model, threshold: float = 1e-3) -> float:
    """Share of weights (tensors of ≥ 2 dimensions: layers, not biases or norms) with |w| < threshold."""
    weights = [p.detach().flatten() for p in model.parameters() if p.dim() >= 2]
    if not weights:
        return 0.0
    w = torch.cat(weights)
    return (w.abs() < threshold).float().mean().item()


def attack_subset(n: int, max_examples: int | None, seed: int) -> torch.Tensor:
    """The fixed subset of test examples that is attacked (all when ``max_examples`` is None)."""
    if max_examples is None or max_examples >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_examples].sort().values


def scorecard(model, data: Data, cfg: RunConfig, technique=None) -> dict:
    """Every scorecard entry for a trained ``model`` (on ``data``'s device): returns
    ``{"metrics": flat numbers, "robust_curve": rows, "attacks": what ran, "corruptions": rows,
    "per_class_recall", "group_acc", "flags"}``. ``technique`` (the run's, optional) may add
    attacks to the worst case (:meth:`Technique.eval_attacks`). The test split is touched here and
    only here."""
    t0 = time.perf_counter()
    model.eval()
    test, ecfg = data.test, cfg.eval
    logits = attacks.predict(model, test.x)
    probs = F.softmax(logits, 1)
    acc = accuracy_metrics(logits, test.y, test.group, data.num_classes, data.n_groups)
    train_logits = attacks.predict(model, data.train.x)
    train_acc = train_logits.argmax(1).eq(data.train.y).float().mean().item()

    sub = attack_subset(len(test), ecfg.max_examples, cfg.seed).to(test.x.device)
    extra = technique.eval_attacks(model, ecfg) if technique is not None else []
    robust = (robust_evaluation(model, test.x[sub], test.y[sub], ecfg, data.num_classes, cfg.seed, extra)
              if ecfg.attacks or extra else None)
    curve = robust.curve if robust else []
    corr = corruption_accuracy(model, test.x, test.y, ecfg, cfg.seed)

    metrics = {
        "clean_acc": acc["acc"],
        "balanced_acc": acc["balanced_acc"],
        "worst_group_acc": acc["worst_group_acc"],
        "avg_group_acc": acc["avg_group_acc"],
        "ece": expected_calibration_error(probs, test.y, ecfg.ece_bins),
        "nll": F.cross_entropy(logits, test.y).item(),
        "train_acc": train_acc,
        "gen_gap": train_acc - acc["acc"],
    }
    for r in curve:
        if r["attack"] == "worst":
            metrics[f"robust_acc@{r['eps']:g}"] = r["acc"]
            if r["eps"] == ecfg.main_eps:
                metrics["robust_acc"] = r["acc"]
    for spec in extra:  # a technique's own attacks, under the names it gives them (e.g. DEQ's figure)
        row = next((r for r in curve if r["attack"] == spec.name and r["eps"] == ecfg.main_eps), None)
        if spec.metric and row is not None:
            metrics[spec.metric] = row["acc"]
    trained = trained_corruptions(cfg)
    metrics.update(corruption_metrics(corr, trained))
    if bool(data.train.noisy.any()):
        pred = train_logits.argmax(1)
        noisy = data.train.noisy
        metrics["noisy_memorized"] = pred[noisy].eq(data.train.y[noisy]).float().mean().item()
    metrics["input_grad_norm"] = input_gradient_norm(model, test.x, test.y)
    metrics["weight_sparsity"] = weight_sparsity(model)
    metrics["eval_seconds"] = time.perf_counter() - t0
    return {"metrics": metrics, "robust_curve": curve, "attacks": robust.attacks if robust else {}, "corruptions": corr,
            "trained_corruptions": trained,
            "per_class_recall": acc["per_class_recall"], "group_acc": acc["group_acc"],
            "group_names": data.group_names, "flags": masking_flags(curve) if curve else [],
            "attacked_examples": int(len(sub)), "robust_examples": robust_examples(sub, robust, ecfg.main_eps)}


def robust_examples(sub, robust, eps) -> dict | None:
    """Which attacked test examples are robust at ``eps`` (the headline's per-example mask, for the
    audit's union): ``{"eps", "index": test indices, "robust": a "0"/"1" string, one per index}``."""
    if robust is None or eps not in robust.robust:
        return None
    return {"eps": eps, "index": sub.tolist(), "robust": "".join("1" if r else "0" for r in robust.robust[eps].tolist())}
