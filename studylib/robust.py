"""Robust accuracy: which attacks run, at which ε, on which examples, and what each number means.

Attacks (L∞, pixel units; inputs in [0, 1], models normalise inside). The model is in eval mode
for every attack and gets its mode back afterwards (:func:`studylib.attacks.eval_mode`); its
parameters do not require gradients meanwhile, so no attack leaves gradients on them.

* ``fgsm``, ``pgd``: native (:mod:`studylib.attacks`); PGD-k with ``eval.pgd_steps`` steps and
  ``eval.pgd_restarts`` restarts.
* ``apgd`` (APGD-CE), ``apgd_t`` (APGD-T, targeted DLR loss), ``square`` (Square, gradient-free)
  and ``autoattack`` (the *standard* AutoAttack: APGD-CE → APGD-T → FAB-T → Square with the
  standard version's settings): Croce & Hein's own code, the ``pyautoattack`` package, called
  with the run's seed (every attack is seeded with it: the curve is deterministic).
* a technique may add its own (:meth:`Technique.eval_attacks`) or run its own version of a
  profile attack in its place (``AttackSpec.replaces``): the DEQ adds PGD with each solver
  gradient and runs the strong attacks through its stronger gradient, so its worst case covers
  them on the same examples.

An example is robust at ε when it is classified correctly clean and no attack breaks it, at ε or
at any smaller ε of the grid: L∞ balls are nested, so an adversarial input found at ε' < ε lies in
the ε-ball too. The ``worst`` row, the per-example worst case over every attack run, is the
headline robust accuracy; it cannot rise with ε by construction.

Design (speed without a false number). Two kinds of attack rows:

* ``scope: "standalone"`` — the cheap attacks (``fgsm``, ``pgd``, and a technique's probes such as
  DEQ's gradient modes): run at every ε (a technique's probes at ``eval.strong_eps``) on *every*
  clean-correct attacked example. ``acc`` is the attack's own accuracy over all ``n`` attacked
  examples (clean errors count as broken without being attacked, as in AutoAttack and
  RobustBench, so ``acc`` ≤ clean accuracy). These rows are comparable across attacks, ε and runs,
  and they carry the gradient-masking checks.
* ``scope: "unbroken"`` — the strong attacks (``apgd``, ``apgd_t``, ``square``, ``autoattack``):
  run only at ``eval.strong_eps`` and only on the ``ran_on`` examples still unbroken (clean-correct
  and robust against every attack before them, at this ε and every smaller one). ``broke`` is how
  many of those they broke, and ``acc`` is the worst-case accuracy over all ``n`` examples *after*
  they joined the ensemble — a cumulative number, not the attack's standalone accuracy (which is
  never measured, so never reported). AutoAttack adds one such row per component
  (``autoattack:apgd-ce``, ``autoattack:apgd-t``, ``autoattack:fab-t``, ``autoattack:square``,
  each run on what the components before it left: the standard ensemble's own order and rule) and
  one ``autoattack`` row for the whole ensemble.

Every row has ``eps``, ``attack``, ``acc``, ``scope`` and ``n``; attack rows also ``ran_on`` and
``broke``; rows of gradient-free attacks ``black_box: true``.

Fewer classes than an attack needs. APGD-T's targeted DLR loss divides by z_π1 − (z_π3 + z_π4)/2
and needs ≥ 4 classes; the targets of APGD-T and FAB-T are capped at classes − 1. Below 4
classes (the 2-class spurious task) ``apgd_t`` is replaced by APGD-CE with as many restarts as
APGD-T would have had target classes, the same budget (row ``apgd_x<k>``), and ``autoattack``
runs its components that apply, in its ``custom`` version (APGD-CE with the library's 5 restarts,
FAB-T with the other class, Square). Every substitution is written to the run's record
(``attacks.notes``), beside the list of attacks that ran (``attacks.run``).

Gradient masking (Athalye et al. 2018; Carlini et al. 2019) is flagged when a standalone attack's
accuracy (PGD's, a technique's probes'; not FGSM's, whose single step can overshoot) rises with ε;
when FGSM beats PGD; when a standalone black-box attack
(Square) beats every white-box standalone attack at the same ε; and when a black-box attack run on
the unbroken examples breaks more than ``MASKING_TOLERANCE`` of all examples that the white-box
attacks left robust. Warnings of AutoAttack's own checks (randomised or dynamic defence, zero
gradients) are kept in ``attacks.checks``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from . import attacks
from .config import EvalConfig

MASKING_TOLERANCE = 0.02  # accuracy points (share of all attacked examples) before a masking flag
TARGETED_DLR_MIN_CLASSES = 4  # APGD-T's loss uses the 1st, 3rd and 4th largest logits
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version, in order
BLACK_BOX_STAGES = ("square",)  # gradient-free components of an ensemble
_LOGGER = logging.getLogger("auto-attack")  # pyautoattack's own logger (AutoAttack's checks warn on it)

#: ``run(model, x, y, eps, seed) -> x_adv`` with ``x`` of shape (N, *input_shape) in [0, 1]
AttackFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, float, int], torch.Tensor]


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the robust curve.

    Args:
        name: the row's ``attack``.
        run: the attack (:data:`AttackFn`); a multi-stage ensemble gives ``stages`` instead.
        standalone: run on every clean-correct example (its row is its own accuracy) rather than
            on the examples still unbroken (its row is the cumulative worst case).
        every_eps: run at every ε of the grid rather than at ``eval.strong_eps`` only.
        black_box: gradient-free (for the masking flags).
        stages: ``(label, run)`` pairs of an ensemble, each on what the stages before left.
        metric: flat metric name for the attack's standalone accuracy at ``eval.main_eps``.
        replaces: the profile attack (``eval.attacks`` name) this technique's attack runs in place of
            (default: the one of the same name).
        note: what the replacement does differently, for the record's ``attacks.notes``.
    """

    name: str
    run: AttackFn | None = None
    standalone: bool = True
    every_eps: bool = True
    black_box: bool = False
    stages: tuple[tuple[str, AttackFn], ...] = ()
    metric: str | None = None
    replaces: str | None = None
    note: str | None = None


