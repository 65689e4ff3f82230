"""Deep equilibrium models (Bai et al. 2019) via torchdeq, with an honest robustness evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import attacks, corruptions
from .base import Param, Technique, register

SOLVERS = ("anderson", "fixed_point_iter", "broyden")


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
    of DEQs"). ``score`` therefore reports PGD accuracy with three attack gradients — ``ift``
    (implicit), ``unrolled`` (backprop through the iterations) and ``naive`` (one step of f at the
    detached z*) — and the gradient-free Square attack (pyautoattack); the scorecard's own robust accuracy
    uses ``attack_grad``. It also reports solver steps and residuals on clean, PGD-perturbed and
    corrupted test inputs.

    Example::

        >>> cfg.arms["deq"] = {"technique": "deq", "hparams": {"solver": "anderson", "jac_weight": 1.0}}
    """

    name = "deq"
    summary = "deep equilibrium model (torchdeq): fixed-point layer, implicit gradients, solver diagnostics"
    params = {
        "solver": Param("anderson", "forward fixed-point solver", choices=SOLVERS),
        "max_iter": Param(30, "solver iterations at most", low=10, high=60, ge=1),
        "tol": Param(1e-3, "solver stopping tolerance (relative residual)", low=1e-4, high=1e-2, log=True, gt=0),
        "grad": Param("ift", "training gradient: implicit or phantom", choices=("ift", "phantom")),
        "phantom_steps": Param(5, "unrolled steps of the phantom gradient", low=1, high=10, ge=1),
        "jac_weight": Param(0.0, "Jacobian regularisation weight λ (0: off)", low=0.1, high=5.0, log=True, ge=0),
        "attack_grad": Param("ift", "input gradient given to the scorecard's attacks",
                             choices=("ift", "unrolled", "naive")),
        "unroll_steps": Param(30, "fixed-point iterations of the unrolled attack gradient", low=10, high=60, ge=1),
        "probe_examples": Param(200, "test examples for the gradient-obfuscation probe in score()", ge=1),
        "square_queries": Param(300, "queries of the Square attack in score()", ge=1),
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
                loss = loss + self.hp.jac_weight * model.last_jac_loss
        return loss

    def epoch_end(self, model, epoch):
        with torch.no_grad():
            stats = solver_stats(model, self.ctx.val.x[:256])
        return {f"val_solver_{k}": v for k, v in stats.items()}

    def score(self, model, data):
        hp, test = self.hp, data.test
        n = min(hp.probe_examples, len(test))
        x, y = test.x[:n], test.y[:n]
        eps = self.ctx.config.eval.main_eps if self.ctx.config is not None else 0.1
        out = {}
        with torch.no_grad():
            for k, v in solver_stats(model, x).items():
                out[f"solver_{k}_clean"] = v
            for k, v in solver_stats(model, corruptions.corrupt(x, "gaussian_noise", 3, seed=0)).items():
                out[f"solver_{k}_noise"] = v
        previous = model.attack_grad
        try:
            for mode in ("ift", "unrolled", "naive"):
                model.attack_grad = mode
                torch.manual_seed(0)
                x_adv = attacks.pgd(model, x, y, eps, steps=20)
                out[f"pgd_acc_{mode}_grad"] = attacks.predict(model, x_adv).argmax(1).eq(y).float().mean().item()
                if mode == "unrolled":
                    with torch.no_grad():
                        for k, v in solver_stats(model, x_adv).items():
                            out[f"solver_{k}_pgd"] = v
        finally:
            model.attack_grad = previous
        out["square_acc"] = _square_accuracy(model, x, y, eps, hp.square_queries, data.num_classes)
        white_box = min(out[f"pgd_acc_{m}_grad"] for m in ("ift", "unrolled", "naive"))
        out["probe_eps"] = eps
        out["gradient_masking"] = float(out["square_acc"] < white_box - 0.02)
        return out


def solver_stats(model, x) -> dict:
    """Mean solver steps and relative residual of ``model`` (a DEQNet) on ``x`` in eval mode."""
    with attacks.eval_mode(model):
        model(x)
    s = model.last_stats
    return {"nstep": s["nstep"].mean().item(), "residual": s["residual"].mean().item()}


def _square_accuracy(model, x, y, eps, queries, num_classes) -> float:
    from ..robust import square

    with attacks.eval_mode(model):
        x_adv = square(model, x, y, eps, 0, queries=queries)
    return attacks.predict(model, x_adv).argmax(1).eq(y).float().mean().item()
