"""Deep equilibrium models (Bai et al. 2019) via torchdeq, with an honest robustness evaluation."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

from .._lazy import lazy_import
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")
attacks = lazy_import("studylib.attacks")
corruptions = lazy_import("studylib.corruptions")

SOLVERS = ("anderson", "fixed_point_iter", "broyden")
GRAD_MODES = ("ift", "unrolled", "naive")


@register
class DEQ(Technique):
    """Deep Equilibrium Model (Bai, Kolter & Koltun, NeurIPS 2019; locuslab/deq, torchdeq).

        z* = f(z*; x),  f(z; x) = GroupNorm(ReLU(Conv(z) + Conv(x))),  logits = head(z*)

    z* is found by a solver (``anderson`` default; ``fixed_point_iter``; ``broyden`` can diverge);
    training gradients are implicit (IFT: solve g = Jᵀg + ∂ℓ/∂z* at z*) or phantom (k unrolled
    steps). ``jac_weight`` > 0 adds Jacobian regularisation λ·‖∂f/∂z‖²_F at z* (Hutchinson estimate;
    Bai et al. 2021), which keeps f contractive and the solver fast. The model is the ``deq``
    architecture (:class:`studylib.models.DEQNet`), set by this technique.

    Robustness must be attacked through the solver honestly: naive gradients through a black-box
    solver are obfuscated (Yang et al., NeurIPS 2022, "A Closer Look at the Adversarial Robustness
    of DEQs"). Three attack gradients (``attack_grad``): ``ift`` (implicit, at the fixed point),
    ``unrolled`` (``unroll_steps`` steps of f on the autograd tape, started at the solver's detached
    fixed point) and ``naive`` (one step of f at the detached z*). ``eval_attacks`` replaces the
    profile's attacks by the DEQ's versions, so its robust accuracy is the per-example worst case,
    on the same examples, over:

    1. PGD with each of the three gradients on every clean-correct example (the ``pgd`` row with
       ``attack_grad``, at every ε; ``pgd_<other mode>`` at ``eval.strong_eps``), and FGSM;
    2. the profile's strong white-box attacks (APGD-CE, APGD-T's targeted DLR loss, AutoAttack)
       on the examples still unbroken, through the *stronger* of the implicit and the unrolled
       gradient: the one whose PGD broke more examples at that ε (ties: implicit);
    3. the profile's Square (``eval.square_queries``: AutoAttack's 5000 in the DEQ study) on the
       final survivors only, so its cost scales with robust accuracy.

    Each PGD's own accuracy at the main ε stays in the metrics (``pgd_acc_{ift,unrolled,naive}_grad``)
    for the gradient-obfuscation figure, and ``strong_grad_unrolled`` (1.0/0.0) says which gradient
    the strong attacks used there. ``score`` reports solver steps and residuals on clean,
    PGD-perturbed and corrupted test inputs.

    Example::

        >>> cfg.arms["deq"] = {"technique": "deq", "hparams": {"solver": "anderson", "jac_weight": 1.0}}
    """

    name = "deq"
    home_scenario = "clean"
    home_metric = "clean_acc"
    summary = "deep equilibrium model (torchdeq): fixed-point layer, implicit gradients, solver diagnostics"
    params = {
        "solver": Param("anderson", "forward fixed-point solver", choices=SOLVERS),
        "max_iter": Param(30, "solver iterations at most", low=10, high=60, ge=1),
        "tol": Param(1e-3, "solver stopping tolerance (relative residual)", low=1e-4, high=1e-2, log=True, gt=0),
        "grad": Param("ift", "training gradient: implicit or phantom", choices=("ift", "phantom")),
        "phantom_steps": Param(5, "unrolled steps of the phantom gradient", low=1, high=10, ge=1),
        "jac_weight": Param(0.0, "Jacobian regularisation weight λ (0: off)", low=0.1, high=5.0, log=True, ge=0),
        "attack_grad": Param("ift", "input gradient given to the scorecard's profile attacks (the worst case "
                             "covers all three)", choices=GRAD_MODES),
        "unroll_steps": Param(30, "steps of the unrolled attack gradient from z* (and of the implicit one's "
                              "backward solve)", low=10, high=60, ge=1),
        "probe_examples": Param(200, "test examples of the solver statistics in score()", ge=1),
    }

    @classmethod
    def model_overrides(cls, hp: dict) -> dict:
        keys = ("solver", "max_iter", "tol", "grad", "phantom_steps", "attack_grad", "unroll_steps")
        return {"arch": "deq", "deq": {k: hp[k] for k in keys}}

    def loss(self, model, batch):
        # always fp32, also under train.precision bf16: the solver's residuals and Anderson's
        # least-squares step need the precision (and torchdeq's solvers mix dtypes under autocast)
        with torch.autocast(batch.x.device.type, enabled=False):
            model.jacobian_loss = self.hp.jac_weight > 0
            loss = F.cross_entropy(model(batch.x.float()), batch.y)
            if self.hp.jac_weight > 0:
                # taken off the model once read: the graph is freed with the step, and the model holds
                # no non-leaf tensor (a copy of it, train.fit's for a shared fit, could not be made)
                jac, model.last_jac_loss = model.last_jac_loss, None
                loss = loss + self.hp.jac_weight * jac
        return loss

    def epoch_end(self, model, epoch):
        with torch.no_grad():
            stats = solver_stats(model, self.ctx.val.x[:256])
        return {f"val_solver_{k}": v for k, v in stats.items()}

    def eval_attacks(self, model, eval_cfg):
        """The DEQ's versions of the profile's attacks (see the class docstring): PGD with each
        attack gradient (standalone), then the strong white-box attacks on the unbroken examples
        through the stronger gradient, then Square on the survivors."""
        from dataclasses import replace

        from ..robust import AttackSpec, attack_plan

        self._pgd_inputs, self._pgd_acc, self._strong_grad = {}, {}, {}
        specs = []
        for mode in GRAD_MODES:
            own = mode == model.attack_grad and "pgd" in eval_cfg.attacks  # the scorecard's PGD, every ε
            specs.append(AttackSpec("pgd" if own else f"pgd_{mode}", partial(self._pgd, mode, eval_cfg),
                                    every_eps=own, metric=f"pgd_acc_{mode}_grad",
                                    note=f"PGD through the {model.attack_grad} gradient" if own else None))
        strong = [a for a in eval_cfg.attacks if a not in ("fgsm", "pgd")]
        plan, notes = attack_plan(eval_cfg.model_copy(update={"attacks": strong}), self.ctx.num_classes)
        for name, spec in zip(strong, plan):
            how = ("on the final survivors" if spec.black_box else
                   "through the stronger of the implicit and unrolled gradients (by PGD at that ε)")
            note = "; ".join([f"the DEQ's: {how}"] + ([notes[name]] if name in notes else []))
            specs.append(replace(spec, run=spec.run and partial(self._stronger, spec.run),
                                 stages=tuple((label, partial(self._stronger, run)) for label, run in spec.stages),
                                 replaces=name, note=note))
        return specs

    def _stronger(self, run, model, x, y, eps, seed):
        """``run`` through whichever of the implicit and unrolled gradients PGD found stronger at
        ``eps`` (ties and missing PGD rows: implicit). Gradient-free attacks are unaffected."""
        acc = {m: self._pgd_acc[(eps, m)] for m in ("ift", "unrolled") if (eps, m) in self._pgd_acc}
        mode = "unrolled" if acc.get("unrolled", 1.0) < acc.get("ift", 1.0) else "ift"
        self._strong_grad[eps] = mode
        with _attack_grad(model, mode):
            return run(model, x, y, eps, seed)

    def _pgd(self, mode, eval_cfg, model, x, y, eps, seed):
        with _attack_grad(model, mode):
            x_adv = attacks.batched_attack(attacks.pgd, model, x, y, eps, eval_cfg.batch_size,
                                           steps=eval_cfg.pgd_steps, restarts=eval_cfg.pgd_restarts)
        correct = attacks.predict(model, x_adv, eval_cfg.batch_size).argmax(1).eq(y)
        self._pgd_acc[(eps, mode)] = correct.float().mean().item()
        if eps == eval_cfg.main_eps:  # for the solver statistics on perturbed inputs in score()
            self._pgd_inputs[mode] = x_adv[: self.hp.probe_examples]
        return x_adv

    def score(self, model, data):
        hp, test = self.hp, data.test
        n = min(hp.probe_examples, len(test))
        x = test.x[:n]
        out = {}
        with torch.no_grad():
            for k, v in solver_stats(model, x).items():
                out[f"solver_{k}_clean"] = v
            for k, v in solver_stats(model, corruptions.corrupt(x, "gaussian_noise", 3, seed=0)).items():
                out[f"solver_{k}_noise"] = v
            pgd_inputs = getattr(self, "_pgd_inputs", {})
            x_pgd = pgd_inputs.get("unrolled", next(iter(pgd_inputs.values()), None))
            if x_pgd is not None and len(x_pgd):  # PGD inputs at the main ε (clean-correct examples)
                for k, v in solver_stats(model, x_pgd).items():
                    out[f"solver_{k}_pgd"] = v
        if self.ctx.config is not None:
            out["probe_eps"] = self.ctx.config.eval.main_eps
            grad = getattr(self, "_strong_grad", {}).get(self.ctx.config.eval.main_eps)
            if grad is not None:
                out["strong_grad_unrolled"] = float(grad == "unrolled")
        return out


@contextmanager
def _attack_grad(model, mode):
    """``model.attack_grad`` set to ``mode`` for the block."""
    previous, model.attack_grad = model.attack_grad, mode
    try:
        yield model
    finally:
        model.attack_grad = previous


def solver_stats(model, x) -> dict:
    """Mean solver steps and relative residual of ``model`` (a DEQNet) on ``x`` in eval mode."""
    with attacks.eval_mode(model):
        model(x)
    s = model.last_stats
    return {"nstep": s["nstep"].mean().item(), "residual": s["residual"].mean().item()}