@dataclass
class RobustResult:
    """The robust curve (rows) with what ran: ``attacks`` goes into the run's record as it is.
    ``robust[eps]``: per attacked example, robust at ``eps`` (the ``worst`` row's mask)."""

    curve: list[dict]
    attacks: dict = field(default_factory=dict)
    robust: dict = field(default_factory=dict)


# -- pyautoattack, called ------------------------------------------------------------------------
def _image_view(model, x):
    """pyautoattack's Square (and the ensemble around it) wants (N, C, H, W): a 1-D signal (C, L)
    is shown to it as a (C, 1, L) image (Square's squares are then runs of one sample)."""
    if x.dim() == 4:
        return model, x, lambda z: z
    shape = tuple(x.shape[1:])
    view = x.reshape(len(x), shape[0] if len(shape) == 2 else 1, 1, -1)
    return (lambda z: model(z.reshape(len(z), *shape))), view, (lambda z: z.reshape(len(z), *shape))


def _batched(perturb, x, y, batch_size):
    return torch.cat([perturb(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def apgd(model, x, y, eps, seed, *, cfg: EvalConfig, restarts: int | None = None):
    """APGD-CE (Croce & Hein 2020), ``pyautoattack.autopgd_base.APGDAttack``."""
    from pyautoattack.autopgd_base import APGDAttack

    fwd, xv, back = _image_view(model, x)
    atk = APGDAttack(fwd, n_iter=cfg.apgd_steps, norm="Linf", n_restarts=restarts or cfg.apgd_restarts,
                     eps=eps, seed=seed, loss="ce", rho=0.75, device=x.device, logger=_LOGGER)
    return back(_batched(atk.perturb, xv, y, cfg.batch_size))


def apgd_t(model, x, y, eps, seed, *, cfg: EvalConfig, targets: int):
    """APGD-T, APGD on the targeted DLR loss over the ``targets`` most likely other classes
    (``pyautoattack.autopgd_base.APGDAttack_targeted``)."""
    from pyautoattack.autopgd_base import APGDAttack_targeted

    fwd, xv, back = _image_view(model, x)
    atk = APGDAttack_targeted(fwd, n_iter=cfg.apgd_steps, norm="Linf", n_restarts=1, eps=eps, seed=seed,
                              rho=0.75, n_target_classes=targets, device=x.device, logger=_LOGGER)
    return back(_batched(atk.perturb, xv, y, cfg.batch_size))


def square(model, x, y, eps, seed, *, queries: int, batch_size: int = 512):
    """Square attack (Andriushchenko et al. 2020), margin loss, with AutoAttack's settings
    (p_init 0.8, one restart) and ``queries`` queries (``pyautoattack.square.SquareAttack``)."""
    from pyautoattack.square import SquareAttack

    fwd, xv, back = _image_view(model, x)
    atk = SquareAttack(fwd, p_init=0.8, n_queries=queries, eps=eps, norm="Linf", n_restarts=1, seed=seed,
                       device=x.device, resc_schedule=False)
    with torch.no_grad():
        return back(_batched(atk.perturb, xv, y, batch_size))


def autoattack_component(model, x, y, eps, seed, *, component: str, num_classes: int, cfg: EvalConfig):
    """One component of the standard AutoAttack (``pyautoattack.AutoAttack``), run through the
    library's own evaluation loop: ``attacks_to_run = [component]``, as its
    ``run_standard_evaluation_individual`` does. Below 4 classes the version is ``custom`` with the
    components that apply (see the module docstring)."""
    from pyautoattack import AutoAttack

    fwd, xv, back = _image_view(model, x)
    if num_classes >= TARGETED_DLR_MIN_CLASSES:
        aa = AutoAttack(fwd, norm="Linf", eps=eps, version="standard", seed=seed, device=x.device)
    else:  # custom: its APGD-CE keeps the constructor's 5 restarts, in place of APGD-T
        aa = AutoAttack(fwd, norm="Linf", eps=eps, version="custom", attacks=list(_small_autoattack()),
                        seed=seed, device=x.device)
    aa.verbose = False  # its checks still warn, on the "auto-attack" logger (collected in attacks.checks)
    aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, num_classes - 1)
    aa.fab.n_target_classes = min(aa.fab.n_target_classes, num_classes - 1)
    aa.attacks_to_run = [component]
    x_adv, _ = aa.run_standard_evaluation(xv, y, batch_size=cfg.batch_size)
    return back(x_adv)


def _small_autoattack() -> tuple[str, ...]:
    return tuple(c for c in AUTOATTACK_COMPONENTS if c != "apgd-t")


# -- the plan -------------------------------------------------------------------------------------
def _native(attack, model, x, y, eps, seed, *, batch_size, **kw):
    return attacks.batched_attack(attack, model, x, y, eps, batch_size, **kw)


def attack_plan(cfg: EvalConfig, num_classes: int, extra=()) -> tuple[list[AttackSpec], dict[str, str]]:
    """The attacks ``cfg.attacks`` asks for, adapted to ``num_classes``, plus a technique's
    ``extra`` ones (which replace a profile attack of the same name). Returns the specs and notes
    on every substitution."""
    notes: dict[str, str] = {}
    extra = list(extra)
    replaced = {s.replaces or s.name: s for s in extra}
    plan: list[AttackSpec] = []
    bs = cfg.batch_size
    for name in cfg.attacks:
        if name in replaced:
            notes[name] = replaced[name].note or "the technique's own version runs in its place"
            continue
        if name == "fgsm":
            plan.append(AttackSpec("fgsm", partial(_native, attacks.fgsm, batch_size=bs)))
        elif name == "pgd":
            plan.append(AttackSpec("pgd", partial(_native, attacks.pgd, batch_size=bs, steps=cfg.pgd_steps,
                                                  restarts=cfg.pgd_restarts)))
        elif name == "apgd":
            plan.append(AttackSpec("apgd", partial(apgd, cfg=cfg), standalone=False, every_eps=False))
        elif name == "apgd_t":
            if num_classes >= TARGETED_DLR_MIN_CLASSES:
                targets = min(cfg.apgd_targets, num_classes - 1)
                if targets < cfg.apgd_targets:
                    notes["apgd_t"] = f"{targets} target classes (all the other classes), not {cfg.apgd_targets}"
                plan.append(AttackSpec("apgd_t", partial(apgd_t, cfg=cfg, targets=targets), standalone=False,
                                       every_eps=False))
            else:  # the same budget: one APGD-CE restart per target class APGD-T would have tried
                k = cfg.apgd_targets
                notes["apgd_t"] = (f"not run: its targeted DLR loss needs ≥ {TARGETED_DLR_MIN_CLASSES} classes "
                                   f"(this task has {num_classes}); APGD-CE with {k} restarts runs in its place "
                                   f"(apgd_x{k})")
                plan.append(AttackSpec(f"apgd_x{k}", partial(apgd, cfg=cfg, restarts=k), standalone=False,
                                       every_eps=False))
        elif name == "square":
            plan.append(AttackSpec("square", partial(square, queries=cfg.square_queries, batch_size=bs),
                                   standalone=False, every_eps=False, black_box=True))
        elif name == "autoattack":
            if num_classes >= TARGETED_DLR_MIN_CLASSES:
                components = AUTOATTACK_COMPONENTS
                if num_classes - 1 < 9:
                    notes["autoattack"] = (f"standard version, APGD-T and FAB-T on all {num_classes - 1} other "
                                           "classes (the standard 9 need 10 classes)")
            else:
                components = _small_autoattack()
                notes["autoattack"] = (f"custom version {list(components)}: APGD-T's targeted DLR loss needs "
                                       f"≥ {TARGETED_DLR_MIN_CLASSES} classes (this task has {num_classes}); "
                                       "APGD-CE runs with 5 restarts instead of 1, FAB-T on the other class")
            stages = tuple((c, partial(autoattack_component, component=c, num_classes=num_classes, cfg=cfg))
                           for c in components)
            plan.append(AttackSpec("autoattack", standalone=False, every_eps=False, stages=stages))
        else:
            raise ValueError(f"unknown attack {name!r}")
    return plan + extra, notes


# -- running it -----------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


@contextlib.contextmanager
def _attack_context(model):
    """Eval mode and frozen parameters for the block (both restored), and AutoAttack's check
    warnings collected instead of printed."""
    params = [p for p in model.parameters() if p.requires_grad]
    handler, propagate = _Collect(), _LOGGER.propagate
    _LOGGER.addHandler(handler)
    _LOGGER.propagate = False
    try:
        with attacks.eval_mode(model):
            for p in params:
                p.requires_grad_(False)
            yield handler.messages
    finally:
        for p in params:
            p.requires_grad_(True)
        _LOGGER.removeHandler(handler)
        _LOGGER.propagate = propagate


def _correct(model, x, y, batch_size):
    return attacks.predict(model, x, batch_size).argmax(1) == y


def robust_evaluation(model, x, y, cfg: EvalConfig, num_classes: int, seed: int = 0, extra=()) -> RobustResult:
    """Every attack of the plan at its ε on ``x``, ``y`` (the attacked test examples); see the
    module docstring for the rows. ``extra``: a technique's own :class:`AttackSpec` s."""
    plan, notes = attack_plan(cfg, num_classes, extra)
    n, strong_eps, rows = len(y), cfg.strong_eps_values(), []
    bs = cfg.batch_size
    seconds: dict[str, float] = {}
    masks: dict[float, torch.Tensor] = {}

    def timed(name, run, xs, ys, eps):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        correct = _correct(model, run(model, xs, ys, eps, seed), ys, bs)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        return correct

    with _attack_context(model) as checks:
        clean = _correct(model, x, y, bs)
        unbroken = clean.clone()  # robust so far: at this ε and every smaller one
        for eps in cfg.eps_grid():
            here = [s for s in plan if s.every_eps or eps in strong_eps]
            for spec in (s for s in here if s.standalone):
                correct = clean.clone()
                idx = clean.nonzero().squeeze(1)
                if eps > 0 and len(idx):
                    correct[idx] = timed(spec.name, spec.run, x[idx], y[idx], eps)
                unbroken &= correct
                row = {"eps": eps, "attack": spec.name, "acc": correct.float().mean().item(), "scope": "standalone",
                       "n": n, "ran_on": int(clean.sum()), "broke": int((clean & ~correct).sum())}
                row.update({"black_box": True} if spec.black_box else {})
                rows.append(row)
            for spec in (s for s in here if not s.standalone):
                before = int(unbroken.sum())
                for label, run in spec.stages or ((None, spec.run),):
                    idx = unbroken.nonzero().squeeze(1)
                    broke = 0
                    if eps > 0 and len(idx):
                        wrong = ~timed(spec.name if label is None else f"{spec.name}:{label}", run, x[idx], y[idx], eps)
                        unbroken[idx[wrong]] = False
                        broke = int(wrong.sum())
                    if label is not None:
                        rows.append({"eps": eps, "attack": f"{spec.name}:{label}", "acc": unbroken.float().mean().item(),
                                     "scope": "unbroken", "n": n, "ran_on": len(idx), "broke": broke,
                                     **({"black_box": True} if label in BLACK_BOX_STAGES else {})})
                rows.append({"eps": eps, "attack": spec.name, "acc": unbroken.float().mean().item(),
                             "scope": "unbroken", "n": n, "ran_on": before, "broke": before - int(unbroken.sum()),
                             **({"black_box": True} if spec.black_box else {})})
            rows.append({"eps": eps, "attack": "worst", "acc": unbroken.float().mean().item(), "scope": "worst", "n": n})
            masks[eps] = unbroken.clone()
    ran = list(dict.fromkeys([s.name for s in plan] + [f"{s.name}:{label}" for s in plan for label, _ in s.stages]))
    info = {"run": ran, "notes": notes, "checks": list(checks),
            "strong_eps": sorted(strong_eps & set(cfg.eps_grid())),
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}  # wall time per attack, all ε
    return RobustResult(rows, info, masks)


def robust_accuracy(model, x, y, cfg: EvalConfig, num_classes: int, seed: int = 0, extra=()) -> list[dict]:
    """The rows of :func:`robust_evaluation` only."""
    return robust_evaluation(model, x, y, cfg, num_classes, seed, extra).curve


# -- gradient masking ----------------------------------------------------------------------------
def masking_flags(curve: list[dict]) -> list[str]:
    """Signs of gradient masking in a robust curve (rows without ``scope``, from older records,
    count as standalone)."""
    flags = []
    tol = MASKING_TOLERANCE
    scope = {r["attack"]: r.get("scope", "standalone") for r in curve}
    # rows of gradient-free attacks say so; in older records (and hand-made curves) Square by name
    black_box = {r["attack"] for r in curve if r.get("black_box") or r["attack"] == "square"}
    by = {(r["eps"], r["attack"]): r for r in curve}
    eps_grid = sorted({r["eps"] for r in curve})
    # FGSM's single step can overshoot as ε grows, so its own curve is not checked; every other
    # standalone attack's is (the worst case cannot rise by construction; older records' can)
    for name in [a for a in scope if scope[a] in ("standalone", "worst") and a != "fgsm"]:
        points = [(e, by[(e, name)]["acc"]) for e in eps_grid if (e, name) in by]
        what = "robust accuracy" if name == "worst" else f"{name} accuracy"
        for (e0, a0), (e1, a1) in zip(points, points[1:]):
            if a1 > a0 + tol:
                flags.append(f"{what} rises from {a0:.3f} at ε={e0:g} to {a1:.3f} at ε={e1:g}")
    for e in eps_grid:
        here = {a: by[(e, a)] for a in scope if (e, a) in by}
        standalone = {a: r["acc"] for a, r in here.items() if scope[a] == "standalone"}
        pgd, fgsm = standalone.get("pgd"), standalone.get("fgsm")
        if pgd is not None and fgsm is not None and fgsm < pgd - tol:
            flags.append(f"single-step fgsm ({fgsm:.3f}) beats white-box PGD ({pgd:.3f}) at ε={e:g}")
        white = {a: v for a, v in standalone.items() if a not in black_box}
        for name in (a for a in here if a in black_box):
            r = here[name]
            if scope[name] == "standalone" and white:
                best = min(white, key=white.get)
                if r["acc"] < white[best] - tol:
                    flags.append(f"black-box {name} ({r['acc']:.3f}) beats white-box {best} ({white[best]:.3f}) "
                                 f"at ε={e:g}")
            elif scope[name] == "unbroken" and r["broke"] > tol * r["n"]:
                flags.append(f"black-box {name} breaks {r['broke']} of {r['n']} examples "
                             f"({r['broke'] / r['n']:.1%}) that the white-box attacks left robust at ε={e:g}")
    return flags
